//! The processor against the real Kafka and PostgreSQL: London January 2013 readings
//! produced to a topic of the test's own, consumed in two runs with a stop between
//! them and the first half redelivered; daily energy must equal the CSV sums.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use rdkafka::producer::{FutureProducer, FutureRecord};
use smartmeter_core::service::health::Health;
use smartmeter_core::service::testkit::{self, TestDatabase};
use smartmeter_processor::Config;
use tokio_postgres::NoTls;
use tokio_util::sync::CancellationToken;

const LONDON_JANUARY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data/lcl_halfhourly_2013-01_10households.csv");

/// (device, slot start, value in Wh) of the rows of the given households.
fn half_hours(households: &[&str]) -> Vec<(String, Timestamp, i64)> {
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
fn readings(rows: &[(String, Timestamp, i64)]) -> Vec<(String, String)> {
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

fn payload(device: &str, at: Timestamp, counter_wh: i64) -> String {
    serde_json::json!({
        "device_id": device, "timestamp": at, "meter_timestamp": at, "received_at": at,
        "voltage": 230.0, "current": 0.0, "power_w": 0.0,
        "energy_kwh": counter_wh as f64 / 1000.0, "power_factor": 1.0, "clock_unsynced": false,
    })
    .to_string()
}

async fn produce(brokers: &str, topic: &str, messages: &[(String, String)]) {
    let producer: FutureProducer =
        smartmeter_core::service::kafka::idempotent_producer(brokers, "restart-test").create().unwrap();
    let deliveries: Vec<_> = messages
        .iter()
        .map(|(key, value)| producer.send_result(FutureRecord::to(topic).key(key).payload(value)).unwrap())
        .collect();
    for delivery in deliveries {
        delivery.await.unwrap().unwrap();
    }
}

async fn daily(url: &str) -> BTreeMap<(String, String), i64> {
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

async fn count(url: &str, sql: &str) -> i64 {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(connection);
    client.query_one(sql, &[]).await.unwrap().get(0)
}

/// Runs the processor until `readings` rows exist (or a minute passes), then stops it.
async fn run_until(config: &Config, db_url: &str, readings_expected: i64) {
    let shutdown = CancellationToken::new();
    let registry = prometheus::Registry::new();
    let task = tokio::spawn({
        let config = config.clone();
        let shutdown = shutdown.clone();
        async move {
            smartmeter_processor::run(config, &registry, Health::new("processor", &["kafka", "postgres"]), shutdown)
                .await
        }
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let stored = count(db_url, "SELECT count(*) FROM readings").await;
        if stored >= readings_expected {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "only {stored} of {readings_expected} readings after 90 s");
    }
    // Let any redelivered records in flight be consumed too before stopping.
    tokio::time::sleep(Duration::from_secs(1)).await;
    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_and_restart_resumes_from_stored_offsets_without_double_counting() {
    let households = ["MAC000002", "MAC000016", "MAC000042"];
    let rows = half_hours(&households);
    let messages = readings(&rows);
    let half = messages.len() / 2;

    let db = TestDatabase::create("processor_restart").await.unwrap();
    let brokers = testkit::kafka_brokers();
    let topic = testkit::unique_name("smartmeter.telemetry.test");
    testkit::create_topic(&brokers, &topic, 3).await.unwrap();
    let config = Config {
        brokers: brokers.clone(),
        database_url: db.url.clone(),
        group_id: testkit::unique_name("processor-test"),
        topic: topic.clone(),
        default_time_zone: "Europe/London".into(),
        ..Config::local_defaults()
    };

    produce(&brokers, &topic, &messages[..half]).await;
    run_until(&config, &db.url, half as i64).await;
    let first_offsets = count(&db.url, "SELECT sum(next_offset)::bigint FROM consumer_offsets").await;
    assert_eq!(first_offsets, half as i64);

    // Redeliver the last 100 of the first half (as an at-least-once bridge would), then the rest.
    produce(&brokers, &topic, &messages[half - 100..]).await;
    run_until(&config, &db.url, messages.len() as i64).await;

    assert_eq!(count(&db.url, "SELECT count(*) FROM readings").await, messages.len() as i64);
    assert_eq!(count(&db.url, "SELECT sum(duplicates_total)::bigint FROM devices").await, 100);

    let mut expected: BTreeMap<(String, String), i64> = BTreeMap::new();
    for (device, start, wh) in &rows {
        // January in London is GMT: the local date is the UTC date.
        let date = start.to_zoned(jiff::tz::TimeZone::UTC).date().to_string();
        *expected.entry((device.clone(), date)).or_insert(0) += wh * 1000;
    }
    expected.retain(|_, energy| *energy != 0);
    assert_eq!(daily(&db.url).await, expected);

    let hourly_total = count(&db.url, "SELECT sum(energy_milli_wh)::bigint FROM energy_hourly").await;
    let csv_total: i64 = rows.iter().map(|(_, _, wh)| wh * 1000).sum();
    assert_eq!(hourly_total, csv_total);
    db.drop_database().await.unwrap();
}
