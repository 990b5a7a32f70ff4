//! Readings and energy: raw readings, gauges downsampled into time buckets, energy per
//! local hour, day and month, counter events and quarantined readings.

use jiff::civil::Date;
use jiff::Timestamp;
use smartmeter_core::DeviceId;

use super::{Store, StoreError};

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
    pub seq: Option<i64>,
    pub boot_id: Option<String>,
    pub fw: Option<String>,
    pub clock_unsynced: bool,
    pub late: bool,
    pub too_late: bool,
    pub after_decommission: bool,
    pub counter_class: String,
    pub counted_milli_wh: i64,
}

/// Gauges of the readings in one time bucket `[bucket_start, bucket_start + width)`.
#[derive(Debug, Clone, PartialEq)]
pub struct GaugeBucketRow {
    pub bucket_start: Timestamp,
    pub readings: i64,
    pub power_w_avg: f64,
    pub power_w_min: f64,
    pub power_w_max: f64,
    pub voltage_v_avg: f64,
    pub voltage_v_min: f64,
    pub voltage_v_max: f64,
    pub current_a_avg: f64,
    pub current_a_max: f64,
    /// Energy of the counter steps ending in the bucket.
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

#[derive(Debug, Clone, PartialEq)]
pub struct MonthlyRow {
    /// First day of the local month.
    pub month: Date,
    pub energy_milli_wh: i64,
    pub days_with_data: i32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CounterEventRow {
    pub ts: Timestamp,
    pub kind: String,
    pub previous_ts: Timestamp,
    pub previous_milli_wh: i64,
    pub current_milli_wh: i64,
    pub counted_milli_wh: i64,
    pub quarantined_milli_wh: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct QuarantinedRow {
    pub reading: ReadingRow,
    pub previous_ts: Option<Timestamp>,
    pub quarantined_milli_wh: i64,
}

/// Origin of the time buckets: TimescaleDB's `time_bucket` default origin (Monday
/// 2000-01-03 00:00 UTC), so the plain SQL below gives the buckets `time_bucket` gives,
/// also for widths that do not divide a day.
pub const BUCKET_ORIGIN_EPOCH_S: i64 = 946_857_600;

/// Width of the TimescaleDB gauge aggregate's buckets, seconds.
const AGGREGATE_WIDTH_S: i64 = 900;

/// Gauges per bucket from the raw readings ($1 device, [$2, $3), $4 width, $5 origin).
const GAUGES_FROM_READINGS: &str = "SELECT to_timestamp($5::bigint + $4::bigint
                            * floor((extract(epoch FROM ts) - $5::bigint) / $4::bigint)::bigint) AS bucket_start,
                        count(*) AS readings,
                        avg(power_w) AS power_w_avg, min(power_w) AS power_w_min, max(power_w) AS power_w_max,
                        avg(voltage_v) AS voltage_v_avg, min(voltage_v) AS voltage_v_min,
                        max(voltage_v) AS voltage_v_max,
                        avg(current_a) AS current_a_avg, max(current_a) AS current_a_max,
                        sum(counted_milli_wh)::bigint AS counted_milli_wh
                 FROM readings
                 WHERE device_id = $1 AND ts >= $2 AND ts < $3 AND NOT too_late
                 GROUP BY 1 ORDER BY 1";

/// The same from the 15-minute aggregate: sums and counts of its buckets added up.
const GAUGES_FROM_AGGREGATE: &str = "SELECT to_timestamp($5::bigint + $4::bigint
            * floor((extract(epoch FROM bucket) - $5::bigint) / $4::bigint)::bigint) AS bucket_start,
        sum(readings)::bigint AS readings,
        sum(power_w_sum) / sum(readings)::double precision AS power_w_avg,
        min(power_w_min) AS power_w_min, max(power_w_max) AS power_w_max,
        sum(voltage_v_sum) / sum(readings)::double precision AS voltage_v_avg,
        min(voltage_v_min) AS voltage_v_min, max(voltage_v_max) AS voltage_v_max,
        sum(current_a_sum) / sum(readings)::double precision AS current_a_avg,
        max(current_a_max) AS current_a_max,
        sum(counted_milli_wh)::bigint AS counted_milli_wh
 FROM readings_gauges_15m
 WHERE device_id = $1 AND bucket >= $2 AND bucket < $3
 GROUP BY 1 ORDER BY 1";

/// Whether the aggregate's materialized rows of [$1, $2) may be stale: TimescaleDB
/// answers below its watermark from materialized rows only, so a reading written there
/// after the last refresh (a replay of old data, a late reading) is missing from them
/// until the next refresh. Such writes are logged as pending invalidations (trigger on
/// the hypertable, in the writing transaction), first per hypertable and, once a
/// refresh has picked them up, per aggregate; either overlapping the range below the
/// watermark sends the query to the raw readings. Catalog tables of TimescaleDB 2.x,
/// read in the same snapshot as the figures.
const AGGREGATE_STALE: &str = "WITH agg AS (
        SELECT c.raw_hypertable_id, c.mat_hypertable_id, t.watermark,
               _timescaledb_functions.to_unix_microseconds($1) AS lo,
               _timescaledb_functions.to_unix_microseconds($2) AS hi
        FROM _timescaledb_catalog.continuous_agg c
        JOIN _timescaledb_catalog.continuous_aggs_invalidation_threshold t
          ON t.hypertable_id = c.raw_hypertable_id
        WHERE c.user_view_name = 'readings_gauges_15m'
    )
    SELECT NOT EXISTS (SELECT 1 FROM agg)
        OR EXISTS (SELECT 1 FROM agg JOIN _timescaledb_catalog.continuous_aggs_hypertable_invalidation_log l
                     ON l.hypertable_id = agg.raw_hypertable_id
                   WHERE l.lowest_modified_value < least(agg.hi, agg.watermark)
                     AND l.greatest_modified_value >= agg.lo)
        OR EXISTS (SELECT 1 FROM agg JOIN _timescaledb_catalog.continuous_aggs_materialization_invalidation_log l
                     ON l.materialization_id = agg.mat_hypertable_id
                   WHERE l.lowest_modified_value < least(agg.hi, agg.watermark)
                     AND l.greatest_modified_value >= agg.lo)";

