//! Reconnect back-off: exponential, capped, with jitter from a caller's random source.
//!
//! Attempt `n` (from 0) has a ceiling of `min(max, base · 2ⁿ)`; the delay is drawn
//! uniformly from `[ceiling / 2, ceiling]` ("equal jitter"). The lower half keeps the
//! exponential spacing for one meter; the random upper half spreads a fleet that lost
//! the broker at the same moment, so it does not come back in one burst.

/// A source of random numbers: the ESP32's hardware RNG on the device, a seeded
/// generator in tests.
pub trait Entropy {
    fn next_u32(&mut self) -> u32;
}

impl<F: FnMut() -> u32> Entropy for F {
    fn next_u32(&mut self) -> u32 {
        self()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    base_ms: u32,
    max_ms: u32,
    attempt: u32,
}

impl Backoff {
    /// `base_ms` is the first ceiling, `max_ms` the cap; `max_ms` < `base_ms` is read as
    /// `base_ms`, and a 0 base as 1 ms.
    pub const fn new(base_ms: u32, max_ms: u32) -> Self {
        let base_ms = if base_ms == 0 { 1 } else { base_ms };
        let max_ms = if max_ms < base_ms { base_ms } else { max_ms };
        Self { base_ms, max_ms, attempt: 0 }
    }

    /// Failed attempts since the last [`reset`](Self::reset).
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The ceiling for the coming attempt.
    pub fn ceiling_ms(&self) -> u32 {
        let factor = 1u64.checked_shl(self.attempt).unwrap_or(u64::MAX);
        let ceiling = u64::from(self.base_ms).saturating_mul(factor);
        ceiling.min(u64::from(self.max_ms)) as u32
    }

    /// How long to wait before the next attempt; counts the attempt.
    pub fn next_delay_ms(&mut self, entropy: &mut impl Entropy) -> u32 {
        let ceiling = self.ceiling_ms();
        let floor = ceiling / 2;
        let span = u64::from(ceiling - floor) + 1;
        // Multiply-shift maps a u32 onto 0..span without division.
        let offset = (u64::from(entropy.next_u32()) * span) >> 32;
        self.attempt = self.attempt.saturating_add(1);
        floor + offset as u32
    }

    /// After a successful connection.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn ceilings_double_then_cap() {
        let mut b = Backoff::new(1_000, 60_000);
        let mut ceilings = Vec::new();
        for _ in 0..9 {
            ceilings.push(b.ceiling_ms());
            b.next_delay_ms(&mut || 0);
        }
        assert_eq!(ceilings, [1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000, 60_000]);
    }

    #[test]
    fn entropy_extremes_hit_the_bounds() {
        let mut b = Backoff::new(1_000, 60_000);
        assert_eq!(b.next_delay_ms(&mut || 0), 500);
        let mut b = Backoff::new(1_000, 60_000);
        assert_eq!(b.next_delay_ms(&mut || u32::MAX), 1_000);
    }

    #[test]
    fn reset_starts_over() {
        let mut b = Backoff::new(500, 10_000);
        for _ in 0..5 {
            b.next_delay_ms(&mut || 7);
        }
        assert_eq!(b.attempt(), 5);
        b.reset();
        assert_eq!(b.ceiling_ms(), 500);
    }

    #[test]
    fn many_attempts_do_not_overflow() {
        let mut b = Backoff::new(u32::MAX, u32::MAX);
        for _ in 0..200 {
            assert!(b.next_delay_ms(&mut || u32::MAX) >= u32::MAX / 2);
        }
        assert_eq!(b.ceiling_ms(), u32::MAX);
    }

    #[test]
    fn degenerate_settings_are_sane() {
        let b = Backoff::new(0, 0);
        assert_eq!(b.ceiling_ms(), 1);
        let b = Backoff::new(5_000, 1_000);
        assert_eq!(b.ceiling_ms(), 5_000);
    }

    #[test]
    fn jitter_spreads_a_fleet() {
        // 1000 meters, one xorshift each, all at their 4th attempt.
        let mut delays = Vec::new();
        for seed in 1..=1_000u32 {
            let mut state = seed.wrapping_mul(2_654_435_761) | 1;
            let mut rng = move || {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                state
            };
            let mut b = Backoff::new(1_000, 60_000);
            for _ in 0..3 {
                b.next_delay_ms(&mut rng);
            }
            delays.push(b.next_delay_ms(&mut rng));
        }
        let min = *delays.iter().min().unwrap();
        let max = *delays.iter().max().unwrap();
        assert!(min >= 4_000 && max <= 8_000);
        assert!(max - min > 3_000, "delays bunch up: {min}..{max}");
    }

    proptest! {
        #[test]
        fn every_delay_is_within_half_ceiling_and_ceiling(
            base in 1u32..100_000,
            extra in 0u32..1_000_000,
            draws in proptest::collection::vec(any::<u32>(), 1..40),
        ) {
            let mut b = Backoff::new(base, base.saturating_add(extra));
            let mut previous_ceiling = 0;
            for draw in draws {
                let ceiling = b.ceiling_ms();
                prop_assert!(ceiling >= previous_ceiling);
                prop_assert!(ceiling <= base.saturating_add(extra));
                let delay = b.next_delay_ms(&mut || draw);
                prop_assert!(delay >= ceiling / 2 && delay <= ceiling);
                previous_ceiling = ceiling;
            }
        }
    }
}
