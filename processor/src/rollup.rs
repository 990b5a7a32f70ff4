//! Plans what one batch changes for one device: which readings to insert or
//! re-judge, which counter events hold, and the energy to add per local hour and day.
//!
//! The arithmetic is `smartmeter_core::energy`; this module only decides the window
//! to recompute. A batch whose readings are all newer than the device's tail (the
//! common case) recomputes just the tail; a late reading recomputes from the baseline
//! before it to the newest reading, so the rollups equal those of in-order arrival.

use std::collections::BTreeMap;

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use smartmeter_core::energy::{self, CounterReading, HourBucket, Rules, Step, StepKind};
use smartmeter_core::Reading;

/// A reading as it arrived from Kafka.
#[derive(Debug, Clone)]
pub struct Arrived {
    pub reading: Reading,
    pub counter: CounterReading,
    pub partition: i32,
    pub offset: i64,
}

/// The stored sequence from the window's baseline to the device's newest reading.
#[derive(Debug, Clone, Default)]
pub struct Window {
    /// Whether `readings[0]` is the device's very first reading (nothing before it).
    pub starts_at_first_reading: bool,
    pub readings: Vec<CounterReading>,
}

/// What the processor must write for one device.
#[derive(Debug, Default)]
pub struct DevicePlan {
    /// New readings to insert, with their judgement.
    pub inserts: Vec<(Arrived, Judgement)>,
    /// New readings that replace a stored one at the same timestamp (higher counter).
    pub replacements: Vec<(Arrived, Judgement)>,
    /// Stored readings whose judgement changed.
    pub rejudged: Vec<(Timestamp, Judgement)>,
    /// Readings with the same timestamp and a different, lower counter than the kept one.
    pub conflicts: Vec<Arrived>,
    /// Readings older than the allowed lateness: stored, flagged, never counted.
    pub too_late: Vec<Arrived>,
    /// Readings stamped after the device was decommissioned: stored, flagged, never counted.
    pub after_decommission: Vec<Arrived>,
    pub duplicates: u64,
    /// Counter events after `events_after` are replaced by `events`.
    pub events_after: Option<Timestamp>,
    pub events: Vec<Step>,
    pub hourly: BTreeMap<HourBucket, i64>,
    pub daily: BTreeMap<Date, i64>,
    /// The device's tail after this plan, for the next batch.
    pub tail: Window,
    pub newest_reading_at: Option<Timestamp>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Judgement {
    pub kind: StepKind,
    pub counted_milli_wh: i64,
    /// Arrived after a newer reading of the device.
    pub late: bool,
}

/// A device's batch, sorted by what becomes of each reading.
#[derive(Debug, Default)]
pub struct Split {
    /// To account, each with whether it arrived after a newer reading (late).
    pub accepted: Vec<(Arrived, bool)>,
    pub too_late: Vec<Arrived>,
    pub after_decommission: Vec<Arrived>,
    /// The newest accepted event time, this batch included.
    pub newest: Option<Timestamp>,
}

/// Splits a device's batch into readings to account, readings past the lateness and
/// readings stamped after `counted_until` (the device's decommissioning). Lateness is
/// event time per device: measured from the newest reading seen so far.
pub fn split(
    arrived: Vec<Arrived>,
    mut newest: Option<Timestamp>,
    allowed_lateness: SignedDuration,
    counted_until: Option<Timestamp>,
) -> Split {
    let mut accepted = Vec::with_capacity(arrived.len());
    let mut too_late = Vec::new();
    let mut after_decommission = Vec::new();
    for item in arrived {
        let at = item.counter.at;
        if counted_until.is_some_and(|until| at > until) {
            after_decommission.push(item);
            continue;
        }
        match newest {
            Some(n) if at < n - allowed_lateness => too_late.push(item),
            Some(n) => {
                accepted.push((item, at < n));
                newest = Some(n.max(at));
            }
            None => {
                accepted.push((item, false));
                newest = Some(at);
            }
        }
    }
    Split { accepted, too_late, after_decommission, newest }
}

/// Plans the writes for one device. `window` is the stored sequence starting at the
/// baseline before the earliest accepted reading (see [`Window`]).
pub fn plan(window: Window, split: Split, tz: &TimeZone, rules: &Rules) -> DevicePlan {
    let Split { accepted, too_late, after_decommission, newest } = split;
    let mut plan =
        DevicePlan { too_late, after_decommission, newest_reading_at: newest, ..DevicePlan::default() };
    let incoming: Vec<CounterReading> = accepted.iter().map(|(a, _)| a.counter).collect();
    let (merged, _) = energy::merge(&window.readings, &incoming);

    let old = energy::account(&window.readings, tz, rules);
    let new = energy::account(&merged, tz, rules);
    plan.hourly = new.minus(&old);
    for (bucket, energy) in &plan.hourly {
        *plan.daily.entry(bucket.local_date).or_insert(0) += energy;
    }
    plan.daily.retain(|_, energy| *energy != 0);

    let old_judgement = judgements(&window.readings, &old.steps, window.starts_at_first_reading);
    let starts_at_first = window.starts_at_first_reading || merged.first() != window.readings.first();
    let new_judgement = judgements(&merged, &new.steps, starts_at_first);

    // Each arrival is the winner at its timestamp (the highest counter), an exact
    // duplicate of what is stored or already taken, or a losing conflict. A stored
    // reading that loses is moved to the conflicts by the store when replaced.
    let stored: BTreeMap<Timestamp, i64> =
        window.readings.iter().map(|r| (r.at, r.counter_milli_wh)).collect();
    let kept: BTreeMap<Timestamp, i64> = merged.iter().map(|r| (r.at, r.counter_milli_wh)).collect();
    let mut taken = std::collections::BTreeSet::new();
    for (arrived, late) in accepted {
        let at = arrived.counter.at;
        let counter = arrived.counter.counter_milli_wh;
        if counter != kept[&at] {
            plan.conflicts.push(arrived);
            continue;
        }
        if stored.get(&at) == Some(&counter) || taken.contains(&at) {
            plan.duplicates += 1;
            continue;
        }
        let judgement = Judgement { late, ..new_judgement[&at] };
        if stored.contains_key(&at) {
            plan.replacements.push((arrived, judgement));
        } else {
            plan.inserts.push((arrived, judgement));
        }
        taken.insert(at);
    }

    for (at, judgement) in &new_judgement {
        if !taken.contains(at) {
            if let Some(old) = old_judgement.get(at) {
                if (old.kind, old.counted_milli_wh) != (judgement.kind, judgement.counted_milli_wh) {
                    plan.rejudged.push((*at, *judgement));
                }
            }
        }
    }

    plan.events_after = if starts_at_first { None } else { merged.first().map(|r| r.at) };
    plan.events = new.steps.iter().filter(|s| s.kind.is_event()).copied().collect();
    plan.tail = tail_of(&merged, &new.steps, starts_at_first);
    plan
}

/// Judgement of every reading of `sequence` except a leading baseline that is not the
/// device's first reading (its judgement belongs to the window before it).
fn judgements(
    sequence: &[CounterReading],
    steps: &[Step],
    starts_at_first: bool,
) -> BTreeMap<Timestamp, Judgement> {
    let mut out = BTreeMap::new();
    if let (Some(first), true) = (sequence.first(), starts_at_first) {
        out.insert(first.at, Judgement { kind: StepKind::First, counted_milli_wh: 0, late: false });
    }
    for step in steps {
        out.insert(
            step.reading.at,
            Judgement { kind: step.kind, counted_milli_wh: step.counted_milli_wh, late: false },
        );
    }
    out
}

/// The readings from the last baseline to the newest: all a later in-order batch needs.
fn tail_of(sequence: &[CounterReading], steps: &[Step], starts_at_first: bool) -> Window {
    if sequence.is_empty() {
        return Window::default();
    }
    let baseline =
        steps.iter().rev().find(|s| s.kind.moves_baseline()).map(|s| s.reading).unwrap_or(sequence[0]);
    let start = sequence.iter().position(|r| r.at == baseline.at).expect("baseline is in the sequence");
    Window { starts_at_first_reading: starts_at_first && start == 0, readings: sequence[start..].to_vec() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smartmeter_core::telemetry::{validate, ValidationConfig};

    fn arrived(at: &str, kwh: f64, offset: i64) -> Arrived {
        let payload = format!(
            r#"{{"device_id":"m1","timestamp":"{at}","voltage":230,"current":1,"power_w":230,"energy_kwh":{kwh},"power_factor":1}}"#
        );
        let reading = validate(
            "smartmeter/m1/telemetry",
            payload.as_bytes(),
            at.parse().unwrap(),
            &ValidationConfig::default(),
        )
        .unwrap();
        let counter =
            CounterReading { at: reading.timestamp, counter_milli_wh: energy::kwh_to_milli_wh(kwh) };
        Arrived { reading, counter, partition: 0, offset }
    }

    fn run(window: Window, batch: Vec<Arrived>) -> DevicePlan {
        run_until(window, batch, None)
    }

    fn run_until(window: Window, batch: Vec<Arrived>, counted_until: Option<Timestamp>) -> DevicePlan {
        let newest = window.readings.last().map(|r| r.at);
        let split = split(batch, newest, SignedDuration::from_hours(24 * 7), counted_until);
        plan(window, split, &TimeZone::get("Europe/London").unwrap(), &Rules::default())
    }

    #[test]
    fn readings_after_decommissioning_are_kept_aside() {
        let plan = run_until(
            Window { starts_at_first_reading: true, readings: vec![] },
            vec![arrived("2026-01-01T00:00:00Z", 1.0, 0), arrived("2026-01-01T02:00:00Z", 3.0, 1)],
            Some("2026-01-01T01:00:00Z".parse().unwrap()),
        );
        assert_eq!(plan.inserts.len(), 1);
        assert_eq!(plan.after_decommission.len(), 1);
        assert!(plan.hourly.is_empty());
        assert_eq!(plan.newest_reading_at, Some("2026-01-01T00:00:00Z".parse().unwrap()));
    }

    #[test]
    fn first_batch_counts_from_the_first_reading() {
        let plan = run(
            Window { starts_at_first_reading: true, readings: vec![] },
            vec![arrived("2026-01-01T00:00:00Z", 1.0, 0), arrived("2026-01-01T01:30:00Z", 2.5, 1)],
        );
        assert_eq!(plan.inserts.len(), 2);
        assert_eq!(plan.inserts[0].1.kind, StepKind::First);
        assert_eq!(plan.hourly.values().sum::<i64>(), 1_500_000);
        assert_eq!(plan.daily.values().sum::<i64>(), 1_500_000);
        assert_eq!(plan.tail.readings.len(), 1);
    }

    #[test]
    fn a_late_reading_resplits_its_interval_without_changing_the_total() {
        let first = run(
            Window { starts_at_first_reading: true, readings: vec![] },
            vec![arrived("2026-01-01T00:00:00Z", 1.0, 0), arrived("2026-01-01T02:00:00Z", 3.0, 1)],
        );
        assert_eq!(first.tail.readings.len(), 1);
        let stored = Window {
            starts_at_first_reading: true,
            readings: vec![
                CounterReading { at: "2026-01-01T00:00:00Z".parse().unwrap(), counter_milli_wh: 1_000_000 },
                CounterReading { at: "2026-01-01T02:00:00Z".parse().unwrap(), counter_milli_wh: 3_000_000 },
            ],
        };
        let plan = run(stored, vec![arrived("2026-01-01T01:00:00Z", 2.9, 2)]);
        assert_eq!(plan.hourly.values().sum::<i64>(), 0);
        let hours: Vec<i64> = plan.hourly.values().copied().collect();
        assert_eq!(hours, vec![900_000, -900_000]);
        assert!(plan.inserts[0].1.late);
    }

    #[test]
    fn duplicates_and_conflicts_are_told_apart() {
        let stored = Window {
            starts_at_first_reading: true,
            readings: vec![CounterReading {
                at: "2026-01-01T00:00:00Z".parse().unwrap(),
                counter_milli_wh: 1_000_000,
            }],
        };
        let plan = run(
            stored,
            vec![arrived("2026-01-01T00:00:00Z", 1.0, 5), arrived("2026-01-01T00:00:00Z", 0.5, 6)],
        );
        assert_eq!(plan.duplicates, 1);
        assert_eq!(plan.conflicts.len(), 1);
        assert!(plan.hourly.is_empty());
    }

    #[test]
    fn readings_past_the_lateness_are_kept_aside() {
        let stored = Window {
            starts_at_first_reading: false,
            readings: vec![CounterReading {
                at: "2026-02-01T00:00:00Z".parse().unwrap(),
                counter_milli_wh: 1_000_000,
            }],
        };
        let plan = run(stored, vec![arrived("2026-01-01T00:00:00Z", 0.5, 1)]);
        assert_eq!(plan.too_late.len(), 1);
        assert!(plan.inserts.is_empty());
    }
}
