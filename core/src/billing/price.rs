//! Pricing a billing period into invoice lines: a pure function of the tariff and the
//! period.
//!
//! Lines are rounded one by one with the tariff's line rule; a percentage is taken of
//! the rounded lines it refers to; the total is the sum of the rounded lines (rounded
//! again if the tariff says so, the difference shown as a line). A period that crosses
//! a tariff change is priced in parts, one per version: each part's energy is the sum
//! of its hours, and its per-month charges and kWh slab limits are scaled by its month
//! factor, which is its share of the period's days unless the tariff's
//! [`PeriodMonths`](super::tariff::PeriodMonths) rule measures parts itself.

use rust_decimal::Decimal;

use super::invoice::{IncludedTax, Invoice, InvoiceLine, PricedPart, Unit};
use super::period::{BillingPeriod, Part};
use super::rounding::RoundingStep;
use super::tariff::{
    Basis, Choice, Component, KwSlab, MinimumCharge, Phase, SlabCharge, SlabPricing, Tariff, TariffHistory,
    TimeOfUseCharge,
};

/// Why a period could not be priced. The tariff was valid; the period, or what the
/// tariff needs from it, is not.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PricingError {
    #[error("the period ends ({last_day}) before it starts ({first_day})")]
    PeriodEndsBeforeStart { first_day: jiff::civil::Date, last_day: jiff::civil::Date },
    #[error("negative {what}: {value}")]
    Negative { what: &'static str, value: Decimal },
    #[error("hourly energy at {hour_start} lies outside the period {first_day}..={last_day}")]
    HourOutsidePeriod {
        hour_start: jiff::civil::DateTime,
        first_day: jiff::civil::Date,
        last_day: jiff::civil::Date,
    },
    #[error("hourly energy adds up to {hourly_kwh} kWh but the period's energy is {energy_kwh} kWh")]
    HourlyEnergyMismatch { hourly_kwh: Decimal, energy_kwh: Decimal },
    #[error("the tariff needs {what}, which the period does not give")]
    MissingInput { what: &'static str },
    #[error("{energy_kwh} kWh lies above the last slab ({last_slab:?}), which is closed")]
    AboveLastSlab { energy_kwh: Decimal, last_slab: String },
    #[error("no version of tariff {tariff_id:?} is in force on {day}")]
    NoVersionInForce { tariff_id: String, day: jiff::civil::Date },
}

/// Prices `period` with this one version, whatever its `effective_from` (the caller
/// chose it; [`price_across_versions`] chooses by date).
pub fn price(tariff: &Tariff, period: &BillingPeriod) -> Result<Invoice, PricingError> {
    check_period(period)?;
    let whole = Part { first_day: period.first_day, last_day: period.last_day };
    let mut invoice = InvoiceBuilder::new(tariff, period, 1);
    invoice.price_part(tariff, whole, period.energy_kwh)?;
    Ok(invoice.finish(tariff))
}

/// Prices `period` with the versions in force on its days: split at each change of
/// version, energy by the hourly data on each side, per-month and per-bill charges and
/// slab limits pro rata, per-day charges by the days on each side.
pub fn price_across_versions(
    history: &TariffHistory,
    period: &BillingPeriod,
) -> Result<Invoice, PricingError> {
    let versions = history.versions();
    let in_force = versions.partition_point(|version| version.effective_from() <= period.first_day);
    let Some(mut index) = in_force.checked_sub(1) else {
        return Err(PricingError::NoVersionInForce {
            tariff_id: history.tariff_id().to_owned(),
            day: period.first_day,
        });
    };
    let changes_inside = versions[index + 1..]
        .iter()
        .take_while(|version| version.effective_from() <= period.last_day)
        .count();
    if changes_inside == 0 {
        return price(&versions[index], period);
    }

    check_period(period)?;
    if period.hourly_energy.is_empty() && !period.energy_kwh.is_zero() {
        return Err(PricingError::MissingInput {
            what: "hourly energy (to split the period at a tariff change)",
        });
    }
    let mut invoice = InvoiceBuilder::new(&versions[index], period, changes_inside + 1);
    let mut first_day = period.first_day;
    loop {
        let next = versions.get(index + 1).filter(|next| next.effective_from() <= period.last_day);
        let last_day = match next {
            Some(next) => {
                next.effective_from().yesterday().expect("a tariff date is far from the start of time")
            }
            None => period.last_day,
        };
        let part = Part { first_day, last_day };
        let energy_kwh = period
            .hourly_energy
            .iter()
            .filter(|hour| part.contains(hour.hour_start.date()))
            .map(|hour| hour.energy_kwh)
            .sum();
        invoice.price_part(&versions[index], part, energy_kwh)?;
        match next {
            Some(next) => {
                first_day = next.effective_from();
                index += 1;
            }
            None => return Ok(invoice.finish(&versions[index])),
        }
    }
}

fn check_period(period: &BillingPeriod) -> Result<(), PricingError> {
    if period.last_day < period.first_day {
        return Err(PricingError::PeriodEndsBeforeStart {
            first_day: period.first_day,
            last_day: period.last_day,
        });
    }
    let not_negative = |what, value: Option<Decimal>| match value {
        Some(value) if value.is_sign_negative() && !value.is_zero() => {
            Err(PricingError::Negative { what, value })
        }
        _ => Ok(()),
    };
    not_negative("energy", Some(period.energy_kwh))?;
    not_negative("sanctioned load", period.sanctioned_load_kw)?;
    not_negative("connected load", period.connected_load_kw)?;
    if period.hourly_energy.is_empty() {
        return Ok(());
    }
    let whole = Part { first_day: period.first_day, last_day: period.last_day };
    let mut hourly_kwh = Decimal::ZERO;
    for hour in &period.hourly_energy {
        if !whole.contains(hour.hour_start.date()) {
            return Err(PricingError::HourOutsidePeriod {
                hour_start: hour.hour_start,
                first_day: period.first_day,
                last_day: period.last_day,
            });
        }
        not_negative("hourly energy", Some(hour.energy_kwh))?;
        hourly_kwh += hour.energy_kwh;
    }
    if hourly_kwh != period.energy_kwh {
        return Err(PricingError::HourlyEnergyMismatch { hourly_kwh, energy_kwh: period.energy_kwh });
    }
    Ok(())
}

impl Part {
    fn contains(&self, day: jiff::civil::Date) -> bool {
        self.first_day <= day && day <= self.last_day
    }
}

/// What the components of one part see.
struct PartContext<'p> {
    period: &'p BillingPeriod,
    part: Part,
    days: i32,
    /// Share of the period's days: what a per-bill charge counts for.
    bill_share: Decimal,
    /// Month factor: per-month charges are multiplied, kWh limits scaled by it.
    months: Decimal,
    energy_kwh: Decimal,
    /// Whether the period came with energy by local hour.
    has_hourly_energy: bool,
}

