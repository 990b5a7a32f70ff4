//! The one envelope every domain event travels in: CloudEvents 1.0, structured JSON
//! mode (`id`, `source`, `type`, `time`, `subject`, `data`).
//!
//! Derived events get deterministic ids ([`derived_event_id`]): re-running the same
//! input produces the same id, so every consumer can deduplicate.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub const SPEC_VERSION: &str = "1.0";

/// Namespace for v5 ids of derived events; fixed forever, changing it changes every id.
const EVENT_ID_NAMESPACE: Uuid = Uuid::from_u128(0x5d0c_7e1e_8a53_4c1b_9a0e_6f2b_1d3c_a001);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope<T> {
    pub specversion: String,
    pub id: String,
    /// The service (or device) that produced it, as a URI reference: `/processor`.
    pub source: String,
    /// Reverse-DNS event type: `dev.smartmeter.billing.period-closed.v1`.
    #[serde(rename = "type")]
    pub event_type: String,
    pub time: Timestamp,
    /// What the event is about, usually the device id.
    pub subject: String,
    pub datacontenttype: String,
    pub data: T,
}

impl<T> Envelope<T> {
    pub fn new(id: String, source: &str, event_type: &str, time: Timestamp, subject: &str, data: T) -> Self {
        Self {
            specversion: SPEC_VERSION.to_owned(),
            id,
            source: source.to_owned(),
            event_type: event_type.to_owned(),
            time,
            subject: subject.to_owned(),
            datacontenttype: "application/json".to_owned(),
            data,
        }
    }
}

/// A deterministic id for an event derived from `parts` (for example the event type,
/// device id and period). The same parts always give the same id.
pub fn derived_event_id(parts: &[&str]) -> String {
    // Length-prefix each part so ("ab","c") and ("a","bc") differ.
    let mut name = Vec::new();
    for part in parts {
        name.extend_from_slice(&(part.len() as u64).to_be_bytes());
        name.extend_from_slice(part.as_bytes());
    }
    Uuid::new_v5(&EVENT_ID_NAMESPACE, &name).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_ids_are_stable_and_unambiguous() {
        let a = derived_event_id(&["period-closed", "meter-001", "2026-01"]);
        assert_eq!(a, derived_event_id(&["period-closed", "meter-001", "2026-01"]));
        assert_ne!(derived_event_id(&["ab", "c"]), derived_event_id(&["a", "bc"]));
    }

    #[test]
    fn envelope_serializes_as_cloudevents_structured_json() {
        let time: Timestamp = "2026-02-01T00:00:00Z".parse().unwrap();
        let event =
            Envelope::new("id-1".into(), "/processor", "dev.smartmeter.test.v1", time, "meter-001", 5);
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["specversion"], "1.0");
        assert_eq!(json["type"], "dev.smartmeter.test.v1");
        assert_eq!(json["subject"], "meter-001");
        assert_eq!(json["data"], 5);
    }
}
