//! At least once from the broker to Kafka, exactly once in the database, with the
//! bridge SIGKILLed: the real `bridge` binary forwards the 10-household London January
//! (meter simulator, 14,000 readings over MQTT, QoS 1) while it is killed at 10 or more
//! random moments and restarted with the same client id. Every reading the broker
//! accepted must be in Kafka at least once, and in the database exactly once after the
//! processor (run in-process on the topic) has deduplicated.
//!
//! The broker is a private Mosquitto (`infra/up.sh mosquitto` with a state directory
//! and port of its own), so the bridge can subscribe to every meter's topic without
//! seeing other traffic; Kafka and PostgreSQL are the shared ones, with topics and a
//! database of this test's own. `SMARTMETER_TEST_SEED` repeats the kill moments; the
//! bridge's log is `target/tmp/bridge-kill.log`.

#[path = "../../processor/tests/common/binary.rs"]
mod binary;
#[path = "../../processor/tests/common/london.rs"]
mod london;
#[path = "../../processor/tests/common/publisher.rs"]
mod publisher;
#[path = "../../processor/tests/common/stack.rs"]
mod stack;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use binary::{Binary, Rng};
use publisher::{Account, Progress};
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::message::Message as _;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use smartmeter_core::service::testkit::{self, TestDatabase};
use smartmeter_core::{topics, Reading};
use stack::{Service, Stack};

const MIN_KILLS: u32 = 10;