impl PartContext<'_> {
    fn scale_kwh(&self, limit_kwh: Decimal) -> Decimal {
        if self.months == Decimal::ONE {
            limit_kwh
        } else {
            limit_kwh * self.months
        }
    }

    fn load_kw(&self, basis: Basis) -> Result<Decimal, PricingError> {
        match basis {
            Basis::SanctionedKwMonth => self.sanctioned_load_kw(),
            _ => self.connected_load_kw(),
        }
    }

    fn sanctioned_load_kw(&self) -> Result<Decimal, PricingError> {
        self.period.sanctioned_load_kw.ok_or(PricingError::MissingInput { what: "sanctioned load" })
    }

    fn connected_load_kw(&self) -> Result<Decimal, PricingError> {
        self.period.connected_load_kw.ok_or(PricingError::MissingInput { what: "connected load" })
    }

    /// How many units of `basis` this part counts for.
    fn quantity(&self, basis: Basis) -> Result<(Decimal, Unit), PricingError> {
        Ok(match basis {
            Basis::Bill => (self.bill_share, Unit::Bill),
            Basis::Month => (self.months, Unit::Month),
            Basis::Day => (Decimal::from(self.days), Unit::Day),
            Basis::SanctionedKwMonth | Basis::ConnectedKwMonth => {
                (self.load_kw(basis)? * self.months, Unit::KwMonth)
            }
        })
    }
}

/// Accumulates the lines of all parts.
struct InvoiceBuilder<'t> {
    lines: Vec<InvoiceLine>,
    /// The group of each line of the current part, parallel to its lines.
    groups: Vec<&'t str>,
    part_start: usize,
    parts: Vec<PricedPart>,
    /// Unrounded content of included taxes, by (name, percent).
    included: Vec<(&'t str, Decimal, Decimal, Decimal)>,
    period: &'t BillingPeriod,
    rounding: RoundingStep,
    currency: super::tariff::Currency,
}

impl<'t> InvoiceBuilder<'t> {
    fn new(first: &Tariff, period: &'t BillingPeriod, parts: usize) -> Self {
        Self {
            lines: Vec::with_capacity(12 * parts),
            groups: Vec::with_capacity(12),
            part_start: 0,
            parts: Vec::with_capacity(parts),
            included: Vec::new(),
            period,
            rounding: first.document().rounding.line,
            currency: first.currency(),
        }
    }

    fn price_part(
        &mut self,
        tariff: &'t Tariff,
        part: Part,
        energy_kwh: Decimal,
    ) -> Result<(), PricingError> {
        let document = tariff.document();
        let whole = Part { first_day: self.period.first_day, last_day: self.period.last_day };
        let days = part.days();
        let context = PartContext {
            period: self.period,
            part,
            days,
            bill_share: if part == whole {
                Decimal::ONE
            } else {
                Decimal::from(days) / Decimal::from(whole.days())
            },
            months: document.period_months.months(whole, part),
            energy_kwh,
            has_hourly_energy: !self.period.hourly_energy.is_empty(),
        };
        self.rounding = document.rounding.line;
        self.part_start = self.lines.len();
        self.groups.clear();
        self.price_components(&document.components, &context)?;

        for tax in &document.included_taxes {
            let base = self.sum_of(tax.of.as_deref());
            let content = base * tax.percent / (Decimal::ONE_HUNDRED + tax.percent);
            match self
                .included
                .iter_mut()
                .find(|(name, percent, ..)| *name == tax.name && *percent == tax.percent)
            {
                Some((_, _, total_base, total_content)) => {
                    *total_base += base;
                    *total_content += content;
                }
                None => self.included.push((&tax.name, tax.percent, base, content)),
            }
        }
        self.parts.push(PricedPart {
            version: document.version,
            effective_from: document.effective_from,
            first_day: part.first_day,
            last_day: part.last_day,
            energy_kwh,
            months: context.months.normalize(),
            lines: self.part_start..self.lines.len(),
        });
        Ok(())
    }

