//! Billing events on Kafka (CloudEvents `data`), the one home of their schema:
//!
//! - `smartmeter.billing-periods.v1` (key: device id): [`PeriodEvent`], the data of
//!   PeriodClosed and PeriodAdjusted, published by the processor.
//! - `smartmeter.tariff-events.v1` (key: tariff id): [`TariffVersionPublished`] and
//!   [`TariffAssigned`], published by the API (commands become events).
//! - `smartmeter.invoices.v1` (key: device id): [`InvoiceEvent`], the data of
//!   InvoiceIssued and InvoiceRevised, published by the billing worker.
//!
//! Every id is derived ([`derived_event_id`]): the same fact always has the same id.

use jiff::civil::Date;
use jiff::Timestamp;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::invoice::{IncludedTax, InvoiceLine, PricedPart};
use super::period::BillingPeriod;
use super::tariff::{Currency, Phase, TariffDocument};
use crate::device::DeviceId;
use crate::event::derived_event_id;

pub const PERIOD_CLOSED: &str = "dev.smartmeter.billing.period-closed.v1";
pub const PERIOD_ADJUSTED: &str = "dev.smartmeter.billing.period-adjusted.v1";
pub const TARIFF_VERSION_PUBLISHED: &str = "dev.smartmeter.billing.tariff-version-published.v1";
pub const TARIFF_ASSIGNED: &str = "dev.smartmeter.billing.tariff-assigned.v1";
pub const INVOICE_ISSUED: &str = "dev.smartmeter.billing.invoice-issued.v1";
pub const INVOICE_REVISED: &str = "dev.smartmeter.billing.invoice-revised.v1";

/// A meter reading as printed on a bill.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeterRead {
    pub at: Timestamp,
    pub counter_kwh: Decimal,
}

/// What can make a period's figures less than a plain counter difference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QualityFlag {
    /// Some local hours of the period hold no reading (energy there is interpolated).
    Gaps,
    CounterReset,
    Rollover,
    MeterReplaced,
    /// Energy the counter claimed but that was not counted (impossible jump).
    Quarantined,
    ClockUnsynced,
    /// No reading at or before the period start: billing starts at the first reading.
    NoOpeningRead,
    /// The meter was decommissioned in this period: the closing read is its final read.
    Decommissioned,
}

/// The data of PeriodClosed (`revision` 0) and PeriodAdjusted (`revision` ≥ 1): a
/// device's local calendar month, with everything billing needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeriodEvent {
    pub device_id: DeviceId,
    /// First day of the local month.
    pub month: Date,
    /// 0 when closed; each adjustment by late data adds one.
    pub revision: u32,
    pub time_zone: String,
    /// The local month as UTC instants, `[starts_at, ends_at)`.
    pub starts_at: Timestamp,
    pub ends_at: Timestamp,
    /// Dates, kWh (exact: the sum of the month's daily energy) and kWh by local hour.
    pub period: BillingPeriod,
    /// The same energy in integer milliwatt-hours, as stored.
    pub energy_milli_wh: i64,
    /// The last reading at or before the period start.
    pub opening_read: Option<MeterRead>,
    /// The last reading before the period end.
    pub closing_read: Option<MeterRead>,
    pub reading_count: i64,
    /// Share of the period's local hours holding at least one reading (0..=1, 4 places).
    pub coverage: Decimal,
    pub quality_flags: Vec<QualityFlag>,
    /// The device's tariff from the registry at close time, when assigned.
    pub tariff_id: Option<String>,
}

impl PeriodEvent {
    pub fn event_type(&self) -> &'static str {
        if self.revision == 0 {
            PERIOD_CLOSED
        } else {
            PERIOD_ADJUSTED
        }
    }

    /// Deterministic: the same device, month and revision always give the same id.
    pub fn event_id(&self) -> String {
        derived_event_id(&[
            "billing-period",
            self.device_id.as_str(),
            &self.month.to_string(),
            &self.revision.to_string(),
        ])
    }
}

/// The data of TariffVersionPublished: one version of a tariff, as the document that
/// `core/tariffs/*.json` holds one of per array element. Consumers validate it
/// ([`Tariff::new`](super::Tariff::new)) and check it follows the versions before it
/// ([`TariffHistory::new`](super::TariffHistory::new)); a document that fails either is
/// refused whole. A version is never changed once published: a correction, also a
/// retroactive one, is a new version (a higher number, a later or equal `effective_from`
/// than the last version's, which may lie in the past).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TariffVersionPublished {
    pub document: TariffDocument,
}

impl TariffVersionPublished {
    /// Deterministic, and different for a different document under the same version
    /// number, so that a conflicting re-publication is not taken for a duplicate.
    pub fn event_id(&self) -> String {
        let document = serde_json::to_string(&self.document).expect("a tariff document serializes");
        derived_event_id(&[
            "tariff-version-published",
            &self.document.tariff_id,
            &self.document.version.to_string(),
            &document,
        ])
    }
}

/// The data of TariffAssigned: from `effective_from` on, `device_id` is billed on
/// `tariff_id`, with the load and phase the tariff may need. A device's period is
/// priced on the assignment in force on the period's first day (a change of tariff
/// takes effect from the next period); an assignment for the same device and day
/// replaces the earlier one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TariffAssigned {
    pub device_id: DeviceId,
    pub tariff_id: String,
    pub effective_from: Date,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sanctioned_load_kw: Option<Decimal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Connected load, for tariffs that charge by it (a monthly minimum per kW of
    /// connected load). Added after the first release: absent in older events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connected_load_kw: Option<Decimal>,
}

