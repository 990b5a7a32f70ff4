//! PostgreSQL writes of the processor. Everything a batch changes, including the
//! consumed offsets, is written in the caller's one transaction.

use std::collections::HashMap;

use deadpool_postgres::Transaction;
use jiff::civil::Date;
use jiff::Timestamp;
use smartmeter_core::device_events::StatusReason;
use smartmeter_core::energy::CounterReading;

use crate::rollup::{Arrived, DevicePlan, Judgement, Window};
use crate::status;

/// `at` as PostgreSQL stores it: rounded to the microsecond (as `postgres-types`
/// sends it). Everything the processor compares with stored times, or derives event
/// ids from, goes through this first, so a value read back equals the value written.
pub fn db_precision(at: Timestamp) -> Timestamp {
    at.round(jiff::Unit::Microsecond).unwrap_or(at)
}

/// What the processor needs of a device row.
#[derive(Debug, Clone)]
pub struct DeviceRow {
    pub time_zone: String,
    pub newest_reading_at: Option<Timestamp>,
    /// Readings stamped after this are stored but not counted.
    pub decommissioned_at: Option<Timestamp>,
    pub last_seen_at: Option<Timestamp>,
    pub status: status::State,
}

/// Loads and locks the batch's devices (in id order, so concurrent writers cannot
/// deadlock), registering unknown ones as `discovered` in the default zone.
pub async fn load_devices(
    tx: &Transaction<'_>,
    device_ids: &[&str],
    default_time_zone: &str,
) -> Result<HashMap<String, DeviceRow>, tokio_postgres::Error> {
    let insert = tx
        .prepare_cached(
            "INSERT INTO devices (device_id, time_zone)
             SELECT id, $2 FROM unnest($1::text[]) AS id ORDER BY id
             ON CONFLICT (device_id) DO NOTHING",
        )
        .await?;
    tx.execute(&insert, &[&device_ids, &default_time_zone]).await?;
    let select = tx
        .prepare_cached(
            "SELECT device_id, time_zone, newest_reading_at, decommissioned_at, last_seen_at,
                    online, status_changed_at, status_reason
             FROM devices WHERE device_id = ANY($1) ORDER BY device_id FOR UPDATE",
        )
        .await?;
    let rows = tx.query(&select, &[&device_ids]).await?;
    Ok(rows.iter().map(|row| (row.get(0), device_row(row))).collect())
}

fn device_row(row: &tokio_postgres::Row) -> DeviceRow {
    DeviceRow {
        time_zone: row.get(1),
        newest_reading_at: row.get(2),
        decommissioned_at: row.get(3),
        last_seen_at: row.get(4),
        status: status::State {
            online: row.get(5),
            at: row.get(6),
            reason: row.get::<_, Option<&str>>(7).and_then(status::parse_reason),
        },
    }
}

/// Removes from each device's arrivals the exact copies of stored readings (same time,
/// same counter) and adds them to the devices' duplicate counts; returns how many. Only
/// readings no newer than a device's newest stored one can be copies: an in-order
/// batch costs no query.
pub async fn drop_stored_duplicates(
    tx: &Transaction<'_>,
    by_device: &mut [(String, Vec<Arrived>)],
    devices: &HashMap<String, DeviceRow>,
) -> Result<u64, tokio_postgres::Error> {
    let newest = |id: &str| devices.get(id).and_then(|row| row.newest_reading_at);
    let (ids, times): (Vec<&str>, Vec<Timestamp>) = by_device
        .iter()
        .filter_map(|(id, arrived)| newest(id).map(|newest| (id, arrived, newest)))
        .flat_map(|(id, arrived, newest)| {
            arrived.iter().filter(move |a| a.counter.at <= newest).map(move |a| (id.as_str(), a.counter.at))
        })
        .unzip();
    if ids.is_empty() {
        return Ok(0);
    }
    let statement = tx
        .prepare_cached(
            "SELECT r.device_id, r.ts, r.counter_milli_wh
             FROM readings r JOIN unnest($1::text[], $2::timestamptz[]) AS u(device_id, ts)
                  ON r.device_id = u.device_id AND r.ts = u.ts",
        )
        .await?;
    let mut stored: HashMap<String, std::collections::HashSet<(Timestamp, i64)>> = HashMap::new();
    for row in tx.query(&statement, &[&ids, &times]).await? {
        stored.entry(row.get(0)).or_default().insert((row.get(1), row.get(2)));
    }
    let mut counted: (Vec<String>, Vec<i64>) = Default::default();
    for (id, arrived) in by_device.iter_mut() {
        let Some(stored) = stored.get(id.as_str()) else { continue };
        let before = arrived.len();
        arrived.retain(|a| !stored.contains(&(a.counter.at, a.counter.counter_milli_wh)));
        if arrived.len() < before {
            counted.0.push(id.clone());
            counted.1.push((before - arrived.len()) as i64);
        }
    }
    if counted.0.is_empty() {
        return Ok(0);
    }
    let statement = tx
        .prepare_cached(
            "UPDATE devices d SET duplicates_total = d.duplicates_total + u.duplicates, updated_at = now()
             FROM unnest($1::text[], $2::bigint[]) AS u(device_id, duplicates)
             WHERE d.device_id = u.device_id",
        )
        .await?;
    tx.execute(&statement, &[&counted.0, &counted.1]).await?;
    Ok(counted.1.iter().sum::<i64>() as u64)
}

