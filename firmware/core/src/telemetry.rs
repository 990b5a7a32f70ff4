//! The seed firmware's telemetry JSON, written into a caller's buffer without heap or
//! floating point.
//!
//! ```json
//! {"device_id":"meter-001","timestamp":"2026-01-29T10:00:00Z","voltage":230.4,
//!  "current":2.730,"power_w":628.9,"energy_kwh":12.345,"power_factor":0.98,"rssi":-60,
//!  "frequency_hz":50.0,"seq":17,"boot_id":"6c1f09a2","fw":"meter-esp32/0.1.0"}
//! ```
//!
//! Numbers come straight from the PZEM's fixed-point registers, with a fixed number of
//! decimals: voltage 1, current 3, power_w 1, energy_kwh 3 (the Wh counter / 1000),
//! power_factor 2, frequency_hz 1. So the text is exact and the same on every build.
//! `rssi` is left out when unknown (Wi-Fi down at measurement time); `seq`, `boot_id`,
//! `fw` when not given. `dropped` (not in the seed payload; consumers that do not know
//! it ignore it) appears once the store-and-forward buffer has had to drop readings:
//! the count since boot, so the loss is reported and never hidden. `seq` gaps show
//! which readings are missing.

use core::fmt::{self, Write as _};

use crate::device::DeviceId;
use crate::pzem::Measurement;
use crate::time::Timestamp;

/// Big enough for any payload with a 64-byte device id and 64-byte `boot_id` and `fw`.
pub const MAX_PAYLOAD_LEN: usize = 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Telemetry<'a> {
    pub device_id: &'a DeviceId,
    pub timestamp: Timestamp,
    pub measurement: &'a Measurement,
    pub rssi_dbm: Option<i8>,
    /// Per-boot sequence number.
    pub seq: Option<u32>,
    pub boot_id: Option<&'a str>,
    /// Firmware version.
    pub fw: Option<&'a str>,
    /// Readings dropped since boot for lack of buffer room; omitted while 0.
    pub dropped: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("payload does not fit the buffer")]
    BufferTooSmall,
}

impl Telemetry<'_> {
    /// Writes the JSON object into `out`; returns its length.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
        let mut w = SliceWriter { buf: out, len: 0 };
        self.write(&mut w).map_err(|fmt::Error| EncodeError::BufferTooSmall)?;
        Ok(w.len)
    }

    fn write(&self, w: &mut SliceWriter<'_>) -> fmt::Result {
        let m = self.measurement;
        w.write_str("{\"device_id\":")?;
        write_json_string(w, self.device_id.as_str())?;
        w.write_str(",\"timestamp\":\"")?;
        self.timestamp.write_rfc3339(w)?;
        w.write_str("\",\"voltage\":")?;
        write_fixed(w, u64::from(m.voltage_decivolts), 1)?;
        w.write_str(",\"current\":")?;
        write_fixed(w, u64::from(m.current_milliamps), 3)?;
        w.write_str(",\"power_w\":")?;
        write_fixed(w, u64::from(m.power_deciwatts), 1)?;
        w.write_str(",\"energy_kwh\":")?;
        write_fixed(w, u64::from(m.energy_wh), 3)?;
        w.write_str(",\"power_factor\":")?;
        write_fixed(w, u64::from(m.power_factor_hundredths), 2)?;
        if let Some(rssi) = self.rssi_dbm {
            write!(w, ",\"rssi\":{rssi}")?;
        }
        w.write_str(",\"frequency_hz\":")?;
        write_fixed(w, u64::from(m.frequency_decihertz), 1)?;
        if let Some(seq) = self.seq {
            write!(w, ",\"seq\":{seq}")?;
        }
        if let Some(boot_id) = self.boot_id {
            w.write_str(",\"boot_id\":")?;
            write_json_string(w, boot_id)?;
        }
        if let Some(fw) = self.fw {
            w.write_str(",\"fw\":")?;
            write_json_string(w, fw)?;
        }
        if self.dropped > 0 {
            write!(w, ",\"dropped\":{}", self.dropped)?;
        }
        w.write_char('}')
    }
}

/// `value / 10^decimals` with exactly `decimals` digits after the point.
fn write_fixed<W: fmt::Write>(w: &mut W, value: u64, decimals: u32) -> fmt::Result {
    let scale = 10u64.pow(decimals);
    write!(w, "{}.{:0width$}", value / scale, value % scale, width = decimals as usize)
}

