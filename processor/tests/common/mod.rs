//! Shared by the processor's integration tests: real London readings as telemetry
//! records, producing them to Kafka, running the processor in-process, reading tables.

#![allow(dead_code)]

pub mod binary;
pub mod chaos;
pub mod london;
pub mod publisher;
pub mod stack;

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use rdkafka::producer::{FutureProducer, FutureRecord};
use smartmeter_core::service::testkit::Spawned;
use smartmeter_processor::Config;
use tokio_postgres::NoTls;

const LONDON_JANUARY: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data/lcl_halfhourly_2013-01_10households.csv");

/// (device, slot start, value in Wh) of the rows of the given households.
pub fn half_hours(households: &[&str]) -> Vec<(String, Timestamp, i64)> {
    let text = std::fs::read_to_string(LONDON_JANUARY).expect("London data file");
    let mut rows = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if fields[0] == "LCLid" || !households.contains(&fields[0]) {
            continue;
        }
        let start: Timestamp = format!("{}Z", fields[1].replace(' ', "T")).parse().unwrap();
        let wh = (fields[2].parse::<f64>().unwrap() * 1000.0).round() as i64;
        rows.push((fields[0].to_owned(), start, wh));
    }
    rows.sort();
    rows.dedup();
    rows
}

/// Cumulative-counter telemetry: a reading at the end of each half hour.
pub fn readings(rows: &[(String, Timestamp, i64)]) -> Vec<(String, String)> {
    let mut counters: BTreeMap<&str, i64> = BTreeMap::new();
    let mut out = Vec::new();
    for (device, start, wh) in rows {
        let counter = counters.entry(device).or_insert_with(|| {
            out.push((device.clone(), payload(device, *start, 0)));
            0
        });
        *counter += wh;
        let end = *start + jiff::SignedDuration::from_mins(30);
        out.push((device.clone(), payload(device, end, *counter)));
    }
    out
}

pub fn payload(device: &str, at: Timestamp, counter_wh: i64) -> String {
    serde_json::json!({
        "device_id": device, "timestamp": at, "meter_timestamp": at, "received_at": Timestamp::now(),
        "voltage": 230.0, "current": 0.0, "power_w": 0.0,
        "energy_kwh": counter_wh as f64 / 1000.0, "power_factor": 1.0, "clock_unsynced": false,
    })
    .to_string()
}

/// Produces `messages` in order, keyed, and waits until Kafka confirmed each (in
/// chunks, so the producer's queue never overflows).
pub async fn produce(brokers: &str, topic: &str, messages: &[(String, String)]) {
    let producer: FutureProducer =
        smartmeter_core::service::kafka::idempotent_producer(brokers, "restart-test").create().unwrap();
    for chunk in messages.chunks(20_000) {
        let deliveries: Vec<_> = chunk
            .iter()
            .map(|(key, value)| {
                producer.send_result(FutureRecord::to(topic).key(key).payload(value)).unwrap()
            })
            .collect();
        for delivery in deliveries {
            delivery.await.unwrap().unwrap();
        }
    }
}

pub async fn daily(url: &str) -> BTreeMap<(String, String), i64> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(connection);
    client
        .query("SELECT device_id, local_date::text, energy_milli_wh FROM energy_daily", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| ((row.get(0), row.get(1)), row.get(2)))
        .collect()
}

pub async fn count(url: &str, sql: &str) -> i64 {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(connection);
    client.query_one(sql, &[]).await.unwrap().get(0)
}

/// Runs the processor until `readings` rows exist (or 90 s pass), then stops it.
pub async fn run_until(config: &Config, db_url: &str, readings_expected: i64) {
    run_until_count(config, db_url, "SELECT count(*) FROM readings", readings_expected).await;
}

/// Runs the processor until the count `sql` returns reaches `expected`, then stops it.
pub async fn run_until_count(config: &Config, db_url: &str, sql: &str, expected: i64) {
    let processor = start_processor(config);
    wait_for(db_url, sql, expected).await;
    // Let any redelivered records in flight be consumed too before stopping.
    tokio::time::sleep(Duration::from_secs(1)).await;
    processor.stop().await;
}

/// A processor running in this process until `.stop()`.
pub fn start_processor(config: &Config) -> Spawned {
    let config = config.clone();
    Spawned::start(|shutdown| smartmeter_processor::run_embedded(config, shutdown))
}

/// Waits (up to 90 s) until the count `sql` returns reaches `expected`.
/// The tables may not exist yet: the processor creates them when it starts.
pub async fn wait_for(url: &str, sql: &str, expected: i64) {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(connection);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let reached = match client.query_one(sql, &[]).await {
            Ok(row) => row.get(0),
            Err(error) if error.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => 0,
            Err(error) => panic!("{sql}: {error:?}"),
        };
        if reached >= expected {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{sql}: only {reached} of {expected} after 90 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A telemetry record as the bridge makes it, received at `received_at`, with `fw`.
pub fn reading_at(device: &str, at: Timestamp, counter_wh: i64, received_at: Timestamp, fw: &str) -> String {
    serde_json::json!({
        "device_id": device, "timestamp": at, "meter_timestamp": at, "received_at": received_at,
        "voltage": 230.0, "current": 0.0, "power_w": 0.0, "fw": fw,
        "energy_kwh": counter_wh as f64 / 1000.0, "power_factor": 1.0, "clock_unsynced": false,
    })
    .to_string()
}

/// A device event as the API (or the bridge) publishes it: key and envelope JSON.
pub fn device_event(
    event: smartmeter_core::device_events::DeviceEvent,
    time: Timestamp,
    id: &str,
) -> (String, String) {
    let envelope = event.to_envelope(id.to_owned(), "/test", time);
    (event.device_id().to_string(), serde_json::to_string(&envelope).unwrap())
}

pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}
