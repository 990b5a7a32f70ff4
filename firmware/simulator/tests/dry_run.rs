//! Whole simulations in dry-run mode (payloads to a file, no broker): every payload is
//! one the bridge accepts, each meter's counter is the data's energy, the gauges are the
//! data's, faults leave their marks in the payloads, and the CLI wires the flags.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use jiff::{SignedDuration, Timestamp};
use meter_simulator::faults::{At, FaultConfig};
use meter_simulator::source::SourceKind;
use meter_simulator::{Config, Report};
use serde_json::Value;
use smartmeter_core::telemetry::{telemetry_topic, validate, Reading, ValidationConfig};
use smartmeter_core::DeviceId;
use tokio_util::sync::CancellationToken;

use common::{data_file, ts, PZEM_LOG, RAW_MAC000002, TEN_HOUSEHOLDS, UCI};

/// The bridge's view, with the clock floor lowered for data from 2006 and 2013.
fn bridge_config() -> ValidationConfig {
    ValidationConfig { clock_floor: "2000-01-01T00:00:00Z".parse().unwrap(), ..Default::default() }
}

async fn dry_run(inputs: &[&str], tune: impl FnOnce(&mut Config)) -> (Report, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("payloads.jsonl");
    let mut config = Config::dry_run(inputs.iter().map(|name| data_file(name)).collect(), out.clone());
    tune(&mut config);
    let report = meter_simulator::run(&config, CancellationToken::new()).await.unwrap();
    let lines = std::fs::read_to_string(&out).unwrap().lines().map(str::to_owned).collect();
    (report, lines)
}

/// Every payload through the bridge's validation, by device, in order.
fn validated(lines: &[String]) -> BTreeMap<String, Vec<Reading>> {
    let received: Timestamp = "2026-12-03T12:00:00Z".parse().unwrap();
    let mut by_device: BTreeMap<String, Vec<Reading>> = BTreeMap::new();
    for line in lines {
        let value: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"));
        let device = DeviceId::parse(value["device_id"].as_str().unwrap()).unwrap();
        let reading = validate(&telemetry_topic(&device), line.as_bytes(), received, &bridge_config())
            .unwrap_or_else(|e| panic!("{line}: {e}"));
        by_device.entry(device.to_string()).or_default().push(reading);
    }
    by_device
}

fn mwh(kwh: f64) -> i64 {
    (kwh * 1e6).round() as i64
}

