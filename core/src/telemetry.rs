//! The meter's telemetry: the seed firmware's MQTT payload, its validation, and the
//! validated [`Reading`] that travels on `smartmeter.telemetry.v1`.
//!
//! Validation is a pure function of (MQTT topic, payload bytes, receive time, config),
//! so the bridge, the tests and any replay tool classify a message identically. A
//! message that fails becomes a [`DeadLetter`] with a bounded [`RejectCode`] and a
//! human-readable reason; nothing is dropped silently.

use base64::Engine as _;
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::device::DeviceId;

/// MQTT topic filter the bridge subscribes to.
pub const TELEMETRY_TOPIC_FILTER: &str = "smartmeter/+/telemetry";
const TOPIC_PREFIX: &str = "smartmeter/";
const TELEMETRY_SUFFIX: &str = "/telemetry";

/// Measuring range of the PZEM-004T v3.0 (datasheet), used as plausibility bounds.
pub mod range {
    pub const VOLTAGE_V: (f64, f64) = (80.0, 260.0);
    pub const CURRENT_A: (f64, f64) = (0.0, 100.0);
    pub const POWER_W: (f64, f64) = (0.0, 23_000.0);
    pub const FREQUENCY_HZ: (f64, f64) = (45.0, 65.0);
    pub const POWER_FACTOR: (f64, f64) = (0.0, 1.0);
    /// The energy register counts up to 9999.99 kWh and then rolls over.
    pub const ENERGY_KWH: (f64, f64) = (0.0, 9_999.99);
    pub const RSSI_DBM: (i64, i64) = (-130, 0);
}

pub fn telemetry_topic(device_id: &DeviceId) -> String {
    format!("{TOPIC_PREFIX}{device_id}{TELEMETRY_SUFFIX}")
}

/// How the bridge judges a message. Defaults are the DESIGN's.
#[derive(Debug, Clone)]
pub struct ValidationConfig {
    /// Larger payloads are refused before parsing.
    pub max_payload_bytes: usize,
    /// A meter timestamp before this means its clock was never set.
    pub clock_floor: Timestamp,
    /// A meter timestamp further than this ahead of the receive time means a wrong clock.
    pub max_clock_ahead: SignedDuration,
}

impl Default for ValidationConfig {
    fn default() -> Self {
        Self {
            max_payload_bytes: 4096,
            clock_floor: "2020-01-01T00:00:00Z".parse().expect("valid constant"),
            max_clock_ahead: SignedDuration::from_mins(5),
        }
    }
}

/// One validated reading, as published on `smartmeter.telemetry.v1`.
///
/// Field names are the seed payload's, so old consumers of the payload can read it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    pub device_id: DeviceId,
    /// Event time used for accounting: the meter's timestamp, or `received_at` when the
    /// meter's clock was not synced (then `clock_unsynced` is set).
    pub timestamp: Timestamp,
    /// The timestamp exactly as the meter sent it.
    pub meter_timestamp: Timestamp,
    /// When the bridge received the MQTT message.
    pub received_at: Timestamp,
    pub voltage: f64,
    pub current: f64,
    pub power_w: f64,
    /// The meter's cumulative energy counter: the billing truth.
    pub energy_kwh: f64,
    pub power_factor: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequency_hz: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rssi: Option<i32>,
    /// Per-boot sequence number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
    /// Firmware version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fw: Option<String>,
    #[serde(default)]
    pub clock_unsynced: bool,
}

/// Why a message was refused. The set is closed so it can label metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectCode {
    InvalidTopic,
    PayloadTooLarge,
    InvalidJson,
    NonFiniteNumber,
    MissingField,
    InvalidField,
    OutOfRange,
    InvalidTimestamp,
    InvalidDeviceId,
    DeviceMismatch,
    /// A status message (`smartmeter/{id}/status`) that is neither `online` nor
    /// `offline` (plain or as `{"status": ...}`).
    InvalidStatus,
}

