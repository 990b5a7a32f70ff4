// The shapes of query-api/schema.graphql the dashboard reads.

export type Lifecycle = "DISCOVERED" | "REGISTERED" | "DECOMMISSIONED";

export interface Device {
  deviceId: string;
  name: string | null;
  location: string | null;
  timeZone: string;
  lifecycle: Lifecycle;
  online: boolean | null;
  statusChangedAt: string | null;
  firstSeenAt: string | null;
  lastSeenAt: string | null;
  newestReadingAt: string | null;
  firmwareVersion: string | null;
  tariffId: string | null;
  sanctionedLoadKw: string | null;
}

export interface Reading {
  ts: string;
  voltage: number;
  current: number;
  powerW: number;
  energyKwh: number;
  counterKwh: string;
  powerFactor: number;
  frequencyHz: number | null;
}

export interface DailyEnergy {
  localDate: string;
  energyKwh: string;
  hours: number;
}
