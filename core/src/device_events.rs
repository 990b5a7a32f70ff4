//! Device events on `smartmeter.device-events.v1` (key: device id), the one home of
//! their schema. CloudEvents `type` → `data`:
//!
//! - [`DEVICE_REGISTERED`] → [`DeviceRegistered`]: the API, when an operator registers
//!   or completes a meter.
//! - [`DEVICE_UPDATED`] → [`DeviceUpdated`]: the API; absent fields stay as they are.
//! - [`DEVICE_DECOMMISSIONED`] → [`DeviceDecommissioned`]: the API.
//! - [`DEVICE_STATUS_CHANGED`] → [`DeviceStatusChanged`]: the bridge (the meter's MQTT
//!   birth and last-will messages) and the processor (inactivity, telemetry resuming).
//!
//! The processor projects them into the `devices` table; the API's subscriptions read
//! the status changes. Commands from the API carry random ids (each command is a new
//! fact); events derived from something else carry [`derived_event_id`]s.

use jiff::tz::TimeZone;
use jiff::Timestamp;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::device::DeviceId;
use crate::event::{derived_event_id, Envelope};

pub const DEVICE_REGISTERED: &str = "dev.smartmeter.device.registered.v1";
pub const DEVICE_UPDATED: &str = "dev.smartmeter.device.updated.v1";
pub const DEVICE_DECOMMISSIONED: &str = "dev.smartmeter.device.decommissioned.v1";
pub const DEVICE_STATUS_CHANGED: &str = "dev.smartmeter.device.status-changed.v1";

/// Longest name, location or customer id accepted.
pub const TEXT_MAX_LEN: usize = 200;
/// Largest sanctioned (contracted) load accepted, kW.
pub const SANCTIONED_LOAD_MAX_KW: u32 = 10_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceEventError {
    #[error("unknown time zone {0:?}: expected an IANA name such as Europe/London")]
    UnknownTimeZone(String),
    #[error("{field} is longer than {TEXT_MAX_LEN} characters")]
    TooLong { field: &'static str },
    #[error("{field} is empty")]
    Empty { field: &'static str },
    #[error("sanctioned load {0} kW is outside 0..={SANCTIONED_LOAD_MAX_KW}")]
    SanctionedLoad(Decimal),
    #[error("unknown device event type {0:?}")]
    UnknownType(String),
    #[error("device event data does not match its type: {0}")]
    Data(String),
}

/// A meter joins the fleet (or a `discovered` one is completed): everything its
/// accounting and billing need. Registering a known device again replaces these fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceRegistered {
    pub device_id: DeviceId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// IANA zone; the device's hours, days and billing months are local to it.
    pub time_zone: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tariff_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sanctioned_load_kw: Option<Decimal>,
    /// The customer account the meter belongs to: a customer sees only its meters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<String>,
}

/// A change to a registered device; a field that is absent is left as it is. A new
/// `time_zone` re-buckets the device's stored energy into the new zone's local hours.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceUpdated {
    pub device_id: DeviceId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tariff_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sanctioned_load_kw: Option<Decimal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<String>,
}

/// The meter is taken out of service: its open period closes with a final read and
/// its history is kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceDecommissioned {
    pub device_id: DeviceId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Why a device's online state changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatusReason {
    /// The meter published `online` on `smartmeter/{id}/status` after connecting.
    Birth,
    /// The broker published the meter's last will (`offline`): the connection dropped.
    LastWill,
    /// The meter said `offline` itself (a clean disconnect).
    Disconnect,
    /// Nothing arrived from the meter for the inactivity timeout.
    Inactivity,
    /// Telemetry arrived from a meter that was offline.
    Telemetry,
}

impl StatusReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Birth => "birth",
            Self::LastWill => "last_will",
            Self::Disconnect => "disconnect",
            Self::Inactivity => "inactivity",
            Self::Telemetry => "telemetry",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceStatusChanged {
    pub device_id: DeviceId,
    pub online: bool,
    pub reason: StatusReason,
    /// When the state changed: the receive time of the status message or telemetry, or
    /// the instant the inactivity timeout ran out. The projection keeps the newest.
    pub at: Timestamp,
}

impl DeviceUpdated {
    /// An update of `device_id` that changes nothing yet.
    pub fn of(device_id: DeviceId) -> Self {
        Self {
            device_id,
            name: None,
            location: None,
            time_zone: None,
            tariff_id: None,
            sanctioned_load_kw: None,
            customer_id: None,
        }
    }
}