/// Per device, the stored sequence from the baseline before `earliest` to the newest
/// reading, for every `(device, earliest)` given, in ONE query. A device with nothing
/// stored gets an empty window that starts at its first reading.
pub async fn load_windows(
    tx: &Transaction<'_>,
    wanted: &[(String, Timestamp)],
) -> Result<HashMap<String, Window>, tokio_postgres::Error> {
    let mut windows: HashMap<String, Window> = HashMap::with_capacity(wanted.len());
    if wanted.is_empty() {
        return Ok(windows);
    }
    let ids: Vec<&str> = wanted.iter().map(|(id, _)| id.as_str()).collect();
    let earliest: Vec<Timestamp> = wanted.iter().map(|(_, at)| *at).collect();
    // The baseline: the newest reading before `earliest` that a step can start from
    // (jitter does not move the baseline).
    let statement = tx
        .prepare_cached(
            "WITH w AS (
                 SELECT u.device_id,
                        (SELECT r.ts FROM readings r
                         WHERE r.device_id = u.device_id AND r.ts < u.earliest AND NOT r.too_late
                           AND NOT r.after_decommission AND r.counter_class <> 'jitter'
                         ORDER BY r.ts DESC LIMIT 1) AS baseline
                 FROM unnest($1::text[], $2::timestamptz[]) AS u(device_id, earliest)
             )
             SELECT w.device_id, w.baseline IS NULL, r.ts, r.counter_milli_wh
             FROM w CROSS JOIN LATERAL (
                 SELECT r.ts, r.counter_milli_wh FROM readings r
                 WHERE r.device_id = w.device_id AND NOT r.too_late AND NOT r.after_decommission
                   AND (w.baseline IS NULL OR r.ts >= w.baseline)
                 ORDER BY r.ts
             ) r
             ORDER BY w.device_id, r.ts",
        )
        .await?;
    for row in tx.query(&statement, &[&ids, &earliest]).await? {
        let window = windows
            .entry(row.get(0))
            .or_insert_with(|| Window { starts_at_first_reading: row.get(1), readings: Vec::new() });
        window.readings.push(CounterReading { at: row.get(2), counter_milli_wh: row.get(3) });
    }
    for id in ids {
        windows
            .entry(id.to_owned())
            .or_insert_with(|| Window { starts_at_first_reading: true, readings: Vec::new() });
    }
    Ok(windows)
}

/// The readings of a plan that came from the meter this time (duplicates left out), in
/// the order they were read from Kafka.
pub fn arrivals(plan: &DevicePlan) -> Vec<&Arrived> {
    let mut arrivals: Vec<&Arrived> = plan
        .inserts
        .iter()
        .chain(&plan.replacements)
        .map(|(a, _)| a)
        .chain(&plan.too_late)
        .chain(&plan.after_decommission)
        .chain(&plan.conflicts)
        .collect();
    arrivals.sort_by_key(|a| (a.partition, a.offset));
    arrivals
}

