//! The batch loop of a consumer-group member whose offsets live in PostgreSQL
//! ([`OffsetsFromDb`]), for one topic or several.
//!
//! Receive up to `max_batch` records (or what arrived within `linger` of the first),
//! drop leftovers of partitions this member no longer owns, hand the batch to a
//! [`BatchHandler`] that writes its effect AND [`Batch::store_offsets`] in ONE
//! transaction, then record the new positions. A failed batch is retried with back-off
//! after [`BatchHandler::reset`]; a fenced one (another member moved the offsets)
//! re-reads the stored offsets and seeks there. This is the processor's loop with the
//! domain taken out.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use deadpool_postgres::Transaction;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use super::health::Health;
use super::offsets::{self, OffsetError, OffsetsFromDb, TopicMoves, TopicPositions};

/// One record taken off Kafka.
#[derive(Debug, Clone)]
pub struct Record {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// Kafka's timestamp (milliseconds since the epoch), when the record has one.
    pub timestamp_ms: Option<i64>,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
}

/// Records of partitions this member owns, at or after their stored offsets, and the
/// offset moves that committing them makes.
#[derive(Debug)]
pub struct Batch {
    pub records: Vec<Record>,
    moves: TopicMoves,
}

impl Batch {
    fn new(records: Vec<Record>, positions: &TopicPositions) -> Self {
        let mut moves = TopicMoves::new();
        for record in &records {
            let key = (record.topic.clone(), record.partition);
            let expected = positions.get(&key).copied().flatten();
            let entry = moves.entry(key).or_insert((expected, record.offset + 1));
            entry.1 = entry.1.max(record.offset + 1);
        }
        Self { records, moves }
    }

    pub fn moves(&self) -> &TopicMoves {
        &self.moves
    }

    /// Stores the batch's offsets; call it inside the transaction that writes the
    /// batch's effect.
    pub async fn store_offsets(&self, tx: &Transaction<'_>, group: &str) -> Result<(), OffsetError> {
        offsets::store_topic_offsets(tx, group, &self.moves).await
    }
}

/// Why a batch was not committed.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// Another member moved the offsets: this one lost the partitions.
    #[error(transparent)]
    Offsets(#[from] OffsetError),
    /// Anything else (the database went away, a statement failed): retried.
    #[error("{0}")]
    Failed(Box<dyn std::error::Error + Send + Sync>),
}

impl BatchError {
    pub fn failed(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Failed(error.into())
    }
}

impl From<tokio_postgres::Error> for BatchError {
    fn from(error: tokio_postgres::Error) -> Self {
        Self::Offsets(OffsetError::Db(error))
    }
}

/// What a consumer does with its batches.
pub trait BatchHandler {
    /// Writes the effect of `batch` and [`Batch::store_offsets`] in one transaction.
    fn handle(&mut self, batch: &Batch) -> impl Future<Output = Result<(), BatchError>> + Send;

    /// Called when a batch failed or the assignment changed: forget in-memory state
    /// that may describe what was not committed.
    fn reset(&mut self) {}
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub max_batch: usize,
    /// How long to wait for more records after the first of a batch.
    pub linger: Duration,
}

/// Counters the loop increments, when given.
#[derive(Debug, Clone, Default)]
pub struct LoopMetrics {
    /// Records dropped because they precede the stored offset or belong to a partition
    /// this member no longer owns.
    pub records_skipped: Option<prometheus::IntCounter>,
    pub batch_failures: Option<prometheus::IntCounter>,
}