impl TariffAssigned {
    pub fn event_id(&self) -> String {
        let sanctioned = self.sanctioned_load_kw.map(|kw| kw.normalize().to_string()).unwrap_or_default();
        let phase = self.phase.map_or("", |phase| match phase {
            Phase::Single => "single",
            Phase::Three => "three",
        });
        let base =
            ["tariff-assigned", self.device_id.as_str(), &self.tariff_id, &self.effective_from.to_string()];
        match self.connected_load_kw {
            // Events without a connected load keep the ids they had before the field existed.
            None => derived_event_id(&[base[0], base[1], base[2], base[3], &sanctioned, phase]),
            Some(kw) => derived_event_id(&[
                base[0],
                base[1],
                base[2],
                base[3],
                &sanctioned,
                phase,
                &format!("connected:{}", kw.normalize()),
            ]),
        }
    }
}

/// The number of a device's invoice for a month: `INV-{device}-{YYYYMM}` for the
/// original, `INV-{device}-{YYYYMM}-R{n}` for its n-th revision. The same inputs always
/// give the same number.
pub fn invoice_number(device_id: &DeviceId, month: Date, revision: u32) -> String {
    let base = format!("INV-{device_id}-{:04}{:02}", month.year(), month.month());
    if revision == 0 {
        base
    } else {
        format!("{base}-R{revision}")
    }
}

/// The data of InvoiceIssued (`revision` 0) and InvoiceRevised (`revision` ≥ 1). An
/// issued invoice is never changed: a re-pricing that changes the total issues a new
/// revision carrying the previous total and the difference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InvoiceEvent {
    pub invoice_number: String,
    pub device_id: DeviceId,
    /// First day of the local month billed.
    pub month: Date,
    /// 0 for the original invoice, n for its n-th revision.
    pub revision: u32,
    /// The revision of the [`PeriodEvent`] priced.
    pub period_revision: u32,
    pub tariff_id: String,
    /// The versions in force during the period, in date order (two or more when the
    /// tariff changed inside it).
    pub tariff_versions: Vec<u32>,
    pub currency: Currency,
    /// IANA zone the period's days and the meter reads are local to.
    pub time_zone: String,
    pub first_day: Date,
    pub last_day: Date,
    /// The period's energy, exactly as the period event gave it.
    pub energy_kwh: Decimal,
    pub opening_read: Option<MeterRead>,
    pub closing_read: Option<MeterRead>,
    pub parts: Vec<PricedPart>,
    pub lines: Vec<InvoiceLine>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub included_taxes: Vec<IncludedTax>,
    pub total: Decimal,
    /// For a revision: the number and total of the invoice it revises, and
    /// `total - previous_total`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revises: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_total: Option<Decimal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub difference: Option<Decimal>,
    /// Hash of what was priced (period data, assignment, tariff versions): equal
    /// digests mean an equal invoice.
    pub inputs_digest: String,
    pub issued_at: Timestamp,
}

impl InvoiceEvent {
    pub fn event_type(&self) -> &'static str {
        if self.revision == 0 {
            INVOICE_ISSUED
        } else {
            INVOICE_REVISED
        }
    }

    /// Deterministic: one id per invoice number.
    pub fn event_id(&self) -> String {
        derived_event_id(&["invoice", &self.invoice_number])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;

    fn device(id: &str) -> DeviceId {
        DeviceId::parse(id).unwrap()
    }

    #[test]
    fn invoice_numbers_name_device_month_and_revision() {
        assert_eq!(invoice_number(&device("MAC000002"), date(2025, 1, 1), 0), "INV-MAC000002-202501");
        assert_eq!(invoice_number(&device("meter-001"), date(2024, 12, 1), 2), "INV-meter-001-202412-R2");
    }

    #[test]
    fn tariff_event_ids_are_deterministic_and_see_the_content() {
        let json = include_str!("../../tariffs/ofgem_price_cap_2024q3.json");
        let documents: Vec<TariffDocument> = serde_json::from_str(json).unwrap();
        let published = TariffVersionPublished { document: documents[0].clone() };
        assert_eq!(published.event_id(), published.clone().event_id());
        let mut changed = published.clone();
        changed.document.title = Some("corrected".into());
        assert_ne!(published.event_id(), changed.event_id());
        let round_trip: TariffVersionPublished =
            serde_json::from_str(&serde_json::to_string(&published).unwrap()).unwrap();
        assert_eq!(round_trip, published);

        let assigned = TariffAssigned {
            device_id: device("meter-001"),
            tariff_id: "kseb_lt1_domestic_2019".into(),
            effective_from: date(2024, 1, 1),
            sanctioned_load_kw: Some(Decimal::new(30, 1)),
            phase: Some(Phase::Single),
            connected_load_kw: None,
        };
        let mut three = assigned.clone();
        three.sanctioned_load_kw = Some(Decimal::new(3, 0));
        assert_eq!(assigned.event_id(), three.event_id(), "3.0 kW and 3 kW are the same load");
        three.phase = Some(Phase::Three);
        assert_ne!(assigned.event_id(), three.event_id());
        // The id of an event without a connected load did not change when the field came.
        assert_eq!(
            assigned.event_id(),
            derived_event_id(&[
                "tariff-assigned",
                "meter-001",
                "kseb_lt1_domestic_2019",
                "2024-01-01",
                "3",
                "single"
            ])
        );
        let mut connected = assigned.clone();
        connected.connected_load_kw = Some(Decimal::new(2, 0));
        assert_ne!(assigned.event_id(), connected.event_id());
        let old_form: TariffAssigned = serde_json::from_str(
            r#"{"device_id":"meter-001","tariff_id":"t","effective_from":"2024-01-01"}"#,
        )
        .unwrap();
        assert_eq!(old_form.connected_load_kw, None);
    }
}
