//! The bill of the month in progress: what the month will cost at its end if the meter
//! goes on as it has so far, and how far the consumption is from the next slab.
//!
//! Pure: the caller gives the month (local dates and UTC bounds), the instant the
//! figures are as of, and the energy so far by local hour; [`project`] returns the
//! projected energy, a priced [`Invoice`] for it and the [`SlabPosition`].
//!
//! - Projected energy = energy so far × month length / time elapsed, to the
//!   milliwatt-hour (linear extrapolation of the average rate so far). Nothing elapsed,
//!   or the month over, projects the energy so far.
//! - The projected remainder is spread over the local hours still to come in the
//!   proportions the meter used each hour of the day so far (so time-of-use bands and a
//!   tariff change inside the month price the rest of the month as the past suggests),
//!   evenly when nothing was used yet. Portions are rounded by cumulative floor, so the
//!   hours add up to the projected energy exactly, as pricing requires.
//! - Pricing is [`price_across_versions`]: the same arithmetic the invoice will use.
//! - Slab position: the slab and band limits of the version in force on the as-of day
//!   that apply to the energy so far (a `total_kwh` choice descends into the band the
//!   energy is in; load and phase choices into the branch the connection takes). Limits
//!   are inclusive, so consumption exactly at a limit has 0 kWh left.

use jiff::civil::{self, Date};
use jiff::tz::TimeZone;
use jiff::Timestamp;
use rust_decimal::Decimal;

use super::invoice::Invoice;
use super::period::{BillingPeriod, HourlyEnergy, Part};
use super::price::{price_across_versions, PricingError};
use super::tariff::{Choice, Component, Phase, Tariff, TariffHistory};
use crate::energy::{hour_bucket, MILLI_WH_PER_KWH};

/// The month in progress, as the caller knows it.
#[derive(Debug, Clone)]
pub struct MonthSoFar {
    /// First and last local day of the month.
    pub first_day: Date,
    pub last_day: Date,
    /// The month as UTC instants, `[starts_at, ends_at)`.
    pub starts_at: Timestamp,
    pub ends_at: Timestamp,
    /// The instant the energy so far is counted up to (event time of the newest reading).
    pub as_of: Timestamp,
    /// Time zone of the month's local days and hours (the device's).
    pub time_zone: TimeZone,
    /// Energy so far by local hour (hours inside the month; a DST repeated hour may
    /// appear twice). Exact to the milliwatt-hour (six decimal places).
    pub hourly_so_far: Vec<HourlyEnergy>,
    pub sanctioned_load_kw: Option<Decimal>,
    pub connected_load_kw: Option<Decimal>,
    pub phase: Option<Phase>,
}

/// Where the consumption so far stands in the tariff's slabs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlabPosition {
    /// The slab of the first slab charge that applies, and its rate; `None` when the
    /// tariff has no slabs for this consumption.
    pub slab_name: Option<String>,
    pub slab_rate: Option<Decimal>,
    /// The nearest slab or band limit at or above the energy so far (scaled by the
    /// month factor); `None` when every limit is behind (the open last slab).
    pub next_limit_kwh: Option<Decimal>,
    /// `next_limit_kwh - energy so far`: kWh left before the price changes.
    pub kwh_to_next_slab: Option<Decimal>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BillProjection {
    pub as_of: Timestamp,
    pub energy_so_far_kwh: Decimal,
    pub projected_energy_kwh: Decimal,
    /// Share of the month elapsed at `as_of`, 0..=1, four decimal places.
    pub elapsed_share: Decimal,
    /// The month priced with the projected energy.
    pub invoice: Invoice,
    pub slab: SlabPosition,
}

