//! The stream processor: `smartmeter.telemetry.v1` → readings, energy per local hour
//! and day, device state, exactly once.
//!
//! - [`rollup`]: what a batch changes for a device (counter arithmetic from core).
//! - [`periods`]: billing periods: open, close (PeriodClosed), adjust (PeriodAdjusted).
//! - [`store`]: the SQL; one transaction per batch, offsets included.
//! - [`metrics`]: what an operator watches.
//!
//! Flow per batch: receive up to `max_batch` records (or until `linger`), parse, group
//! by device, plan each device, write everything plus the new offsets in one
//! transaction, commit, then update the in-memory tails.

pub mod metrics;
pub mod periods;
pub mod rollup;
pub mod store;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use deadpool_postgres::Pool;
use jiff::tz::TimeZone;
use jiff::SignedDuration;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use smartmeter_core::energy::{self, CounterReading, Rules};
use smartmeter_core::service::health::Health;
use smartmeter_core::{topics, Reading};
use tokio_util::sync::CancellationToken;

use crate::rollup::{Arrived, Window};
use smartmeter_core::service::offsets::{self, OffsetError, OffsetsFromDb};

#[derive(Debug, Clone)]
pub struct Config {
    pub brokers: String,
    pub database_url: String,
    pub group_id: String,
    pub topic: String,
    /// Zone of devices the registry does not know yet.
    pub default_time_zone: String,
    pub allowed_lateness: SignedDuration,
    pub max_batch: usize,
    pub linger: Duration,
    pub rules: Rules,
    /// A period closes when event time passes its end plus this; a meter silent for
    /// this long gets its due periods closed by wall-clock time.
    pub period_grace: SignedDuration,
    /// How often the wall-clock close and the outbox run.
    pub housekeeping_interval: Duration,
}

impl Config {
    pub fn local_defaults() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            database_url: "postgres://smartmeter:smartmeter@127.0.0.1:55432/smartmeter".into(),
            group_id: "smartmeter-processor".into(),
            topic: topics::TELEMETRY.name.into(),
            default_time_zone: "UTC".into(),
            allowed_lateness: SignedDuration::from_hours(24 * 7),
            max_batch: 5000,
            linger: Duration::from_millis(50),
            rules: Rules::default(),
            period_grace: SignedDuration::from_hours(24),
            housekeeping_interval: Duration::from_secs(5),
        }
    }
}

/// One record taken off Kafka.
struct Record {
    partition: i32,
    offset: i64,
    payload: Vec<u8>,
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
    let pool = smartmeter_core::service::db::pool(&config.database_url, 4, "processor")?;
    wait_for_migrations(&pool, &health, &shutdown).await?;

    let context =
        OffsetsFromDb::new(pool.clone(), &config.group_id, &config.topic, tokio::runtime::Handle::current());
    let consumer: StreamConsumer<OffsetsFromDb> =
        smartmeter_core::service::kafka::db_offset_consumer(&config.brokers, &config.group_id)
            .create_with_context(context)
            .context("create Kafka consumer")?;
    consumer.subscribe(&[&config.topic]).context("subscribe")?;
    health.up("kafka");

    let producer: rdkafka::producer::FutureProducer =
        smartmeter_core::service::kafka::idempotent_producer(&config.brokers, "smartmeter-processor-outbox")
            .create()
            .context("create Kafka producer")?;
    let published = smartmeter_core::service::outbox::published_counter(registry)?;
    let outbox_task = tokio::spawn(smartmeter_core::service::outbox::publish_forever(
        pool.clone(),
        producer,
        config.housekeeping_interval.min(Duration::from_millis(500)),
        published,
        shutdown.clone(),
    ));
    let silent_task = tokio::spawn(close_silent_periods(
        pool.clone(),
        config.period_grace,
        config.housekeeping_interval,
        metrics.periods.clone(),
        shutdown.clone(),
    ));

