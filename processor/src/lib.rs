//! The stream processor: `smartmeter.telemetry.v1` and `smartmeter.device-events.v1`
//! → readings, energy per local hour and day, billing periods, the device registry and
//! device state, exactly once.
//!
//! - [`consume`]: one batch, one transaction (device events, then telemetry, then the
//!   offsets of both topics).
//! - [`rollup`]: what a batch changes for a device (counter arithmetic from core).
//! - [`segment`]: where a device's batch is cut so that billing periods come out as
//!   if its records were read one at a time (batching must not change what is billed).
//! - [`store`]: the SQL of readings, rollups and device rows.
//! - [`periods`]: billing periods: open, close (PeriodClosed), adjust (PeriodAdjusted),
//!   re-derive after a time-zone change or a decommissioning.
//! - [`registry`]: DeviceRegistered / Updated / Decommissioned → `devices`; re-bucketing.
//! - [`status`]: online/offline, newest wins; the changes telemetry and silence imply.
//! - [`housekeeping`]: what the wall clock decides (silent meters), only for caught-up
//!   partitions.
//! - [`metrics`]: what an operator watches.
//!
//! Flow per batch: receive up to `max_batch` records (or until `linger`), apply them,
//! write everything plus the new offsets in one transaction, commit, then update the
//! in-memory tails. Events the processor emits (periods, status changes) go through the
//! outbox in that transaction, with deterministic ids. On every partition assignment
//! the consumer seeks to the offsets stored in the database (core's `OffsetsFromDb`),
//! so a `kill -9` at any moment followed by a restart leaves the database as an
//! uninterrupted run would.

pub mod consume;
pub mod housekeeping;
pub mod metrics;
pub mod periods;
pub mod registry;
pub mod rollup;
pub mod segment;
pub mod status;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use jiff::tz::TimeZone;
use jiff::SignedDuration;
use rdkafka::consumer::{Consumer, StreamConsumer};
use smartmeter_core::energy::Rules;
use smartmeter_core::service::consumer::{self, BatchHandler as _, LoopMetrics, Settings};
use smartmeter_core::service::health::Health;
use smartmeter_core::service::offsets::{GroupState, OffsetsFromDb};
use smartmeter_core::topics;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct Config {
    pub brokers: String,
    pub database_url: String,
    pub group_id: String,
    /// Static group membership (`group.instance.id`): a restarted member with the same
    /// id gets its partitions back at once instead of after the session timeout.
    pub group_instance_id: Option<String>,
    /// The telemetry topic.
    pub topic: String,
    /// The device-events topic: registry events and status changes are read from it and
    /// the processor's own status changes published to it. `None`: neither (device
    /// state is still kept in the database).
    pub device_events_topic: Option<String>,
    /// Where PeriodClosed / PeriodAdjusted go.
    pub billing_periods_topic: String,
    /// Zone of devices the registry does not know yet.
    pub default_time_zone: String,
    pub allowed_lateness: SignedDuration,
    pub max_batch: usize,
    pub linger: Duration,
    pub rules: Rules,
    /// A period closes when event time passes its end plus this; a meter silent for
    /// this long gets its due periods closed by wall-clock time.
    pub period_grace: SignedDuration,
    /// A meter from which nothing arrived for this long goes offline.
    pub inactivity_timeout: SignedDuration,
    /// How often the wall-clock work and the outbox run.
    pub housekeeping_interval: Duration,
}

impl Config {
    /// Defaults for a processor on the local stack. The device-events topic is off here
    /// (tests and tools that use these opt in); the `processor` binary turns it on.
    pub fn local_defaults() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            database_url: "postgres://smartmeter:smartmeter@127.0.0.1:55432/smartmeter".into(),
            group_id: "smartmeter-processor".into(),
            group_instance_id: None,
            topic: topics::TELEMETRY.name.into(),
            device_events_topic: None,
            billing_periods_topic: topics::BILLING_PERIODS.name.into(),
            default_time_zone: "UTC".into(),
            allowed_lateness: SignedDuration::from_hours(24 * 7),
            max_batch: 5000,
            linger: Duration::from_millis(50),
            rules: Rules::default(),
            period_grace: SignedDuration::from_hours(24),
            inactivity_timeout: SignedDuration::from_mins(5),
            housekeeping_interval: Duration::from_secs(5),
        }
    }

    /// The topics consumed: telemetry, and device events when configured.
    pub fn consumed_topics(&self) -> Vec<&str> {
        let mut topics = vec![self.topic.as_str()];
        topics.extend(self.device_events_topic.as_deref());
        topics
    }
}

