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
  customerId: string | null;
  customerName: string | null;
  statusReason: string | null;
  decommissionedAt: string | null;
  assignedTariff?: { tariffId: string; effectiveFrom: string } | null;
}

export interface DailyEnergy {
  localDate: string;
  energyKwh: string;
  hours: number;
}

export type Role = "ADMIN" | "OPERATOR" | "CUSTOMER";

export interface Me {
  userName: string;
  role: Role;
  customerId: string | null;
}

/** A reading as the cards show it: the latest from the database, then live ones. */
export interface CardReading {
  ts: string;
  voltage: number;
  current: number;
  powerW: number;
  counterKwh: string;
}

export interface LiveReading extends CardReading {
  deviceId: string;
}

export interface SeriesPoint {
  bucketStart: string;
  readings: number;
  powerWAvg: number;
  powerWMax: number;
}

export interface InvoiceLine {
  name: string;
  quantity: string | null;
  unit: string | null;
  rate: string | null;
  amount: string;
}

export interface BillProjection {
  deviceId: string;
  tariffId: string;
  month: string;
  asOf: string;
  currency: string;
  energySoFarKwh: string;
  projectedEnergyKwh: string;
  elapsedShare: string;
  projectedTotal: string;
  slabName: string | null;
  slabRate: string | null;
  nextSlabLimitKwh: string | null;
  kwhToNextSlab: string | null;
  lines: InvoiceLine[];
}

export interface MeterRead {
  at: string;
  counterKwh: string;
}

export interface Invoice {
  invoiceNumber: string;
  deviceId: string;
  month: string;
  revision: number;
  periodRevision: number;
  tariffId: string;
  tariffVersions: number[];
  currency: string;
  timeZone: string;
  firstDay: string;
  lastDay: string;
  energyKwh: string;
  openingRead: MeterRead | null;
  closingRead: MeterRead | null;
  lines: InvoiceLine[];
  includedTaxes: { name: string; percent: string; base: string; amount: string }[];
  total: string;
  revises: string | null;
  previousTotal: string | null;
  difference: string | null;
  issuedAt: string;
  pdfUrl: string;
}

export interface TariffVersion {
  tariffId: string;
  version: number;
  effectiveFrom: string;
  title: string | null;
  publishedAt: string;
  document: import("../lib/tariff").TariffDocument;
}

export interface Tariff {
  tariffId: string;
  title: string | null;
  currency: string;
  timeZone: string;
  versions: TariffVersion[];
}

export interface BillingPeriod {
  month: string;
  status: string;
  revision: number;
  energyKwh: string;
  billingStatus: string | null;
  billingReason: string | null;
}
