//! Output types. Energy leaves as exact `Decimal`s made from the stored integer
//! milliwatt-hours; no float ever touches it.

use async_graphql::{Enum, Object, SimpleObject};
use rust_decimal::Decimal;
use smartmeter_core::energy::{StepKind, MILLI_WH_PER_KWH};

use super::scalars::{Date, DateTime};
use crate::store::{DailyRow, DeviceRow, HourlyRow, ReadingRow};

/// Milliwatt-hours as kWh, exactly: always six decimal places, the storage resolution.
pub fn milli_wh_to_kwh(milli_wh: i64) -> Decimal {
    debug_assert_eq!(MILLI_WH_PER_KWH, 1_000_000);
    Decimal::new(milli_wh, 6)
}

/// Milliwatt-hours as Wh, exactly: always three decimal places.
pub fn milli_wh_to_wh(milli_wh: i64) -> Decimal {
    Decimal::new(milli_wh, 3)
}

#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    /// Telemetry arrived from a meter with credentials but no registration.
    Discovered,
    Registered,
    /// History is kept; no new period opens.
    Decommissioned,
}

impl Lifecycle {
    /// `None` for a value the migration's CHECK constraint does not allow.
    pub fn from_db(text: &str) -> Option<Self> {
        match text {
            "discovered" => Some(Self::Discovered),
            "registered" => Some(Self::Registered),
            "decommissioned" => Some(Self::Decommissioned),
            _ => None,
        }
    }
}

pub struct Device(pub DeviceRow);

#[Object]
impl Device {
    async fn device_id(&self) -> &str {
        &self.0.device_id
    }

    async fn name(&self) -> Option<&str> {
        self.0.name.as_deref()
    }

    async fn location(&self) -> Option<&str> {
        self.0.location.as_deref()
    }

    /// IANA time zone; local hours, days and billing months of this device are in it.
    async fn time_zone(&self) -> &str {
        &self.0.time_zone
    }

    async fn lifecycle(&self) -> async_graphql::Result<Lifecycle> {
        Lifecycle::from_db(&self.0.lifecycle).ok_or_else(|| {
            tracing::error!(device_id = %self.0.device_id, lifecycle = %self.0.lifecycle, "Unknown lifecycle in devices.");
            super::error::ApiError::Internal.into()
        })
    }

    /// Null until the meter's first status message.
    async fn online(&self) -> Option<bool> {
        self.0.online
    }

    async fn status_changed_at(&self) -> Option<DateTime> {
        self.0.status_changed_at.map(DateTime)
    }

    async fn first_seen_at(&self) -> Option<DateTime> {
        self.0.first_seen_at.map(DateTime)
    }

    /// Receive time of the newest message from the meter.
    async fn last_seen_at(&self) -> Option<DateTime> {
        self.0.last_seen_at.map(DateTime)
    }

    /// Event time of the newest accepted reading; lateness is measured from it.
    async fn newest_reading_at(&self) -> Option<DateTime> {
        self.0.newest_reading_at.map(DateTime)
    }

    async fn firmware_version(&self) -> Option<&str> {
        self.0.firmware_version.as_deref()
    }

    async fn tariff_id(&self) -> Option<&str> {
        self.0.tariff_id.as_deref()
    }

    async fn sanctioned_load_kw(&self) -> Option<Decimal> {
        self.0.sanctioned_load_kw
    }
}

pub struct Reading(pub ReadingRow);

#[Object]
impl Reading {
    /// Event time used for accounting: the meter's clock, or the receive time when
    /// that clock was not synced (see `flags.clockUnsynced`).
    async fn ts(&self) -> DateTime {
        DateTime(self.0.ts)
    }

    /// The timestamp the meter sent.
    async fn meter_ts(&self) -> DateTime {
        DateTime(self.0.meter_ts)
    }

    async fn received_at(&self) -> DateTime {
        DateTime(self.0.received_at)
    }

    /// Volts RMS.
    async fn voltage(&self) -> f64 {
        self.0.voltage_v
    }

    /// Amperes RMS.
    async fn current(&self) -> f64 {
        self.0.current_a
    }

    async fn power_w(&self) -> f64 {
        self.0.power_w
    }

