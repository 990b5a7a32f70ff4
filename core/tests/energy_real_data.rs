//! The energy accounting on real meter data (/work/shared/data, see PROVENANCE.md
//! sections 1 and 2): a London household's half hours across three DST changes, and a
//! French household's minute power.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use smartmeter_core::energy::{account, CounterReading, Rollup, Rules, StepKind};

fn data(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A non-negative decimal as an exact integer number of 10^-`scale` units.
fn decimal_units(text: &str, scale: u32) -> i64 {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    assert!(fraction.len() <= scale as usize, "{text}: more than {scale} decimals");
    assert!(!whole.is_empty() && whole.bytes().chain(fraction.bytes()).all(|b| b.is_ascii_digit()), "{text}");
    let padded = format!("{fraction:0<width$}", width = scale as usize);
    whole.parse::<i64>().unwrap() * 10i64.pow(scale) + padded.parse::<i64>().unwrap_or(0)
}

// ---------------------------------------------------------------------------------
// Low Carbon London, household MAC000002, 2012-10-12 .. 2014-02-28.

const HALF_HOUR: SignedDuration = SignedDuration::from_mins(30);

struct Lcl {
    /// Half-hour start (UTC) -> energy of that half hour, mWh.
    slots: BTreeMap<Timestamp, i64>,
    rows: usize,
    duplicates: usize,
    nulls: Vec<Timestamp>,
    float_artefacts: usize,
}

fn parse_lcl() -> Lcl {
    let text = data("lcl_raw_MAC000002_halfhourly_2012-10_to_2014-02.csv");
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("LCLid,DateTime,KWH/hh (per half hour)"));
    let mut lcl =
        Lcl { slots: BTreeMap::new(), rows: 0, duplicates: 0, nulls: Vec::new(), float_artefacts: 0 };
    let mut raw: BTreeMap<Timestamp, &str> = BTreeMap::new();
    for line in lines {
        lcl.rows += 1;
        let fields: Vec<&str> = line.split(',').collect();
        assert_eq!(fields.len(), 3, "{line}");
        assert_eq!(fields[0], "MAC000002");
        // `2012-10-12 00:30:00.0000000`: no zone; UTC (PROVENANCE: 48 slots on both
        // 2013 DST days, so not the UK clock).
        let civil: DateTime = fields[1].parse().unwrap_or_else(|e| panic!("{line}: {e}"));
        let at = TimeZone::UTC.to_ambiguous_timestamp(civil).unambiguous().unwrap();
        // Values carry a leading and (except `Null`) a trailing space.
        let value = fields[2].trim();
        if let Some(previous) = raw.insert(at, value) {
            // Exact duplicate rows (monthly extract boundaries) count once; a second,
            // different value for a half hour would be a conflict the data does not have.
            assert_eq!(previous, value, "conflicting rows at {at}");
            lcl.duplicates += 1;
            continue;
        }
        if value == "Null" {
            // Missing, not zero. The one `Null` is also off the half-hour grid, so it
            // is no half hour at all: dropped.
            lcl.nulls.push(at);
            continue;
        }
        // kWh with up to 7 decimals. The 7-decimal values are single-precision float
        // artefacts of 3-decimal values (1.2180001 = f32(1.218)): the meter's
        // resolution is 1 Wh. Each is within 1e-7 kWh (0.1 mWh) of a whole Wh, so
        // rounding to the mWh loses nothing real.
        let tenth_milli_wh = decimal_units(value, 7);
        let milli_wh = (tenth_milli_wh + 5) / 10;
        let wh = (tenth_milli_wh + 5_000) / 10_000;
        assert!((tenth_milli_wh - wh * 10_000).abs() <= 1, "{value} is not a whole Wh");
        if value.split_once('.').is_some_and(|(_, f)| f.len() > 3) {
            lcl.float_artefacts += 1;
        }
        assert_eq!(milli_wh, wh * 1_000);
        lcl.slots.insert(at, milli_wh);
    }
    lcl
}

/// A meter's counter from the half hours: a reading at each half hour's end holding
/// the cumulative energy, and a first reading of 0 at the first half hour's start.
/// A missing half hour has no reading at its end: the next reading's increase covers
/// the gap (and carries only the next present half hour's energy: what was used in the
/// missing one is unknown to the data).
fn lcl_counter(slots: &BTreeMap<Timestamp, i64>) -> Vec<CounterReading> {
    let first = *slots.keys().next().unwrap();
    let mut readings = vec![CounterReading { at: first, counter_milli_wh: 0 }];
    let mut counter = 0;
    for (start, energy) in slots {
        counter += energy;
        readings.push(CounterReading { at: *start + HALF_HOUR, counter_milli_wh: counter });
    }
    readings
}

