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
  }
`;

export const DEVICES = gql`
  query Devices($first: Int!, $after: String) {
    devices(first: $first, after: $after) {
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

export const DEVICE = gql`
  query Device($deviceId: String!) {
    device(deviceId: $deviceId) {
      ...DeviceFields
    }
  }
  ${DEVICE_FIELDS}
`;

export const READINGS = gql`
  query Readings($deviceId: String!, $from: DateTime!, $to: DateTime!, $limit: Int!) {
    readings(deviceId: $deviceId, from: $from, to: $to, limit: $limit) {
      ts
      voltage
      current
      powerW
      energyKwh
      counterKwh
      powerFactor
      frequencyHz
    }
  }
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
