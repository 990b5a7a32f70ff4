//! Kafka topics of DESIGN, with the partition counts and retention they are created
//! with. `infra/kafka/topics.txt` (read by `infra/up.sh`) lists the same; a test
//! keeps the two equal.

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
pub const TELEMETRY_DLQ: Topic =
    Topic { name: "smartmeter.telemetry.dlq.v1", partitions: 1, retention_ms: 4 * WEEK_MS };
pub const DEVICE_EVENTS: Topic =
    Topic { name: "smartmeter.device-events.v1", partitions: 3, retention_ms: FOREVER };
pub const TARIFF_EVENTS: Topic =
    Topic { name: "smartmeter.tariff-events.v1", partitions: 1, retention_ms: FOREVER };
pub const BILLING_PERIODS: Topic =
    Topic { name: "smartmeter.billing-periods.v1", partitions: 3, retention_ms: FOREVER };
pub const INVOICES: Topic = Topic { name: "smartmeter.invoices.v1", partitions: 3, retention_ms: FOREVER };

pub const ALL: [Topic; 6] =
    [TELEMETRY, TELEMETRY_DLQ, DEVICE_EVENTS, TARIFF_EVENTS, BILLING_PERIODS, INVOICES];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn infra_topic_list_matches() {
        let text = include_str!("../../infra/kafka/topics.txt");
        let listed: Vec<(String, i32, i64)> = text
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                (fields[0].to_owned(), fields[1].parse().unwrap(), fields[2].parse().unwrap())
            })
            .collect();
        let defined: Vec<(String, i32, i64)> =
            ALL.iter().map(|t| (t.name.to_owned(), t.partitions, t.retention_ms)).collect();
        assert_eq!(listed, defined);
    }
}