impl RejectCode {
    pub const ALL: [RejectCode; 11] = [
        RejectCode::InvalidTopic,
        RejectCode::PayloadTooLarge,
        RejectCode::InvalidJson,
        RejectCode::NonFiniteNumber,
        RejectCode::MissingField,
        RejectCode::InvalidField,
        RejectCode::OutOfRange,
        RejectCode::InvalidTimestamp,
        RejectCode::InvalidDeviceId,
        RejectCode::DeviceMismatch,
        RejectCode::InvalidStatus,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RejectCode::InvalidTopic => "invalid_topic",
            RejectCode::PayloadTooLarge => "payload_too_large",
            RejectCode::InvalidJson => "invalid_json",
            RejectCode::NonFiniteNumber => "non_finite_number",
            RejectCode::MissingField => "missing_field",
            RejectCode::InvalidField => "invalid_field",
            RejectCode::OutOfRange => "out_of_range",
            RejectCode::InvalidTimestamp => "invalid_timestamp",
            RejectCode::InvalidDeviceId => "invalid_device_id",
            RejectCode::DeviceMismatch => "device_mismatch",
            RejectCode::InvalidStatus => "invalid_status",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {reason}", code.as_str())]
pub struct Rejection {
    pub code: RejectCode,
    pub reason: String,
}

impl Rejection {
    pub(crate) fn new(code: RejectCode, reason: impl Into<String>) -> Self {
        Self { code, reason: reason.into() }
    }
}

/// A refused MQTT message, as published on `smartmeter.telemetry.dlq.v1`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub mqtt_topic: String,
    /// The device the topic names, when the topic is a well-formed telemetry or status topic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    pub received_at: Timestamp,
    pub error_code: RejectCode,
    pub reason: String,
    /// The payload exactly as received, base64 (standard alphabet, padded).
    pub payload_base64: String,
}

impl DeadLetter {
    pub fn new(mqtt_topic: &str, payload: &[u8], received_at: Timestamp, rejection: Rejection) -> Self {
        Self {
            mqtt_topic: mqtt_topic.to_owned(),
            device_id: device_from_topic(mqtt_topic)
                .or_else(|_| crate::status::device_from_status_topic(mqtt_topic))
                .ok()
                .map(String::from),
            received_at,
            error_code: rejection.code,
            reason: rejection.reason,
            payload_base64: base64::engine::general_purpose::STANDARD.encode(payload),
        }
    }

    /// Kafka key: the device id, or the MQTT topic when the topic names no valid device.
    pub fn key(&self) -> &str {
        self.device_id.as_deref().unwrap_or(&self.mqtt_topic)
    }

