//! Output types for operators and access management: the caller, dead letters and
//! rejects, customers and API keys.

use async_graphql::{Enum, Object, SimpleObject};
use base64::Engine as _;

use super::scalars::DateTime;
use crate::auth::{Principal, Role};
use crate::dlq::DeadLetterRecord;
use crate::store::rejects::RejectSource;
use crate::store::{ApiKeyRow, CustomerRow, RejectRow};

/// Who the API key belongs to.
pub struct Caller(pub Principal);

#[Object]
impl Caller {
    async fn user_name(&self) -> &str {
        &self.0.user_name
    }

    async fn role(&self) -> Role {
        self.0.role
    }

    /// Set for customers: they see only this customer's meters.
    async fn customer_id(&self) -> Option<&str> {
        self.0.customer_id.as_deref()
    }

    async fn key_id(&self) -> &str {
        &self.0.key_id
    }
}

fn payload_text(bytes: &[u8]) -> Option<String> {
    std::str::from_utf8(bytes).ok().map(str::to_owned)
}

pub struct DeadLetter(pub DeadLetterRecord);

/// A message the bridge refused, from the dead-letter topic, with why.
#[Object]
impl DeadLetter {
    async fn partition(&self) -> i32 {
        self.0.partition
    }

    async fn offset(&self) -> i64 {
        self.0.offset
    }

    /// The MQTT topic it arrived on (empty when the record is not a dead letter).
    async fn mqtt_topic(&self) -> &str {
        self.0.letter.as_ref().map_or("", |l| l.mqtt_topic.as_str())
    }

    /// The device the topic names, when the topic is well formed.
    async fn device_id(&self) -> Option<&str> {
        self.0.letter.as_ref().and_then(|l| l.device_id.as_deref())
    }

    async fn received_at(&self) -> Option<DateTime> {
        self.0.letter.as_ref().map(|l| DateTime(l.received_at)).or(self.0.kafka_timestamp.map(DateTime))
    }

    /// Bounded: invalid_topic, payload_too_large, invalid_json, non_finite_number,
    /// missing_field, invalid_field, out_of_range, invalid_timestamp, invalid_device_id,
    /// device_mismatch, invalid_status; `unreadable` for a record that is no dead letter.
    async fn error_code(&self) -> String {
        match &self.0.letter {
            Some(letter) => serde_json::to_value(letter.error_code)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            None => "unreadable".to_owned(),
        }
    }

    /// What was wrong, for people.
    async fn reason(&self) -> String {
        match &self.0.letter {
            Some(letter) => letter.reason.clone(),
            None => "the record on the dead-letter topic is not a dead letter".to_owned(),
        }
    }

    /// The payload exactly as received, base64.
    async fn payload_base64(&self) -> String {
        match &self.0.letter {
            Some(letter) => letter.payload_base64.clone(),
            None => base64::engine::general_purpose::STANDARD.encode(&self.0.raw),
        }
    }

    /// The payload as text, when it is UTF-8.
    async fn payload_text(&self) -> Option<String> {
        match &self.0.letter {
            Some(letter) => letter.payload().ok().and_then(|bytes| payload_text(&bytes)),
            None => payload_text(&self.0.raw),
        }
    }
}

/// A page of dead letters, newest first.
#[derive(SimpleObject)]
pub struct DeadLetterPage {
    pub topic: String,
    pub items: Vec<DeadLetter>,
    /// Pass as `before` for the next (older) page; null at the oldest.
    pub next_cursor: Option<String>,
    /// Records the topic holds now (it keeps four weeks).
    pub retained: i64,
}

#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectKind {
    /// Records on the telemetry topic the processor could not read.
    Telemetry,
    /// Device events the processor could not read or that failed validation.
    DeviceEvents,
    /// Tariff and period events the billing worker refused.
    Billing,
}

impl RejectKind {
    pub fn source(self) -> RejectSource {
        match self {
            Self::Telemetry => RejectSource::Telemetry,
            Self::DeviceEvents => RejectSource::DeviceEvents,
            Self::Billing => RejectSource::Billing,
        }
    }
}

pub struct Reject(pub RejectRow);

/// A record a consumer could not apply, kept with the reason.
#[Object]
impl Reject {
    async fn topic(&self) -> Option<&str> {
        self.0.topic.as_deref()
    }

    async fn partition(&self) -> i32 {
        self.0.partition
    }

    async fn offset(&self) -> i64 {
        self.0.offset
    }

    async fn error_code(&self) -> Option<&str> {
        self.0.error_code.as_deref()
    }

    async fn reason(&self) -> &str {
        &self.0.reason
    }

    async fn event_type(&self) -> Option<&str> {
        self.0.event_type.as_deref()
    }

    async fn subject(&self) -> Option<&str> {
        self.0.subject.as_deref()
    }

    async fn payload_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(&self.0.payload)
    }

    async fn payload_text(&self) -> Option<String> {
        payload_text(&self.0.payload)
    }

    async fn rejected_at(&self) -> DateTime {
        DateTime(self.0.rejected_at)
    }
}

pub struct Customer(pub CustomerRow);

#[Object]
impl Customer {
    async fn customer_id(&self) -> &str {
        &self.0.customer_id
    }

    async fn name(&self) -> &str {
        &self.0.name
    }

    async fn email(&self) -> Option<&str> {
        self.0.email.as_deref()
    }

    async fn created_at(&self) -> DateTime {
        DateTime(self.0.created_at)
    }

    /// Devices whose registry row names this customer.
    async fn devices(&self) -> i64 {
        self.0.devices
    }
}

pub struct ApiKey(pub ApiKeyRow);

/// An API key, without its secret (only its SHA-256 is stored).
#[Object]
impl ApiKey {
    async fn key_id(&self) -> &str {
        &self.0.key_id
    }

    async fn user_name(&self) -> &str {
        &self.0.user_name
    }

    async fn role(&self) -> Option<Role> {
        Role::parse(&self.0.role)
    }

    async fn customer_id(&self) -> Option<&str> {
        self.0.customer_id.as_deref()
    }

    async fn label(&self) -> Option<&str> {
        self.0.label.as_deref()
    }

    async fn created_at(&self) -> DateTime {
        DateTime(self.0.created_at)
    }

    async fn expires_at(&self) -> Option<DateTime> {
        self.0.expires_at.map(DateTime)
    }

    async fn revoked_at(&self) -> Option<DateTime> {
        self.0.revoked_at.map(DateTime)
    }

    /// When the API last loaded the key (at most about once a minute per instance).
    async fn last_used_at(&self) -> Option<DateTime> {
        self.0.last_used_at.map(DateTime)
    }
}

/// A new key: the token is shown here once and never again.
#[derive(SimpleObject)]
pub struct CreatedApiKey {
    pub token: String,
    pub key: ApiKey,
}