/// Everything one round of a batch writes for its devices (each device at most once:
/// one segment of its batch), as columns: one statement per table whatever the number
/// of devices. [`Writes::flush`] writes them in the order a single device's writes
/// depend on (readings, conflicts, re-judgements, counter events, energy, device rows).
#[derive(Default)]
pub struct Writes {
    fresh: ReadingRows,
    replacing: ReadingRows,
    /// (device, ts) of stored readings that `replacing` replaces.
    replaced: (Vec<String>, Vec<Timestamp>),
    conflicts: ConflictRows,
    rejudged: RejudgedRows,
    /// Per device whose counter events are recomputed: events after this (all: NULL)
    /// are replaced by `events`.
    events_reset: (Vec<String>, Vec<Option<Timestamp>>),
    events: EventRows,
    pub energy: EnergyRows,
    devices: DeviceUpdates,
}

impl Writes {
    /// Adds one device's plan; `status`: its state after the plan, when telemetry
    /// changed it.
    pub fn add(&mut self, device_id: &str, plan: &DevicePlan, status: Option<status::State>) {
        for (arrived, judgement) in &plan.inserts {
            self.fresh.push(arrived, Kept::Counted(judgement));
        }
        for arrived in &plan.too_late {
            self.fresh.push(arrived, Kept::TooLate);
        }
        for arrived in &plan.after_decommission {
            self.fresh.push(arrived, Kept::AfterDecommission);
        }
        for (arrived, judgement) in &plan.replacements {
            self.replaced.0.push(device_id.to_owned());
            self.replaced.1.push(arrived.counter.at);
            self.replacing.push(arrived, Kept::Counted(judgement));
        }
        for arrived in &plan.conflicts {
            self.conflicts.push(device_id, arrived);
        }
        for (at, judgement) in &plan.rejudged {
            self.rejudged.device_id.push(device_id.to_owned());
            self.rejudged.ts.push(*at);
            self.rejudged.class.push(judgement.kind.as_str());
            self.rejudged.counted.push(judgement.counted_milli_wh);
        }
        if !plan.inserts.is_empty() || !plan.replacements.is_empty() {
            self.events_reset.0.push(device_id.to_owned());
            self.events_reset.1.push(plan.events_after);
            for step in &plan.events {
                self.events.push(device_id, step);
            }
        }
        self.energy.add(device_id, plan);
        self.devices.push(device_id, plan, status);
    }

    pub async fn flush(&self, tx: &Transaction<'_>) -> Result<(), tokio_postgres::Error> {
        self.fresh.insert(tx, false).await?;
        if !self.replaced.0.is_empty() {
            let statement = tx
                .prepare_cached(
                    "INSERT INTO reading_conflicts (device_id, ts, counter_milli_wh, payload, kafka_partition, kafka_offset)
                     SELECT r.device_id, r.ts, r.counter_milli_wh, to_jsonb(r), r.kafka_partition, r.kafka_offset
                     FROM readings r JOIN unnest($1::text[], $2::timestamptz[]) AS u(device_id, ts)
                          ON r.device_id = u.device_id AND r.ts = u.ts
                     ON CONFLICT DO NOTHING",
                )
                .await?;
            tx.execute(&statement, &[&self.replaced.0, &self.replaced.1]).await?;
            self.replacing.insert(tx, true).await?;
        }
        self.conflicts.insert(tx).await?;
        self.rejudged.update(tx).await?;
        if !self.events_reset.0.is_empty() {
            let statement = tx
                .prepare_cached(
                    "DELETE FROM counter_events c USING unnest($1::text[], $2::timestamptz[]) AS u(device_id, after)
                     WHERE c.device_id = u.device_id AND (u.after IS NULL OR c.ts > u.after)",
                )
                .await?;
            tx.execute(&statement, &[&self.events_reset.0, &self.events_reset.1]).await?;
            self.events.insert(tx).await?;
        }
        self.energy.flush(tx).await?;
        self.devices.update(tx).await?;
        Ok(())
    }
}

#[derive(Default)]
struct ConflictRows {
    device_id: Vec<String>,
    ts: Vec<Timestamp>,
    counter: Vec<i64>,
    payload: Vec<serde_json::Value>,
    partition: Vec<i32>,
    offset: Vec<i64>,
}

impl ConflictRows {
    fn push(&mut self, device_id: &str, arrived: &Arrived) {
        self.device_id.push(device_id.to_owned());
        self.ts.push(arrived.counter.at);
        self.counter.push(arrived.counter.counter_milli_wh);
        self.payload.push(serde_json::to_value(&arrived.reading).expect("reading serializes"));
        self.partition.push(arrived.partition);
        self.offset.push(arrived.offset);
    }

