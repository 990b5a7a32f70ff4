// Every GraphQL operation the dashboard sends, against query-api/schema.graphql.

import { gql } from "urql";

export const DEVICE_FIELDS = gql`
  fragment DeviceFields on Device {
    deviceId
    name
    location
    timeZone
    lifecycle
    online
    statusChangedAt
    firstSeenAt
    lastSeenAt
    newestReadingAt
    firmwareVersion
    tariffId
    sanctionedLoadKw
    customerId
    customerName
    statusReason
    decommissionedAt
    assignedTariff {
      tariffId
      effectiveFrom
    }
  }
`;

export const DEVICES = gql`
  query Devices($first: Int!, $after: String, $lifecycle: Lifecycle, $online: Boolean, $search: String) {
    devices(first: $first, after: $after, lifecycle: $lifecycle, online: $online, search: $search) {
      pageInfo {
        hasNextPage
        endCursor
      }
      nodes {
        ...DeviceFields
      }
    }
  }
  ${DEVICE_FIELDS}
`;

/**
 * The meter picker: the first matches of each lifecycle, found on the server (id, name
 * or location contains the text; none: the first by id), so a fleet of any size works.
 * Registered meters come first; `hasNextPage` says there are more than were shown.
 */
export const METER_SEARCH = gql`
  query MeterSearch($search: String, $first: Int!, $withDecommissioned: Boolean!) {
    registered: devices(first: $first, search: $search, lifecycle: REGISTERED) {
      ...MeterMatches
    }
    discovered: devices(first: $first, search: $search, lifecycle: DISCOVERED) {
      ...MeterMatches
    }
    decommissioned: devices(first: $first, search: $search, lifecycle: DECOMMISSIONED)
      @include(if: $withDecommissioned) {
      ...MeterMatches
    }
  }
  fragment MeterMatches on DeviceConnection {
    pageInfo {
      hasNextPage
    }
    nodes {
      deviceId
      name
      location
      lifecycle
      online
    }
  }
`;

export const DEVICE = gql`
  query Device($deviceId: String!) {
    device(deviceId: $deviceId) {
      ...DeviceFields
    }
  }
  ${DEVICE_FIELDS}
`;


export const DAILY_ENERGY = gql`
  query DailyEnergy($deviceId: String!, $fromDate: Date!, $toDate: Date!) {
    dailyEnergy(deviceId: $deviceId, fromDate: $fromDate, toDate: $toDate) {
      localDate
      energyKwh
      hours
    }
  }
`;

export const ME = gql`
  query Me {
    me {
      userName
      role
      customerId
    }
  }
`;


export const LATEST_READING = gql`
  query LatestReading($deviceId: String!) {
    latestReading(deviceId: $deviceId) {
      ts
      voltage
      current
      powerW
      counterKwh
    }
  }
`;

export const READING_SERIES = gql`
  query ReadingSeries($deviceId: String!, $from: DateTime!, $to: DateTime!, $maxPoints: Int!) {
    readingSeries(deviceId: $deviceId, from: $from, to: $to, maxPoints: $maxPoints) {
      bucketSeconds
      points {
        bucketStart
        readings
        powerWAvg
        powerWMax
      }
    }
  }
`;


const PROJECTION_FIELDS = `
    deviceId
    tariffId
    month
    asOf
    currency
    energySoFarKwh
    projectedEnergyKwh
    elapsedShare
    projectedTotal
    slabName
    slabRate
    nextSlabLimitKwh
    kwhToNextSlab
    lines {
      name
      quantity
      unit
      rate
      amount
    }
`;

export const BILL_PROJECTION = gql`
  query BillProjection($deviceId: String!) {
    billProjection(deviceId: $deviceId) {
      ${PROJECTION_FIELDS}
    }
  }
`;

const INVOICE_FIELDS = `
    invoiceNumber
    deviceId
    month
    revision
    periodRevision
    tariffId
    tariffVersions
    currency
    timeZone
    firstDay
    lastDay
    energyKwh
    openingRead { at counterKwh }
    closingRead { at counterKwh }
    lines { name quantity unit rate amount }
    includedTaxes { name percent base amount }
    total
    revises
    previousTotal
    difference
    issuedAt
    pdfUrl
`;

export const INVOICES = gql`
  query Invoices($deviceId: String, $month: Month, $first: Int!) {
    invoices(deviceId: $deviceId, month: $month, first: $first) {
      nodes {
        ${INVOICE_FIELDS}
      }
    }
  }
`;

export const BILLING_PERIODS = gql`
  query BillingPeriods($deviceId: String!, $fromMonth: Month!, $toMonth: Month!) {
    billingPeriods(deviceId: $deviceId, fromMonth: $fromMonth, toMonth: $toMonth) {
      month
      status
      revision
      energyKwh
      billingStatus
      billingReason
    }
  }
`;

export const TARIFFS = gql`
  query Tariffs {
    tariffs {
      tariffId
      title
      currency
      timeZone
      versions {
        tariffId
        version
        effectiveFrom
        title
        publishedAt
        document
      }
    }
  }
`;

export const TARIFF_ASSIGNMENTS = gql`
  query TariffAssignments($deviceId: String!) {
    tariffAssignments(deviceId: $deviceId) {
      tariffId
      effectiveFrom
      sanctionedLoadKw
      assignedAt
    }
  }
`;

export const TARIFF_IDS = gql`
  query TariffIds {
    tariffs {
      tariffId
      title
    }
  }
`;
