//! The tariff document: one published version of a tariff, as data.
//!
//! A version is an ordered list of generic [`Component`]s. Each component turns the
//! period into zero or more invoice lines, in document order; later components can
//! refer to the lines of earlier ones by their `group` (a surcharge on the fixed and
//! energy charges, a tax on the surcharged amount, a minimum charge compared with the
//! energy charges). [`Choice`] picks components by the band the total falls in, by
//! load or by phase, which is how categories, "telescopic up to X, flat above",
//! fixed charges by slab and rebates by band are written. No part of the pricing
//! knows a utility: a new tariff made of these parts needs no code.
//!
//! Decimals are JSON strings (`"3.15"`); a JSON number is refused, so no price ever
//! passes through a float. Rates are in the tariff's currency per unit of the line
//! (per kWh, per month, per day, per kW-month); `percent` is in percent.

use std::fmt;
use std::str::FromStr;

use jiff::civil;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::rounding::Rounding;
use super::validate::{self, TariffError};

/// ISO 4217 currency code (three upper-case ASCII letters), stored inline.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Currency([u8; 3]);

impl Currency {
    pub fn as_str(&self) -> &str {
        // Only ever built from three ASCII letters.
        std::str::from_utf8(&self.0).unwrap_or("???")
    }
}

impl FromStr for Currency {
    type Err = TariffError;

    fn from_str(code: &str) -> Result<Self, Self::Err> {
        match code.as_bytes() {
            &[a, b, c] if [a, b, c].iter().all(u8::is_ascii_uppercase) => Ok(Self([a, b, c])),
            _ => Err(TariffError::InvalidCurrency { code: code.to_owned() }),
        }
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Currency({})", self.as_str())
    }
}

impl Serialize for Currency {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let code = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        code.parse().map_err(serde::de::Error::custom)
    }
}

/// Supply phase of the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Single,
    Three,
}

/// Where a version's rules and numbers come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    pub title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

/// One version of a tariff as published: the serde form. Turn it into a [`Tariff`]
/// (which validates it) before pricing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TariffDocument {
    pub tariff_id: String,
    /// Increases with `effective_from` within a tariff's history.
    pub version: u32,
    /// First local day on which this version applies.
    pub effective_from: civil::Date,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    pub currency: Currency,
    /// IANA time zone of the local clock the tariff's days, months and time-of-use
    /// bands are read on.
    pub time_zone: String,
    /// How many months a billing period counts for (per-month charges and kWh slab
    /// sizes scale with it).
    #[serde(default)]
    pub period_months: PeriodMonths,
    #[serde(default)]
    pub rounding: Rounding,
    /// In pricing order; the lines come out in this order.
    pub components: Vec<Component>,
    /// Taxes already inside the rates (VAT-inclusive prices): reported on the invoice,
    /// never added to it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub included_taxes: Vec<IncludedTaxRule>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<Source>,
    /// Modelling decisions and what is unconfirmed, for people.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// The month factor of a period: what per-month charges are multiplied by and what
