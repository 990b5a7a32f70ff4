//! The Kafka side: the idempotent producer (`acks=all`), delivery with retries, and
//! the health probe.
//!
//! The producer's `message.timeout.ms` is 0 (core's setting): librdkafka retries a
//! message for as long as the brokers are away, so a delivery future fails only for
//! errors that retrying inside librdkafka cannot fix (a record too large, a missing
//! topic, no authorisation). Those are retried here with back-off, their MQTT message
//! stays unacknowledged, and each failure is logged and counted.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer as _};
use rdkafka::ClientContext;
use smartmeter_core::service::health::Health;
use smartmeter_core::topics;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::backoff::Backoff;
use crate::metrics::Metrics;

/// Health component name.
pub const HEALTH: &str = "kafka";
const CLIENT_ID: &str = "smartmeter-bridge";

const RETRY_MIN: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(10);
const PROBE_INTERVAL: Duration = Duration::from_secs(10);
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Where readings, dead letters and status changes go: `smartmeter.telemetry.v1`,
/// `smartmeter.telemetry.dlq.v1` and `smartmeter.device-events.v1` unless configured
/// otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    pub telemetry: String,
    pub dlq: String,
    pub device_events: String,
}

impl Default for Topics {
    fn default() -> Self {
        Self {
            telemetry: topics::TELEMETRY.name.to_owned(),
            dlq: topics::TELEMETRY_DLQ.name.to_owned(),
            device_events: topics::DEVICE_EVENTS.name.to_owned(),
        }
    }
}

/// One message for Kafka.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub topic: String,
    pub key: String,
    pub value: Vec<u8>,
}

/// How a delivery ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    Confirmed,
    /// Shutdown's drain timeout passed first; the MQTT message stays unacknowledged.
    GaveUp,
    /// The producer hit a fatal error (idempotence state lost) and cannot go on.
    Fatal(String),
}

/// The bridge's producer.
pub type Producer = FutureProducer<Context>;

pub fn producer(brokers: &str, context: Context) -> anyhow::Result<Producer> {
    smartmeter_core::service::kafka::idempotent_producer(brokers, CLIENT_ID)
        .create_with_context(context)
        .context("create Kafka producer")
}

/// librdkafka reports every failed connection attempt as a client error: many a second
/// while Kafka is away. The first error of a run is a warning, the rest are debug lines
/// until the health probe reaches Kafka again; "all brokers down" marks Kafka down at
/// once, without waiting for the probe.
#[derive(Clone)]
pub struct Context {
    health: Health,
    quiet: Arc<AtomicBool>,
}

impl ClientContext for Context {
    fn error(&self, error: KafkaError, reason: &str) {
        if self.quiet.swap(true, Ordering::SeqCst) {
            debug!(%error, reason, "Kafka client error.");
        } else {
            warn!(%error, reason, "Kafka client error; more are logged at debug level until Kafka is reachable.");
        }
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            self.health.down(HEALTH, reason);
        }
    }
}

impl Context {
    pub fn new(health: Health) -> Self {
        Self { health, quiet: Arc::default() }
    }

    fn reachable(&self) {
        self.quiet.store(false, Ordering::SeqCst);
        self.health.up(HEALTH);
    }
}