#[test]
fn london_household_days_and_hours_match_the_csv() {
    let london = TimeZone::get("Europe/London").unwrap();
    let lcl = parse_lcl();

    // The file's quirks, each handled above, by count (PROVENANCE section 1).
    assert_eq!(lcl.rows, 24_158);
    assert_eq!(lcl.duplicates, 17);
    assert_eq!(lcl.nulls.len(), 1);
    let null = lcl.nulls[0];
    assert_eq!(null, "2012-12-19T12:37:27Z".parse::<Timestamp>().unwrap());
    assert_ne!(null.as_second() % 1_800, 0, "the Null is off the half-hour grid");
    assert_eq!(lcl.float_artefacts, 117);
    let first: Timestamp = "2012-10-12T00:30:00Z".parse().unwrap();
    let last: Timestamp = "2014-02-28T00:00:00Z".parse().unwrap();
    assert_eq!(lcl.slots.keys().next(), Some(&first));
    assert_eq!(lcl.slots.keys().next_back(), Some(&last));
    assert!(lcl.slots.keys().all(|t| t.as_second() % 1_800 == 0 && t.subsec_nanosecond() == 0));
    let grid = (last.as_second() - first.as_second()) / 1_800 + 1;
    let missing: Vec<Timestamp> = (0..grid)
        .map(|i| first + SignedDuration::from_secs(i * 1_800))
        .filter(|t| !lcl.slots.contains_key(t))
        .collect();
    assert_eq!(missing.len(), 52);
    assert_eq!(lcl.slots.len() as i64 + 52, grid);
    assert_eq!(lcl.slots.len(), 24_158 - 17 - 1);

    let readings = lcl_counter(&lcl.slots);
    let rollup: Rollup = account(&readings, &london, &Rules::default());
    assert!(rollup.steps.iter().all(|s| s.kind == StepKind::Normal), "a household never needs 23 kW");
    let csv_total: i64 = lcl.slots.values().sum();
    // Conservation over the whole file.
    assert_eq!(rollup.counted_milli_wh(), csv_total);
    assert_eq!(rollup.hourly.values().sum::<i64>(), csv_total);
    assert_eq!(rollup.daily().values().sum::<i64>(), csv_total);

    // What the CSV says per London local day and local hour: each half hour belongs to
    // the local date and hour of its start (London's offsets are whole hours, so a half
    // hour never straddles a local hour or midnight).
    let mut csv_daily: BTreeMap<Date, i64> = BTreeMap::new();
    let mut csv_hourly: BTreeMap<(Date, i8, i32), i64> = BTreeMap::new();
    let mut slots_per_day: BTreeMap<Date, usize> = BTreeMap::new();
    let local = |t: Timestamp| {
        let zoned = t.to_zoned(london.clone());
        (zoned.date(), zoned.hour(), zoned.offset().seconds())
    };
    for (start, energy) in &lcl.slots {
        let (date, hour, offset) = local(*start);
        *csv_daily.entry(date).or_insert(0) += energy;
        *csv_hourly.entry((date, hour, offset)).or_insert(0) += energy;
        *slots_per_day.entry(date).or_insert(0) += 1;
    }

    // Gaps. A missing half hour makes the next step longer than 30 minutes and its
    // increase is spread over the whole step, so part of the next half hour's energy
    // lands in the missing half hour's local hour (and local day). A day's total moves
    // only if such a step crosses a local midnight; otherwise the energy stays inside
    // the day. The hours a gap step touches exchange energy among themselves.
    let gap_steps: Vec<(Timestamp, Timestamp)> = rollup
        .steps
        .iter()
        .map(|s| (s.baseline.at, s.reading.at))
        .filter(|(from, to)| to.duration_since(*from) > HALF_HOUR)
        .collect();
    let missing_set: BTreeSet<Timestamp> = missing.iter().copied().collect();
    // Every gap step covers missing half hours then one present one.
    let mut covered = 0;
    for (from, to) in &gap_steps {
        let mut t = *from;
        while t + HALF_HOUR < *to {
            assert!(missing_set.contains(&t), "{t}");
            covered += 1;
            t += HALF_HOUR;
        }
        assert!(lcl.slots.contains_key(&t));
    }
    assert_eq!(covered, 52);
    let mut moved_days: BTreeSet<Date> = BTreeSet::new();
    let mut touched_hours: BTreeSet<(Date, i8, i32)> = BTreeSet::new();
    let mut hours_of_gaps: Vec<BTreeSet<(Date, i8, i32)>> = Vec::new();
    for (from, to) in &gap_steps {
        let days: BTreeSet<Date> = [local(*from).0, local(*to - SignedDuration::from_nanos(1)).0].into();
        if days.len() > 1 {
            moved_days.extend(days);
        }
        let mut hours = BTreeSet::new();
        let mut t = *from;
        while t < *to {
            hours.insert(local(t));
            t += HALF_HOUR;
        }
        touched_hours.extend(hours.iter().copied());
        hours_of_gaps.push(hours);
    }
    // Of the five gaps only the day-long one (2012-11-08 00:30 .. 2012-11-09 00:30 UTC,
    // GMT) crosses midnight; the others lie inside their day.
    let expected_moved: BTreeSet<Date> =
        ["2012-11-08".parse().unwrap(), "2012-11-09".parse().unwrap()].into();
    assert_eq!(gap_steps.len(), 5);
    assert_eq!(moved_days, expected_moved);

    let daily = rollup.daily();
    let days: BTreeSet<Date> = csv_daily.keys().chain(daily.keys()).copied().collect();
    assert_eq!(days.len(), 505); // 2012-10-12 ..= 2014-02-28
    let mut exact_days = 0;
    for date in &days {
        if moved_days.contains(date) {
            continue;
        }
        assert_eq!(
            daily.get(date).copied().unwrap_or(0),
            csv_daily.get(date).copied().unwrap_or(0),
            "{date}"
        );
        exact_days += 1;
    }
    assert_eq!(exact_days, 503);
    // The day-long gap: the step [11-08 00:30, 11-09 01:00) carries the 11-09 00:30 half
    // hour's energy E; 23.5 of its 24.5 hours are on the 8th, so floor(E * 47 / 49) moves
    // back to the 8th (cumulative floor at the midnight bucket edge).
    let (nov8, nov9): (Date, Date) = ("2012-11-08".parse().unwrap(), "2012-11-09".parse().unwrap());
    let carried = lcl.slots[&"2012-11-09T00:30:00Z".parse::<Timestamp>().unwrap()];
    let moved = carried * 47 / 49;
    assert_eq!(daily[&nov8], csv_daily[&nov8] + moved);
    assert_eq!(daily[&nov9], csv_daily[&nov9] - moved);
    assert_eq!(daily[&nov8] + daily[&nov9], csv_daily[&nov8] + csv_daily[&nov9]);
    // And every day whose half hours are all present, as are its neighbours', is exact.
    let full_day = |date: Date| {
        let length = date
            .tomorrow()
            .unwrap()
            .to_zoned(london.clone())
            .unwrap()
            .timestamp()
            .duration_since(date.to_zoned(london.clone()).unwrap().timestamp());
        slots_per_day.get(&date).copied().unwrap_or(0) as i64 == length.as_secs() / 1_800
    };
    let complete: Vec<&Date> = days
        .iter()
        .filter(|d| full_day(**d) && full_day(d.yesterday().unwrap()) && full_day(d.tomorrow().unwrap()))
        .collect();
    assert_eq!(complete.len(), 488); // 505 days, less 7 incomplete and their 10 other neighbours
    assert!(complete.iter().all(|d| !moved_days.contains(d)));

    // Hours: exact wherever no gap step passes; the hours of each gap step conserve.
    let hourly: BTreeMap<(Date, i8, i32), i64> =
        rollup.hourly.iter().map(|(b, e)| ((b.local_date, b.local_hour, b.utc_offset_seconds), *e)).collect();
    assert_eq!(hourly.len(), rollup.hourly.len(), "one bucket per local date, hour and offset");
    let keys: BTreeSet<(Date, i8, i32)> = hourly.keys().chain(csv_hourly.keys()).copied().collect();
    for key in &keys {
        if !touched_hours.contains(key) {
            assert_eq!(
                hourly.get(key).copied().unwrap_or(0),
                csv_hourly.get(key).copied().unwrap_or(0),
                "{key:?}"
            );
        }
    }
    // The gap steps' hours do not overlap one another, and each step's hours conserve.
    assert_eq!(hours_of_gaps.iter().map(BTreeSet::len).sum::<usize>(), touched_hours.len());
    let mut differing = 0;
    for hours in &hours_of_gaps {
        let sum = |map: &BTreeMap<(Date, i8, i32), i64>| {
            hours.iter().map(|k| map.get(k).copied().unwrap_or(0)).sum::<i64>()
        };
        assert_eq!(sum(&hourly), sum(&csv_hourly), "{hours:?}");
        differing += hours.iter().filter(|k| hourly.get(k) != csv_hourly.get(k)).count();
    }
    // Missing 2012-10-12 11:00 and 2014-01-15 21:00 UTC are the first half of a local
    // hour whose second half is present: the step stays in that hour, nothing differs.
    // Missing 2012-11-02 19:30 and 2012-12-11 14:30 move part of the next half hour
    // into the hour before (2 hours each); the day-long gap touches 25 hours.
    assert_eq!(differing, 2 + 25 + 2);

    // The DST days: 25 local hours on the fall-back days (01:00 twice, BST then GMT),
    // 23 on the spring-forward day (no 01:00), each hour with energy; 50/46 half hours.
    for (date, hours, slots) in [("2012-10-28", 25, 50), ("2013-03-31", 23, 46), ("2013-10-27", 25, 50)] {
        let date: Date = date.parse().unwrap();
        let buckets: Vec<_> = rollup.hourly.keys().filter(|b| b.local_date == date).collect();
        assert_eq!(buckets.len(), hours, "{date}");
        assert_eq!(slots_per_day[&date], slots, "{date}");
        assert_eq!(daily[&date], csv_daily[&date], "{date}");
        let ones: Vec<i32> =
            buckets.iter().filter(|b| b.local_hour == 1).map(|b| b.utc_offset_seconds).collect();
        if hours == 25 {
            assert_eq!(ones.len(), 2, "{date}");
            assert_eq!(ones.iter().copied().collect::<BTreeSet<_>>(), BTreeSet::from([0, 3_600]));
        } else {
            assert!(ones.is_empty());
        }
    }
}

