//! The bridge's Prometheus metrics. Labels are bounded: a Kafka topic or a
//! [`RejectCode`], never a device id. Each is emitted from one place.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use smartmeter_core::telemetry::RejectCode;

use crate::kafka::Topics;

#[derive(Clone)]
pub struct Metrics {
    /// Publishes read from the broker (redeliveries included).
    pub mqtt_received: IntCounter,
    pub mqtt_connections: IntCounter,
    pub mqtt_connection_errors: IntCounter,
    /// PUBACKs handed to the MQTT client after Kafka confirmed the message.
    pub mqtt_acks: IntCounter,
    /// Acknowledgements not sent because the connection the message came on is gone;
    /// the broker redelivers such messages on the new connection.
    pub mqtt_stale_acks: IntCounter,
    pub produced: IntCounterVec,
    pub dlq: IntCounterVec,
    /// Status messages Kafka confirmed, by the state they report (online, offline).
    pub status: IntCounterVec,
    pub clock_unsynced: IntCounter,
    pub delivery_errors: IntCounter,
    /// Messages received and not yet confirmed by Kafka.
    pub inflight: IntGauge,
    /// From receipt on MQTT to Kafka's confirmation, retries included.
    pub produce_latency: Histogram,
}

impl Metrics {
    pub fn register(registry: &Registry, topics: &Topics) -> prometheus::Result<Self> {
        let metrics = Self {
            mqtt_received: IntCounter::new(
                "smartmeter_bridge_mqtt_messages_received_total",
                "MQTT publishes received from the broker, redeliveries included.",
            )?,
            mqtt_connections: IntCounter::new(
                "smartmeter_bridge_mqtt_connections_total",
                "Successful connections (CONNACK) to the MQTT broker.",
            )?,
            mqtt_connection_errors: IntCounter::new(
                "smartmeter_bridge_mqtt_connection_errors_total",
                "Failed or broken MQTT connections.",
            )?,
            mqtt_acks: IntCounter::new(
                "smartmeter_bridge_mqtt_acks_total",
                "MQTT acknowledgements sent after Kafka confirmed the message.",
            )?,
            mqtt_stale_acks: IntCounter::new(
                "smartmeter_bridge_mqtt_stale_acks_total",
                "Acknowledgements skipped because the message's connection was lost (the broker redelivers it).",
            )?,
            produced: IntCounterVec::new(
                Opts::new(
                    "smartmeter_bridge_kafka_messages_produced_total",
                    "Messages Kafka confirmed, by topic.",
                ),
                &["topic"],
            )?,
            dlq: IntCounterVec::new(
                Opts::new(
                    "smartmeter_bridge_dlq_messages_total",
                    "Rejected messages sent to the dead-letter topic, by error code.",
                ),
                &["error_code"],
            )?,
            status: IntCounterVec::new(
                Opts::new(
                    "smartmeter_bridge_status_messages_total",
                    "Meter status messages forwarded as DeviceStatusChanged, by reported state.",
                ),
                &["status"],
            )?,
            clock_unsynced: IntCounter::new(
                "smartmeter_bridge_clock_unsynced_readings_total",
                "Valid readings whose meter clock was not synced (restamped with the receive time).",
            )?,
            delivery_errors: IntCounter::new(
                "smartmeter_bridge_kafka_delivery_errors_total",
                "Failed Kafka deliveries; each is retried and its MQTT message stays unacknowledged.",
            )?,
            inflight: IntGauge::new(
                "smartmeter_bridge_inflight_messages",
                "Messages received from MQTT and not yet confirmed by Kafka.",
            )?,
            produce_latency: Histogram::with_opts(
                HistogramOpts::new(
                    "smartmeter_bridge_kafka_produce_duration_seconds",
                    "Time from MQTT receipt to Kafka's delivery confirmation.",
                )
                .buckets(vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
            )?,
        };
        registry.register(Box::new(metrics.mqtt_received.clone()))?;
        registry.register(Box::new(metrics.mqtt_connections.clone()))?;
        registry.register(Box::new(metrics.mqtt_connection_errors.clone()))?;
        registry.register(Box::new(metrics.mqtt_acks.clone()))?;
        registry.register(Box::new(metrics.mqtt_stale_acks.clone()))?;
        registry.register(Box::new(metrics.produced.clone()))?;
        registry.register(Box::new(metrics.dlq.clone()))?;
        registry.register(Box::new(metrics.status.clone()))?;
        registry.register(Box::new(metrics.clock_unsynced.clone()))?;
        registry.register(Box::new(metrics.delivery_errors.clone()))?;
        registry.register(Box::new(metrics.inflight.clone()))?;
        registry.register(Box::new(metrics.produce_latency.clone()))?;

        // Every label value exists from the start, so rates and alerts see zeros.
        for topic in [&topics.telemetry, &topics.dlq, &topics.device_events] {
            metrics.produced.with_label_values(&[topic.as_str()]);
        }
        for status in ["online", "offline"] {
            metrics.status.with_label_values(&[status]);
        }
        for code in RejectCode::ALL {
            metrics.dlq.with_label_values(&[code.as_str()]);
        }
        Ok(metrics)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_with_every_label_present() {
        let registry = Registry::new();
        Metrics::register(&registry, &Topics::default()).unwrap();
        let text = smartmeter_core::service::metrics::render(&registry);
        assert!(text.contains(r#"smartmeter_bridge_dlq_messages_total{error_code="device_mismatch"} 0"#));
        assert!(text.contains(
            r#"smartmeter_bridge_kafka_messages_produced_total{topic="smartmeter.telemetry.v1"} 0"#
        ));
        assert!(text.contains("smartmeter_bridge_inflight_messages 0"));
    }
}