    fn price_components(
        &mut self,
        components: &'t [Component],
        part: &PartContext,
    ) -> Result<(), PricingError> {
        for component in components {
            match component {
                Component::PerKwh(charge) => {
                    let rate = if charge.credit { -charge.rate } else { charge.rate };
                    self.push_priced(&charge.group, &charge.name, part.energy_kwh, Unit::Kwh, rate);
                }
                Component::Slabs(charge) => self.price_slabs(charge, part)?,
                Component::TimeOfUse(charge) => self.price_time_of_use(charge, part)?,
                Component::Fixed(charge) => {
                    let (quantity, unit) = part.quantity(charge.per)?;
                    self.push_priced(&charge.group, &charge.name, quantity, unit, charge.rate);
                }
                Component::Percent(charge) => {
                    let base = self.sum_of(Some(&charge.of));
                    let percent = if charge.credit { -charge.percent } else { charge.percent };
                    let amount = self.rounding.apply(base * percent / Decimal::ONE_HUNDRED);
                    self.push(
                        &charge.group,
                        InvoiceLine {
                            name: charge.name.clone(),
                            quantity: Some(base.normalize()),
                            unit: Some(Unit::Base(self.currency)),
                            rate: Some(percent),
                            amount,
                        },
                    );
                }
                Component::Minimum(charge) => self.price_minimum(charge, part)?,
                Component::Choose(choice) => {
                    let chosen = choose(choice, part)?;
                    self.price_components(chosen, part)?;
                }
            }
        }
        Ok(())
    }

    fn price_slabs(&mut self, charge: &'t SlabCharge, part: &PartContext) -> Result<(), PricingError> {
        let energy = part.energy_kwh;
        let above_last_slab = || PricingError::AboveLastSlab {
            energy_kwh: energy,
            last_slab: charge.slabs.last().map(|slab| slab.name.clone()).unwrap_or_default(),
        };
        if energy.is_zero() {
            return Ok(());
        }
        match charge.pricing {
            SlabPricing::Telescopic => {
                let mut lower = Decimal::ZERO;
                for slab in &charge.slabs {
                    if energy <= lower {
                        return Ok(());
                    }
                    let upper = slab.up_to_kwh.map(|limit| part.scale_kwh(limit));
                    let top = match upper {
                        Some(upper) if upper < energy => upper,
                        _ => energy,
                    };
                    self.push_priced(&charge.group, &slab.name, top - lower, Unit::Kwh, slab.rate);
                    lower = top;
                }
                if energy > lower {
                    return Err(above_last_slab());
                }
            }
            SlabPricing::NonTelescopic => {
                let slab = charge
                    .slabs
                    .iter()
                    .find(|slab| slab.up_to_kwh.is_none_or(|limit| energy <= part.scale_kwh(limit)))
                    .ok_or_else(above_last_slab)?;
                self.push_priced(&charge.group, &slab.name, energy, Unit::Kwh, slab.rate);
            }
        }
        Ok(())
    }

    fn price_time_of_use(
        &mut self,
        charge: &'t TimeOfUseCharge,
        part: &PartContext,
    ) -> Result<(), PricingError> {
        if !part.has_hourly_energy && !part.energy_kwh.is_zero() {
            return Err(PricingError::MissingInput { what: "hourly energy (for time-of-use bands)" });
        }
        let mut by_band = [Decimal::ZERO; 24];
        for hour in &part.period.hourly_energy {
            if part.part.contains(hour.hour_start.date()) {
                let band = charge.band_by_hour[usize::from(hour.hour_start.hour() as u8)];
                by_band[usize::from(band)] += hour.energy_kwh;
            }
        }
        for (band, energy_kwh) in charge.bands.iter().zip(by_band) {
            self.push_priced(&charge.group, &band.name, energy_kwh, Unit::Kwh, band.rate);
        }
        Ok(())
    }

    fn price_minimum(&mut self, charge: &'t MinimumCharge, part: &PartContext) -> Result<(), PricingError> {
        let minimum = match (&charge.rate, &charge.kw_slabs) {
            (Some(rate), _) => part.quantity(charge.per)?.0 * rate,
            (None, Some(slabs)) => telescopic_over_kw(slabs, part.load_kw(charge.per)?) * part.months,
            (None, None) => Decimal::ZERO, // refused by validation
        };
        let minimum = self.rounding.apply(minimum);
        let charged = self.sum_of(charge.of.as_deref());
        if charged < minimum {
            self.push(
                &charge.group,
                InvoiceLine {
                    name: charge.name.clone(),
                    quantity: None,
                    unit: None,
                    rate: None,
                    amount: minimum - charged,
                },
            );
        }
        Ok(())
    }