/// Reads `topic` from the beginning until every partition's high watermark as of the
/// call; returns how often each (device, meter timestamp) occurs.
async fn read_all(brokers: &str, topic: &str, partitions: i32) -> HashMap<(String, String), u32> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", testkit::unique_name("bridge-kill-reader"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    let mut remaining = HashMap::new();
    for partition in 0..partitions {
        let (_, high) = consumer.fetch_watermarks(topic, partition, Duration::from_secs(10)).unwrap();
        assignment.add_partition_offset(topic, partition, Offset::Beginning).unwrap();
        if high > 0 {
            remaining.insert(partition, high);
        }
    }
    consumer.assign(&assignment).unwrap();
    let mut seen = HashMap::new();
    while !remaining.is_empty() {
        let message = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
            .await
            .expect("Kafka delivers the topic")
            .unwrap();
        let reading: Reading = serde_json::from_slice(message.payload().unwrap()).unwrap();
        *seen.entry((reading.device_id.to_string(), reading.meter_timestamp.to_string())).or_insert(0) += 1;
        if remaining.get(&message.partition()).is_some_and(|high| message.offset() + 1 >= *high) {
            remaining.remove(&message.partition());
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkilled_bridge_loses_nothing_and_the_database_counts_each_reading_once() {
    let broker =
        tokio::task::spawn_blocking(|| Stack::start("bridge-kill", &[Service::Mosquitto])).await.unwrap();
    let brokers = testkit::kafka_brokers();
    let telemetry = testkit::unique_name("smartmeter.telemetry.bridge-kill");
    let dlq = testkit::unique_name("smartmeter.telemetry.dlq.bridge-kill");
    let events = testkit::unique_name("smartmeter.device-events.bridge-kill");
    testkit::create_topic(&brokers, &telemetry, topics::TELEMETRY.partitions).await.unwrap();
    testkit::create_topic(&brokers, &dlq, 1).await.unwrap();
    testkit::create_topic(&brokers, &events, topics::DEVICE_EVENTS.partitions).await.unwrap();

    let prefix = format!("b{}-", std::process::id());
    let (messages, totals) = london::mqtt_messages(&prefix, 1);
    let expected: Vec<(String, String)> = messages
        .iter()
        .map(|(_, payload)| {
            let value: serde_json::Value = serde_json::from_slice(payload).unwrap();
            (value["device_id"].as_str().unwrap().to_owned(), value["timestamp"].as_str().unwrap().to_owned())
        })
        .collect();

    let (user, password) = Account::bridge_credentials();
    let bridge = Arc::new(Mutex::new(Binary::new(
        "bridge-kill",
        env!("CARGO_BIN_EXE_bridge"),
        vec![
            format!("--mqtt-port={}", broker.mqtt_port),
            format!("--mqtt-user={user}"),
            format!("--mqtt-password={password}"),
            format!("--mqtt-client-id={prefix}bridge"),
            "--mqtt-reconnect-max=1s".into(),
            format!("--kafka-brokers={brokers}"),
            format!("--telemetry-topic={telemetry}"),
            format!("--dlq-topic={dlq}"),
            format!("--device-events-topic={events}"),
            "--metrics-addr=127.0.0.1:0".into(),
            "--clock-floor=2000-01-01T00:00:00Z".into(),
        ],
    )));
    bridge.lock().unwrap().start();
    // The bridge's session subscribes on its first connection: before that the broker
    // has no one to keep messages for.
    let log = bridge.lock().unwrap().log_path().clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&log).unwrap_or_default().contains("Subscribed.") {
        assert!(Instant::now() < deadline, "the bridge did not subscribe; log: {}", log.display());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let started = Instant::now();
    let progress = Arc::new(Progress::default());
    let publishing = tokio::spawn(publisher::publish(
        Account::simulator(broker.mqtt_port),
        format!("{prefix}publisher"),
        messages,
        1000,
        progress.clone(),
    ));
    let mut rng = Rng::from_env("bridge kill test");
    while !publishing.is_finished() || bridge.lock().unwrap().kills < MIN_KILLS {
        tokio::time::sleep(rng.millis(300, 1500)).await;
        let mut bridge = bridge.lock().unwrap();
        bridge.kill9();
        bridge.start();
    }
    publishing.await.unwrap();
    let kills = bridge.lock().unwrap().kills;
    eprintln!(
        "{} messages acknowledged by the broker in {:.1} s; bridge SIGKILLed {kills} times",
        expected.len(),
        started.elapsed().as_secs_f64()
    );

    // Kafka: every accepted message at least once.
    let deadline = Instant::now() + Duration::from_secs(60);
    let in_kafka = loop {
        let seen = read_all(&brokers, &telemetry, topics::TELEMETRY.partitions).await;
        if expected.iter().all(|key| seen.contains_key(key)) {
            break seen;
        }
        bridge.lock().unwrap().check_alive();
        if Instant::now() >= deadline {
            let missing: Vec<(usize, &(String, String))> =
                expected.iter().enumerate().filter(|(_, key)| !seen.contains_key(*key)).collect();
            panic!(
                "{} of {} readings in Kafka; missing (publish index, key): {missing:?}",
                seen.len(),
                expected.len()
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    bridge.lock().unwrap().terminate();
    let records: u32 = in_kafka.values().sum();
    assert_eq!(in_kafka.len(), expected.len(), "nothing in Kafka that was not published");
    eprintln!("Kafka holds {records} records for {} readings (redelivered after kills)", expected.len());

    // The database: each reading once.
    let db = TestDatabase::create("bridge_kill").await.unwrap();
    let config = smartmeter_processor::Config {
        brokers: brokers.clone(),
        database_url: db.url.clone(),
        group_id: testkit::unique_name("processor-bridge-kill"),
        topic: telemetry.clone(),
        default_time_zone: "Europe/London".into(),
        ..smartmeter_processor::Config::local_defaults()
    };
    let processor = testkit::Spawned::start(|shutdown| smartmeter_processor::run_embedded(config, shutdown));
    let (client, connection) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let consumed: i64 = client
            .query_one(
                "SELECT coalesce(sum(next_offset), 0)::bigint FROM consumer_offsets WHERE topic = $1",
                &[&telemetry],
            )
            .await
            .map(|row| row.get(0))
            .unwrap_or(0);
        if consumed == i64::from(records) {
            break;
        }
        assert!(Instant::now() < deadline, "processor consumed {consumed} of {records}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    processor.stop().await;
    let stored: i64 = client.query_one("SELECT count(*) FROM readings", &[]).await.unwrap().get(0);
    let duplicates: i64 =
        client.query_one("SELECT sum(duplicates_total)::bigint FROM devices", &[]).await.unwrap().get(0);
    assert_eq!(stored, expected.len() as i64, "each accepted reading once in the database");
    assert_eq!(stored + duplicates, i64::from(records), "every other record was a duplicate, dropped");
    for (device, total_milli_wh) in &totals {
        let energy: i64 = client
            .query_one(
                "SELECT coalesce(sum(energy_milli_wh), 0)::bigint FROM energy_daily WHERE device_id = $1",
                &[device],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(energy, *total_milli_wh, "{device}: its counter's increase");
    }
    eprintln!(
        "database: {stored} readings, {duplicates} duplicates dropped; publisher: {} sends, {} reconnections",
        progress.sent.load(Ordering::SeqCst),
        progress.connection_errors.load(Ordering::SeqCst)
    );
    drop(client);
    db.drop_database().await.unwrap();
    drop(broker);
}
