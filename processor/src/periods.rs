//! Billing periods: local calendar months per device, tracked in `billing_periods`.
//!
//! A period opens when a reading or energy lands in its month. It closes when event
//! time passes its end plus the grace interval (a reading that late arrives), or, for a
//! meter silent for the grace interval, when wall-clock time does ([`close_silent`]).
//! Closing publishes PeriodClosed through the outbox; a later change to a closed
//! period's figures (late data inside the lateness) publishes PeriodAdjusted with the
//! next revision. Nothing billed is rewritten silently.
//!
//! A device's decommissioning closes its open periods at once (the last one carries
//! the final read and the `decommissioned` flag) and opens none after it. A new time
//! zone re-derives them all ([`rederive`]): month bounds move to the new zone, months
//! that now hold data open, open months that no longer do are dropped (nothing was
//! published for them), and closed months whose figures changed publish PeriodAdjusted.

use std::collections::BTreeSet;

use deadpool_postgres::Transaction;
use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use rust_decimal::Decimal;
use smartmeter_core::billing::events::{MeterRead, PeriodEvent, QualityFlag};
use smartmeter_core::billing::{BillingPeriod, HourlyEnergy};
use smartmeter_core::energy::milli_wh_to_kwh;
use smartmeter_core::event::Envelope;
use smartmeter_core::service::outbox;
use smartmeter_core::DeviceId;

use crate::status::EVENT_SOURCE as SOURCE;

/// A local calendar month of a zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalMonth {
    pub first_day: Date,
    pub last_day: Date,
    pub starts_at: Timestamp,
    pub ends_at: Timestamp,
}

impl LocalMonth {
    pub fn containing(date: Date, tz: &TimeZone) -> Self {
        let first_day = date.first_of_month();
        let next_first = first_day.checked_add(jiff::Span::new().months(1)).expect("date in range");
        let start_of = |day: Date| {
            day.to_zoned(tz.clone())
                .and_then(|z| z.start_of_day())
                .expect("every date has a start of day")
                .timestamp()
        };
        Self {
            first_day,
            last_day: date.last_of_month(),
            starts_at: start_of(first_day),
            ends_at: start_of(next_first),
        }
    }

    pub fn of_instant(at: Timestamp, tz: &TimeZone) -> Self {
        Self::containing(at.to_zoned(tz.clone()).date(), tz)
    }
}

/// Makes sure the months of `dates` have a period row (open until closed).
pub async fn open(
    tx: &Transaction<'_>,
    device_id: &str,
    tz_name: &str,
    tz: &TimeZone,
    dates: &BTreeSet<Date>,
) -> Result<(), tokio_postgres::Error> {
    let mut rows = Opening::default();
    let months: BTreeSet<Date> = dates.iter().map(|d| d.first_of_month()).collect();
    for first_day in months {
        rows.push(device_id, tz_name, &LocalMonth::containing(first_day, tz));
    }
    rows.insert(tx).await
}

/// Period rows to open, as columns: one statement for any number of devices and months.
#[derive(Debug, Default)]
pub struct Opening {
    device_id: Vec<String>,
    month: Vec<Date>,
    time_zone: Vec<String>,
    starts_at: Vec<Timestamp>,
    ends_at: Vec<Timestamp>,
}

impl Opening {
    pub fn push(&mut self, device_id: &str, tz_name: &str, month: &LocalMonth) {
        self.device_id.push(device_id.to_owned());
        self.month.push(month.first_day);
        self.time_zone.push(tz_name.to_owned());
        self.starts_at.push(month.starts_at);
        self.ends_at.push(month.ends_at);
    }

    /// Inserts the rows; a month that already has one keeps it.
    pub async fn insert(&self, tx: &Transaction<'_>) -> Result<(), tokio_postgres::Error> {
        if self.month.is_empty() {
            return Ok(());
        }
        let statement = tx
            .prepare_cached(
                "INSERT INTO billing_periods (device_id, month, time_zone, starts_at, ends_at)
                 SELECT * FROM unnest($1::text[], $2::date[], $3::text[], $4::timestamptz[], $5::timestamptz[])
                 ON CONFLICT (device_id, month) DO NOTHING",
            )
            .await?;
        tx.execute(
            &statement,
            &[&self.device_id, &self.month, &self.time_zone, &self.starts_at, &self.ends_at],
        )
        .await?;
        Ok(())
    }
}