    /// Sum of the current part's lines in `groups` (all of them for `None`).
    fn sum_of(&self, groups: Option<&[String]>) -> Decimal {
        let lines = &self.lines[self.part_start..];
        match groups {
            None => lines.iter().map(|line| line.amount).sum(),
            Some(groups) => lines
                .iter()
                .zip(&self.groups)
                .filter(|(_, group)| groups.iter().any(|wanted| wanted == *group))
                .map(|(line, _)| line.amount)
                .sum(),
        }
    }

    fn push_priced(&mut self, group: &'t str, name: &str, quantity: Decimal, unit: Unit, rate: Decimal) {
        let amount = self.rounding.apply(quantity * rate);
        self.push(
            group,
            InvoiceLine {
                name: name.to_owned(),
                quantity: Some(quantity.normalize()),
                unit: Some(unit),
                rate: Some(rate),
                amount,
            },
        );
    }

    fn push(&mut self, group: &'t str, line: InvoiceLine) {
        self.lines.push(line);
        self.groups.push(group);
    }

    fn finish(mut self, last: &Tariff) -> Invoice {
        let mut total: Decimal = self.lines.iter().map(|line| line.amount).sum();
        if let Some(total_rounding) = &last.document().rounding.total {
            let rounded = total_rounding.step().apply(total);
            if rounded != total {
                self.lines.push(InvoiceLine {
                    name: total_rounding.line_name.clone(),
                    quantity: None,
                    unit: None,
                    rate: None,
                    amount: self.rounding.apply(rounded - total),
                });
            }
            // Never fewer decimals than the lines ("388.00", not "388").
            total = rounded;
            if total.scale() < self.rounding.increment.scale() {
                total.rescale(self.rounding.increment.scale());
            }
        }
        let rounding = self.rounding;
        Invoice {
            tariff_id: last.tariff_id().to_owned(),
            currency: self.currency,
            first_day: self.period.first_day,
            last_day: self.period.last_day,
            parts: self.parts,
            lines: self.lines,
            total,
            included_taxes: self
                .included
                .into_iter()
                .map(|(name, percent, base, content)| IncludedTax {
                    name: name.to_owned(),
                    percent,
                    base,
                    amount: rounding.apply(content),
                })
                .collect(),
        }
    }
}

fn choose<'t>(choice: &'t Choice, part: &PartContext) -> Result<&'t [Component], PricingError> {
    // Validation guarantees the last band is open, so a band is always found.
    let chosen = match choice {
        Choice::TotalKwh { bands } => bands
            .iter()
            .find(|band| band.up_to_kwh.is_none_or(|limit| part.energy_kwh <= part.scale_kwh(limit)))
            .map(|band| band.then.as_slice()),
        Choice::SanctionedKw { bands } => {
            let load = part.sanctioned_load_kw()?;
            bands
                .iter()
                .find(|band| band.up_to_kw.is_none_or(|limit| load <= limit))
                .map(|band| band.then.as_slice())
        }
        Choice::ConnectedKw { bands } => {
            let load = part.connected_load_kw()?;
            bands
                .iter()
                .find(|band| band.up_to_kw.is_none_or(|limit| load <= limit))
                .map(|band| band.then.as_slice())
        }
        Choice::Phase { single, three } => {
            match part.period.phase.ok_or(PricingError::MissingInput { what: "phase" })? {
                Phase::Single => Some(single.as_slice()),
                Phase::Three => Some(three.as_slice()),
            }
        }
    };
    Ok(chosen.unwrap_or_default())
}

