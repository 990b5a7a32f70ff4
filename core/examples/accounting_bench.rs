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
        readings.push(CounterReading { at: start + SignedDuration::from_mins(30), counter_milli_wh: counter });
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
    println!("London raw file: {} readings; replay: {} copies, {} readings, {} .. {}", one.len(), copies, replay.len(), replay[0].at, replay.last().unwrap().at);

    let (elapsed, rollup) = best(3, || account(black_box(&one), &london, &rules));
    println!("  account, one file ({} readings, {} hours):      {:>10.1} ms  {}", one.len(), rollup.hourly.len(), elapsed.as_secs_f64() * 1e3, rate(one.len(), elapsed));
    let (elapsed, rollup) = best(3, || account(black_box(&replay), &london, &rules));
    println!("  account, replay in one call ({} hours):      {:>10.1} ms  {}", rollup.hourly.len(), elapsed.as_secs_f64() * 1e3, rate(replay.len(), elapsed));
    let (elapsed, hours) = best(3, || {
        replay.chunks(48).map(|chunk| account(black_box(chunk), &london, &rules).hourly.len()).sum::<usize>()
    });
    println!("  account, replay in one-day windows (48):       {:>10.1} ms  {}  ({hours} hours)", elapsed.as_secs_f64() * 1e3, rate(replay.len(), elapsed));

    // 2. The pieces.
    let (elapsed, n) = best(3, || replay.iter().map(|r| black_box(hour_bucket(r.at, &london)).local_hour as usize).sum::<usize>());
    println!("  hour_bucket, one call per reading:             {:>10.1} ms  {}  (check {n})", elapsed.as_secs_f64() * 1e3, rate(replay.len(), elapsed));
    let (elapsed, n) = best(3, || replay.iter().map(|r| black_box(r.at.to_zoned(london.clone())).hour() as usize).sum::<usize>());
    println!("    of which Timestamp::to_zoned alone:          {:>10.1} ms  {}  (check {n})", elapsed.as_secs_f64() * 1e3, rate(replay.len(), elapsed));
    let (elapsed, n) = best(3, || {
        replay.iter().map(|r| london.following(r.at).next().map_or(0, |t| t.timestamp().as_second() as usize & 1)).sum::<usize>()
    });
    println!("    of which TimeZone::following alone:          {:>10.1} ms  {}  (check {n})", elapsed.as_secs_f64() * 1e3, rate(replay.len(), elapsed));
    let (elapsed, n) = best(3, || {
        let mut pieces = 0usize;
        for pair in replay.windows(2) {
            spread(pair[0].at, pair[1].at, 1_000, &london, |_, e| pieces += e as usize);
        }
        pieces
    });
    println!("  spread, one call per step:                     {:>10.1} ms  {}  (check {n})", elapsed.as_secs_f64() * 1e3, rate(replay.len() - 1, elapsed));

    // 3. Synthetic devices: one day of 10-second readings each, 2026-03-28 12:00 UTC
    // for 24 hours (London and Paris spring forward in it), ~0..3 kW varying by device.
    let zones: Vec<TimeZone> =
        ["Europe/London", "Europe/Paris", "Asia/Kolkata", "Asia/Kathmandu", "America/St_Johns", "Australia/Lord_Howe", "UTC"]
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
            *r = CounterReading { at: start + SignedDuration::from_secs(10 * i as i64), counter_milli_wh: counter };
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
    println!("  account:                                       {:>10.1} ms  {}", elapsed.as_secs_f64() * 1e3, rate(readings, elapsed));
}