    let mut processor =
        Processor { config, pool, metrics, health, tails: HashMap::new(), zones: HashMap::new() };
    let mut seen_generation = consumer.context().generation();
    while let Some(records) = receive_batch(&consumer, &processor, &shutdown).await {
        if consumer.context().generation() != seen_generation {
            seen_generation = consumer.context().generation();
            processor.tails.clear();
        }
        let positions = consumer.context().positions();
        let records = admit(records, &positions, &processor.metrics);
        if records.is_empty() {
            continue;
        }
        let mut delay = Duration::from_millis(100);
        loop {
            match processor.process(&records, &positions).await {
                Ok(moves) => {
                    consumer.context().advance(&moves);
                    commit_to_kafka(&consumer, &processor.config.topic, &moves);
                    processor.health.up("postgres");
                    break;
                }
                Err(ProcessError::Offsets(OffsetError::Fenced { partition, expected })) => {
                    tracing::warn!(partition, ?expected, "Offsets moved by another member; re-reading them.");
                    processor.tails.clear();
                    consumer.context().resync(&consumer).context("seek to stored offsets")?;
                    seen_generation = consumer.context().generation();
                    break;
                }
                Err(error) => {
                    processor.tails.clear();
                    processor.health.down("postgres", error.to_string());
                    processor.metrics.batch_failures.inc();
                    tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "Batch failed; retrying.");
                    tokio::select! {
                        _ = shutdown.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
            }
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), outbox_task).await;
    let _ = silent_task.await;
    tracing::info!("Processor stopped.");
    Ok(())
}

/// Closes the due periods of silent meters on the wall clock, every `interval`.
async fn close_silent_periods(
    pool: Pool,
    grace: SignedDuration,
    interval: Duration,
    periods: prometheus::IntCounterVec,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let attempt = async {
            let mut client = pool.get().await?;
            let tx = client.transaction().await?;
            let closed = periods::close_silent(&tx, grace, jiff::Timestamp::now(), 1000).await?;
            tx.commit().await?;
            anyhow::Ok(closed)
        };
        match attempt.await {
            Ok(0) => {}
            Ok(closed) => {
                periods.with_label_values(&["closed"]).inc_by(closed);
                tracing::info!(closed, "Closed periods of silent meters.");
            }
            Err(error) => tracing::warn!(error = format!("{error:#}"), "Closing silent periods failed."),
        }
    }
}

