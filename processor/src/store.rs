//! PostgreSQL writes of the processor. Everything a batch changes, including the
//! consumed offsets, is written in the caller's one transaction.

use std::collections::HashMap;

use deadpool_postgres::Transaction;
use jiff::civil::Date;
use jiff::Timestamp;
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
    tx.execute(
        "INSERT INTO devices (device_id, time_zone)
         SELECT id, $2 FROM unnest($1::text[]) AS id ORDER BY id
         ON CONFLICT (device_id) DO NOTHING",
        &[&device_ids, &default_time_zone],
    )
    .await?;
    let rows = tx
        .query(
            "SELECT device_id, time_zone, newest_reading_at, decommissioned_at, last_seen_at,
                    online, status_changed_at, status_reason
             FROM devices WHERE device_id = ANY($1) ORDER BY device_id FOR UPDATE",
            &[&device_ids],
        )
        .await?;
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

/// The stored sequence from the baseline before `earliest` to the newest reading.
pub async fn load_window(
    tx: &Transaction<'_>,
    device_id: &str,
    earliest: Timestamp,
) -> Result<Window, tokio_postgres::Error> {
    let baseline = tx
        .query_opt(
            "SELECT ts FROM readings
             WHERE device_id = $1 AND ts < $2 AND NOT too_late AND NOT after_decommission
               AND counter_class <> 'jitter'
             ORDER BY ts DESC LIMIT 1",
            &[&device_id, &earliest],
        )
        .await?
        .map(|row| row.get::<_, Timestamp>(0));
    let rows = tx
        .query(
            "SELECT ts, counter_milli_wh FROM readings
             WHERE device_id = $1 AND NOT too_late AND NOT after_decommission
               AND ($2::timestamptz IS NULL OR ts >= $2)
             ORDER BY ts",
            &[&device_id, &baseline],
        )
        .await?;
    Ok(Window {
        starts_at_first_reading: baseline.is_none(),
        readings: rows
            .iter()
            .map(|row| CounterReading { at: row.get(0), counter_milli_wh: row.get(1) })
            .collect(),
    })
}

/// Writes one device's plan.
pub async fn apply(
    tx: &Transaction<'_>,
    device_id: &str,
    plan: &DevicePlan,
) -> Result<(), tokio_postgres::Error> {
    let mut fresh = ReadingRows::default();
    for (arrived, judgement) in &plan.inserts {
        fresh.push(arrived, Kept::Counted(judgement));
    }
    for arrived in &plan.too_late {
        fresh.push(arrived, Kept::TooLate);
    }
    for arrived in &plan.after_decommission {
        fresh.push(arrived, Kept::AfterDecommission);
    }
    fresh.insert(tx, false).await?;

    if !plan.replacements.is_empty() {
        let replaced: Vec<Timestamp> = plan.replacements.iter().map(|(a, _)| a.counter.at).collect();
        tx.execute(
            "INSERT INTO reading_conflicts (device_id, ts, counter_milli_wh, payload, kafka_partition, kafka_offset)
             SELECT device_id, ts, counter_milli_wh, to_jsonb(r), kafka_partition, kafka_offset
             FROM readings r WHERE device_id = $1 AND ts = ANY($2)
             ON CONFLICT DO NOTHING",
            &[&device_id, &replaced],
        )
        .await?;
        let mut replacing = ReadingRows::default();
        for (arrived, judgement) in &plan.replacements {
            replacing.push(arrived, Kept::Counted(judgement));
        }
        replacing.insert(tx, true).await?;
    }

    if !plan.conflicts.is_empty() {
        let ts: Vec<Timestamp> = plan.conflicts.iter().map(|a| a.counter.at).collect();
        let counters: Vec<i64> = plan.conflicts.iter().map(|a| a.counter.counter_milli_wh).collect();
        let payloads: Vec<serde_json::Value> = plan
            .conflicts
            .iter()
            .map(|a| serde_json::to_value(&a.reading).expect("reading serializes"))
            .collect();
        let partitions: Vec<i32> = plan.conflicts.iter().map(|a| a.partition).collect();
        let offsets: Vec<i64> = plan.conflicts.iter().map(|a| a.offset).collect();
        tx.execute(
            "INSERT INTO reading_conflicts (device_id, ts, counter_milli_wh, payload, kafka_partition, kafka_offset)
             SELECT $1, * FROM unnest($2::timestamptz[], $3::bigint[], $4::jsonb[], $5::int[], $6::bigint[])
             ON CONFLICT DO NOTHING",
            &[&device_id, &ts, &counters, &payloads, &partitions, &offsets],
        )
        .await?;
    }

    if !plan.rejudged.is_empty() {
        let ts: Vec<Timestamp> = plan.rejudged.iter().map(|(at, _)| *at).collect();
        let classes: Vec<&str> = plan.rejudged.iter().map(|(_, j)| j.kind.as_str()).collect();
        let counted: Vec<i64> = plan.rejudged.iter().map(|(_, j)| j.counted_milli_wh).collect();
        tx.execute(
            "UPDATE readings r SET counter_class = u.class, counted_milli_wh = u.counted
             FROM unnest($2::timestamptz[], $3::text[], $4::bigint[]) AS u(ts, class, counted)
             WHERE r.device_id = $1 AND r.ts = u.ts",
            &[&device_id, &ts, &classes, &counted],
        )
        .await?;
    }

    write_counter_events(tx, device_id, plan).await?;
    write_energy(tx, device_id, plan).await?;
    update_device(tx, device_id, plan).await?;
    Ok(())
}