/// What one device's period step does, in this order: close the `due` months
/// (PeriodClosed), re-publish the closed months of `check` whose figures changed
/// (PeriodAdjusted), close the `last` months (a decommissioned device's open months).
/// A month of `due` or `last` that is not open, or of `check` that is not closed, is
/// left alone.
#[derive(Debug, Clone, Default)]
pub struct Step {
    pub device_id: String,
    pub due: Vec<Date>,
    pub check: Vec<Date>,
    pub last: Vec<Date>,
}

impl Step {
    pub fn is_empty(&self) -> bool {
        self.due.is_empty() && self.check.is_empty() && self.last.is_empty()
    }
}

/// Applies the period steps of any number of devices, set-based: every period's
/// figures come from two queries ([`summarize`]), closes and adjustments are one
/// statement each, and the events go to the outbox in one statement, in the order of
/// the steps (per device: closes, adjustments, final closes). Events go to `topic`.
/// Returns (closed, adjusted).
pub async fn apply(
    tx: &Transaction<'_>,
    topic: &str,
    steps: &[Step],
) -> Result<(u64, u64), tokio_postgres::Error> {
    let keys: Vec<(&str, Date)> = steps
        .iter()
        .flat_map(|step| {
            step.due
                .iter()
                .chain(&step.check)
                .chain(&step.last)
                .map(|month| (step.device_id.as_str(), *month))
        })
        .collect();
    if keys.is_empty() {
        return Ok((0, 0));
    }
    let summaries = summarize(tx, &keys).await?;
    // (closes the period, event) in publication order.
    let mut events: Vec<(bool, PeriodEvent)> = Vec::new();
    let mut closes = (Vec::new(), Vec::new(), Vec::new());
    let mut adjusts = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut summaries = summaries.into_iter();
    for step in steps {
        let mut next = |count: usize| summaries.by_ref().take(count).collect::<Vec<_>>();
        let due = next(step.due.len());
        let check = next(step.check.len());
        let last = next(step.last.len());
        let closing = |summaries: Vec<Option<Summary>>,
                       events: &mut Vec<(bool, PeriodEvent)>,
                       closes: &mut (Vec<String>, Vec<Date>, Vec<serde_json::Value>)| {
            for summary in summaries.into_iter().flatten().filter(|s| !s.closed) {
                closes.0.push(summary.event.device_id.to_string());
                closes.1.push(summary.event.month);
                closes.2.push(serde_json::to_value(&summary.event).expect("period event serializes"));
                events.push((true, summary.event));
            }
        };
        closing(due, &mut events, &mut closes);
        for summary in check.into_iter().flatten().filter(|s| s.closed) {
            let Summary { mut event, revision, published, .. } = summary;
            let changed = match published.map(serde_json::from_value::<PeriodEvent>) {
                Some(Ok(mut previous)) => {
                    previous.revision = 0;
                    previous != event
                }
                Some(Err(error)) => {
                    tracing::error!(device_id = %event.device_id, month = %event.month, %error, "Stored period event unreadable; re-publishing.");
                    true
                }
                None => {
                    tracing::error!(device_id = %event.device_id, month = %event.month, "Closed period without its event; re-publishing.");
                    true
                }
            };
            if changed {
                event.revision = revision as u32 + 1;
                adjusts.0.push(event.device_id.to_string());
                adjusts.1.push(event.month);
                adjusts.2.push(event.revision as i32);
                adjusts.3.push(serde_json::to_value(&event).expect("period event serializes"));
                events.push((false, event));
            }
        }
        closing(last, &mut events, &mut closes);
    }

    let mut closed_now = std::collections::HashSet::new();
    if !closes.0.is_empty() {
        let statement = tx
            .prepare_cached(
                "UPDATE billing_periods p SET status = 'closed', revision = 0, closed_at = now(), published = u.published
                 FROM unnest($1::text[], $2::date[], $3::jsonb[]) AS u(device_id, month, published)
                 WHERE p.device_id = u.device_id AND p.month = u.month AND p.status = 'open'
                 RETURNING p.device_id, p.month",
            )
            .await?;
        for row in tx.query(&statement, &[&closes.0, &closes.1, &closes.2]).await? {
            closed_now.insert((row.get::<_, String>(0), row.get::<_, Date>(1)));
        }
    }
    if !adjusts.0.is_empty() {
        let statement = tx
            .prepare_cached(
                "UPDATE billing_periods p SET revision = u.revision, published = u.published
                 FROM unnest($1::text[], $2::date[], $3::int[], $4::jsonb[]) AS u(device_id, month, revision, published)
                 WHERE p.device_id = u.device_id AND p.month = u.month",
            )
            .await?;
        tx.execute(&statement, &[&adjusts.0, &adjusts.1, &adjusts.2, &adjusts.3]).await?;
    }
    events.retain(|(closes, event)| {
        !closes || closed_now.contains(&(event.device_id.to_string(), event.month))
    });
    let closed = events.iter().filter(|(closes, _)| *closes).count() as u64;
    let adjusted = events.len() as u64 - closed;
    // Event time: the end of the period, so the billing replay finds a month's
    // periods by time whatever wall-clock time they were closed at.
    let envelopes: Vec<Envelope<&PeriodEvent>> = events
        .iter()
        .map(|(_, event)| {
            Envelope::new(
                event.event_id(),
                SOURCE,
                event.event_type(),
                event.ends_at,
                event.device_id.as_str(),
                event,
            )
        })
        .collect();
    let queued: Vec<(&str, &str, &Envelope<&PeriodEvent>)> =
        envelopes.iter().map(|envelope| (topic, envelope.data.device_id.as_str(), envelope)).collect();
    outbox::enqueue_many(tx, &queued).await?;
    Ok((closed, adjusted))
}

