//! Where a device's batch must be cut so that the batch has the effect of reading its
//! records one at a time.
//!
//! Readings, rollups, counter events and device state do not depend on how records are
//! batched: a batch equals its records applied in order. Billing periods do: a period
//! closes with the figures it has when a reading past its end (plus grace) is applied,
//! and each later change to a closed period is one more PeriodAdjusted. If a late
//! reading for January were in the same batch as the reading that closes January,
//! January would close with it; in a batch after, it would close without it and be
//! adjusted. A restart after `kill -9` re-reads from the last commit and batches
//! differently, so such a batch would not give what an uninterrupted run gives.
//!
//! So a device's batch is cut into segments, each applied with its own period step:
//! - after a reading that makes a period due (its event time passes the end plus grace
//!   of an open month, including a month the reading itself opens);
//! - around a reading that may change a closed period: a late reading (older than the
//!   device's newest) while the device has a closed period, or an in-order reading
//!   whose step starts before the end of a closed period;
//! - after every counted reading of a decommissioned device (its months close at once).
//!
//! The simulation is conservative: it may cut where nothing would have happened (which
//! costs a little time), never the other way. Most batches stay one segment.

use std::collections::BTreeMap;

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};

use crate::periods::LocalMonth;
use crate::rollup::Arrived;

/// A device's periods as the simulation sees them: month → (closed, end).
#[derive(Debug, Clone, Default)]
pub struct Periods {
    pub months: BTreeMap<Date, (bool, Timestamp)>,
}

/// What the cut needs to know of the device.
pub struct Device<'a> {
    pub tz: &'a TimeZone,
    pub newest_reading_at: Option<Timestamp>,
    pub decommissioned_at: Option<Timestamp>,
    pub allowed_lateness: SignedDuration,
    pub grace: SignedDuration,
}

