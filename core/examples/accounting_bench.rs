//! Throughput of the pure energy accounting (`account`, `hour_bucket`, `spread`).
//!
//! `cargo run --release --example accounting_bench -p smartmeter-core [-- COPIES DEVICES]`
//!
//! 1. The London household's raw half hours (shared/data, 24k readings) as a counter,
//!    repeated end to end to a few million readings, accounted in Europe/London.
//! 2. `hour_bucket` and `spread` alone on the same instants.
//! 3. Synthetic devices (default 10,000) with one day of 10-second readings each, in
//!    zones with whole, half and three-quarter hour offsets, across a DST change.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use smartmeter_core::energy::{account, hour_bucket, kwh_to_milli_wh, spread, CounterReading, Rules};

fn london_counter() -> Vec<CounterReading> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/data/lcl_raw_MAC000002_halfhourly_2012-10_to_2014-02.csv");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut slots = std::collections::BTreeMap::new();
    for line in text.lines().skip(1) {
        let fields: Vec<&str> = line.split(',').collect();
        let value = fields[2].trim();
        if value == "Null" {
            continue;
        }
        let civil: DateTime = fields[1].parse().unwrap();
        let at = TimeZone::UTC.to_ambiguous_timestamp(civil).unambiguous().unwrap();
        slots.insert(at, kwh_to_milli_wh(value.parse::<f64>().unwrap()));
    }
    let first = *slots.keys().next().unwrap();
    let mut readings = vec![CounterReading { at: first, counter_milli_wh: 0 }];
    let mut counter = 0;
    for (start, energy) in slots {
        counter += energy;
        readings
            .push(CounterReading { at: start + SignedDuration::from_mins(30), counter_milli_wh: counter });
    }
    readings
}

fn rate(count: usize, elapsed: Duration) -> String {
    let per_second = count as f64 / elapsed.as_secs_f64();
    if per_second >= 1e6 {
        format!("{:.2} M/s", per_second / 1e6)
    } else {
        format!("{:.0} k/s", per_second / 1e3)
    }
}

