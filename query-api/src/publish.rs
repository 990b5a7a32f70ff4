//! Commands become events: the mutations publish device and tariff events to Kafka
//! with an idempotent producer (`acks=all`); the processor and the billing worker
//! project them. The API writes none of their tables.
//!
//! A publish either is confirmed by Kafka within the timeout or fails for good (the
//! producer's `message.timeout.ms` is that timeout), so an `UNAVAILABLE` error means the
//! event was not published and the command can be sent again.

use std::time::Duration;

use jiff::Timestamp;
use prometheus::{IntCounterVec, Opts, Registry};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use serde::Serialize;
use smartmeter_core::billing::events::{
    TariffAssigned, TariffVersionPublished, TARIFF_ASSIGNED, TARIFF_VERSION_PUBLISHED,
};
use smartmeter_core::device_events::DeviceEvent;
use smartmeter_core::event::Envelope;
use smartmeter_core::service::kafka;

/// The envelope `source` of every event the API publishes.
pub const SOURCE: &str = "/query-api";

/// Where commands go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventTopics {
    pub device_events: String,
    pub tariff_events: String,
}

/// What was published: enough for a client to find the event again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub event_id: String,
    pub event_type: String,
    pub topic: String,
    pub key: String,
    pub partition: i32,
    pub offset: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(
        "Kafka did not confirm the {event_type} event within {timeout:?} ({reason}); it was not published"
    )]
    NotConfirmed { event_type: String, timeout: Duration, reason: String },
}

#[derive(Clone)]
pub struct Publisher {
    producer: FutureProducer,
    topics: EventTopics,
    timeout: Duration,
    published: IntCounterVec,
}

impl Publisher {
    pub fn new(
        brokers: &str,
        topics: EventTopics,
        timeout: Duration,
        registry: &Registry,
    ) -> anyhow::Result<Self> {
        let mut config = kafka::idempotent_producer(brokers, "query-api");
        config.set("message.timeout.ms", timeout.as_millis().max(1).to_string()).set("linger.ms", "0");
        let published = IntCounterVec::new(
            Opts::new(
                "smartmeter_query_api_events_published_total",
                "Events the API's mutations published, by topic kind and outcome (ok, failed).",
            ),
            &["topic", "outcome"],
        )?;
        registry.register(Box::new(published.clone()))?;
        Ok(Self { producer: config.create()?, topics, timeout, published })
    }

    pub fn topics(&self) -> &EventTopics {
        &self.topics
    }

    /// A device event under a fresh random id (a command is a new fact), key = device id.
    pub async fn device_event(&self, event: &DeviceEvent) -> Result<Receipt, PublishError> {
        let id = random_event_id();
        let envelope = event.to_envelope(id, SOURCE, Timestamp::now());
        let topic = self.topics.device_events.clone();
        self.send("device_events", &topic, event.device_id().as_str(), &envelope).await
    }

    /// A tariff version under its deterministic id, key = tariff id.
    pub async fn tariff_version(&self, published: &TariffVersionPublished) -> Result<Receipt, PublishError> {
        let envelope = Envelope::new(
            published.event_id(),
            SOURCE,
            TARIFF_VERSION_PUBLISHED,
            Timestamp::now(),
            &published.document.tariff_id,
            published,
        );
        let topic = self.topics.tariff_events.clone();
        self.send("tariff_events", &topic, &published.document.tariff_id, &envelope).await
    }

    /// A tariff assignment under its deterministic id, key = tariff id (the topic's key).
    pub async fn tariff_assigned(&self, assigned: &TariffAssigned) -> Result<Receipt, PublishError> {
        let envelope = Envelope::new(
            assigned.event_id(),
            SOURCE,
            TARIFF_ASSIGNED,
            Timestamp::now(),
            assigned.device_id.as_str(),
            assigned,
        );
        let topic = self.topics.tariff_events.clone();
        self.send("tariff_events", &topic, &assigned.tariff_id, &envelope).await
    }

    async fn send<T: Serialize>(
        &self,
        kind: &str,
        topic: &str,
        key: &str,
        envelope: &Envelope<T>,
    ) -> Result<Receipt, PublishError> {
        let payload = serde_json::to_vec(envelope).expect("events serialize");
        let record = FutureRecord::to(topic).key(key).payload(&payload);
        // The producer's own timeout bounds delivery; this one only guards a stuck queue.
        let result = self.producer.send(record, Timeout::After(self.timeout)).await;
        match result {
            Ok(delivery) => {
                self.published.with_label_values(&[kind, "ok"]).inc();
                tracing::info!(
                    topic,
                    key,
                    event_type = %envelope.event_type,
                    event_id = %envelope.id,
                    partition = delivery.partition,
                    offset = delivery.offset,
                    "Published."
                );
                Ok(Receipt {
                    event_id: envelope.id.clone(),
                    event_type: envelope.event_type.clone(),
                    topic: topic.to_owned(),
                    key: key.to_owned(),
                    partition: delivery.partition,
                    offset: delivery.offset,
                })
            }
            Err((error, _)) => {
                self.published.with_label_values(&[kind, "failed"]).inc();
                tracing::warn!(topic, key, event_type = %envelope.event_type, %error, "Publish failed.");
                Err(PublishError::NotConfirmed {
                    event_type: envelope.event_type.clone(),
                    timeout: self.timeout,
                    reason: error.to_string(),
                })
            }
        }
    }
}

/// A random (version 4) UUID.
pub fn random_event_id() -> String {
    let mut bytes = [0_u8; 16];
    getrandom::fill(&mut bytes).expect("the OS random source");
    uuid::Builder::from_random_bytes(bytes).into_uuid().to_string()
}
