//! Live data for subscriptions, from the pipeline's own events: one Kafka consumer per
//! instance reads `telemetry`, `device-events` and `invoices` from their ends (assigned
//! partitions at the latest offset, no consumer group, nothing committed) and fans each
//! event out over a `tokio::sync::broadcast` channel. Subscriptions filter what they
//! receive; none of them polls the database.
//!
//! A subscriber that falls more than [`CHANNEL_CAPACITY`] events behind skips the
//! oldest (counted in `smartmeter_query_api_live_lagged_total`) instead of slowing the
//! others down. Records that do not decode are counted and skipped: they reached the
//! topic past the bridge's or the producers' validation, and the consumers that own
//! the topic keep them (DLQ, reject tables).

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use prometheus::{IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message as _;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use smartmeter_core::billing::events::InvoiceEvent;
use smartmeter_core::device_events::{DeviceEvent, DeviceStatusChanged};
use smartmeter_core::event::Envelope;
use smartmeter_core::service::health::Health;
use smartmeter_core::telemetry::Reading;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// Events kept per channel for subscribers that are behind.
pub const CHANNEL_CAPACITY: usize = 4_096;
/// The health component of the live consumer.
pub const KAFKA: &str = "kafka";
/// How often the live consumer's lag is measured.
const LAG_INTERVAL: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveTopics {
    pub telemetry: String,
    pub device_events: String,
    pub invoices: String,
}

/// Which feed a subscription reads; the label of the subscription metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feed {
    Readings,
    DeviceStatus,
    Invoices,
    BillProjection,
}

impl Feed {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Readings => "live_readings",
            Self::DeviceStatus => "device_status",
            Self::Invoices => "invoices",
            Self::BillProjection => "bill_projection",
        }
    }
}

#[derive(Clone)]
pub struct LiveMetrics {
    consumed: IntCounterVec,
    undecodable: IntCounterVec,
    lagged: IntCounterVec,
    consumer_up: IntGauge,
    assigned_partitions: IntGauge,
    lag: IntGauge,
    open: IntGaugeVec,
    refused: IntCounterVec,
}

impl LiveMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let consumed = IntCounterVec::new(
            Opts::new(
                "smartmeter_query_api_live_messages_total",
                "Records the live consumer read, by topic kind (telemetry, device_events, invoices).",
            ),
            &["topic"],
        )?;
        let undecodable = IntCounterVec::new(
            Opts::new(
                "smartmeter_query_api_live_undecodable_total",
                "Records the live consumer skipped because they did not decode, by topic kind.",
            ),
            &["topic"],
        )?;
        let lagged = IntCounterVec::new(
            Opts::new(
                "smartmeter_query_api_live_lagged_total",
                "Events subscribers skipped because they fell too far behind, by subscription.",
            ),
            &["subscription"],
        )?;
        let consumer_up = IntGauge::with_opts(Opts::new(
            "smartmeter_query_api_live_consumer_up",
            "1 while the live consumer has its partitions assigned and Kafka answers, else 0.",
        ))?;
        let assigned_partitions = IntGauge::with_opts(Opts::new(
            "smartmeter_query_api_live_assigned_partitions",
            "Partitions the live consumer reads.",
        ))?;
        let lag = IntGauge::with_opts(Opts::new(
            "smartmeter_query_api_live_consumer_lag_records",
            "Records on the live consumer's partitions not read yet (last known high watermarks).",
        ))?;
        let open = IntGaugeVec::new(
            Opts::new("smartmeter_graphql_subscriptions_open", "Subscriptions open now, by subscription."),
            &["subscription"],
        )?;
        let refused = IntCounterVec::new(
            Opts::new(
                "smartmeter_graphql_subscriptions_refused_total",
                "Subscriptions refused because the instance holds its maximum, by subscription.",
            ),
            &["subscription"],
        )?;
        for metric in [&consumed, &undecodable] {
            registry.register(Box::new(metric.clone()))?;
        }
        registry.register(Box::new(lagged.clone()))?;
        registry.register(Box::new(consumer_up.clone()))?;
        registry.register(Box::new(assigned_partitions.clone()))?;
        registry.register(Box::new(lag.clone()))?;
        registry.register(Box::new(open.clone()))?;
        registry.register(Box::new(refused.clone()))?;
        Ok(Self { consumed, undecodable, lagged, consumer_up, assigned_partitions, lag, open, refused })
    }
}

/// The broadcast channels and the subscription count of one instance.
#[derive(Clone)]
pub struct LiveFeeds {
    readings: broadcast::Sender<Arc<Reading>>,
    statuses: broadcast::Sender<Arc<DeviceStatusChanged>>,
    invoices: broadcast::Sender<Arc<InvoiceEvent>>,
    open: Arc<AtomicUsize>,
    max_open: usize,
    metrics: LiveMetrics,
}

/// Holds one open subscription: counted while alive.
pub struct SubscriptionSlot {
    feed: Feed,
    open: Arc<AtomicUsize>,
    metrics: LiveMetrics,
}

impl Drop for SubscriptionSlot {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::SeqCst);
        self.metrics.open.with_label_values(&[self.feed.as_str()]).dec();
    }
}

