//! The bridge end to end against the real Mosquitto and Kafka that `infra/up.sh`
//! starts. Connection settings come from the environment (`. infra/env.sh`), with the
//! same defaults as `infra/env.sh`.
//!
//! Each test uses device ids, MQTT client ids and Kafka topics of its own (and still
//! reads Kafka from the high watermarks it saw before publishing), so it can run again
//! and again against the same services without touching the demo's data. The bridge
//! under test subscribes only to its test device's topic, so it never forwards other
//! traffic on the broker.

use std::collections::HashMap;
use std::time::Duration;

use clap::Parser as _;
use jiff::Timestamp;
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::message::{Message as _, OwnedMessage};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
use serde_json::{json, Value};
use smartmeter_bridge::kafka::Topics;
use smartmeter_bridge::Config;
use smartmeter_core::device_events::{DeviceEvent, StatusReason};
use smartmeter_core::event::Envelope;
use smartmeter_core::service::testkit;
use smartmeter_core::status::status_topic;
use smartmeter_core::telemetry::{telemetry_topic, DeadLetter, RejectCode};
use smartmeter_core::topics as core_topics;
use smartmeter_core::{DeviceId, Reading};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(60);

fn env_or(name: &str, default: &str) -> String {
    testkit::env_or(name, default)
}

fn mqtt_host() -> String {
    env_or("SMARTMETER_MQTT_HOST", "127.0.0.1")
}

fn mqtt_port() -> u16 {
    env_or("SMARTMETER_MQTT_PORT", "1883").parse().expect("SMARTMETER_MQTT_PORT is a port")
}

fn bridge_account() -> (String, String) {
    (
        env_or("SMARTMETER_MQTT_BRIDGE_USER", "smartmeter-bridge"),
        env_or("SMARTMETER_MQTT_BRIDGE_PASSWORD", "bridge-dev-only"),
    )
}

fn simulator_account() -> (String, String) {
    (
        env_or("SMARTMETER_MQTT_SIMULATOR_USER", "smartmeter-simulator"),
        env_or("SMARTMETER_MQTT_SIMULATOR_PASSWORD", "simulator-dev-only"),
    )
}

/// Unique per call, test and run.
fn unique(name: &str) -> String {
    testkit::unique_name(&format!("it-{name}"))
}