    /// The meter's cumulative counter as it reported it (a float on the wire).
    async fn energy_kwh(&self) -> f64 {
        self.0.energy_kwh
    }

    /// The same counter as stored for accounting: exact, six decimal places.
    async fn counter_kwh(&self) -> Decimal {
        milli_wh_to_kwh(self.0.counter_milli_wh)
    }

    /// Energy the step ending at this reading added to the rollups.
    async fn counted_kwh(&self) -> Decimal {
        milli_wh_to_kwh(self.0.counted_milli_wh)
    }

    async fn power_factor(&self) -> f64 {
        self.0.power_factor
    }

    async fn frequency_hz(&self) -> Option<f64> {
        self.0.frequency_hz
    }

    /// Wi-Fi signal strength in dBm.
    async fn rssi(&self) -> Option<i32> {
        self.0.rssi
    }

    async fn flags(&self) -> ReadingFlags {
        ReadingFlags {
            clock_unsynced: self.0.clock_unsynced,
            late: self.0.late,
            too_late: self.0.too_late,
            quarantined: StepKind::parse(&self.0.counter_class) == Some(StepKind::Quarantined),
            counter_class: self.0.counter_class.clone(),
        }
    }
}

#[derive(SimpleObject)]
pub struct ReadingFlags {
    /// The meter's clock was not synced; `ts` is the receive time.
    clock_unsynced: bool,
    /// Arrived after a newer reading of the same device, inside the allowed lateness.
    late: bool,
    /// Older than the allowed lateness when it arrived: stored, never counted.
    too_late: bool,
    /// The counter step ending here was an impossible jump: not billed.
    quarantined: bool,
    /// How the counter step ending at this reading was judged: first, normal, jitter,
    /// reset, rollover, replacement or quarantined.
    counter_class: String,
}

pub struct HourlyEnergy(pub HourlyRow);

#[Object]
impl HourlyEnergy {
    /// UTC instant the local hour starts (may be :30 or :45 past a UTC hour).
    async fn bucket_start(&self) -> DateTime {
        DateTime(self.0.bucket_start)
    }

    async fn bucket_end(&self) -> DateTime {
        DateTime(self.0.bucket_end)
    }

    async fn local_date(&self) -> Date {
        Date(self.0.local_date)
    }

    /// 0..=23 on the device's local clock.
    async fn local_hour(&self) -> i32 {
        i32::from(self.0.local_hour)
    }

    async fn utc_offset_seconds(&self) -> i32 {
        self.0.utc_offset_seconds
    }

    /// Exact, six decimal places.
    async fn energy_kwh(&self) -> Decimal {
        milli_wh_to_kwh(self.0.energy_milli_wh)
    }

    /// Exact, three decimal places.
    async fn energy_wh(&self) -> Decimal {
        milli_wh_to_wh(self.0.energy_milli_wh)
    }
}

pub struct DailyEnergy(pub DailyRow);

#[Object]
impl DailyEnergy {
    async fn local_date(&self) -> Date {
        Date(self.0.local_date)
    }

    /// Exact, six decimal places; equals the sum of the day's hourly `energyKwh`.
    async fn energy_kwh(&self) -> Decimal {
        milli_wh_to_kwh(self.0.energy_milli_wh)
    }

    /// Exact, three decimal places.
    async fn energy_wh(&self) -> Decimal {
        milli_wh_to_wh(self.0.energy_milli_wh)
    }

    /// Hourly buckets recorded for this local date: 24 on a complete ordinary day,
    /// 23 or 25 on a complete DST day, fewer when hours are missing.
    async fn hours(&self) -> i32 {
        i32::try_from(self.0.hours).unwrap_or(i32::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milli_wh_convert_exactly() {
        assert_eq!(milli_wh_to_kwh(219_000).to_string(), "0.219000");
        assert_eq!(milli_wh_to_kwh(12_345_678_901).to_string(), "12345.678901");
        assert_eq!(milli_wh_to_kwh(-1).to_string(), "-0.000001");
        assert_eq!(milli_wh_to_wh(219_000).to_string(), "219.000");
        assert_eq!(milli_wh_to_kwh(1) * Decimal::from(1_000_000), Decimal::ONE);
    }
}
