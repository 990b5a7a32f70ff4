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
    Basis, Choice, Component, KwSlab, MinimumCharge, Phase, SlabCharge, SlabPricing, Tariff,
    TariffHistory, TimeOfUseCharge,
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
            Some(next) => next.effective_from().yesterday().expect("a tariff date is far from the start of time"),
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
        Some(value) if value.is_sign_negative() && !value.is_zero() => Err(PricingError::Negative { what, value }),
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

    fn price_part(&mut self, tariff: &'t Tariff, part: Part, energy_kwh: Decimal) -> Result<(), PricingError> {
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
            match self.included.iter_mut().find(|(name, percent, ..)| *name == tax.name && *percent == tax.percent) {
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

    fn price_components(&mut self, components: &'t [Component], part: &PartContext) -> Result<(), PricingError> {
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
                    self.push(&charge.group, InvoiceLine {
                        name: charge.name.clone(),
                        quantity: Some(base.normalize()),
                        unit: Some(Unit::Base(self.currency)),
                        rate: Some(percent),
                        amount,
                    });
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

    fn price_time_of_use(&mut self, charge: &'t TimeOfUseCharge, part: &PartContext) -> Result<(), PricingError> {
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
            self.push(&charge.group, InvoiceLine {
                name: charge.name.clone(),
                quantity: None,
                unit: None,
                rate: None,
                amount: minimum - charged,
            });
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
        self.push(group, InvoiceLine {
            name: name.to_owned(),
            quantity: Some(quantity.normalize()),
            unit: Some(unit),
            rate: Some(rate),
            amount,
        });
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
            total = rounded;
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
            bands.iter().find(|band| band.up_to_kw.is_none_or(|limit| load <= limit)).map(|band| band.then.as_slice())
        }
        Choice::ConnectedKw { bands } => {
            let load = part.connected_load_kw()?;
            bands.iter().find(|band| band.up_to_kw.is_none_or(|limit| load <= limit)).map(|band| band.then.as_slice())
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