// ---------------------------------------------------------------------------------
// UCI "Individual household electric power consumption", Sceaux, 2006-12-16 .. 27.

struct Minute {
    local: DateTime,
    /// Global_active_power in W (the file's kW with 3 decimals), None for `?`.
    watts: Option<i64>,
}

fn parse_uci() -> Vec<Minute> {
    let text = data("uci_household_power_minute_2006-12-16_to_2006-12-27.txt");
    assert!(text.ends_with("\r\n"));
    let mut lines = text.split("\r\n");
    assert_eq!(
        lines.next(),
        Some("Date;Time;Global_active_power;Global_reactive_power;Voltage;Global_intensity;Sub_metering_1;Sub_metering_2;Sub_metering_3")
    );
    let mut minutes = Vec::new();
    for line in lines.filter(|l| !l.is_empty()) {
        assert!(!line.contains('\r') && !line.contains('\n'));
        let fields: Vec<&str> = line.split(';').collect();
        assert_eq!(fields.len(), 9, "{line}");
        let (day, month, year) = {
            let p: Vec<&str> = fields[0].split('/').collect();
            (p[0].parse::<i8>().unwrap(), p[1].parse::<i8>().unwrap(), p[2].parse::<i16>().unwrap())
        };
        let time: jiff::civil::Time = fields[1].parse().unwrap();
        let local = jiff::civil::date(year, month, day).to_datetime(time);
        let watts = match fields[2] {
            // Missing: every measured field is `?` (the last one empty).
            "?" => {
                assert!(fields[2..8].iter().all(|f| *f == "?") && fields[8].is_empty(), "{line}");
                None
            }
            kw => Some(decimal_units(kw, 3)),
        };
        minutes.push(Minute { local, watts });
    }
    minutes
}

