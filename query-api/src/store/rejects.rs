//! Records the consumers could not apply, kept with the reason: the processor's
//! (`telemetry_rejects`, `device_event_rejects`) and the billing worker's
//! (`billing_rejects`). The bridge's dead letters are on the DLQ topic (`crate::dlq`).

use jiff::Timestamp;

use super::{Store, StoreError};

/// Which table a reject comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectSource {
    Telemetry,
    DeviceEvents,
    Billing,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RejectRow {
    pub source: RejectSource,
    pub topic: Option<String>,
    pub partition: i32,
    pub offset: i64,
    /// Bounded code where the consumer gives one (billing), else `None`.
    pub error_code: Option<String>,
    pub reason: String,
    pub event_type: Option<String>,
    pub subject: Option<String>,
    pub payload: Vec<u8>,
    pub rejected_at: Timestamp,
}

impl Store {
    /// The newest `limit` rejects of `source`, newest first.
    pub async fn rejects(&self, source: RejectSource, limit: i64) -> Result<Vec<RejectRow>, StoreError> {
        let client = self.pool.get().await?;
        let sql = match source {
            RejectSource::Telemetry => {
                "SELECT NULL::text AS topic, kafka_partition, kafka_offset, NULL::text AS error_code, reason,
                        NULL::text AS event_type, NULL::text AS subject, payload, rejected_at
                 FROM telemetry_rejects ORDER BY rejected_at DESC, kafka_partition, kafka_offset DESC LIMIT $1"
            }
            RejectSource::DeviceEvents => {
                "SELECT topic, kafka_partition, kafka_offset, NULL::text AS error_code, reason,
                        NULL::text AS event_type, NULL::text AS subject, payload, rejected_at
                 FROM device_event_rejects ORDER BY rejected_at DESC, kafka_partition, kafka_offset DESC LIMIT $1"
            }
            RejectSource::Billing => {
                "SELECT kafka_topic AS topic, kafka_partition, kafka_offset, error_code, reason, event_type,
                        subject, payload, rejected_at
                 FROM billing_rejects ORDER BY rejected_at DESC, kafka_partition, kafka_offset DESC LIMIT $1"
            }
        };
        let rows = client.query(sql, &[&limit]).await?;
        Ok(rows
            .iter()
            .map(|row| {
                Ok(RejectRow {
                    source,
                    topic: row.try_get("topic")?,
                    partition: row.try_get("kafka_partition")?,
                    offset: row.try_get("kafka_offset")?,
                    error_code: row.try_get("error_code")?,
                    reason: row.try_get("reason")?,
                    event_type: row.try_get("event_type")?,
                    subject: row.try_get("subject")?,
                    payload: row.try_get("payload")?,
                    rejected_at: row.try_get("rejected_at")?,
                })
            })
            .collect::<Result<_, tokio_postgres::Error>>()?)
    }
}