    pub fn payload(&self) -> Result<Vec<u8>, base64::DecodeError> {
        base64::engine::general_purpose::STANDARD.decode(&self.payload_base64)
    }
}

/// The device named by `smartmeter/{device_id}/telemetry`.
pub fn device_from_topic(topic: &str) -> Result<DeviceId, Rejection> {
    let id = topic
        .strip_prefix(TOPIC_PREFIX)
        .and_then(|rest| rest.strip_suffix(TELEMETRY_SUFFIX))
        .ok_or_else(|| {
            Rejection::new(
                RejectCode::InvalidTopic,
                format!("topic {topic:?} is not of the form smartmeter/{{device_id}}/telemetry"),
            )
        })?;
    DeviceId::parse(id).map_err(|e| {
        Rejection::new(RejectCode::InvalidTopic, format!("topic {topic:?} names no valid device: {e}"))
    })
}

/// Validates one MQTT message. See the module documentation.
pub fn validate(
    mqtt_topic: &str,
    payload: &[u8],
    received_at: Timestamp,
    config: &ValidationConfig,
) -> Result<Reading, Rejection> {
    let topic_device = device_from_topic(mqtt_topic)?;
    if payload.len() > config.max_payload_bytes {
        return Err(Rejection::new(
            RejectCode::PayloadTooLarge,
            format!("payload has {} bytes; the limit is {}", payload.len(), config.max_payload_bytes),
        ));
    }
    let object = parse_object(payload)?;
    let fields = Fields(&object);

    let device_text = fields.required_str("device_id")?;
    let device_id = DeviceId::parse(device_text).map_err(|e| {
        Rejection::new(RejectCode::InvalidDeviceId, format!("device_id {device_text:?}: {e}"))
    })?;
    if device_id != topic_device {
        return Err(Rejection::new(
            RejectCode::DeviceMismatch,
            format!("payload device_id {device_id:?} does not match topic device {topic_device:?}"),
        ));
    }

    let timestamp_text = fields.required_str("timestamp")?;
    let meter_timestamp: Timestamp = timestamp_text.parse().map_err(|e| {
        Rejection::new(
            RejectCode::InvalidTimestamp,
            format!("timestamp {timestamp_text:?} is not an RFC 3339 time with offset: {e}"),
        )
    })?;

    let voltage = fields.required_f64("voltage", range::VOLTAGE_V)?;
    let current = fields.required_f64("current", range::CURRENT_A)?;
    let power_w = fields.required_f64("power_w", range::POWER_W)?;
    let energy_kwh = fields.required_f64("energy_kwh", range::ENERGY_KWH)?;
    let power_factor = fields.required_f64("power_factor", range::POWER_FACTOR)?;
    let frequency_hz = fields.optional_f64("frequency_hz", range::FREQUENCY_HZ)?;
    let rssi =
        fields.optional_i64("rssi", range::RSSI_DBM)?.map(|v| i32::try_from(v).expect("range-checked"));
    let seq = fields.optional_u64("seq")?;
    let boot_id = fields.optional_string("boot_id", 64)?;
    let fw = fields.optional_string("fw", 64)?;

    let clock_unsynced = meter_timestamp < config.clock_floor
        || meter_timestamp.duration_since(received_at) > config.max_clock_ahead;
    let timestamp = if clock_unsynced { received_at } else { meter_timestamp };

    Ok(Reading {
        device_id,
        timestamp,
        meter_timestamp,
        received_at,
        voltage,
        current,
        power_w,
        energy_kwh,
        power_factor,
        frequency_hz,
        rssi,
        seq,
        boot_id,
        fw,
        clock_unsynced,
    })
}

fn parse_object(payload: &[u8]) -> Result<Map<String, Value>, Rejection> {
    let text = std::str::from_utf8(payload)
        .map_err(|e| Rejection::new(RejectCode::InvalidJson, format!("payload is not UTF-8 text: {e}")))?;
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(Rejection::new(
            RejectCode::InvalidJson,
            format!("payload is JSON but not an object (found {})", json_kind(&other)),
        )),
        Err(e) => match non_finite_token(text) {
            Some(token) => Err(Rejection::new(
                RejectCode::NonFiniteNumber,
                format!("payload contains the non-finite number {token:?}, which JSON cannot carry"),
            )),
            None => Err(Rejection::new(RejectCode::InvalidJson, format!("payload is not valid JSON: {e}"))),
        },
    }
}

/// Firmware that prints floats with `%f` sends `nan` or `inf`, which is not JSON. Finds
/// such a bare token outside string literals so the DLQ reason names the real cause.
fn non_finite_token(text: &str) -> Option<&str> {
    const TOKENS: [&str; 8] = ["-Infinity", "Infinity", "-inf", "inf", "-nan", "NaN", "nan", "-NaN"];
    let bytes = text.as_bytes();
    let mut in_string = false;
    let mut escaped = false;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
        } else if b == b'"' {
            in_string = true;
        } else if let Some(token) = TOKENS.iter().find(|t| text[i..].starts_with(**t)) {
            let preceded_by_value_start = text[..i].trim_end().ends_with([':', '[', ',']);
            if preceded_by_value_start {
                return Some(token);
            }
        }
        i += 1;
    }
    None
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

struct Fields<'a>(&'a Map<String, Value>);

