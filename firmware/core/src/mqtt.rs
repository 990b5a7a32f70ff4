//! MQTT topics and fixed messages of a meter.
//!
//! - `smartmeter/{device_id}/telemetry`: one reading per message, QoS 1, not retained.
//! - `smartmeter/{device_id}/status`: `online` published retained right after connecting
//!   (birth), `offline` registered as the retained last will, so the broker publishes
//!   it when the meter vanishes without a goodbye. Before a planned disconnect the meter
//!   publishes `offline` itself.
//!
//! The client id is the device id, so a second connection with the same id (a rebooted
//! meter) takes over the session of the first.

use core::fmt::Write as _;

use heapless::String;

use crate::device::{DeviceId, DEVICE_ID_MAX_LEN};

pub const TOPIC_ROOT: &str = "smartmeter";
pub const TELEMETRY_LEAF: &str = "telemetry";
pub const STATUS_LEAF: &str = "status";

pub const STATUS_ONLINE: &[u8] = b"online";
pub const STATUS_OFFLINE: &[u8] = b"offline";

/// `smartmeter/` + id + `/telemetry` is the longest topic.
pub const MAX_TOPIC_LEN: usize = TOPIC_ROOT.len() + 1 + DEVICE_ID_MAX_LEN + 1 + TELEMETRY_LEAF.len();

pub type Topic = String<MAX_TOPIC_LEN>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QoS {
    AtMostOnce,
    AtLeastOnce,
}

/// How a message is published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    pub qos: QoS,
    pub retain: bool,
}

/// Readings: at least once (the bridge and processor deduplicate), never retained.
pub const TELEMETRY_DELIVERY: Delivery = Delivery { qos: QoS::AtLeastOnce, retain: false };
/// Birth, will and goodbye: retained, so a new subscriber sees the current state.
pub const STATUS_DELIVERY: Delivery = Delivery { qos: QoS::AtLeastOnce, retain: true };

/// The topics of one meter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    pub telemetry: Topic,
    pub status: Topic,
}

impl Topics {
    pub fn new(device_id: &DeviceId) -> Self {
        Self { telemetry: topic(device_id, TELEMETRY_LEAF), status: topic(device_id, STATUS_LEAF) }
    }
}

fn topic(device_id: &DeviceId, leaf: &str) -> Topic {
    let mut topic = Topic::new();
    // Cannot fail: MAX_TOPIC_LEN holds the longest id with the longest leaf.
    let _ = write!(topic, "{TOPIC_ROOT}/{device_id}/{leaf}");
    topic
}

/// The last will a meter registers when it connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastWill {
    pub topic: Topic,
    pub payload: &'static [u8],
    pub delivery: Delivery,
}

impl LastWill {
    pub fn new(topics: &Topics) -> Self {
        Self { topic: topics.status.clone(), payload: STATUS_OFFLINE, delivery: STATUS_DELIVERY }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_follow_the_design() {
        let id = DeviceId::parse("meter-001").unwrap();
        let topics = Topics::new(&id);
        assert_eq!(topics.telemetry.as_str(), "smartmeter/meter-001/telemetry");
        assert_eq!(topics.status.as_str(), "smartmeter/meter-001/status");
        let will = LastWill::new(&topics);
        assert_eq!(will.topic.as_str(), "smartmeter/meter-001/status");
        assert_eq!(will.payload, b"offline");
        assert!(will.delivery.retain);
    }

    #[test]
    fn the_longest_id_fits() {
        let id = DeviceId::parse(&"a".repeat(DEVICE_ID_MAX_LEN)).unwrap();
        let topics = Topics::new(&id);
        assert_eq!(topics.telemetry.len(), MAX_TOPIC_LEN);
        assert!(topics.telemetry.ends_with("/telemetry"));
    }

    #[test]
    fn the_bridge_reads_the_device_back_from_the_topic() {
        let id = DeviceId::parse("MAC000002").unwrap();
        let topics = Topics::new(&id);
        let parsed = smartmeter_core::telemetry::device_from_topic(&topics.telemetry).unwrap();
        assert_eq!(parsed.as_str(), "MAC000002");
    }
}