/// What the service's `/health` reports on.
pub const HEALTH_COMPONENTS: &[&str] = &["kafka", "postgres"];

/// [`run`] with a metrics registry and health of its own: how tests and tools embed the
/// processor in their process.
pub async fn run_embedded(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let registry = prometheus::Registry::new();
    run(config, &registry, Health::new("processor", HEALTH_COMPONENTS), shutdown).await
}

pub async fn run(
    config: Config,
    registry: &prometheus::Registry,
    health: Health,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let metrics = metrics::Metrics::register(registry)?;
    TimeZone::get(&config.default_time_zone)
        .with_context(|| format!("default time zone {:?}", config.default_time_zone))?;
    anyhow::ensure!(config.inactivity_timeout.is_positive(), "the inactivity timeout must be positive");
    let pool = smartmeter_core::service::db::pool(&config.database_url, 4, "processor")?;
    smartmeter_core::service::db::migrate_when_ready(&pool, &health, &shutdown).await?;

    let consumer = create_consumer(&config, &pool)?;
    let (current_consumer, consumer_watch) = tokio::sync::watch::channel(consumer.clone());

    let producer: rdkafka::producer::FutureProducer =
        smartmeter_core::service::kafka::idempotent_producer(&config.brokers, "smartmeter-processor-outbox")
            .create()
            .context("create Kafka producer")?;
    let published = smartmeter_core::service::outbox::published_counter(registry)?;
    // Stops the side tasks when the batch loop ends, whyever it ends.
    let stop = shutdown.child_token();
    let outbox_task = tokio::spawn(smartmeter_core::service::outbox::publish_forever(
        pool.clone(),
        producer,
        config.housekeeping_interval.min(Duration::from_millis(500)),
        published,
        stop.clone(),
    ));
    let housekeeping_task = tokio::spawn(housekeeping::run(
        pool.clone(),
        consumer_watch,
        config.clone(),
        metrics.clone(),
        stop.clone(),
    ));

    let settings = Settings { max_batch: config.max_batch, linger: config.linger };
    let loop_metrics = LoopMetrics {
        records_skipped: Some(metrics.records_skipped.clone()),
        batch_failures: Some(metrics.batch_failures.clone()),
    };
    let consumer_restarts = metrics.consumer_restarts.clone();
    let mut ingest = consume::Ingest::new(config.clone(), pool.clone(), metrics);
    let mut consumer = consumer;
    let result = loop {
        // The batch loop of this consumer runs until shutdown, or until the watchdog
        // finds its group membership stuck; then a new consumer takes over from the
        // offsets in the database (nothing uncommitted is lost: it is read again).
        let this_consumer = stop.child_token();
        let watchdog = tokio::spawn(watch_membership(consumer.clone(), this_consumer.clone()));
        let result = consumer::run(&consumer, &settings, &mut ingest, &health, &loop_metrics, &this_consumer)
            .await
            .context("seek to stored offsets");
        this_consumer.cancel();
        let stuck = watchdog.await.unwrap_or(false);
        if !stuck || shutdown.is_cancelled() {
            break result;
        }
        consumer_restarts.inc();
        ingest.reset();
        let replacement = match create_consumer(&config, &pool) {
            Ok(replacement) => replacement,
            Err(error) => break Err(error.context("recreate the Kafka consumer")),
        };
        current_consumer.send_replace(replacement.clone());
        let stuck_consumer = std::mem::replace(&mut consumer, replacement);
        // Closing a client whose group membership is stuck can block for good: off
        // the runtime, on a thread of its own.
        std::thread::spawn(move || drop(stuck_consumer));
    };
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), outbox_task).await;
    let _ = housekeeping_task.await;
    result?;
    tracing::info!("Processor stopped.");
    Ok(())
}

