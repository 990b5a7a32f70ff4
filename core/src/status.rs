//! The meter's status messages on `smartmeter/{device_id}/status` and what they mean.
//!
//! The firmware (`firmware/core/src/mqtt.rs`) publishes `online`, retained, right after
//! it connects (its birth message) and registers `offline`, retained, as its last will,
//! which the broker publishes when the connection drops without a goodbye. Before a
//! planned disconnect the meter publishes the same `offline` itself. The two offline
//! cases carry the same bytes, so a plain `offline` cannot tell them apart: it is read
//! as [`StatusReason::LastWill`] (the meter is gone; whether it said goodbye is not
//! known). A client that can say more sends the JSON form
//! `{"status":"offline","reason":"disconnect"}`.
//!
//! Accepted payloads: `online` / `offline` (ASCII case ignored, so Tasmota's `Online` /
//! `Offline` work too, surrounding whitespace ignored) or a JSON object with `status`
//! (`online`/`offline`), optional `reason` (`birth` with online; `last_will` or
//! `disconnect` with offline) and optional `device_id`, which must match the topic.
//! Other fields are ignored. Anything else is a [`Rejection`] for the dead-letter topic.
//!
//! Like [`crate::telemetry::validate`], [`parse`] is a pure function of (topic, payload,
//! receive time); the change is stamped with the receive time, since a status message
//! carries no time of its own (and a meter's clock may be wrong anyway).

use jiff::Timestamp;
use serde_json::Value;

use crate::device::DeviceId;
use crate::device_events::{DeviceStatusChanged, StatusReason};
use crate::telemetry::{RejectCode, Rejection};

/// MQTT topic filter the bridge subscribes to for status messages.
pub const STATUS_TOPIC_FILTER: &str = "smartmeter/+/status";
const TOPIC_PREFIX: &str = "smartmeter/";
const STATUS_SUFFIX: &str = "/status";

/// Longest status payload read; a status is a word or a small object.
pub const MAX_STATUS_PAYLOAD_BYTES: usize = 1024;

pub fn status_topic(device_id: &DeviceId) -> String {
    format!("{TOPIC_PREFIX}{device_id}{STATUS_SUFFIX}")
}

/// Whether `topic` has the shape of a status topic (`smartmeter/…/status`).
pub fn is_status_topic(topic: &str) -> bool {
    topic.starts_with(TOPIC_PREFIX) && topic.ends_with(STATUS_SUFFIX)
}

/// The device named by `smartmeter/{device_id}/status`.
pub fn device_from_status_topic(topic: &str) -> Result<DeviceId, Rejection> {
    let id = topic.strip_prefix(TOPIC_PREFIX).and_then(|rest| rest.strip_suffix(STATUS_SUFFIX)).ok_or_else(
        || {
            Rejection::new(
                RejectCode::InvalidTopic,
                format!("topic {topic:?} is not of the form smartmeter/{{device_id}}/status"),
            )
        },
    )?;
    DeviceId::parse(id).map_err(|e| {
        Rejection::new(RejectCode::InvalidTopic, format!("topic {topic:?} names no valid device: {e}"))
    })
}

/// Reads one status message. See the module documentation.
pub fn parse(topic: &str, payload: &[u8], received_at: Timestamp) -> Result<DeviceStatusChanged, Rejection> {
    let device_id = device_from_status_topic(topic)?;
    if payload.len() > MAX_STATUS_PAYLOAD_BYTES {
        return Err(Rejection::new(
            RejectCode::PayloadTooLarge,
            format!("status payload has {} bytes; the limit is {MAX_STATUS_PAYLOAD_BYTES}", payload.len()),
        ));
    }
    let text = std::str::from_utf8(payload).map_err(|e| {
        Rejection::new(RejectCode::InvalidStatus, format!("status payload is not UTF-8 text: {e}"))
    })?;
    let text = text.trim();
    let (online, reason) = if text.starts_with('{') {
        from_json(text, &device_id)?
    } else if text.eq_ignore_ascii_case("online") {
        (true, StatusReason::Birth)
    } else if text.eq_ignore_ascii_case("offline") {
        (false, StatusReason::LastWill)
    } else if text.is_empty() {
        return Err(Rejection::new(
            RejectCode::InvalidStatus,
            "status payload is empty (a retained status being cleared?); expected online or offline",
        ));
    } else {
        return Err(Rejection::new(
            RejectCode::InvalidStatus,
            format!("status {:?} is neither online nor offline", shorten(text)),
        ));
    };
    Ok(DeviceStatusChanged { device_id, online, reason, at: received_at })
}