async fn write_counter_events(
    tx: &Transaction<'_>,
    device_id: &str,
    plan: &DevicePlan,
) -> Result<(), tokio_postgres::Error> {
    if plan.inserts.is_empty() && plan.replacements.is_empty() {
        return Ok(());
    }
    tx.execute(
        "DELETE FROM counter_events WHERE device_id = $1 AND ($2::timestamptz IS NULL OR ts > $2)",
        &[&device_id, &plan.events_after],
    )
    .await?;
    if plan.events.is_empty() {
        return Ok(());
    }
    let ts: Vec<Timestamp> = plan.events.iter().map(|s| s.reading.at).collect();
    let kinds: Vec<&str> = plan.events.iter().map(|s| s.kind.as_str()).collect();
    let previous_ts: Vec<Timestamp> = plan.events.iter().map(|s| s.baseline.at).collect();
    let previous: Vec<i64> = plan.events.iter().map(|s| s.baseline.counter_milli_wh).collect();
    let current: Vec<i64> = plan.events.iter().map(|s| s.reading.counter_milli_wh).collect();
    let counted: Vec<i64> = plan.events.iter().map(|s| s.counted_milli_wh).collect();
    let quarantined: Vec<i64> = plan.events.iter().map(|s| s.quarantined_milli_wh).collect();
    tx.execute(
        "INSERT INTO counter_events (device_id, ts, kind, previous_ts, previous_milli_wh,
                                     current_milli_wh, counted_milli_wh, quarantined_milli_wh)
         SELECT $1, * FROM unnest($2::timestamptz[], $3::text[], $4::timestamptz[], $5::bigint[],
                                  $6::bigint[], $7::bigint[], $8::bigint[])",
        &[&device_id, &ts, &kinds, &previous_ts, &previous, &current, &counted, &quarantined],
    )
    .await?;
    Ok(())
}

