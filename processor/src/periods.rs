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
    let months: BTreeSet<Date> = dates.iter().map(|d| d.first_of_month()).collect();
    for first_day in months {
        let month = LocalMonth::containing(first_day, tz);
        tx.execute(
            "INSERT INTO billing_periods (device_id, month, time_zone, starts_at, ends_at)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (device_id, month) DO NOTHING",
            &[&device_id, &month.first_day, &tz_name, &month.starts_at, &month.ends_at],
        )
        .await?;
    }
    Ok(())
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
    let mut closed = 0;
    if let Some(event_time) = event_time {
        let due = tx
            .query(
                "SELECT month FROM billing_periods
                 WHERE device_id = $1 AND status = 'open' AND ends_at + $2::text::interval <= $3
                 ORDER BY month FOR UPDATE",
                &[&device_id, &interval(grace), &event_time],
            )
            .await?;
        for row in due {
            if close(tx, topic, device_id, row.get(0)).await? {
                closed += 1;
            }
        }
    }
    let touched_months: Vec<Date> = touched.iter().map(|d| d.first_of_month()).collect();
    let mut adjusted = 0;
    if !touched_months.is_empty() {
        let rows = tx
            .query(
                "SELECT month, revision, published FROM billing_periods
                 WHERE device_id = $1 AND status = 'closed' AND month = ANY($2)
                 ORDER BY month FOR UPDATE",
                &[&device_id, &touched_months],
            )
            .await?;
        for row in rows {
            let month: Date = row.get(0);
            let revision: i32 = row.get(1);
            let published: serde_json::Value = row.get(2);
            let mut event = summarize(tx, device_id, month, 0).await?;
            let mut previous: PeriodEvent = match serde_json::from_value(published) {
                Ok(previous) => previous,
                Err(error) => {
                    tracing::error!(device_id, %month, %error, "Stored period event unreadable; re-publishing.");
                    event.revision = revision as u32 + 1;
                    publish(tx, topic, &event).await?;
                    adjusted += 1;
                    continue;
                }
            };
            previous.revision = 0;
            if previous != event {
                event.revision = revision as u32 + 1;
                publish(tx, topic, &event).await?;
                adjusted += 1;
            }
        }
    }
    Ok((closed, adjusted))
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
    let mut closed = 0;
    for row in due {
        let device_id: String = row.get(0);
        if close(tx, topic, &device_id, row.get(1)).await? {
            closed += 1;
        }
    }
    Ok(closed)
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
    let mut closed = 0;
    for row in open {
        if close(tx, topic, device_id, row.get(0)).await? {
            closed += 1;
        }
    }
    Ok(closed)
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

async fn close(
    tx: &Transaction<'_>,
    topic: &str,
    device_id: &str,
    month: Date,
) -> Result<bool, tokio_postgres::Error> {
    let event = summarize(tx, device_id, month, 0).await?;
    let data = serde_json::to_value(&event).expect("period event serializes");
    let changed = tx
        .execute(
            "UPDATE billing_periods SET status = 'closed', revision = 0, closed_at = now(), published = $3
             WHERE device_id = $1 AND month = $2 AND status = 'open'",
            &[&device_id, &month, &data],
        )
        .await?;
    if changed == 1 {
        enqueue(tx, topic, &event).await?;
    }
    Ok(changed == 1)
}

async fn publish(
    tx: &Transaction<'_>,
    topic: &str,
    event: &PeriodEvent,
) -> Result<(), tokio_postgres::Error> {
    let data = serde_json::to_value(event).expect("period event serializes");
    tx.execute(
        "UPDATE billing_periods SET revision = $3, published = $4 WHERE device_id = $1 AND month = $2",
        &[&event.device_id.as_str(), &event.period.first_day, &(event.revision as i32), &data],
    )
    .await?;
    enqueue(tx, topic, event).await
}

async fn enqueue(
    tx: &Transaction<'_>,
    topic: &str,
    event: &PeriodEvent,
) -> Result<(), tokio_postgres::Error> {
    // Event time: the end of the period, so the billing replay finds a month's
    // periods by time whatever wall-clock time they were closed at.
    let envelope = Envelope::new(
        event.event_id(),
        SOURCE,
        event.event_type(),
        event.ends_at,
        event.device_id.as_str(),
        event,
    );
    outbox::enqueue(tx, topic, event.device_id.as_str(), &envelope).await
}

