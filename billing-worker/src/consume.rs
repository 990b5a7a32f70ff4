//! The live consumer: one group over `smartmeter.billing-periods.v1` and
//! `smartmeter.tariff-events.v1`, offsets in PostgreSQL (core's batch loop).
//!
//! Per batch, in ONE transaction: skip event ids already processed; apply tariff
//! events in order (a version admitted only if core's validation and the stored
//! history accept it, else recorded in `billing_rejects` and nothing of it applied);
//! price again the unbillable periods those tariff events may unblock; price the
//! batch's period events; write invoices, outbox events and states; store the offsets.
//! The in-memory tariff book is replaced only after the commit.

use std::collections::{BTreeSet, HashSet};
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use jiff::Timestamp;
use rdkafka::consumer::{BaseConsumer, Consumer};
use smartmeter_core::billing::events::{
    PeriodEvent, TariffAssigned, TariffVersionPublished, PERIOD_ADJUSTED, PERIOD_CLOSED, TARIFF_ASSIGNED,
    TARIFF_VERSION_PUBLISHED,
};
use smartmeter_core::service::consumer::{Batch, BatchError, BatchHandler, Record};
use tokio_util::sync::CancellationToken;

use crate::bill;
use crate::metrics::Metrics;
use crate::price;
use crate::store::{self, Reject};
use crate::tariffs::{Admitted, TariffBook};

/// A record read as an event.
#[derive(Debug)]
pub enum Decoded {
    Period {
        id: String,
        event: Box<PeriodEvent>,
    },
    TariffVersion {
        id: String,
        time: Timestamp,
        data: Box<TariffVersionPublished>,
    },
    Assigned {
        id: String,
        time: Timestamp,
        data: TariffAssigned,
    },
    /// Not an event this worker can read; `error_code` says which kind of failure.
    Unreadable {
        id: Option<String>,
        event_type: Option<String>,
        subject: Option<String>,
        error_code: &'static str,
        reason: String,
    },
}

/// The envelope with its data left as JSON, read first so a bad `data` still has an
/// id, type and subject to report.
#[derive(serde::Deserialize)]
struct Head {
    id: String,
    #[serde(rename = "type")]
    event_type: String,
    time: Timestamp,
    #[serde(default)]
    subject: Option<String>,
    data: serde_json::Value,
}

/// Every payload decoded, in order, on up to `threads` threads.
fn decode_all(payloads: Vec<Vec<u8>>, threads: usize) -> Vec<Decoded> {
    let threads = threads.clamp(1, payloads.len().max(1));
    if threads == 1 {
        return payloads.iter().map(|payload| decode(payload)).collect();
    }
    let size = payloads.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = payloads
            .chunks(size)
            .map(|piece| scope.spawn(move || piece.iter().map(|payload| decode(payload)).collect::<Vec<_>>()))
            .collect();
        handles.into_iter().flat_map(|handle| handle.join().expect("decoding never panics")).collect()
    })
}

pub fn decode(payload: &[u8]) -> Decoded {
    let head: Head = match serde_json::from_slice(payload) {
        Ok(head) => head,
        Err(error) => {
            return Decoded::Unreadable {
                id: None,
                event_type: None,
                subject: None,
                error_code: "unreadable",
                reason: format!("not a CloudEvents JSON envelope: {error}"),
            }
        }
    };
    let Head { id, event_type, time, subject, data } = head;
    let unreadable = |id, event_type, error_code, reason: String| Decoded::Unreadable {
        id: Some(id),
        event_type: Some(event_type),
        subject,
        error_code,
        reason,
    };
    match event_type.as_str() {
        PERIOD_CLOSED | PERIOD_ADJUSTED => match serde_json::from_value(data) {
            Ok(event) => Decoded::Period { id, event: Box::new(event) },
            Err(error) => unreadable(id, event_type, "unreadable", format!("not a period event: {error}")),
        },
        TARIFF_VERSION_PUBLISHED => match serde_json::from_value(data) {
            Ok(data) => Decoded::TariffVersion { id, time, data: Box::new(data) },
            Err(error) => {
                unreadable(id, event_type, "tariff_refused", format!("not a tariff document: {error}"))
            }
        },
        TARIFF_ASSIGNED => match serde_json::from_value(data) {
            Ok(data) => Decoded::Assigned { id, time, data },
            Err(error) => {
                unreadable(id, event_type, "assignment_refused", format!("not a tariff assignment: {error}"))
            }
        },
        _ => {
            let reason = format!("event type {event_type:?} is not one this worker reads");
            unreadable(id, event_type, "unreadable", reason)
        }
    }
}

