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