    async fn insert(&self, tx: &Transaction<'_>) -> Result<(), tokio_postgres::Error> {
        if self.ts.is_empty() {
            return Ok(());
        }
        let statement = tx
            .prepare_cached(
                "INSERT INTO reading_conflicts (device_id, ts, counter_milli_wh, payload, kafka_partition, kafka_offset)
                 SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::bigint[], $4::jsonb[], $5::int[], $6::bigint[])
                 ON CONFLICT DO NOTHING",
            )
            .await?;
        tx.execute(
            &statement,
            &[&self.device_id, &self.ts, &self.counter, &self.payload, &self.partition, &self.offset],
        )
        .await?;
        Ok(())
    }
}

#[derive(Default)]
struct RejudgedRows {
    device_id: Vec<String>,
    ts: Vec<Timestamp>,
    class: Vec<&'static str>,
    counted: Vec<i64>,
}

impl RejudgedRows {
    async fn update(&self, tx: &Transaction<'_>) -> Result<(), tokio_postgres::Error> {
        if self.ts.is_empty() {
            return Ok(());
        }
        let statement = tx
            .prepare_cached(
                "UPDATE readings r SET counter_class = u.class, counted_milli_wh = u.counted
                 FROM unnest($1::text[], $2::timestamptz[], $3::text[], $4::bigint[]) AS u(device_id, ts, class, counted)
                 WHERE r.device_id = u.device_id AND r.ts = u.ts",
            )
            .await?;
        tx.execute(&statement, &[&self.device_id, &self.ts, &self.class, &self.counted]).await?;
        Ok(())
    }
}

#[derive(Default)]
struct EventRows {
    device_id: Vec<String>,
    ts: Vec<Timestamp>,
    kind: Vec<&'static str>,
    previous_ts: Vec<Timestamp>,
    previous: Vec<i64>,
    current: Vec<i64>,
    counted: Vec<i64>,
    quarantined: Vec<i64>,
}

impl EventRows {
    fn push(&mut self, device_id: &str, step: &smartmeter_core::energy::Step) {
        self.device_id.push(device_id.to_owned());
        self.ts.push(step.reading.at);
        self.kind.push(step.kind.as_str());
        self.previous_ts.push(step.baseline.at);
        self.previous.push(step.baseline.counter_milli_wh);
        self.current.push(step.reading.counter_milli_wh);
        self.counted.push(step.counted_milli_wh);
        self.quarantined.push(step.quarantined_milli_wh);
    }

    async fn insert(&self, tx: &Transaction<'_>) -> Result<(), tokio_postgres::Error> {
        if self.ts.is_empty() {
            return Ok(());
        }
        let statement = tx
            .prepare_cached(
                "INSERT INTO counter_events (device_id, ts, kind, previous_ts, previous_milli_wh,
                                             current_milli_wh, counted_milli_wh, quarantined_milli_wh)
                 SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::text[], $4::timestamptz[], $5::bigint[],
                                      $6::bigint[], $7::bigint[], $8::bigint[])",
            )
            .await?;
        tx.execute(
            &statement,
            &[
                &self.device_id,
                &self.ts,
                &self.kind,
                &self.previous_ts,
                &self.previous,
                &self.current,
                &self.counted,
                &self.quarantined,
            ],
        )
        .await?;
        Ok(())
    }
}

/// Energy increments per local hour and day of several devices, added in one
/// statement per table. A bucket that comes back to zero (a re-split moved its
/// energy) leaves no row, so the tables do not depend on the order readings arrived in.
#[derive(Default)]
pub struct EnergyRows {
    hourly_device: Vec<String>,
    starts: Vec<Timestamp>,
    ends: Vec<Timestamp>,
    dates: Vec<Date>,
    hours: Vec<i16>,
    offsets: Vec<i32>,
    hourly_energy: Vec<i64>,
    daily_device: Vec<String>,
    days: Vec<Date>,
    daily_energy: Vec<i64>,
}

impl EnergyRows {
    pub fn add(&mut self, device_id: &str, plan: &DevicePlan) {
        for (bucket, energy) in &plan.hourly {
            self.hourly_device.push(device_id.to_owned());
            self.starts.push(bucket.start);
            self.ends.push(bucket.end);
            self.dates.push(bucket.local_date);
            self.hours.push(i16::from(bucket.local_hour));
            self.offsets.push(bucket.utc_offset_seconds);
            self.hourly_energy.push(*energy);
        }
        for (date, energy) in &plan.daily {
            self.daily_device.push(device_id.to_owned());
            self.days.push(*date);
            self.daily_energy.push(*energy);
        }
    }