/// Projects the month's bill; see the module documentation for the rules.
pub fn project(history: &TariffHistory, month: &MonthSoFar) -> Result<BillProjection, PricingError> {
    let so_far: Vec<(civil::DateTime, i64)> =
        month.hourly_so_far.iter().map(|hour| (hour.hour_start, to_milli_wh(hour.energy_kwh))).collect();
    let so_far_milli_wh: i64 = so_far.iter().map(|(_, energy)| energy).sum();
    let duration_ns = (month.ends_at.as_nanosecond() - month.starts_at.as_nanosecond()).max(0);
    let elapsed_ns = (month.as_of.as_nanosecond() - month.starts_at.as_nanosecond()).clamp(0, duration_ns);

    let projected_milli_wh = if elapsed_ns == 0 || elapsed_ns == duration_ns {
        so_far_milli_wh
    } else {
        // Rounded to the nearest mWh: (e × d + el/2) / el.
        let scaled = i128::from(so_far_milli_wh) * duration_ns + elapsed_ns / 2;
        i64::try_from(scaled / elapsed_ns).unwrap_or(i64::MAX)
    };
    let mut hourly: Vec<HourlyEnergy> = so_far
        .iter()
        .map(|(hour_start, energy)| HourlyEnergy { hour_start: *hour_start, energy_kwh: kwh(*energy) })
        .collect();
    if projected_milli_wh > so_far_milli_wh {
        let rest = remaining_hours(month, &so_far, projected_milli_wh - so_far_milli_wh);
        hourly.extend(
            rest.into_iter().map(|(hour_start, energy)| HourlyEnergy { hour_start, energy_kwh: kwh(energy) }),
        );
    }
    let period = BillingPeriod {
        first_day: month.first_day,
        last_day: month.last_day,
        energy_kwh: kwh(projected_milli_wh),
        hourly_energy: hourly,
        sanctioned_load_kw: month.sanctioned_load_kw,
        connected_load_kw: month.connected_load_kw,
        phase: month.phase,
    };
    let invoice = price_across_versions(history, &period)?;

    let as_of_day =
        month.as_of.to_zoned(month.time_zone.clone()).date().clamp(month.first_day, month.last_day);
    let version =
        history.in_force_on(as_of_day).or_else(|| history.in_force_on(month.last_day)).ok_or_else(|| {
            PricingError::NoVersionInForce { tariff_id: history.tariff_id().to_owned(), day: as_of_day }
        })?;
    let slab = slab_position(version, &period, kwh(so_far_milli_wh));
    let elapsed_share = if duration_ns == 0 {
        Decimal::ONE
    } else {
        (Decimal::from_i128_with_scale(elapsed_ns, 0) / Decimal::from_i128_with_scale(duration_ns, 0))
            .round_dp(4)
    };
    Ok(BillProjection {
        as_of: month.as_of,
        energy_so_far_kwh: kwh(so_far_milli_wh),
        projected_energy_kwh: kwh(projected_milli_wh),
        elapsed_share,
        invoice,
        slab,
    })
}

fn kwh(milli_wh: i64) -> Decimal {
    Decimal::new(milli_wh, 6)
}

/// kWh to milliwatt-hours; the energy of a projection is exact to the mWh, so anything
/// finer is rounded away (half away from zero).
fn to_milli_wh(kwh: Decimal) -> i64 {
    (kwh * Decimal::from(MILLI_WH_PER_KWH)).round().try_into().unwrap_or(i64::MAX)
}

/// The local hours from `as_of` to the month's end with `energy_milli_wh` spread over
/// them: weight = energy used so far in the same local hour of the day × the share of
/// the hour still to come; all hours alike when nothing was used yet.
fn remaining_hours(
    month: &MonthSoFar,
    so_far: &[(civil::DateTime, i64)],
    energy_milli_wh: i64,
) -> Vec<(civil::DateTime, i64)> {
    let mut by_hour_of_day = [0_i128; 24];
    for (hour_start, energy) in so_far {
        by_hour_of_day[usize::from(hour_start.hour().unsigned_abs())] += i128::from((*energy).max(0));
    }
    let flat = by_hour_of_day.iter().all(|weight| *weight == 0);

    let mut hours = Vec::new();
    let mut cursor = month.as_of.max(month.starts_at);
    while cursor < month.ends_at {
        let bucket = hour_bucket(cursor, &month.time_zone);
        let end = bucket.end.min(month.ends_at);
        let remaining_s = i128::from(end.as_second() - cursor.as_second()).max(1);
        let hour_weight =
            if flat { 1 } else { by_hour_of_day[usize::from(bucket.local_hour.unsigned_abs())] };
        let hour_start = bucket.local_date.at(bucket.local_hour, 0, 0, 0);
        hours.push((hour_start, hour_weight * remaining_s));
        cursor = end;
    }
    let total_weight: i128 = hours.iter().map(|(_, weight)| weight).sum();
    if total_weight == 0 {
        // Nothing used in any hour still to come (a meter that only ever runs at
        // night, projected from the morning on): spread evenly instead.
        for (_, weight) in &mut hours {
            *weight = 1;
        }
    }
    let total_weight: i128 = hours.iter().map(|(_, weight)| weight).sum::<i128>().max(1);
    let energy = i128::from(energy_milli_wh);
    let mut cumulative_weight = 0_i128;
    let mut assigned = 0_i128;
    hours
        .into_iter()
        .filter_map(|(hour_start, weight)| {
            cumulative_weight += weight;
            let cumulative = energy * cumulative_weight / total_weight;
            let portion = cumulative - assigned;
            assigned = cumulative;
            (portion != 0).then(|| (hour_start, i64::try_from(portion).unwrap_or(i64::MAX)))
        })
        .collect()
}