const READING_COLUMNS: &str = "ts, meter_ts, received_at, voltage_v, current_a, power_w, energy_kwh, \
     counter_milli_wh, power_factor, frequency_hz, rssi, seq, boot_id, fw, clock_unsynced, late, \
     too_late, after_decommission, counter_class, counted_milli_wh";

fn reading_row(row: &tokio_postgres::Row) -> Result<ReadingRow, tokio_postgres::Error> {
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
        seq: row.try_get("seq")?,
        boot_id: row.try_get("boot_id")?,
        fw: row.try_get("fw")?,
        clock_unsynced: row.try_get("clock_unsynced")?,
        late: row.try_get("late")?,
        too_late: row.try_get("too_late")?,
        after_decommission: row.try_get("after_decommission")?,
        counter_class: row.try_get("counter_class")?,
        counted_milli_wh: row.try_get("counted_milli_wh")?,
    })
}

fn hourly_row(row: &tokio_postgres::Row) -> Result<HourlyRow, tokio_postgres::Error> {
    Ok(HourlyRow {
        bucket_start: row.try_get("bucket_start")?,
        bucket_end: row.try_get("bucket_end")?,
        local_date: row.try_get("local_date")?,
        local_hour: row.try_get("local_hour")?,
        utc_offset_seconds: row.try_get("utc_offset_seconds")?,
        energy_milli_wh: row.try_get("energy_milli_wh")?,
    })
}

impl Store {
    /// Raw readings with `from <= ts < to`, oldest first, at most `limit`.
    pub async fn readings(
        &self,
        device_id: &DeviceId,
        from: Timestamp,
        to: Timestamp,
        limit: i64,
    ) -> Result<Vec<ReadingRow>, StoreError> {
        let client = self.pool.get().await?;
        let sql = format!(
            "SELECT {READING_COLUMNS} FROM readings
             WHERE device_id = $1 AND ts >= $2 AND ts < $3
             ORDER BY ts LIMIT $4"
        );
        let rows = client.query(&sql, &[&device_id.as_str(), &from, &to, &limit]).await?;
        Ok(rows.iter().map(reading_row).collect::<Result<_, _>>()?)
    }

