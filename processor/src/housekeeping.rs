//! What the wall clock decides: billing periods of silent meters close
//! ([`periods::close_silent`]) and meters silent for the inactivity timeout go offline
//! ([`status`]), every `housekeeping_interval`.
//!
//! Silence is judged only for meters whose telemetry partition this member has read
//! to its end: while a backlog is being consumed (after an outage of the processor, or
//! in a replay), a meter whose readings are still in Kafka is not silent. A meter that
//! never sent telemetry (status messages only) is judged once every partition this
//! member owns is caught up.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use jiff::{SignedDuration, Timestamp};
use rdkafka::consumer::{Consumer, StreamConsumer};
use smartmeter_core::service::offsets::OffsetsFromDb;
use smartmeter_core::DeviceId;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::{periods, status, Config};

/// Devices handled per round (the rest wait for the next).
const LIMIT: i64 = 1000;

pub async fn run(
    pool: Pool,
    consumer: tokio::sync::watch::Receiver<Arc<StreamConsumer<OffsetsFromDb>>>,
    config: Config,
    metrics: Metrics,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(config.housekeeping_interval) => {}
        }
        let current = consumer.borrow().clone();
        let (caught_up, all_caught_up) = caught_up(&current, &config.topic).await;
        drop(current);
        if caught_up.is_empty() {
            continue;
        }
        let round = async {
            let mut client = pool.get().await?;
            let tx = client.transaction().await?;
            let now = Timestamp::now();
            let closed = periods::close_silent(
                &tx,
                &config.billing_periods_topic,
                config.period_grace,
                now,
                &caught_up,
                all_caught_up,
                LIMIT,
            )
            .await?;
            let offline = go_offline(&tx, &config, now, &caught_up, all_caught_up).await?;
            tx.commit().await?;
            anyhow::Ok((closed, offline))
        };
        match round.await {
            Ok((closed, offline)) => {
                if closed > 0 {
                    metrics.periods.with_label_values(&["closed"]).inc_by(closed);
                    tracing::info!(closed, "Closed periods of silent meters.");
                }
                if offline > 0 {
                    metrics.status_changes.inc_by(offline);
                    tracing::info!(offline, "Meters silent for the inactivity timeout marked offline.");
                }
            }
            Err(error) => {
                tracing::warn!(error = format!("{error:#}"), "Housekeeping failed; retrying next round.")
            }
        }
    }
}

/// Marks online devices silent for the inactivity timeout offline (at their newest
/// sign of life plus the timeout). Returns how many.
async fn go_offline(
    tx: &deadpool_postgres::Transaction<'_>,
    config: &Config,
    now: Timestamp,
    caught_up: &[i32],
    all_caught_up: bool,
) -> Result<u64, tokio_postgres::Error> {
    let timeout = config.inactivity_timeout;
    let rows = tx
        .query(
            "SELECT device_id, status_changed_at, status_reason, last_seen_at FROM devices
             WHERE online AND greatest(last_seen_at, status_changed_at) + $1::text::interval < $2
               AND (telemetry_partition = ANY($3) OR (telemetry_partition IS NULL AND $4))
             ORDER BY device_id LIMIT $5
             FOR UPDATE SKIP LOCKED",
            &[&milliseconds(timeout), &now, &caught_up, &all_caught_up, &LIMIT],
        )
        .await?;
    let mut changed = 0;
    for row in rows {
        let device_id: String = row.get(0);
        let state = status::State {
            online: Some(true),
            at: row.get(1),
            reason: row.get::<_, Option<&str>>(2).and_then(status::parse_reason),
        };
        let Some(silent_at) = state.silent_from(row.get(3), timeout) else { continue };
        let Ok(device) = DeviceId::parse(&device_id) else { continue };
        let change = status::inactivity(&device, silent_at);
        if status::store(tx, &change).await? {
            if let Some(topic) = &config.device_events_topic {
                status::publish(tx, topic, &change).await?;
            }
            changed += 1;
        }
    }
    Ok(changed)
}

fn milliseconds(duration: SignedDuration) -> String {
    format!("{} milliseconds", duration.as_millis())
}

/// The partitions of `topic` this member owns and has read to their end, and whether
/// that is all it owns.
async fn caught_up(consumer: &Arc<StreamConsumer<OffsetsFromDb>>, topic: &str) -> (Vec<i32>, bool) {
    let owned: Vec<(i32, Option<i64>)> = consumer
        .context()
        .topic_positions()
        .into_iter()
        .filter(|((t, _), _)| t == topic)
        .map(|((_, partition), next)| (partition, next))
        .collect();
    if owned.is_empty() {
        return (Vec::new(), false);
    }
    let consumer = consumer.clone();
    let topic = topic.to_owned();
    let checked = tokio::task::spawn_blocking(move || {
        owned
            .iter()
            .map(|(partition, next)| {
                let caught = match consumer.fetch_watermarks(&topic, *partition, Duration::from_secs(5)) {
                    Ok((low, high)) => next.unwrap_or(low) >= high,
                    Err(error) => {
                        tracing::debug!(%error, partition, "Cannot read the high watermark; not judging silence there.");
                        false
                    }
                };
                (*partition, caught)
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap_or_default();
    let all = !checked.is_empty() && checked.iter().all(|(_, caught)| *caught);
    (checked.into_iter().filter(|(_, caught)| *caught).map(|(p, _)| p).collect(), all)
}