fn reject_of<'a>(
    record: &'a Record,
    error_code: &'static str,
    reason: String,
    event_id: Option<&'a str>,
    event_type: Option<&'a str>,
    subject: Option<&'a str>,
) -> Reject<'a> {
    Reject {
        topic: &record.topic,
        partition: record.partition,
        offset: record.offset,
        event_id,
        event_type,
        error_code,
        reason,
        subject,
        payload: &record.payload,
    }
}

/// Why an assignment is refused, if it is.
fn check_assignment(assigned: &TariffAssigned) -> Option<String> {
    if assigned.tariff_id.trim().is_empty() {
        return Some("the tariff id is empty".into());
    }
    for (what, load) in
        [("sanctioned", assigned.sanctioned_load_kw), ("connected", assigned.connected_load_kw)]
    {
        match load {
            Some(kw) if kw.is_sign_negative() && !kw.is_zero() => {
                return Some(format!("negative {what} load {kw} kW"));
            }
            _ => {}
        }
    }
    None
}

pub struct Worker {
    pool: Pool,
    pricing_threads: usize,
    group: String,
    invoices_topic: String,
    book: TariffBook,
    metrics: Metrics,
    health: smartmeter_core::service::health::Health,
}

impl Worker {
    pub fn new(
        pool: Pool,
        group: &str,
        invoices_topic: &str,
        book: TariffBook,
        metrics: Metrics,
        health: smartmeter_core::service::health::Health,
        pricing_threads: usize,
    ) -> Self {
        Self {
            pool,
            pricing_threads: pricing_threads.max(1),
            group: group.to_owned(),
            invoices_topic: invoices_topic.to_owned(),
            book,
            metrics,
            health,
        }
    }