/// Σ over kW slabs of the kW inside each × its rate (120/kW up to 2 kW, 70/kW above).
fn telescopic_over_kw(slabs: &[KwSlab], load_kw: Decimal) -> Decimal {
    let mut amount = Decimal::ZERO;
    let mut lower = Decimal::ZERO;
    for slab in slabs {
        if load_kw <= lower {
            break;
        }
        let top = slab.up_to_kw.map_or(load_kw, |limit| limit.min(load_kw));
        amount += (top - lower) * slab.rate;
        lower = top;
    }
    amount
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::billing::period::HourlyEnergy;
    use jiff::civil::{date, Date};
    use rust_decimal_macros::dec;
    use serde_json::json;

    pub(super) const SHIPPED: [&str; 6] = [
        include_str!("../../tariffs/kseb_lt1_domestic_2019.json"),
        include_str!("../../tariffs/tpddl_domestic_fy2015_16.json"),
        include_str!("../../tariffs/haryana_domestic_2015_16.json"),
        include_str!("../../tariffs/hkelectric_domestic_2014.json"),
        include_str!("../../tariffs/clp_nonresidential_2021.json"),
        include_str!("../../tariffs/ofgem_price_cap_2024q3.json"),
    ];

    pub(super) fn shipped(tariff_id: &str) -> TariffHistory {
        SHIPPED
            .iter()
            .map(|json| TariffHistory::from_json(json).expect("shipped tariffs are valid"))
            .find(|history| history.tariff_id() == tariff_id)
            .expect("a shipped tariff")
    }

    /// A one-month period inside the tariff's first version, with the loads and phase
    /// every shipped tariff may ask for.
    pub(super) fn month(history: &TariffHistory, energy_kwh: Decimal) -> BillingPeriod {
        let first_day = history.versions()[0].effective_from().last_of_month().tomorrow().unwrap();
        let mut period = BillingPeriod::new(first_day, first_day.last_of_month(), energy_kwh);
        period.sanctioned_load_kw = Some(dec!(3));
        period.connected_load_kw = Some(dec!(3));
        period.phase = Some(Phase::Single);
        period
    }

    fn bill(tariff_id: &str, energy_kwh: Decimal) -> Invoice {
        let history = shipped(tariff_id);
        price_across_versions(&history, &month(&history, energy_kwh)).expect("priced")
    }

    /// (name, quantity, amount) of the lines whose name starts with `prefix`.
    fn lines(invoice: &Invoice, prefix: &str) -> Vec<(String, Decimal, String)> {
        invoice
            .lines
            .iter()
            .filter(|line| line.name.starts_with(prefix))
            .map(|line| (line.name.clone(), line.quantity.unwrap_or_default(), line.amount.to_string()))
            .collect()
    }

    fn line(name: &str, quantity: Decimal, amount: &str) -> (String, Decimal, String) {
        (name.to_owned(), quantity, amount.to_owned())
    }

    #[test]
    fn telescopic_slab_boundaries_at_one_wh_above_and_far_above() {
        // TPDDL: 0-200 @4.00, 200-400 @5.95, 400-800 @7.30, 800-1200 @8.10, above @8.75.
        let names =
            ["energy 0-200", "energy 200-400", "energy 400-800", "energy 800-1200", "energy 1200-above"];
        let limits = [dec!(200), dec!(400), dec!(800), dec!(1200)];
        for (index, limit) in limits.into_iter().enumerate() {
            let at = lines(&bill("tpddl_domestic_fy2015_16", limit), "energy");
            assert_eq!(at.len(), index + 1, "at {limit}");
            assert_eq!(at.iter().map(|line| line.1).sum::<Decimal>(), limit);
            let previous = if index == 0 { Decimal::ZERO } else { limits[index - 1] };
            assert_eq!(at[index].0, names[index]);
            assert_eq!(at[index].1, limit - previous, "the slab ending at {limit} is full");

            let above = lines(&bill("tpddl_domestic_fy2015_16", limit + dec!(0.001)), "energy");
            assert_eq!(above.len(), index + 2, "1 Wh above {limit}");
            assert_eq!(above[index + 1].0, names[index + 1]);
            assert_eq!(above[index + 1].1, dec!(0.001));
            assert_eq!(above[..=index], at[..]);

            let far = lines(&bill("tpddl_domestic_fy2015_16", limit * dec!(10)), "energy");
            assert_eq!(far.len(), 5, "far above {limit}");
            assert_eq!(far[index].1, limit - previous);
            assert_eq!(far.iter().map(|line| line.1).sum::<Decimal>(), limit * dec!(10));
        }
        assert_eq!(
            lines(&bill("tpddl_domestic_fy2015_16", dec!(400.001)), "energy"),
            [
                line("energy 0-200", dec!(200), "800.00"),
                line("energy 200-400", dec!(200), "1190.00"),
                line("energy 400-800", dec!(0.001), "0.01"),
            ]
        );
        assert_eq!(
            lines(&bill("hkelectric_domestic_2014", dec!(300.001)), "basic"),
            [
                line("basic charge 0-150", dec!(150), "90.30"),
                line("basic charge 150-300", dec!(150), "111.15"),
                line("basic charge 300-500", dec!(0.001), "0.00"),
            ]
        );
    }

    #[test]
    fn telescopic_up_to_250_then_the_whole_total_at_its_band_rate() {
        let kseb = |kwh| bill("kseb_lt1_domestic_2019", kwh);
        for (limit, rate_above) in [
            (dec!(250), dec!(5.80)),
            (dec!(300), dec!(6.60)),
            (dec!(350), dec!(6.90)),
            (dec!(400), dec!(7.10)),
            (dec!(500), dec!(7.90)),
        ] {
            let above = kseb(limit + dec!(0.001));
            let energy = lines(&above, "energy");
            assert_eq!(energy.len(), 1, "1 Wh above {limit}: one non-telescopic line");
            assert_eq!(energy[0].1, limit + dec!(0.001));
            assert_eq!(above.lines[0].rate, Some(rate_above));
        }
        assert_eq!(lines(&kseb(dec!(250)), "energy").len(), 5);
        assert_eq!(
            lines(&kseb(dec!(300)), "energy")[0],
            line("energy non-telescopic band upto 300", dec!(300), "1740.00")
        );
        assert_eq!(
            lines(&kseb(dec!(20000)), "energy")[0],
            line("energy non-telescopic band upto None", dec!(20000), "158000.00")
        );
        // The fixed charge follows the band of the total.
        assert_eq!(lines(&kseb(dec!(100)), "fixed")[0].2, "45.00");
        assert_eq!(lines(&kseb(dec!(100.001)), "fixed")[0].2, "55.00");
    }

    #[test]
    fn a_category_chosen_by_the_total_reprices_every_unit() {
        let haryana = |kwh| bill("haryana_domestic_2015_16", kwh);
        assert_eq!(haryana(dec!(100)).total, dec!(360.00));
        assert_eq!(
            lines(&haryana(dec!(100.001)), "energy"),
            [line("energy Category II 0-250", dec!(100.001), "500.01")]
        );
        assert_eq!(haryana(dec!(500)).total, dec!(2762.50));
        assert_eq!(haryana(dec!(500.001)).total, dec!(3375.01));
        assert_eq!(haryana(dec!(5000)).total, dec!(33750.00));
    }

    #[test]
    fn zero_consumption_pays_the_minimum_charge() {
        let top_up = |invoice: &Invoice| {
            let last = invoice.lines.last().unwrap();
            assert_eq!((last.quantity, last.unit, last.rate), (None, None, None));
            assert_eq!(invoice.total, last.amount);
            last.amount
        };
        assert_eq!(top_up(&bill("hkelectric_domestic_2014", Decimal::ZERO)), dec!(17.70));
        assert_eq!(top_up(&bill("clp_nonresidential_2021", Decimal::ZERO)), dec!(40.00));
        // 3 kW connected: 2 × 120 + 1 × 70.
        assert_eq!(top_up(&bill("haryana_domestic_2015_16", Decimal::ZERO)), dec!(310.00));
        // No minimum: fixed charges only.
        assert_eq!(bill("kseb_lt1_domestic_2019", Decimal::ZERO).total, dec!(35.00));
        assert_eq!(bill("tpddl_domestic_fy2015_16", Decimal::ZERO).total, dec!(117.39));
    }

    #[test]
    fn missing_inputs_and_bad_periods_are_errors() {
        let kseb = shipped("kseb_lt1_domestic_2019");
        let mut period = month(&kseb, dec!(10));
        period.phase = None;
        assert_eq!(price_across_versions(&kseb, &period), Err(PricingError::MissingInput { what: "phase" }));
        let tpddl = shipped("tpddl_domestic_fy2015_16");
        let mut period = month(&tpddl, dec!(10));
        period.sanctioned_load_kw = None;
        assert_eq!(
            price_across_versions(&tpddl, &period),
            Err(PricingError::MissingInput { what: "sanctioned load" })
        );
        let mut period = month(&tpddl, dec!(-1));
        assert!(matches!(price_across_versions(&tpddl, &period), Err(PricingError::Negative { .. })));
        period.energy_kwh = dec!(1);
        (period.first_day, period.last_day) = (period.last_day, period.first_day);
        assert!(matches!(
            price_across_versions(&tpddl, &period),
            Err(PricingError::PeriodEndsBeforeStart { .. })
        ));
        let period = BillingPeriod::new(date(2015, 1, 1), date(2015, 1, 31), dec!(1));
        assert!(matches!(price_across_versions(&tpddl, &period), Err(PricingError::NoVersionInForce { .. })));
        let mut period = month(&tpddl, dec!(2));
        period.hourly_energy =
            vec![HourlyEnergy { hour_start: period.first_day.at(5, 0, 0, 0), energy_kwh: dec!(1) }];
        assert_eq!(
            price_across_versions(&tpddl, &period),
            Err(PricingError::HourlyEnergyMismatch { hourly_kwh: dec!(1), energy_kwh: dec!(2) })
        );
        period.hourly_energy[0].hour_start = date(2030, 1, 1).at(0, 0, 0, 0);
        assert!(matches!(
            price_across_versions(&tpddl, &period),
            Err(PricingError::HourOutsidePeriod { .. })
        ));
    }

    /// Two versions of a simple tariff, the second from `change`.
    fn two_versions(change: Date) -> TariffHistory {
        let version = |version: u32, effective_from: Date, low: &str, high: &str| {
            json!({
                "tariff_id": "change_test", "version": version, "effective_from": effective_from.to_string(),
                "currency": "EUR", "time_zone": "Europe/Berlin",
                "components": [
                    {"kind": "slabs", "group": "energy", "pricing": "telescopic", "slabs": [
                        {"name": "energy first 150", "up_to_kwh": "150", "rate": low},
                        {"name": "energy above", "up_to_kwh": null, "rate": high}]},
                    {"kind": "fixed", "name": "fixed charge", "group": "fixed", "per": "month", "rate": "15"},
                    {"kind": "fixed", "name": "standing charge", "group": "fixed", "per": "day", "rate": "0.5"},
                    {"kind": "minimum", "name": "minimum top-up", "group": "minimum", "per": "bill", "rate": "3000"}
                ]
            })
        };
        let versions =
            json!([version(1, date(2024, 1, 1), "1.00", "2.00"), version(2, change, "1.10", "2.20")]);
        TariffHistory::from_json(&versions.to_string()).expect("valid")
    }

    /// A period of `days` from `first_day` using 1 kWh every hour.
    fn hourly_period(first_day: Date, last_day: Date) -> BillingPeriod {
        let mut hourly_energy = Vec::new();
        let mut day = first_day;
        while day <= last_day {
            for hour in 0..24 {
                hourly_energy
                    .push(HourlyEnergy { hour_start: day.at(hour, 0, 0, 0), energy_kwh: Decimal::ONE });
            }
            day = day.tomorrow().unwrap();
        }
        let mut period = BillingPeriod::new(first_day, last_day, Decimal::from(hourly_energy.len()));
        period.hourly_energy = hourly_energy;
        period
    }

    #[test]
    fn a_tariff_change_on_the_15th_splits_the_period() {
        let history = two_versions(date(2024, 6, 15));
        let period = hourly_period(date(2024, 6, 1), date(2024, 6, 30));
        let invoice = price_across_versions(&history, &period).expect("priced");

        let parts: Vec<_> = invoice
            .parts
            .iter()
            .map(|part| (part.version, part.first_day, part.last_day, part.energy_kwh))
            .collect();
        assert_eq!(
            parts,
            [
                (1, date(2024, 6, 1), date(2024, 6, 14), dec!(336)),
                (2, date(2024, 6, 15), date(2024, 6, 30), dec!(384))
            ]
        );
        assert_eq!(invoice.parts[0].months + invoice.parts[1].months, Decimal::ONE);
        let amounts: Vec<(&str, String)> =
            invoice.lines.iter().map(|line| (line.name.as_str(), line.amount.to_string())).collect();
        assert_eq!(
            amounts,
            [
                // 14 of 30 days: slab 150 × 14/30 = 70 kWh; fixed 15 × 14/30.
                ("energy first 150", "70.00".to_owned()),
                ("energy above", "532.00".to_owned()),
                ("fixed charge", "7.00".to_owned()),
                ("standing charge", "7.00".to_owned()),
                ("minimum top-up", "784.00".to_owned()),
                // 16 of 30 days: 80 kWh in the first slab.
                ("energy first 150", "88.00".to_owned()),
                ("energy above", "668.80".to_owned()),
                ("fixed charge", "8.00".to_owned()),
                ("standing charge", "8.00".to_owned()),
                ("minimum top-up", "827.20".to_owned()),
            ]
        );
        assert_eq!(invoice.parts[1].lines, 5..10);
        assert_eq!(invoice.total, dec!(3000.00));

        // Without hourly data the energy cannot be split.
        let mut no_hours = period.clone();
        no_hours.hourly_energy.clear();
        assert!(matches!(price_across_versions(&history, &no_hours), Err(PricingError::MissingInput { .. })));
        // A period entirely after the change is priced by the new version alone.
        let july = hourly_period(date(2024, 7, 1), date(2024, 7, 31));
        let invoice = price_across_versions(&history, &july).unwrap();
        assert_eq!(invoice.parts.len(), 1);
        assert_eq!(invoice.parts[0].version, 2);
        // The change on the first day of the period: no split either.
        let history = two_versions(date(2024, 6, 1));
        assert_eq!(price_across_versions(&history, &period).unwrap().parts.len(), 1);
    }

    fn time_of_use_tariff() -> Tariff {
        Tariff::from_json(
            &json!({
                "tariff_id": "tou_test", "version": 1, "effective_from": "2024-01-01",
                "currency": "GBP", "time_zone": "Europe/London",
                "components": [
                    {"kind": "time_of_use", "group": "energy", "bands": [
                        {"name": "energy night", "from": "23:00", "to": "07:00", "rate": "0.10"},
                        {"name": "energy day", "from": "07:00", "to": "16:00", "rate": "0.25"},
                        {"name": "energy peak", "from": "16:00", "to": "19:00", "rate": "0.40"},
                        {"name": "energy evening", "from": "19:00", "to": "23:00", "rate": "0.25"}]},
                    {"kind": "fixed", "name": "standing charge", "group": "standing", "per": "day", "rate": "0.50"}
                ],
                "rounding": {"line": {"increment": "0.01"}, "total": {"increment": "0.10"}}
            })
            .to_string(),
        )
        .expect("valid")
    }

    #[test]
    fn time_of_use_prices_energy_by_local_hour_across_midnight_and_dst() {
        let tariff = time_of_use_tariff();
        // 27 October 2024: the clocks go back in London, 01:00 happens twice (25 hours).
        let day = date(2024, 10, 27);
        let mut hours: Vec<HourlyEnergy> = (0..24)
            .map(|hour| HourlyEnergy { hour_start: day.at(hour, 0, 0, 0), energy_kwh: dec!(0.5) })
            .collect();
        hours.insert(2, HourlyEnergy { hour_start: day.at(1, 0, 0, 0), energy_kwh: dec!(0.5) });
        let mut period = BillingPeriod::new(day, day, dec!(12.5));
        period.hourly_energy = hours;
        let invoice = price(&tariff, &period).expect("priced");
        let quantities: Vec<(&str, Option<Decimal>)> =
            invoice.lines.iter().map(|line| (line.name.as_str(), line.quantity)).collect();
        assert_eq!(
            quantities[..4],
            [
                ("energy night", Some(dec!(4.5))), // 00-07 with 01:00 twice, and 23:00
                ("energy day", Some(dec!(4.5))),
                ("energy peak", Some(dec!(1.5))),
                ("energy evening", Some(dec!(2))),
            ]
        );
        // 0.45 + 1.125 + 0.60 + 0.50 + 0.50 → 0.45 + 1.13 + 0.60 + 0.50 + 0.50 = 3.18 → 3.20.
        assert_eq!(invoice.lines.last().unwrap().name, "rounding adjustment");
        assert_eq!(invoice.lines.last().unwrap().amount, dec!(0.02));
        assert_eq!(invoice.total.to_string(), "3.20");
        assert_eq!(invoice.lines.iter().map(|line| line.amount).sum::<Decimal>(), invoice.total);

        period.hourly_energy.clear();
        assert!(matches!(price(&tariff, &period), Err(PricingError::MissingInput { .. })));
    }

    #[test]
    fn included_vat_is_reported_not_added() {
        let history = shipped("ofgem_price_cap_2024q3");
        let period = hourly_period(date(2024, 9, 16), date(2024, 10, 15));
        let invoice = price_across_versions(&history, &period).unwrap();
        assert_eq!(invoice.lines.len(), 4);
        let vat = &invoice.included_taxes[0];
        assert_eq!((vat.name.as_str(), vat.base), ("VAT", invoice.total));
        assert_eq!(vat.amount, (invoice.total * dec!(5) / dec!(105)).round_dp(2));
    }
}