    pub async fn flush(&self, tx: &Transaction<'_>) -> Result<(), tokio_postgres::Error> {
        if !self.starts.is_empty() {
            let upsert = tx
                .prepare_cached(
                    "WITH up AS (
                         INSERT INTO energy_hourly AS h (device_id, bucket_start, bucket_end, local_date, local_hour,
                                                         utc_offset_seconds, energy_milli_wh)
                         SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::timestamptz[], $4::date[],
                                              $5::smallint[], $6::int[], $7::bigint[])
                         ON CONFLICT (device_id, bucket_start)
                         DO UPDATE SET energy_milli_wh = h.energy_milli_wh + EXCLUDED.energy_milli_wh
                         RETURNING device_id, bucket_start, energy_milli_wh
                     )
                     SELECT device_id, bucket_start FROM up WHERE energy_milli_wh = 0",
                )
                .await?;
            let zero = tx
                .query(
                    &upsert,
                    &[
                        &self.hourly_device,
                        &self.starts,
                        &self.ends,
                        &self.dates,
                        &self.hours,
                        &self.offsets,
                        &self.hourly_energy,
                    ],
                )
                .await?;
            if !zero.is_empty() {
                let devices: Vec<&str> = zero.iter().map(|row| row.get(0)).collect();
                let starts: Vec<Timestamp> = zero.iter().map(|row| row.get(1)).collect();
                let delete = tx
                    .prepare_cached(
                        "DELETE FROM energy_hourly h USING unnest($1::text[], $2::timestamptz[]) AS u(device_id, s)
                         WHERE h.device_id = u.device_id AND h.bucket_start = u.s AND h.energy_milli_wh = 0",
                    )
                    .await?;
                tx.execute(&delete, &[&devices, &starts]).await?;
            }
        }
        if !self.days.is_empty() {
            let upsert = tx
                .prepare_cached(
                    "WITH up AS (
                         INSERT INTO energy_daily AS d (device_id, local_date, energy_milli_wh)
                         SELECT * FROM unnest($1::text[], $2::date[], $3::bigint[])
                         ON CONFLICT (device_id, local_date)
                         DO UPDATE SET energy_milli_wh = d.energy_milli_wh + EXCLUDED.energy_milli_wh
                         RETURNING device_id, local_date, energy_milli_wh
                     )
                     SELECT device_id, local_date FROM up WHERE energy_milli_wh = 0",
                )
                .await?;
            let zero = tx.query(&upsert, &[&self.daily_device, &self.days, &self.daily_energy]).await?;
            if !zero.is_empty() {
                let devices: Vec<&str> = zero.iter().map(|row| row.get(0)).collect();
                let days: Vec<Date> = zero.iter().map(|row| row.get(1)).collect();
                let delete = tx
                    .prepare_cached(
                        "DELETE FROM energy_daily d USING unnest($1::text[], $2::date[]) AS u(device_id, day)
                         WHERE d.device_id = u.device_id AND d.local_date = u.day AND d.energy_milli_wh = 0",
                    )
                    .await?;
                tx.execute(&delete, &[&devices, &days]).await?;
            }
        }
        Ok(())
    }
}

/// The device-row changes of a round: counts, times, firmware, partition, and the
/// online state telemetry implied (newest wins, as [`status::store`]).
#[derive(Default)]
struct DeviceUpdates {
    device_id: Vec<String>,
    newest: Vec<Option<Timestamp>>,
    last_seen: Vec<Option<Timestamp>>,
    first_seen: Vec<Option<Timestamp>>,
    firmware: Vec<Option<String>>,
    stored: Vec<i64>,
    duplicates: Vec<i64>,
    partition: Vec<Option<i32>>,
    online: Vec<Option<bool>>,
    reason: Vec<Option<&'static str>>,
    status_at: Vec<Option<Timestamp>>,
}