/// Hands `record` to the producer now, so records enter the producer (and so each
/// partition) in the order of the calls, and returns the future of its confirmation.
/// Failed deliveries are retried with back-off until confirmed, `give_up` is
/// cancelled, or the producer fails fatally.
pub fn deliver(
    producer: &Producer,
    record: Record,
    metrics: Metrics,
    give_up: CancellationToken,
) -> impl Future<Output = Delivery> + Send + 'static {
    let first_attempt = enqueue(producer, &record);
    let producer = producer.clone();
    async move {
        let mut attempt = first_attempt;
        let mut backoff = Backoff::new(RETRY_MIN, RETRY_MAX);
        loop {
            let result = match attempt {
                Ok(delivery) => tokio::select! {
                    biased;
                    result = delivery => confirmation(result),
                    () = give_up.cancelled() => return Delivery::GaveUp,
                },
                Err(error) => Err(error),
            };
            let error = match result {
                Ok(()) => return Delivery::Confirmed,
                Err(error) => error,
            };
            if let Some((code, reason)) = producer.client().fatal_error() {
                return Delivery::Fatal(format!("{code:?}: {reason}"));
            }
            let delay = backoff.next_delay();
            let retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
            if error == KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull) {
                warn!(retry_in_ms, "Kafka producer queue is full; waiting.");
            } else {
                metrics.delivery_errors.inc();
                error!(%error, topic = %record.topic, retry_in_ms, "Kafka did not take the message; retrying. Its MQTT message stays unacknowledged.");
            }
            tokio::select! {
                biased;
                () = give_up.cancelled() => return Delivery::GaveUp,
                () = tokio::time::sleep(delay) => {}
            }
            attempt = enqueue(&producer, &record);
        }
    }
}

fn enqueue(producer: &Producer, record: &Record) -> Result<DeliveryFuture, KafkaError> {
    producer
        .send_result(FutureRecord::to(&record.topic).key(&record.key).payload(&record.value))
        .map_err(|(error, _)| error)
}

fn confirmation(result: <DeliveryFuture as Future>::Output) -> Result<(), KafkaError> {
    match result {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((error, _message))) => Err(error),
        Err(_) => Err(KafkaError::Canceled),
    }
}

/// Keeps the `kafka` health component current with a metadata request every few
/// seconds: deliveries never fail while brokers are away (they wait), so their
/// results cannot say whether Kafka is reachable. Every topic of `required` must exist.
pub async fn watch_health(
    producer: Producer,
    context: Context,
    required: Vec<String>,
    stop: CancellationToken,
) {
    let mut interval = tokio::time::interval(PROBE_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut was_up: Option<bool> = None;
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = interval.tick() => {}
        }
        let client = producer.clone();
        let names = required.clone();
        let probing = tokio::task::spawn_blocking(move || probe(&client, &names));
        let outcome = tokio::select! {
            // Shutdown does not wait for a metadata request to time out.
            () = stop.cancelled() => break,
            outcome = probing => outcome.unwrap_or_else(|error| Err(format!("health probe failed: {error}"))),
        };
        match outcome {
            Ok(()) => {
                if was_up != Some(true) {
                    info!(topics = ?required, "Kafka is reachable.");
                }
                was_up = Some(true);
                context.reachable();
            }
            Err(detail) => {
                if was_up != Some(false) {
                    warn!(detail = %detail, "Kafka is not usable.");
                }
                was_up = Some(false);
                context.health.down(HEALTH, detail);
            }
        }
    }
}

fn probe(producer: &Producer, names: &[String]) -> Result<(), String> {
    if let Some((code, reason)) = producer.client().fatal_error() {
        return Err(format!("fatal producer error {code:?}: {reason}"));
    }
    // All topics, not ours by name: asking for a missing topic by name can create it
    // with the broker's defaults.
    let metadata = producer
        .client()
        .fetch_metadata(None, PROBE_TIMEOUT)
        .map_err(|error| format!("metadata request failed: {error}"))?;
    for name in names {
        match metadata.topics().iter().find(|topic| topic.name() == name) {
            None => return Err(format!("topic {name} does not exist")),
            Some(topic) => {
                if let Some(error) = topic.error() {
                    return Err(format!("topic {name}: {:?}", RDKafkaErrorCode::from(error)));
                }
            }
        }
    }
    Ok(())
}

/// Waits (blocking a worker thread, not the runtime) for queued records to be sent.
pub async fn flush(producer: Producer, timeout: Duration) {
    let result = tokio::task::spawn_blocking(move || producer.flush(timeout)).await;
    match result {
        Ok(Ok(())) => {}
        Ok(Err(error)) => warn!(%error, "Kafka producer did not flush in time."),
        Err(error) => warn!(%error, "Kafka producer flush failed."),
    }
}