/// Closes the device's open periods that end (plus grace) at or before `event_time`,
/// and re-publishes closed periods among `touched` months whose figures changed.
/// Events go to `topic`. Returns (closed, adjusted).
pub async fn close_and_adjust(
    tx: &Transaction<'_>,
    topic: &str,
    device_id: &str,
    event_time: Option<Timestamp>,
    grace: SignedDuration,
    touched: &BTreeSet<Date>,
) -> Result<(u64, u64), tokio_postgres::Error> {
    let rows = tx
        .query(
            "SELECT month, status = 'closed',
                    status = 'open' AND $3::timestamptz IS NOT NULL AND ends_at + $2::text::interval <= $3
             FROM billing_periods WHERE device_id = $1 ORDER BY month FOR UPDATE",
            &[&device_id, &interval(grace), &event_time],
        )
        .await?;
    let touched_months: BTreeSet<Date> = touched.iter().map(|d| d.first_of_month()).collect();
    let mut step = Step { device_id: device_id.to_owned(), ..Step::default() };
    for row in rows {
        let month: Date = row.get(0);
        if row.get(2) {
            step.due.push(month);
        } else if row.get(1) && touched_months.contains(&month) {
            // A month closed just now is not checked: its event has the figures of now.
            step.check.push(month);
        }
    }
    apply(tx, topic, &[step]).await
}

/// Closes periods of meters silent for the grace interval whose end plus grace has
/// passed on the wall clock. Only meters whose telemetry partition is in `caught_up`
/// (read to its end: a backlog is not silence) are judged; meters that never sent
/// telemetry only when `all_caught_up`. Returns how many it closed.
pub async fn close_silent(
    tx: &Transaction<'_>,
    topic: &str,
    grace: SignedDuration,
    now: Timestamp,
    caught_up: &[i32],
    all_caught_up: bool,
    limit: i64,
) -> Result<u64, tokio_postgres::Error> {
    let due = tx
        .query(
            "SELECT p.device_id, p.month FROM billing_periods p
             JOIN devices d ON d.device_id = p.device_id
             WHERE p.status = 'open' AND p.ends_at + $1::text::interval <= $2
               AND (d.last_seen_at IS NULL OR d.last_seen_at + $1::text::interval <= $2)
               AND (d.telemetry_partition = ANY($4) OR (d.telemetry_partition IS NULL AND $5))
             ORDER BY p.ends_at LIMIT $3
             FOR UPDATE OF p SKIP LOCKED",
            &[&interval(grace), &now, &limit, &caught_up, &all_caught_up],
        )
        .await?;
    let steps: Vec<Step> = due
        .iter()
        .map(|row| Step { device_id: row.get(0), due: vec![row.get(1)], ..Step::default() })
        .collect();
    Ok(apply(tx, topic, &steps).await?.0)
}

