//! For the exactly-once tests: digests of every table the processor writes, and
//! Kafka's high watermarks.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;

/// Every table the processor writes, without wall-clock columns (`created_at`,
/// `updated_at`, `closed_at`, `published_at`, `rejected_at`) and without what names
/// the run's own topics: (rows, md5 of the sorted rows) per table.
pub async fn digest(url: &str) -> BTreeMap<&'static str, (i64, String)> {
    const TABLES: [(&str, &str); 10] = [
        ("readings", "SELECT * FROM readings"),
        ("energy_hourly", "SELECT * FROM energy_hourly"),
        ("energy_daily", "SELECT * FROM energy_daily"),
        ("counter_events", "SELECT * FROM counter_events"),
        ("reading_conflicts", "SELECT * FROM reading_conflicts"),
        (
            "devices",
            "SELECT device_id, name, location, time_zone, lifecycle, tariff_id, sanctioned_load_kw,
                    firmware_version, online, status_changed_at, first_seen_at, last_seen_at,
                    newest_reading_at, readings_total, duplicates_total, customer_id, registered_at,
                    decommissioned_at, decommission_reason, status_reason, telemetry_partition
             FROM devices",
        ),
        (
            "billing_periods",
            "SELECT device_id, month, time_zone, starts_at, ends_at, status, revision, published
             FROM billing_periods",
        ),
        ("outbox", "SELECT event_id, event_key, payload FROM outbox"),
        ("telemetry_rejects", "SELECT kafka_partition, kafka_offset, payload, reason FROM telemetry_rejects"),
        (
            "device_event_rejects",
            "SELECT kafka_partition, kafka_offset, payload, reason FROM device_event_rejects",
        ),
    ];
    let client = super::connect(url).await;
    let mut out = BTreeMap::new();
    for (table, select) in TABLES {
        let sql = format!(
            "SELECT count(*), coalesce(md5(string_agg(t::text, E'\\n' ORDER BY t::text)), '')
             FROM ({select}) t"
        );
        let row = client.query_one(&sql, &[]).await.unwrap();
        out.insert(table, (row.get(0), row.get(1)));
    }
    out
}

/// Sum of the high watermarks of `topic`'s partitions: records ever written to it.
pub async fn topic_end(brokers: &str, topic: &str) -> i64 {
    let brokers = brokers.to_owned();
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer =
            ClientConfig::new().set("bootstrap.servers", &brokers).create().expect("Kafka client");
        let metadata = consumer.fetch_metadata(Some(&topic), Duration::from_secs(10)).expect("metadata");
        let partitions = metadata.topics()[0].partitions().len() as i32;
        (0..partitions)
            .map(|p| consumer.fetch_watermarks(&topic, p, Duration::from_secs(10)).expect("watermarks").1)
            .sum()
    })
    .await
    .unwrap()
}
