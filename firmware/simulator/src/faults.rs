//! Fault injection: what can go wrong with a meter in the field, each switched on by a
//! flag of its own, and what the pipeline must make of it.
//!
//! | fault | what the simulated meter does | what the pipeline must show |
//! | --- | --- | --- |
//! | reboot reporting 0 | right after the reading at or after the time: RAM lost (outbox, clock, `seq`), PZEM power-cycled (counter 0); boots 3 s later with a new `boot_id` | a `reset` counter event; the energy since counted |
//! | counter reset | right after the reading at or after the time: the driver sends reset energy (0x42) | a `reset` counter event |
//! | rollover | every module starts this many kWh below 9999.99 kWh, so its counter wraps to 0 | a `rollover` counter event, (top − previous) + new counted |
//! | redelivery duplicates | a reading's PUBACK is lost on the way back: the link drops, the meter reconnects and sends the reading again | the second copy counted as a duplicate, not as energy |
//! | offline buffering | the link is down from the time for the duration: readings wait in the outbox (the oldest dropped when full, and reported), then leave oldest first | the late burst accepted with its original times; dropped readings missing, the energy across them interpolated |
//! | unsynced clock | SNTP answers this long after each boot; readings published before carry the Unix epoch plus uptime | those readings flagged `clock_unsynced`, stamped with the receive time |
//! | malformed payloads | after a reading, a broken payload on the meter's topic (kinds in turn, see [`Malformed`]) | each in the dead-letter topic with its error code; nothing counted |
//!
//! Faults apply to every simulated meter. Times are data times (after `--start-at`),
//! or `+<duration>` from the start of the replay.

use std::fmt;

use jiff::{SignedDuration, Timestamp};
use serde_json::Value;
use smartmeter_core::telemetry::RejectCode;

/// A fault time as given on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum At {
    Absolute(Timestamp),
    /// After the start of the replay.
    Offset(SignedDuration),
}

impl At {
    pub fn resolve(self, start_ms: i64) -> i64 {
        match self {
            At::Absolute(t) => t.as_millisecond(),
            At::Offset(d) => start_ms + d.as_millis() as i64,
        }
    }
}

/// The faults of one run, as configured.
#[derive(Debug, Clone, Default)]
pub struct FaultConfig {
    pub reboots: Vec<At>,
    pub counter_resets: Vec<At>,
    /// Every module's counter starts this many Wh below the register top.
    pub rollover_in_wh: Option<u32>,
    /// Probability that a reading's PUBACK is lost (the reading is then sent twice).
    pub duplicate_rate: f64,
    /// Link down from `At` for the duration.
    pub outages: Vec<(At, SignedDuration)>,
    /// SNTP answers this long after each boot (default: at once).
    pub sntp_delay: Option<SignedDuration>,
    /// Probability that a malformed payload follows a reading.
    pub malformed_rate: f64,
}

/// The faults with their times resolved, in milliseconds of data time.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    pub reboots_ms: Vec<i64>,
    pub counter_resets_ms: Vec<i64>,
    pub rollover_in_wh: Option<u32>,
    pub duplicate_rate: f64,
    pub outages_ms: Vec<(i64, i64)>,
    pub sntp_delay_ms: i64,
    pub malformed_rate: f64,
}