    async fn apply(&mut self, batch: &Batch) -> Result<(), BatchError> {
        let started = Instant::now();
        // Decoding (a period's hourly energy is ~45 KB of JSON) and pricing are CPU work:
        // off the async threads, on up to `pricing_threads` threads.
        let payloads: Vec<Vec<u8>> = batch.records.iter().map(|record| record.payload.clone()).collect();
        let threads = self.pricing_threads;
        let decoded = tokio::task::spawn_blocking(move || decode_all(payloads, threads))
            .await
            .map_err(BatchError::failed)?;
        let decoded: Vec<(&Record, Decoded)> = batch.records.iter().zip(decoded).collect();

        let mut client = self.pool.get().await.map_err(BatchError::failed)?;
        let tx = client.transaction().await?;
        let mut book = if store::tariff_seq(&*tx).await? == self.book.seq {
            self.book.clone()
        } else {
            let (documents, seq) = store::load_tariffs(&*tx).await.map_err(BatchError::failed)?;
            TariffBook::from_documents(documents, seq).map_err(BatchError::failed)?
        };

        let ids: Vec<&str> = decoded
            .iter()
            .filter_map(|(_, decoded)| match decoded {
                Decoded::Period { id, .. }
                | Decoded::TariffVersion { id, .. }
                | Decoded::Assigned { id, .. } => Some(id.as_str()),
                Decoded::Unreadable { .. } => None,
            })
            .collect();
        let mut fresh = store::mark_processed(&tx, &ids).await?;

        let mut changed_tariffs: Vec<String> = Vec::new();
        let mut changed_devices: Vec<String> = Vec::new();
        let mut periods = Vec::new();
        for (record, decoded) in decoded {
            let reject = |error_code, reason, id, event_type, subject| {
                reject_of(record, error_code, reason, id, event_type, subject)
            };
            match decoded {
                Decoded::Unreadable { id, event_type, subject, error_code, reason } => {
                    tracing::error!(
                        topic = record.topic,
                        partition = record.partition,
                        offset = record.offset,
                        error_code,
                        %reason,
                        "Event refused; recorded in billing_rejects."
                    );
                    self.metrics.rejected.with_label_values(&[&record.topic]).inc();
                    let reject =
                        reject(error_code, reason, id.as_deref(), event_type.as_deref(), subject.as_deref());
                    store::insert_reject(&tx, &reject).await?;
                }
                Decoded::TariffVersion { id, time, data } => {
                    if !fresh.remove(&id) {
                        self.metrics.tariff_events.with_label_values(&["version", "duplicate"]).inc();
                        continue;
                    }
                    let (tariff_id, version) = (data.document.tariff_id.clone(), data.document.version);
                    match book.admit(data.document.clone()) {
                        Ok(Admitted::New) => {
                            book.seq = store::insert_tariff_version(&tx, &data, &id, time).await?;
                            tracing::info!(tariff_id, version, effective_from = %data.document.effective_from, "Tariff version stored.");
                            self.metrics.tariff_events.with_label_values(&["version", "applied"]).inc();
                            changed_tariffs.push(tariff_id);
                        }
                        Ok(Admitted::AlreadyStored) => {
                            self.metrics.tariff_events.with_label_values(&["version", "duplicate"]).inc();
                        }
                        Err(refusal) => {
                            tracing::error!(tariff_id, version, error_code = refusal.error_code(), reason = %refusal, "Tariff version refused; nothing of it applied.");
                            self.metrics.tariff_events.with_label_values(&["version", "refused"]).inc();
                            let reject = reject(
                                refusal.error_code(),
                                refusal.to_string(),
                                Some(&id),
                                Some(TARIFF_VERSION_PUBLISHED),
                                Some(&tariff_id),
                            );
                            store::insert_reject(&tx, &reject).await?;
                        }
                    }
                }
                Decoded::Assigned { id, time, data } => {
                    if !fresh.remove(&id) {
                        self.metrics.tariff_events.with_label_values(&["assignment", "duplicate"]).inc();
                        continue;
                    }
                    if let Some(reason) = check_assignment(&data) {
                        tracing::error!(device_id = %data.device_id, %reason, "Tariff assignment refused.");
                        self.metrics.tariff_events.with_label_values(&["assignment", "refused"]).inc();
                        let reject = reject(
                            "assignment_refused",
                            reason,
                            Some(&id),
                            Some(TARIFF_ASSIGNED),
                            Some(data.device_id.as_str()),
                        );
                        store::insert_reject(&tx, &reject).await?;
                        continue;
                    }
                    store::upsert_assignment(&tx, &data, &id, time).await?;
                    tracing::info!(device_id = %data.device_id, tariff_id = data.tariff_id, effective_from = %data.effective_from, "Tariff assigned.");
                    self.metrics.tariff_events.with_label_values(&["assignment", "applied"]).inc();
                    changed_devices.push(data.device_id.to_string());
                }
                Decoded::Period { id, event } => {
                    if fresh.remove(&id) {
                        periods.push(*event);
                    } else {
                        self.metrics.periods.with_label_values(&["duplicate"]).inc();
                    }
                }
            }
        }

        let mut events = if changed_tariffs.is_empty() && changed_devices.is_empty() {
            Vec::new()
        } else {
            let tariffs: Vec<&str> = changed_tariffs.iter().map(String::as_str).collect();
            let devices: Vec<&str> = changed_devices.iter().map(String::as_str).collect();
            store::waiting_periods(&tx, &tariffs, &devices).await.map_err(BatchError::failed)?
        };
        if !events.is_empty() {
            tracing::info!(periods = events.len(), "Pricing unbillable periods again after tariff events.");
        }
        events.append(&mut periods);

        let devices: BTreeSet<&str> = events.iter().map(|event| event.device_id.as_str()).collect();
        let devices: Vec<&str> = devices.into_iter().collect();
        let assignments = store::load_assignments(&*tx, &devices).await?;
        let pricing_started = Instant::now();
        let count = events.len();
        let priced = {
            let book = book.clone();
            tokio::task::spawn_blocking(move || bill::price_all(events, &assignments, &book, threads))
                .await
                .map_err(BatchError::failed)?
        };
        if count > 0 {
            // Priced together: each period is observed at the batch's mean.
            let mean = pricing_started.elapsed().as_secs_f64() / count as f64;
            for _ in 0..count {
                self.metrics.pricing_seconds.observe(mean);
            }
        }
        for (event, pricing) in &priced {
            if let price::Pricing::Unbillable { reason, .. } = pricing {
                tracing::warn!(device_id = %event.device_id, month = %event.month, %reason, "Period unbillable.");
            }
        }
        let counts = bill::record(&tx, priced, &self.invoices_topic, None).await?;
        batch.store_offsets(&tx, &self.group).await?;
        tx.commit().await?;

        self.book = book;
        self.metrics.observe(&counts);
        self.metrics.batch_seconds.observe(started.elapsed().as_secs_f64());
        Ok(())
    }
}

