//! Kafka consumer-group members whose offsets live in PostgreSQL (table
//! `consumer_offsets`), written in the same transaction as the data they produced.
//!
//! On every partition assignment the consumer is positioned at the offsets stored in
//! the database, never at Kafka's committed offsets, so a crash at any moment resumes
//! exactly after the last committed batch. [`store_offsets`] moves an offset only from
//! the value this member read, so a member that lost its partitions in a rebalance
//! cannot commit over the new owner (it is fenced and must [`OffsetsFromDb::resync`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use deadpool_postgres::{Pool, Transaction};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaResult;
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::runtime::Handle;
use tokio_postgres::GenericClient;

#[derive(Debug, thiserror::Error)]
pub enum OffsetError {
    #[error(transparent)]
    Db(#[from] tokio_postgres::Error),
    #[error("offsets of partition {partition} were moved by another consumer (expected {expected:?})")]
    Fenced { partition: i32, expected: Option<i64> },
}

/// Stored offset state of the partitions this member owns: `None` = never committed.
pub type Positions = HashMap<i32, Option<i64>>;

/// [`Positions`] of a member subscribed to several topics, by (topic, partition).
pub type TopicPositions = HashMap<(String, i32), Option<i64>>;

/// Offset moves of a batch by (topic, partition): (stored offset it read from, next
/// offset to store). See [`store_topic_offsets`].
pub type TopicMoves = HashMap<(String, i32), (Option<i64>, i64)>;

pub struct OffsetsFromDb {
    pool: Pool,
    group: String,
    /// Subscribed topics; the single-topic API ([`Self::positions`], [`Self::advance`])
    /// speaks of the first.
    topics: Vec<String>,
    runtime: Handle,
    positions: Mutex<TopicPositions>,
    /// Bumped on every assignment change; the batch loop drops state from before it.
    generation: AtomicU64,
    /// From librdkafka's statistics, when the client is configured to emit them
    /// (`statistics.interval.ms`): see [`Self::group_state`].
    membership: Mutex<Option<GroupState>>,
}

/// The consumer group membership as librdkafka's statistics report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupState {
    /// librdkafka's join state: `steady` once a member has its assignment.
    pub join_state: String,
    /// When `join_state` last changed (as seen in the statistics).
    pub since: Instant,
    /// Whether some broker connection was up in the last statistics.
    pub brokers_up: bool,
}

impl OffsetsFromDb {
    pub fn new(pool: Pool, group: &str, topic: &str, runtime: Handle) -> Self {
        Self::for_topics(pool, group, &[topic], runtime)
    }

    /// A member of `group` subscribed to all of `topics` (one consumer group, offsets of
    /// every topic in the same table).
    pub fn for_topics(pool: Pool, group: &str, topics: &[&str], runtime: Handle) -> Self {
        assert!(!topics.is_empty(), "a consumer reads at least one topic");
        Self {
            pool,
            group: group.to_owned(),
            topics: topics.iter().map(|topic| (*topic).to_owned()).collect(),
            runtime,
            positions: Mutex::new(HashMap::new()),
            generation: AtomicU64::new(0),
            membership: Mutex::new(None),
        }
    }

    pub fn group(&self) -> &str {
        &self.group
    }

