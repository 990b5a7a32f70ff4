//! The bridge's settings: every flag has a `SMARTMETER_…` environment variable.
//!
//! Connection settings shared with other services (`SMARTMETER_MQTT_HOST`,
//! `SMARTMETER_KAFKA_BROKERS`, `SMARTMETER_CLOCK_FLOOR`) keep their common names; what
//! only the bridge reads is prefixed `SMARTMETER_BRIDGE_`.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use jiff::Timestamp;
use smartmeter_core::status::STATUS_TOPIC_FILTER;
use smartmeter_core::telemetry::{ValidationConfig, TELEMETRY_TOPIC_FILTER};
use smartmeter_core::topics;

use crate::kafka::Topics;

#[derive(Clone, clap::Parser)]
#[command(name = "bridge", version, about = "MQTT to Kafka bridge for smartmeter telemetry.")]
pub struct Config {
    #[arg(long, env = "SMARTMETER_MQTT_HOST", default_value = "127.0.0.1")]
    pub mqtt_host: String,

    #[arg(long, env = "SMARTMETER_MQTT_PORT", default_value_t = 1883)]
    pub mqtt_port: u16,

    #[arg(long, env = "SMARTMETER_MQTT_BRIDGE_USER")]
    pub mqtt_user: Option<String>,

    #[arg(long, env = "SMARTMETER_MQTT_BRIDGE_PASSWORD", hide_env_values = true)]
    pub mqtt_password: Option<String>,

    /// Fixed, so the broker keeps this bridge's session (and its unacknowledged
    /// messages) across restarts. Two bridges must not share it.
    #[arg(long, env = "SMARTMETER_BRIDGE_MQTT_CLIENT_ID", default_value = "smartmeter-bridge")]
    pub mqtt_client_id: String,

    /// Topic filter to subscribe to for telemetry (QoS 1).
    #[arg(long, env = "SMARTMETER_BRIDGE_MQTT_TOPIC_FILTER", default_value = TELEMETRY_TOPIC_FILTER)]
    pub mqtt_topic_filter: String,

    /// Topic filter to subscribe to for the meters' status messages (birth and last
    /// will); they become DeviceStatusChanged events. Empty: no status subscription.
    #[arg(long, env = "SMARTMETER_BRIDGE_MQTT_STATUS_TOPIC_FILTER", default_value = STATUS_TOPIC_FILTER)]
    pub mqtt_status_topic_filter: String,

    /// Shared-subscription group (`$share/<group>/<filter>`) for running several
    /// bridges side by side, each with its own client id.
    #[arg(long, env = "SMARTMETER_BRIDGE_MQTT_SHARE_GROUP")]
    pub mqtt_share_group: Option<String>,

    #[arg(long, env = "SMARTMETER_BRIDGE_MQTT_KEEP_ALIVE", default_value = "30s", value_parser = parse_duration)]
    pub mqtt_keep_alive: Duration,

    /// Largest MQTT packet the bridge reads. Larger payloads than `max_payload_bytes`
    /// up to this size are dead-lettered; a packet above it breaks the connection, so
    /// the broker's `max_packet_size` must not exceed it.
    #[arg(long, env = "SMARTMETER_BRIDGE_MQTT_MAX_PACKET_BYTES", default_value_t = 256 * 1024)]
    pub mqtt_max_packet_bytes: usize,

    /// Longest wait between reconnection attempts (the back-off doubles up to it).
    #[arg(long, env = "SMARTMETER_BRIDGE_MQTT_RECONNECT_MAX", default_value = "30s", value_parser = parse_duration)]
    pub mqtt_reconnect_max: Duration,

    #[arg(long, env = "SMARTMETER_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub kafka_brokers: String,

    /// Topic for validated readings (tests use topics of their own).
    #[arg(long, env = "SMARTMETER_BRIDGE_TELEMETRY_TOPIC", default_value = topics::TELEMETRY.name)]
    pub telemetry_topic: String,

