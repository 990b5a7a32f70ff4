//! Billing events on Kafka (CloudEvents `data`): billing periods closed and adjusted by
//! the processor on `smartmeter.billing-periods.v1`.

use jiff::civil::Date;
use jiff::Timestamp;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::period::BillingPeriod;
use crate::device::DeviceId;
use crate::event::derived_event_id;

pub const PERIOD_CLOSED: &str = "dev.smartmeter.billing.period-closed.v1";
pub const PERIOD_ADJUSTED: &str = "dev.smartmeter.billing.period-adjusted.v1";

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