/// Runs `f` a few times and keeps the fastest.
fn best<T>(runs: usize, mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut best: Option<(Duration, T)> = None;
    for _ in 0..runs {
        let started = Instant::now();
        let out = f();
        let elapsed = started.elapsed();
        if best.as_ref().is_none_or(|(b, _)| elapsed < *b) {
            best = Some((elapsed, out));
        }
    }
    best.unwrap()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let copies: usize = args.next().map_or(100, |a| a.parse().unwrap());
    let devices: usize = args.next().map_or(10_000, |a| a.parse().unwrap());
    let rules = Rules::default();
    let london = TimeZone::get("Europe/London").unwrap();

    // 1. The London file, repeated.
    let one = london_counter();
    let span = one.last().unwrap().at.duration_since(one[0].at) + SignedDuration::from_mins(30);
    let total = one.last().unwrap().counter_milli_wh;
    let mut replay = Vec::with_capacity(one.len() * copies);
    for copy in 0..copies as i64 {
        for r in &one {
            replay.push(CounterReading {
                at: r.at + span * copy as i32,
                counter_milli_wh: (r.counter_milli_wh + total * copy) % rules.register_top_milli_wh,
            });
        }
    }
    replay.dedup_by_key(|r| r.at);
    println!(
        "London raw file: {} readings; replay: {} copies, {} readings, {} .. {}",
        one.len(),
        copies,
        replay.len(),
        replay[0].at,
        replay.last().unwrap().at
    );

    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let (elapsed, rollup) = best(5, || account(black_box(&one), &london, &rules));
    println!(
        "  account, the file once ({} hours):                     {:>9.1} ms  {}",
        rollup.hourly.len(),
        ms(elapsed),
        rate(one.len(), elapsed)
    );
    // The file as `copies` households over the same 2012-2014 period.
    let (elapsed, hours) = best(3, || {
        (0..copies).map(|_| account(black_box(&one), &london, &rules).hourly.len()).sum::<usize>()
    });
    println!(
        "  account, {copies} copies as {copies} devices ({hours} hours):     {:>9.1} ms  {}",
        ms(elapsed),
        rate(one.len() * copies, elapsed)
    );
    // One device, the copies end to end (2012 .. 2150: past 2037 the zone's offsets come
    // from its POSIX rule rather than the TZif table).
    let (elapsed, rollup) = best(3, || account(black_box(&replay), &london, &rules));
    println!(
        "  account, copies end to end, one call ({} hours):     {:>9.1} ms  {}",
        rollup.hourly.len(),
        ms(elapsed),
        rate(replay.len(), elapsed)
    );
    let (elapsed, hours) = best(3, || {
        (0..replay.len() - 1)
            .step_by(48)
            .map(|i| account(black_box(&replay[i..(i + 49).min(replay.len())]), &london, &rules).hourly.len())
            .sum::<usize>()
    });
    println!(
        "  account, copies end to end, one-day windows ({hours} hours): {:>6.1} ms  {}",
        ms(elapsed),
        rate(replay.len(), elapsed)
    );

    // 2. The pieces, on the file's instants (2012-2014) and on the replay's (2012-2150).
    for (label, set) in [("file", &one), ("replay", &replay)] {
        let (elapsed, n) = best(5, || {
            set.iter().map(|r| black_box(hour_bucket(r.at, &london)).local_hour as usize).sum::<usize>()
        });
        println!("  hour_bucket per reading ({label}):                       {:>9.1} ms  {}  ({:.0} ns/call, check {n})", ms(elapsed), rate(set.len(), elapsed), elapsed.as_nanos() as f64 / set.len() as f64);
        let (elapsed, n) = best(5, || {
            set.iter().map(|r| black_box(r.at.to_zoned(london.clone())).hour() as usize).sum::<usize>()
        });
        println!("    Timestamp::to_zoned alone ({label}):                    {:>9.1} ms  {}  ({:.0} ns/call, check {n})", ms(elapsed), rate(set.len(), elapsed), elapsed.as_nanos() as f64 / set.len() as f64);
        let (elapsed, n) = best(5, || set.iter().filter(|r| london.following(r.at).next().is_some()).count());
        println!("    TimeZone::following alone ({label}):                    {:>9.1} ms  {}  ({:.0} ns/call, check {n})", ms(elapsed), rate(set.len(), elapsed), elapsed.as_nanos() as f64 / set.len() as f64);
        let (elapsed, n) = best(5, || set.iter().filter(|r| london.preceding(r.at).next().is_some()).count());
        println!("    TimeZone::preceding alone ({label}):                    {:>9.1} ms  {}  ({:.0} ns/call, check {n})", ms(elapsed), rate(set.len(), elapsed), elapsed.as_nanos() as f64 / set.len() as f64);
        let (elapsed, n) = best(5, || {
            let mut total = 0i64;
            for pair in set.windows(2) {
                spread(pair[0].at, pair[1].at, 1_000, &london, |_, e| total += e);
            }
            total
        });
        println!(
            "  spread per step ({label}):                               {:>9.1} ms  {}  (check {n})",
            ms(elapsed),
            rate(set.len() - 1, elapsed)
        );
    }

    // 3. Synthetic devices: one day of 10-second readings each, 2026-03-28 12:00 UTC
    // for 24 hours (London and Paris spring forward in it), ~0..3 kW varying by device.
    let zones: Vec<TimeZone> = [
        "Europe/London",
        "Europe/Paris",
        "Asia/Kolkata",
        "Asia/Kathmandu",
        "America/St_Johns",
        "Australia/Lord_Howe",
        "UTC",
    ]
    .iter()
    .map(|z| TimeZone::get(z).unwrap())
    .collect();
    let start: Timestamp = "2026-03-28T12:00:00Z".parse().unwrap();
    let per_device = 24 * 360 + 1;
    let mut device_readings = vec![CounterReading { at: start, counter_milli_wh: 0 }; per_device];
    let started = Instant::now();
    let mut hours = 0usize;
    let mut energy = 0i64;
    let mut generate = Duration::ZERO;
    for device in 0..devices {
        let g = Instant::now();
        let watts = (device as i64 * 7_919) % 3_000;
        let mut counter = (device as i64 * 104_729) % 5_000_000_000;
        for (i, r) in device_readings.iter_mut().enumerate() {
            // W * 10 s = W / 360 Wh = W * 1000 / 360 mWh; vary by the minute.
            counter += (watts + (i as i64 % 6) * 50) * 10_000 / 3_600;
            *r = CounterReading {
                at: start + SignedDuration::from_secs(10 * i as i64),
                counter_milli_wh: counter,
            };
        }
        generate += g.elapsed();
        let rollup = account(&device_readings, &zones[device % zones.len()], &rules);
        hours += rollup.hourly.len();
        energy += rollup.counted_milli_wh();
    }
    let elapsed = started.elapsed() - generate;
    let readings = devices * per_device;
    println!(
        "Synthetic: {devices} devices x {per_device} readings (10 s, one day) = {readings} readings, {hours} hours, {:.1} kWh",
        energy as f64 / 1e6
    );
    println!(
        "  account:                                               {:>9.1} ms  {}",
        elapsed.as_secs_f64() * 1e3,
        rate(readings, elapsed)
    );
}