/// Runs batches until `shutdown`; the batch in hand is finished (or abandoned
/// uncommitted while retrying) first.
pub async fn run<H: BatchHandler>(
    consumer: &StreamConsumer<OffsetsFromDb>,
    settings: &Settings,
    handler: &mut H,
    health: &Health,
    metrics: &LoopMetrics,
    shutdown: &CancellationToken,
) -> Result<(), rdkafka::error::KafkaError> {
    let mut seen_generation = consumer.context().generation();
    while let Some(records) = receive_batch(consumer, settings, health, shutdown).await {
        if consumer.context().generation() != seen_generation {
            seen_generation = consumer.context().generation();
            handler.reset();
        }
        let positions = consumer.context().topic_positions();
        let records = admit(records, &positions, metrics);
        if records.is_empty() {
            continue;
        }
        let batch = Batch::new(records, &positions);
        let mut delay = Duration::from_millis(100);
        loop {
            match handler.handle(&batch).await {
                Ok(()) => {
                    consumer.context().advance_topics(batch.moves());
                    commit_to_kafka(consumer, batch.moves());
                    health.up("postgres");
                    break;
                }
                Err(BatchError::Offsets(OffsetError::Fenced { partition, expected })) => {
                    tracing::warn!(partition, ?expected, "Offsets moved by another member; re-reading them.");
                    handler.reset();
                    consumer.context().resync(consumer)?;
                    seen_generation = consumer.context().generation();
                    break;
                }
                Err(error) => {
                    handler.reset();
                    health.down("postgres", error.to_string());
                    if let Some(failures) = &metrics.batch_failures {
                        failures.inc();
                    }
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
    Ok(())
}

const RECEIVE_ERROR_PAUSE: Duration = Duration::from_millis(50);
/// How often an idle consumer reports its connection state from the statistics
/// (emitted every `statistics.interval.ms`, see `kafka::db_offset_consumer`).
const HEALTH_FROM_STATISTICS_EVERY: Duration = Duration::from_secs(1);

/// Waits for the first record, then takes more until `max_batch` or `linger` elapses.
/// `None` when shutting down.
async fn receive_batch(
    consumer: &StreamConsumer<OffsetsFromDb>,
    settings: &Settings,
    health: &Health,
    shutdown: &CancellationToken,
) -> Option<Vec<Record>> {
    let mut records = Vec::new();
    let mut deadline: Option<tokio::time::Instant> = None;
    let mut errors_in_a_row = 0u64;
    while records.len() < settings.max_batch {
        let linger = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.cancelled(), if records.is_empty() => return None,
            _ = linger => break,
            // An idle consumer receives nothing, errors included: its connection state
            // comes from librdkafka's statistics then, so `/health` is true before the
            // first record (a fresh system's topics are empty).
            _ = tokio::time::sleep(HEALTH_FROM_STATISTICS_EVERY) => {
                match consumer.context().group_state() {
                    Some(group) if group.brokers_up => health.up("kafka"),
                    Some(_) => health.down("kafka", "no broker connection is up"),
                    None => {}
                }
            }
            message = consumer.recv() => match message {
                Ok(message) => {
                    errors_in_a_row = 0;
                    health.up("kafka");
                    records.push(Record {
                        topic: message.topic().to_owned(),
                        partition: message.partition(),
                        offset: message.offset(),
                        timestamp_ms: message.timestamp().to_millis(),
                        key: message.key().map(<[u8]>::to_vec),
                        payload: message.payload().unwrap_or_default().to_vec(),
                    });
                    deadline.get_or_insert_with(|| tokio::time::Instant::now() + settings.linger);
                }
                Err(error) => {
                    health.down("kafka", error.to_string());
                    if errors_in_a_row == 0 {
                        tracing::warn!(%error, "Kafka receive failed; retrying (more at debug level until a record arrives).");
                    } else {
                        tracing::debug!(%error, errors_in_a_row, "Kafka receive failed again.");
                    }
                    errors_in_a_row += 1;
                    // librdkafka reconnects by itself, with its own back-off, and queues an
                    // error event per failed attempt: sleeping long here would only delay
                    // reading past the stale ones once the broker is back. The short pause
                    // bounds a loop on errors.
                    tokio::time::sleep(RECEIVE_ERROR_PAUSE).await;
                }
            }
        }
    }
    Some(records)
}

/// Keeps records of partitions this member owns, at or after their stored offset.
/// Anything else is a leftover from before a rebalance or seek.
fn admit(records: Vec<Record>, positions: &TopicPositions, metrics: &LoopMetrics) -> Vec<Record> {
    let mut lookup: HashMap<(&str, i32), Option<i64>> = HashMap::with_capacity(positions.len());
    for ((topic, partition), offset) in positions {
        lookup.insert((topic.as_str(), *partition), *offset);
    }
    let before = records.len();
    let kept: Vec<Record> = records
        .into_iter()
        .filter(|record| match lookup.get(&(record.topic.as_str(), record.partition)) {
            Some(Some(next)) => record.offset >= *next,
            Some(None) => true,
            None => false,
        })
        .collect();
    if let Some(skipped) = &metrics.records_skipped {
        skipped.inc_by((before - kept.len()) as u64);
    }
    kept
}

fn commit_to_kafka(consumer: &StreamConsumer<OffsetsFromDb>, moves: &TopicMoves) {
    // Informational only (lag tools read it); the database holds the truth.
    let mut list = TopicPartitionList::new();
    for ((topic, partition), (_, next)) in moves {
        let _ = list.add_partition_offset(topic, *partition, Offset::Offset(*next));
    }
    if let Err(error) = consumer.commit(&list, CommitMode::Async) {
        tracing::debug!(%error, "Informational Kafka offset commit failed.");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(topic: &str, partition: i32, offset: i64) -> Record {
        Record { topic: topic.into(), partition, offset, timestamp_ms: None, key: None, payload: Vec::new() }
    }

    #[test]
    fn admitted_records_move_each_topic_partition_from_its_stored_offset() {
        let positions: TopicPositions =
            [(("a".to_owned(), 0), Some(10)), (("b".to_owned(), 0), None)].into_iter().collect();
        let records = vec![
            record("a", 0, 9),
            record("a", 0, 10),
            record("a", 0, 12),
            record("b", 0, 0),
            record("c", 0, 5),
        ];
        let kept = admit(records, &positions, &LoopMetrics::default());
        assert_eq!(
            kept.iter().map(|r| (r.topic.as_str(), r.offset)).collect::<Vec<_>>(),
            [("a", 10), ("a", 12), ("b", 0)]
        );
        let batch = Batch::new(kept, &positions);
        assert_eq!(batch.moves()[&("a".to_owned(), 0)], (Some(10), 13));
        assert_eq!(batch.moves()[&("b".to_owned(), 0)], (None, 1));
    }
}
