// A tariff version as the billing core defines it (core/src/billing/tariff.rs,
// serde's JSON shape): what the tariff editor edits and publishes. Components the
// editor has no form for (`choose`) and fields it does not show (sources, notes,
// period_months) are kept as they are.

export type Basis = "bill" | "month" | "day" | "sanctioned_kw_month" | "connected_kw_month";
export const BASES: Basis[] = ["month", "day", "bill", "sanctioned_kw_month", "connected_kw_month"];
export const BASIS_LABELS: Record<Basis, string> = {
  month: "per month",
  day: "per day",
  bill: "per bill",
  sanctioned_kw_month: "per sanctioned kW per month",
  connected_kw_month: "per connected kW per month",
};

export interface Slab {
  name: string;
  up_to_kwh: string | null;
  rate: string;
}
export interface TimeOfUseBand {
  name: string;
  from: string;
  to: string;
  rate: string;
}

export type Component =
  | { kind: "per_kwh"; name: string; group: string; rate: string; credit?: boolean }
  | { kind: "slabs"; group: string; pricing: "telescopic" | "non_telescopic"; slabs: Slab[] }
  | { kind: "time_of_use"; group: string; bands: TimeOfUseBand[] }
  | { kind: "fixed"; name: string; group: string; per: Basis; rate: string }
  | { kind: "percent"; name: string; group: string; percent: string; of: string[]; credit?: boolean }
  | { kind: "minimum"; name: string; group: string; per: Basis; rate?: string | null; of?: string[] | null; kw_slabs?: unknown }
  | { kind: "choose"; [key: string]: unknown };

export interface IncludedTax {
  name: string;
  percent: string;
  of?: string[] | null;
}

export interface TariffDocument {
  tariff_id: string;
  version: number;
  effective_from: string;
  title?: string | null;
  currency: string;
  time_zone: string;
  period_months?: unknown;
  rounding?: { line?: { increment: string; mode?: string }; total?: unknown };
  components: Component[];
  included_taxes?: IncludedTax[];
  sources?: unknown[];
  notes?: string[];
}

export const COMPONENT_LABELS: Record<Component["kind"], string> = {
  per_kwh: "Energy rate",
  slabs: "Slabs",
  time_of_use: "Time-of-use bands",
  fixed: "Fixed charge",
  percent: "Tax or surcharge (%)",
  minimum: "Minimum charge",
  choose: "Choice by load or usage",
};

export function newComponent(kind: Component["kind"]): Component {
  switch (kind) {
    case "per_kwh":
      return { kind, name: "energy", group: "energy", rate: "0" };
    case "slabs":
      return {
        kind,
        group: "energy",
        pricing: "telescopic",
        slabs: [
          { name: "0-100", up_to_kwh: "100", rate: "0" },
          { name: "above 100", up_to_kwh: null, rate: "0" },
        ],
      };
    case "time_of_use":
      return {
        kind,
        group: "energy",
        bands: [
          { name: "off-peak", from: "00:00", to: "07:00", rate: "0" },
          { name: "peak", from: "07:00", to: "00:00", rate: "0" },
        ],
      };
    case "fixed":
      return { kind, name: "fixed charge", group: "fixed", per: "month", rate: "0" };
    case "percent":
      return { kind, name: "tax", group: "tax", percent: "0", of: ["energy"] };
    case "minimum":
      return { kind, name: "minimum charge", group: "energy", per: "month", rate: "0" };
    case "choose":
      throw new Error("a choice is not made in the editor");
  }
}

/** The next version of `document`: number + 1, the given date, components copied. */
export function nextVersion(document: TariffDocument, effectiveFrom: string): TariffDocument {
  return { ...structuredClone(document), version: document.version + 1, effective_from: effectiveFrom };
}

/** "HH:MM[:SS]" as the API writes civil times → "HH:MM" for an <input type=time>. */
export function hhmm(time: string): string {
  return time.slice(0, 5);
}
