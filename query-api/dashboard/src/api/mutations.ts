// Every mutation the dashboard sends. Each publishes events; the projections apply
// them, so what they change shows up a moment later (the views refetch).

import { gql } from "urql";

export const PUBLISH_TARIFF_VERSION = gql`
  mutation PublishTariffVersion($document: JSON!) {
    publishTariffVersion(document: $document) {
      tariffId
      version
      eventId
      alreadyPublished
    }
  }
`;

const RECEIPT = `eventId eventType topic partition offset`;

export const REGISTER_DEVICE = gql`
  mutation RegisterDevice($input: RegisterDeviceInput!) {
    registerDevice(input: $input) { ${RECEIPT} }
  }
`;

export const UPDATE_DEVICE = gql`
  mutation UpdateDevice($input: UpdateDeviceInput!) {
    updateDevice(input: $input) { ${RECEIPT} }
  }
`;

export const DECOMMISSION_DEVICE = gql`
  mutation DecommissionDevice($deviceId: String!, $reason: String) {
    decommissionDevice(deviceId: $deviceId, reason: $reason) { ${RECEIPT} }
  }
`;

export const ASSIGN_TARIFF = gql`
  mutation AssignTariff($input: AssignTariffInput!) {
    assignTariff(input: $input) { ${RECEIPT} }
  }
`;