    /// The newest readings (by event time) in `[from, to)`, newest first: the seed's
    /// `GET /api/devices/{id}/readings`.
    pub async fn newest_readings(
        &self,
        device_id: &DeviceId,
        from: Option<Timestamp>,
        to: Option<Timestamp>,
        limit: i64,
    ) -> Result<Vec<ReadingRow>, StoreError> {
        let client = self.pool.get().await?;
        let sql = format!(
            "SELECT {READING_COLUMNS} FROM readings
             WHERE device_id = $1 AND ($2::timestamptz IS NULL OR ts >= $2)
               AND ($3::timestamptz IS NULL OR ts < $3)
             ORDER BY ts DESC LIMIT $4"
        );
        let rows = client.query(&sql, &[&device_id.as_str(), &from, &to, &limit]).await?;
        Ok(rows.iter().map(reading_row).collect::<Result<_, _>>()?)
    }

    /// The reading with the newest event time, if any.
    pub async fn latest_reading(&self, device_id: &DeviceId) -> Result<Option<ReadingRow>, StoreError> {
        Ok(self.newest_readings(device_id, None, None, 1).await?.into_iter().next())
    }

    /// Readings of `[from, to)` (too-late ones left out, as in the TimescaleDB gauge
    /// aggregate) downsampled into buckets of `width_s` seconds aligned on
    /// [`BUCKET_ORIGIN_EPOCH_S`]; buckets without readings are absent.
    ///
    /// With TimescaleDB, a range and width on the aggregate's 15-minute grid are read
    /// from the real-time continuous aggregate `readings_gauges_15m` (sums and counts
    /// re-aggregated, so the figures are the plain query's up to float rounding), unless
    /// writes into the range wait for a refresh ([`AGGREGATE_STALE`]).
    pub async fn gauge_buckets(
        &self,
        device_id: &DeviceId,
        from: Timestamp,
        to: Timestamp,
        width_s: i64,
    ) -> Result<Vec<GaugeBucketRow>, StoreError> {
        let on_grid = |at: Timestamp| {
            at.subsec_nanosecond() == 0 && (at.as_second() - BUCKET_ORIGIN_EPOCH_S) % AGGREGATE_WIDTH_S == 0
        };
        let eligible = width_s % AGGREGATE_WIDTH_S == 0
            && on_grid(from)
            && on_grid(to)
            && self.has_gauge_aggregate().await?;
        let mut client = self.pool.get().await?;
        // One snapshot for the staleness check and the figures.
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        let sql = if eligible && !tx.query_one(AGGREGATE_STALE, &[&from, &to]).await?.get::<_, bool>(0) {
            GAUGES_FROM_AGGREGATE
        } else {
            GAUGES_FROM_READINGS
        };
        let rows =
            tx.query(sql, &[&device_id.as_str(), &from, &to, &width_s, &BUCKET_ORIGIN_EPOCH_S]).await?;
        tx.commit().await?;
        Ok(rows
            .iter()
            .map(|row| {
                Ok(GaugeBucketRow {
                    bucket_start: row.try_get("bucket_start")?,
                    readings: row.try_get("readings")?,
                    power_w_avg: row.try_get("power_w_avg")?,
                    power_w_min: row.try_get("power_w_min")?,
                    power_w_max: row.try_get("power_w_max")?,
                    voltage_v_avg: row.try_get("voltage_v_avg")?,
                    voltage_v_min: row.try_get("voltage_v_min")?,
                    voltage_v_max: row.try_get("voltage_v_max")?,
                    current_a_avg: row.try_get("current_a_avg")?,
                    current_a_max: row.try_get("current_a_max")?,
                    counted_milli_wh: row.try_get("counted_milli_wh")?,
                })
            })
            .collect::<Result<_, tokio_postgres::Error>>()?)
    }