#[derive(Debug, thiserror::Error)]
#[error("this instance holds its maximum of {0} subscriptions; try again later or another instance")]
pub struct TooManySubscriptions(pub usize);

impl LiveFeeds {
    pub fn new(max_open: usize, metrics: LiveMetrics) -> Self {
        Self {
            readings: broadcast::channel(CHANNEL_CAPACITY).0,
            statuses: broadcast::channel(CHANNEL_CAPACITY).0,
            invoices: broadcast::channel(CHANNEL_CAPACITY).0,
            open: Arc::new(AtomicUsize::new(0)),
            max_open,
            metrics,
        }
    }

    pub fn open_subscriptions(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// A slot for a new subscription, unless the instance is full.
    pub fn slot(&self, feed: Feed) -> Result<SubscriptionSlot, TooManySubscriptions> {
        let previous = self.open.fetch_add(1, Ordering::SeqCst);
        if previous >= self.max_open {
            self.open.fetch_sub(1, Ordering::SeqCst);
            self.metrics.refused.with_label_values(&[feed.as_str()]).inc();
            return Err(TooManySubscriptions(self.max_open));
        }
        self.metrics.open.with_label_values(&[feed.as_str()]).inc();
        Ok(SubscriptionSlot { feed, open: self.open.clone(), metrics: self.metrics.clone() })
    }

    pub fn publish_reading(&self, reading: Reading) {
        let _ = self.readings.send(Arc::new(reading));
    }

    pub fn publish_status(&self, status: DeviceStatusChanged) {
        let _ = self.statuses.send(Arc::new(status));
    }

    pub fn publish_invoice(&self, invoice: InvoiceEvent) {
        let _ = self.invoices.send(Arc::new(invoice));
    }

    pub fn readings(&self, slot: SubscriptionSlot, devices: DeviceSet) -> impl Stream<Item = Arc<Reading>> {
        filtered(self.readings.subscribe(), slot, self.metrics.clone(), move |r: &Reading| {
            devices.contains(r.device_id.as_str())
        })
    }

    /// Receives readings from now on; for callers that read the database after
    /// subscribing and must not miss what arrives in between.
    pub fn reading_receiver(&self) -> broadcast::Receiver<Arc<Reading>> {
        self.readings.subscribe()
    }

    pub fn statuses(
        &self,
        slot: SubscriptionSlot,
        devices: DeviceSet,
    ) -> impl Stream<Item = Arc<DeviceStatusChanged>> {
        filtered(self.statuses.subscribe(), slot, self.metrics.clone(), move |s: &DeviceStatusChanged| {
            devices.contains(s.device_id.as_str())
        })
    }

    pub fn invoices(
        &self,
        slot: SubscriptionSlot,
        devices: DeviceSet,
    ) -> impl Stream<Item = Arc<InvoiceEvent>> {
        filtered(self.invoices.subscribe(), slot, self.metrics.clone(), move |i: &InvoiceEvent| {
            devices.contains(i.device_id.as_str())
        })
    }

    /// Counts events a subscriber skipped.
    pub fn lagged(&self, feed: Feed, skipped: u64) {
        self.metrics.lagged.with_label_values(&[feed.as_str()]).inc_by(skipped);
    }
}

/// The devices a subscription follows.
#[derive(Debug, Clone)]
pub enum DeviceSet {
    All,
    Only(Arc<HashSet<String>>),
}

impl DeviceSet {
    pub fn one(device_id: &str) -> Self {
        Self::Only(Arc::new(HashSet::from([device_id.to_owned()])))
    }

