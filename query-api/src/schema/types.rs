//! Output types of devices, readings and energy. Energy leaves as exact `Decimal`s made
//! from the stored integer milliwatt-hours; no float ever touches it.

use std::sync::Arc;

use async_graphql::{Context, Enum, Object, SimpleObject};
use rust_decimal::Decimal;
use smartmeter_core::billing::projection::BillProjection as CoreProjection;
use smartmeter_core::device_events::DeviceStatusChanged;
use smartmeter_core::energy::{kwh_to_milli_wh, StepKind, MILLI_WH_PER_KWH};
use smartmeter_core::telemetry::Reading as LiveTelemetry;
use smartmeter_core::DeviceId;

use super::api;
use super::billing_types::{InvoiceLine, TariffAssignment};
use super::error::ApiError;
use super::scalars::{Date, DateTime, Month};
use crate::store::{
    CounterEventRow, DailyRow, DeviceRow, GaugeBucketRow, HourlyRow, MonthlyRow, QuarantinedRow, ReadingRow,
};

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

    pub fn as_db(self) -> &'static str {
        match self {
            Self::Discovered => "discovered",
            Self::Registered => "registered",
            Self::Decommissioned => "decommissioned",
        }
    }
}

/// Online state as the pipeline last saw it.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceStatus {
    Online,
    Offline,
    /// No status message or telemetry yet.
    Unknown,
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
            ApiError::Internal.into()
        })
    }

    async fn status(&self) -> DeviceStatus {
        match self.0.online {
            Some(true) => DeviceStatus::Online,
            Some(false) => DeviceStatus::Offline,
            None => DeviceStatus::Unknown,
        }
    }

    /// Null until the meter's first status message.
    async fn online(&self) -> Option<bool> {
        self.0.online
    }

    /// Why the status is what it is: birth, last_will, disconnect, inactivity, telemetry.
    async fn status_reason(&self) -> Option<&str> {
        self.0.status_reason.as_deref()
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

    /// The tariff in the device registry (DeviceRegistered / DeviceUpdated), for display;
    /// billing uses `assignedTariff`.
    async fn tariff_id(&self) -> Option<&str> {
        self.0.tariff_id.as_deref()
    }

    async fn sanctioned_load_kw(&self) -> Option<Decimal> {
        self.0.sanctioned_load_kw
    }

    async fn customer_id(&self) -> Option<&str> {
        self.0.customer_id.as_deref()
    }

    async fn customer_name(&self) -> Option<&str> {
        self.0.customer_name.as_deref()
    }

    async fn registered_at(&self) -> Option<DateTime> {
        self.0.registered_at.map(DateTime)
    }

    async fn decommissioned_at(&self) -> Option<DateTime> {
        self.0.decommissioned_at.map(DateTime)
    }

    async fn decommission_reason(&self) -> Option<&str> {
        self.0.decommission_reason.as_deref()
    }

    /// Readings stored for the device (duplicates excluded).
    async fn readings_total(&self) -> i64 {
        self.0.readings_total
    }

    /// The reading with the newest event time.
    async fn latest_reading(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Reading>> {
        let id = self.id()?;
        Ok(api(ctx).store.latest_reading(&id).await?.map(Reading))
    }

    /// The tariff assignment billing uses for the device's current local month (wall
    /// clock), from the billing worker's `tariff_assignments`.
    async fn assigned_tariff(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<TariffAssignment>> {
        let id = self.id()?;
        let today = jiff::tz::TimeZone::get(&self.0.time_zone)
            .map(|tz| jiff::Timestamp::now().to_zoned(tz).date())
            .unwrap_or_else(|_| jiff::Timestamp::now().to_zoned(jiff::tz::TimeZone::UTC).date());
        let assignments = api(ctx).store.assignments(&id).await?;
        Ok(assignments
            .into_iter()
            .rev()
            .find(|a| a.effective_from <= today.first_of_month())
            .map(TariffAssignment))
    }

    /// Every tariff assignment of the device, oldest first.
    async fn tariff_assignments(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<TariffAssignment>> {
        let id = self.id()?;
        Ok(api(ctx).store.assignments(&id).await?.into_iter().map(TariffAssignment).collect())
    }
}

impl Device {
    fn id(&self) -> Result<DeviceId, ApiError> {
        DeviceId::parse(&self.0.device_id).map_err(|error| {
            tracing::error!(device_id = %self.0.device_id, %error, "Invalid device id in devices.");
            ApiError::Internal
        })
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

    /// The meter's per-boot sequence number.
    async fn seq(&self) -> Option<i64> {
        self.0.seq
    }

    async fn boot_id(&self) -> Option<&str> {
        self.0.boot_id.as_deref()
    }

    /// Firmware version the meter sent with the reading.
    async fn fw(&self) -> Option<&str> {
        self.0.fw.as_deref()
    }

    async fn flags(&self) -> ReadingFlags {
        ReadingFlags {
            clock_unsynced: self.0.clock_unsynced,
            late: self.0.late,
            too_late: self.0.too_late,
            quarantined: StepKind::parse(&self.0.counter_class) == Some(StepKind::Quarantined),
            after_decommission: self.0.after_decommission,
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
    /// Stamped after the device was decommissioned: stored, never counted.
    after_decommission: bool,
    /// How the counter step ending at this reading was judged: first, normal, jitter,
    /// reset, rollover, replacement or quarantined.
    counter_class: String,
}

/// Readings downsampled for a chart: one point per time bucket that holds readings.
#[derive(SimpleObject)]
pub struct ReadingSeries {
    /// Width of each bucket. Buckets are aligned like TimescaleDB's `time_bucket`
    /// (origin Monday 2000-01-03 00:00 UTC), in UTC.
    pub bucket_seconds: i32,
    pub points: Vec<GaugePoint>,
}

pub struct GaugePoint(pub GaugeBucketRow);

/// Gauges of the readings in `[bucketStart, bucketStart + bucketSeconds)`, too-late
/// readings left out.
#[Object]
impl GaugePoint {
    async fn bucket_start(&self) -> DateTime {
        DateTime(self.0.bucket_start)
    }

    async fn readings(&self) -> i64 {
        self.0.readings
    }

    async fn power_w_avg(&self) -> f64 {
        self.0.power_w_avg
    }

    async fn power_w_min(&self) -> f64 {
        self.0.power_w_min
    }

    async fn power_w_max(&self) -> f64 {
        self.0.power_w_max
    }

    async fn voltage_avg(&self) -> f64 {
        self.0.voltage_v_avg
    }

    async fn voltage_min(&self) -> f64 {
        self.0.voltage_v_min
    }

    async fn voltage_max(&self) -> f64 {
        self.0.voltage_v_max
    }

    async fn current_avg(&self) -> f64 {
        self.0.current_a_avg
    }

    async fn current_max(&self) -> f64 {
        self.0.current_a_max
    }

    /// Energy of the counter steps ending in the bucket (a step is not split at bucket
    /// edges here; `hourlyEnergy` is the interpolated truth).
    async fn counted_kwh(&self) -> Decimal {
        milli_wh_to_kwh(self.0.counted_milli_wh)
    }
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

pub struct MonthlyEnergy(pub MonthlyRow);

#[Object]
impl MonthlyEnergy {
    /// The local calendar month of the device's time zone.
    async fn month(&self) -> Month {
        Month(self.0.month)
    }

    /// Exact, six decimal places; the sum of the month's daily `energyKwh`.
    async fn energy_kwh(&self) -> Decimal {
        milli_wh_to_kwh(self.0.energy_milli_wh)
    }

    async fn energy_wh(&self) -> Decimal {
        milli_wh_to_wh(self.0.energy_milli_wh)
    }

    /// Local days of the month that have energy.
    async fn days_with_data(&self) -> i32 {
        self.0.days_with_data
    }
}

pub struct CounterEvent(pub CounterEventRow);

/// A counter step that was not a plain increase.
#[Object]
impl CounterEvent {
    /// The reading that ended the step.
    async fn ts(&self) -> DateTime {
        DateTime(self.0.ts)
    }

    /// jitter, reset, rollover, replacement or quarantined.
    async fn kind(&self) -> &str {
        &self.0.kind
    }

    async fn previous_ts(&self) -> DateTime {
        DateTime(self.0.previous_ts)
    }

    async fn previous_counter_kwh(&self) -> Decimal {
        milli_wh_to_kwh(self.0.previous_milli_wh)
    }

    async fn counter_kwh(&self) -> Decimal {
        milli_wh_to_kwh(self.0.current_milli_wh)
    }

    async fn counted_kwh(&self) -> Decimal {
        milli_wh_to_kwh(self.0.counted_milli_wh)
    }

    /// Energy the counter claimed but that was not counted (impossible jump).
    async fn quarantined_kwh(&self) -> Decimal {
        milli_wh_to_kwh(self.0.quarantined_milli_wh)
    }
}

pub struct QuarantinedReading(pub QuarantinedRow);

/// A reading whose counter step needed more power than the meter can measure: the
/// energy is not counted or billed.
#[Object]
impl QuarantinedReading {
    async fn reading(&self) -> Reading {
        Reading(self.0.reading.clone())
    }

    /// Where the step started.
    async fn previous_ts(&self) -> Option<DateTime> {
        self.0.previous_ts.map(DateTime)
    }

    async fn quarantined_kwh(&self) -> Decimal {
        milli_wh_to_kwh(self.0.quarantined_milli_wh)
    }
}

/// A reading as it crosses the pipeline (from the telemetry topic), before the
/// processor stores it: no accounting yet.
pub struct LiveReading(pub Arc<LiveTelemetry>);

#[Object]
impl LiveReading {
    async fn device_id(&self) -> &str {
        self.0.device_id.as_str()
    }

    /// Event time: the meter's clock, or the receive time when it was not synced.
    async fn ts(&self) -> DateTime {
        DateTime(self.0.timestamp)
    }

    async fn meter_ts(&self) -> DateTime {
        DateTime(self.0.meter_timestamp)
    }

    async fn received_at(&self) -> DateTime {
        DateTime(self.0.received_at)
    }

    async fn voltage(&self) -> f64 {
        self.0.voltage
    }

    async fn current(&self) -> f64 {
        self.0.current
    }

    async fn power_w(&self) -> f64 {
        self.0.power_w
    }

    /// The cumulative counter as the meter sent it.
    async fn energy_kwh(&self) -> f64 {
        self.0.energy_kwh
    }

    /// The counter as accounting stores it: exact, six decimal places.
    async fn counter_kwh(&self) -> Decimal {
        milli_wh_to_kwh(kwh_to_milli_wh(self.0.energy_kwh))
    }

    async fn power_factor(&self) -> f64 {
        self.0.power_factor
    }

    async fn frequency_hz(&self) -> Option<f64> {
        self.0.frequency_hz
    }

    async fn rssi(&self) -> Option<i32> {
        self.0.rssi
    }

    async fn seq(&self) -> Option<String> {
        self.0.seq.map(|seq| seq.to_string())
    }

    async fn fw(&self) -> Option<&str> {
        self.0.fw.as_deref()
    }

    async fn clock_unsynced(&self) -> bool {
        self.0.clock_unsynced
    }
}

pub struct DeviceStatusChange(pub Arc<DeviceStatusChanged>);

/// A DeviceStatusChanged event (from the meter's birth and last-will messages via the
/// bridge, or the processor's inactivity check).
#[Object]
impl DeviceStatusChange {
    async fn device_id(&self) -> &str {
        self.0.device_id.as_str()
    }

    async fn online(&self) -> bool {
        self.0.online
    }

    async fn status(&self) -> DeviceStatus {
        if self.0.online {
            DeviceStatus::Online
        } else {
            DeviceStatus::Offline
        }
    }

    /// birth, last_will, disconnect, inactivity or telemetry.
    async fn reason(&self) -> &str {
        self.0.reason.as_str()
    }

    async fn at(&self) -> DateTime {
        DateTime(self.0.at)
    }
}

/// The month in progress priced as if the meter goes on as it has: energy so far ×
/// month length / time elapsed, priced with the tariff the month will be billed on
/// (core's billing arithmetic).
#[derive(SimpleObject)]
pub struct BillProjection {
    pub device_id: String,
    pub tariff_id: String,
    /// The local month projected: the month of the newest reading's event time.
    pub month: Month,
    /// Event time the energy so far is counted up to.
    pub as_of: DateTime,
    pub currency: String,
    pub energy_so_far_kwh: Decimal,
    pub projected_energy_kwh: Decimal,
    /// Share of the month elapsed at `asOf`, 0..1.
    pub elapsed_share: Decimal,
    /// The projected amount at the month's end.
    pub projected_total: Decimal,
    pub lines: Vec<InvoiceLine>,
    /// The slab the consumption so far is in, and its rate; null without slabs.
    pub slab_name: Option<String>,
    pub slab_rate: Option<Decimal>,
    /// The nearest slab or band limit ahead; null in an open last slab.
    pub next_slab_limit_kwh: Option<Decimal>,
    /// kWh left before the next slab (limits are inclusive: 0 exactly at a limit).
    pub kwh_to_next_slab: Option<Decimal>,
}

impl BillProjection {
    pub fn new(
        device_id: &str,
        tariff_id: &str,
        projection: CoreProjection,
        month: jiff::civil::Date,
    ) -> Self {
        Self {
            device_id: device_id.to_owned(),
            tariff_id: tariff_id.to_owned(),
            month: Month(month),
            as_of: DateTime(projection.as_of),
            currency: projection.invoice.currency.to_string(),
            energy_so_far_kwh: projection.energy_so_far_kwh,
            projected_energy_kwh: projection.projected_energy_kwh,
            elapsed_share: projection.elapsed_share,
            projected_total: projection.invoice.total,
            lines: projection.invoice.lines.into_iter().map(InvoiceLine).collect(),
            slab_name: projection.slab.slab_name,
            slab_rate: projection.slab.slab_rate,
            next_slab_limit_kwh: projection.slab.next_limit_kwh,
            kwh_to_next_slab: projection.slab.kwh_to_next_slab,
        }
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
