// Live data by subscription (graphql-transport-ws): readings of one meter, status
// changes, the bill projection. Each hook returns the newest value the server pushed,
// or null before the first one.

import { gql, useSubscription } from "urql";
import type { BillProjection, LiveReading } from "./types";

export const LIVE_READINGS = gql`
  subscription LiveReadings($deviceId: String!) {
    liveReadings(deviceId: $deviceId) {
      deviceId
      ts
      voltage
      current
      powerW
      counterKwh
    }
  }
`;

export const DEVICE_STATUS = gql`
  subscription DeviceStatus($deviceId: String!) {
    deviceStatusChanges(deviceId: $deviceId) {
      deviceId
      online
      reason
      at
    }
  }
`;

export const LIVE_BILL_PROJECTION = gql`
  subscription LiveBillProjection($deviceId: String!) {
    billProjection(deviceId: $deviceId) {
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
    }
  }
`;

/** Every live reading of `deviceId` since the view opened, oldest first (at most `keep`). */
export function useLiveReadings(deviceId: string, keep = 500) {
  const [result] = useSubscription<{ liveReadings: LiveReading }, LiveReading[]>(
    { query: LIVE_READINGS, variables: { deviceId } },
    (previous = [], data) => [...previous, data.liveReadings].slice(-keep),
  );
  return { readings: result.data ?? [], error: result.error };
}

export interface StatusChange {
  deviceId: string;
  online: boolean;
  reason: string | null;
  at: string;
}

export function useDeviceStatus(deviceId: string) {
  const [result] = useSubscription<{ deviceStatusChanges: StatusChange }>({ query: DEVICE_STATUS, variables: { deviceId } });
  return { status: result.data?.deviceStatusChanges ?? null, error: result.error };
}

export function useLiveBillProjection(deviceId: string, pause = false) {
  const [result] = useSubscription<{ billProjection: BillProjection }>({
    query: LIVE_BILL_PROJECTION,
    variables: { deviceId },
    pause,
  });
  return { projection: result.data?.billProjection ?? null, error: result.error };
}