/// The counter in mWh after `watt_minutes` W·min: exactly 1000/60 = 50/3 mWh per W·min,
/// rounded to the nearest mWh (50·S mod 3 is never 1.5, so no ties).
fn counter_of(watt_minutes: i64) -> i64 {
    (50 * watt_minutes + 1) / 3
}

#[test]
fn paris_household_hours_match_the_integrated_power() {
    let paris = TimeZone::get("Europe/Paris").unwrap();
    let minutes = parse_uci();
    assert_eq!(minutes.len(), 15_922);
    let missing: Vec<DateTime> = minutes.iter().filter(|m| m.watts.is_none()).map(|m| m.local).collect();
    assert_eq!(
        missing,
        vec![
            jiff::civil::date(2006, 12, 21).at(11, 23, 0, 0),
            jiff::civil::date(2006, 12, 21).at(11, 24, 0, 0)
        ]
    );
    // One row a minute, no gaps in the clock, no DST change in this December extract.
    for pair in minutes.windows(2) {
        assert_eq!(pair[1].local, pair[0].local.checked_add(SignedDuration::from_mins(1)).unwrap());
    }

    // Each row is the average power over the minute STARTING at its local clock time
    // (the same convention as LCL's half hours). The counter: a first reading of 0 at
    // the first minute's start, then a reading at the end of each present minute with
    // the rounded cumulative energy. A `?` minute has no reading at its end, so the next
    // reading's increase spreads over the gap.
    let to_utc = |local: DateTime| {
        paris.to_ambiguous_timestamp(local).unambiguous().expect("no DST change in December")
    };
    let mut readings = vec![CounterReading { at: to_utc(minutes[0].local), counter_milli_wh: 0 }];
    let mut watt_minutes = 0i64;
    // Expected per local (date, hour), as W·min, from the file's own clock fields.
    let mut expected: BTreeMap<(Date, i8), i64> = BTreeMap::new();
    for minute in &minutes {
        let Some(watts) = minute.watts else { continue };
        watt_minutes += watts;
        *expected.entry((minute.local.date(), minute.local.hour())).or_insert(0) += watts;
        let end = minute.local.checked_add(SignedDuration::from_mins(1)).unwrap();
        readings.push(CounterReading { at: to_utc(end), counter_milli_wh: counter_of(watt_minutes) });
    }
    assert_eq!(readings.len(), 15_922 - 2 + 1);

    let rollup = account(&readings, &paris, &Rules::default());
    assert!(rollup.steps.iter().all(|s| s.kind == StepKind::Normal));
    // The gap step: [11:23, 11:26) local, inside local hour 11 of the 21st.
    let gaps: Vec<_> = rollup
        .steps
        .iter()
        .filter(|s| s.reading.at.duration_since(s.baseline.at) > SignedDuration::from_mins(1))
        .collect();
    assert_eq!(gaps.len(), 1);
    assert_eq!(gaps[0].reading.at.duration_since(gaps[0].baseline.at), SignedDuration::from_mins(3));
    assert_eq!(
        gaps[0].baseline.at.to_zoned(paris.clone()).datetime(),
        jiff::civil::date(2006, 12, 21).at(11, 23, 0, 0)
    );

    // Conservation: everything counted is the rounded integral.
    assert_eq!(rollup.counted_milli_wh(), counter_of(watt_minutes));
    assert_eq!(rollup.hourly.values().sum::<i64>(), counter_of(watt_minutes));

    // Hour by hour. Every reading is on a whole minute and Paris is on a whole-hour
    // offset, so each step lies in one local hour and an hour's energy is
    // counter(end) - counter(start). Both counters are the exact cumulative 50·S/3
    // rounded to the nearest mWh, each off by at most 1/3 mWh (the remainder of a
    // division by 3), so an hour is within 2/3 mWh of its exact 50·ΔS/3 mWh:
    // |3·E - 50·ΔS| <= 2. (The data's own resolution is coarser: 1 W for a minute is
    // 16.7 mWh, so the figures are exact to the data, not to the house.)
    // The gap hour (11:00 of the 21st) is included: its two missing minutes carry no
    // data and the minute after the gap's increase stays inside the same hour, so the
    // hour is the integral of the minutes present.
    let hourly: BTreeMap<(Date, i8), i64> =
        rollup.hourly.iter().map(|(b, e)| ((b.local_date, b.local_hour), *e)).collect();
    assert_eq!(hourly.len(), rollup.hourly.len());
    let mut worst = 0;
    for (key, watt_minutes) in &expected {
        let energy = hourly.get(key).copied().unwrap_or(0);
        let error = (3 * energy - 50 * watt_minutes).abs();
        assert!(error <= 2, "{key:?}: {energy} mWh vs {watt_minutes} W·min");
        worst = worst.max(error);
    }
    assert!(hourly.keys().all(|k| expected.contains_key(k)));
    assert_eq!(expected.len(), 266); // 16th 17:00 .. 27th 18:00
    assert_eq!(worst, 2, "the bound is reached");
    let gap_hour = (jiff::civil::date(2006, 12, 21), 11);
    let present_in_gap_hour =
        minutes.iter().filter(|m| (m.local.date(), m.local.hour()) == gap_hour && m.watts.is_some()).count();
    assert_eq!(present_in_gap_hour, 58);

    // Days: the same bound per local day (a day is counter(end) - counter(start) too).
    let mut expected_daily: BTreeMap<Date, i64> = BTreeMap::new();
    for ((date, _), wm) in &expected {
        *expected_daily.entry(*date).or_insert(0) += wm;
    }
    let daily = rollup.daily();
    assert_eq!(daily.len(), 12);
    for (date, wm) in &expected_daily {
        assert!((3 * daily[date] - 50 * wm).abs() <= 2, "{date}");
    }
}
