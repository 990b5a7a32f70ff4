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
use smartmeter_core::service::consumer::{self, LoopMetrics, Settings};
use smartmeter_core::service::health::Health;
use smartmeter_core::service::offsets::OffsetsFromDb;
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

    let consumed = config.consumed_topics();
    let context = OffsetsFromDb::for_topics(
        pool.clone(),
        &config.group_id,
        &consumed,
        tokio::runtime::Handle::current(),
    );
    let mut client_config =
        smartmeter_core::service::kafka::db_offset_consumer(&config.brokers, &config.group_id);
    if let Some(instance) = &config.group_instance_id {
        client_config.set("group.instance.id", instance);
    }
    let consumer: Arc<StreamConsumer<OffsetsFromDb>> =
        Arc::new(client_config.create_with_context(context).context("create Kafka consumer")?);
    consumer.subscribe(&consumed).context("subscribe")?;
    health.up("kafka");

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
        consumer.clone(),
        config.clone(),
        metrics.clone(),
        stop.clone(),
    ));

    let settings = Settings { max_batch: config.max_batch, linger: config.linger };
    let loop_metrics = LoopMetrics {
        records_skipped: Some(metrics.records_skipped.clone()),
        batch_failures: Some(metrics.batch_failures.clone()),
    };
    let mut ingest = consume::Ingest::new(config, pool, metrics);
    let result = consumer::run(&consumer, &settings, &mut ingest, &health, &loop_metrics, &shutdown).await;
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), outbox_task).await;
    let _ = housekeeping_task.await;
    result.context("seek to stored offsets")?;
    tracing::info!("Processor stopped.");
    Ok(())
}