fn write_json_string<W: fmt::Write>(w: &mut W, text: &str) -> fmt::Result {
    w.write_char('"')?;
    for c in text.chars() {
        match c {
            '"' => w.write_str("\\\"")?,
            '\\' => w.write_str("\\\\")?,
            c if u32::from(c) < 0x20 => write!(w, "\\u{:04x}", u32::from(c))?,
            c => w.write_char(c)?,
        }
    }
    w.write_char('"')
}

struct SliceWriter<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl fmt::Write for SliceWriter<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len.checked_add(s.len()).ok_or(fmt::Error)?;
        let dest = self.buf.get_mut(self.len..end).ok_or(fmt::Error)?;
        dest.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::Value;

    use super::*;

    fn seed_measurement() -> Measurement {
        Measurement {
            voltage_decivolts: 2304,
            current_milliamps: 2730,
            power_deciwatts: 6289,
            energy_wh: 12_345,
            frequency_decihertz: 500,
            power_factor_hundredths: 98,
            alarm: false,
        }
    }

    fn encode(t: &Telemetry<'_>) -> std::string::String {
        let mut buf = [0u8; MAX_PAYLOAD_LEN];
        let len = t.encode(&mut buf).unwrap();
        std::str::from_utf8(&buf[..len]).unwrap().to_owned()
    }

    #[test]
    fn the_seed_payload_byte_for_byte() {
        let id = DeviceId::parse("meter-001").unwrap();
        let m = seed_measurement();
        let t = Telemetry {
            device_id: &id,
            timestamp: Timestamp::Synced { unix_s: 1_769_680_800 },
            measurement: &m,
            rssi_dbm: Some(-60),
            seq: None,
            boot_id: None,
            fw: None,
            dropped: 0,
        };
        assert_eq!(
            encode(&t),
            r#"{"device_id":"meter-001","timestamp":"2026-01-29T10:00:00Z","voltage":230.4,"current":2.730,"power_w":628.9,"energy_kwh":12.345,"power_factor":0.98,"rssi":-60,"frequency_hz":50.0}"#
        );
    }

    #[test]
    fn optional_fields_and_escaping() {
        let id = DeviceId::parse("m1").unwrap();
        let m = Measurement::default();
        let t = Telemetry {
            device_id: &id,
            timestamp: Timestamp::Unsynced { uptime_s: 61 },
            measurement: &m,
            rssi_dbm: None,
            seq: Some(7),
            boot_id: Some("b\"\\\n"),
            fw: Some("meter/0.1.0"),
            dropped: 3,
        };
        let text = encode(&t);
        assert_eq!(
            text,
            r#"{"device_id":"m1","timestamp":"1970-01-01T00:01:01Z","voltage":0.0,"current":0.000,"power_w":0.0,"energy_kwh":0.000,"power_factor":0.00,"frequency_hz":0.0,"seq":7,"boot_id":"b\"\\\u000a","fw":"meter/0.1.0","dropped":3}"#
        );
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["boot_id"], "b\"\\\n");
        assert!(v.get("rssi").is_none());
    }

    #[test]
    fn a_short_buffer_is_an_error_not_a_truncated_payload() {
        let id = DeviceId::parse("meter-001").unwrap();
        let m = seed_measurement();
        let t = Telemetry {
            device_id: &id,
            timestamp: Timestamp::Synced { unix_s: 0 },
            measurement: &m,
            rssi_dbm: None,
            seq: None,
            boot_id: None,
            fw: None,
            dropped: 0,
        };
        let full = encode(&t).len();
        let mut buf = [0u8; MAX_PAYLOAD_LEN];
        assert_eq!(t.encode(&mut buf[..full - 1]), Err(EncodeError::BufferTooSmall));
        assert_eq!(t.encode(&mut buf[..full]), Ok(full));
    }

    #[test]
    fn the_largest_payload_fits() {
        let id = DeviceId::parse(&"x".repeat(64)).unwrap();
        let long = "y".repeat(64);
        let m = Measurement {
            voltage_decivolts: u16::MAX,
            current_milliamps: u32::MAX,
            power_deciwatts: u32::MAX,
            energy_wh: u32::MAX,
            frequency_decihertz: u16::MAX,
            power_factor_hundredths: u16::MAX,
            alarm: true,
        };
        let t = Telemetry {
            device_id: &id,
            timestamp: Timestamp::Synced { unix_s: 253_402_300_799 },
            measurement: &m,
            rssi_dbm: Some(i8::MIN),
            seq: Some(u32::MAX),
            boot_id: Some(&long),
            fw: Some(&long),
            dropped: u32::MAX,
        };
        assert!(encode(&t).len() <= MAX_PAYLOAD_LEN);
    }

    /// The number's text in the payload: (its digits as an integer, digits after the point).
    fn fixed_point(text: &str, field: &str) -> (u64, usize) {
        let start = text.find(&format!("\"{field}\":")).unwrap() + field.len() + 3;
        let number: std::string::String =
            text[start..].chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect();
        let decimals = number.split_once('.').map_or(0, |(_, frac)| frac.len());
        (number.replace('.', "").parse().unwrap(), decimals)
    }

    proptest! {
        #[test]
        fn encode_then_parse(
            voltage in any::<u16>(),
            current in any::<u32>(),
            power in any::<u32>(),
            energy in any::<u32>(),
            frequency in any::<u16>(),
            pf in any::<u16>(),
            rssi in proptest::option::of(any::<i8>()),
            seq in proptest::option::of(any::<u32>()),
            unix_s in 0u64..253_402_300_800,
            synced in any::<bool>(),
            dropped in any::<u32>(),
        ) {
            let id = DeviceId::parse("meter-001").unwrap();
            let m = Measurement {
                voltage_decivolts: voltage,
                current_milliamps: current,
                power_deciwatts: power,
                energy_wh: energy,
                frequency_decihertz: frequency,
                power_factor_hundredths: pf,
                alarm: false,
            };
            let timestamp = if synced {
                Timestamp::Synced { unix_s }
            } else {
                Timestamp::Unsynced { uptime_s: unix_s }
            };
            let t = Telemetry {
                device_id: &id,
                timestamp,
                measurement: &m,
                rssi_dbm: rssi,
                seq,
                boot_id: Some("boot-1"),
                fw: Some("fw-1"),
                dropped,
            };
            let text = encode(&t);
            let v: Value = serde_json::from_str(&text).unwrap();
            let close = |field: &str, expected: f64| {
                let got = v[field].as_f64().unwrap();
                (got - expected).abs() <= expected.abs() * 1e-15
            };
            prop_assert_eq!(v["device_id"].as_str(), Some("meter-001"));
            let ts = jiff::Timestamp::from_second(unix_s as i64).unwrap().to_string();
            prop_assert_eq!(v["timestamp"].as_str(), Some(ts.as_str()));
            prop_assert!(close("voltage", f64::from(voltage) / 10.0));
            prop_assert!(close("current", f64::from(current) / 1_000.0));
            prop_assert!(close("power_w", f64::from(power) / 10.0));
            prop_assert!(close("energy_kwh", f64::from(energy) / 1_000.0));
            prop_assert!(close("power_factor", f64::from(pf) / 100.0));
            prop_assert!(close("frequency_hz", f64::from(frequency) / 10.0));
            prop_assert_eq!(fixed_point(&text, "voltage"), (u64::from(voltage), 1));
            prop_assert_eq!(fixed_point(&text, "current"), (u64::from(current), 3));
            prop_assert_eq!(fixed_point(&text, "power_w"), (u64::from(power), 1));
            prop_assert_eq!(fixed_point(&text, "energy_kwh"), (u64::from(energy), 3));
            prop_assert_eq!(fixed_point(&text, "power_factor"), (u64::from(pf), 2));
            prop_assert_eq!(fixed_point(&text, "frequency_hz"), (u64::from(frequency), 1));
            prop_assert_eq!(v.get("rssi").and_then(Value::as_i64), rssi.map(i64::from));
            prop_assert_eq!(v.get("seq").and_then(Value::as_u64), seq.map(u64::from));
            prop_assert_eq!(v["boot_id"].as_str(), Some("boot-1"));
            prop_assert_eq!(v["fw"].as_str(), Some("fw-1"));
            let expected_dropped = (dropped > 0).then_some(u64::from(dropped));
            prop_assert_eq!(v.get("dropped").and_then(Value::as_u64), expected_dropped);
        }
    }
}
