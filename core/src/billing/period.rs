//! What is priced: a billing period's local dates, its energy (in total and by local
//! hour) and the connection's load and phase; and how many months a period counts for.

use jiff::civil;
use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};

use super::tariff::{PeriodMonths, Phase};

/// Energy used in one local hour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HourlyEnergy {
    /// Local wall-clock start of the hour in the tariff's time zone. A DST day's
    /// repeated hour appears twice; that is why this is a list, not a map.
    pub hour_start: civil::DateTime,
    pub energy_kwh: Decimal,
}

/// A closed billing period, as the processor publishes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BillingPeriod {
    /// First local day, inclusive.
    pub first_day: civil::Date,
    /// Last local day, inclusive (a July period ends on 31 July).
    pub last_day: civil::Date,
    /// The counter's increase over the period: the billing truth.
    pub energy_kwh: Decimal,
    /// Energy by local hour; needed for time-of-use and for a period that crosses a
    /// tariff change. When present it must add up to `energy_kwh`, and lie inside
    /// the period.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hourly_energy: Vec<HourlyEnergy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sanctioned_load_kw: Option<Decimal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connected_load_kw: Option<Decimal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
}

impl BillingPeriod {
    /// A period with only its dates and total energy.
    pub fn new(first_day: civil::Date, last_day: civil::Date, energy_kwh: Decimal) -> Self {
        Self {
            first_day,
            last_day,
            energy_kwh,
            hourly_energy: Vec::new(),
            sanctioned_load_kw: None,
            connected_load_kw: None,
            phase: None,
        }
    }

    /// Number of local days, both ends included.
    pub fn days(&self) -> i32 {
        days_inclusive(self.first_day, self.last_day)
    }
}

/// Days from `first` to `last`, both included.
pub(crate) fn days_inclusive(first: civil::Date, last: civil::Date) -> i32 {
    (last - first).get_days() + 1
}

/// A stretch of a period priced with one tariff version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Part {
    pub first_day: civil::Date,
    pub last_day: civil::Date,
}

impl Part {
    pub fn days(&self) -> i32 {
        days_inclusive(self.first_day, self.last_day)
    }
}

impl PeriodMonths {
    /// The month factor of `part` of `period`: per-month charges are multiplied by it
    /// and kWh slab and band limits scaled by it. The parts of a split period add up
    /// to the whole period's factor (up to the published rounding of each month's
    /// fraction).
    pub(crate) fn months(&self, period: Part, part: Part) -> Decimal {
        let share = || {
            if part == period {
                Decimal::ONE
            } else {
                Decimal::from(part.days()) / Decimal::from(period.days())
            }
        };
        match self {
            Self::WholePeriod => share(),
            // The rule is defined per calendar month, so a part is measured the same way.
            Self::CalendarMonthFractions { round_dp } => calendar_month_fractions(part, *round_dp),
            Self::DaysOverBasis { basis_days, normal_days, round_dp } => {
                let days = period.days();
                let whole = if (normal_days.min..=normal_days.max).contains(&(days.max(0) as u32)) {
                    Decimal::ONE
                } else {
                    round(Decimal::from(days) / Decimal::from(*basis_days), *round_dp)
                };
                whole * share()
            }
        }
    }
}

/// Σ over the calendar months `part` touches of days used / days in that month.
fn calendar_month_fractions(part: Part, round_dp: Option<u32>) -> Decimal {
    let mut months = Decimal::ZERO;
    let mut month_start = part.first_day;
    loop {
        let month_end = month_start.last_of_month().min(part.last_day);
        let used = days_inclusive(month_start, month_end);
        let in_month = i32::from(month_start.days_in_month());
        months += if used == in_month {
            Decimal::ONE
        } else {
            round(Decimal::from(used) / Decimal::from(in_month), round_dp)
        };
        if month_end >= part.last_day {
            return months;
        }
        month_start =
            month_end.last_of_month().tomorrow().expect("a billing date is far from the end of time");
    }
}

fn round(value: Decimal, round_dp: Option<u32>) -> Decimal {
    match round_dp {
        Some(dp) => value.round_dp_with_strategy(dp, RoundingStrategy::MidpointAwayFromZero),
        None => value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::billing::tariff::DayRange;
    use jiff::civil::date;
    use rust_decimal_macros::dec;

    fn part(first: civil::Date, last: civil::Date) -> Part {
        Part { first_day: first, last_day: last }
    }

    #[test]
    fn calendar_month_fractions_reproduce_the_published_tpddl_factor() {
        let rule = PeriodMonths::CalendarMonthFractions { round_dp: Some(4) };
        let period = part(date(2015, 6, 17), date(2015, 7, 17));
        assert_eq!(rule.months(period, period), dec!(1.0151));
        let september = part(date(2015, 9, 1), date(2015, 9, 30));
        assert_eq!(rule.months(september, september), Decimal::ONE);
        let quarter = part(date(2024, 1, 1), date(2024, 3, 31));
        assert_eq!(rule.months(quarter, quarter), dec!(3));
        // A part is measured by the same rule.
        let june = part(date(2015, 6, 17), date(2015, 6, 30));
        assert_eq!(rule.months(period, june), dec!(0.4667));
    }

    #[test]
    fn days_over_basis_scales_only_outside_the_normal_range() {
        let rule = PeriodMonths::DaysOverBasis {
            basis_days: 30,
            normal_days: DayRange { min: 25, max: 35 },
            round_dp: None,
        };
        let days = |n: i64| {
            part(date(2021, 1, 1), date(2021, 1, 1).checked_add(jiff::Span::new().days(n - 1)).unwrap())
        };
        for n in [25, 30, 35] {
            assert_eq!(rule.months(days(n), days(n)), Decimal::ONE, "{n} days");
        }
        assert_eq!(rule.months(days(24), days(24)), dec!(0.8));
        assert_eq!(rule.months(days(45), days(45)), dec!(1.5));
        assert_eq!(rule.months(days(40), days(40)) * dec!(200), dec!(266.66666666666666666666666666));
    }

    #[test]
    fn whole_period_splits_by_share_of_days() {
        let period = part(date(2024, 9, 16), date(2024, 10, 15));
        let september = part(date(2024, 9, 16), date(2024, 9, 30));
        assert_eq!(PeriodMonths::WholePeriod.months(period, period), Decimal::ONE);
        assert_eq!(PeriodMonths::WholePeriod.months(period, september), dec!(0.5));
    }
}