    /// Topic for rejected messages.
    #[arg(long, env = "SMARTMETER_BRIDGE_DLQ_TOPIC", default_value = topics::TELEMETRY_DLQ.name)]
    pub dlq_topic: String,

    /// Topic for DeviceStatusChanged events made from status messages.
    #[arg(long, env = "SMARTMETER_BRIDGE_DEVICE_EVENTS_TOPIC", default_value = topics::DEVICE_EVENTS.name)]
    pub device_events_topic: String,

    /// Meter timestamps before this are an unsynced clock (kept, restamped, flagged).
    /// A replay of older real data sets it lower, e.g. 2000-01-01T00:00:00Z.
    #[arg(long, env = "SMARTMETER_CLOCK_FLOOR", default_value = "2020-01-01T00:00:00Z")]
    pub clock_floor: Timestamp,

    /// Larger payloads are dead-lettered without parsing.
    #[arg(long, env = "SMARTMETER_BRIDGE_MAX_PAYLOAD_BYTES", default_value_t = 4096)]
    pub max_payload_bytes: usize,

    /// Meter timestamps further ahead of the receive time are an unsynced clock.
    #[arg(long, env = "SMARTMETER_BRIDGE_MAX_CLOCK_AHEAD", default_value = "5m", value_parser = parse_duration)]
    pub max_clock_ahead: Duration,

    /// Messages received from MQTT but not yet confirmed by Kafka, at most. When it is
    /// reached the bridge stops reading from the broker (back-pressure).
    #[arg(long, env = "SMARTMETER_BRIDGE_MAX_INFLIGHT", default_value_t = 10_000)]
    pub max_inflight: usize,

    #[arg(long, env = "SMARTMETER_BRIDGE_METRICS_ADDR", default_value = "127.0.0.1:9101")]
    pub metrics_addr: SocketAddr,

    /// How long shutdown waits for in-flight deliveries and their acknowledgements.
    #[arg(long, env = "SMARTMETER_BRIDGE_DRAIN_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
}

impl Config {
    pub fn validation(&self) -> anyhow::Result<ValidationConfig> {
        Ok(ValidationConfig {
            max_payload_bytes: self.max_payload_bytes,
            clock_floor: self.clock_floor,
            max_clock_ahead: self.max_clock_ahead.try_into()?,
        })
    }

    pub fn topics(&self) -> Topics {
        Topics {
            telemetry: self.telemetry_topic.clone(),
            dlq: self.dlq_topic.clone(),
            device_events: self.device_events_topic.clone(),
        }
    }

    /// Whether status messages are subscribed to (and the device-events topic used).
    pub fn status_enabled(&self) -> bool {
        !self.mqtt_status_topic_filter.is_empty()
    }

    /// The Kafka topics that must exist for the bridge to work.
    pub fn required_topics(&self) -> Vec<String> {
        let mut names = vec![self.telemetry_topic.clone(), self.dlq_topic.clone()];
        if self.status_enabled() {
            names.push(self.device_events_topic.clone());
        }
        names
    }

    /// The filters actually subscribed to, with the shared-subscription prefix if any:
    /// telemetry, then status (unless disabled).
    pub fn subscriptions(&self) -> Vec<String> {
        let mut filters = vec![self.mqtt_topic_filter.as_str()];
        if self.status_enabled() {
            filters.push(self.mqtt_status_topic_filter.as_str());
        }
        filters
            .into_iter()
            .map(|filter| match &self.mqtt_share_group {
                Some(group) => format!("$share/{group}/{filter}"),
                None => filter.to_owned(),
            })
            .collect()
    }
}