impl BatchHandler for Worker {
    async fn handle(&mut self, batch: &Batch) -> Result<(), BatchError> {
        let result = self.apply(batch).await;
        if result.is_ok() {
            self.health.up("postgres");
        }
        result
    }
}

/// Sets `smartmeter_billing_consumer_lag_records` every `every`: per topic, the sum
/// over partitions of the high watermark minus the group's stored offset.
pub async fn watch_lag(
    brokers: String,
    pool: Pool,
    group: String,
    topics: Vec<String>,
    metrics: Metrics,
    every: Duration,
    shutdown: CancellationToken,
) {
    let consumer: BaseConsumer = match rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", format!("{group}-lag"))
        .set("enable.auto.commit", "false")
        .create()
    {
        Ok(consumer) => consumer,
        Err(error) => {
            tracing::warn!(%error, "No lag metric: cannot create a Kafka client.");
            return;
        }
    };
    let consumer = std::sync::Arc::new(consumer);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let stored = match pool.get().await {
            Ok(client) => client
                .query(
                    "SELECT topic, partition, next_offset FROM consumer_offsets WHERE consumer_group = $1",
                    &[&group],
                )
                .await
                .map(|rows| {
                    rows.iter()
                        .map(|row| ((row.get::<_, String>(0), row.get::<_, i32>(1)), row.get::<_, i64>(2)))
                        .collect::<std::collections::HashMap<_, _>>()
                }),
            Err(error) => {
                tracing::debug!(%error, "Lag: no database connection.");
                continue;
            }
        };
        let Ok(stored) = stored else { continue };
        let consumer = consumer.clone();
        let topics = topics.clone();
        let lags = tokio::task::spawn_blocking(move || {
            let timeout = Duration::from_secs(5);
            let mut lags = Vec::new();
            for topic in topics {
                let Ok(metadata) = consumer.fetch_metadata(Some(&topic), timeout) else { continue };
                let mut lag = 0;
                let partitions: Vec<i32> = metadata
                    .topics()
                    .iter()
                    .flat_map(|t| t.partitions().iter().map(|p| p.id()))
                    .collect::<HashSet<_>>()
                    .into_iter()
                    .collect();
                for partition in partitions {
                    if let Ok((low, high)) = consumer.fetch_watermarks(&topic, partition, timeout) {
                        let next = stored.get(&(topic.clone(), partition)).copied().unwrap_or(low);
                        lag += (high - next).max(0);
                    }
                }
                lags.push((topic, lag));
            }
            lags
        })
        .await
        .unwrap_or_default();
        for (topic, lag) in lags {
            metrics.consumer_lag.with_label_values(&[&topic]).set(lag);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_sorts_records_into_events_and_refusals() {
        let garbage = decode(b"not json");
        assert!(matches!(garbage, Decoded::Unreadable { error_code: "unreadable", id: None, .. }));

        let bad_tariff = serde_json::json!({
            "specversion": "1.0", "id": "t-1", "source": "/api", "type": TARIFF_VERSION_PUBLISHED,
            "time": "2026-01-01T00:00:00Z", "subject": "x", "datacontenttype": "application/json",
            "data": {"document": {"tariff_id": "x", "version": 1, "rate": 5}}
        });
        let Decoded::Unreadable { error_code, id, .. } = decode(bad_tariff.to_string().as_bytes()) else {
            panic!("refused")
        };
        assert_eq!((error_code, id.as_deref()), ("tariff_refused", Some("t-1")));

        let other = serde_json::json!({
            "specversion": "1.0", "id": "o-1", "source": "/api", "type": "dev.smartmeter.other.v1",
            "time": "2026-01-01T00:00:00Z", "subject": "x", "datacontenttype": "application/json", "data": {}
        });
        assert!(matches!(decode(other.to_string().as_bytes()), Decoded::Unreadable { .. }));
    }

    #[test]
    fn negative_loads_and_empty_tariffs_are_refused() {
        let mut assigned = TariffAssigned {
            device_id: smartmeter_core::DeviceId::parse("m").unwrap(),
            tariff_id: "t".into(),
            effective_from: jiff::civil::date(2024, 1, 1),
            sanctioned_load_kw: Some(rust_decimal::Decimal::NEGATIVE_ONE),
            phase: None,
            connected_load_kw: None,
        };
        assert!(check_assignment(&assigned).unwrap().contains("negative"));
        assigned.sanctioned_load_kw = None;
        assert_eq!(check_assignment(&assigned), None);
        assigned.tariff_id = " ".into();
        assert!(check_assignment(&assigned).is_some());
    }
}