/// Closes every open period of the device (it was decommissioned). Returns how many.
pub async fn close_open(
    tx: &Transaction<'_>,
    topic: &str,
    device_id: &str,
) -> Result<u64, tokio_postgres::Error> {
    let open = tx
        .query(
            "SELECT month FROM billing_periods WHERE device_id = $1 AND status = 'open' ORDER BY month FOR UPDATE",
            &[&device_id],
        )
        .await?;
    let step = Step {
        device_id: device_id.to_owned(),
        last: open.iter().map(|row| row.get(0)).collect(),
        ..Step::default()
    };
    Ok(apply(tx, topic, &[step]).await?.0)
}

/// Re-derives the device's periods after its energy was rebuilt (a new zone, or
/// readings no longer counted after a decommissioning): bounds in the zone, open
/// months = `months_with_data` (those starting before `decommissioned_at` only), open
/// rows without data dropped, due months closed, changed closed months adjusted.
/// Returns (closed, adjusted).
#[allow(clippy::too_many_arguments)]
pub async fn rederive(
    tx: &Transaction<'_>,
    topic: &str,
    device_id: &str,
    tz_name: &str,
    tz: &TimeZone,
    months_with_data: &BTreeSet<Date>,
    newest_reading_at: Option<Timestamp>,
    decommissioned_at: Option<Timestamp>,
    grace: SignedDuration,
) -> Result<(u64, u64), tokio_postgres::Error> {
    let rows = tx
        .query(
            "SELECT month, status FROM billing_periods WHERE device_id = $1 ORDER BY month FOR UPDATE",
            &[&device_id],
        )
        .await?;
    let mut all_months: BTreeSet<Date> = BTreeSet::new();
    for row in &rows {
        let month = LocalMonth::containing(row.get(0), tz);
        all_months.insert(month.first_day);
        tx.execute(
            "UPDATE billing_periods SET time_zone = $3, starts_at = $4, ends_at = $5
             WHERE device_id = $1 AND month = $2",
            &[&device_id, &month.first_day, &tz_name, &month.starts_at, &month.ends_at],
        )
        .await?;
    }
    let wanted: BTreeSet<Date> = months_with_data
        .iter()
        .map(|d| d.first_of_month())
        .filter(|first| {
            decommissioned_at.is_none_or(|until| LocalMonth::containing(*first, tz).starts_at < until)
        })
        .collect();
    open(tx, device_id, tz_name, tz, &wanted).await?;
    let wanted_list: Vec<Date> = wanted.iter().copied().collect();
    tx.execute(
        "DELETE FROM billing_periods WHERE device_id = $1 AND status = 'open' AND NOT (month = ANY($2))",
        &[&device_id, &wanted_list],
    )
    .await?;
    all_months.extend(wanted);
    let (mut closed, adjusted) =
        close_and_adjust(tx, topic, device_id, newest_reading_at, grace, &all_months).await?;
    if decommissioned_at.is_some() {
        closed += close_open(tx, topic, device_id).await?;
    }
    Ok((closed, adjusted))
}

/// A period's figures as they are now, and what was last published for it.
struct Summary {
    /// The figures, as revision 0.
    event: PeriodEvent,
    closed: bool,
    revision: i32,
    published: Option<serde_json::Value>,
}