    pub fn topics(&self) -> &[String] {
        &self.topics
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Positions of the first topic's partitions.
    pub fn positions(&self) -> Positions {
        let first = &self.topics[0];
        self.positions
            .lock()
            .expect("positions lock")
            .iter()
            .filter(|((topic, _), _)| topic == first)
            .map(|((_, partition), offset)| (*partition, *offset))
            .collect()
    }

    pub fn topic_positions(&self) -> TopicPositions {
        self.positions.lock().expect("positions lock").clone()
    }

    /// Records committed moves of the first topic's partitions.
    pub fn advance(&self, moves: &HashMap<i32, (Option<i64>, i64)>) {
        let topic = &self.topics[0];
        let mut positions = self.positions.lock().expect("positions lock");
        for (partition, (_, next)) in moves {
            if let Some(position) = positions.get_mut(&(topic.clone(), *partition)) {
                *position = Some(*next);
            }
        }
    }

    pub fn advance_topics(&self, moves: &TopicMoves) {
        let mut positions = self.positions.lock().expect("positions lock");
        for (key, (_, next)) in moves {
            if let Some(position) = positions.get_mut(key) {
                *position = Some(*next);
            }
        }
    }

    /// Reads the stored offsets, retrying with back-off while the database is away:
    /// consuming from anywhere else could count twice.
    fn stored_offsets(&self, topic: &str, partitions: &[i32]) -> HashMap<i32, i64> {
        let mut delay = Duration::from_millis(200);
        loop {
            let attempt = tokio::task::block_in_place(|| {
                self.runtime.block_on(async {
                    let client = self.pool.get().await.map_err(|e| e.to_string())?;
                    load_offsets(&**client, &self.group, topic, partitions).await.map_err(|e| e.to_string())
                })
            });
            match attempt {
                Ok(offsets) => return offsets,
                Err(error) => {
                    tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "Cannot read stored offsets; retrying.");
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    /// Positions the consumer at the stored offsets of the partitions it owns (after a
    /// fenced commit, when another member may have moved them).
    pub fn resync(&self, consumer: &impl Consumer<Self>) -> KafkaResult<()> {
        let owned: Vec<(String, i32)> = self.topic_positions().into_keys().collect();
        for topic in &self.topics {
            let partitions: Vec<i32> =
                owned.iter().filter(|(owned, _)| owned == topic).map(|(_, partition)| *partition).collect();
            if partitions.is_empty() {
                continue;
            }
            let stored = self.stored_offsets(topic, &partitions);
            let mut positions = self.positions.lock().expect("positions lock");
            for partition in partitions {
                let offset = stored.get(&partition).copied();
                positions.insert((topic.clone(), partition), offset);
                consumer.seek(
                    topic,
                    partition,
                    offset.map_or(Offset::Beginning, Offset::Offset),
                    Duration::from_secs(10),
                )?;
            }
        }
        self.generation.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

impl OffsetsFromDb {
    /// The group membership from the newest statistics; `None` until the first (and
    /// always when the client emits none).
    pub fn group_state(&self) -> Option<GroupState> {
        self.membership.lock().expect("membership lock").clone()
    }
}

impl ClientContext for OffsetsFromDb {
    fn stats(&self, statistics: Statistics) {
        let Some(cgrp) = statistics.cgrp else { return };
        let brokers_up = statistics.brokers.values().any(|b| b.nodeid >= 0 && b.state == "UP");
        let mut membership = self.membership.lock().expect("membership lock");
        match membership.as_mut() {
            Some(state) if state.join_state == cgrp.join_state => state.brokers_up = brokers_up,
            _ => {
                *membership =
                    Some(GroupState { join_state: cgrp.join_state, since: Instant::now(), brokers_up })
            }
        }
    }
}

impl ConsumerContext for OffsetsFromDb {
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let mut assigned = HashMap::new();
                for topic in &self.topics {
                    let partitions: Vec<i32> =
                        tpl.elements_for_topic(topic).iter().map(|e| e.partition()).collect();
                    if partitions.is_empty() {
                        continue;
                    }
                    let stored = self.stored_offsets(topic, &partitions);
                    for partition in partitions {
                        let offset = stored.get(&partition).copied();
                        assigned.insert((topic.clone(), partition), offset);
                        let position = offset.map_or(Offset::Beginning, Offset::Offset);
                        if let Err(error) = tpl.set_partition_offset(topic, partition, position) {
                            tracing::error!(%error, topic, partition, "Cannot set the partition's start offset.");
                        }
                    }
                }
                tracing::info!(positions = ?assigned, "Partitions assigned; resuming at stored offsets.");
                *self.positions.lock().expect("positions lock") = assigned;
                if let Err(error) = consumer.assign(tpl) {
                    tracing::error!(%error, "Assigning partitions failed.");
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                tracing::info!("Partitions revoked.");
                self.positions.lock().expect("positions lock").clear();
                if let Err(error) = consumer.unassign() {
                    tracing::error!(%error, "Unassigning partitions failed.");
                }
            }
            other => tracing::error!(error = ?other, "Rebalance failed."),
        }
        self.generation.fetch_add(1, Ordering::SeqCst);
    }
}

/// Stored next offsets of the partitions asked for; a partition never committed is absent.
pub async fn load_offsets(
    client: &impl GenericClient,
    group: &str,
    topic: &str,
    partitions: &[i32],
) -> Result<HashMap<i32, i64>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT partition, next_offset FROM consumer_offsets
             WHERE consumer_group = $1 AND topic = $2 AND partition = ANY($3)",
            &[&group, &topic, &partitions],
        )
        .await?;
    Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
}

/// Moves the stored offset of each partition from `expected` to `next`, refusing when
/// another consumer moved it first (a fenced, stale owner after a rebalance).
pub async fn store_offsets(
    tx: &Transaction<'_>,
    group: &str,
    topic: &str,
    moves: &HashMap<i32, (Option<i64>, i64)>,
) -> Result<(), OffsetError> {
    for (&partition, &(expected, next)) in moves {
        let changed = match expected {
            Some(expected) => {
                tx.execute(
                    "UPDATE consumer_offsets SET next_offset = $5, updated_at = now()
                     WHERE consumer_group = $1 AND topic = $2 AND partition = $3 AND next_offset = $4",
                    &[&group, &topic, &partition, &expected, &next],
                )
                .await?
            }
            None => {
                tx.execute(
                    "INSERT INTO consumer_offsets (consumer_group, topic, partition, next_offset)
                     VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                    &[&group, &topic, &partition, &next],
                )
                .await?
            }
        };
        if changed != 1 {
            return Err(OffsetError::Fenced { partition, expected });
        }
    }
    Ok(())
}

/// [`store_offsets`] for the moves of a batch read from several topics.
pub async fn store_topic_offsets(
    tx: &Transaction<'_>,
    group: &str,
    moves: &TopicMoves,
) -> Result<(), OffsetError> {
    let mut by_topic: HashMap<&str, HashMap<i32, (Option<i64>, i64)>> = HashMap::new();
    for ((topic, partition), moved) in moves {
        by_topic.entry(topic.as_str()).or_default().insert(*partition, *moved);
    }
    for (topic, moves) in by_topic {
        store_offsets(tx, group, topic, &moves).await?;
    }
    Ok(())
}
