//! When the meter reads the PZEM.
//!
//! Once the clock is set, readings fall on the wall-clock grid of the interval (every
//! multiple of it since the Unix epoch: with 15 minutes, at :00, :15, :30, :45 UTC).
//! The processor splits the energy between two readings over the hours they span in
//! proportion to time; a reading on each hour boundary makes the hourly energy exactly
//! the counter's increase in that hour, whatever the load did inside it. Before the
//! clock is set the grid is the uptime's (every interval since boot).

use crate::time::Clock;

/// The uptime (ms) of the first reading strictly after `uptime_ms`. `interval_ms` 0 is
/// read as 1.
pub fn next_reading_ms(uptime_ms: u64, interval_ms: u64, clock: &Clock) -> u64 {
    let interval = interval_ms.max(1);
    match clock.unix_ms(uptime_ms) {
        Some(unix_ms) => {
            let next_unix = (unix_ms / interval).saturating_add(1).saturating_mul(interval);
            uptime_ms.saturating_add(next_unix - unix_ms)
        }
        None => (uptime_ms / interval).saturating_add(1).saturating_mul(interval),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const QUARTER_MS: u64 = 15 * 60 * 1_000;
    /// 2026-01-29T10:00:00Z
    const HOUR_UNIX_MS: u64 = 1_769_680_800_000;

    #[test]
    fn before_the_clock_is_set_the_grid_is_the_uptime() {
        let clock = Clock::new();
        assert_eq!(next_reading_ms(0, 10_000, &clock), 10_000);
        assert_eq!(next_reading_ms(9_999, 10_000, &clock), 10_000);
        assert_eq!(next_reading_ms(10_000, 10_000, &clock), 20_000);
    }

    #[test]
    fn once_set_readings_fall_on_the_wall_clock_grid() {
        let mut clock = Clock::new();
        // Booted at 09:52:30.250 UTC: uptime 0 is that instant.
        let boot_unix_ms = HOUR_UNIX_MS - 7 * 60_000 - 29_750;
        assert!(clock.set(0, boot_unix_ms));
        let next = next_reading_ms(0, QUARTER_MS, &clock);
        assert_eq!(clock.unix_ms(next), Some(HOUR_UNIX_MS));
        let after = next_reading_ms(next, QUARTER_MS, &clock);
        assert_eq!(clock.unix_ms(after), Some(HOUR_UNIX_MS + QUARTER_MS));
    }

    proptest! {
        #[test]
        fn always_later_and_at_most_one_interval_away(
            uptime in 0u64..10_000_000_000,
            interval in 1u64..86_400_000,
            offset in proptest::option::of(1_577_836_800_000u64..4_000_000_000_000),
        ) {
            let mut clock = Clock::new();
            if let Some(unix_ms) = offset {
                clock.set(0, unix_ms);
            }
            let next = next_reading_ms(uptime, interval, &clock);
            prop_assert!(next > uptime && next - uptime <= interval);
            let grid = clock.unix_ms(next).unwrap_or(next);
            prop_assert_eq!(grid % interval, 0);
        }
    }
}