    /// Whether the gauge aggregate answers `[from, to)` as it stands: it exists and no
    /// write into the range waits for a refresh. `gauge_buckets` reads it then (for a
    /// range and width on its grid).
    pub async fn gauge_aggregate_current(&self, from: Timestamp, to: Timestamp) -> Result<bool, StoreError> {
        if !self.has_gauge_aggregate().await? {
            return Ok(false);
        }
        let client = self.pool.get().await?;
        Ok(!client.query_one(AGGREGATE_STALE, &[&from, &to]).await?.get::<_, bool>(0))
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
        Ok(rows.iter().map(hourly_row).collect::<Result<_, _>>()?)
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

    /// Local months (first days) `from_month..=to_month` that have energy, summed from
    /// `energy_daily` (never counted separately), oldest first.
    pub async fn monthly_energy(
        &self,
        device_id: &DeviceId,
        from_month: Date,
        to_month: Date,
    ) -> Result<Vec<MonthlyRow>, StoreError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT date_trunc('month', local_date)::date AS month,
                        sum(energy_milli_wh)::bigint AS energy_milli_wh,
                        count(*)::integer AS days_with_data
                 FROM energy_daily
                 WHERE device_id = $1 AND local_date >= $2
                   AND local_date < ($3::date + interval '1 month')::date
                 GROUP BY 1 ORDER BY 1",
                &[&device_id.as_str(), &from_month, &to_month],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|row| {
                Ok(MonthlyRow {
                    month: row.try_get("month")?,
                    energy_milli_wh: row.try_get("energy_milli_wh")?,
                    days_with_data: row.try_get("days_with_data")?,
                })
            })
            .collect::<Result<_, tokio_postgres::Error>>()?)
    }

    /// Counter steps other than normal ones (resets, rollovers, jitter, replacements,
    /// quarantined jumps) ending in `[from, to)`, oldest first.
    pub async fn counter_events(
        &self,
        device_id: &DeviceId,
        from: Timestamp,
        to: Timestamp,
        limit: i64,
    ) -> Result<Vec<CounterEventRow>, StoreError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT ts, kind, previous_ts, previous_milli_wh, current_milli_wh, counted_milli_wh,
                        quarantined_milli_wh
                 FROM counter_events
                 WHERE device_id = $1 AND ts >= $2 AND ts < $3
                 ORDER BY ts LIMIT $4",
                &[&device_id.as_str(), &from, &to, &limit],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|row| {
                Ok(CounterEventRow {
                    ts: row.try_get("ts")?,
                    kind: row.try_get("kind")?,
                    previous_ts: row.try_get("previous_ts")?,
                    previous_milli_wh: row.try_get("previous_milli_wh")?,
                    current_milli_wh: row.try_get("current_milli_wh")?,
                    counted_milli_wh: row.try_get("counted_milli_wh")?,
                    quarantined_milli_wh: row.try_get("quarantined_milli_wh")?,
                })
            })
            .collect::<Result<_, tokio_postgres::Error>>()?)
    }

    /// Readings whose counter step was an impossible jump, with the energy not counted.
    pub async fn quarantined_readings(
        &self,
        device_id: &DeviceId,
        from: Timestamp,
        to: Timestamp,
        limit: i64,
    ) -> Result<Vec<QuarantinedRow>, StoreError> {
        let client = self.pool.get().await?;
        let columns: String =
            READING_COLUMNS.split(", ").map(|c| format!("r.{c}")).collect::<Vec<_>>().join(", ");
        let sql = format!(
            "SELECT {columns}, e.previous_ts, COALESCE(e.quarantined_milli_wh, 0) AS quarantined_milli_wh
             FROM readings r
             LEFT JOIN counter_events e ON e.device_id = r.device_id AND e.ts = r.ts
             WHERE r.device_id = $1 AND r.ts >= $2 AND r.ts < $3 AND r.counter_class = 'quarantined'
             ORDER BY r.ts LIMIT $4"
        );
        let rows = client.query(&sql, &[&device_id.as_str(), &from, &to, &limit]).await?;
        Ok(rows
            .iter()
            .map(|row| {
                Ok(QuarantinedRow {
                    reading: reading_row(row)?,
                    previous_ts: row.try_get("previous_ts")?,
                    quarantined_milli_wh: row.try_get("quarantined_milli_wh")?,
                })
            })
            .collect::<Result<_, tokio_postgres::Error>>()?)
    }

    /// The reading the next counter step starts from, as the processor judges it: the
    /// newest counted reading that moved the baseline (jitter does not; too-late
    /// readings never count).
    pub async fn counter_baseline(
        &self,
        device_id: &DeviceId,
    ) -> Result<Option<(Timestamp, i64)>, StoreError> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                "SELECT ts, counter_milli_wh FROM readings
                 WHERE device_id = $1 AND NOT too_late AND counter_class <> 'jitter'
                 ORDER BY ts DESC LIMIT 1",
                &[&device_id.as_str()],
            )
            .await?;
        Ok(row.map(|row| Ok::<_, tokio_postgres::Error>((row.try_get(0)?, row.try_get(1)?))).transpose()?)
    }
}