/// Telemetry, DLQ and device-events topics of a test's own.
async fn test_topics() -> Topics {
    let topics = Topics {
        telemetry: unique("telemetry"),
        dlq: unique("telemetry-dlq"),
        device_events: unique("device-events"),
    };
    let brokers = testkit::kafka_brokers();
    testkit::create_topic(&brokers, &topics.telemetry, core_topics::TELEMETRY.partitions)
        .await
        .expect("create the test's telemetry topic (is infra/up.sh running?)");
    testkit::create_topic(&brokers, &topics.dlq, core_topics::TELEMETRY_DLQ.partitions).await.unwrap();
    testkit::create_topic(&brokers, &topics.device_events, core_topics::DEVICE_EVENTS.partitions)
        .await
        .unwrap();
    topics
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A bridge running in this process.
struct Bridge {
    client_id: String,
    metrics_port: u16,
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Bridge {
    fn start(
        client_id: &str,
        device: &DeviceId,
        topics: &Topics,
        kafka_brokers: &str,
        extra: &[&str],
    ) -> Self {
        // The bridge's own logs, for debugging a failure: SMARTMETER_TEST_LOG=1 ... --nocapture
        if std::env::var_os("SMARTMETER_TEST_LOG").is_some() {
            smartmeter_core::service::logging::init("bridge-test");
        }
        let metrics_port = free_port();
        let (user, password) = bridge_account();
        let mut args = vec![
            "bridge".to_owned(),
            format!("--mqtt-host={}", mqtt_host()),
            format!("--mqtt-port={}", mqtt_port()),
            format!("--mqtt-user={user}"),
            format!("--mqtt-password={password}"),
            format!("--mqtt-client-id={client_id}"),
            format!("--mqtt-topic-filter={}", telemetry_topic(device)),
            format!("--mqtt-status-topic-filter={}", status_topic(device)),
            format!("--device-events-topic={}", topics.device_events),
            format!("--kafka-brokers={kafka_brokers}"),
            format!("--telemetry-topic={}", topics.telemetry),
            format!("--dlq-topic={}", topics.dlq),
            format!("--metrics-addr=127.0.0.1:{metrics_port}"),
            "--clock-floor=2020-01-01T00:00:00Z".to_owned(),
        ];
        args.extend(extra.iter().map(|arg| (*arg).to_owned()));
        let config = Config::try_parse_from(args).expect("bridge flags parse");
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(smartmeter_bridge::run(config, shutdown.clone()));
        Self { client_id: client_id.to_owned(), metrics_port, shutdown, task }
    }

    async fn get(&self, path: &str) -> Option<(u16, String)> {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", self.metrics_port)).await.ok()?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await.ok()?;
        let status = response.split(' ').nth(1)?.parse().ok()?;
        let body = response.split_once("\r\n\r\n")?.1.to_owned();
        Some((status, body))
    }

    /// Waits until `/health` reports `component` up (the MQTT one is up once subscribed).
    async fn wait_until_up(&self, components: &[&str]) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some((_, body)) = self.get("/health").await {
                let report: Value = serde_json::from_str(&body).unwrap_or_default();
                if components.iter().all(|c| report["components"][c]["state"] == "up") {
                    return;
                }
                assert!(tokio::time::Instant::now() < deadline, "bridge not up in time: {body}");
            }
            assert!(!self.task.is_finished(), "bridge stopped while starting");
            assert!(tokio::time::Instant::now() < deadline, "bridge's /health did not answer");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// One sample of `/metrics`, by its full name with labels.
    async fn metric(&self, series: &str) -> Option<f64> {
        let (_, body) = self.get("/metrics").await?;
        body.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    async fn wait_for_metric(&self, series: &str, expected: f64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let value = self.metric(series).await;
            if value == Some(expected) {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "{series} is {value:?}, expected {expected}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn stop(self) -> String {
        self.shutdown.cancel();
        let result = tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("bridge stops within its drain timeout")
            .expect("bridge task does not panic");
        result.expect("bridge stops cleanly");
        self.client_id
    }
}

/// Publishes `messages` in order with QoS 1 as the fleet simulator and waits until the
/// broker acknowledged each.
async fn publish(messages: &[(String, Vec<u8>)]) {
    publish_with(messages, false).await;
}

/// [`publish`], retained when `retain` (as meters publish their status).
async fn publish_with(messages: &[(String, Vec<u8>)], retain: bool) {
    let (user, password) = simulator_account();
    let mut options = MqttOptions::new(unique("publisher"), mqtt_host(), mqtt_port());
    options.set_credentials(user, password).set_max_packet_size(64 * 1024, 64 * 1024);
    let (client, mut eventloop) = AsyncClient::new(options, 64);
    let expected = messages.len();
    let (all_acked_tx, all_acked) = tokio::sync::oneshot::channel();
    let poller = tokio::spawn(async move {
        let mut acked = 0;
        let mut all_acked_tx = Some(all_acked_tx);
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => {
                    acked += 1;
                    if acked == expected {
                        if let Some(tx) = all_acked_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                }
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    assert_eq!(ack.code, rumqttc::ConnectReturnCode::Success, "simulator account refused");
                }
                Ok(Event::Outgoing(Outgoing::Disconnect)) => break,
                Ok(_) => {}
                Err(error) => panic!("publisher connection failed after {acked} acks: {error}"),
            }
        }
    });
    for (topic, payload) in messages {
        client.publish(topic, QoS::AtLeastOnce, retain, payload.clone()).await.unwrap();
    }
    tokio::time::timeout(WAIT, all_acked).await.expect("broker acknowledged every publish").unwrap();
    client.disconnect().await.unwrap();
    tokio::time::timeout(WAIT, poller).await.expect("publisher disconnects").unwrap();
}

/// Connects as `client_id` to its persistent session, returns how many messages the
/// broker (re)delivers within `listen`, then removes the session.
async fn drain_session(client_id: &str, listen: Duration) -> usize {
    let (user, password) = bridge_account();
    let mut delivered = 0;
    for clean_session in [false, true] {
        let mut options = MqttOptions::new(client_id, mqtt_host(), mqtt_port());
        options
            .set_credentials(user.clone(), password.clone())
            .set_clean_session(clean_session)
            .set_manual_acks(true)
            .set_max_packet_size(512 * 1024, 64 * 1024);
        let (client, mut eventloop) = AsyncClient::new(options, 64);
        let deadline =
            tokio::time::Instant::now() + if clean_session { Duration::from_secs(5) } else { listen };
        let mut connected = false;
        loop {
            let event = tokio::time::timeout_at(deadline, eventloop.poll()).await;
            match event {
                Err(_) => break,
                Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => {
                    connected = true;
                    if clean_session {
                        break;
                    }
                }
                Ok(Ok(Event::Incoming(Packet::Publish(_)))) => delivered += 1,
                Ok(Ok(_)) => {}
                Ok(Err(error)) => panic!("session check connection failed: {error}"),
            }
        }
        assert!(connected, "could not connect as {client_id}");
        client.disconnect().await.unwrap();
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Ok(event) = eventloop.poll().await {
                if matches!(event, Event::Outgoing(Outgoing::Disconnect)) {
                    break;
                }
            }
        })
        .await;
    }
    delivered
}