    pub fn contains(&self, device_id: &str) -> bool {
        match self {
            Self::All => true,
            Self::Only(ids) => ids.contains(device_id),
        }
    }
}

fn filtered<T: Send + Sync + 'static>(
    receiver: broadcast::Receiver<Arc<T>>,
    slot: SubscriptionSlot,
    metrics: LiveMetrics,
    keep: impl Fn(&T) -> bool + Send + Sync + 'static,
) -> impl Stream<Item = Arc<T>> {
    futures::stream::unfold(
        (receiver, slot, metrics, keep),
        |(mut receiver, slot, metrics, keep)| async move {
            loop {
                match receiver.recv().await {
                    Ok(item) if keep(&item) => return Some((item, (receiver, slot, metrics, keep))),
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(skipped)) => {
                        metrics.lagged.with_label_values(&[slot.feed.as_str()]).inc_by(skipped);
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        },
    )
}

/// Reads the three topics from their ends into `feeds` until `shutdown`; keeps trying
/// while Kafka is away (the `kafka` health component and
/// `smartmeter_query_api_live_consumer_up` say so).
pub async fn consume(
    brokers: String,
    topics: LiveTopics,
    feeds: LiveFeeds,
    health: Health,
    shutdown: CancellationToken,
) {
    let mut delay = Duration::from_millis(250);
    loop {
        match run_consumer(&brokers, &topics, &feeds, &health, &shutdown).await {
            Ok(()) => return,
            Err(error) => {
                feeds.metrics.consumer_up.set(0);
                health.down(KAFKA, "live consumer not connected");
                tracing::warn!(error = format!("{error:#}"), retry_in = ?delay, "Live consumer failed.");
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}

async fn run_consumer(
    brokers: &str,
    topics: &LiveTopics,
    feeds: &LiveFeeds,
    health: &Health,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let mut suffix = [0_u8; 6];
    getrandom::fill(&mut suffix)?;
    let group: String = suffix.iter().map(|b| format!("{b:02x}")).collect();
    // A group id is required by the client, but the consumer never joins a group
    // (it assigns partitions itself) and never commits.
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("query-api-live-{group}"))
        .set("client.id", "query-api-live")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "latest")
        .set("reconnect.backoff.ms", "100")
        .set("reconnect.backoff.max.ms", "10000")
        .create()?;
    let consumer = Arc::new(consumer);
    let names = [topics.telemetry.clone(), topics.device_events.clone(), topics.invoices.clone()];
    let assignment = tokio::task::spawn_blocking({
        let consumer = consumer.clone();
        move || -> anyhow::Result<TopicPartitionList> {
            let mut list = TopicPartitionList::new();
            for name in &names {
                let metadata = consumer.fetch_metadata(Some(name), Duration::from_secs(10))?;
                let topic = metadata
                    .topics()
                    .iter()
                    .find(|t| t.name() == name)
                    .ok_or_else(|| anyhow::anyhow!("topic {name} not in the metadata"))?;
                if let Some(error) = topic.error() {
                    anyhow::bail!("topic {name}: {error:?}");
                }
                anyhow::ensure!(!topic.partitions().is_empty(), "topic {name} has no partitions");
                // The end as a concrete offset, not `Offset::End` (resolved only at the
                // first fetch): everything produced after this point is read.
                for partition in topic.partitions() {
                    let (_, high) =
                        consumer.fetch_watermarks(name, partition.id(), Duration::from_secs(10))?;
                    list.add_partition_offset(name, partition.id(), Offset::Offset(high))?;
                }
            }
            Ok(list)
        }
    })
    .await??;
    consumer.assign(&assignment)?;
    let partitions = assignment.count();
    feeds.metrics.assigned_partitions.set(i64::try_from(partitions).unwrap_or(i64::MAX));
    feeds.metrics.consumer_up.set(1);
    health.up(KAFKA);
    tracing::info!(partitions, telemetry = %topics.telemetry, device_events = %topics.device_events,
        invoices = %topics.invoices, "Live consumer reading from the latest offsets.");

    let mut lag_tick = tokio::time::interval(LAG_INTERVAL);
    loop {
        let message = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            _ = lag_tick.tick() => {
                let (consumer, gauge) = (consumer.clone(), feeds.metrics.lag.clone());
                tokio::task::spawn_blocking(move || {
                    if let Some(lag) = lag(&consumer) {
                        gauge.set(lag);
                    }
                });
                continue;
            }
            message = consumer.recv() => message,
        };
        let message = match message {
            Ok(message) => message,
            Err(error) => {
                // The client reconnects by itself; say so while it does.
                feeds.metrics.consumer_up.set(0);
                health.down(KAFKA, "live consumer cannot read");
                tracing::warn!(%error, "Live consumer read failed.");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        feeds.metrics.consumer_up.set(1);
        health.up(KAFKA);
        let payload = message.payload().unwrap_or_default();
        let topic = message.topic();
        let kind = if topic == topics.telemetry {
            "telemetry"
        } else if topic == topics.device_events {
            "device_events"
        } else {
            "invoices"
        };
        feeds.metrics.consumed.with_label_values(&[kind]).inc();
        let decoded = match kind {
            "telemetry" => {
                serde_json::from_slice::<Reading>(payload).map(|reading| feeds.publish_reading(reading))
            }
            "device_events" => {
                serde_json::from_slice::<Envelope<serde_json::Value>>(payload).map(|envelope| {
                    // Registry events change no live view; status changes do.
                    if let Ok(DeviceEvent::StatusChanged(change)) = DeviceEvent::from_envelope(&envelope) {
                        feeds.publish_status(change);
                    }
                })
            }
            _ => serde_json::from_slice::<Envelope<InvoiceEvent>>(payload)
                .map(|envelope| feeds.publish_invoice(envelope.data)),
        };
        if let Err(error) = decoded {
            feeds.metrics.undecodable.with_label_values(&[kind]).inc();
            tracing::debug!(topic, partition = message.partition(), offset = message.offset(), %error,
                "Live record skipped: not decodable.");
        }
    }
}

/// High watermark minus position over the assigned partitions (a watermark request per
/// partition); `None` when Kafka does not answer.
fn lag(consumer: &StreamConsumer) -> Option<i64> {
    let positions = consumer.position().ok()?;
    let mut lag = 0;
    for element in positions.elements() {
        let Offset::Offset(position) = element.offset() else { continue };
        let (_, high) =
            consumer.fetch_watermarks(element.topic(), element.partition(), Duration::from_secs(2)).ok()?;
        lag += (high - position).max(0);
    }
    Some(lag)
}
