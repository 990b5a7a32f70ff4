//! The bridge's dead-letter topic (`smartmeter.telemetry.dlq.v1`), browsed newest
//! first: each record is a [`DeadLetter`] with its error code, reason and the payload
//! as received. The topic is the store (it keeps four weeks); nothing is copied into
//! the database. A page is read with a short-lived consumer that assigns partitions at
//! explicit offsets and commits nothing.
//!
//! Paging: a cursor holds, per partition, the offset below which the next page reads.
//! Records of a page are ordered by `received_at` (newest first) across partitions.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use base64::Engine as _;
use jiff::Timestamp;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message as _;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use smartmeter_core::telemetry::DeadLetter;

const READ_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetterRecord {
    pub partition: i32,
    pub offset: i64,
    /// Kafka's timestamp of the record.
    pub kafka_timestamp: Option<Timestamp>,
    pub key: Option<String>,
    /// `None` when the record itself is not a dead letter (it is shown raw).
    pub letter: Option<DeadLetter>,
    /// The record's value, for records that are not dead letters.
    pub raw: Vec<u8>,
}

impl DeadLetterRecord {
    fn received_at(&self) -> Option<Timestamp> {
        self.letter.as_ref().map(|letter| letter.received_at).or(self.kafka_timestamp)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetterPage {
    pub records: Vec<DeadLetterRecord>,
    /// Per partition, where the next (older) page ends; `None` at the oldest record.
    pub next: Option<BTreeMap<i32, i64>>,
    /// Records in the topic now (high minus low watermark, all partitions).
    pub retained: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    #[error("Kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("the dead-letter topic {0} does not exist")]
    NoTopic(String),
    #[error("reading the dead-letter topic did not finish within {0:?}")]
    Timeout(Duration),
    #[error("the reader stopped: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// Cursor text: `partition:offset` pairs joined by commas.
pub fn encode_cursor(next: &BTreeMap<i32, i64>) -> String {
    next.iter().map(|(partition, offset)| format!("{partition}:{offset}")).collect::<Vec<_>>().join(",")
}

pub fn decode_cursor(text: &str) -> Option<BTreeMap<i32, i64>> {
    let base = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text).ok()?;
    let text = String::from_utf8(base).ok()?;
    text.split(',')
        .map(|pair| {
            let (partition, offset) = pair.split_once(':')?;
            Some((partition.parse().ok()?, offset.parse().ok()?))
        })
        .collect()
}

/// The cursor as clients see it (opaque).
pub fn opaque_cursor(next: &BTreeMap<i32, i64>) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(encode_cursor(next))
}

#[derive(Clone)]
pub struct DlqReader {
    brokers: String,
    topic: String,
}

impl DlqReader {
    pub fn new(brokers: &str, topic: &str) -> Self {
        Self { brokers: brokers.to_owned(), topic: topic.to_owned() }
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Up to `first` records older than `before` (the newest when `None`).
    pub async fn page(
        &self,
        first: usize,
        before: Option<BTreeMap<i32, i64>>,
    ) -> Result<DeadLetterPage, DlqError> {
        let (brokers, topic) = (self.brokers.clone(), self.topic.clone());
        tokio::task::spawn_blocking(move || read_page(&brokers, &topic, first, before.as_ref())).await?
    }
}

fn read_page(
    brokers: &str,
    topic: &str,
    first: usize,
    before: Option<&BTreeMap<i32, i64>>,
) -> Result<DeadLetterPage, DlqError> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "query-api-dlq-browser")
        .set("client.id", "query-api-dlq")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .create()?;
    let metadata = consumer.fetch_metadata(Some(topic), READ_TIMEOUT)?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .map(|t| t.partitions().iter().map(|p| p.id()).collect())
        .unwrap_or_default();
    if partitions.is_empty() {
        return Err(DlqError::NoTopic(topic.to_owned()));
    }
    let wanted = i64::try_from(first).unwrap_or(i64::MAX);
    let mut ranges = BTreeMap::new(); // partition → (low, lower, upper)
    let mut retained = 0;
    let mut assignment = TopicPartitionList::new();
    for partition in partitions {
        let (low, high) = consumer.fetch_watermarks(topic, partition, READ_TIMEOUT)?;
        retained += high - low;
        // With a cursor, a partition it does not name is one read to its start.
        let upper = match before {
            Some(before) => before.get(&partition).copied().unwrap_or(low),
            None => high,
        }
        .clamp(low, high);
        let lower = upper.saturating_sub(wanted).max(low);
        ranges.insert(partition, (low, lower, upper));
        if lower < upper {
            assignment.add_partition_offset(topic, partition, Offset::Offset(lower))?;
        }
    }
    let mut records = Vec::new();
    if assignment.count() > 0 {
        consumer.assign(&assignment)?;
        let mut open: BTreeMap<i32, i64> = ranges
            .iter()
            .filter(|(_, (_, lower, upper))| lower < upper)
            .map(|(p, (_, _, upper))| (*p, *upper))
            .collect();
        let deadline = Instant::now() + READ_TIMEOUT;
        while !open.is_empty() {
            if Instant::now() >= deadline {
                return Err(DlqError::Timeout(READ_TIMEOUT));
            }
            let Some(result) = consumer.poll(Duration::from_millis(200)) else { continue };
            let message = match result {
                Ok(message) => message,
                Err(rdkafka::error::KafkaError::PartitionEOF(partition)) => {
                    open.remove(&partition);
                    continue;
                }
                Err(error) => return Err(error.into()),
            };
            let (partition, offset) = (message.partition(), message.offset());
            let Some(upper) = open.get(&partition).copied() else { continue };
            if offset >= upper {
                open.remove(&partition);
                continue;
            }
            if offset + 1 >= upper {
                open.remove(&partition);
            }
            let raw = message.payload().unwrap_or_default().to_vec();
            records.push(DeadLetterRecord {
                partition,
                offset,
                kafka_timestamp: message
                    .timestamp()
                    .to_millis()
                    .and_then(|ms| Timestamp::from_millisecond(ms).ok()),
                key: message.key().map(|key| String::from_utf8_lossy(key).into_owned()),
                letter: serde_json::from_slice(&raw).ok(),
                raw,
            });
        }
    }
    records.sort_by(|a, b| {
        b.received_at()
            .cmp(&a.received_at())
            .then(a.partition.cmp(&b.partition))
            .then(b.offset.cmp(&a.offset))
    });
    records.truncate(first);
    // Next page: below the oldest record taken from each partition; a partition none
    // was taken from keeps its bound. No next page when every partition is read.
    let mut next = BTreeMap::new();
    let mut more = false;
    for (partition, (low, _, upper)) in &ranges {
        let taken = records.iter().filter(|r| r.partition == *partition).map(|r| r.offset).min();
        let bound = taken.unwrap_or(*upper);
        more |= bound > *low;
        next.insert(*partition, bound);
    }
    Ok(DeadLetterPage { records, next: more.then_some(next), retained })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_garbage() {
        let next = BTreeMap::from([(0, 120), (2, 7)]);
        assert_eq!(decode_cursor(&opaque_cursor(&next)), Some(next));
        assert_eq!(decode_cursor("not a cursor"), None);
        assert_eq!(decode_cursor(&base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("0:x")), None);
    }
}