async fn write_energy(
    tx: &Transaction<'_>,
    device_id: &str,
    plan: &DevicePlan,
) -> Result<(), tokio_postgres::Error> {
    if !plan.hourly.is_empty() {
        let starts: Vec<Timestamp> = plan.hourly.keys().map(|b| b.start).collect();
        let ends: Vec<Timestamp> = plan.hourly.keys().map(|b| b.end).collect();
        let dates: Vec<Date> = plan.hourly.keys().map(|b| b.local_date).collect();
        let hours: Vec<i16> = plan.hourly.keys().map(|b| i16::from(b.local_hour)).collect();
        let offsets: Vec<i32> = plan.hourly.keys().map(|b| b.utc_offset_seconds).collect();
        let energy: Vec<i64> = plan.hourly.values().copied().collect();
        tx.execute(
            "INSERT INTO energy_hourly AS h (device_id, bucket_start, bucket_end, local_date, local_hour,
                                             utc_offset_seconds, energy_milli_wh)
             SELECT $1, * FROM unnest($2::timestamptz[], $3::timestamptz[], $4::date[], $5::smallint[],
                                      $6::int[], $7::bigint[])
             ON CONFLICT (device_id, bucket_start)
             DO UPDATE SET energy_milli_wh = h.energy_milli_wh + EXCLUDED.energy_milli_wh",
            &[&device_id, &starts, &ends, &dates, &hours, &offsets, &energy],
        )
        .await?;
        // A bucket that a re-split brought back to zero leaves no row, so the tables do
        // not depend on the order the readings arrived in.
        tx.execute(
            "DELETE FROM energy_hourly WHERE device_id = $1 AND bucket_start = ANY($2) AND energy_milli_wh = 0",
            &[&device_id, &starts],
        )
        .await?;
    }
    if !plan.daily.is_empty() {
        let dates: Vec<Date> = plan.daily.keys().copied().collect();
        let energy: Vec<i64> = plan.daily.values().copied().collect();
        tx.execute(
            "INSERT INTO energy_daily AS d (device_id, local_date, energy_milli_wh)
             SELECT $1, * FROM unnest($2::date[], $3::bigint[])
             ON CONFLICT (device_id, local_date)
             DO UPDATE SET energy_milli_wh = d.energy_milli_wh + EXCLUDED.energy_milli_wh",
            &[&device_id, &dates, &energy],
        )
        .await?;
        tx.execute(
            "DELETE FROM energy_daily WHERE device_id = $1 AND local_date = ANY($2) AND energy_milli_wh = 0",
            &[&device_id, &dates],
        )
        .await?;
    }
    Ok(())
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

async fn update_device(
    tx: &Transaction<'_>,
    device_id: &str,
    plan: &DevicePlan,
) -> Result<(), tokio_postgres::Error> {
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
    let stored = (plan.inserts.len() + plan.too_late.len() + plan.after_decommission.len()) as i64;
    let duplicates = plan.duplicates as i64;
    let firmware = newest_with_fw.map(|(_, fw)| fw);
    tx.execute(
        "UPDATE devices SET
             newest_reading_at = greatest(newest_reading_at, $2),
             last_seen_at      = greatest(last_seen_at, $3),
             first_seen_at     = coalesce(first_seen_at, $4),
             firmware_version  = coalesce($5, firmware_version),
             readings_total    = readings_total + $6,
             duplicates_total  = duplicates_total + $7,
             telemetry_partition = coalesce($8, telemetry_partition),
             updated_at        = now()
         WHERE device_id = $1",
        &[
            &device_id,
            &plan.newest_reading_at,
            &last_seen,
            &first_seen,
            &firmware,
            &stored,
            &duplicates,
            &partition,
        ],
    )
    .await?;
    Ok(())
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
        tx.execute(
            &sql,
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
    write_energy(tx, device_id, &plan).await?;
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
    let rows = tx
        .query(
            "SELECT device_id, month, status = 'closed', ends_at FROM billing_periods
             WHERE device_id = ANY($1) ORDER BY device_id, month FOR UPDATE",
            &[&device_ids],
        )
        .await?;
    let mut out: HashMap<String, crate::segment::Periods> = HashMap::new();
    for row in rows {
        out.entry(row.get(0)).or_default().months.insert(row.get(1), (row.get(2), row.get(3)));
    }
    Ok(out)
}