impl DeviceUpdates {
    fn push(&mut self, device_id: &str, plan: &DevicePlan, status: Option<status::State>) {
        let arrivals = arrivals(plan);
        let partition = arrivals.last().map(|a| a.partition);
        let mut last_seen: Option<Timestamp> = None;
        let mut first_seen: Option<Timestamp> = None;
        let mut newest_with_fw: Option<(Timestamp, &str)> = None;
        for arrived in arrivals {
            let reading = &arrived.reading;
            last_seen = last_seen.max(Some(reading.received_at));
            first_seen = Some(first_seen.map_or(reading.received_at, |f| f.min(reading.received_at)));
            if let Some(fw) = reading.fw.as_deref() {
                if newest_with_fw.is_none_or(|(at, _)| reading.timestamp > at) {
                    newest_with_fw = Some((reading.timestamp, fw));
                }
            }
        }
        self.device_id.push(device_id.to_owned());
        self.newest.push(plan.newest_reading_at);
        self.last_seen.push(last_seen);
        self.first_seen.push(first_seen);
        self.firmware.push(newest_with_fw.map(|(_, fw)| fw.to_owned()));
        self.stored.push((plan.inserts.len() + plan.too_late.len() + plan.after_decommission.len()) as i64);
        self.duplicates.push(plan.duplicates as i64);
        self.partition.push(partition);
        let status = status.filter(|s| s.online.is_some() && s.at.is_some());
        self.online.push(status.and_then(|s| s.online));
        self.reason.push(status.map(|s| s.reason.unwrap_or(StatusReason::Telemetry).as_str()));
        self.status_at.push(status.and_then(|s| s.at));
    }

    async fn update(&self, tx: &Transaction<'_>) -> Result<(), tokio_postgres::Error> {
        if self.device_id.is_empty() {
            return Ok(());
        }
        // `w`: the state telemetry implied is newer than the stored one, by (at,
        // offline before online, reason), as `status::store` decides.
        let statement = tx
            .prepare_cached(
                "UPDATE devices d SET
                     newest_reading_at   = greatest(d.newest_reading_at, u.newest),
                     last_seen_at        = greatest(d.last_seen_at, u.last_seen),
                     first_seen_at       = coalesce(d.first_seen_at, u.first_seen),
                     firmware_version    = coalesce(u.firmware, d.firmware_version),
                     readings_total      = d.readings_total + u.stored,
                     duplicates_total    = d.duplicates_total + u.duplicates,
                     telemetry_partition = coalesce(u.partition, d.telemetry_partition),
                     (online, status_reason, status_changed_at) = (
                         SELECT CASE WHEN w THEN u.online ELSE d.online END,
                                CASE WHEN w THEN u.reason ELSE d.status_reason END,
                                CASE WHEN w THEN u.status_at ELSE d.status_changed_at END
                         FROM (SELECT u.status_at IS NOT NULL
                                      AND (d.status_changed_at IS NULL OR d.online IS NULL
                                           OR (d.status_changed_at, NOT d.online, coalesce(d.status_reason, 'telemetry'))
                                              < (u.status_at, NOT u.online, u.reason)) AS w) AS wins
                     ),
                     updated_at          = now()
                 FROM unnest($1::text[], $2::timestamptz[], $3::timestamptz[], $4::timestamptz[], $5::text[],
                             $6::bigint[], $7::bigint[], $8::int[], $9::bool[], $10::text[], $11::timestamptz[])
                      AS u(device_id, newest, last_seen, first_seen, firmware, stored, duplicates, partition,
                           online, reason, status_at)
                 WHERE d.device_id = u.device_id",
            )
            .await?;
        tx.execute(
            &statement,
            &[
                &self.device_id,
                &self.newest,
                &self.last_seen,
                &self.first_seen,
                &self.firmware,
                &self.stored,
                &self.duplicates,
                &self.partition,
                &self.online,
                &self.reason,
                &self.status_at,
            ],
        )
        .await?;
        Ok(())
    }
}

/// Readings as columns, for one multi-row `INSERT ... SELECT FROM unnest(...)`.
#[derive(Default)]
struct ReadingRows {
    device_id: Vec<String>,
    ts: Vec<Timestamp>,
    meter_ts: Vec<Timestamp>,
    received_at: Vec<Timestamp>,
    voltage: Vec<f64>,
    current: Vec<f64>,
    power_w: Vec<f64>,
    energy_kwh: Vec<f64>,
    counter: Vec<i64>,
    power_factor: Vec<f64>,
    frequency_hz: Vec<Option<f64>>,
    rssi: Vec<Option<i32>>,
    seq: Vec<Option<i64>>,
    boot_id: Vec<Option<String>>,
    fw: Vec<Option<String>>,
    clock_unsynced: Vec<bool>,
    late: Vec<bool>,
    too_late: Vec<bool>,
    class: Vec<&'static str>,
    counted: Vec<i64>,
    partition: Vec<i32>,
    offset: Vec<i64>,
    after_decommission: Vec<bool>,
}

