//! Timestamps for readings, from a monotonic uptime and, once SNTP has answered, the
//! offset to wall-clock time.
//!
//! Readings are kept by uptime. A reading is stamped when it is encoded: with wall-clock
//! time if the clock is set by then (also for readings measured before it was set, since
//! the offset converts their uptime exactly), else with an *unsynced* timestamp: the Unix
//! epoch plus the uptime, e.g. `1970-01-01T00:02:05Z` two minutes after boot. That lies
//! before any clock floor (DESIGN: default 2020-01-01), so the bridge keeps the reading,
//! stamps it with its receive time and flags it `clock_unsynced`.

use core::fmt;

/// 2020-01-01T00:00:00Z, DESIGN's default clock floor. SNTP answers before it are refused.
pub const CLOCK_FLOOR_UNIX_S: u64 = 1_577_836_800;
/// 10000-01-01T00:00:00Z: RFC 3339 has four-digit years.
pub const CLOCK_CEILING_UNIX_S: u64 = 253_402_300_800;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timestamp {
    /// Seconds since the Unix epoch, from a synced clock.
    Synced { unix_s: u64 },
    /// Seconds since boot: the clock was not set. Encoded as the epoch plus the uptime.
    Unsynced { uptime_s: u64 },
}

impl Timestamp {
    pub fn is_synced(self) -> bool {
        matches!(self, Timestamp::Synced { .. })
    }

    /// The seconds since the epoch that the RFC 3339 text names.
    pub fn encoded_unix_s(self) -> u64 {
        match self {
            Timestamp::Synced { unix_s } => unix_s,
            Timestamp::Unsynced { uptime_s } => uptime_s,
        }
    }

    /// `YYYY-MM-DDTHH:MM:SSZ`.
    pub fn write_rfc3339<W: fmt::Write>(self, out: &mut W) -> fmt::Result {
        let t = DateTime::from_unix_s(self.encoded_unix_s().min(CLOCK_CEILING_UNIX_S - 1));
        write!(
            out,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            t.year, t.month, t.day, t.hour, t.minute, t.second
        )
    }
}

/// Maps uptime to wall-clock time once the clock has been set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clock {
    /// Wall-clock milliseconds minus uptime milliseconds.
    offset_ms: Option<u64>,
    /// Earliest time [`Clock::set`] believes.
    floor_unix_s: u64,
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock {
    pub const fn new() -> Self {
        Self { offset_ms: None, floor_unix_s: CLOCK_FLOOR_UNIX_S }
    }

    /// A clock that believes times from `floor_unix_s` on: a simulator replaying data
    /// from before 2020 lowers it (as the bridge's clock floor is lowered for such a
    /// replay). It must stay far above any uptime, or unsynced stamps would pass for
    /// real ones.
    pub const fn with_floor(floor_unix_s: u64) -> Self {
        Self { offset_ms: None, floor_unix_s }
    }

    /// Records that the wall clock read `unix_ms` at `uptime_ms`. A time before the
    /// floor (default 2020-01-01) or from the year 10000 on is refused (`false`) and the
    /// clock stays as it was.
    pub fn set(&mut self, uptime_ms: u64, unix_ms: u64) -> bool {
        let plausible = (self.floor_unix_s * 1_000..CLOCK_CEILING_UNIX_S * 1_000).contains(&unix_ms);
        match unix_ms.checked_sub(uptime_ms) {
            Some(offset) if plausible => {
                self.offset_ms = Some(offset);
                true
            }
            _ => false,
        }
    }

    pub fn is_synced(&self) -> bool {
        self.offset_ms.is_some()
    }

    /// Wall-clock milliseconds at `uptime_ms`, if the clock is set.
    pub fn unix_ms(&self, uptime_ms: u64) -> Option<u64> {
        self.offset_ms.map(|offset| offset.saturating_add(uptime_ms))
    }

    pub fn stamp(&self, uptime_ms: u64) -> Timestamp {
        match self.unix_ms(uptime_ms) {
            Some(unix_ms) => Timestamp::Synced { unix_s: unix_ms / 1_000 },
            None => Timestamp::Unsynced { uptime_s: uptime_ms / 1_000 },
        }
    }
}