fn from_json(text: &str, topic_device: &DeviceId) -> Result<(bool, StatusReason), Rejection> {
    let object = match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(object)) => object,
        Ok(_) => {
            return Err(Rejection::new(RejectCode::InvalidJson, "status payload is JSON but not an object"))
        }
        Err(e) => {
            return Err(Rejection::new(
                RejectCode::InvalidJson,
                format!("status payload is not valid JSON: {e}"),
            ))
        }
    };
    if let Some(device) = object.get("device_id").filter(|v| !v.is_null()) {
        let text = device.as_str().ok_or_else(|| {
            Rejection::new(RejectCode::InvalidField, "field \"device_id\" must be a string")
        })?;
        let device = DeviceId::parse(text)
            .map_err(|e| Rejection::new(RejectCode::InvalidDeviceId, format!("device_id {text:?}: {e}")))?;
        if &device != topic_device {
            return Err(Rejection::new(
                RejectCode::DeviceMismatch,
                format!("payload device_id {device:?} does not match topic device {topic_device:?}"),
            ));
        }
    }
    let status = match object.get("status") {
        None | Some(Value::Null) => {
            return Err(Rejection::new(
                RejectCode::MissingField,
                "required field \"status\" is missing or null",
            ))
        }
        Some(Value::String(status)) => status.as_str(),
        Some(_) => {
            return Err(Rejection::new(RejectCode::InvalidStatus, "field \"status\" must be a string"))
        }
    };
    let reason = object.get("reason").and_then(Value::as_str);
    match (status.to_ascii_lowercase().as_str(), reason) {
        ("online", None | Some("birth")) => Ok((true, StatusReason::Birth)),
        ("offline", None | Some("last_will")) => Ok((false, StatusReason::LastWill)),
        ("offline", Some("disconnect")) => Ok((false, StatusReason::Disconnect)),
        ("online" | "offline", Some(other)) => Err(Rejection::new(
            RejectCode::InvalidStatus,
            format!("reason {:?} does not go with status {status:?}", shorten(other)),
        )),
        _ => Err(Rejection::new(
            RejectCode::InvalidStatus,
            format!("status {:?} is neither online nor offline", shorten(status)),
        )),
    }
}

/// At most 40 characters of untrusted text, for a reason message.
fn shorten(text: &str) -> String {
    let mut short: String = text.chars().take(40).collect();
    if short.len() < text.len() {
        short.push('…');
    }
    short
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOPIC: &str = "smartmeter/meter-001/status";

    fn at() -> Timestamp {
        "2026-01-29T10:00:01Z".parse().unwrap()
    }

    fn read(payload: &str) -> Result<(bool, StatusReason), RejectCode> {
        parse(TOPIC, payload.as_bytes(), at()).map(|s| (s.online, s.reason)).map_err(|r| r.code)
    }

    #[test]
    fn the_firmware_s_birth_and_will_are_read() {
        let birth = parse(TOPIC, b"online", at()).unwrap();
        assert_eq!(birth.device_id.as_str(), "meter-001");
        assert_eq!((birth.online, birth.reason, birth.at), (true, StatusReason::Birth, at()));
        assert_eq!(read("offline"), Ok((false, StatusReason::LastWill)));
        assert_eq!(read(" Offline\n"), Ok((false, StatusReason::LastWill)));
        assert_eq!(read("ONLINE"), Ok((true, StatusReason::Birth)));
    }

    #[test]
    fn the_json_form_can_say_it_was_a_clean_disconnect() {
        assert_eq!(read(r#"{"status":"online"}"#), Ok((true, StatusReason::Birth)));
        assert_eq!(read(r#"{"status":"offline"}"#), Ok((false, StatusReason::LastWill)));
        assert_eq!(
            read(r#"{"status":"offline","reason":"disconnect","device_id":"meter-001","x":1}"#),
            Ok((false, StatusReason::Disconnect))
        );
    }

    #[test]
    fn bad_status_messages_have_their_codes() {
        assert_eq!(read(""), Err(RejectCode::InvalidStatus));
        assert_eq!(read("maybe"), Err(RejectCode::InvalidStatus));
        assert_eq!(read(r#"{"status":"sleeping"}"#), Err(RejectCode::InvalidStatus));
        assert_eq!(read(r#"{"status":"online","reason":"disconnect"}"#), Err(RejectCode::InvalidStatus));
        assert_eq!(read(r#"{"status":true}"#), Err(RejectCode::InvalidStatus));
        assert_eq!(read(r#"{"state":"online"}"#), Err(RejectCode::MissingField));
        assert_eq!(read(r#"{"status":"online""#), Err(RejectCode::InvalidJson));
        assert_eq!(read(r#"{"status":"online","device_id":"meter-002"}"#), Err(RejectCode::DeviceMismatch));
        assert_eq!(read(r#"{"status":"online","device_id":"a/b"}"#), Err(RejectCode::InvalidDeviceId));
        assert_eq!(read(&"x".repeat(2000)), Err(RejectCode::PayloadTooLarge));
        assert_eq!(parse(TOPIC, &[0xff, 0xfe], at()).unwrap_err().code, RejectCode::InvalidStatus);
        assert_eq!(
            parse("smartmeter/a/b/status", b"online", at()).unwrap_err().code,
            RejectCode::InvalidTopic
        );
    }

    #[test]
    fn dead_letters_of_status_topics_are_keyed_by_device() {
        let rejection = parse(TOPIC, b"maybe", at()).unwrap_err();
        let letter = crate::telemetry::DeadLetter::new(TOPIC, b"maybe", at(), rejection);
        assert_eq!(letter.key(), "meter-001");
        assert_eq!(letter.error_code, RejectCode::InvalidStatus);
    }

    #[test]
    fn topics_round_trip() {
        let device = DeviceId::parse("meter-001").unwrap();
        assert_eq!(status_topic(&device), TOPIC);
        assert!(is_status_topic(TOPIC));
        assert!(!is_status_topic("smartmeter/meter-001/telemetry"));
        assert_eq!(device_from_status_topic(TOPIC).unwrap(), device);
    }
}