/// How a stored reading is kept.
#[derive(Debug, Clone, Copy)]
enum Kept<'a> {
    Counted(&'a Judgement),
    /// Past the allowed lateness.
    TooLate,
    /// Stamped after the device's decommissioning.
    AfterDecommission,
}

/// `counter_class` of readings stamped after their device's decommissioning.
pub const DECOMMISSIONED_CLASS: &str = "decommissioned";

impl ReadingRows {
    fn push(&mut self, arrived: &Arrived, kept: Kept<'_>) {
        let judgement = match kept {
            Kept::Counted(judgement) => Some(judgement),
            Kept::TooLate | Kept::AfterDecommission => None,
        };
        let r = &arrived.reading;
        self.device_id.push(r.device_id.to_string());
        self.ts.push(r.timestamp);
        self.meter_ts.push(r.meter_timestamp);
        self.received_at.push(r.received_at);
        self.voltage.push(r.voltage);
        self.current.push(r.current);
        self.power_w.push(r.power_w);
        self.energy_kwh.push(r.energy_kwh);
        self.counter.push(arrived.counter.counter_milli_wh);
        self.power_factor.push(r.power_factor);
        self.frequency_hz.push(r.frequency_hz);
        self.rssi.push(r.rssi);
        self.seq.push(r.seq.map(|s| s as i64));
        self.boot_id.push(r.boot_id.clone());
        self.fw.push(r.fw.clone());
        self.clock_unsynced.push(r.clock_unsynced);
        self.late.push(judgement.is_some_and(|j| j.late));
        self.too_late.push(matches!(kept, Kept::TooLate));
        self.class.push(match kept {
            Kept::Counted(j) => j.kind.as_str(),
            Kept::TooLate => "too_late",
            Kept::AfterDecommission => DECOMMISSIONED_CLASS,
        });
        self.counted.push(judgement.map_or(0, |j| j.counted_milli_wh));
        self.partition.push(arrived.partition);
        self.offset.push(arrived.offset);
        self.after_decommission.push(matches!(kept, Kept::AfterDecommission));
    }

    async fn insert(&self, tx: &Transaction<'_>, replace: bool) -> Result<u64, tokio_postgres::Error> {
        if self.ts.is_empty() {
            return Ok(0);
        }
        let on_conflict = if replace {
            "ON CONFLICT (device_id, ts) DO UPDATE SET
                 meter_ts = EXCLUDED.meter_ts, received_at = EXCLUDED.received_at,
                 voltage_v = EXCLUDED.voltage_v, current_a = EXCLUDED.current_a,
                 power_w = EXCLUDED.power_w, energy_kwh = EXCLUDED.energy_kwh,
                 counter_milli_wh = EXCLUDED.counter_milli_wh, power_factor = EXCLUDED.power_factor,
                 frequency_hz = EXCLUDED.frequency_hz, rssi = EXCLUDED.rssi, seq = EXCLUDED.seq,
                 boot_id = EXCLUDED.boot_id, fw = EXCLUDED.fw, clock_unsynced = EXCLUDED.clock_unsynced,
                 late = EXCLUDED.late, too_late = EXCLUDED.too_late, counter_class = EXCLUDED.counter_class,
                 counted_milli_wh = EXCLUDED.counted_milli_wh, kafka_partition = EXCLUDED.kafka_partition,
                 kafka_offset = EXCLUDED.kafka_offset, after_decommission = EXCLUDED.after_decommission"
        } else {
            "ON CONFLICT (device_id, ts) DO NOTHING"
        };
        let sql = format!(
            "INSERT INTO readings (device_id, ts, meter_ts, received_at, voltage_v, current_a, power_w,
                                   energy_kwh, counter_milli_wh, power_factor, frequency_hz, rssi, seq,
                                   boot_id, fw, clock_unsynced, late, too_late, counter_class,
                                   counted_milli_wh, kafka_partition, kafka_offset, after_decommission)
             SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::timestamptz[], $4::timestamptz[],
                                  $5::float8[], $6::float8[], $7::float8[], $8::float8[], $9::bigint[],
                                  $10::float8[], $11::float8[], $12::int[], $13::bigint[], $14::text[],
                                  $15::text[], $16::bool[], $17::bool[], $18::bool[], $19::text[],
                                  $20::bigint[], $21::int[], $22::bigint[], $23::bool[])
             {on_conflict}"
        );
        let statement = tx.prepare_cached(&sql).await?;
        tx.execute(
            &statement,
            &[
                &self.device_id,
                &self.ts,
                &self.meter_ts,
                &self.received_at,
                &self.voltage,
                &self.current,
                &self.power_w,
                &self.energy_kwh,
                &self.counter,
                &self.power_factor,
                &self.frequency_hz,
                &self.rssi,
                &self.seq,
                &self.boot_id,
                &self.fw,
                &self.clock_unsynced,
                &self.late,
                &self.too_late,
                &self.class,
                &self.counted,
                &self.partition,
                &self.offset,
                &self.after_decommission,
            ],
        )
        .await
    }
}

