//! Kafka client settings shared by producers and consumers.

use rdkafka::ClientConfig;

/// Producer settings for at-least-once delivery without duplicates from retries:
/// idempotence on, `acks=all`, ordering kept per key.
pub fn idempotent_producer(brokers: &str, client_id: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("client.id", client_id)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("max.in.flight.requests.per.connection", "5")
        .set("linger.ms", "5")
        .set("compression.type", "lz4")
        // Keep retrying while the broker is away; delivery futures resolve when it is back.
        .set("message.timeout.ms", "0")
        .set("reconnect.backoff.ms", "100")
        .set("reconnect.backoff.max.ms", "10000");
    config
}

/// Consumer settings for a group whose offsets live in PostgreSQL, not in Kafka.
pub fn db_offset_consumer(brokers: &str, group_id: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("group.id", group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("partition.assignment.strategy", "range")
        .set("session.timeout.ms", "10000")
        .set("reconnect.backoff.ms", "100")
        .set("reconnect.backoff.max.ms", "10000")
        // Group and broker state for `/health` and the membership watchdog
        // (`OffsetsFromDb::group_state`).
        .set("statistics.interval.ms", "1000");
    config
}