#[tokio::test]
async fn the_ten_households_counters_are_the_files_energy() {
    let (report, lines) = dry_run(&[TEN_HOUSEHOLDS], |_| {}).await;
    assert!(report.complete(), "{report}");
    assert_eq!(report.meters, 10);
    assert_eq!(report.published() as usize, lines.len());
    assert_eq!(report.counters.read_failures, 0);
    assert_eq!(report.quirks.london.as_ref().unwrap().repeated_headers, 9);
    // A reading every half hour from the first slot's start to the last one's end.
    assert_eq!(lines.len(), 9 * (1_488 + 1) + (721 + 1));

    let households = validated(&lines);
    for (device, readings) in &households {
        let rows = common::london_half_hours(device);
        let mut counter_wh = 0;
        let mut slots = rows.iter().peekable();
        for reading in readings {
            assert!(!reading.clock_unsynced, "{device}");
            // The counter at a reading is the file's energy before it, to the Wh.
            while let Some((start, wh)) = slots.peek() {
                if *start + SignedDuration::from_mins(30) > reading.timestamp {
                    break;
                }
                counter_wh += wh;
                slots.next();
            }
            assert_eq!(mwh(reading.energy_kwh), counter_wh * 1_000, "{device} at {}", reading.timestamp);
            let pf = if reading.power_w > 0.0 { 1.0 } else { 0.0 };
            assert_eq!(
                (reading.voltage, reading.power_factor, reading.frequency_hz),
                (230.0, pf, Some(50.0))
            );
        }
        let seqs: Vec<u64> = readings.iter().map(|r| r.seq.unwrap()).collect();
        assert!(seqs.iter().enumerate().all(|(i, s)| *s == i as u64), "{device}: seq 0, 1, 2, ...");
        assert!(readings.windows(2).all(|w| w[0].timestamp < w[1].timestamp));
    }
    assert_eq!(mwh(households["MAC000024"].last().unwrap().energy_kwh), 1_321_377_000);
    // The gauges come from the PZEM's registers, read through the Modbus driver.
    assert!(lines[0].starts_with(
        r#"{"device_id":"MAC000002","timestamp":"2013-01-01T00:00:00Z","voltage":230.0,"current":1.904,"power_w":438.0,"energy_kwh":0.000,"power_factor":1.00,"frequency_hz":50.0,"seq":0,"boot_id":""#
    ), "{}", lines[0]);
    assert!(lines[0].ends_with(r#"","fw":"meter-sim/0.1.0"}"#), "{}", lines[0]);
}

#[tokio::test]
async fn limits_and_time_cuts_apply_and_the_counter_keeps_its_history() {
    let (report, lines) = dry_run(&[TEN_HOUSEHOLDS, RAW_MAC000002], |c| {
        c.limit_meters = Some(2);
        c.from = Some(ts("2013-01-10T00:00:00Z"));
        c.to = Some(ts("2013-01-10T01:00:00Z"));
        c.points_per_slot = Some(2);
    })
    .await;
    assert_eq!(report.meters, 2);
    assert_eq!(report.traces_in_data, 2);
    // 00:00, 00:15, 00:30, 00:45, 01:00 for MAC000002 and MAC000006.
    assert_eq!(lines.len(), 10);
    let first: Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(
        (first["device_id"].as_str(), first["timestamp"].as_str()),
        (Some("MAC000002"), Some("2013-01-10T00:00:00Z"))
    );
    // MAC000002's counter at this instant holds everything since 2012-10-12.
    assert!(first["energy_kwh"].as_f64().unwrap() > 1_000.0, "{first}");
}

#[tokio::test]
async fn uci_minutes_drive_the_module_with_their_own_gauges() {
    let (report, lines) = dry_run(&[UCI], |c| c.interval = Some(std::time::Duration::from_secs(3_600))).await;
    assert!(report.complete(), "{report}");
    assert_eq!(report.source, SourceKind::Uci);
    assert_eq!(report.quirks.unknown_rows, 2);
    let readings = &validated(&lines)["uci-sceaux"];
    let minutes = common::uci_minutes();
    let start = minutes[0].0;
    // 2006-12-16 17:24 Paris = 16:24 UTC: boot, then every full hour, then the end.
    assert_eq!(readings[0].timestamp, ts("2006-12-16T16:24:00Z"));
    assert_eq!(readings[1].timestamp, ts("2006-12-16T17:00:00Z"));
    assert_eq!(readings.last().unwrap().timestamp, ts("2006-12-27T17:46:00Z"));
    // The counter is the data's energy since the start, floored to the Wh.
    for reading in readings {
        let w_ms: i128 = common::uci_hourly_w_ms(&minutes, start, reading.timestamp).values().sum();
        assert_eq!(mwh(reading.energy_kwh), (w_ms / 3_600_000) as i64 * 1_000, "at {}", reading.timestamp);
    }
    // The gauges of the minute just measured: 17:59 Paris on the 16th.
    let row = "16/12/2006;17:59:00;";
    let text = std::fs::read_to_string(data_file(UCI)).unwrap();
    let fields: Vec<&str> = text.lines().find(|l| l.starts_with(row)).unwrap().split(';').collect();
    let r = &readings[1];
    assert_eq!(r.power_w, fields[2].parse::<f64>().unwrap() * 1_000.0);
    assert_eq!(r.voltage, (fields[4].parse::<f64>().unwrap() * 10.0).round() / 10.0);
    assert_eq!(r.current, fields[5].parse::<f64>().unwrap());
    assert!(r.power_factor > 0.9 && r.power_factor <= 1.0, "{}", r.power_factor);
}

#[tokio::test]
async fn the_pzem_log_is_replayed_register_by_register() {
    let (report, lines) = dry_run(&[PZEM_LOG], |_| {}).await;
    assert!(report.complete(), "{report}");
    assert_eq!(report.meters, 3);
    assert_eq!(report.quirks.rows, 141);
    let by_port = validated(&lines);
    let text = std::fs::read_to_string(data_file(PZEM_LOG)).unwrap();
    let hcm = jiff::tz::TimeZone::get("Asia/Ho_Chi_Minh").unwrap();
    for (port, readings) in &by_port {
        let mut rows: Vec<(Timestamp, Vec<String>)> = text
            .lines()
            .skip(1)
            .map(|l| l.trim_end_matches('\r').split(',').map(str::to_owned).collect::<Vec<_>>())
            .filter(|f| f[1].ends_with(port.as_str()))
            .map(|f| {
                let local: jiff::civil::DateTime = f[0].parse().unwrap();
                (local.to_zoned(hcm.clone()).unwrap().timestamp(), f)
            })
            .collect();
        rows.sort_by_key(|r| r.0);
        for reading in readings {
            // The row in force: the newest at or before the reading.
            let (_, row) = rows.iter().rev().find(|(t, _)| *t <= reading.timestamp).unwrap();
            assert_eq!(reading.voltage, row[2].parse::<f64>().unwrap(), "{port} {}", reading.timestamp);
            assert_eq!(reading.current, row[3].parse::<f64>().unwrap());
            assert_eq!(reading.power_w, row[4].parse::<f64>().unwrap());
            assert_eq!(reading.energy_kwh * 1_000.0, row[5].parse::<f64>().unwrap());
            assert_eq!(reading.frequency_hz, Some(row[6].parse::<f64>().unwrap()));
            assert_eq!(reading.power_factor, row[7].parse::<f64>().unwrap());
        }
    }
}

#[tokio::test]
async fn a_load_profile_is_repeated_every_day() {
    let dir = tempfile::tempdir().unwrap();
    // MAC000002's mean January day, half hour by half hour, from the file.
    let rows = common::london_half_hours("MAC000002");
    let mut by_slot: BTreeMap<i64, (i64, i64)> = BTreeMap::new();
    for (start, wh) in &rows {
        let slot = start.as_second().rem_euclid(86_400) / 1_800;
        let e = by_slot.entry(slot).or_default();
        e.0 += wh;
        e.1 += 1;
    }
    let mut profile = String::from("local_time,power_w\n");
    for (slot, (wh, n)) in &by_slot {
        // Mean W over the half hour, to 0.1 W.
        let dw = 2 * wh * 10 / n;
        profile.push_str(&format!("{:02}:{:02},{}.{}\n", slot / 2, slot % 2 * 30, dw / 10, dw % 10));
    }
    let path: PathBuf = dir.path().join("mac000002-january-mean.csv");
    std::fs::write(&path, &profile).unwrap();
    let config_path = path.clone();
    let (report, lines) = dry_run(&[TEN_HOUSEHOLDS], move |c| {
        c.inputs = vec![config_path];
        c.from = Some(ts("2026-03-01T00:00:00Z"));
        c.to = Some(ts("2026-03-03T00:00:00Z"));
        c.time_zone = Some("UTC".into());
    })
    .await;
    assert!(report.complete(), "{report}");
    assert_eq!(report.source, SourceKind::Profile);
    let readings = &validated(&lines)["mac000002-january-mean"];
    assert_eq!(readings.len(), 2 * 96 + 1, "every 15 min for two days");
    // Two days of the profile: twice the sum of its half hours.
    let day_dwh: i64 = profile
        .lines()
        .skip(1)
        .map(|l| {
            let (int, frac) = l.split_once(',').unwrap().1.split_once('.').unwrap();
            int.parse::<i64>().unwrap() * 10 + frac.parse::<i64>().unwrap()
        })
        .sum::<i64>()
        / 2; // dW × 0.5 h = dWh / 2
    assert_eq!(mwh(readings.last().unwrap().energy_kwh), 2 * day_dwh * 100 / 1_000 * 1_000);
}

#[tokio::test]
async fn faults_show_in_the_payloads() {
    let faults = FaultConfig {
        reboots: vec![At::Absolute(ts("2013-01-05T12:00:00Z"))],
        counter_resets: vec![At::Offset(SignedDuration::from_hours(24 * 10))],
        outages: vec![(At::Absolute(ts("2013-01-20T00:00:00Z")), SignedDuration::from_hours(12))],
        rollover_in_wh: Some(10_000),
        ..Default::default()
    };
    let (report, lines) = dry_run(&[TEN_HOUSEHOLDS], |c| {
        c.select = vec!["MAC000002".into()];
        c.faults = faults;
        c.outbox = 16;
    })
    .await;
    let payloads: Vec<Value> = lines.iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(
        (report.counters.reboots, report.counters.counter_resets, report.counters.rollovers),
        (1, 1, 1)
    );
    // The first counter is 10 kWh below the top; it wraps on the first day.
    assert_eq!(payloads[0]["energy_kwh"].as_f64(), Some(9_989.99));
    assert!(payloads.iter().take(48).any(|p| p["energy_kwh"].as_f64().unwrap() < 10.0));
    // Reboot: a new boot id, seq from 0, counter from 0, 3 s later.
    let reboot = payloads.iter().position(|p| p["timestamp"] == "2013-01-05T12:00:03Z").unwrap();
    assert_eq!(payloads[reboot]["seq"], 0);
    assert_eq!(payloads[reboot]["energy_kwh"].as_f64(), Some(0.0));
    assert_ne!(payloads[reboot]["boot_id"], payloads[reboot - 1]["boot_id"]);
    // Counter reset 10 days in, after the reading on 2013-01-11T00:00.
    let reset = payloads.iter().position(|p| p["timestamp"] == "2013-01-11T00:30:00Z").unwrap();
    assert!(
        payloads[reset]["energy_kwh"].as_f64().unwrap() < payloads[reset - 1]["energy_kwh"].as_f64().unwrap()
    );
    // The long outage overflowed the 16-place outbox: every later payload says how many
    // readings were dropped since boot, and the seq gap shows which.
    let dropped = report.counters.dropped;
    assert!(dropped >= 9, "{report}");
    let after: Vec<&Value> =
        payloads.iter().filter(|p| p["timestamp"].as_str().unwrap() >= "2013-01-20").collect();
    assert!(after.iter().all(|p| p["dropped"].as_u64() == Some(dropped)));
    assert!(payloads
        .iter()
        .filter(|p| p["timestamp"].as_str().unwrap() < "2013-01-20")
        .all(|p| p.get("dropped").is_none()));
    let seqs: Vec<u64> = after.iter().map(|p| p["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs[0] - payloads[payloads.len() - after.len() - 1]["seq"].as_u64().unwrap(), dropped + 1);
}

#[tokio::test]
async fn n_meters_repeat_the_data_and_a_seed_repeats_the_run() {
    let run = || {
        dry_run(&[TEN_HOUSEHOLDS], |c| {
            c.meters = Some(25);
            c.to = Some(ts("2013-01-01T02:00:00Z"));
            c.device_prefix = "fleet-".into();
        })
    };
    let (report, lines) = run().await;
    assert_eq!(report.meters, 25);
    let devices: BTreeMap<String, usize> = lines.iter().fold(BTreeMap::new(), |mut m, l| {
        let v: Value = serde_json::from_str(l).unwrap();
        *m.entry(v["device_id"].as_str().unwrap().to_owned()).or_default() += 1;
        m
    });
    assert_eq!(devices.len(), 25);
    assert!(devices.contains_key("fleet-MAC000002") && devices.contains_key("fleet-MAC000002-r2"));
    assert!(devices.values().all(|n| *n == 5), "00:00 to 02:00 every 30 min: {devices:?}");
    let (_, again) = run().await;
    assert_eq!(lines, again, "the same seed gives the same payloads, boot ids included");
}

fn cli(args: &[&str], env: &[(&str, &Path)]) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_meter-sim"));
    command.env_clear().args(args);
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().unwrap()
}

#[test]
fn the_cli_dry_run_prints_the_summary() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cli.jsonl");
    let input = data_file(RAW_MAC000002);
    let output = cli(
        &["--dry-run", "--no-progress", "--out", out.to_str().unwrap()],
        &[("SMARTMETER_SIM_INPUT", &input)],
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    for expected in [
        "exact duplicates:     17",
        "Null values:          1",
        "off-grid timestamps:  1",
        "missing slots:        52",
        "off-grid: MAC000002 2012-12-19T12:37:27Z",
    ] {
        assert!(stdout.contains(expected), "{expected:?} missing from:\n{stdout}");
    }
    let lines = std::fs::read_to_string(&out).unwrap().lines().count();
    // infra/demo.sh reads this line.
    assert!(stdout.contains(&format!("published {lines} readings")), "{stdout}");
}

#[test]
fn the_cli_refuses_bad_settings() {
    for (args, message) in [
        (&["--points-per-slot", "7"][..], "divisor of 1800"),
        (&["--outbox", "100"][..], "is not one of"),
        (&["--outage", "+2d"][..], "<time>/<duration>"),
        (&["--duplicate-rate", "2"][..], "probability"),
    ] {
        let mut all = vec!["--input", "x.csv", "--dry-run", "--out", "/dev/null"];
        all.extend_from_slice(args);
        let output = cli(&all, &[]);
        assert!(!output.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
}
