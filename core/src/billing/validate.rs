//! Validation of tariff documents and histories. The first fault refuses the document
//! whole; errors say where (`components[1].bands[0].then[0]`) and what.

use rust_decimal::Decimal;

use super::tariff::{
    Choice, Component, KwBand, KwSlab, KwhBand, MinimumCharge, PeriodMonths, SlabCharge, Tariff,
    TariffDocument, TimeOfUseCharge,
};

/// Why a tariff document or history was refused.
#[derive(Debug, thiserror::Error)]
pub enum TariffError {
    #[error("not a tariff document: {0}")]
    Json(#[from] serde_json::Error),
    #[error("currency {code:?} is not an ISO 4217 code (three upper-case letters)")]
    InvalidCurrency { code: String },
    #[error("unknown time zone {name:?}")]
    UnknownTimeZone { name: String },
    #[error("{at}: {field} must not be empty")]
    Empty { at: String, field: &'static str },
    #[error("{at}: negative rate {rate} (write rebates and discounts with `credit: true`)")]
    NegativeRate { at: String, rate: Decimal },
    #[error("{at}: negative limit {limit}")]
    NegativeLimit { at: String, limit: Decimal },
    #[error("{at}: limits must be strictly ascending, without overlap: {limit} follows {previous}")]
    LimitsNotAscending { at: String, previous: Decimal, limit: Decimal },
    #[error("{at}: only the last slab or band may be open (up_to null)")]
    OpenLimitNotLast { at: String },
    #[error("{at}: the last band must be open (up_to null) so that every value falls in a band")]
    LastBandClosed { at: String },
    #[error("{at}: time-of-use band {band:?} must start and end on the hour")]
    TimeOfUseNotOnTheHour { at: String, band: String },
    #[error("{at}: time-of-use band {band:?} is empty (from == to)")]
    TimeOfUseEmptyBand { at: String, band: String },
    #[error("{at}: time-of-use bands {first:?} and {second:?} overlap at {hour:02}:00")]
    TimeOfUseOverlap { at: String, first: String, second: String, hour: u8 },
    #[error("{at}: no time-of-use band covers {hour:02}:00")]
    TimeOfUseGap { at: String, hour: u8 },
    #[error("{at}: group {group:?} is not the group of any earlier component")]
    UnknownGroup { at: String, group: String },
    #[error("{at}: a minimum charge needs exactly one of `rate` and `kw_slabs`")]
    MinimumRateAmbiguous { at: String },
    #[error("{at}: `kw_slabs` need a per-kW basis")]
    KwSlabsWithoutLoadBasis { at: String },
    #[error("rounding increment must be positive, not {increment}")]
    InvalidRounding { increment: Decimal },
    #[error("period_months: {reason}")]
    InvalidPeriodMonths { reason: &'static str },
    #[error("version at index {index}: {source}")]
    InVersion { index: usize, source: Box<TariffError> },
    #[error("a tariff history needs at least one version")]
    EmptyHistory,
    #[error("a history holds one tariff, not {first:?} and {other:?}")]
    MixedTariffs { first: String, other: String },
    #[error("{what} changes between versions of {tariff_id:?}; that is a new tariff, not a version")]
    InconsistentHistory { tariff_id: String, what: &'static str },
    #[error(
        "versions must be ordered by effective_from with increasing version numbers: \
         version {version} ({effective_from}) follows version {previous_version} ({previous_effective_from})"
    )]
    VersionsNotOrdered {
        previous_version: u32,
        previous_effective_from: jiff::civil::Date,
        version: u32,
        effective_from: jiff::civil::Date,
    },
}

/// Largest scale a `round_dp` may ask for (rust_decimal's precision).
const MAX_ROUND_DP: u32 = 28;

pub(crate) fn validate(document: &mut TariffDocument) -> Result<(), TariffError> {
    if document.tariff_id.trim().is_empty() {
        return Err(TariffError::Empty { at: "tariff".into(), field: "tariff_id" });
    }
    if jiff::tz::TimeZone::get(&document.time_zone).is_err() {
        return Err(TariffError::UnknownTimeZone { name: document.time_zone.clone() });
    }
    validate_period_months(&document.period_months)?;
    let rounding = &document.rounding;
    for increment in
        std::iter::once(rounding.line.increment).chain(rounding.total.as_ref().map(|total| total.increment))
    {
        if increment <= Decimal::ZERO {
            return Err(TariffError::InvalidRounding { increment });
        }
    }
    let mut groups = Vec::new();
    validate_components(&mut document.components, "components", &mut groups)?;
    for (index, tax) in document.included_taxes.iter().enumerate() {
        let at = format!("included_taxes[{index}]");
        non_empty(&tax.name, &at, "name")?;
        non_negative(tax.percent, &at)?;
        if let Some(of) = &tax.of {
            known_groups(of, &groups, &at)?;
        }
    }
    Ok(())
}

fn validate_period_months(rule: &PeriodMonths) -> Result<(), TariffError> {
    let round_dp = match rule {
        PeriodMonths::WholePeriod => None,
        PeriodMonths::CalendarMonthFractions { round_dp } => *round_dp,
        PeriodMonths::DaysOverBasis { basis_days, normal_days, round_dp } => {
            if *basis_days == 0 {
                return Err(TariffError::InvalidPeriodMonths { reason: "basis_days must be positive" });
            }
            if normal_days.min > normal_days.max {
                return Err(TariffError::InvalidPeriodMonths {
                    reason: "normal_days.min must not exceed normal_days.max",
                });
            }
            *round_dp
        }
    };
    if round_dp.is_some_and(|dp| dp > MAX_ROUND_DP) {
        return Err(TariffError::InvalidPeriodMonths { reason: "round_dp must be at most 28" });
    }
    Ok(())
}

/// Validates in document order; `groups` collects the groups defined so far, which is
/// what a percentage or minimum may refer to.
fn validate_components(
    components: &mut [Component],
    at: &str,
    groups: &mut Vec<String>,
) -> Result<(), TariffError> {
    for (index, component) in components.iter_mut().enumerate() {
        let at = format!("{at}[{index}]");
        match component {
            Component::PerKwh(charge) => {
                non_empty(&charge.name, &at, "name")?;
                non_negative(charge.rate, &at)?;
                define(groups, &charge.group, &at)?;
            }
            Component::Slabs(charge) => {
                validate_slabs(charge, &at)?;
                define(groups, &charge.group, &at)?;
            }
            Component::TimeOfUse(charge) => {
                validate_time_of_use(charge, &at)?;
                define(groups, &charge.group, &at)?;
            }
            Component::Fixed(charge) => {
                non_empty(&charge.name, &at, "name")?;
                non_negative(charge.rate, &at)?;
                define(groups, &charge.group, &at)?;
            }
            Component::Percent(charge) => {
                non_empty(&charge.name, &at, "name")?;
                non_negative(charge.percent, &at)?;
                if charge.of.is_empty() {
                    return Err(TariffError::Empty { at, field: "of" });
                }
                known_groups(&charge.of, groups, &at)?;
                define(groups, &charge.group, &at)?;
            }
            Component::Minimum(charge) => {
                validate_minimum(charge, &at, groups)?;
                define(groups, &charge.group, &at)?;
            }
            Component::Choose(choice) => validate_choice(choice, &at, groups)?,
        }
    }
    Ok(())
}

fn validate_choice(choice: &mut Choice, at: &str, groups: &mut Vec<String>) -> Result<(), TariffError> {
    // Each branch sees the groups defined before the choice; after it, any branch's.
    let before = groups.clone();
    let mut branch = |components: &mut [Component], at: String| {
        let mut branch_groups = before.clone();
        validate_components(components, &at, &mut branch_groups)?;
        for group in branch_groups {
            if !groups.contains(&group) {
                groups.push(group);
            }
        }
        Ok::<_, TariffError>(())
    };
    match choice {
        Choice::TotalKwh { bands } => {
            let limits: Vec<_> = bands.iter().map(|band: &KwhBand| band.up_to_kwh).collect();
            validate_band_limits(&limits, at)?;
            for (index, band) in bands.iter_mut().enumerate() {
                branch(&mut band.then, format!("{at}.bands[{index}].then"))?;
            }
        }
        Choice::SanctionedKw { bands } | Choice::ConnectedKw { bands } => {
            let limits: Vec<_> = bands.iter().map(|band: &KwBand| band.up_to_kw).collect();
            validate_band_limits(&limits, at)?;
            for (index, band) in bands.iter_mut().enumerate() {
                branch(&mut band.then, format!("{at}.bands[{index}].then"))?;
            }
        }
        Choice::Phase { single, three } => {
            branch(single, format!("{at}.single"))?;
            branch(three, format!("{at}.three"))?;
        }
    }
    Ok(())
}

fn validate_slabs(charge: &SlabCharge, at: &str) -> Result<(), TariffError> {
    non_empty(&charge.group, at, "group")?;
    if charge.slabs.is_empty() {
        return Err(TariffError::Empty { at: at.to_owned(), field: "slabs" });
    }
    for (index, slab) in charge.slabs.iter().enumerate() {
        let at = format!("{at}.slabs[{index}]");
        non_empty(&slab.name, &at, "name")?;
        non_negative(slab.rate, &at)?;
    }
    let limits: Vec<_> = charge.slabs.iter().map(|slab| slab.up_to_kwh).collect();
    validate_limits(&limits, Decimal::ZERO, &format!("{at}.slabs"))
}

fn validate_minimum(charge: &MinimumCharge, at: &str, groups: &[String]) -> Result<(), TariffError> {
    non_empty(&charge.name, at, "name")?;
    if let Some(of) = &charge.of {
        known_groups(of, groups, at)?;
    }
    match (&charge.rate, &charge.kw_slabs) {
        (Some(rate), None) => non_negative(*rate, at),
        (None, Some(slabs)) => {
            if !charge.per.is_per_kw() {
                return Err(TariffError::KwSlabsWithoutLoadBasis { at: at.to_owned() });
            }
            if slabs.is_empty() {
                return Err(TariffError::Empty { at: at.to_owned(), field: "kw_slabs" });
            }
            for slab in slabs {
                non_negative(slab.rate, at)?;
            }
            let limits: Vec<_> = slabs.iter().map(|slab: &KwSlab| slab.up_to_kw).collect();
            validate_limits(&limits, Decimal::ZERO, &format!("{at}.kw_slabs"))?;
            if limits.last().is_some_and(Option::is_some) {
                return Err(TariffError::LastBandClosed { at: format!("{at}.kw_slabs") });
            }
            Ok(())
        }
        _ => Err(TariffError::MinimumRateAmbiguous { at: at.to_owned() }),
    }
}

fn validate_time_of_use(charge: &mut TimeOfUseCharge, at: &str) -> Result<(), TariffError> {
    non_empty(&charge.group, at, "group")?;
    if charge.bands.is_empty() {
        return Err(TariffError::Empty { at: at.to_owned(), field: "bands" });
    }
    let mut owner: [Option<u8>; 24] = [None; 24];
    for (index, band) in charge.bands.iter().enumerate() {
        let band_at = format!("{at}.bands[{index}]");
        non_empty(&band.name, &band_at, "name")?;
        non_negative(band.rate, &band_at)?;
        let on_the_hour = |time: jiff::civil::Time| {
            time.minute() == 0 && time.second() == 0 && time.subsec_nanosecond() == 0
        };
        if !on_the_hour(band.from) || !on_the_hour(band.to) {
            return Err(TariffError::TimeOfUseNotOnTheHour { at: at.to_owned(), band: band.name.clone() });
        }
        let (from, to) = (band.from.hour() as u8, band.to.hour() as u8);
        if from == to {
            return Err(TariffError::TimeOfUseEmptyBand { at: at.to_owned(), band: band.name.clone() });
        }
        let mut hour = from;
        while hour != to {
            if let Some(other) = owner[usize::from(hour)] {
                return Err(TariffError::TimeOfUseOverlap {
                    at: at.to_owned(),
                    first: charge.bands[usize::from(other)].name.clone(),
                    second: band.name.clone(),
                    hour,
                });
            }
            // At most 24 bands fit in a day, so the index fits in a u8.
            owner[usize::from(hour)] = Some(index as u8);
            hour = (hour + 1) % 24;
        }
    }
    for (hour, band) in owner.iter().enumerate() {
        match band {
            Some(band) => charge.band_by_hour[hour] = *band,
            None => return Err(TariffError::TimeOfUseGap { at: at.to_owned(), hour: hour as u8 }),
        }
    }
    Ok(())
}

/// Band limits of a [`Choice`]: ascending, not negative, the last one open.
fn validate_band_limits(limits: &[Option<Decimal>], at: &str) -> Result<(), TariffError> {
    let bands_at = format!("{at}.bands");
    if limits.is_empty() {
        return Err(TariffError::Empty { at: at.to_owned(), field: "bands" });
    }
    if let Some(first) = limits[0] {
        if first < Decimal::ZERO {
            return Err(TariffError::NegativeLimit { at: bands_at, limit: first });
        }
    }
    // A band "up to 0" (exactly zero) is allowed, so start below it.
    validate_limits(limits, Decimal::NEGATIVE_ONE, &bands_at)?;
    if limits.last().is_some_and(Option::is_some) {
        return Err(TariffError::LastBandClosed { at: bands_at });
    }
    Ok(())
}

/// Upper limits strictly ascending above `floor`; only the last may be open.
fn validate_limits(limits: &[Option<Decimal>], floor: Decimal, at: &str) -> Result<(), TariffError> {
    let mut previous = floor;
    for (index, limit) in limits.iter().enumerate() {
        match limit {
            None if index + 1 < limits.len() => {
                return Err(TariffError::OpenLimitNotLast { at: at.to_owned() });
            }
            None => {}
            Some(limit) if *limit < Decimal::ZERO => {
                return Err(TariffError::NegativeLimit { at: at.to_owned(), limit: *limit });
            }
            Some(limit) if *limit <= previous => {
                return Err(TariffError::LimitsNotAscending {
                    at: at.to_owned(),
                    previous: previous.max(Decimal::ZERO),
                    limit: *limit,
                });
            }
            Some(limit) => previous = *limit,
        }
    }
    Ok(())
}

fn define(groups: &mut Vec<String>, group: &str, at: &str) -> Result<(), TariffError> {
    non_empty(group, at, "group")?;
    if !groups.iter().any(|known| known == group) {
        groups.push(group.to_owned());
    }
    Ok(())
}

fn known_groups(of: &[String], groups: &[String], at: &str) -> Result<(), TariffError> {
    match of.iter().find(|group| !groups.contains(group)) {
        Some(group) => Err(TariffError::UnknownGroup { at: at.to_owned(), group: group.clone() }),
        None => Ok(()),
    }
}

fn non_empty(value: &str, at: &str, field: &'static str) -> Result<(), TariffError> {
    if value.trim().is_empty() {
        return Err(TariffError::Empty { at: at.to_owned(), field });
    }
    Ok(())
}

fn non_negative(rate: Decimal, at: &str) -> Result<(), TariffError> {
    if rate < Decimal::ZERO {
        return Err(TariffError::NegativeRate { at: at.to_owned(), rate });
    }
    Ok(())
}

pub(crate) fn validate_history(versions: &[Tariff]) -> Result<(), TariffError> {
    let Some(first) = versions.first() else {
        return Err(TariffError::EmptyHistory);
    };
    for pair in versions.windows(2) {
        let (previous, next) = (pair[0].document(), pair[1].document());
        if next.tariff_id != first.tariff_id() {
            return Err(TariffError::MixedTariffs {
                first: first.tariff_id().to_owned(),
                other: next.tariff_id.clone(),
            });
        }
        let inconsistent =
            |what| TariffError::InconsistentHistory { tariff_id: next.tariff_id.clone(), what };
        if next.currency != previous.currency {
            return Err(inconsistent("currency"));
        }
        if next.time_zone != previous.time_zone {
            return Err(inconsistent("time_zone"));
        }
        if next.effective_from <= previous.effective_from || next.version <= previous.version {
            return Err(TariffError::VersionsNotOrdered {
                previous_version: previous.version,
                previous_effective_from: previous.effective_from,
                version: next.version,
                effective_from: next.effective_from,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::billing::tariff::TariffHistory;
    use serde_json::{json, Value};

    /// A small valid document using every kind of component.
    fn valid() -> Value {
        json!({
            "tariff_id": "test_tariff", "version": 1, "effective_from": "2024-01-01",
            "currency": "INR", "time_zone": "Asia/Kolkata",
            "components": [
                {"kind": "slabs", "group": "energy", "pricing": "telescopic", "slabs": [
                    {"name": "energy 0-100", "up_to_kwh": "100", "rate": "3"},
                    {"name": "energy 100-above", "up_to_kwh": null, "rate": "5"}]},
                {"kind": "time_of_use", "group": "tou", "bands": [
                    {"name": "night", "from": "22:00", "to": "06:00", "rate": "0"},
                    {"name": "day", "from": "06:00", "to": "22:00", "rate": "0.5"}]},
                {"kind": "per_kwh", "name": "fuel", "group": "levy", "rate": "0.2"},
                {"kind": "choose", "by": "total_kwh", "bands": [
                    {"up_to_kwh": "0", "then": []},
                    {"up_to_kwh": "50", "then": [
                        {"kind": "per_kwh", "name": "rebate", "group": "rebate", "rate": "0.1", "credit": true}]},
                    {"up_to_kwh": null, "then": []}]},
                {"kind": "choose", "by": "sanctioned_kw", "bands": [
                    {"up_to_kw": "5", "then": [
                        {"kind": "choose", "by": "phase",
                         "single": [{"kind": "fixed", "name": "fixed", "group": "fixed", "per": "month", "rate": "40"}],
                         "three": [{"kind": "fixed", "name": "fixed", "group": "fixed", "per": "month", "rate": "90"}]}]},
                    {"up_to_kw": null, "then": [
                        {"kind": "fixed", "name": "fixed", "group": "fixed", "per": "sanctioned_kw_month", "rate": "20"}]}]},
                {"kind": "percent", "name": "surcharge", "group": "surcharge", "percent": "8", "of": ["fixed", "energy"]},
                {"kind": "percent", "name": "tax", "group": "tax", "percent": "5", "of": ["fixed", "energy", "surcharge"]},
                {"kind": "minimum", "name": "minimum top-up", "group": "minimum", "per": "connected_kw_month",
                 "kw_slabs": [{"up_to_kw": "2", "rate": "120"}, {"up_to_kw": null, "rate": "70"}]}
            ],
            "included_taxes": [{"name": "VAT", "percent": "5", "of": ["energy"]}]
        })
    }

    fn check(document: Value) -> Result<Tariff, TariffError> {
        Tariff::from_json(&document.to_string())
    }

    fn refused(mutate: impl FnOnce(&mut Value)) -> TariffError {
        let mut document = valid();
        mutate(&mut document);
        check(document).expect_err("the tariff should be refused")
    }

    #[test]
    fn the_sample_document_is_valid_and_round_trips() {
        let tariff = check(valid()).expect("valid");
        let json = serde_json::to_string(&tariff).unwrap();
        assert_eq!(Tariff::from_json(&json).unwrap(), tariff);
    }

    #[test]
    fn unordered_or_overlapping_slabs_are_refused() {
        let error = refused(|doc| doc["components"][0]["slabs"][1]["up_to_kwh"] = json!("100"));
        assert!(
            matches!(error, TariffError::OpenLimitNotLast { .. } | TariffError::LimitsNotAscending { .. }),
            "{error}"
        );
        let error = refused(|doc| {
            doc["components"][0]["slabs"] = json!([
                {"name": "a", "up_to_kwh": "200", "rate": "3"},
                {"name": "b", "up_to_kwh": "100", "rate": "4"},
                {"name": "c", "up_to_kwh": null, "rate": "5"}]);
        });
        assert!(matches!(error, TariffError::LimitsNotAscending { .. }), "{error}");
        assert_eq!(
            error.to_string(),
            "components[0].slabs: limits must be strictly ascending, without overlap: 100 follows 200"
        );
        let error = refused(|doc| {
            doc["components"][0]["slabs"] = json!([
                {"name": "a", "up_to_kwh": null, "rate": "3"},
                {"name": "b", "up_to_kwh": "100", "rate": "4"}]);
        });
        assert!(matches!(error, TariffError::OpenLimitNotLast { .. }), "{error}");
        let error = refused(|doc| doc["components"][0]["slabs"][0]["up_to_kwh"] = json!("0"));
        assert!(matches!(error, TariffError::LimitsNotAscending { .. }), "{error}");
        let error = refused(|doc| doc["components"][0]["slabs"] = json!([]));
        assert!(matches!(error, TariffError::Empty { field: "slabs", .. }), "{error}");
    }

    #[test]
    fn negative_rates_are_refused_anywhere() {
        let error = refused(|doc| doc["components"][0]["slabs"][1]["rate"] = json!("-5"));
        assert!(matches!(error, TariffError::NegativeRate { .. }), "{error}");
        // Deep inside nested choices: the whole document is refused.
        let error =
            refused(|doc| doc["components"][4]["bands"][0]["then"][0]["three"][0]["rate"] = json!("-1"));
        assert_eq!(
            error.to_string(),
            "components[4].bands[0].then[0].three[0]: negative rate -1 (write rebates and discounts with `credit: true`)"
        );
        let error = refused(|doc| doc["components"][5]["percent"] = json!("-8"));
        assert!(matches!(error, TariffError::NegativeRate { .. }), "{error}");
    }

    #[test]
    fn unknown_time_zone_and_bad_currency_are_refused() {
        let error = refused(|doc| doc["time_zone"] = json!("Asia/Calcutta_Nowhere"));
        assert!(
            matches!(error, TariffError::UnknownTimeZone { ref name } if name == "Asia/Calcutta_Nowhere"),
            "{error}"
        );
        let error = refused(|doc| doc["currency"] = json!("rupees"));
        assert!(matches!(error, TariffError::Json(_)), "{error}");
        assert!(error.to_string().contains("ISO 4217"), "{error}");
    }

    #[test]
    fn time_of_use_bands_must_cover_the_day_once() {
        let error = refused(|doc| doc["components"][1]["bands"][1]["to"] = json!("23:00"));
        assert!(matches!(error, TariffError::TimeOfUseOverlap { hour: 22, .. }), "{error}");
        let error = refused(|doc| doc["components"][1]["bands"][1]["to"] = json!("21:00"));
        assert!(matches!(error, TariffError::TimeOfUseGap { hour: 21, .. }), "{error}");
        let error = refused(|doc| doc["components"][1]["bands"][1]["from"] = json!("06:30"));
        assert!(matches!(error, TariffError::TimeOfUseNotOnTheHour { .. }), "{error}");
        let error = refused(|doc| doc["components"][1]["bands"][0]["to"] = json!("22:00"));
        assert!(matches!(error, TariffError::TimeOfUseEmptyBand { .. }), "{error}");
    }

    #[test]
    fn time_of_use_bands_crossing_midnight_fill_the_hour_table() {
        let tariff = check(valid()).unwrap();
        let Component::TimeOfUse(tou) = &tariff.document().components[1] else { panic!() };
        let night: Vec<usize> = (0..24).filter(|hour| tou.band_by_hour[*hour] == 0).collect();
        assert_eq!(night, [0, 1, 2, 3, 4, 5, 22, 23]);
    }

    #[test]
    fn groups_must_be_defined_before_they_are_referred_to() {
        let error = refused(|doc| doc["components"][5]["of"] = json!(["fixed", "tax"]));
        assert!(matches!(error, TariffError::UnknownGroup { ref group, .. } if group == "tax"), "{error}");
        let error = refused(|doc| doc["included_taxes"][0]["of"] = json!(["nothing"]));
        assert!(matches!(error, TariffError::UnknownGroup { .. }), "{error}");
        let error = refused(|doc| doc["components"][5]["of"] = json!([]));
        assert!(matches!(error, TariffError::Empty { field: "of", .. }), "{error}");
    }

    #[test]
    fn choice_bands_must_ascend_and_end_open() {
        let error = refused(|doc| doc["components"][3]["bands"][2]["up_to_kwh"] = json!("400"));
        assert!(matches!(error, TariffError::LastBandClosed { .. }), "{error}");
        let error = refused(|doc| doc["components"][3]["bands"][1]["up_to_kwh"] = json!("0"));
        assert!(matches!(error, TariffError::LimitsNotAscending { .. }), "{error}");
        let error = refused(|doc| doc["components"][3]["bands"][0]["up_to_kwh"] = json!("-1"));
        assert!(matches!(error, TariffError::NegativeLimit { .. }), "{error}");
    }

    #[test]
    fn minimum_charges_need_one_well_formed_rate() {
        let error = refused(|doc| doc["components"][7]["rate"] = json!("100"));
        assert!(matches!(error, TariffError::MinimumRateAmbiguous { .. }), "{error}");
        let error = refused(|doc| doc["components"][7]["per"] = json!("bill"));
        assert!(matches!(error, TariffError::KwSlabsWithoutLoadBasis { .. }), "{error}");
        let error = refused(|doc| doc["components"][7]["kw_slabs"][1]["up_to_kw"] = json!("9"));
        assert!(matches!(error, TariffError::LastBandClosed { .. }), "{error}");
    }

    #[test]
    fn floats_typos_and_bad_rules_are_refused() {
        // A JSON number would have passed through a float.
        let error = refused(|doc| doc["components"][2]["rate"] = json!(0.2));
        assert!(matches!(error, TariffError::Json(_)), "{error}");
        let error = refused(|doc| doc["components"][2]["rte"] = json!("0.2"));
        assert!(error.to_string().contains("rte"), "{error}");
        let error = refused(|doc| doc["components"][2]["kind"] = json!("per_kvah"));
        assert!(matches!(error, TariffError::Json(_)), "{error}");
        let error = refused(|doc| doc["rounding"] = json!({"line": {"increment": "0"}}));
        assert!(matches!(error, TariffError::InvalidRounding { .. }), "{error}");
        let error = refused(|doc| {
            doc["period_months"] =
                json!({"rule": "days_over_basis", "basis_days": 0, "normal_days": {"min": 25, "max": 35}})
        });
        assert!(matches!(error, TariffError::InvalidPeriodMonths { .. }), "{error}");
    }

    #[test]
    fn histories_hold_one_tariff_in_date_order() {
        let version = |version: u32, effective_from: &str, id: &str| {
            let mut doc = valid();
            doc["version"] = json!(version);
            doc["effective_from"] = json!(effective_from);
            doc["tariff_id"] = json!(id);
            doc
        };
        let history = |docs: Vec<Value>| TariffHistory::from_json(&Value::Array(docs).to_string());
        let ok = history(vec![version(1, "2024-01-01", "t"), version(2, "2024-04-01", "t")]).unwrap();
        assert_eq!(ok.in_force_on(jiff::civil::date(2024, 3, 31)).unwrap().version(), 1);
        assert_eq!(ok.in_force_on(jiff::civil::date(2024, 4, 1)).unwrap().version(), 2);
        assert!(ok.in_force_on(jiff::civil::date(2023, 12, 31)).is_none());

        let error = history(vec![version(2, "2024-04-01", "t"), version(1, "2024-01-01", "t")]).unwrap_err();
        assert!(matches!(error, TariffError::VersionsNotOrdered { .. }), "{error}");
        let error = history(vec![version(1, "2024-01-01", "t"), version(2, "2024-01-01", "t")]).unwrap_err();
        assert!(matches!(error, TariffError::VersionsNotOrdered { .. }), "{error}");
        let error = history(vec![version(1, "2024-01-01", "t"), version(2, "2024-04-01", "u")]).unwrap_err();
        assert!(matches!(error, TariffError::MixedTariffs { .. }), "{error}");
        let error = history(vec![]).unwrap_err();
        assert!(matches!(error, TariffError::EmptyHistory), "{error}");
        let mut broken = version(2, "2024-04-01", "t");
        broken["time_zone"] = json!("Mars/Olympus");
        let error = history(vec![version(1, "2024-01-01", "t"), broken]).unwrap_err();
        assert!(matches!(error, TariffError::InVersion { index: 1, .. }), "{error}");
    }
}
