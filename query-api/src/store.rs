//! Reads from the pipeline's projections (`core/migrations/`). Every statement is
//! parameterised; rows come back as plain data, free of GraphQL types.

use deadpool_postgres::Pool;
use jiff::civil::Date;
use jiff::Timestamp;
use rust_decimal::Decimal;
use smartmeter_core::DeviceId;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no database connection: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("query failed: {0}")]
    Query(#[from] tokio_postgres::Error),
}

#[derive(Clone)]
pub struct Store {
    pool: Pool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DeviceRow {
    pub device_id: String,
    pub name: Option<String>,
    pub location: Option<String>,
    pub time_zone: String,
    /// `discovered`, `registered` or `decommissioned` (a CHECK constraint holds it).
    pub lifecycle: String,
    pub tariff_id: Option<String>,
    pub sanctioned_load_kw: Option<Decimal>,
    pub firmware_version: Option<String>,
    /// `None` until the first status message.
    pub online: Option<bool>,
    pub status_changed_at: Option<Timestamp>,
    pub first_seen_at: Option<Timestamp>,
    pub last_seen_at: Option<Timestamp>,
    pub newest_reading_at: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ReadingRow {
    pub ts: Timestamp,
    pub meter_ts: Timestamp,
    pub received_at: Timestamp,
    pub voltage_v: f64,
    pub current_a: f64,
    pub power_w: f64,
    pub energy_kwh: f64,
    pub counter_milli_wh: i64,
    pub power_factor: f64,
    pub frequency_hz: Option<f64>,
    pub rssi: Option<i32>,
    pub clock_unsynced: bool,
    pub late: bool,
    pub too_late: bool,
    pub counter_class: String,
    pub counted_milli_wh: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HourlyRow {
    pub bucket_start: Timestamp,
    pub bucket_end: Timestamp,
    pub local_date: Date,
    pub local_hour: i16,
    pub utc_offset_seconds: i32,
    pub energy_milli_wh: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DailyRow {
    pub local_date: Date,
    pub energy_milli_wh: i64,
    /// Hourly buckets recorded for the local date (23 or 25 on a DST day when complete).
    pub hours: i64,
}

const DEVICE_COLUMNS: &str = "device_id, name, location, time_zone, lifecycle, tariff_id, \
     sanctioned_load_kw, firmware_version, online, status_changed_at, first_seen_at, \
     last_seen_at, newest_reading_at";

fn device_row(row: &tokio_postgres::Row) -> Result<DeviceRow, tokio_postgres::Error> {
    Ok(DeviceRow {
        device_id: row.try_get("device_id")?,
        name: row.try_get("name")?,
        location: row.try_get("location")?,
        time_zone: row.try_get("time_zone")?,
        lifecycle: row.try_get("lifecycle")?,
        tariff_id: row.try_get("tariff_id")?,
        sanctioned_load_kw: row.try_get("sanctioned_load_kw")?,
        firmware_version: row.try_get("firmware_version")?,
        online: row.try_get("online")?,
        status_changed_at: row.try_get("status_changed_at")?,
        first_seen_at: row.try_get("first_seen_at")?,
        last_seen_at: row.try_get("last_seen_at")?,
        newest_reading_at: row.try_get("newest_reading_at")?,
    })
}

impl Store {
    pub fn new(pool: Pool) -> Self {
        Self { pool }
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// A round trip to the server, for health checks.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        client.query_one("SELECT 1", &[]).await?;
        Ok(())
    }

    /// Up to `limit` devices with an id after `after`, ordered by id.
    pub async fn devices_after(&self, after: Option<&str>, limit: i64) -> Result<Vec<DeviceRow>, StoreError> {
        let client = self.pool.get().await?;
        let sql = format!(
            "SELECT {DEVICE_COLUMNS} FROM devices
             WHERE $1::text IS NULL OR device_id > $1
             ORDER BY device_id LIMIT $2"
        );
        let rows = client.query(&sql, &[&after, &limit]).await?;
        Ok(rows.iter().map(device_row).collect::<Result<_, _>>()?)
    }

    pub async fn device(&self, device_id: &DeviceId) -> Result<Option<DeviceRow>, StoreError> {
        let client = self.pool.get().await?;
        let sql = format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE device_id = $1");
        let row = client.query_opt(&sql, &[&device_id.as_str()]).await?;
        Ok(row.as_ref().map(device_row).transpose()?)
    }

    /// Raw readings with `from <= ts < to`, oldest first, at most `limit`.
    pub async fn readings(
        &self,
        device_id: &DeviceId,
        from: Timestamp,
        to: Timestamp,
        limit: i64,
    ) -> Result<Vec<ReadingRow>, StoreError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT ts, meter_ts, received_at, voltage_v, current_a, power_w, energy_kwh,
                        counter_milli_wh, power_factor, frequency_hz, rssi, clock_unsynced, late,
                        too_late, counter_class, counted_milli_wh
                 FROM readings
                 WHERE device_id = $1 AND ts >= $2 AND ts < $3
                 ORDER BY ts LIMIT $4",
                &[&device_id.as_str(), &from, &to, &limit],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|row| {
                Ok(ReadingRow {
                    ts: row.try_get("ts")?,
                    meter_ts: row.try_get("meter_ts")?,
                    received_at: row.try_get("received_at")?,
                    voltage_v: row.try_get("voltage_v")?,
                    current_a: row.try_get("current_a")?,
                    power_w: row.try_get("power_w")?,
                    energy_kwh: row.try_get("energy_kwh")?,
                    counter_milli_wh: row.try_get("counter_milli_wh")?,
                    power_factor: row.try_get("power_factor")?,
                    frequency_hz: row.try_get("frequency_hz")?,
                    rssi: row.try_get("rssi")?,
                    clock_unsynced: row.try_get("clock_unsynced")?,
                    late: row.try_get("late")?,
                    too_late: row.try_get("too_late")?,
                    counter_class: row.try_get("counter_class")?,
                    counted_milli_wh: row.try_get("counted_milli_wh")?,
                })
            })
            .collect::<Result<_, tokio_postgres::Error>>()?)
    }

    /// Local-hour buckets starting in `[from, to)`, oldest first.
    pub async fn hourly_energy(
        &self,
        device_id: &DeviceId,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<HourlyRow>, StoreError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT bucket_start, bucket_end, local_date, local_hour, utc_offset_seconds,
                        energy_milli_wh
                 FROM energy_hourly
                 WHERE device_id = $1 AND bucket_start >= $2 AND bucket_start < $3
                 ORDER BY bucket_start",
                &[&device_id.as_str(), &from, &to],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|row| {
                Ok(HourlyRow {
                    bucket_start: row.try_get("bucket_start")?,
                    bucket_end: row.try_get("bucket_end")?,
                    local_date: row.try_get("local_date")?,
                    local_hour: row.try_get("local_hour")?,
                    utc_offset_seconds: row.try_get("utc_offset_seconds")?,
                    energy_milli_wh: row.try_get("energy_milli_wh")?,
                })
            })
            .collect::<Result<_, tokio_postgres::Error>>()?)
    }

    /// Local days `from_date..=to_date` that have energy, oldest first.
    pub async fn daily_energy(
        &self,
        device_id: &DeviceId,
        from_date: Date,
        to_date: Date,
    ) -> Result<Vec<DailyRow>, StoreError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT d.local_date, d.energy_milli_wh, count(h.bucket_start) AS hours
                 FROM energy_daily d
                 LEFT JOIN energy_hourly h
                        ON h.device_id = d.device_id AND h.local_date = d.local_date
                 WHERE d.device_id = $1 AND d.local_date BETWEEN $2 AND $3
                 GROUP BY d.local_date, d.energy_milli_wh
                 ORDER BY d.local_date",
                &[&device_id.as_str(), &from_date, &to_date],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|row| {
                Ok(DailyRow {
                    local_date: row.try_get("local_date")?,
                    energy_milli_wh: row.try_get("energy_milli_wh")?,
                    hours: row.try_get("hours")?,
                })
            })
            .collect::<Result<_, tokio_postgres::Error>>()?)
    }
}