/// Builds the figures of the periods `keys` (device, month) from the stored tables
/// (the same tables the API and Grafana read, so every figure agrees to the
/// watt-hour), in two queries whatever their number. `None` for a key without a
/// period row.
async fn summarize(
    tx: &Transaction<'_>,
    keys: &[(&str, Date)],
) -> Result<Vec<Option<Summary>>, tokio_postgres::Error> {
    let devices: Vec<&str> = keys.iter().map(|(device, _)| *device).collect();
    let months: Vec<Date> = keys.iter().map(|(_, month)| *month).collect();
    let last_days: Vec<Date> = months.iter().map(|month| month.last_of_month()).collect();
    // Per period: its row, the opening read (the newest counted reading at or before
    // its start), the closing read (at or before its end), readings and local hours
    // with readings inside it, and the kinds of counter events inside it.
    let periods = tx
        .prepare_cached(
            "SELECT u.i, p.time_zone, p.starts_at, p.ends_at, d.tariff_id, d.sanctioned_load_kw,
                    d.decommissioned_at, p.status = 'closed', p.revision, p.published,
                    o.ts, o.counter_milli_wh, c.ts, c.counter_milli_wh, s.n, s.hours, s.unsynced, k.kinds
             FROM unnest($1::text[], $2::date[]) WITH ORDINALITY AS u(device_id, month, i)
             JOIN billing_periods p ON p.device_id = u.device_id AND p.month = u.month
             JOIN devices d ON d.device_id = u.device_id
             LEFT JOIN LATERAL (
                 SELECT r.ts, r.counter_milli_wh FROM readings r
                 WHERE r.device_id = u.device_id AND r.ts <= p.starts_at AND NOT r.too_late
                   AND NOT r.after_decommission
                 ORDER BY r.ts DESC LIMIT 1
             ) o ON true
             LEFT JOIN LATERAL (
                 SELECT r.ts, r.counter_milli_wh FROM readings r
                 WHERE r.device_id = u.device_id AND r.ts <= p.ends_at AND NOT r.too_late
                   AND NOT r.after_decommission
                 ORDER BY r.ts DESC LIMIT 1
             ) c ON true
             CROSS JOIN LATERAL (
                 SELECT count(*) AS n,
                        count(DISTINCT date_trunc('hour', r.ts AT TIME ZONE p.time_zone)) AS hours,
                        coalesce(bool_or(r.clock_unsynced), false) AS unsynced
                 FROM readings r
                 WHERE r.device_id = u.device_id AND r.ts >= p.starts_at AND r.ts < p.ends_at
                   AND NOT r.too_late AND NOT r.after_decommission
             ) s
             CROSS JOIN LATERAL (
                 SELECT coalesce(array_agg(DISTINCT e.kind), '{}') AS kinds FROM counter_events e
                 WHERE e.device_id = u.device_id AND e.ts > p.starts_at AND e.ts <= p.ends_at
             ) k",
        )
        .await?;
    let hours = tx
        .prepare_cached(
            "SELECT u.i, h.local_date, h.local_hour, h.energy_milli_wh
             FROM unnest($1::text[], $2::date[], $3::date[]) WITH ORDINALITY AS u(device_id, month, last_day, i)
             JOIN energy_hourly h ON h.device_id = u.device_id AND h.local_date BETWEEN u.month AND u.last_day
             ORDER BY u.i, h.bucket_start",
        )
        .await?;
    let mut hourly: Vec<(i64, Vec<HourlyEnergy>)> = vec![(0, Vec::new()); keys.len()];
    for row in tx.query(&hours, &[&devices, &months, &last_days]).await? {
        let i = row.get::<_, i64>(0) as usize - 1;
        let date: Date = row.get(1);
        let hour: i16 = row.get(2);
        let energy: i64 = row.get(3);
        hourly[i].0 += energy;
        hourly[i].1.push(HourlyEnergy {
            hour_start: date.at(hour as i8, 0, 0, 0),
            energy_kwh: milli_wh_to_kwh(energy),
        });
    }
    let mut out: Vec<Option<Summary>> = (0..keys.len()).map(|_| None).collect();
    for row in tx.query(&periods, &[&devices, &months]).await? {
        let i = row.get::<_, i64>(0) as usize - 1;
        let (device_id, month) = keys[i];
        let time_zone: String = row.get(1);
        let starts_at: Timestamp = row.get(2);
        let ends_at: Timestamp = row.get(3);
        let tariff_id: Option<String> = row.get(4);
        let sanctioned_load_kw: Option<Decimal> = row.get(5);
        let decommissioned_at: Option<Timestamp> = row.get(6);
        let read = |at: usize| {
            row.get::<_, Option<Timestamp>>(at)
                .map(|ts| MeterRead { at: ts, counter_kwh: milli_wh_to_kwh(row.get(at + 1)) })
        };
        let opening_read = read(10);
        let closing_read = read(12);
        let reading_count: i64 = row.get(14);
        let hours_with_readings: i64 = row.get(15);
        let clock_unsynced: bool = row.get(16);
        let kinds: Vec<String> = row.get(17);
        let (energy_milli_wh, hourly_energy) = std::mem::take(&mut hourly[i]);

        let last_day = month.last_of_month();
        let period_hours = (ends_at.duration_since(starts_at).as_secs() / 3600).max(1);
        let coverage =
            (Decimal::from(hours_with_readings) / Decimal::from(period_hours)).min(Decimal::ONE).round_dp(4);
        let mut quality_flags = BTreeSet::new();
        for kind in &kinds {
            let flag = match kind.as_str() {
                "reset" => Some(QualityFlag::CounterReset),
                "rollover" => Some(QualityFlag::Rollover),
                "replacement" => Some(QualityFlag::MeterReplaced),
                "quarantined" => Some(QualityFlag::Quarantined),
                _ => None,
            };
            quality_flags.extend(flag);
        }
        if coverage < Decimal::ONE {
            quality_flags.insert(QualityFlag::Gaps);
        }
        if clock_unsynced {
            quality_flags.insert(QualityFlag::ClockUnsynced);
        }
        if opening_read.is_none() {
            quality_flags.insert(QualityFlag::NoOpeningRead);
        }
        if decommissioned_at.is_some_and(|at| starts_at < at && at <= ends_at) {
            quality_flags.insert(QualityFlag::Decommissioned);
        }

        let mut billing_period = BillingPeriod::new(month, last_day, milli_wh_to_kwh(energy_milli_wh));
        billing_period.hourly_energy = hourly_energy;
        billing_period.sanctioned_load_kw = sanctioned_load_kw;
        let event = PeriodEvent {
            device_id: DeviceId::parse(device_id).expect("stored device ids are valid"),
            month,
            revision: 0,
            time_zone,
            starts_at,
            ends_at,
            period: billing_period,
            energy_milli_wh,
            opening_read,
            closing_read,
            reading_count,
            coverage,
            quality_flags: quality_flags.into_iter().collect(),
            tariff_id,
        };
        out[i] = Some(Summary { event, closed: row.get(7), revision: row.get(8), published: row.get(9) });
    }
    for (i, summary) in out.iter().enumerate() {
        if summary.is_none() {
            tracing::error!(device_id = keys[i].0, month = %keys[i].1, "No billing period row to summarize.");
        }
    }
    Ok(out)
}

/// A PostgreSQL interval literal for a duration (whole seconds).
fn interval(duration: SignedDuration) -> String {
    format!("{} seconds", duration.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_months_start_at_local_midnight() {
        let london = TimeZone::get("Europe/London").unwrap();
        let july = LocalMonth::containing(jiff::civil::date(2013, 7, 15), &london);
        assert_eq!(july.starts_at, "2013-06-30T23:00:00Z".parse().unwrap());
        assert_eq!(july.ends_at, "2013-07-31T23:00:00Z".parse().unwrap());
        assert_eq!(july.last_day, jiff::civil::date(2013, 7, 31));
        let kolkata =
            LocalMonth::containing(jiff::civil::date(2026, 2, 1), &TimeZone::get("Asia/Kolkata").unwrap());
        assert_eq!(kolkata.starts_at, "2026-01-31T18:30:00Z".parse().unwrap());
    }
}