#[cfg(test)]
mod properties {
    use super::tests::{month, shipped, SHIPPED};
    use super::*;
    use proptest::prelude::*;

    /// kWh with Wh resolution, 0 to 3000.
    fn energy_kwh() -> impl Strategy<Value = Decimal> {
        (0i64..=3_000_000).prop_map(|wh| Decimal::new(wh, 3))
    }

    fn all_histories() -> Vec<TariffHistory> {
        SHIPPED.iter().map(|json| TariffHistory::from_json(json).unwrap()).collect()
    }

    proptest! {
        #[test]
        fn totals_never_fall_as_consumption_rises(a in energy_kwh(), b in energy_kwh()) {
            let (low, high) = if a <= b { (a, b) } else { (b, a) };
            for history in all_histories() {
                let low_total = price_across_versions(&history, &month(&history, low)).unwrap().total;
                let high_total = price_across_versions(&history, &month(&history, high)).unwrap().total;
                prop_assert!(low_total <= high_total, "{}: {low} kWh costs {low_total}, {high} kWh {high_total}", history.tariff_id());
            }
        }

        #[test]
        fn telescopic_slab_quantities_add_up_to_the_energy(kwh in energy_kwh(), factor_days in 20i64..=45) {
            // TPDDL scales its slabs with the period's calendar-month fractions.
            let history = shipped("tpddl_domestic_fy2015_16");
            let mut period = month(&history, kwh);
            period.last_day = period.first_day.checked_add(jiff::Span::new().days(factor_days - 1)).unwrap();
            let invoice = price_across_versions(&history, &period).unwrap();
            let energy: Decimal = invoice.lines.iter().filter(|line| line.name.starts_with("energy")).filter_map(|line| line.quantity).sum();
            prop_assert_eq!(energy, kwh);
            for tariff_id in ["hkelectric_domestic_2014", "kseb_lt1_domestic_2019"] {
                let history = shipped(tariff_id);
                let invoice = price_across_versions(&history, &month(&history, kwh)).unwrap();
                let energy: Decimal = invoice.lines.iter().filter(|line| line.name.starts_with("energy") || line.name.starts_with("basic")).filter_map(|line| line.quantity).sum();
                prop_assert_eq!(energy, kwh);
            }
        }

        #[test]
        fn lines_add_up_to_the_total(kwh in energy_kwh(), sanctioned_kw in 0u32..=20, three_phase: bool) {
            for history in all_histories() {
                let mut period = month(&history, kwh);
                period.sanctioned_load_kw = Some(Decimal::from(sanctioned_kw));
                period.connected_load_kw = Some(Decimal::from(sanctioned_kw));
                period.phase = Some(if three_phase { Phase::Three } else { Phase::Single });
                let invoice = price_across_versions(&history, &period).unwrap();
                let sum: Decimal = invoice.lines.iter().map(|line| line.amount).sum();
                prop_assert_eq!(sum, invoice.total);
                for line in &invoice.lines {
                    prop_assert!(line.amount.scale() == 2, "{} is not in cents", line.amount);
                }
            }
        }

        #[test]
        fn split_parts_add_up_to_the_period(change_day in 2i8..=30, kwh_per_hour in 0i64..=3000) {
            let history = shipped("ofgem_price_cap_2024q3");
            let mut period = BillingPeriod::new(jiff::civil::date(2024, 9, change_day), jiff::civil::date(2024, 10, change_day - 1), Decimal::ZERO);
            let mut day = period.first_day;
            while day <= period.last_day {
                for hour in 0..24 {
                    period.hourly_energy.push(super::super::period::HourlyEnergy { hour_start: day.at(hour, 0, 0, 0), energy_kwh: Decimal::new(kwh_per_hour, 3) });
                }
                day = day.tomorrow().unwrap();
            }
            period.energy_kwh = period.hourly_energy.iter().map(|hour| hour.energy_kwh).sum();
            let invoice = price_across_versions(&history, &period).unwrap();
            prop_assert_eq!(invoice.parts.len(), 2);
            prop_assert_eq!(invoice.parts.iter().map(|part| part.energy_kwh).sum::<Decimal>(), period.energy_kwh);
            let days: Decimal = invoice.lines.iter().filter(|line| line.unit == Some(Unit::Day)).filter_map(|line| line.quantity).sum();
            prop_assert_eq!(days, Decimal::from(period.days()));
        }
    }
}