impl DeviceStatusChanged {
    /// Deterministic: the same observation always has the same id.
    pub fn event_id(&self) -> String {
        derived_event_id(&[
            "device-status-changed",
            self.device_id.as_str(),
            if self.online { "online" } else { "offline" },
            self.reason.as_str(),
            &self.at.to_string(),
        ])
    }
}

/// Any device event, read from its CloudEvents `type` and `data`.
#[derive(Debug, Clone, PartialEq)]
pub enum DeviceEvent {
    Registered(DeviceRegistered),
    Updated(DeviceUpdated),
    Decommissioned(DeviceDecommissioned),
    StatusChanged(DeviceStatusChanged),
}

impl DeviceEvent {
    pub fn event_type(&self) -> &'static str {
        match self {
            Self::Registered(_) => DEVICE_REGISTERED,
            Self::Updated(_) => DEVICE_UPDATED,
            Self::Decommissioned(_) => DEVICE_DECOMMISSIONED,
            Self::StatusChanged(_) => DEVICE_STATUS_CHANGED,
        }
    }

    pub fn device_id(&self) -> &DeviceId {
        match self {
            Self::Registered(e) => &e.device_id,
            Self::Updated(e) => &e.device_id,
            Self::Decommissioned(e) => &e.device_id,
            Self::StatusChanged(e) => &e.device_id,
        }
    }

    /// Reads the event from an envelope whose `data` is still JSON.
    pub fn from_envelope(envelope: &Envelope<serde_json::Value>) -> Result<Self, DeviceEventError> {
        fn data<T: serde::de::DeserializeOwned>(value: &serde_json::Value) -> Result<T, DeviceEventError> {
            T::deserialize(value).map_err(|error| DeviceEventError::Data(error.to_string()))
        }
        let event = match envelope.event_type.as_str() {
            DEVICE_REGISTERED => Self::Registered(data(&envelope.data)?),
            DEVICE_UPDATED => Self::Updated(data(&envelope.data)?),
            DEVICE_DECOMMISSIONED => Self::Decommissioned(data(&envelope.data)?),
            DEVICE_STATUS_CHANGED => Self::StatusChanged(data(&envelope.data)?),
            other => return Err(DeviceEventError::UnknownType(other.to_owned())),
        };
        event.validate()?;
        Ok(event)
    }

    /// The envelope this event travels in, with `id` and event time `time`.
    pub fn to_envelope(&self, id: String, source: &str, time: Timestamp) -> Envelope<serde_json::Value> {
        let data = match self {
            Self::Registered(e) => serde_json::to_value(e),
            Self::Updated(e) => serde_json::to_value(e),
            Self::Decommissioned(e) => serde_json::to_value(e),
            Self::StatusChanged(e) => serde_json::to_value(e),
        }
        .expect("device events serialize");
        Envelope::new(id, source, self.event_type(), time, self.device_id().as_str(), data)
    }

    /// Checks what serde cannot: a known time zone, bounded texts, a sane load. A
    /// command that fails is refused whole; a consumer skips (and counts) such an event.
    pub fn validate(&self) -> Result<(), DeviceEventError> {
        match self {
            Self::Registered(e) => {
                time_zone(&e.time_zone)?;
                text("name", e.name.as_deref())?;
                text("location", e.location.as_deref())?;
                text("tariff_id", e.tariff_id.as_deref())?;
                text("customer_id", e.customer_id.as_deref())?;
                load(e.sanctioned_load_kw)
            }
            Self::Updated(e) => {
                if let Some(zone) = &e.time_zone {
                    time_zone(zone)?;
                }
                text("name", e.name.as_deref())?;
                text("location", e.location.as_deref())?;
                text("tariff_id", e.tariff_id.as_deref())?;
                text("customer_id", e.customer_id.as_deref())?;
                load(e.sanctioned_load_kw)
            }
            Self::Decommissioned(e) => text("reason", e.reason.as_deref()),
            Self::StatusChanged(_) => Ok(()),
        }
    }
}

/// Resolves an IANA zone name from the bundled tz database.
pub fn time_zone(name: &str) -> Result<TimeZone, DeviceEventError> {
    if name.is_empty() {
        return Err(DeviceEventError::Empty { field: "time_zone" });
    }
    TimeZone::get(name).map_err(|_| DeviceEventError::UnknownTimeZone(name.to_owned()))
}

