//! The way of one message: validate → produce → (Kafka confirms) → acknowledge.
//!
//! Valid readings go to `smartmeter.telemetry.v1` keyed by device id; valid status
//! messages (`smartmeter/{id}/status`: birth `online`, last will `offline`) become
//! DeviceStatusChanged events on `smartmeter.device-events.v1`, keyed by device id, with
//! a deterministic id (device, state, reason, receive time); everything else goes to
//! `smartmeter.telemetry.dlq.v1` as a [`DeadLetter`] with its error code. Up to
//! `max_inflight` messages are in Kafka's hands at once; their confirmations are taken
//! in receive order ([`FuturesOrdered`]), so the MQTT acknowledgements leave in the
//! order the publishes arrived, as MQTT requires. A message Kafka has not confirmed is
//! never acknowledged.

use std::future::Future;

use futures::stream::{FuturesOrdered, StreamExt as _};
use jiff::Timestamp;
use smartmeter_core::device_events::{DeviceEvent, DeviceStatusChanged};
use smartmeter_core::status;
use smartmeter_core::telemetry::{self, DeadLetter, Reading, RejectCode, ValidationConfig};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, field, info_span, warn, Instrument as _};

use crate::kafka::{self, Delivery, Producer, Record, Topics};
use crate::metrics::Metrics;
use crate::mqtt::{AckToken, Received};

/// `source` of the events the bridge makes.
pub const EVENT_SOURCE: &str = "/bridge";

/// What a message becomes.
#[derive(Debug, Clone, PartialEq)]
pub enum Routed {
    Reading(Reading),
    Status(DeviceStatusChanged),
    Rejected(DeadLetter),
}

impl Routed {
    pub fn device_id(&self) -> Option<&str> {
        match self {
            Routed::Reading(reading) => Some(reading.device_id.as_str()),
            Routed::Status(change) => Some(change.device_id.as_str()),
            Routed::Rejected(letter) => letter.device_id.as_deref(),
        }
    }

    pub fn record(&self, topics: &Topics) -> Record {
        match self {
            Routed::Reading(reading) => Record {
                topic: topics.telemetry.clone(),
                key: reading.device_id.to_string(),
                value: serde_json::to_vec(reading).expect("a validated reading has only finite numbers"),
            },
            Routed::Status(change) => {
                let event = DeviceEvent::StatusChanged(change.clone());
                let envelope = event.to_envelope(change.event_id(), EVENT_SOURCE, change.at);
                Record {
                    topic: topics.device_events.clone(),
                    key: change.device_id.to_string(),
                    value: serde_json::to_vec(&envelope).expect("a device event is plain JSON"),
                }
            }
            Routed::Rejected(letter) => Record {
                topic: topics.dlq.clone(),
                key: letter.key().to_owned(),
                value: serde_json::to_vec(letter).expect("a dead letter is plain JSON"),
            },
        }
    }
}

/// Validates one MQTT message (a pure function of its inputs): a status topic
/// (`smartmeter/…/status`) is read as a status message, anything else as telemetry.
pub fn route(mqtt_topic: &str, payload: &[u8], received_at: Timestamp, config: &ValidationConfig) -> Routed {
    let routed = if status::is_status_topic(mqtt_topic) {
        status::parse(mqtt_topic, payload, received_at).map(Routed::Status)
    } else {
        telemetry::validate(mqtt_topic, payload, received_at, config).map(Routed::Reading)
    };
    routed.unwrap_or_else(|rejection| {
        Routed::Rejected(DeadLetter::new(mqtt_topic, payload, received_at, rejection))
    })
}

/// Turns received publishes into Kafka records and acknowledgements.
pub struct Forwarder {
    pub producer: Producer,
    pub topics: Topics,
    pub validation: ValidationConfig,
    pub metrics: Metrics,
    pub max_inflight: usize,
}

impl Forwarder {
    /// Runs until the poller is done handing over (or `stop_intake`) and every message
    /// taken is confirmed or given up (`give_up`). Fails only when the producer fails
    /// fatally.
    pub async fn run(
        self,
        handoff: mpsc::Receiver<Received>,
        acks: mpsc::UnboundedSender<AckToken>,
        stop_intake: CancellationToken,
        give_up: CancellationToken,
    ) -> anyhow::Result<()> {
        let metrics = self.metrics.clone();
        let max_inflight = self.max_inflight;
        pipeline(handoff, acks, max_inflight, stop_intake, &metrics, |received| {
            self.start(received, give_up.clone())
        })
        .await
    }

