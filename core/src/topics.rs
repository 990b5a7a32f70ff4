//! Kafka topics of DESIGN, with the partition counts and retention they are created
//! with. `infra/topics.txt` lists the same; a test keeps the two equal.

/// A topic with the partition count it is created with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Topic {
    pub name: &'static str,
    pub partitions: i32,
    /// `-1` keeps every record: the topic is a source of truth that projections replay.
    pub retention_ms: i64,
}

const WEEK_MS: i64 = 7 * 24 * 3600 * 1000;
/// Kept forever: every projection can be rebuilt from it.
const FOREVER: i64 = -1;

pub const TELEMETRY: Topic = Topic { name: "smartmeter.telemetry.v1", partitions: 6, retention_ms: FOREVER };
pub const TELEMETRY_DLQ: Topic = Topic { name: "smartmeter.telemetry.dlq.v1", partitions: 1, retention_ms: 4 * WEEK_MS };
pub const DEVICE_EVENTS: Topic = Topic { name: "smartmeter.device-events.v1", partitions: 3, retention_ms: FOREVER };
pub const TARIFF_EVENTS: Topic = Topic { name: "smartmeter.tariff-events.v1", partitions: 1, retention_ms: FOREVER };
pub const BILLING_PERIODS: Topic = Topic { name: "smartmeter.billing-periods.v1", partitions: 3, retention_ms: FOREVER };
pub const INVOICES: Topic = Topic { name: "smartmeter.invoices.v1", partitions: 3, retention_ms: FOREVER };

pub const ALL: [Topic; 6] = [TELEMETRY, TELEMETRY_DLQ, DEVICE_EVENTS, TARIFF_EVENTS, BILLING_PERIODS, INVOICES];