/// Kafka from the high watermarks of now: what a test publishes after this call.
struct KafkaTail {
    consumer: StreamConsumer,
    start: HashMap<(String, i32), i64>,
}

impl KafkaTail {
    fn from_now(topic_names: &[&String]) -> Self {
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", testkit::kafka_brokers())
            .set("group.id", unique("consumer"))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .create()
            .expect("create Kafka consumer");
        let mut assignment = TopicPartitionList::new();
        let mut start = HashMap::new();
        for topic in topic_names.iter().map(|name| name.as_str()) {
            let metadata = consumer
                .fetch_metadata(Some(topic), Duration::from_secs(10))
                .expect("Kafka answers metadata requests (is infra/up.sh running?)");
            let partitions = metadata.topics()[0].partitions().len();
            assert!(partitions > 0, "topic {topic} does not exist (infra/up.sh creates it)");
            for partition in 0..i32::try_from(partitions).unwrap() {
                let (_, high) =
                    consumer.fetch_watermarks(topic, partition, Duration::from_secs(10)).expect("watermarks");
                assignment.add_partition_offset(topic, partition, Offset::Offset(high)).unwrap();
                start.insert((topic.to_owned(), partition), high);
            }
        }
        consumer.assign(&assignment).expect("assign partitions");
        Self { consumer, start }
    }

    /// Reads until `done` says the records so far are complete, then on to the high
    /// watermarks of that moment (so duplicates would show), and returns the records
    /// with key `key`.
    async fn read(&self, key: &str, mut done: impl FnMut(&[OwnedMessage]) -> bool) -> Vec<OwnedMessage> {
        let mut records = Vec::new();
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut seen: HashMap<(String, i32), i64> = HashMap::new();
        let mut targets: Option<HashMap<(String, i32), i64>> = None;
        loop {
            if targets.is_none() && done(&records) {
                targets = Some(self.high_watermarks());
            }
            if let Some(targets) = &targets {
                let reached = targets.iter().all(|(tp, high)| {
                    self.start[tp] >= *high || seen.get(tp).is_some_and(|offset| offset + 1 >= *high)
                });
                if reached {
                    return records;
                }
            }
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            assert!(!remaining.is_zero(), "timed out; got {} records for {key}", records.len());
            let Ok(message) =
                tokio::time::timeout(remaining.min(Duration::from_secs(1)), self.consumer.recv()).await
            else {
                continue;
            };
            let message = message.expect("consume").detach();
            seen.insert((message.topic().to_owned(), message.partition()), message.offset());
            if message.key() == Some(key.as_bytes()) {
                records.push(message);
            }
        }
    }

    fn high_watermarks(&self) -> HashMap<(String, i32), i64> {
        self.start
            .keys()
            .map(|(topic, partition)| {
                let (_, high) =
                    self.consumer.fetch_watermarks(topic, *partition, Duration::from_secs(10)).unwrap();
                ((topic.clone(), *partition), high)
            })
            .collect()
    }
}

fn valid_payload(device: &DeviceId, seq: u64, timestamp: Timestamp) -> Value {
    // Inside the meter's ranges for any seq.
    let n = (seq % 100) as f64;
    json!({
        "device_id": device.as_str(),
        "timestamp": timestamp.to_string(),
        "voltage": 229.0 + n / 10.0,
        "current": 1.0 + n / 100.0,
        "power_w": 200.0 + n,
        "energy_kwh": 100.0 + n / 1000.0,
        "power_factor": 0.95,
        "frequency_hz": 50.0,
        "rssi": -60,
        "seq": seq,
        "boot_id": "it-boot",
        "fw": "it-1.0",
    })
}

