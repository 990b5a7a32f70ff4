//! The seed firmware's telemetry JSON, built from a replayed [`MeterReading`].
//!
//! Interval data sets carry only energy. The gauges are DERIVED, not measured:
//! - `power_w`: the average power of the reading's slot, slot energy / 0.5 h, clamped
//!   to the PZEM-004T's 0..=23 kW;
//! - `voltage`: 230.0 V, the UK nominal voltage;
//! - `current`: `power_w / voltage`, to the PZEM's 1 mA;
//! - `power_factor`: 1.0;
//! - `rssi`: omitted, there is no radio.
//!
//! `energy_kwh` is the counter exactly, written as a decimal from the integer mWh: 3
//! decimals for whole Wh, up to 6 when interpolating (never an exponent, never a
//! binary-float artefact).

use std::fmt;

use serde::{Serialize, Serializer};
use smartmeter_core::telemetry::range;
use smartmeter_core::DeviceId;

use crate::counter::MeterReading;

/// UK nominal supply voltage.
pub const NOMINAL_VOLTAGE_V: f64 = 230.0;
/// Firmware version reported in `fw`.
pub const FW: &str = concat!("meter-sim/", env!("CARGO_PKG_VERSION"));
/// Wh in a half hour × 2 = average W.
const SLOTS_PER_HOUR: u64 = 2;

/// The seed payload plus the optional `seq` and `fw`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Telemetry<'a> {
    pub device_id: &'a str,
    /// RFC 3339, UTC, `Z`.
    pub timestamp: String,
    pub voltage: f64,
    pub current: f64,
    pub power_w: f64,
    pub energy_kwh: Kwh,
    pub power_factor: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rssi: Option<i32>,
    pub seq: u64,
    pub fw: &'static str,
}

/// Whether the derived power had to be clamped to the meter's range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clamped(pub bool);

impl<'a> Telemetry<'a> {
    pub fn from_reading(device_id: &'a DeviceId, reading: &MeterReading) -> (Self, Clamped) {
        let (power_w, clamped) = average_power_w(reading.slot_energy_wh);
        let current = (power_w / NOMINAL_VOLTAGE_V * 1000.0).round() / 1000.0;
        let telemetry = Telemetry {
            device_id: device_id.as_str(),
            timestamp: reading.timestamp.to_string(),
            voltage: NOMINAL_VOLTAGE_V,
            current,
            power_w,
            energy_kwh: Kwh(reading.energy_mwh),
            power_factor: 1.0,
            rssi: None,
            seq: reading.seq,
            fw: FW,
        };
        (telemetry, clamped)
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("plain struct serializes")
    }
}

/// A counter value in mWh, serialized as an exact decimal number of kWh.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Kwh(pub u64);

impl fmt::Display for Kwh {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (whole, micro) = (self.0 / 1_000_000, self.0 % 1_000_000);
        if micro % 1_000 == 0 {
            write!(f, "{whole}.{:03}", micro / 1_000)
        } else {
            let fraction = format!("{micro:06}");
            write!(f, "{whole}.{}", fraction.trim_end_matches('0'))
        }
    }
}

impl Serialize for Kwh {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let number = serde_json::value::RawValue::from_string(self.to_string()).expect("a decimal is JSON");
        number.serialize(serializer)
    }
}

/// Average power of a half hour that used `slot_energy_wh`, clamped to the PZEM range.
fn average_power_w(slot_energy_wh: u32) -> (f64, Clamped) {
    let power_w = (u64::from(slot_energy_wh) * SLOTS_PER_HOUR) as f64;
    let (low, high) = range::POWER_W;
    let clamped = power_w.clamp(low, high);
    (clamped, Clamped(clamped != power_w))
}

#[cfg(test)]
mod tests {
    use jiff::Timestamp;
    use smartmeter_core::telemetry::{telemetry_topic, validate, ValidationConfig};

    use super::*;
    use crate::counter::ReadingKind;

    fn reading(energy_mwh: u64, slot_energy_wh: u32) -> MeterReading {
        MeterReading {
            timestamp: "2013-01-01T00:30:00Z".parse().unwrap(),
            energy_mwh,
            slot_energy_wh,
            kind: ReadingKind::SlotEnd,
            seq: 1,
        }
    }

    #[test]
    fn json_is_the_seed_payload_with_seq_and_fw() {
        let id = DeviceId::parse("MAC000002").unwrap();
        let (t, clamped) = Telemetry::from_reading(&id, &reading(219_000, 219));
        assert_eq!(clamped, Clamped(false));
        let json = String::from_utf8(t.to_json()).unwrap();
        assert_eq!(
            json,
            format!(
                r#"{{"device_id":"MAC000002","timestamp":"2013-01-01T00:30:00Z","voltage":230.0,"current":1.904,"power_w":438.0,"energy_kwh":0.219,"power_factor":1.0,"seq":1,"fw":"{FW}"}}"#
            )
        );
    }

    #[test]
    fn the_bridge_accepts_it_with_a_lowered_clock_floor() {
        let id = DeviceId::parse("MAC000002").unwrap();
        let (t, _) = Telemetry::from_reading(&id, &reading(6_095_672_000, 4_974));
        let config =
            ValidationConfig { clock_floor: "2011-01-01T00:00:00Z".parse().unwrap(), ..Default::default() };
        let received: Timestamp = "2026-12-03T00:00:00Z".parse().unwrap();
        let validated = validate(&telemetry_topic(&id), &t.to_json(), received, &config).unwrap();
        assert!(!validated.clock_unsynced);
        assert_eq!(validated.energy_kwh, 6095.672);
        assert_eq!(validated.power_w, 9948.0);
        assert_eq!(validated.seq, Some(1));
    }

    #[test]
    fn energy_text_is_the_exact_decimal() {
        let cases = [
            (0, "0.000"),
            (1, "0.000001"),
            (10, "0.00001"),
            (999, "0.000999"),
            (1_000, "0.001"),
            (219_000, "0.219"),
            (300_000, "0.300"),
            (333_666, "0.333666"),
            (359_872_000, "359.872"),
            (6_095_672_000, "6095.672"),
            (9_999_990_000, "9999.990"),
            (1_234_567_891, "1234.567891"),
        ];
        for (mwh, text) in cases {
            assert_eq!(serde_json::to_string(&Kwh(mwh)).unwrap(), text);
            let back: f64 = serde_json::from_str(text).unwrap();
            assert_eq!(back, mwh as f64 / 1e6);
        }
    }

    #[test]
    fn power_is_clamped_to_the_meter_range() {
        assert_eq!(average_power_w(11_500), (23_000.0, Clamped(false)));
        assert_eq!(average_power_w(11_501), (23_000.0, Clamped(true)));
        assert_eq!(average_power_w(0), (0.0, Clamped(false)));
    }
}