/// Builds the period's figures from the stored tables (the same tables the API and
/// Grafana read, so every figure agrees to the watt-hour).
async fn summarize(
    tx: &Transaction<'_>,
    device_id: &str,
    month: Date,
    revision: u32,
) -> Result<PeriodEvent, tokio_postgres::Error> {
    let period = tx
        .query_one(
            "SELECT p.time_zone, p.starts_at, p.ends_at, d.tariff_id, d.sanctioned_load_kw, d.decommissioned_at
             FROM billing_periods p JOIN devices d ON d.device_id = p.device_id
             WHERE p.device_id = $1 AND p.month = $2",
            &[&device_id, &month],
        )
        .await?;
    let time_zone: String = period.get(0);
    let starts_at: Timestamp = period.get(1);
    let ends_at: Timestamp = period.get(2);
    let tariff_id: Option<String> = period.get(3);
    let sanctioned_load_kw: Option<Decimal> = period.get(4);
    let decommissioned_at: Option<Timestamp> = period.get(5);
    let last_day = month.last_of_month();

    let hours = tx
        .query(
            "SELECT local_date, local_hour, energy_milli_wh FROM energy_hourly
             WHERE device_id = $1 AND local_date BETWEEN $2 AND $3 ORDER BY bucket_start",
            &[&device_id, &month, &last_day],
        )
        .await?;
    let mut energy_milli_wh = 0i64;
    let hourly_energy: Vec<HourlyEnergy> = hours
        .iter()
        .map(|row| {
            let date: Date = row.get(0);
            let hour: i16 = row.get(1);
            let energy: i64 = row.get(2);
            energy_milli_wh += energy;
            HourlyEnergy { hour_start: date.at(hour as i8, 0, 0, 0), energy_kwh: milli_wh_to_kwh(energy) }
        })
        .collect();

    let read = |row: Option<tokio_postgres::Row>| {
        row.map(|row| MeterRead { at: row.get(0), counter_kwh: milli_wh_to_kwh(row.get(1)) })
    };
    let opening_read = read(
        tx.query_opt(
            "SELECT ts, counter_milli_wh FROM readings
             WHERE device_id = $1 AND ts <= $2 AND NOT too_late AND NOT after_decommission
             ORDER BY ts DESC LIMIT 1",
            &[&device_id, &starts_at],
        )
        .await?,
    );
    let closing_read = read(
        tx.query_opt(
            "SELECT ts, counter_milli_wh FROM readings
             WHERE device_id = $1 AND ts <= $2 AND NOT too_late AND NOT after_decommission
             ORDER BY ts DESC LIMIT 1",
            &[&device_id, &ends_at],
        )
        .await?,
    );
    let stats = tx
        .query_one(
            "SELECT count(*),
                    count(DISTINCT date_trunc('hour', ts AT TIME ZONE $4)),
                    coalesce(bool_or(clock_unsynced), false)
             FROM readings
             WHERE device_id = $1 AND ts >= $2 AND ts < $3 AND NOT too_late AND NOT after_decommission",
            &[&device_id, &starts_at, &ends_at, &time_zone],
        )
        .await?;
    let reading_count: i64 = stats.get(0);
    let hours_with_readings: i64 = stats.get(1);
    let clock_unsynced: bool = stats.get(2);
    let period_hours = (ends_at.duration_since(starts_at).as_secs() / 3600).max(1);
    let coverage =
        (Decimal::from(hours_with_readings) / Decimal::from(period_hours)).min(Decimal::ONE).round_dp(4);

    let kinds = tx
        .query(
            "SELECT DISTINCT kind FROM counter_events WHERE device_id = $1 AND ts > $2 AND ts <= $3",
            &[&device_id, &starts_at, &ends_at],
        )
        .await?;
    let mut quality_flags = BTreeSet::new();
    for row in kinds {
        let flag = match row.get::<_, &str>(0) {
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
    Ok(PeriodEvent {
        device_id: DeviceId::parse(device_id).expect("stored device ids are valid"),
        month,
        revision,
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
    })
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
