//! The billing worker: closed billing periods → invoices, exactly once.
//!
//! - [`consume`]: the live consumer over `billing-periods` and `tariff-events` (one
//!   group, offsets in PostgreSQL in the batch's transaction) and the lag watch.
//! - [`tariffs`]: the tariff book; admitting a published version (core validates).
//! - [`price`]: one period priced with the device's tariff (core arithmetic) and the
//!   digest of its inputs.
//! - [`invoice`]: what a pricing means given what was issued: original, revision,
//!   nothing, unbillable.
//! - [`bill`]: price, lock, decide and write a list of period events (shared by
//!   consume and replay).
//! - [`store`]: the SQL.
//! - [`replay`]: re-pricing months of history read again from Kafka, on the command
//!   line or as a job requested through the API (`replay_jobs`, claimed by `run`).
//! - [`pdf`]: an invoice rendered as a PDF.
//! - [`email`]: an invoice mailed with its PDF over SMTP.
//! - [`metrics`]: what an operator watches.
//!
//! Flow: tariff events → `tariff_versions`, `tariff_assignments`; period events →
//! price → invoices + outbox (`smartmeter.invoices.v1`) + `billing_states` + offsets,
//! one transaction per batch; the outbox publisher sends the invoice events.

pub mod bill;
pub mod consume;
pub mod email;
pub mod invoice;
pub mod metrics;
pub mod pdf;
pub mod price;
pub mod replay;
pub mod store;
pub mod tariffs;

use std::time::Duration;

use anyhow::Context as _;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::FutureProducer;
use smartmeter_core::service::consumer::{self as batch_loop, LoopMetrics, Settings};
use smartmeter_core::service::health::Health;
use smartmeter_core::service::offsets::OffsetsFromDb;
use smartmeter_core::service::{db, kafka, outbox};
use smartmeter_core::topics;
use tokio_util::sync::CancellationToken;

/// Automatic mailing of every new invoice to one address.
#[derive(Debug, Clone)]
pub struct MailConfig {
    pub smtp: email::SmtpConfig,
    pub to: String,
    /// Invoices issued longer ago than this are not mailed automatically.
    pub lookback: Duration,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub brokers: String,
    pub database_url: String,
    pub group_id: String,
    pub periods_topic: String,
    pub tariffs_topic: String,
    pub invoices_topic: String,
    pub max_batch: usize,
    pub linger: Duration,
    pub outbox_interval: Duration,
    pub lag_interval: Duration,
    pub mail: Option<MailConfig>,
    /// How often to look for replays requested through the API (`replay_jobs` rows
    /// with status `requested`).
    pub replay_poll_interval: Duration,
    /// Threads that decode and price the live consumer's batches.
    pub pricing_threads: usize,
    /// Period events per transaction and pricing threads of a requested replay.
    pub replay_batch_size: usize,
    pub replay_threads: usize,
}

impl Config {
    pub fn local_defaults() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            database_url: "postgres://smartmeter:smartmeter@127.0.0.1:55432/smartmeter".into(),
            group_id: "smartmeter-billing-worker".into(),
            periods_topic: topics::BILLING_PERIODS.name.into(),
            tariffs_topic: topics::TARIFF_EVENTS.name.into(),
            invoices_topic: topics::INVOICES.name.into(),
            max_batch: 1000,
            linger: Duration::from_millis(50),
            outbox_interval: Duration::from_millis(200),
            lag_interval: Duration::from_secs(15),
            mail: None,
            pricing_threads: std::thread::available_parallelism().map_or(1, |cores| cores.get()),
            replay_poll_interval: Duration::from_secs(2),
            replay_batch_size: 1000,
            replay_threads: std::thread::available_parallelism().map_or(1, |cores| cores.get()),
        }
    }
}

/// Runs the worker until `shutdown`: migrations, the consumer, the outbox publisher,
/// the lag watch, the replays requested through the API and (when configured) the
/// mailer.
/// What the service's `/health` reports on.
pub const HEALTH_COMPONENTS: &[&str] = &["kafka", "postgres"];

/// [`run`] with a metrics registry and health of its own: how tests and tools embed the
/// billing-worker in their process.
pub async fn run_embedded(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let registry = prometheus::Registry::new();
    run(config, &registry, Health::new("billing-worker", HEALTH_COMPONENTS), shutdown).await
}

pub async fn run(
    config: Config,
    registry: &prometheus::Registry,
    health: Health,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let metrics = metrics::Metrics::register(registry)?;
    let pool = db::pool(&config.database_url, 8, "billing-worker")?;
    db::migrate_when_ready(&pool, &health, &shutdown).await?;
    let book = {
        let client = pool.get().await?;
        let (documents, seq) = store::load_tariffs(&**client).await?;
        tariffs::TariffBook::from_documents(documents, seq).context("stored tariffs")?
    };
    tracing::info!(tariffs = book.len(), "Tariffs loaded.");

    let topics = [config.periods_topic.as_str(), config.tariffs_topic.as_str()];
    let context =
        OffsetsFromDb::for_topics(pool.clone(), &config.group_id, &topics, tokio::runtime::Handle::current());
    let consumer: StreamConsumer<OffsetsFromDb> =
        kafka::db_offset_consumer(&config.brokers, &config.group_id)
            .create_with_context(context)
            .context("create Kafka consumer")?;
    consumer.subscribe(&topics).context("subscribe")?;
    let producer: FutureProducer = kafka::idempotent_producer(&config.brokers, "billing-worker")
        .create()
        .context("create Kafka producer")?;

    let mut tasks = Vec::new();
    let published = outbox::published_counter(registry)?;
    tasks.push(tokio::spawn(outbox::publish_forever(
        pool.clone(),
        producer,
        config.outbox_interval,
        published,
        shutdown.clone(),
    )));
    tasks.push(tokio::spawn(consume::watch_lag(
        config.brokers.clone(),
        pool.clone(),
        config.group_id.clone(),
        topics.iter().map(|topic| (*topic).to_owned()).collect(),
        metrics.clone(),
        config.lag_interval,
        shutdown.clone(),
    )));
    tasks.push(tokio::spawn(replay::serve_requests(
        pool.clone(),
        replay::RequestedReplays {
            brokers: config.brokers.clone(),
            topic: config.periods_topic.clone(),
            invoices_topic: config.invoices_topic.clone(),
            batch_size: config.replay_batch_size,
            pricing_threads: config.replay_threads,
            poll_interval: config.replay_poll_interval,
        },
        metrics.clone(),
        shutdown.clone(),
    )));
    if let Some(mail) = config.mail.clone() {
        tracing::info!(to = mail.to, host = mail.smtp.host, "Mailing new invoices.");
        tasks.push(tokio::spawn(email::mail_forever(
            pool.clone(),
            mail.smtp,
            mail.to,
            mail.lookback,
            Duration::from_secs(10),
            metrics.clone(),
            shutdown.clone(),
        )));
    }

    let mut worker = consume::Worker::new(
        pool.clone(),
        &config.group_id,
        &config.invoices_topic,
        book,
        metrics.clone(),
        health.clone(),
        config.pricing_threads,
    );
    let settings = Settings { max_batch: config.max_batch, linger: config.linger };
    let loop_metrics = LoopMetrics {
        records_skipped: Some(metrics.records_skipped.clone()),
        batch_failures: Some(metrics.batch_failures.clone()),
    };
    let result = batch_loop::run(&consumer, &settings, &mut worker, &health, &loop_metrics, &shutdown).await;
    shutdown.cancel();
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
    tracing::info!("Billing worker stopped.");
    result.context("consume")
}