/// A UTC calendar time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateTime {
    pub year: u64,
    pub month: u8,
    pub day: u8,
    pub hour: u8,
    pub minute: u8,
    pub second: u8,
}

impl DateTime {
    /// Proleptic Gregorian calendar, after Howard Hinnant's `civil_from_days`.
    pub fn from_unix_s(unix_s: u64) -> Self {
        let days = unix_s / 86_400;
        let secs_of_day = unix_s % 86_400;
        // Shift the epoch to 0000-03-01 so leap days fall at the end of a 400-year era.
        let z = days + 719_468;
        let era = z / 146_097;
        let day_of_era = z % 146_097;
        let year_of_era =
            (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
        let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
        let month_from_march = (5 * day_of_year + 2) / 153;
        let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
        let month = if month_from_march < 10 { month_from_march + 3 } else { month_from_march - 9 };
        let year = year_of_era + era * 400 + u64::from(month <= 2);
        Self {
            year,
            month: month as u8,
            day: day as u8,
            hour: (secs_of_day / 3_600) as u8,
            minute: (secs_of_day / 60 % 60) as u8,
            second: (secs_of_day % 60) as u8,
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn text(t: Timestamp) -> String {
        let mut s = String::new();
        t.write_rfc3339(&mut s).unwrap();
        s
    }

    #[test]
    fn known_instants() {
        assert_eq!(text(Timestamp::Synced { unix_s: 0 }), "1970-01-01T00:00:00Z");
        assert_eq!(text(Timestamp::Synced { unix_s: 1_769_680_800 }), "2026-01-29T10:00:00Z");
        assert_eq!(text(Timestamp::Synced { unix_s: 951_782_400 }), "2000-02-29T00:00:00Z");
        assert_eq!(text(Timestamp::Synced { unix_s: CLOCK_FLOOR_UNIX_S }), "2020-01-01T00:00:00Z");
        assert_eq!(text(Timestamp::Unsynced { uptime_s: 125 }), "1970-01-01T00:02:05Z");
    }

    #[test]
    fn an_unset_clock_stamps_uptime_before_the_floor() {
        let clock = Clock::new();
        let stamp = clock.stamp(3 * 86_400_000 + 999);
        assert_eq!(stamp, Timestamp::Unsynced { uptime_s: 259_200 });
        assert!(stamp.encoded_unix_s() < CLOCK_FLOOR_UNIX_S);
    }

    #[test]
    fn a_set_clock_converts_earlier_uptimes_too() {
        let mut clock = Clock::new();
        // SNTP answers 2026-01-29T10:00:00.500Z at 60.5 s of uptime.
        assert!(clock.set(60_500, 1_769_680_800_500));
        assert_eq!(clock.stamp(60_500), Timestamp::Synced { unix_s: 1_769_680_800 });
        // A reading taken 10 s after boot, before the clock was set.
        assert_eq!(clock.stamp(10_000), Timestamp::Synced { unix_s: 1_769_680_750 });
    }

    #[test]
    fn a_lowered_floor_accepts_older_times() {
        let mut clock = Clock::with_floor(946_684_800); // 2000-01-01
        assert!(clock.set(0, 1_356_998_400_000)); // 2013-01-01
        assert_eq!(clock.stamp(1_000), Timestamp::Synced { unix_s: 1_356_998_401 });
        assert!(!Clock::new().set(0, 1_356_998_400_000));
    }

    #[test]
    fn implausible_clock_answers_are_refused() {
        let mut clock = Clock::new();
        assert!(!clock.set(1_000, 5_000));
        assert!(!clock.set(1_000, CLOCK_CEILING_UNIX_S * 1_000));
        assert!(!clock.is_synced());
    }

    proptest! {
        #[test]
        fn matches_jiff(unix_s in 0..CLOCK_CEILING_UNIX_S) {
            let expected = jiff::Timestamp::from_second(unix_s as i64).unwrap().to_string();
            prop_assert_eq!(text(Timestamp::Synced { unix_s }), expected);
        }
    }
}