/// The slab the energy so far is in and the nearest limit ahead, for `version`.
pub fn slab_position(version: &Tariff, period: &BillingPeriod, energy_kwh: Decimal) -> SlabPosition {
    let whole = Part { first_day: period.first_day, last_day: period.last_day };
    let months = version.document().period_months.months(whole, whole);
    let mut walk = SlabWalk { period, energy_kwh, months, limits: Vec::new(), slab: None };
    walk.components(&version.document().components);
    let next_limit_kwh = walk.limits.iter().copied().filter(|limit| *limit >= energy_kwh).min();
    SlabPosition {
        slab_name: walk.slab.as_ref().map(|(name, _)| name.clone()),
        slab_rate: walk.slab.map(|(_, rate)| rate),
        next_limit_kwh: next_limit_kwh.map(|limit| limit.normalize()),
        kwh_to_next_slab: next_limit_kwh.map(|limit| (limit - energy_kwh).normalize()),
    }
}

struct SlabWalk<'p> {
    period: &'p BillingPeriod,
    energy_kwh: Decimal,
    months: Decimal,
    limits: Vec<Decimal>,
    slab: Option<(String, Decimal)>,
}

impl SlabWalk<'_> {
    fn scale(&self, limit: Decimal) -> Decimal {
        if self.months == Decimal::ONE {
            limit
        } else {
            limit * self.months
        }
    }

    fn components(&mut self, components: &[Component]) {
        for component in components {
            match component {
                Component::Slabs(charge) => {
                    let limits: Vec<Decimal> = charge
                        .slabs
                        .iter()
                        .filter_map(|slab| slab.up_to_kwh)
                        .map(|l| self.scale(l))
                        .collect();
                    self.limits.extend(limits);
                    if self.slab.is_none() {
                        self.slab = charge
                            .slabs
                            .iter()
                            .find(|slab| {
                                slab.up_to_kwh.is_none_or(|limit| self.energy_kwh <= self.scale(limit))
                            })
                            .map(|slab| (slab.name.clone(), slab.rate));
                    }
                }
                Component::Choose(Choice::TotalKwh { bands }) => {
                    let limits: Vec<Decimal> =
                        bands.iter().filter_map(|band| band.up_to_kwh).map(|l| self.scale(l)).collect();
                    self.limits.extend(limits);
                    let chosen = bands
                        .iter()
                        .find(|band| band.up_to_kwh.is_none_or(|limit| self.energy_kwh <= self.scale(limit)));
                    if let Some(band) = chosen {
                        self.components(&band.then);
                    }
                }
                Component::Choose(Choice::SanctionedKw { bands }) => {
                    if let Some(load) = self.period.sanctioned_load_kw {
                        if let Some(band) = bands.iter().find(|band| band.up_to_kw.is_none_or(|l| load <= l))
                        {
                            self.components(&band.then);
                        }
                    }
                }
                Component::Choose(Choice::ConnectedKw { bands }) => {
                    if let Some(load) = self.period.connected_load_kw {
                        if let Some(band) = bands.iter().find(|band| band.up_to_kw.is_none_or(|l| load <= l))
                        {
                            self.components(&band.then);
                        }
                    }
                }
                Component::Choose(Choice::Phase { single, three }) => match self.period.phase {
                    Some(Phase::Single) => self.components(single),
                    Some(Phase::Three) => self.components(three),
                    None => {}
                },
                Component::PerKwh(_)
                | Component::TimeOfUse(_)
                | Component::Fixed(_)
                | Component::Percent(_)
                | Component::Minimum(_) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::billing::price::price;
    use jiff::civil::date;
    use jiff::SignedDuration;
    use proptest::prelude::*;
    use rust_decimal_macros::dec;

    fn history(json: &str) -> TariffHistory {
        TariffHistory::from_json(json).unwrap()
    }

    fn kseb() -> TariffHistory {
        history(include_str!("../../tariffs/kseb_lt1_domestic_2019.json"))
    }

    fn ofgem() -> TariffHistory {
        history(include_str!("../../tariffs/ofgem_price_cap_2024q3.json"))
    }

    /// A local month of `zone` with `hourly` (local hour start, mWh) so far, as of `as_of`.
    fn month(
        zone: &str,
        year: i16,
        month: i8,
        as_of: Timestamp,
        hourly: &[(civil::DateTime, i64)],
    ) -> MonthSoFar {
        let tz = TimeZone::get(zone).unwrap();
        let first_day = date(year, month, 1);
        let last_day = first_day.last_of_month();
        MonthSoFar {
            first_day,
            last_day,
            starts_at: first_day.to_zoned(tz.clone()).unwrap().timestamp(),
            ends_at: last_day.tomorrow().unwrap().to_zoned(tz.clone()).unwrap().timestamp(),
            as_of,
            time_zone: tz,
            hourly_so_far: hourly
                .iter()
                .map(|(hour_start, milli_wh)| HourlyEnergy {
                    hour_start: *hour_start,
                    energy_kwh: kwh(*milli_wh),
                })
                .collect(),
            sanctioned_load_kw: None,
            connected_load_kw: None,
            phase: Some(Phase::Single),
        }
    }

    fn sum_kwh(period_hours: &[HourlyEnergy]) -> Decimal {
        period_hours.iter().map(|hour| hour.energy_kwh).sum()
    }

    #[test]
    fn half_a_month_projects_twice_the_energy_priced_like_the_invoice() {
        // July 2024 in Kolkata (31 days); 60 kWh in the first 15.5 days.
        let tz = TimeZone::get("Asia/Kolkata").unwrap();
        let starts = date(2024, 7, 1).to_zoned(tz.clone()).unwrap().timestamp();
        let as_of = starts + SignedDuration::from_hours(31 * 12);
        let hours: Vec<(civil::DateTime, i64)> =
            (0..15).map(|day| (date(2024, 7, 1 + day).at(18, 0, 0, 0), 4_000_000)).collect();
        let mut so_far = month("Asia/Kolkata", 2024, 7, as_of, &hours);
        so_far
            .hourly_so_far
            .push(HourlyEnergy { hour_start: date(2024, 7, 16).at(6, 0, 0, 0), energy_kwh: dec!(0) });
        let projection = project(&kseb(), &so_far).unwrap();
        assert_eq!(projection.energy_so_far_kwh, dec!(60.000000));
        assert_eq!(projection.projected_energy_kwh, dec!(120.000000));
        assert_eq!(projection.elapsed_share, dec!(0.5));
        // The same total as pricing a July of 120 kWh.
        let version = kseb().versions()[0].clone();
        let expected = price(&version, &{
            let mut period = BillingPeriod::new(date(2024, 7, 1), date(2024, 7, 31), dec!(120));
            period.phase = Some(Phase::Single);
            period
        })
        .unwrap();
        assert_eq!(projection.invoice.total, expected.total);
        assert_eq!(sum_kwh(&projection_hours(&kseb(), &so_far)), dec!(120));
        // 60 kWh so far: in the 50-100 slab at 3.70, 40 kWh to go.
        assert_eq!(projection.slab.slab_name.as_deref(), Some("energy 50-100"));
        assert_eq!(projection.slab.slab_rate, Some(dec!(3.70)));
        assert_eq!(projection.slab.next_limit_kwh, Some(dec!(100)));
        assert_eq!(projection.slab.kwh_to_next_slab, Some(dec!(40)));
    }

    /// The hourly profile `project` priced, rebuilt the way it builds it.
    fn projection_hours(history: &TariffHistory, month: &MonthSoFar) -> Vec<HourlyEnergy> {
        let so_far: Vec<(civil::DateTime, i64)> =
            month.hourly_so_far.iter().map(|h| (h.hour_start, to_milli_wh(h.energy_kwh))).collect();
        let total: i64 = so_far.iter().map(|(_, e)| e).sum();
        let projected = to_milli_wh(project(history, month).unwrap().projected_energy_kwh);
        let mut hours: Vec<HourlyEnergy> =
            so_far.iter().map(|(h, e)| HourlyEnergy { hour_start: *h, energy_kwh: kwh(*e) }).collect();
        hours.extend(
            remaining_hours(month, &so_far, projected - total)
                .into_iter()
                .map(|(h, e)| HourlyEnergy { hour_start: h, energy_kwh: kwh(e) }),
        );
        hours
    }

    #[test]
    fn limits_are_inclusive_at_the_exact_boundary() {
        let history = kseb();
        let version = &history.versions()[0];
        let mut period = BillingPeriod::new(date(2024, 7, 1), date(2024, 7, 31), dec!(0));
        period.phase = Some(Phase::Single);
        let at = |kwh: Decimal| slab_position(version, &period, kwh);
        assert_eq!(at(dec!(50)).slab_name.as_deref(), Some("energy 0-50"));
        assert_eq!(at(dec!(50)).kwh_to_next_slab, Some(dec!(0)));
        assert_eq!(at(dec!(50.001)).slab_name.as_deref(), Some("energy 50-100"));
        assert_eq!(at(dec!(50.001)).kwh_to_next_slab, Some(dec!(49.999)));
        assert_eq!(at(dec!(0)).kwh_to_next_slab, Some(dec!(50)));
        // Above 250 kWh the whole consumption is priced non-telescopically by band.
        let high = at(dec!(320));
        assert_eq!(high.slab_name.as_deref(), Some("energy non-telescopic band upto 350"));
        assert_eq!(high.slab_rate, Some(dec!(6.60)));
        assert_eq!(high.kwh_to_next_slab, Some(dec!(30)));
        // In the open last slab nothing is ahead.
        let top = at(dec!(900));
        assert_eq!(top.slab_name.as_deref(), Some("energy non-telescopic band upto None"));
        assert_eq!((top.next_limit_kwh, top.kwh_to_next_slab), (None, None));
    }

    #[test]
    fn a_tariff_without_slabs_has_no_slab_position() {
        let hours = [(date(2024, 7, 1).at(0, 0, 0, 0), 1_500_000)];
        let tz = TimeZone::get("Europe/London").unwrap();
        let as_of = date(2024, 7, 2).to_zoned(tz).unwrap().timestamp();
        let projection = project(&ofgem(), &month("Europe/London", 2024, 7, as_of, &hours)).unwrap();
        assert_eq!(projection.projected_energy_kwh, dec!(46.5));
        assert_eq!(
            projection.slab,
            SlabPosition { slab_name: None, slab_rate: None, next_limit_kwh: None, kwh_to_next_slab: None }
        );
        assert_eq!(projection.invoice.currency.as_str(), "GBP");
    }

    #[test]
    fn the_start_and_the_end_of_the_month_project_what_was_used() {
        let tz = TimeZone::get("Europe/London").unwrap();
        let start = date(2024, 8, 1).to_zoned(tz.clone()).unwrap().timestamp();
        let empty = project(&ofgem(), &month("Europe/London", 2024, 8, start, &[])).unwrap();
        assert_eq!(empty.projected_energy_kwh, Decimal::ZERO);
        assert_eq!(empty.elapsed_share, Decimal::ZERO);

        let hours = [(date(2024, 8, 3).at(9, 0, 0, 0), 2_500_000)];
        let after = date(2024, 9, 3).to_zoned(tz).unwrap().timestamp();
        let over = project(&ofgem(), &month("Europe/London", 2024, 8, after, &hours)).unwrap();
        assert_eq!(over.projected_energy_kwh, dec!(2.5));
        assert_eq!(over.elapsed_share, Decimal::ONE);
    }

    #[test]
    fn a_tariff_change_inside_the_month_prices_the_projected_rest_with_the_new_version() {
        // Ofgem Q3 → Q4 on 1 October... the versions change on a month's first day, so
        // build a history whose second version starts mid-month.
        let mut documents: Vec<crate::billing::TariffDocument> =
            serde_json::from_str(include_str!("../../tariffs/ofgem_price_cap_2024q3.json")).unwrap();
        documents[1].effective_from = date(2024, 9, 16);
        let versions = documents.into_iter().map(|d| Tariff::new(d).unwrap()).collect();
        let history = TariffHistory::new(versions).unwrap();
        let tz = TimeZone::get("Europe/London").unwrap();
        let as_of = date(2024, 9, 11).to_zoned(tz).unwrap().timestamp();
        let hours: Vec<(civil::DateTime, i64)> =
            (1..=10).map(|day| (date(2024, 9, day).at(19, 0, 0, 0), 9_000_000)).collect();
        let projection = project(&history, &month("Europe/London", 2024, 9, as_of, &hours)).unwrap();
        assert_eq!(projection.projected_energy_kwh, dec!(270));
        assert_eq!(projection.invoice.parts.len(), 2);
        // 10 days at 9 kWh, then 5 more before the change: 135 kWh on version 1.
        assert_eq!(projection.invoice.parts[0].energy_kwh, dec!(135.000000));
        assert_eq!(projection.invoice.parts[1].energy_kwh, dec!(135.000000));
    }

    #[test]
    fn the_rest_of_the_month_follows_the_hours_used_so_far() {
        // Only 19:00 was ever used: the rest goes to the 19:00 hours still to come.
        let tz = TimeZone::get("Asia/Kolkata").unwrap();
        let as_of = date(2024, 7, 11).to_zoned(tz).unwrap().timestamp();
        let hours: Vec<(civil::DateTime, i64)> =
            (1..=10).map(|day| (date(2024, 7, day).at(19, 0, 0, 0), 1_000_000)).collect();
        let so_far = month("Asia/Kolkata", 2024, 7, as_of, &hours);
        let profile = projection_hours(&kseb(), &so_far);
        assert!(profile.iter().all(|hour| hour.hour_start.hour() == 19), "{profile:?}");
        assert_eq!(profile.len(), 31);
        assert_eq!(sum_kwh(&profile), dec!(31));
    }

    proptest! {
        #[test]
        fn projections_add_up_and_never_shrink(
            energies in proptest::collection::vec(0_i64..3_000_000, 0..60),
            elapsed_hours in 0_i64..(31 * 24),
        ) {
            let tz = TimeZone::get("Asia/Kolkata").unwrap();
            let starts = date(2024, 7, 1).to_zoned(tz).unwrap().timestamp();
            let as_of = starts + SignedDuration::from_hours(elapsed_hours);
            let hours: Vec<(civil::DateTime, i64)> = energies
                .iter()
                .enumerate()
                .filter(|(index, _)| (*index as i64) < elapsed_hours.max(1))
                .map(|(index, energy)| {
                    let at = starts + SignedDuration::from_hours(index as i64);
                    let local = at.to_zoned(TimeZone::get("Asia/Kolkata").unwrap());
                    (local.date().at(local.hour(), 0, 0, 0), *energy)
                })
                .collect();
            let so_far = month("Asia/Kolkata", 2024, 7, as_of, &hours);
            let projection = project(&kseb(), &so_far).unwrap();
            prop_assert!(projection.projected_energy_kwh >= projection.energy_so_far_kwh);
            let profile = projection_hours(&kseb(), &so_far);
            prop_assert_eq!(sum_kwh(&profile), projection.projected_energy_kwh);
            prop_assert!(profile.iter().all(|h| h.hour_start.date().month() == 7));
            if let Some(left) = projection.slab.kwh_to_next_slab {
                prop_assert!(left >= Decimal::ZERO);
            }
        }
    }
}