impl FaultConfig {
    pub fn resolve(&self, start_ms: i64) -> Faults {
        let mut reboots_ms: Vec<i64> = self.reboots.iter().map(|a| a.resolve(start_ms)).collect();
        let mut counter_resets_ms: Vec<i64> =
            self.counter_resets.iter().map(|a| a.resolve(start_ms)).collect();
        let mut outages_ms: Vec<(i64, i64)> = self
            .outages
            .iter()
            .map(|(at, d)| {
                let from = at.resolve(start_ms);
                (from, from + d.as_millis() as i64)
            })
            .collect();
        reboots_ms.sort_unstable();
        counter_resets_ms.sort_unstable();
        outages_ms.sort_unstable();
        Faults {
            reboots_ms,
            counter_resets_ms,
            rollover_in_wh: self.rollover_in_wh,
            duplicate_rate: self.duplicate_rate,
            outages_ms,
            sntp_delay_ms: self.sntp_delay.map_or(0, |d| d.as_millis() as i64),
            malformed_rate: self.malformed_rate,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.reboots.is_empty()
            && self.counter_resets.is_empty()
            && self.rollover_in_wh.is_none()
            && self.duplicate_rate == 0.0
            && self.outages.is_empty()
            && self.sntp_delay.is_none()
            && self.malformed_rate == 0.0
    }
}

/// A non-negative duration such as `90s`, `6h`, `2d 12h` or `P2DT12H`; a day is 24 hours.
pub fn parse_duration(text: &str) -> Result<SignedDuration, String> {
    let span: jiff::Span = text.parse().map_err(|e| format!("{text:?}: {e}"))?;
    let d =
        span.to_duration(jiff::SpanRelativeTo::days_are_24_hours()).map_err(|e| format!("{text:?}: {e}"))?;
    if d.is_negative() {
        return Err(format!("{text:?} is negative"));
    }
    Ok(d)
}

/// `2013-01-10T12:00:00Z`, `2013-01-10` (UTC midnight) or `+36h` / `+2d` from the start.
pub fn parse_at(text: &str) -> Result<At, String> {
    if let Some(offset) = text.strip_prefix('+') {
        return parse_duration(offset).map(At::Offset);
    }
    crate::parse_time(text).map(At::Absolute)
}

/// `<at>/<duration>`, e.g. `2013-01-10T06:00:00Z/6h` or `+2d/90m`.
pub fn parse_outage(text: &str) -> Result<(At, SignedDuration), String> {
    let (at, duration) =
        text.rsplit_once('/').ok_or_else(|| format!("{text:?}: expected <time>/<duration>, e.g. +2d/6h"))?;
    let d = parse_duration(duration)?;
    if d.is_zero() {
        return Err(format!("{duration:?}: an outage lasts a positive time"));
    }
    Ok((parse_at(at)?, d))
}

/// A probability in 0..=1.
pub fn parse_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
        _ => Err(format!("{text:?} is not a probability between 0 and 1")),
    }
}

/// The broken payloads, in the order they are used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Malformed {
    /// The JSON cut in half (a publish that lost its tail).
    Truncated,
    /// `power_w` printed as `nan` (firmware formatting a float with `%f`).
    NanPower,
    /// `energy_kwh` as a string.
    TextEnergy,
    /// `energy_kwh` missing.
    MissingEnergy,
    /// A voltage outside the PZEM's 80-260 V.
    VoltageOutOfRange,
    /// A timestamp that is not RFC 3339.
    BadTimestamp,
    /// The payload names another device than the topic.
    WrongDevice,
    /// Padding past the bridge's default 4 KiB limit.
    Oversized,
}

impl Malformed {
    pub const ALL: [Malformed; 8] = [
        Malformed::Truncated,
        Malformed::NanPower,
        Malformed::TextEnergy,
        Malformed::MissingEnergy,
        Malformed::VoltageOutOfRange,
        Malformed::BadTimestamp,
        Malformed::WrongDevice,
        Malformed::Oversized,
    ];

    /// The `n`-th kind, in turn.
    pub fn nth(n: u64) -> Self {
        Self::ALL[(n % Self::ALL.len() as u64) as usize]
    }

    /// The code the bridge's validation gives it (with its default limits).
    pub fn expected_code(self) -> RejectCode {
        match self {
            Malformed::Truncated => RejectCode::InvalidJson,
            Malformed::NanPower => RejectCode::NonFiniteNumber,
            Malformed::TextEnergy => RejectCode::InvalidField,
            Malformed::MissingEnergy => RejectCode::MissingField,
            Malformed::VoltageOutOfRange => RejectCode::OutOfRange,
            Malformed::BadTimestamp => RejectCode::InvalidTimestamp,
            Malformed::WrongDevice => RejectCode::DeviceMismatch,
            Malformed::Oversized => RejectCode::PayloadTooLarge,
        }
    }