/// How long the group membership may stay unsettled while a broker is reachable
/// before the consumer is replaced. librdkafka can stay stuck rejoining its group
/// after the coordinator restarted (seen in `tests/service_restarts.rs`: join state
/// `wait-unassign-to-complete`, requests to the coordinator never sent); a normal
/// rebalance settles in seconds.
const MEMBERSHIP_STUCK_AFTER: Duration = Duration::from_secs(60);

/// Whether `group` has been unsettled too long, at `now`, while a broker was up.
fn membership_stuck(group: &GroupState, now: std::time::Instant) -> bool {
    group.join_state != "steady"
        && group.brokers_up
        && now.duration_since(group.since) >= MEMBERSHIP_STUCK_AFTER
}

/// Records per partition librdkafka fetches ahead of the batch loop, at most.
const PREFETCH_MESSAGES_PER_PARTITION: &str = "10000";
/// Bytes of fetched records librdkafka queues ahead of the batch loop, at most (it may
/// overshoot by one fetch).
const PREFETCH_KBYTES: &str = "16384";

/// A consumer of the configured topics in the group, offsets from the database,
/// statistics every second (the watchdog and `/health` read the group state from them).
fn create_consumer(
    config: &Config,
    pool: &deadpool_postgres::Pool,
) -> anyhow::Result<Arc<StreamConsumer<OffsetsFromDb>>> {
    let consumed = config.consumed_topics();
    let context = OffsetsFromDb::for_topics(
        pool.clone(),
        &config.group_id,
        &consumed,
        tokio::runtime::Handle::current(),
    );
    let mut client_config =
        smartmeter_core::service::kafka::db_offset_consumer(&config.brokers, &config.group_id);
    // Prefetch: librdkafka keeps up to 100,000 messages per partition queued by default
    // (hundreds of MB for a backlog, well past the 64 MB byte cap, which does not count
    // its per-message overhead). A few batches ahead is all the batch loop needs.
    client_config
        .set("queued.min.messages", PREFETCH_MESSAGES_PER_PARTITION)
        .set("queued.max.messages.kbytes", PREFETCH_KBYTES);
    if let Some(instance) = &config.group_instance_id {
        client_config.set("group.instance.id", instance);
    }
    let consumer: StreamConsumer<OffsetsFromDb> =
        client_config.create_with_context(context).context("create Kafka consumer")?;
    consumer.subscribe(&consumed).context("subscribe")?;
    Ok(Arc::new(consumer))
}

/// Cancels `stop` and returns `true` when `consumer`'s group membership has been
/// unsettled for [`MEMBERSHIP_STUCK_AFTER`] while a broker was reachable; returns
/// `false` when `stop` is cancelled otherwise.
async fn watch_membership(consumer: Arc<StreamConsumer<OffsetsFromDb>>, stop: CancellationToken) -> bool {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return false,
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
        let Some(group) = consumer.context().group_state() else { continue };
        if membership_stuck(&group, std::time::Instant::now()) {
            tracing::warn!(
                join_state = %group.join_state,
                for_s = group.since.elapsed().as_secs(),
                "Consumer group membership stuck while Kafka is reachable; replacing the consumer."
            );
            stop.cancel();
            return true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn membership_is_stuck_only_when_unsettled_long_with_kafka_reachable() {
        let since = std::time::Instant::now();
        let later = since + MEMBERSHIP_STUCK_AFTER;
        let group =
            |join_state: &str, brokers_up| GroupState { join_state: join_state.into(), since, brokers_up };
        assert!(membership_stuck(&group("wait-unassign-to-complete", true), later));
        assert!(!membership_stuck(
            &group("wait-unassign-to-complete", true),
            since + Duration::from_secs(59)
        ));
        assert!(
            !membership_stuck(&group("steady", true), later),
            "a settled member, with or without partitions"
        );
        assert!(
            !membership_stuck(&group("init", false), later),
            "Kafka away: a new client would not do better"
        );
    }
}
