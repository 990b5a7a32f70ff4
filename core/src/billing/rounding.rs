//! Rounding money the way a tariff says: to a whole multiple of an increment, with a
//! named rule for midpoints.

use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};

/// How a value exactly between two multiples of the increment (or, for `down`/`up`,
/// any value between them) is rounded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoundingMode {
    /// Midpoint away from zero (commercial rounding): 2.345 → 2.35, -4.665 → -4.67.
    #[default]
    HalfUp,
    /// Midpoint to the even neighbour (banker's rounding): 2.345 → 2.34.
    HalfEven,
    /// Toward zero (truncation).
    Down,
    /// Away from zero.
    Up,
}

impl RoundingMode {
    fn strategy(self) -> RoundingStrategy {
        match self {
            Self::HalfUp => RoundingStrategy::MidpointAwayFromZero,
            Self::HalfEven => RoundingStrategy::MidpointNearestEven,
            Self::Down => RoundingStrategy::ToZero,
            Self::Up => RoundingStrategy::AwayFromZero,
        }
    }
}

/// Round to a whole multiple of `increment` (0.01 = cents, 0.05, 1 = whole units).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoundingStep {
    /// Positive; validation refuses zero and negative increments.
    #[serde(with = "super::serde_decimal")]
    pub increment: Decimal,
    #[serde(default)]
    pub mode: RoundingMode,
}

impl RoundingStep {
    /// 0.01, midpoint away from zero: the rule wherever a tariff publishes none.
    pub const CENTS_HALF_UP: Self =
        Self { increment: Decimal::from_parts(1, 0, 0, false, 2), mode: RoundingMode::HalfUp };

    /// `value` rounded to a multiple of the increment, written with as many decimals as
    /// the increment is written with (35 → "35.00" for "0.01", "3.20" for "0.10"),
    /// never as negative zero.
    pub fn apply(&self, value: Decimal) -> Decimal {
        let scale = self.increment.scale();
        let increment = self.increment.normalize();
        let mut rounded = if increment.mantissa() == 1 {
            // A power of ten (0.01, 1): round at its decimal place directly.
            value.round_dp_with_strategy(increment.scale(), self.mode.strategy())
        } else {
            (value / increment).round_dp_with_strategy(0, self.mode.strategy()) * increment
        };
        rounded.rescale(scale);
        if rounded.is_zero() {
            rounded.set_sign_positive(true);
        }
        rounded
    }
}

impl Default for RoundingStep {
    fn default() -> Self {
        Self::CENTS_HALF_UP
    }
}

/// Rounding of the bill's total. When it changes the sum of the lines, the difference
/// becomes a line of its own, so the lines always add up to the total.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TotalRounding {
    #[serde(with = "super::serde_decimal")]
    pub increment: Decimal,
    #[serde(default)]
    pub mode: RoundingMode,
    /// Name of the adjustment line.
    #[serde(default = "TotalRounding::default_line_name")]
    pub line_name: String,
}

impl TotalRounding {
    fn default_line_name() -> String {
        "rounding adjustment".to_owned()
    }

    pub fn step(&self) -> RoundingStep {
        RoundingStep { increment: self.increment, mode: self.mode }
    }
}

/// The tariff's rounding rule: every line is rounded on its own; the total is the sum of
/// the rounded lines, optionally rounded again.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rounding {
    #[serde(default)]
    pub line: RoundingStep,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<TotalRounding>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    fn step(increment: Decimal, mode: RoundingMode) -> RoundingStep {
        RoundingStep { increment, mode }
    }

    #[test]
    fn cents_half_up_rounds_midpoints_away_from_zero() {
        let cents = RoundingStep::CENTS_HALF_UP;
        assert_eq!(cents.apply(dec!(2.345)).to_string(), "2.35");
        assert_eq!(cents.apply(dec!(2.3449999)).to_string(), "2.34");
        assert_eq!(cents.apply(dec!(-4.665)).to_string(), "-4.67");
        assert_eq!(cents.apply(dec!(0.00595)).to_string(), "0.01");
        assert_eq!(cents.apply(dec!(35)).to_string(), "35.00");
    }

    #[test]
    fn zero_is_never_negative() {
        let cents = RoundingStep::CENTS_HALF_UP;
        assert_eq!(cents.apply(dec!(-0.001)).to_string(), "0.00");
        assert_eq!(cents.apply(dec!(0) * dec!(-5)).to_string(), "0.00");
    }

    #[test]
    fn other_modes_and_increments() {
        assert_eq!(step(dec!(0.01), RoundingMode::HalfEven).apply(dec!(2.345)), dec!(2.34));
        assert_eq!(step(dec!(0.01), RoundingMode::Down).apply(dec!(2.349)), dec!(2.34));
        assert_eq!(step(dec!(0.01), RoundingMode::Up).apply(dec!(2.341)), dec!(2.35));
        assert_eq!(step(dec!(0.05), RoundingMode::HalfUp).apply(dec!(2.325)).to_string(), "2.35");
        assert_eq!(step(dec!(0.05), RoundingMode::HalfUp).apply(dec!(2.324)).to_string(), "2.30");
        assert_eq!(step(dec!(1), RoundingMode::HalfUp).apply(dec!(387.5)).to_string(), "388");
        assert_eq!(step(dec!(10), RoundingMode::HalfUp).apply(dec!(385)).to_string(), "390");
        assert_eq!(step(dec!(0.010), RoundingMode::HalfUp).apply(dec!(1.005)).to_string(), "1.010");
        assert_eq!(step(dec!(0.10), RoundingMode::HalfUp).apply(dec!(3.18)).to_string(), "3.20");
    }
}