// By hand, so the password never reaches a log line.
impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("mqtt_host", &self.mqtt_host)
            .field("mqtt_port", &self.mqtt_port)
            .field("mqtt_user", &self.mqtt_user)
            .field("mqtt_password", &self.mqtt_password.as_ref().map(|_| "<redacted>"))
            .field("mqtt_client_id", &self.mqtt_client_id)
            .field("mqtt_topic_filter", &self.mqtt_topic_filter)
            .field("mqtt_status_topic_filter", &self.mqtt_status_topic_filter)
            .field("mqtt_share_group", &self.mqtt_share_group)
            .field("mqtt_keep_alive", &self.mqtt_keep_alive)
            .field("mqtt_max_packet_bytes", &self.mqtt_max_packet_bytes)
            .field("mqtt_reconnect_max", &self.mqtt_reconnect_max)
            .field("kafka_brokers", &self.kafka_brokers)
            .field("telemetry_topic", &self.telemetry_topic)
            .field("dlq_topic", &self.dlq_topic)
            .field("device_events_topic", &self.device_events_topic)
            .field("clock_floor", &self.clock_floor)
            .field("max_payload_bytes", &self.max_payload_bytes)
            .field("max_clock_ahead", &self.max_clock_ahead)
            .field("max_inflight", &self.max_inflight)
            .field("metrics_addr", &self.metrics_addr)
            .field("drain_timeout", &self.drain_timeout)
            .finish()
    }
}

/// `10s`, `1m 30s`, `PT5M` (jiff's friendly or ISO 8601 duration).
fn parse_duration(text: &str) -> Result<Duration, String> {
    let signed: jiff::SignedDuration = text.parse().map_err(|e| format!("{e}"))?;
    Duration::try_from(signed).map_err(|_| format!("duration {text:?} must not be negative"))
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[test]
    fn defaults_are_the_design_s() {
        let config = Config::try_parse_from(["bridge"]).unwrap();
        let validation = config.validation().unwrap();
        let expected = ValidationConfig::default();
        assert_eq!(validation.max_payload_bytes, expected.max_payload_bytes);
        assert_eq!(validation.max_clock_ahead, expected.max_clock_ahead);
        assert_eq!(config.drain_timeout, Duration::from_secs(10));
        assert_eq!(config.mqtt_client_id, "smartmeter-bridge");
        assert_eq!(config.topics().telemetry, "smartmeter.telemetry.v1");
        assert_eq!(config.topics().dlq, "smartmeter.telemetry.dlq.v1");
        assert_eq!(config.topics().device_events, "smartmeter.device-events.v1");
        assert_eq!(config.subscriptions(), ["smartmeter/+/telemetry", "smartmeter/+/status"]);
        assert_eq!(config.required_topics().len(), 3);
    }

    #[test]
    fn an_empty_status_filter_turns_status_off() {
        let config = Config::try_parse_from(["bridge", "--mqtt-status-topic-filter="]).unwrap();
        assert!(!config.status_enabled());
        assert_eq!(config.subscriptions(), ["smartmeter/+/telemetry"]);
        assert_eq!(config.required_topics(), ["smartmeter.telemetry.v1", "smartmeter.telemetry.dlq.v1"]);
    }

    #[test]
    fn clock_floor_can_be_lowered_for_replays() {
        let config = Config::try_parse_from(["bridge", "--clock-floor", "2000-01-01T00:00:00Z"]).unwrap();
        assert_eq!(config.clock_floor, "2000-01-01T00:00:00Z".parse::<Timestamp>().unwrap());
    }

    #[test]
    fn shared_subscription_prefixes_the_filter() {
        let config = Config::try_parse_from(["bridge", "--mqtt-share-group", "bridges"]).unwrap();
        assert_eq!(
            config.subscriptions(),
            ["$share/bridges/smartmeter/+/telemetry", "$share/bridges/smartmeter/+/status"]
        );
    }

    #[test]
    fn durations_parse_in_friendly_form() {
        assert_eq!(parse_duration("1m 30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("-5s").is_err());
    }

    #[test]
    fn debug_hides_the_password() {
        let config = Config::try_parse_from(["bridge", "--mqtt-password", "hunter2"]).unwrap();
        assert!(!format!("{config:?}").contains("hunter2"));
    }
}
