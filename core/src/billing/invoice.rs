//! What pricing produces: invoice lines and their total.

use std::fmt;
use std::ops::Range;
use std::str::FromStr;

use jiff::civil;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::tariff::Currency;

/// What a line's quantity counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Unit {
    Kwh,
    Month,
    Day,
    Bill,
    KwMonth,
    /// An amount of money that a percentage is taken of ("INR base").
    Base(Currency),
}

impl fmt::Display for Unit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Kwh => f.write_str("kWh"),
            Self::Month => f.write_str("month"),
            Self::Day => f.write_str("day"),
            Self::Bill => f.write_str("bill"),
            Self::KwMonth => f.write_str("kW-month"),
            Self::Base(currency) => write!(f, "{currency} base"),
        }
    }
}

/// A string that is not a [`Unit`].
#[derive(Debug, thiserror::Error)]
#[error("unknown unit {0:?}")]
pub struct UnknownUnit(String);

impl FromStr for Unit {
    type Err = UnknownUnit;

    fn from_str(unit: &str) -> Result<Self, Self::Err> {
        Ok(match unit {
            "kWh" => Self::Kwh,
            "month" => Self::Month,
            "day" => Self::Day,
            "bill" => Self::Bill,
            "kW-month" => Self::KwMonth,
            other => match other.strip_suffix(" base").map(str::parse) {
                Some(Ok(currency)) => Self::Base(currency),
                _ => return Err(UnknownUnit(other.to_owned())),
            },
        })
    }
}

impl Serialize for Unit {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Unit {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let unit = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        unit.parse().map_err(serde::de::Error::custom)
    }
}

/// One line of an invoice. `amount` is rounded by the tariff's line rule; quantity ×
/// rate is the unrounded amount (for a percentage: base × rate / 100). A minimum
/// charge top-up or a rounding adjustment has an amount only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceLine {
    pub name: String,
    pub quantity: Option<Decimal>,
    pub unit: Option<Unit>,
    /// Currency per unit, or percent for a percentage line; negative for a credit.
    pub rate: Option<Decimal>,
    pub amount: Decimal,
}

/// A tax already inside the rates, reported but not added (VAT content of a
/// VAT-inclusive bill).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncludedTax {
    pub name: String,
    pub percent: Decimal,
    /// Sum of the lines the tax is inside.
    pub base: Decimal,
    /// base × percent / (100 + percent), rounded by the line rule.
    pub amount: Decimal,
}

/// The stretch of the period one tariff version priced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PricedPart {
    pub version: u32,
    pub effective_from: civil::Date,
    pub first_day: civil::Date,
    pub last_day: civil::Date,
    pub energy_kwh: Decimal,
    /// The month factor per-month charges and slab limits were scaled by.
    pub months: Decimal,
    /// Indices of this part's lines in [`Invoice::lines`].
    pub lines: Range<usize>,
}

/// A priced billing period. The lines add up to `total` exactly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invoice {
    pub tariff_id: String,
    pub currency: Currency,
    pub first_day: civil::Date,
    pub last_day: civil::Date,
    /// One per tariff version in force during the period, in date order.
    pub parts: Vec<PricedPart>,
    pub lines: Vec<InvoiceLine>,
    pub total: Decimal,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub included_taxes: Vec<IncludedTax>,
}
