//! The 10-household London January 2013 file as telemetry records, built by the meter
//! simulator's London module (the same counters and payloads `meter-sim` publishes)
//! and validated the way the bridge validates them. Shared by the exactly-once tests
//! and `examples/ingest_bench.rs`.

#![allow(dead_code)]

use jiff::{SignedDuration, Timestamp};
use meter_simulator::counter;
use meter_simulator::london;
use meter_simulator::payload::Telemetry;
use smartmeter_core::telemetry::{telemetry_topic, validate, ValidationConfig};
use smartmeter_core::{DeviceId, Reading};

pub const LONDON_JANUARY: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data/lcl_halfhourly_2013-01_10households.csv");

/// One meter's telemetry as it would arrive from the bridge.
#[derive(Debug, Clone)]
pub struct Replay {
    /// Device ids, in the order of the file's households.
    pub devices: Vec<String>,
    /// (key, validated reading as JSON), all meters interleaved in meter-time order.
    pub records: Vec<(String, String)>,
    /// Per device, the counter's total increase in mWh (what the rollups must hold).
    pub totals_milli_wh: Vec<i64>,
}

/// Every household of the file as meter `{prefix}{LCLid}`, `points_per_slot` readings
/// per half hour. Receive times follow meter time compressed `compression` times (one
/// hour of meter time in 3600 / `compression` seconds), from `received_from` on.
pub fn replay(prefix: &str, points_per_slot: u32, received_from: Timestamp, compression: i64) -> Replay {
    let dataset = london::load(&[LONDON_JANUARY]).expect("London data file");
    let validation = ValidationConfig {
        clock_floor: "2000-01-01T00:00:00Z".parse().unwrap(),
        ..ValidationConfig::default()
    };
    let mut devices = Vec::new();
    let mut totals_milli_wh = Vec::new();
    let mut all: Vec<(Timestamp, usize, String, String)> = Vec::new();
    let start = dataset.meters.iter().filter_map(|m| m.slots.first()).map(|s| s.start).min().unwrap();
    for (index, meter) in dataset.meters.iter().enumerate() {
        let device = DeviceId::parse(&format!("{prefix}{}", meter.device_id)).unwrap();
        let readings = counter::readings(&meter.slots, points_per_slot).unwrap();
        totals_milli_wh.push(readings.last().map_or(0, |r| r.energy_mwh as i64));
        let topic = telemetry_topic(&device);
        for reading in &readings {
            let (telemetry, _) = Telemetry::from_reading(&device, reading);
            let since = reading.timestamp.duration_since(start);
            let received_at =
                received_from + SignedDuration::from_nanos((since.as_nanos() / compression as i128) as i64);
            let validated: Reading = validate(&topic, &telemetry.to_json(), received_at, &validation)
                .expect("the simulator's payloads are valid");
            all.push((
                reading.timestamp,
                index,
                device.to_string(),
                serde_json::to_string(&validated).unwrap(),
            ));
        }
        devices.push(device.to_string());
    }
    all.sort_by_key(|a| (a.0, a.1));
    Replay {
        devices,
        records: all.into_iter().map(|(_, _, key, value)| (key, value)).collect(),
        totals_milli_wh,
    }
}

/// Every household of the file as meter `{prefix}{LCLid}`: the MQTT messages
/// (`smartmeter/{id}/telemetry`, the simulator's seed JSON) in meter-time order, and
/// per device the counter's total increase in mWh.
/// (MQTT topic, payload).
pub type Message = (String, Vec<u8>);

pub fn mqtt_messages(prefix: &str, points_per_slot: u32) -> (Vec<Message>, Vec<(String, i64)>) {
    let dataset = london::load(&[LONDON_JANUARY]).expect("London data file");
    let mut all: Vec<(Timestamp, usize, String, Vec<u8>)> = Vec::new();
    let mut totals = Vec::new();
    for (index, meter) in dataset.meters.iter().enumerate() {
        let device = DeviceId::parse(&format!("{prefix}{}", meter.device_id)).unwrap();
        let readings = counter::readings(&meter.slots, points_per_slot).unwrap();
        totals.push((device.to_string(), readings.last().map_or(0, |r| r.energy_mwh as i64)));
        let topic = telemetry_topic(&device);
        for reading in &readings {
            let (telemetry, _) = Telemetry::from_reading(&device, reading);
            all.push((reading.timestamp, index, topic.clone(), telemetry.to_json()));
        }
    }
    all.sort_by_key(|a| (a.0, a.1));
    (all.into_iter().map(|(_, _, topic, payload)| (topic, payload)).collect(), totals)
}