/// Cuts `arrived` (in the order read) into segments; see the module documentation.
pub fn cut(arrived: Vec<Arrived>, device: &Device<'_>, mut periods: Periods) -> Vec<Vec<Arrived>> {
    let mut segments = Vec::new();
    let mut current: Vec<Arrived> = Vec::new();
    let mut newest = device.newest_reading_at;
    for item in arrived {
        let at = item.counter.at;
        let after_decommission = device.decommissioned_at.is_some_and(|until| at > until);
        let too_late = newest.is_some_and(|n| at < n - device.allowed_lateness);
        if after_decommission || too_late {
            // Stored raw, counted nowhere: no period changes.
            current.push(item);
            continue;
        }
        let closed_end = periods.months.values().filter(|(closed, _)| *closed).map(|(_, end)| *end).max();
        let late = newest.is_some_and(|n| at < n);
        let touches_closed = if late {
            closed_end.is_some()
        } else {
            let from = newest.unwrap_or(at);
            closed_end.is_some_and(|end| from < end)
                || periods
                    .months
                    .get(&LocalMonth::of_instant(at, device.tz).first_day)
                    .is_some_and(|(c, _)| *c)
        };
        if touches_closed && !current.is_empty() {
            segments.push(std::mem::take(&mut current));
        }
        // The months the reading may open: those its step spans.
        let from = if late { at } else { newest.unwrap_or(at) };
        let mut month = LocalMonth::of_instant(from, device.tz);
        let last = LocalMonth::of_instant(at, device.tz).first_day;
        loop {
            let opens = device.decommissioned_at.is_none_or(|until| month.starts_at < until);
            if opens {
                periods.months.entry(month.first_day).or_insert((false, month.ends_at));
            }
            if month.first_day >= last {
                break;
            }
            month = LocalMonth::of_instant(month.ends_at, device.tz);
        }
        current.push(item);
        let now = newest.max(Some(at)).expect("at least this reading");
        newest = Some(now);
        let mut closes = false;
        for (closed, end) in periods.months.values_mut() {
            if !*closed && (device.decommissioned_at.is_some() || *end + device.grace <= now) {
                *closed = true;
                closes = true;
            }
        }
        if touches_closed || closes {
            segments.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        segments.push(current);
    }
    segments
}

#[cfg(test)]
mod tests {
    use super::*;
    use smartmeter_core::energy::CounterReading;
    use smartmeter_core::telemetry::{validate, ValidationConfig};

    fn arrived(at: &str, kwh: f64, offset: i64) -> Arrived {
        let payload = format!(
            r#"{{"device_id":"m1","timestamp":"{at}","voltage":230,"current":1,"power_w":230,"energy_kwh":{kwh},"power_factor":1}}"#
        );
        let reading = validate(
            "smartmeter/m1/telemetry",
            payload.as_bytes(),
            "2026-06-01T00:00:00Z".parse().unwrap(),
            &ValidationConfig { clock_floor: "2000-01-01T00:00:00Z".parse().unwrap(), ..Default::default() },
        )
        .unwrap();
        let counter = CounterReading {
            at: reading.timestamp,
            counter_milli_wh: smartmeter_core::energy::kwh_to_milli_wh(kwh),
        };
        Arrived { reading, counter, partition: 0, offset }
    }

    fn offsets(segments: &[Vec<Arrived>]) -> Vec<Vec<i64>> {
        segments.iter().map(|s| s.iter().map(|a| a.offset).collect()).collect()
    }

    fn device(tz: &TimeZone, newest: Option<&str>) -> Device<'static> {
        Device {
            tz: Box::leak(Box::new(tz.clone())),
            newest_reading_at: newest.map(|n| n.parse().unwrap()),
            decommissioned_at: None,
            allowed_lateness: SignedDuration::from_hours(24 * 7),
            grace: SignedDuration::from_hours(1),
        }
    }

    #[test]
    fn a_batch_inside_one_month_stays_whole() {
        let tz = TimeZone::UTC;
        let batch = (0..5).map(|i| arrived(&format!("2026-01-10T0{i}:00:00Z"), i as f64, i)).collect();
        let segments = cut(batch, &device(&tz, None), Periods::default());
        assert_eq!(offsets(&segments), [vec![0, 1, 2, 3, 4]]);
    }

    #[test]
    fn the_reading_that_closes_a_month_ends_a_segment_and_late_ones_for_it_stand_alone() {
        let tz = TimeZone::UTC;
        let batch = vec![
            arrived("2026-01-31T23:00:00Z", 1.0, 0),
            arrived("2026-02-01T00:30:00Z", 2.0, 1),
            arrived("2026-02-01T01:00:00Z", 3.0, 2), // January due (end + 1 h)
            arrived("2026-02-01T02:00:00Z", 4.0, 3),
            arrived("2026-01-31T23:30:00Z", 1.5, 4), // late, January closed
            arrived("2026-01-31T23:45:00Z", 1.7, 5), // late again
            arrived("2026-02-01T03:00:00Z", 5.0, 6),
        ];
        let segments = cut(batch, &device(&tz, None), Periods::default());
        assert_eq!(offsets(&segments), [vec![0, 1, 2], vec![3], vec![4], vec![5], vec![6]]);
    }

    #[test]
    fn a_late_reading_opening_a_month_that_is_already_due_ends_its_segment() {
        let tz = TimeZone::UTC;
        let batch = vec![arrived("2026-03-04T00:00:00Z", 9.0, 0), arrived("2026-03-05T00:10:00Z", 9.1, 1)];
        let mut periods = Periods::default();
        let march = LocalMonth::of_instant("2026-03-01T00:00:00Z".parse().unwrap(), &tz);
        periods.months.insert(march.first_day, (false, march.ends_at));
        // Newest reading 3 March; a reading from February (no period yet) arrives late.
        let mut batch_with_late = vec![arrived("2026-02-27T00:00:00Z", 8.0, 2)];
        batch_with_late.extend(batch);
        let segments = cut(batch_with_late, &device(&tz, Some("2026-03-03T00:00:00Z")), periods);
        assert_eq!(offsets(&segments), [vec![2], vec![0, 1]]);
    }

    #[test]
    fn readings_past_the_lateness_or_after_decommissioning_never_cut() {
        let tz = TimeZone::UTC;
        let mut device = device(&tz, Some("2026-03-20T00:00:00Z"));
        device.decommissioned_at = Some("2026-03-25T00:00:00Z".parse().unwrap());
        let mut periods = Periods::default();
        let march = LocalMonth::of_instant("2026-03-01T00:00:00Z".parse().unwrap(), &tz);
        periods.months.insert(march.first_day, (true, march.ends_at));
        let batch = vec![
            arrived("2026-03-01T00:00:00Z", 1.0, 0), // too late (19 days)
            arrived("2026-03-26T00:00:00Z", 2.0, 1), // after decommissioning
            arrived("2026-03-27T00:00:00Z", 3.0, 2),
        ];
        assert_eq!(offsets(&cut(batch, &device, periods)), [vec![0, 1, 2]]);
    }
}