/// What [`rebuild_energy`] found.
#[derive(Debug, Default)]
pub struct Rebuilt {
    /// Local dates (in the zone rebuilt for) of counted readings and of days with energy.
    pub dates: std::collections::BTreeSet<Date>,
    pub newest_reading_at: Option<Timestamp>,
    pub readings: usize,
}

/// Recomputes a device's hourly and daily energy from its counted readings in `tz`
/// and replaces what is stored. The incremental rollups equal a full accounting of
/// the same readings (core's property tests), so this is also what in-order arrival
/// in that zone would have stored.
pub async fn rebuild_energy(
    tx: &Transaction<'_>,
    device_id: &str,
    tz: &jiff::tz::TimeZone,
    rules: &smartmeter_core::energy::Rules,
) -> Result<Rebuilt, tokio_postgres::Error> {
    let readings: Vec<CounterReading> = tx
        .query(
            "SELECT ts, counter_milli_wh FROM readings
             WHERE device_id = $1 AND NOT too_late AND NOT after_decommission ORDER BY ts",
            &[&device_id],
        )
        .await?
        .iter()
        .map(|row| CounterReading { at: row.get(0), counter_milli_wh: row.get(1) })
        .collect();
    let rollup = smartmeter_core::energy::account(&readings, tz, rules);
    let daily = rollup.daily();
    tx.execute("DELETE FROM energy_hourly WHERE device_id = $1", &[&device_id]).await?;
    tx.execute("DELETE FROM energy_daily WHERE device_id = $1", &[&device_id]).await?;
    let plan = DevicePlan {
        hourly: rollup.hourly,
        daily: daily.into_iter().filter(|(_, energy)| *energy != 0).collect(),
        ..DevicePlan::default()
    };
    let mut energy = EnergyRows::default();
    energy.add(device_id, &plan);
    energy.flush(tx).await?;
    let mut dates: std::collections::BTreeSet<Date> =
        readings.iter().map(|r| r.at.to_zoned(tz.clone()).date()).collect();
    dates.extend(plan.daily.keys().copied());
    Ok(Rebuilt { dates, newest_reading_at: readings.last().map(|r| r.at), readings: readings.len() })
}

/// Makes sure the device has a row (`discovered`, in the default zone, if new).
pub async fn ensure_device(
    tx: &Transaction<'_>,
    device_id: &str,
    default_time_zone: &str,
) -> Result<(), tokio_postgres::Error> {
    tx.execute(
        "INSERT INTO devices (device_id, time_zone) VALUES ($1, $2) ON CONFLICT (device_id) DO NOTHING",
        &[&device_id, &default_time_zone],
    )
    .await?;
    Ok(())
}

/// The billing periods of `device_ids` (locked for this transaction), as
/// [`crate::segment`] needs them.
pub async fn load_periods(
    tx: &Transaction<'_>,
    device_ids: &[&str],
) -> Result<HashMap<String, crate::segment::Periods>, tokio_postgres::Error> {
    let select = tx
        .prepare_cached(
            "SELECT device_id, month, status = 'closed', ends_at FROM billing_periods
             WHERE device_id = ANY($1) ORDER BY device_id, month FOR UPDATE",
        )
        .await?;
    let rows = tx.query(&select, &[&device_ids]).await?;
    let mut out: HashMap<String, crate::segment::Periods> = HashMap::new();
    for row in rows {
        out.entry(row.get(0)).or_default().months.insert(row.get(1), (row.get(2), row.get(3)));
    }
    Ok(out)
}