impl Fields<'_> {
    fn get(&self, name: &str) -> Option<&Value> {
        self.0.get(name).filter(|v| !v.is_null())
    }

    fn missing(name: &str) -> Rejection {
        Rejection::new(RejectCode::MissingField, format!("required field {name:?} is missing or null"))
    }

    fn wrong_type(name: &str, expected: &str, found: &Value) -> Rejection {
        Rejection::new(
            RejectCode::InvalidField,
            format!("field {name:?} must be {expected}, found {}", json_kind(found)),
        )
    }

    fn required_str(&self, name: &str) -> Result<&str, Rejection> {
        let value = self.get(name).ok_or_else(|| Self::missing(name))?;
        value.as_str().ok_or_else(|| Self::wrong_type(name, "a string", value))
    }

    fn number(&self, name: &str, value: &Value) -> Result<f64, Rejection> {
        let number = value.as_f64().ok_or_else(|| Self::wrong_type(name, "a number", value))?;
        if !number.is_finite() {
            return Err(Rejection::new(
                RejectCode::NonFiniteNumber,
                format!("field {name:?} is not a finite number"),
            ));
        }
        Ok(number)
    }

    fn required_f64(&self, name: &str, bounds: (f64, f64)) -> Result<f64, Rejection> {
        let value = self.get(name).ok_or_else(|| Self::missing(name))?;
        let number = self.number(name, value)?;
        check_range(name, number, bounds)
    }

    fn optional_f64(&self, name: &str, bounds: (f64, f64)) -> Result<Option<f64>, Rejection> {
        self.get(name)
            .map(|value| self.number(name, value).and_then(|n| check_range(name, n, bounds)))
            .transpose()
    }

    fn optional_i64(&self, name: &str, (low, high): (i64, i64)) -> Result<Option<i64>, Rejection> {
        let Some(value) = self.get(name) else { return Ok(None) };
        let number = value.as_i64().ok_or_else(|| Self::wrong_type(name, "an integer", value))?;
        if !(low..=high).contains(&number) {
            return Err(Rejection::new(
                RejectCode::OutOfRange,
                format!("field {name:?} = {number} is outside {low}..={high}"),
            ));
        }
        Ok(Some(number))
    }

    fn optional_u64(&self, name: &str) -> Result<Option<u64>, Rejection> {
        let Some(value) = self.get(name) else { return Ok(None) };
        value.as_u64().map(Some).ok_or_else(|| Self::wrong_type(name, "a non-negative integer", value))
    }

    fn optional_string(&self, name: &str, max_len: usize) -> Result<Option<String>, Rejection> {
        let Some(value) = self.get(name) else { return Ok(None) };
        let text = value.as_str().ok_or_else(|| Self::wrong_type(name, "a string", value))?;
        if text.len() > max_len {
            return Err(Rejection::new(
                RejectCode::OutOfRange,
                format!("field {name:?} is longer than {max_len} bytes"),
            ));
        }
        Ok(Some(text.to_owned()))
    }
}

