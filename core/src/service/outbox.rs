//! The transactional outbox: events are inserted into table `outbox` in the same
//! transaction as the state they describe ([`enqueue`]), and a publisher task
//! ([`publish_forever`]) sends them to Kafka in order and marks them published.
//!
//! Publishing is at least once (a crash between the Kafka ack and the mark sends an
//! event again); event ids are deterministic, so consumers deduplicate by id.

use std::time::Duration;

use deadpool_postgres::{Pool, Transaction};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::event::Envelope;

/// Adds an event to the outbox; a second insert of the same event id is a no-op.
pub async fn enqueue<T: Serialize>(
    tx: &Transaction<'_>,
    topic: &str,
    key: &str,
    event: &Envelope<T>,
) -> Result<(), tokio_postgres::Error> {
    let payload = serde_json::to_value(event).expect("events serialize to JSON");
    tx.execute(
        "INSERT INTO outbox (event_id, topic, event_key, payload) VALUES ($1, $2, $3, $4)
         ON CONFLICT (event_id) DO NOTHING",
        &[&event.id, &topic, &key, &payload],
    )
    .await?;
    Ok(())
}

/// Adds many events in one statement, in the order given (the order they are
/// published in); like [`enqueue`], an event id already in the outbox is skipped.
/// Each item is (topic, key, event).
pub async fn enqueue_many<T: Serialize>(
    tx: &Transaction<'_>,
    events: &[(&str, &str, &Envelope<T>)],
) -> Result<u64, tokio_postgres::Error> {
    if events.is_empty() {
        return Ok(0);
    }
    let mut ids = Vec::with_capacity(events.len());
    let mut topics = Vec::with_capacity(events.len());
    let mut keys = Vec::with_capacity(events.len());
    let mut payloads = Vec::with_capacity(events.len());
    for (topic, key, event) in events {
        ids.push(event.id.as_str());
        topics.push(*topic);
        keys.push(*key);
        payloads.push(serde_json::to_value(event).expect("events serialize to JSON"));
    }
    tx.execute(
        "INSERT INTO outbox (event_id, topic, event_key, payload)
         SELECT event_id, topic, event_key, payload
         FROM unnest($1::text[], $2::text[], $3::text[], $4::jsonb[])
              WITH ORDINALITY AS e(event_id, topic, event_key, payload, ord)
         ORDER BY ord
         ON CONFLICT (event_id) DO NOTHING",
        &[&ids, &topics, &keys, &payloads],
    )
    .await
}

/// Publishes unpublished outbox rows, oldest first, until `shutdown`. Polls every
/// `interval` when idle; a failure is logged and retried with back-off.
pub async fn publish_forever(
    pool: Pool,
    producer: FutureProducer,
    interval: Duration,
    published: prometheus::IntCounterVec,
    shutdown: CancellationToken,
) {
    let mut delay = interval;
    loop {
        match publish_pending(&pool, &producer, &published).await {
            Ok(0) => delay = interval,
            Ok(_) => continue,
            Err(error) => {
                tracing::warn!(%error, "Outbox publish failed; retrying.");
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

const BATCH: i64 = 500;

/// Transaction-level advisory lock held while a batch is published: several services
/// share the outbox table (the processor's period events, the billing worker's
/// invoices), and one publisher at a time keeps every row published once and in `seq`
/// order (per-key order on Kafka).
const PUBLISH_LOCK_KEY: i64 = 0x736d_6f75_7462;

/// Publishes one batch; returns how many rows it published (0 also when another
/// publisher holds the lock).
pub async fn publish_pending(
    pool: &Pool,
    producer: &FutureProducer,
    published: &prometheus::IntCounterVec,
) -> anyhow::Result<usize> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let locked: bool =
        tx.query_one("SELECT pg_try_advisory_xact_lock($1)", &[&PUBLISH_LOCK_KEY]).await?.get(0);
    if !locked {
        return Ok(0);
    }
    let rows = tx
        .query(
            "SELECT seq, topic, event_key, payload::text FROM outbox
             WHERE published_at IS NULL ORDER BY seq LIMIT $1",
            &[&BATCH],
        )
        .await?;
    if rows.is_empty() {
        return Ok(0);
    }
    let deliveries: Vec<_> = rows
        .iter()
        .map(|row| {
            let topic: &str = row.get(1);
            let key: &str = row.get(2);
            let payload: &str = row.get(3);
            producer
                .send_result(FutureRecord::to(topic).key(key).payload(payload))
                .map_err(|(error, _)| error)
        })
        .collect();
    let mut sent = Vec::with_capacity(rows.len());
    for (row, delivery) in rows.iter().zip(deliveries) {
        let delivery = delivery?;
        match delivery.await {
            Ok(Ok(_)) => {
                sent.push(row.get::<_, i64>(0));
                published.with_label_values(&[row.get::<_, &str>(1)]).inc();
            }
            Ok(Err((error, _))) => anyhow::bail!("Kafka refused an outbox event: {error}"),
            Err(_) => anyhow::bail!("Kafka producer dropped an outbox event"),
        }
    }
    tx.execute("UPDATE outbox SET published_at = now() WHERE seq = ANY($1)", &[&sent]).await?;
    tx.commit().await?;
    Ok(sent.len())
}

/// The counter [`publish_forever`] increments, labelled by topic.
pub fn published_counter(registry: &prometheus::Registry) -> prometheus::Result<prometheus::IntCounterVec> {
    let counter = prometheus::IntCounterVec::new(
        prometheus::Opts::new(
            "smartmeter_outbox_events_published_total",
            "Events published from the outbox.",
        ),
        &["topic"],
    )?;
    registry.register(Box::new(counter.clone()))?;
    Ok(counter)
}