fn bytes(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).unwrap()
}

/// One message the test publishes and what must come out of the bridge for it.
enum Expect {
    Reading { seq: u64, payload: Value, clock_unsynced: bool },
    Rejected { code: RejectCode, payload: Vec<u8> },
}

fn invalid_cases(device: &DeviceId, seq: u64, now: Timestamp) -> Vec<(RejectCode, Vec<u8>)> {
    let base = valid_payload(device, seq, now);
    let with = |field: &str, value: Value| {
        let mut payload = base.clone();
        payload[field] = value;
        bytes(&payload)
    };
    let mut missing = base.clone();
    missing.as_object_mut().unwrap().remove("energy_kwh");
    let nan = String::from_utf8(bytes(&base)).unwrap().replace(r#""power_w":"#, r#""power_w":NaN,"was":"#);
    let mut oversize = base.clone();
    oversize["padding"] = Value::String("x".repeat(5000));
    vec![
        (RejectCode::InvalidJson, format!("not json at all, seq {seq}").into_bytes()),
        (RejectCode::MissingField, bytes(&missing)),
        (RejectCode::NonFiniteNumber, nan.into_bytes()),
        (RejectCode::OutOfRange, with("voltage", json!(400.0))),
        (RejectCode::DeviceMismatch, with("device_id", json!(format!("{device}-other")))),
        (RejectCode::PayloadTooLarge, bytes(&oversize)),
        (RejectCode::InvalidTimestamp, with("timestamp", json!("yesterday at noon"))),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn valid_readings_go_to_telemetry_and_invalid_ones_to_the_dlq() {
    let device = DeviceId::parse(&unique("meter")).unwrap();
    let topic = telemetry_topic(&device);
    let topics = test_topics().await;
    let tail = KafkaTail::from_now(&[&topics.telemetry, &topics.dlq]);
    let bridge = Bridge::start(&unique("bridge"), &device, &topics, &testkit::kafka_brokers(), &[]);
    bridge.wait_until_up(&["mqtt", "kafka"]).await;

    // Valid readings with every kind of invalid input between them, and one reading
    // from a meter whose clock was never set.
    let started = Timestamp::now();
    let now = started - jiff::SignedDuration::from_secs(1);
    let mut invalid = invalid_cases(&device, 1000, now).into_iter();
    let mut expected = Vec::new();
    for seq in 0..20u64 {
        let payload = valid_payload(&device, seq, now + jiff::SignedDuration::from_millis(seq as i64));
        expected.push(Expect::Reading { seq, payload, clock_unsynced: false });
        if seq % 2 == 1 {
            if let Some((code, payload)) = invalid.next() {
                expected.push(Expect::Rejected { code, payload });
            }
        }
    }
    let unsynced = valid_payload(&device, 99, "2013-06-01T00:00:00Z".parse().unwrap());
    expected.insert(5, Expect::Reading { seq: 99, payload: unsynced, clock_unsynced: true });
    assert!(invalid.next().is_none(), "every invalid case is published");
    let valid_count = expected.iter().filter(|e| matches!(e, Expect::Reading { .. })).count();
    let invalid_count = expected.len() - valid_count;

    let messages: Vec<(String, Vec<u8>)> = expected
        .iter()
        .map(|expect| match expect {
            Expect::Reading { payload, .. } => (topic.clone(), bytes(payload)),
            Expect::Rejected { payload, .. } => (topic.clone(), payload.clone()),
        })
        .collect();
    publish(&messages).await;

    let key = device.as_str();
    let records = tail
        .read(key, |records| {
            let telemetry = records.iter().filter(|r| r.topic() == topics.telemetry).count();
            telemetry >= valid_count && records.len() >= valid_count + invalid_count
        })
        .await;
    let finished = Timestamp::now();

    // Telemetry: every valid reading exactly once, keyed by device, fields intact, and
    // in publish order (one key, one partition).
    let telemetry: Vec<&OwnedMessage> = records.iter().filter(|r| r.topic() == topics.telemetry).collect();
    let readings: Vec<Reading> =
        telemetry.iter().map(|r| serde_json::from_slice(r.payload().unwrap()).unwrap()).collect();
    let mut seqs: Vec<u64> = readings.iter().map(|r| r.seq.unwrap()).collect();
    let publish_order: Vec<u64> = expected
        .iter()
        .filter_map(|e| match e {
            Expect::Reading { seq, .. } => Some(*seq),
            Expect::Rejected { .. } => None,
        })
        .collect();
    assert_eq!(seqs, publish_order, "each valid reading once, in publish order");
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), valid_count);
    let partitions: Vec<i32> = telemetry.iter().map(|r| r.partition()).collect();
    assert!(partitions.windows(2).all(|w| w[0] == w[1]), "one device, one partition");

    for expect in &expected {
        let Expect::Reading { seq, payload, clock_unsynced } = expect else { continue };
        let reading = readings.iter().find(|r| r.seq == Some(*seq)).unwrap();
        assert_eq!(reading.device_id, device);
        assert_eq!(reading.voltage, payload["voltage"].as_f64().unwrap());
        assert_eq!(reading.current, payload["current"].as_f64().unwrap());
        assert_eq!(reading.power_w, payload["power_w"].as_f64().unwrap());
        assert_eq!(reading.energy_kwh, payload["energy_kwh"].as_f64().unwrap());
        assert_eq!(reading.power_factor, payload["power_factor"].as_f64().unwrap());
        assert_eq!(reading.frequency_hz, Some(50.0));
        assert_eq!(reading.rssi, Some(-60));
        assert_eq!(reading.boot_id.as_deref(), Some("it-boot"));
        assert_eq!(reading.fw.as_deref(), Some("it-1.0"));
        let meter_timestamp: Timestamp = payload["timestamp"].as_str().unwrap().parse().unwrap();
        assert_eq!(reading.meter_timestamp, meter_timestamp);
        assert!(started <= reading.received_at && reading.received_at <= finished);
        assert_eq!(reading.clock_unsynced, *clock_unsynced, "seq {seq}");
        let event_time = if *clock_unsynced { reading.received_at } else { meter_timestamp };
        assert_eq!(reading.timestamp, event_time, "seq {seq}");
    }

    // Dead letters: every invalid message once, with its code and the exact payload.
    let letters: Vec<DeadLetter> = records
        .iter()
        .filter(|r| r.topic() == topics.dlq)
        .map(|r| serde_json::from_slice(r.payload().unwrap()).unwrap())
        .collect();
    assert_eq!(letters.len(), invalid_count, "each invalid message once: {letters:#?}");
    for expect in &expected {
        let Expect::Rejected { code, payload } = expect else { continue };
        let matching: Vec<&DeadLetter> =
            letters.iter().filter(|l| l.payload().unwrap() == *payload).collect();
        assert_eq!(matching.len(), 1, "{code:?} appears once on the DLQ");
        let letter = matching[0];
        assert_eq!(letter.error_code, *code);
        assert_eq!(letter.mqtt_topic, topic);
        assert_eq!(letter.device_id.as_deref(), Some(device.as_str()));
        assert!(!letter.reason.is_empty());
        assert!(started <= letter.received_at && letter.received_at <= finished);
    }

    // The bridge acknowledged everything, and counted it (its registry is this run's own).
    let total = expected.len() as f64;
    bridge.wait_for_metric("smartmeter_bridge_mqtt_acks_total", total).await;
    bridge.wait_for_metric("smartmeter_bridge_mqtt_messages_received_total", total).await;
    bridge
        .wait_for_metric(
            &format!(r#"smartmeter_bridge_kafka_messages_produced_total{{topic="{}"}}"#, topics.telemetry),
            valid_count as f64,
        )
        .await;
    bridge
        .wait_for_metric(
            &format!(r#"smartmeter_bridge_kafka_messages_produced_total{{topic="{}"}}"#, topics.dlq),
            invalid_count as f64,
        )
        .await;
    for code in [
        "invalid_json",
        "missing_field",
        "non_finite_number",
        "out_of_range",
        "device_mismatch",
        "payload_too_large",
        "invalid_timestamp",
    ] {
        bridge
            .wait_for_metric(&format!(r#"smartmeter_bridge_dlq_messages_total{{error_code="{code}"}}"#), 1.0)
            .await;
    }
    bridge.wait_for_metric("smartmeter_bridge_clock_unsynced_readings_total", 1.0).await;
    bridge.wait_for_metric("smartmeter_bridge_inflight_messages", 0.0).await;

    let client_id = bridge.stop().await;
    // Acknowledged means gone from the broker: nothing is redelivered to the session.
    assert_eq!(drain_session(&client_id, Duration::from_secs(2)).await, 0);
}

/// At least once: messages Kafka never confirmed are not acknowledged, stay with the
/// broker, and reach Kafka through the next bridge with the same client id.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn messages_kafka_did_not_confirm_are_redelivered_to_the_next_bridge() {
    let device = DeviceId::parse(&unique("meter")).unwrap();
    let topic = telemetry_topic(&device);
    let client_id = unique("bridge");
    let topics = test_topics().await;
    let tail = KafkaTail::from_now(&[&topics.telemetry]);

    // A bridge whose Kafka is unreachable: it takes the messages but cannot deliver.
    let dead_kafka = format!("127.0.0.1:{}", free_port());
    let stranded = Bridge::start(&client_id, &device, &topics, &dead_kafka, &["--drain-timeout=1s"]);
    stranded.wait_until_up(&["mqtt"]).await;
    let now = Timestamp::now();
    let messages: Vec<(String, Vec<u8>)> =
        (0..10).map(|seq| (topic.clone(), bytes(&valid_payload(&device, seq, now)))).collect();
    publish(&messages).await;
    stranded.wait_for_metric("smartmeter_bridge_mqtt_messages_received_total", 10.0).await;
    stranded.wait_for_metric("smartmeter_bridge_inflight_messages", 10.0).await;
    assert_eq!(stranded.metric("smartmeter_bridge_mqtt_acks_total").await, Some(0.0));
    stranded.stop().await;

    // The same session with a working Kafka.
    let bridge = Bridge::start(&client_id, &device, &topics, &testkit::kafka_brokers(), &[]);
    let records = tail.read(device.as_str(), |records| records.len() >= 10).await;
    let mut seqs: Vec<u64> = records
        .iter()
        .map(|r| serde_json::from_slice::<Reading>(r.payload().unwrap()).unwrap().seq.unwrap())
        .collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (0..10).collect::<Vec<u64>>(), "every stranded message arrives, once");
    bridge.wait_for_metric("smartmeter_bridge_mqtt_acks_total", 10.0).await;
    bridge.stop().await;
    assert_eq!(drain_session(&client_id, Duration::from_secs(2)).await, 0);
}

/// Back-pressure: a burst far larger than the in-flight limit arrives complete, once
/// each and in order, and every message is acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_larger_than_the_inflight_limit_arrives_complete_and_in_order() {
    const BURST: u64 = 3000;
    let device = DeviceId::parse(&unique("meter")).unwrap();
    let topic = telemetry_topic(&device);
    let topics = test_topics().await;
    let tail = KafkaTail::from_now(&[&topics.telemetry]);
    let bridge =
        Bridge::start(&unique("bridge"), &device, &topics, &testkit::kafka_brokers(), &["--max-inflight=20"]);
    bridge.wait_until_up(&["mqtt", "kafka"]).await;

    let now = Timestamp::now();
    let messages: Vec<(String, Vec<u8>)> =
        (0..BURST).map(|seq| (topic.clone(), bytes(&valid_payload(&device, seq, now)))).collect();
    publish(&messages).await;

    let records = tail.read(device.as_str(), |records| records.len() as u64 >= BURST).await;
    let seqs: Vec<u64> = records
        .iter()
        .map(|r| serde_json::from_slice::<Reading>(r.payload().unwrap()).unwrap().seq.unwrap())
        .collect();
    assert_eq!(seqs, (0..BURST).collect::<Vec<u64>>(), "once each, in publish order");
    bridge.wait_for_metric("smartmeter_bridge_mqtt_acks_total", BURST as f64).await;
    let client_id = bridge.stop().await;
    assert_eq!(drain_session(&client_id, Duration::from_secs(2)).await, 0);
}

/// The meter's birth and last-will messages (and the JSON form) become
/// DeviceStatusChanged events keyed by device, in order, once each; bad status
/// messages go to the DLQ with their codes; a retained status reaches a bridge that
/// subscribes after it was published.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn status_messages_become_device_events_and_bad_ones_go_to_the_dlq() {
    let device = DeviceId::parse(&unique("meter")).unwrap();
    let topic = status_topic(&device);
    let topics = test_topics().await;
    let tail = KafkaTail::from_now(&[&topics.device_events, &topics.dlq]);
    let bridge = Bridge::start(&unique("bridge"), &device, &topics, &testkit::kafka_brokers(), &[]);
    bridge.wait_until_up(&["mqtt", "kafka"]).await;

    let started = Timestamp::now();
    let messages: Vec<(String, Vec<u8>)> = [
        &b"online"[..],
        b"sleeping",
        b"offline",
        br#"{"status":"online"}"#,
        br#"{"status":"offline","reason":"disconnect"}"#,
        br#"{"status":"online","device_id":"someone-else"}"#,
        b"Online",
    ]
    .iter()
    .map(|payload| (topic.clone(), payload.to_vec()))
    .collect();
    publish(&messages).await;

    let records = tail.read(device.as_str(), |records| records.len() >= messages.len()).await;
    let finished = Timestamp::now();
    let changes: Vec<(bool, StatusReason)> = records
        .iter()
        .filter(|r| r.topic() == topics.device_events)
        .map(|r| {
            let envelope: Envelope<Value> = serde_json::from_slice(r.payload().unwrap()).unwrap();
            assert_eq!(envelope.subject, device.as_str());
            assert_eq!(envelope.source, "/bridge");
            let DeviceEvent::StatusChanged(change) = DeviceEvent::from_envelope(&envelope).unwrap() else {
                panic!("only status changes come from the bridge")
            };
            assert_eq!(envelope.id, change.event_id(), "deterministic id");
            assert_eq!(envelope.time, change.at);
            assert!(started <= change.at && change.at <= finished, "stamped with the receive time");
            (change.online, change.reason)
        })
        .collect();
    assert_eq!(
        changes,
        [
            (true, StatusReason::Birth),
            (false, StatusReason::LastWill),
            (true, StatusReason::Birth),
            (false, StatusReason::Disconnect),
            (true, StatusReason::Birth),
        ],
        "each valid status once, in publish order"
    );
    let mut letters: Vec<(RejectCode, Vec<u8>)> = records
        .iter()
        .filter(|r| r.topic() == topics.dlq)
        .map(|r| {
            let letter: DeadLetter = serde_json::from_slice(r.payload().unwrap()).unwrap();
            assert_eq!(letter.mqtt_topic, topic);
            assert_eq!(letter.device_id.as_deref(), Some(device.as_str()));
            (letter.error_code, letter.payload().unwrap())
        })
        .collect();
    letters.sort_by_key(|(code, _)| code.as_str());
    assert_eq!(
        letters,
        [
            (RejectCode::DeviceMismatch, br#"{"status":"online","device_id":"someone-else"}"#.to_vec()),
            (RejectCode::InvalidStatus, b"sleeping".to_vec()),
        ]
    );
    bridge.wait_for_metric(r#"smartmeter_bridge_status_messages_total{status="online"}"#, 3.0).await;
    bridge.wait_for_metric(r#"smartmeter_bridge_status_messages_total{status="offline"}"#, 2.0).await;
    bridge.wait_for_metric(r#"smartmeter_bridge_dlq_messages_total{error_code="invalid_status"}"#, 1.0).await;
    bridge.wait_for_metric("smartmeter_bridge_mqtt_acks_total", messages.len() as f64).await;
    let first_client = bridge.stop().await;

    // The meter's retained last will, published while no bridge listens, reaches the
    // next bridge when it subscribes.
    let tail = KafkaTail::from_now(&[&topics.device_events]);
    publish_with(&[(topic.clone(), b"offline".to_vec())], true).await;
    let bridge = Bridge::start(&unique("bridge"), &device, &topics, &testkit::kafka_brokers(), &[]);
    let records = tail.read(device.as_str(), |records| !records.is_empty()).await;
    assert_eq!(records.len(), 1);
    let envelope: Envelope<Value> = serde_json::from_slice(records[0].payload().unwrap()).unwrap();
    let event = DeviceEvent::from_envelope(&envelope).unwrap();
    assert!(
        matches!(event, DeviceEvent::StatusChanged(ref c) if !c.online && c.reason == StatusReason::LastWill)
    );
    let second_client = bridge.stop().await;

    // Clear the retained message (an empty retained publish), then the sessions.
    publish_with(&[(topic.clone(), Vec::new())], true).await;
    drain_session(&first_client, Duration::from_secs(1)).await;
    drain_session(&second_client, Duration::from_secs(1)).await;
}