/// kWh slab and band limits are scaled by. When a tariff change splits a period, each
/// part gets its share of the period's days, except under `calendar_month_fractions`,
/// which measures each part by its own days.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "rule", rename_all = "snake_case", deny_unknown_fields)]
pub enum PeriodMonths {
    /// A billing period is one month, whatever its length.
    #[default]
    WholePeriod,
    /// The sum over the calendar months the period touches of
    /// days used / days in that month (17 June–17 July 2015: 14/30 + 17/31).
    CalendarMonthFractions {
        /// Each month's fraction is rounded half-up to this many decimals, as published
        /// (0.4667 + 0.5484 = 1.0151); unrounded when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        round_dp: Option<u32>,
    },
    /// One month when the period's length is within `normal_days` (inclusive),
    /// otherwise days / `basis_days`.
    DaysOverBasis {
        basis_days: u32,
        normal_days: DayRange,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        round_dp: Option<u32>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DayRange {
    pub min: u32,
    pub max: u32,
}

/// One part of the tariff. Every line-producing component names the `group` its
/// lines belong to, which `percent`, `minimum` and included taxes refer to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Component {
    /// Every kWh of the period at one rate: a flat energy charge, a levy (fuel clause,
    /// fuel adjustment), or a per-kWh rebate (`credit`). Always gives a line, also at
    /// zero kWh.
    PerKwh(PerKwhCharge),
    /// Energy in slabs, telescopic or not. Gives a line per slab that holds energy.
    Slabs(SlabCharge),
    /// Energy by the local hour it was used in, each time band at its own rate.
    TimeOfUse(TimeOfUseCharge),
    /// A fixed or standing charge per bill, month, day or kW of load.
    Fixed(FixedCharge),
    /// A percentage of the lines of named groups: surcharge, tax, discount (`credit`).
    Percent(PercentCharge),
    /// Raises the lines of named groups (default: all before it) to a minimum.
    Minimum(MinimumCharge),
    /// Components chosen by the period's total, the load or the phase.
    Choose(Choice),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PerKwhCharge {
    pub name: String,
    pub group: String,
    /// Currency per kWh, not negative; see `credit`.
    #[serde(with = "super::serde_decimal")]
    pub rate: Decimal,
    /// A rebate: the amount is subtracted and the line shows the rate as negative.
    #[serde(default, skip_serializing_if = "is_false")]
    pub credit: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SlabPricing {
    /// Each slab's rate on the units inside it.
    Telescopic,
    /// All units at the rate of the slab the total falls in.
    NonTelescopic,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlabCharge {
    pub group: String,
    pub pricing: SlabPricing,
    /// Ascending; the first starts at 0 kWh, each ends where the next begins. Only the
    /// last may be open (`up_to_kwh: null`); energy above a closed last slab is a
    /// pricing error.
    pub slabs: Vec<Slab>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Slab {
    /// Name of the line this slab gives.
    pub name: String,
    /// Upper limit, inclusive, for a one-month period (scaled by the period's months);
    /// `null` = no limit.
    #[serde(with = "super::serde_decimal::option")]
    pub up_to_kwh: Option<Decimal>,
    /// Currency per kWh.
    #[serde(with = "super::serde_decimal")]
    pub rate: Decimal,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeOfUseCharge {
    pub group: String,
    /// Together they cover each hour of the local day exactly once. A band may cross
    /// midnight (`from` 22:00, `to` 06:00). Every band gives a line, also at zero kWh.
    pub bands: Vec<TimeOfUseBand>,
    /// Band index for each local hour, filled by validation.
    #[serde(skip)]
    pub(crate) band_by_hour: [u8; 24],
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeOfUseBand {
    pub name: String,
    /// Local clock time, on the hour (energy comes per local hour).
    pub from: civil::Time,
    /// Exclusive; earlier than `from` means the band crosses midnight.
    pub to: civil::Time,
    /// Currency per kWh.
    #[serde(with = "super::serde_decimal")]
    pub rate: Decimal,
}

/// What a fixed charge or a minimum charge is counted in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Basis {
    /// Once per bill (a part of a split period pays its share of days).
    Bill,
    /// Per month: multiplied by the period's month factor.
    Month,
    /// Per local calendar day of the period.
    Day,
    /// Per kW of sanctioned load per month.
    SanctionedKwMonth,
    /// Per kW of connected load per month.
    ConnectedKwMonth,
}

impl Basis {
    pub fn is_per_kw(self) -> bool {
        matches!(self, Self::SanctionedKwMonth | Self::ConnectedKwMonth)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixedCharge {
    pub name: String,
    pub group: String,
    pub per: Basis,
    /// Currency per unit of `per`.
    #[serde(with = "super::serde_decimal")]
    pub rate: Decimal,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PercentCharge {
    pub name: String,
    pub group: String,
    /// Percent of the base, not negative; see `credit`.
    #[serde(with = "super::serde_decimal")]
    pub percent: Decimal,
    /// Groups whose (rounded) lines so far in the period form the base. Only groups of
    /// earlier components: a tax on a surcharge comes after the surcharge.
    pub of: Vec<String>,
    /// A discount: subtracted, shown with a negative percent.
    #[serde(default, skip_serializing_if = "is_false")]
    pub credit: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MinimumCharge {
    /// Name of the top-up line (it has no quantity, unit or rate).
    pub name: String,
    pub group: String,
    /// Groups compared with the minimum; all lines before this component when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub of: Option<Vec<String>>,
    pub per: Basis,
    /// Currency per unit of `per`. Exactly one of `rate` and `kw_slabs`.
    #[serde(default, with = "super::serde_decimal::option", skip_serializing_if = "Option::is_none")]
    pub rate: Option<Decimal>,
    /// Telescopic rates over the kW of load (120/kW for the first 2 kW, 70/kW above);
    /// only with a per-kW basis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kw_slabs: Option<Vec<KwSlab>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KwSlab {
    /// Inclusive upper limit; `null` = no limit (last only).
    #[serde(with = "super::serde_decimal::option")]
    pub up_to_kw: Option<Decimal>,
    /// Currency per kW per month.
    #[serde(with = "super::serde_decimal")]
    pub rate: Decimal,
}

/// Components chosen by a property of the period. Bands are ascending, inclusive at
/// the top ("0-50" holds 50, and 50.001 is in the next band), the last one open.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "by", rename_all = "snake_case")]
pub enum Choice {
    /// By the period's total energy (band limits scale with the period's months like
    /// slabs do). Writes categories that re-price every unit, fixed charges by slab,
    /// rebates by the band of the total, "telescopic up to X, non-telescopic above".
    TotalKwh { bands: Vec<KwhBand> },
    /// By sanctioned load.
    SanctionedKw { bands: Vec<KwBand> },
    /// By connected load.
    ConnectedKw { bands: Vec<KwBand> },
    /// By supply phase.
    Phase { single: Vec<Component>, three: Vec<Component> },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KwhBand {
    #[serde(with = "super::serde_decimal::option")]
    pub up_to_kwh: Option<Decimal>,
    /// May be empty (no rebate above 400 kWh).
    pub then: Vec<Component>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KwBand {
    #[serde(with = "super::serde_decimal::option")]
    pub up_to_kw: Option<Decimal>,
    pub then: Vec<Component>,
}

/// A tax inside the rates: its content is `base × percent / (100 + percent)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncludedTaxRule {
    pub name: String,
    #[serde(with = "super::serde_decimal")]
    pub percent: Decimal,
    /// Groups whose lines it is inside; all lines when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub of: Option<Vec<String>>,
}

fn is_false(value: &bool) -> bool {
    !value
}

/// A validated tariff version: the only form that can be priced. A document with any
/// fault is refused whole.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "TariffDocument", into = "TariffDocument")]
pub struct Tariff {
    document: TariffDocument,
}

impl Tariff {
    pub fn new(mut document: TariffDocument) -> Result<Self, TariffError> {
        validate::validate(&mut document)?;
        Ok(Self { document })
    }

    pub fn from_json(json: &str) -> Result<Self, TariffError> {
        Self::new(serde_json::from_str(json)?)
    }

    pub fn document(&self) -> &TariffDocument {
        &self.document
    }

    pub fn tariff_id(&self) -> &str {
        &self.document.tariff_id
    }

    pub fn version(&self) -> u32 {
        self.document.version
    }

    pub fn effective_from(&self) -> civil::Date {
        self.document.effective_from
    }

    pub fn currency(&self) -> Currency {
        self.document.currency
    }
}

impl TryFrom<TariffDocument> for Tariff {
    type Error = TariffError;

    fn try_from(document: TariffDocument) -> Result<Self, Self::Error> {
        Self::new(document)
    }
}

impl From<Tariff> for TariffDocument {
    fn from(tariff: Tariff) -> Self {
        tariff.document
    }
}

/// The published versions of one tariff, ordered by `effective_from`: a JSON array of
/// version documents. Same id, currency and time zone throughout; dates and version
/// numbers strictly increasing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "Vec<Tariff>", into = "Vec<Tariff>")]
pub struct TariffHistory {
    versions: Vec<Tariff>,
}

impl TariffHistory {
    pub fn new(versions: Vec<Tariff>) -> Result<Self, TariffError> {
        validate::validate_history(&versions)?;
        Ok(Self { versions })
    }

    /// Parses and validates every version; the first fault refuses the whole history.
    pub fn from_json(json: &str) -> Result<Self, TariffError> {
        let documents: Vec<TariffDocument> = serde_json::from_str(json)?;
        let versions = documents
            .into_iter()
            .enumerate()
            .map(|(index, document)| {
                Tariff::new(document)
                    .map_err(|source| TariffError::InVersion { index, source: Box::new(source) })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Self::new(versions)
    }

    /// Never empty, ascending by `effective_from`.
    pub fn versions(&self) -> &[Tariff] {
        &self.versions
    }

    pub fn tariff_id(&self) -> &str {
        self.versions[0].tariff_id()
    }

    /// The version in force on `day`, if any.
    pub fn in_force_on(&self, day: civil::Date) -> Option<&Tariff> {
        let after = self.versions.partition_point(|version| version.effective_from() <= day);
        after.checked_sub(1).map(|index| &self.versions[index])
    }
}

impl TryFrom<Vec<Tariff>> for TariffHistory {
    type Error = TariffError;

    fn try_from(versions: Vec<Tariff>) -> Result<Self, Self::Error> {
        Self::new(versions)
    }
}

impl From<TariffHistory> for Vec<Tariff> {
    fn from(history: TariffHistory) -> Self {
        history.versions
    }
}