fn text(field: &'static str, value: Option<&str>) -> Result<(), DeviceEventError> {
    match value {
        Some(v) if v.trim().is_empty() => Err(DeviceEventError::Empty { field }),
        Some(v) if v.chars().count() > TEXT_MAX_LEN => Err(DeviceEventError::TooLong { field }),
        _ => Ok(()),
    }
}

fn load(kw: Option<Decimal>) -> Result<(), DeviceEventError> {
    match kw {
        Some(kw) if kw < Decimal::ZERO || kw > Decimal::from(SANCTIONED_LOAD_MAX_KW) => {
            Err(DeviceEventError::SanctionedLoad(kw))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(id: &str) -> DeviceId {
        DeviceId::parse(id).unwrap()
    }

    fn registered() -> DeviceRegistered {
        DeviceRegistered {
            device_id: device("meter-001"),
            name: Some("Kitchen".into()),
            location: None,
            time_zone: "Asia/Kolkata".into(),
            tariff_id: Some("kseb_lt1_domestic_2019".into()),
            sanctioned_load_kw: Some(Decimal::new(35, 1)),
            customer_id: Some("cust-42".into()),
        }
    }

    #[test]
    fn every_kind_round_trips_through_its_envelope() {
        let at: Timestamp = "2026-01-29T10:00:00Z".parse().unwrap();
        let events = [
            DeviceEvent::Registered(registered()),
            DeviceEvent::Updated(DeviceUpdated {
                time_zone: Some("Europe/London".into()),
                ..DeviceUpdated::of(device("meter-001"))
            }),
            DeviceEvent::Decommissioned(DeviceDecommissioned {
                device_id: device("meter-001"),
                reason: None,
            }),
            DeviceEvent::StatusChanged(DeviceStatusChanged {
                device_id: device("meter-001"),
                online: false,
                reason: StatusReason::LastWill,
                at,
            }),
        ];
        for event in events {
            let envelope = event.to_envelope("id".into(), "/test", at);
            assert_eq!(envelope.subject, "meter-001");
            let wire: Envelope<serde_json::Value> =
                serde_json::from_str(&serde_json::to_string(&envelope).unwrap()).unwrap();
            assert_eq!(DeviceEvent::from_envelope(&wire).unwrap(), event);
        }
    }

    #[test]
    fn absent_update_fields_are_absent_on_the_wire() {
        let update = DeviceUpdated { name: Some("Hall".into()), ..DeviceUpdated::of(device("m1")) };
        assert_eq!(
            serde_json::to_value(&update).unwrap(),
            serde_json::json!({"device_id": "m1", "name": "Hall"})
        );
    }

    #[test]
    fn bad_commands_are_refused_with_the_field() {
        let mut bad = registered();
        bad.time_zone = "Mars/Olympus".into();
        assert_eq!(
            DeviceEvent::Registered(bad).validate(),
            Err(DeviceEventError::UnknownTimeZone("Mars/Olympus".into()))
        );
        let mut bad = registered();
        bad.sanctioned_load_kw = Some(Decimal::NEGATIVE_ONE);
        assert!(matches!(DeviceEvent::Registered(bad).validate(), Err(DeviceEventError::SanctionedLoad(_))));
        let mut bad = registered();
        bad.name = Some(" ".into());
        assert_eq!(DeviceEvent::Registered(bad).validate(), Err(DeviceEventError::Empty { field: "name" }));
        let unknown = Envelope::new(
            "id".into(),
            "/t",
            "dev.smartmeter.device.exploded.v1",
            Timestamp::UNIX_EPOCH,
            "m1",
            serde_json::json!({}),
        );
        assert!(matches!(DeviceEvent::from_envelope(&unknown), Err(DeviceEventError::UnknownType(_))));
    }

    #[test]
    fn status_ids_are_deterministic() {
        let at: Timestamp = "2026-01-29T10:00:00Z".parse().unwrap();
        let change =
            DeviceStatusChanged { device_id: device("m1"), online: true, reason: StatusReason::Birth, at };
        assert_eq!(change.event_id(), change.clone().event_id());
        let later = DeviceStatusChanged { at: at + jiff::SignedDuration::from_secs(1), ..change.clone() };
        assert_ne!(change.event_id(), later.event_id());
    }
}