    /// The broken version of a good payload.
    pub fn apply(self, payload: &[u8]) -> Vec<u8> {
        let edit = |f: &dyn Fn(&mut serde_json::Map<String, Value>)| -> Vec<u8> {
            let mut value: Value = serde_json::from_slice(payload).expect("the meter's payload is JSON");
            f(value.as_object_mut().expect("the payload is an object"));
            serde_json::to_vec(&value).expect("a JSON value serializes")
        };
        match self {
            Malformed::Truncated => payload[..payload.len() / 2].to_vec(),
            Malformed::NanPower => {
                let text = String::from_utf8_lossy(payload);
                let start =
                    text.find("\"power_w\":").expect("the payload has power_w") + "\"power_w\":".len();
                let end = start + text[start..].find(',').expect("power_w is not last");
                format!("{}nan{}", &text[..start], &text[end..]).into_bytes()
            }
            Malformed::TextEnergy => edit(&|o| {
                let energy = o["energy_kwh"].to_string();
                o.insert("energy_kwh".into(), Value::String(energy));
            }),
            Malformed::MissingEnergy => edit(&|o| {
                o.remove("energy_kwh");
            }),
            Malformed::VoltageOutOfRange => edit(&|o| {
                o.insert("voltage".into(), serde_json::json!(999.9));
            }),
            Malformed::BadTimestamp => edit(&|o| {
                o.insert("timestamp".into(), Value::String("2013-02-30 25:61".into()));
            }),
            Malformed::WrongDevice => edit(&|o| {
                let other = format!("{}-impostor", o["device_id"].as_str().unwrap_or("meter"));
                o.insert("device_id".into(), Value::String(other));
            }),
            Malformed::Oversized => edit(&|o| {
                o.insert("padding".into(), Value::String("x".repeat(5_000)));
            }),
        }
    }
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use smartmeter_core::telemetry::{validate, ValidationConfig};

    use super::*;

    const GOOD: &str = r#"{"device_id":"MAC000002","timestamp":"2013-01-01T00:30:00Z","voltage":230.0,"current":1.904,"power_w":438.0,"energy_kwh":0.219,"power_factor":1.00,"frequency_hz":50.0,"seq":1,"boot_id":"0a1b2c3d","fw":"meter-sim/0.1.0"}"#;

    #[test]
    fn each_kind_gets_its_code_from_the_bridge() {
        let config =
            ValidationConfig { clock_floor: "2000-01-01T00:00:00Z".parse().unwrap(), ..Default::default() };
        let at: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let topic = "smartmeter/MAC000002/telemetry";
        assert!(validate(topic, GOOD.as_bytes(), at, &config).is_ok());
        for kind in Malformed::ALL {
            let bad = kind.apply(GOOD.as_bytes());
            let rejection = validate(topic, &bad, at, &config).expect_err(&kind.to_string());
            assert_eq!(rejection.code, kind.expected_code(), "{kind}: {}", rejection.reason);
        }
    }

    #[test]
    fn times_and_rates_parse() {
        assert_eq!(parse_at("+36h"), Ok(At::Offset(SignedDuration::from_hours(36))));
        assert_eq!(parse_at("2013-01-10"), Ok(At::Absolute("2013-01-10T00:00:00Z".parse().unwrap())));
        let (at, d) = parse_outage("+2d/6h").unwrap();
        assert_eq!((at, d), (At::Offset(SignedDuration::from_hours(48)), SignedDuration::from_hours(6)));
        assert!(parse_outage("+2d").is_err());
        assert!(parse_outage("+2d/0s").is_err());
        assert_eq!(parse_rate("0.05"), Ok(0.05));
        assert!(parse_rate("1.5").is_err());
        assert_eq!(At::Offset(SignedDuration::from_secs(2)).resolve(1_000), 3_000);
    }
}