async fn wait_for_migrations(
    pool: &Pool,
    health: &Health,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let mut delay = Duration::from_millis(200);
    loop {
        match smartmeter_core::service::db::migrate(pool).await {
            Ok(version) => {
                health.up("postgres");
                tracing::info!(version, "Schema ready.");
                return Ok(());
            }
            Err(error) => {
                health.down("postgres", error.to_string());
                tracing::warn!(error = format!("{error:#}"), "Database not ready; retrying.");
                tokio::select! {
                    _ = shutdown.cancelled() => anyhow::bail!("shut down before the database was ready"),
                    _ = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Waits for the first record, then takes more until `max_batch` or `linger` elapses.
/// `None` when shutting down.
async fn receive_batch(
    consumer: &StreamConsumer<OffsetsFromDb>,
    processor: &Processor,
    shutdown: &CancellationToken,
) -> Option<Vec<Record>> {
    let mut records = Vec::new();
    let mut deadline: Option<tokio::time::Instant> = None;
    let mut error_delay = Duration::from_millis(100);
    while records.len() < processor.config.max_batch {
        let linger = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.cancelled(), if records.is_empty() => return None,
            _ = linger => break,
            message = consumer.recv() => match message {
                Ok(message) => {
                    error_delay = Duration::from_millis(100);
                    processor.health.up("kafka");
                    records.push(Record {
                        partition: message.partition(),
                        offset: message.offset(),
                        payload: message.payload().unwrap_or_default().to_vec(),
                    });
                    deadline.get_or_insert_with(|| tokio::time::Instant::now() + processor.config.linger);
                }
                Err(error) => {
                    processor.health.down("kafka", error.to_string());
                    tracing::warn!(%error, "Kafka receive failed; retrying.");
                    tokio::time::sleep(error_delay).await;
                    error_delay = (error_delay * 2).min(Duration::from_secs(10));
                }
            }
        }
    }
    Some(records)
}

/// Keeps records of partitions this member owns, at or after their stored offset.
/// Anything else is a leftover from before a rebalance or seek.
fn admit(records: Vec<Record>, positions: &offsets::Positions, metrics: &metrics::Metrics) -> Vec<Record> {
    records
        .into_iter()
        .filter(|record| {
            let keep = match positions.get(&record.partition) {
                Some(Some(next)) => record.offset >= *next,
                Some(None) => true,
                None => false,
            };
            if !keep {
                metrics.records_skipped.inc();
            }
            keep
        })
        .collect()
}

fn commit_to_kafka(
    consumer: &StreamConsumer<OffsetsFromDb>,
    topic: &str,
    moves: &HashMap<i32, (Option<i64>, i64)>,
) {
    // Informational only (lag tools read it); the database holds the truth.
    let mut list = TopicPartitionList::new();
    for (partition, (_, next)) in moves {
        let _ = list.add_partition_offset(topic, *partition, Offset::Offset(*next));
    }
    if let Err(error) = consumer.commit(&list, CommitMode::Async) {
        tracing::debug!(%error, "Informational Kafka offset commit failed.");
    }
}

#[derive(Debug, thiserror::Error)]
enum ProcessError {
    #[error(transparent)]
    Offsets(#[from] OffsetError),
    #[error(transparent)]
    Db(#[from] tokio_postgres::Error),
    #[error("database pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
}

struct Processor {
    config: Config,
    pool: Pool,
    metrics: metrics::Metrics,
    health: Health,
    /// Per device: the readings from the last baseline to the newest, as committed.
    tails: HashMap<String, Window>,
    zones: HashMap<String, TimeZone>,
}

impl Processor {
    /// Processes one batch in one transaction; returns the offset moves it committed.
    async fn process(
        &mut self,
        records: &[Record],
        positions: &offsets::Positions,
    ) -> Result<HashMap<i32, (Option<i64>, i64)>, ProcessError> {
        let started = Instant::now();
        let mut moves: HashMap<i32, (Option<i64>, i64)> = HashMap::new();
        let mut by_device: Vec<(String, Vec<Arrived>)> = Vec::new();
        let mut device_index: HashMap<String, usize> = HashMap::new();
        let mut rejects = Vec::new();
        for record in records {
            let expected = positions.get(&record.partition).copied().flatten();
            let entry = moves.entry(record.partition).or_insert((expected, record.offset + 1));
            entry.1 = entry.1.max(record.offset + 1);
            match serde_json::from_slice::<Reading>(&record.payload) {
                Ok(reading) => {
                    let counter = CounterReading {
                        at: reading.timestamp,
                        counter_milli_wh: energy::kwh_to_milli_wh(reading.energy_kwh),
                    };
                    let device = reading.device_id.to_string();
                    let index = *device_index.entry(device.clone()).or_insert_with(|| {
                        by_device.push((device, Vec::new()));
                        by_device.len() - 1
                    });
                    by_device[index].1.push(Arrived {
                        reading,
                        counter,
                        partition: record.partition,
                        offset: record.offset,
                    });
                }
                Err(error) => rejects.push((record, error.to_string())),
            }
        }

        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        for (record, reason) in &rejects {
            tracing::error!(partition = record.partition, offset = record.offset, %reason, "Unreadable telemetry record kept aside.");
            tx.execute(
                "INSERT INTO telemetry_rejects (kafka_partition, kafka_offset, payload, reason)
                 VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                &[&record.partition, &record.offset, &record.payload, reason],
            )
            .await?;
        }
        let device_ids: Vec<&str> = by_device.iter().map(|(id, _)| id.as_str()).collect();
        let devices = store::load_devices(&tx, &device_ids, &self.config.default_time_zone).await?;

        let mut new_tails = Vec::with_capacity(by_device.len());
        let mut totals = metrics::BatchTotals::default();
        for (device_id, arrived) in by_device {
            let row = &devices[&device_id];
            let tz = self.zone(&row.time_zone);
            let (accepted, too_late, newest) =
                rollup::split_too_late(arrived, row.newest_reading_at, self.config.allowed_lateness);
            let window = match accepted.iter().map(|(a, _)| a.counter.at).min() {
                None => Window::default(),
                Some(earliest) => match self.tails.get(&device_id) {
                    Some(tail) if tail.readings.last().is_some_and(|last| last.at < earliest) => tail.clone(),
                    _ => store::load_window(&tx, &device_id, earliest).await?,
                },
            };
            let had_accepted = !accepted.is_empty();
            let plan = rollup::plan(window, accepted, too_late, newest, &tz, &self.config.rules);
            store::apply(&tx, &device_id, &plan).await?;
            let stored_at: Vec<jiff::Timestamp> =
                plan.inserts.iter().chain(&plan.replacements).map(|(a, _)| a.counter.at).collect();
            // A month opens with a reading inside it or energy on one of its days; a
            // meter's first reading at 00:00 on the 1st opens no empty month before it.
            let opened: std::collections::BTreeSet<jiff::civil::Date> = stored_at
                .iter()
                .map(|at| at.to_zoned(tz.clone()).date())
                .chain(plan.daily.keys().copied())
                .collect();
            periods::open(&tx, &device_id, &row.time_zone, &tz, &opened).await?;
            // A reading exactly at local midnight is also the closing read of the day
            // (and maybe the month) before it, which it can change.
            let mut touched = opened;
            touched.extend(
                stored_at
                    .iter()
                    .map(|at| (*at - jiff::SignedDuration::from_nanos(1)).to_zoned(tz.clone()).date()),
            );
            let (closed, adjusted) = periods::close_and_adjust(
                &tx,
                &device_id,
                plan.newest_reading_at,
                self.config.period_grace,
                &touched,
            )
            .await?;
            totals.periods_closed += closed;
            totals.periods_adjusted += adjusted;
            totals.add(&plan);
            if had_accepted {
                new_tails.push((device_id, plan.tail));
            }
        }
        offsets::store_offsets(&tx, &self.config.group_id, &self.config.topic, &moves).await?;
        tx.commit().await?;

        for (device_id, tail) in new_tails {
            self.tails.insert(device_id, tail);
        }
        totals.rejected = rejects.len() as u64;
        self.metrics.observe_batch(records.len(), &totals, started.elapsed());
        Ok(moves)
    }

    fn zone(&mut self, name: &str) -> TimeZone {
        if let Some(tz) = self.zones.get(name) {
            return tz.clone();
        }
        let tz = TimeZone::get(name).unwrap_or_else(|error| {
            tracing::error!(zone = name, %error, "Unknown device time zone; using the default.");
            TimeZone::get(&self.config.default_time_zone).expect("checked at start")
        });
        self.zones.insert(name.to_owned(), tz.clone());
        tz
    }
}