    fn start(
        &self,
        received: Received,
        give_up: CancellationToken,
    ) -> impl Future<Output = (AckToken, Delivery)> + Send + 'static {
        let ack = AckToken::of(&received);
        let Received { publish, received_at, .. } = received;
        let span = info_span!("message", topic = %publish.topic, device_id = field::Empty);
        let routed = {
            let _entered = span.enter();
            let routed = route(&publish.topic, &publish.payload, received_at, &self.validation);
            if let Some(device_id) = routed.device_id() {
                span.record("device_id", device_id);
            }
            match &routed {
                Routed::Rejected(letter) => {
                    let device_id = letter.device_id.as_deref();
                    warn!(device_id, error_code = letter.error_code.as_str(), reason = %letter.reason, "Reading rejected.");
                }
                Routed::Reading(reading) if reading.clock_unsynced => {
                    debug!(meter_timestamp = %reading.meter_timestamp, "Meter clock not synced; reading restamped with the receive time.");
                }
                Routed::Reading(_) => {}
                Routed::Status(change) => {
                    debug!(online = change.online, reason = change.reason.as_str(), "Device status message.");
                }
            }
            routed
        };
        let record = routed.record(&self.topics);
        let topic = record.topic.clone();
        let outcome = match &routed {
            Routed::Reading(reading) => Outcome::Reading { clock_unsynced: reading.clock_unsynced },
            Routed::Status(change) => Outcome::Status { online: change.online },
            Routed::Rejected(letter) => Outcome::Rejected(letter.error_code),
        };
        let metrics = self.metrics.clone();
        let delivery = kafka::deliver(&self.producer, record, metrics.clone(), give_up);
        async move {
            let delivery = delivery.await;
            if delivery == Delivery::Confirmed {
                metrics.produced.with_label_values(&[topic.as_str()]).inc();
                match outcome {
                    Outcome::Rejected(code) => metrics.dlq.with_label_values(&[code.as_str()]).inc(),
                    Outcome::Reading { clock_unsynced: true } => metrics.clock_unsynced.inc(),
                    Outcome::Reading { clock_unsynced: false } => {}
                    Outcome::Status { online } => {
                        metrics.status.with_label_values(&[if online { "online" } else { "offline" }]).inc()
                    }
                }
                let latency = Timestamp::now().duration_since(received_at);
                metrics.produce_latency.observe(latency.as_secs_f64().max(0.0));
            }
            (ack, delivery)
        }
        .instrument(span)
    }
}

#[derive(Debug, Clone, Copy)]
enum Outcome {
    Reading { clock_unsynced: bool },
    Status { online: bool },
    Rejected(RejectCode),
}

