//! A whole replay in dry-run mode: every payload is one the bridge accepts, meters are
//! interleaved in time order, and the CLI wires the flags through.

mod common;

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use jiff::Timestamp;
use meter_simulator::{Config, Output, Source};
use smartmeter_core::telemetry::{telemetry_topic, validate, ValidationConfig};
use smartmeter_core::DeviceId;
use tokio_util::sync::CancellationToken;

use common::{data_file, RAW_MAC000002, TEN_HOUSEHOLDS};

fn config(inputs: &[&str], out: &std::path::Path) -> Config {
    Config {
        source: Source::London,
        inputs: inputs.iter().map(|name| data_file(name)).collect(),
        points_per_slot: 1,
        speedup: 0.0,
        limit_meters: None,
        from: None,
        to: None,
        output: Output::DryRun(out.to_owned()),
        ack_timeout: Duration::from_secs(1),
        progress: false,
    }
}

/// The bridge's view, with the clock floor lowered for data from 2012.
fn bridge_config() -> ValidationConfig {
    ValidationConfig { clock_floor: "2012-01-01T00:00:00Z".parse().unwrap(), ..Default::default() }
}

#[tokio::test]
async fn every_payload_of_the_ten_households_passes_validation() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("payloads.jsonl");
    let report =
        meter_simulator::run(&config(&[TEN_HOUSEHOLDS], &out), CancellationToken::new()).await.unwrap();

    // 14,102 rows = 14,102 slot ends, plus one first reading per meter and one resume
    // after each of the 6 gaps.
    assert_eq!(report.scheduled, 14_102 + 10 + 6);
    assert_eq!(report.published, report.scheduled);
    assert_eq!(report.confirmed, report.published);
    assert_eq!(report.resumes, 6);
    assert!(report.complete());
    assert_eq!(report.quirks.repeated_headers, 9);
    assert_eq!(report.first_timestamp, Some("2013-01-01T00:00:00Z".parse().unwrap()));
    assert_eq!(report.last_timestamp, Some("2013-02-01T00:00:00Z".parse().unwrap()));

    let text = std::fs::read_to_string(&out).unwrap();
    let received: Timestamp = "2026-12-03T12:00:00Z".parse().unwrap();
    let mut previous_time: Option<Timestamp> = None;
    let mut last_energy: HashMap<DeviceId, f64> = HashMap::new();
    let mut lines = 0;
    for line in text.lines() {
        lines += 1;
        let device = DeviceId::parse(
            serde_json::from_str::<serde_json::Value>(line).unwrap()["device_id"].as_str().unwrap(),
        )
        .unwrap();
        let reading = validate(&telemetry_topic(&device), line.as_bytes(), received, &bridge_config())
            .unwrap_or_else(|e| panic!("{line}: {e}"));
        assert!(!reading.clock_unsynced);
        assert!(previous_time.is_none_or(|p| p <= reading.timestamp), "time order");
        previous_time = Some(reading.timestamp);
        let last = last_energy.insert(device, reading.energy_kwh).unwrap_or(0.0);
        assert!(reading.energy_kwh >= last, "{line}");
        assert_eq!(reading.voltage, 230.0);
        assert_eq!(reading.power_factor, 1.0);
        assert_eq!(reading.rssi, None);
    }
    assert_eq!(lines, report.published);
    assert_eq!(last_energy[&DeviceId::parse("MAC000024").unwrap()], 1321.377);
    assert!(text.contains(r#""device_id":"MAC000002","timestamp":"2013-01-01T00:30:00Z","voltage":230.0,"current":1.904,"power_w":438.0,"energy_kwh":0.219,"power_factor":1.0,"seq":1,"fw":"meter-sim/"#));
}

#[tokio::test]
async fn limits_and_time_cuts_apply_and_the_counter_keeps_its_history() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cut.jsonl");
    let mut config = config(&[TEN_HOUSEHOLDS, RAW_MAC000002], &out);
    config.limit_meters = Some(2);
    config.from = Some("2013-01-10T00:00:00Z".parse().unwrap());
    config.to = Some("2013-01-10T01:00:00Z".parse().unwrap());
    config.points_per_slot = 2;
    let report = meter_simulator::run(&config, CancellationToken::new()).await.unwrap();
    assert_eq!(report.meters_replayed, 2);
    assert_eq!(report.meters_in_data, 10);
    // 00:00, 00:15, 00:30, 00:45, 01:00 for MAC000002 and MAC000006.
    assert_eq!(report.scheduled, 10);
    let text = std::fs::read_to_string(&out).unwrap();
    let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(first["device_id"], "MAC000002");
    assert_eq!(first["timestamp"], "2013-01-10T00:00:00Z");
    // MAC000002's counter at this instant includes everything since 2012-10-12.
    assert!(first["energy_kwh"].as_f64().unwrap() > 1_000.0, "{first}");
}

#[test]
fn the_cli_dry_run_prints_the_summary() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cli.jsonl");
    let output = Command::new(env!("CARGO_BIN_EXE_meter-sim"))
        .env_clear()
        .env("SMARTMETER_SIM_INPUT", data_file(RAW_MAC000002))
        .args(["--dry-run", "--no-progress", "--out"])
        .arg(&out)
        .output()
        .unwrap();
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
    assert!(stdout.contains(&format!("{lines} published, {lines} written")), "{stdout}");
}

#[test]
fn the_cli_refuses_a_bad_points_per_slot() {
    let output = Command::new(env!("CARGO_BIN_EXE_meter-sim"))
        .env_clear()
        .args(["--input", "x.csv", "--points-per-slot", "7", "--dry-run", "--out", "/dev/null"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("divisor of 1800"));
}