fn check_range(name: &str, number: f64, (low, high): (f64, f64)) -> Result<f64, Rejection> {
    if (low..=high).contains(&number) {
        Ok(number)
    } else {
        Err(Rejection::new(
            RejectCode::OutOfRange,
            format!("field {name:?} = {number} is outside the meter's range {low}..={high}"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOPIC: &str = "smartmeter/meter-001/telemetry";
    const SEED: &str = r#"{"device_id":"meter-001","timestamp":"2026-01-29T10:00:00Z","voltage":230.4,"current":2.73,
 "power_w":628.99,"energy_kwh":12.345,"power_factor":0.98,"rssi":-60}"#;

    fn received() -> Timestamp {
        "2026-01-29T10:00:01Z".parse().unwrap()
    }

    fn check(payload: &str) -> Result<Reading, Rejection> {
        validate(TOPIC, payload.as_bytes(), received(), &ValidationConfig::default())
    }

    fn code(payload: &str) -> RejectCode {
        check(payload).unwrap_err().code
    }

    #[test]
    fn seed_payload_parses_exactly() {
        let reading = check(SEED).unwrap();
        assert_eq!(reading.device_id.as_str(), "meter-001");
        assert_eq!(reading.timestamp, "2026-01-29T10:00:00Z".parse::<Timestamp>().unwrap());
        assert_eq!(reading.meter_timestamp, reading.timestamp);
        assert_eq!(reading.voltage, 230.4);
        assert_eq!(reading.current, 2.73);
        assert_eq!(reading.power_w, 628.99);
        assert_eq!(reading.energy_kwh, 12.345);
        assert_eq!(reading.power_factor, 0.98);
        assert_eq!(reading.rssi, Some(-60));
        assert!(!reading.clock_unsynced);
    }

    #[test]
    fn optional_fields_are_read() {
        let payload = SEED.replace(
            r#""rssi":-60"#,
            r#""rssi":-60,"frequency_hz":50.02,"seq":17,"boot_id":"b-9","fw":"1.4.2""#,
        );
        let reading = check(&payload).unwrap();
        assert_eq!(reading.frequency_hz, Some(50.02));
        assert_eq!(reading.seq, Some(17));
        assert_eq!(reading.boot_id.as_deref(), Some("b-9"));
        assert_eq!(reading.fw.as_deref(), Some("1.4.2"));
    }

    #[test]
    fn each_kind_of_bad_input_has_its_code() {
        assert_eq!(code("not json"), RejectCode::InvalidJson);
        assert_eq!(code("[1,2]"), RejectCode::InvalidJson);
        assert_eq!(code(&SEED.replace("628.99", "NaN")), RejectCode::NonFiniteNumber);
        assert_eq!(code(&SEED.replace("230.4", "inf")), RejectCode::NonFiniteNumber);
        assert_eq!(code(&SEED.replace("230.4", "-Infinity")), RejectCode::NonFiniteNumber);
        assert_eq!(code(&SEED.replace(r#""energy_kwh":12.345,"#, "")), RejectCode::MissingField);
        assert_eq!(code(&SEED.replace("12.345", "null")), RejectCode::MissingField);
        assert_eq!(code(&SEED.replace("12.345", r#""12.345""#)), RejectCode::InvalidField);
        assert_eq!(code(&SEED.replace("230.4", "400")), RejectCode::OutOfRange);
        assert_eq!(code(&SEED.replace("628.99", "-1")), RejectCode::OutOfRange);
        assert_eq!(code(&SEED.replace("0.98", "1.5")), RejectCode::OutOfRange);
        assert_eq!(code(&SEED.replace("12.345", "10000")), RejectCode::OutOfRange);
        assert_eq!(code(&SEED.replace("2026-01-29T10:00:00Z", "yesterday")), RejectCode::InvalidTimestamp);
        assert_eq!(code(&SEED.replace(r#""meter-001""#, r#""meter-002""#)), RejectCode::DeviceMismatch);
        assert_eq!(code(&SEED.replace(r#""meter-001""#, r#""a/b""#)), RejectCode::InvalidDeviceId);
        let oversize = format!("{}{}", SEED, " ".repeat(5000));
        assert_eq!(code(&oversize), RejectCode::PayloadTooLarge);
        let bad_topic =
            validate("smartmeter/a/b/telemetry", SEED.as_bytes(), received(), &Default::default());
        assert_eq!(bad_topic.unwrap_err().code, RejectCode::InvalidTopic);
    }

    #[test]
    fn nan_inside_a_string_is_not_a_non_finite_number() {
        let payload = SEED.replace(r#""rssi":-60"#, r#""fw":"nan-build" "#);
        assert_eq!(code(&format!("{payload}x")), RejectCode::InvalidJson);
    }

    #[test]
    fn unsynced_clocks_are_restamped_and_flagged() {
        let early = check(&SEED.replace("2026-01-29T10:00:00Z", "1970-01-01T00:00:12Z")).unwrap();
        assert!(early.clock_unsynced);
        assert_eq!(early.timestamp, received());
        assert_eq!(early.meter_timestamp, "1970-01-01T00:00:12Z".parse::<Timestamp>().unwrap());

        let ahead = check(&SEED.replace("2026-01-29T10:00:00Z", "2026-01-29T10:06:00Z")).unwrap();
        assert!(ahead.clock_unsynced);
        let slightly_ahead = check(&SEED.replace("2026-01-29T10:00:00Z", "2026-01-29T10:04:00Z")).unwrap();
        assert!(!slightly_ahead.clock_unsynced);
    }

    #[test]
    fn dead_letter_keeps_the_payload_and_reason() {
        let rejection = check("{oops").unwrap_err();
        let letter = DeadLetter::new(TOPIC, b"{oops", received(), rejection);
        assert_eq!(letter.key(), "meter-001");
        assert_eq!(letter.payload().unwrap(), b"{oops");
        let json = serde_json::to_value(&letter).unwrap();
        assert_eq!(json["error_code"], "invalid_json");
    }

    #[test]
    fn reading_round_trips_through_json() {
        let reading = check(SEED).unwrap();
        let back: Reading = serde_json::from_str(&serde_json::to_string(&reading).unwrap()).unwrap();
        assert_eq!(back, reading);
    }
}