/// The ordering core of [`Forwarder::run`], apart from Kafka: `start` begins a
/// message's delivery; confirmations are taken in the order the messages were taken,
/// confirmed ones are passed to `acks`, and at most `max_inflight` are open at once.
async fn pipeline<F, Fut>(
    mut handoff: mpsc::Receiver<Received>,
    acks: mpsc::UnboundedSender<AckToken>,
    max_inflight: usize,
    stop_intake: CancellationToken,
    metrics: &Metrics,
    mut start: F,
) -> anyhow::Result<()>
where
    F: FnMut(Received) -> Fut,
    Fut: Future<Output = (AckToken, Delivery)>,
{
    let max_inflight = max_inflight.max(1);
    let mut pending = FuturesOrdered::new();
    let mut closing = false;
    let mut intake_done = false;
    let mut not_delivered: u64 = 0;
    loop {
        metrics.inflight.set(i64::try_from(pending.len()).unwrap_or(i64::MAX));
        if intake_done && pending.is_empty() {
            break;
        }
        tokio::select! {
            biased;
            () = stop_intake.cancelled(), if !closing => {
                // What is already handed over is still forwarded; nothing new comes in.
                handoff.close();
                closing = true;
            }
            Some((ack, delivery)) = pending.next(), if !pending.is_empty() => match delivery {
                Delivery::Confirmed => {
                    // The acknowledger only stops once this sender is dropped.
                    let _ = acks.send(ack);
                }
                Delivery::GaveUp => not_delivered += 1,
                Delivery::Fatal(reason) => {
                    metrics.inflight.set(0);
                    anyhow::bail!("Kafka producer failed fatally: {reason}");
                }
            },
            received = handoff.recv(), if !intake_done && pending.len() < max_inflight => match received {
                Some(received) => pending.push_back(start(received)),
                None => intake_done = true,
            },
            else => break,
        }
    }
    if not_delivered > 0 {
        warn!(not_delivered, "Stopped before Kafka confirmed some messages; the broker redelivers them.");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use rumqttc::{Publish, QoS};

    use super::*;

    const TOPIC: &str = "smartmeter/meter-001/telemetry";
    const SEED: &str = r#"{"device_id":"meter-001","timestamp":"2026-01-29T10:00:00Z","voltage":230.4,"current":2.73,
 "power_w":628.99,"energy_kwh":12.345,"power_factor":0.98,"rssi":-60}"#;

    fn received_at() -> Timestamp {
        "2026-01-29T10:00:01Z".parse().unwrap()
    }

    #[test]
    fn a_valid_reading_goes_to_telemetry_keyed_by_device() {
        let routed = route(TOPIC, SEED.as_bytes(), received_at(), &ValidationConfig::default());
        let record = routed.record(&Topics::default());
        assert_eq!(record.topic, "smartmeter.telemetry.v1");
        assert_eq!(record.key, "meter-001");
        let reading: Reading = serde_json::from_slice(&record.value).unwrap();
        assert_eq!(reading.energy_kwh, 12.345);
        assert_eq!(reading.received_at, received_at());
    }

    #[test]
    fn an_invalid_message_goes_to_the_dlq_with_payload_and_code() {
        let payload = SEED.replace("230.4", "NaN");
        let routed = route(TOPIC, payload.as_bytes(), received_at(), &ValidationConfig::default());
        let record = routed.record(&Topics::default());
        assert_eq!(record.topic, "smartmeter.telemetry.dlq.v1");
        assert_eq!(record.key, "meter-001");
        let letter: DeadLetter = serde_json::from_slice(&record.value).unwrap();
        assert_eq!(letter.error_code, RejectCode::NonFiniteNumber);
        assert_eq!(letter.payload().unwrap(), payload.as_bytes());
        assert_eq!(letter.mqtt_topic, TOPIC);
    }

    #[test]
    fn a_topic_naming_no_device_is_keyed_by_topic() {
        let topic = "smartmeter/bad!id/telemetry";
        let record = route(topic, SEED.as_bytes(), received_at(), &ValidationConfig::default())
            .record(&Topics::default());
        assert_eq!(record.topic, "smartmeter.telemetry.dlq.v1");
        assert_eq!(record.key, topic);
    }

    #[test]
    fn a_lower_clock_floor_accepts_old_replays() {
        let old = SEED.replace("2026-01-29T10:00:00Z", "2013-06-01T00:00:00Z");
        let default = route(TOPIC, old.as_bytes(), received_at(), &ValidationConfig::default());
        assert!(matches!(default, Routed::Reading(ref r) if r.clock_unsynced));
        let replay = ValidationConfig {
            clock_floor: "2000-01-01T00:00:00Z".parse().unwrap(),
            ..ValidationConfig::default()
        };
        let routed = route(TOPIC, old.as_bytes(), received_at(), &replay);
        assert!(matches!(routed, Routed::Reading(ref r) if !r.clock_unsynced));
    }

    #[test]
    fn a_status_message_becomes_a_device_event_keyed_by_device() {
        let topic = "smartmeter/meter-001/status";
        let routed = route(topic, b"offline", received_at(), &ValidationConfig::default());
        let record = routed.record(&Topics::default());
        assert_eq!(record.topic, "smartmeter.device-events.v1");
        assert_eq!(record.key, "meter-001");
        let envelope: smartmeter_core::event::Envelope<serde_json::Value> =
            serde_json::from_slice(&record.value).unwrap();
        assert_eq!(envelope.source, EVENT_SOURCE);
        let DeviceEvent::StatusChanged(change) = DeviceEvent::from_envelope(&envelope).unwrap() else {
            panic!("a status change")
        };
        assert_eq!(envelope.id, change.event_id());
        assert_eq!(
            (change.online, change.reason, change.at),
            (false, smartmeter_core::device_events::StatusReason::LastWill, received_at())
        );
        // The same message received again at the same instant is the same event.
        let again =
            route(topic, b"offline", received_at(), &ValidationConfig::default()).record(&Topics::default());
        assert_eq!(again, record);
    }

    #[test]
    fn a_bad_status_message_goes_to_the_dlq_with_its_code() {
        let topic = "smartmeter/meter-001/status";
        for (payload, code) in [
            (&b"sleeping"[..], RejectCode::InvalidStatus),
            (br#"{"status":"online","device_id":"meter-002"}"#, RejectCode::DeviceMismatch),
        ] {
            let record =
                route(topic, payload, received_at(), &ValidationConfig::default()).record(&Topics::default());
            assert_eq!(
                (record.topic.as_str(), record.key.as_str()),
                ("smartmeter.telemetry.dlq.v1", "meter-001")
            );
            let letter: DeadLetter = serde_json::from_slice(&record.value).unwrap();
            assert_eq!(letter.error_code, code);
            assert_eq!(letter.payload().unwrap(), payload);
        }
    }

    fn message(pkid: u16) -> Received {
        let mut publish = Publish::new(TOPIC, QoS::AtLeastOnce, SEED);
        publish.pkid = pkid;
        Received { publish, received_at: received_at(), epoch: 0 }
    }

    fn metrics() -> Metrics {
        Metrics::register(&prometheus::Registry::new(), &Topics::default()).unwrap()
    }

    async fn drain(mut acks: mpsc::UnboundedReceiver<AckToken>) -> Vec<u16> {
        let mut pkids = Vec::new();
        while let Some(ack) = acks.recv().await {
            pkids.push(ack.pkid);
        }
        pkids
    }

    #[tokio::test(start_paused = true)]
    async fn acks_follow_receive_order_whatever_order_kafka_confirms_in() {
        let (tx, rx) = mpsc::channel(16);
        let (ack_tx, ack_rx) = mpsc::unbounded_channel();
        for pkid in 1..=5 {
            tx.send(message(pkid)).await.unwrap();
        }
        drop(tx);
        // Later messages are confirmed sooner.
        let start = |received: Received| async move {
            let pkid = received.publish.pkid;
            tokio::time::sleep(Duration::from_millis(100 * u64::from(10 - pkid))).await;
            (AckToken::of(&received), Delivery::Confirmed)
        };
        pipeline(rx, ack_tx, 100, CancellationToken::new(), &metrics(), start).await.unwrap();
        assert_eq!(drain(ack_rx).await, [1, 2, 3, 4, 5]);
    }

    #[tokio::test(start_paused = true)]
    async fn messages_not_delivered_are_not_acked() {
        let (tx, rx) = mpsc::channel(16);
        let (ack_tx, ack_rx) = mpsc::unbounded_channel();
        for pkid in 1..=4 {
            tx.send(message(pkid)).await.unwrap();
        }
        drop(tx);
        let start = |received: Received| async move {
            let delivery = if received.publish.pkid == 2 { Delivery::GaveUp } else { Delivery::Confirmed };
            (AckToken::of(&received), delivery)
        };
        pipeline(rx, ack_tx, 100, CancellationToken::new(), &metrics(), start).await.unwrap();
        assert_eq!(drain(ack_rx).await, [1, 3, 4]);
    }

    #[tokio::test(start_paused = true)]
    async fn no_more_than_max_inflight_are_open() {
        let (tx, rx) = mpsc::channel(64);
        let (ack_tx, ack_rx) = mpsc::unbounded_channel();
        for pkid in 1..=20 {
            tx.send(message(pkid)).await.unwrap();
        }
        drop(tx);
        let open = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let start = |received: Received| {
            let open = open.clone();
            let most = most.clone();
            let now = open.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(now, Ordering::SeqCst);
            async move {
                tokio::time::sleep(Duration::from_millis(10)).await;
                open.fetch_sub(1, Ordering::SeqCst);
                (AckToken::of(&received), Delivery::Confirmed)
            }
        };
        pipeline(rx, ack_tx, 3, CancellationToken::new(), &metrics(), start).await.unwrap();
        assert_eq!(most.load(Ordering::SeqCst), 3);
        assert_eq!(drain(ack_rx).await, (1..=20).collect::<Vec<u16>>());
    }

    #[tokio::test(start_paused = true)]
    async fn stop_intake_finishes_what_was_handed_over() {
        let (tx, rx) = mpsc::channel(16);
        let (ack_tx, ack_rx) = mpsc::unbounded_channel();
        for pkid in 1..=3 {
            tx.send(message(pkid)).await.unwrap();
        }
        let stop = CancellationToken::new();
        stop.cancel();
        let start = |received: Received| async move { (AckToken::of(&received), Delivery::Confirmed) };
        // The sender is still alive: the pipeline ends because the intake was stopped.
        pipeline(rx, ack_tx, 100, stop, &metrics(), start).await.unwrap();
        assert!(tx.send(message(4)).await.is_err());
        assert_eq!(drain(ack_rx).await, [1, 2, 3]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_fatal_producer_error_stops_the_pipeline() {
        let (tx, rx) = mpsc::channel(16);
        let (ack_tx, ack_rx) = mpsc::unbounded_channel();
        tx.send(message(1)).await.unwrap();
        tx.send(message(2)).await.unwrap();
        let start = |received: Received| async move {
            let delivery = if received.publish.pkid == 2 {
                Delivery::Fatal("fenced".into())
            } else {
                Delivery::Confirmed
            };
            (AckToken::of(&received), delivery)
        };
        let result = pipeline(rx, ack_tx, 100, CancellationToken::new(), &metrics(), start).await;
        assert!(result.unwrap_err().to_string().contains("fenced"));
        assert_eq!(drain(ack_rx).await, [1]);
        drop(tx);
    }
}
