//! Pricing one period event: choose the device's tariff, hand the period to core's
//! [`price_across_versions`], and fingerprint what was priced. Pure: no I/O, no clock.
//!
//! The tariff is the device's assignment in force on the period's first day (a change
//! of tariff takes effect from the next period), else the tariff the processor put on
//! the period. The assignment's sanctioned and connected load and phase, when given, are the
//! contract and take precedence over the period's. A period that cannot be priced is
//! [`Pricing::Unbillable`] with a reason, never dropped.

use jiff::civil::Date;
use rust_decimal::Decimal;
use sha2::{Digest as _, Sha256};
use smartmeter_core::billing::events::{PeriodEvent, TariffAssigned};
use smartmeter_core::billing::{price_across_versions, BillingPeriod, Invoice, Phase};

use crate::tariffs::TariffBook;

/// A device's tariff from `effective_from` on (from TariffAssigned).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub tariff_id: String,
    pub effective_from: Date,
    pub sanctioned_load_kw: Option<Decimal>,
    pub phase: Option<Phase>,
    pub connected_load_kw: Option<Decimal>,
}

impl From<&TariffAssigned> for Assignment {
    fn from(assigned: &TariffAssigned) -> Self {
        Self {
            tariff_id: assigned.tariff_id.clone(),
            effective_from: assigned.effective_from,
            sanctioned_load_kw: assigned.sanctioned_load_kw,
            phase: assigned.phase,
            connected_load_kw: assigned.connected_load_kw,
        }
    }
}

/// The assignment that prices a period from `first_day` to `last_day`: the one in
/// force on the first day, else (a device first assigned during the month) the first
/// one inside the period. `assignments` are ascending by `effective_from`.
pub fn assignment_for(assignments: &[Assignment], first_day: Date, last_day: Date) -> Option<&Assignment> {
    let after = assignments.partition_point(|assignment| assignment.effective_from <= first_day);
    match after.checked_sub(1) {
        Some(index) => Some(&assignments[index]),
        None => assignments.first().filter(|assignment| assignment.effective_from <= last_day),
    }
}

/// A period priced into an invoice.
#[derive(Debug, Clone, PartialEq)]
pub struct Priced {
    pub tariff_id: String,
    /// The versions that priced the period, in date order.
    pub tariff_versions: Vec<u32>,
    pub invoice: Invoice,
    /// Hex sha256 of the inputs (see [`inputs_digest`]).
    pub inputs_digest: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Pricing {
    Priced(Box<Priced>),
    Unbillable {
        /// The tariff the period resolved to, if any: a version of it arriving later may
        /// make the period billable.
        tariff_id: Option<String>,
        reason: String,
    },
}

/// Prices `event` for a device with these `assignments` (ascending) and the tariffs
/// in `book`.
pub fn price_period(event: &PeriodEvent, assignments: &[Assignment], book: &TariffBook) -> Pricing {
    let period = &event.period;
    let assignment = assignment_for(assignments, period.first_day, period.last_day);
    let Some(tariff_id) = assignment.map(|a| a.tariff_id.as_str()).or(event.tariff_id.as_deref()) else {
        return Pricing::Unbillable {
            tariff_id: None,
            reason: "no tariff: the device has no tariff assignment and the period names none".into(),
        };
    };
    let unbillable = |reason: String| Pricing::Unbillable { tariff_id: Some(tariff_id.to_owned()), reason };
    let Some(entry) = book.get(tariff_id) else {
        return unbillable(format!("tariff {tariff_id:?} has no published version"));
    };
    let tariff_zone = &entry.history.versions()[0].document().time_zone;
    if *tariff_zone != event.time_zone {
        return unbillable(format!(
            "the period is in local time of {} but tariff {tariff_id:?} reads its days and hours in {tariff_zone}",
            event.time_zone
        ));
    }
    let with_contract;
    let period = match assignment {
        Some(assignment)
            if assignment.sanctioned_load_kw.is_some()
                || assignment.phase.is_some()
                || assignment.connected_load_kw.is_some() =>
        {
            with_contract = BillingPeriod {
                sanctioned_load_kw: assignment.sanctioned_load_kw.or(period.sanctioned_load_kw),
                connected_load_kw: assignment.connected_load_kw.or(period.connected_load_kw),
                phase: assignment.phase.or(period.phase),
                ..period.clone()
            };
            &with_contract
        }
        _ => period,
    };
    match price_across_versions(&entry.history, period) {
        Ok(invoice) => {
            let tariff_versions: Vec<u32> = invoice.parts.iter().map(|part| part.version).collect();
            let version_digests = tariff_versions.iter().map(|version| entry.version_digest(*version));
            let inputs_digest = inputs_digest(event, period, tariff_id, version_digests);
            Pricing::Priced(Box::new(Priced {
                tariff_id: tariff_id.to_owned(),
                tariff_versions,
                invoice,
                inputs_digest,
            }))
        }
        Err(error) => unbillable(format!("tariff {tariff_id:?}: {error}")),
    }
}

/// sha256 of everything that decides an invoice: the period event's identity, dates,
/// energy (total and by local hour), load and phase as priced, meter reads, the
/// tariff id and the digest of each tariff version document used. Fields are
/// length-prefixed or fixed-width, so no two inputs share an encoding.
pub fn inputs_digest<'a>(
    event: &PeriodEvent,
    period: &BillingPeriod,
    tariff_id: &str,
    version_digests: impl Iterator<Item = &'a [u8; 32]>,
) -> String {
    let mut hash = Sha256::new();
    let text = |hash: &mut Sha256, value: &str| {
        hash.update((value.len() as u64).to_le_bytes());
        hash.update(value.as_bytes());
    };
    let date = |hash: &mut Sha256, date: Date| {
        hash.update(date.year().to_le_bytes());
        hash.update([date.month() as u8, date.day() as u8]);
    };
    let decimal = |hash: &mut Sha256, value: Option<Decimal>| match value {
        Some(value) => {
            hash.update([1]);
            hash.update(value.serialize());
        }
        None => hash.update([0]),
    };
    text(&mut hash, "smartmeter.invoice-inputs.v1");
    text(&mut hash, event.device_id.as_str());
    date(&mut hash, event.month);
    hash.update(event.revision.to_le_bytes());
    text(&mut hash, &event.time_zone);
    date(&mut hash, period.first_day);
    date(&mut hash, period.last_day);
    decimal(&mut hash, Some(period.energy_kwh));
    hash.update((period.hourly_energy.len() as u64).to_le_bytes());
    for hour in &period.hourly_energy {
        date(&mut hash, hour.hour_start.date());
        hash.update([hour.hour_start.hour() as u8, hour.hour_start.minute() as u8]);
        hash.update(hour.energy_kwh.serialize());
    }
    decimal(&mut hash, period.sanctioned_load_kw);
    decimal(&mut hash, period.connected_load_kw);
    hash.update([match period.phase {
        None => 0,
        Some(Phase::Single) => 1,
        Some(Phase::Three) => 3,
    }]);
    for read in [&event.opening_read, &event.closing_read] {
        match read {
            Some(read) => {
                hash.update([1]);
                hash.update(read.at.as_nanosecond().to_le_bytes());
                hash.update(read.counter_kwh.serialize());
            }
            None => hash.update([0]),
        }
    }
    text(&mut hash, tariff_id);
    for digest in version_digests {
        hash.update(digest);
    }
    hex(&hash.finalize())
}

pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(DIGITS[usize::from(byte >> 4)] as char);
        out.push(DIGITS[usize::from(byte & 0xf)] as char);
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use jiff::civil::date;
    use rust_decimal_macros::dec;
    use smartmeter_core::billing::events::MeterRead;
    use smartmeter_core::billing::{price, HourlyEnergy, TariffDocument};
    use smartmeter_core::DeviceId;

    pub(crate) fn ofgem_documents() -> Vec<TariffDocument> {
        serde_json::from_str(include_str!("../../core/tariffs/ofgem_price_cap_2024q3.json")).unwrap()
    }

    /// A London month with `kwh_per_hour` in every local hour.
    pub(crate) fn london_month(device: &str, month: Date, kwh_per_hour: Decimal) -> PeriodEvent {
        let tz = jiff::tz::TimeZone::get("Europe/London").unwrap();
        let starts_at = month.to_zoned(tz.clone()).unwrap().timestamp();
        let next = month.last_of_month().tomorrow().unwrap();
        let ends_at = next.to_zoned(tz.clone()).unwrap().timestamp();
        let mut hourly_energy = Vec::new();
        let mut at = starts_at;
        while at < ends_at {
            let local = at.to_zoned(tz.clone()).datetime();
            hourly_energy.push(HourlyEnergy { hour_start: local, energy_kwh: kwh_per_hour });
            at = at.checked_add(jiff::SignedDuration::from_hours(1)).unwrap();
        }
        let energy_kwh: Decimal = hourly_energy.iter().map(|hour| hour.energy_kwh).sum();
        let mut period = BillingPeriod::new(month, month.last_of_month(), energy_kwh);
        period.hourly_energy = hourly_energy;
        PeriodEvent {
            device_id: DeviceId::parse(device).unwrap(),
            month,
            revision: 0,
            time_zone: "Europe/London".into(),
            starts_at,
            ends_at,
            energy_milli_wh: (energy_kwh * dec!(1000000)).try_into().unwrap(),
            opening_read: Some(MeterRead { at: starts_at, counter_kwh: dec!(1000) }),
            closing_read: Some(MeterRead { at: ends_at, counter_kwh: dec!(1000) + energy_kwh }),
            period,
            reading_count: 1,
            coverage: Decimal::ONE,
            quality_flags: Vec::new(),
            tariff_id: None,
        }
    }

    fn book_with(documents: &[TariffDocument]) -> TariffBook {
        let mut book = TariffBook::default();
        for document in documents {
            book.admit(document.clone()).unwrap();
        }
        book
    }

    fn assignment(tariff_id: &str, from: Date) -> Assignment {
        Assignment {
            tariff_id: tariff_id.into(),
            effective_from: from,
            sanctioned_load_kw: None,
            phase: None,
            connected_load_kw: None,
        }
    }

    #[test]
    fn the_assignment_in_force_on_the_first_day_decides() {
        let a = assignment("a", date(2024, 1, 1));
        let b = assignment("b", date(2024, 3, 10));
        let list = [a.clone(), b.clone()];
        assert_eq!(assignment_for(&list, date(2024, 3, 1), date(2024, 3, 31)), Some(&a));
        assert_eq!(assignment_for(&list, date(2024, 4, 1), date(2024, 4, 30)), Some(&b));
        assert_eq!(assignment_for(&list[1..], date(2024, 3, 1), date(2024, 3, 31)), Some(&b));
        assert_eq!(assignment_for(&list[1..], date(2024, 2, 1), date(2024, 2, 29)), None);
    }

    #[test]
    fn priced_like_core_and_digest_follows_the_inputs() {
        let documents = ofgem_documents();
        let book = book_with(&documents);
        let event = london_month("meter-1", date(2024, 8, 1), dec!(0.5));
        let assignments = [assignment("ofgem_price_cap_2024q3", date(2024, 1, 1))];
        let Pricing::Priced(priced) = price_period(&event, &assignments, &book) else { panic!("priced") };
        let tariff = smartmeter_core::billing::Tariff::new(documents[0].clone()).unwrap();
        assert_eq!(priced.invoice, price(&tariff, &event.period).unwrap());
        assert_eq!(priced.tariff_versions, [1]);
        let Pricing::Priced(again) = price_period(&event, &assignments, &book) else { panic!() };
        assert_eq!(again.inputs_digest, priced.inputs_digest);

        let mut more = event.clone();
        more.period.hourly_energy[3].energy_kwh = dec!(0.501);
        more.period.energy_kwh += dec!(0.001);
        let Pricing::Priced(changed) = price_period(&more, &assignments, &book) else { panic!() };
        assert_ne!(changed.inputs_digest, priced.inputs_digest);
    }

    #[test]
    fn periods_without_a_usable_tariff_are_unbillable_with_a_reason() {
        let book = book_with(&ofgem_documents());
        let event = london_month("meter-1", date(2024, 8, 1), dec!(0.5));
        let Pricing::Unbillable { tariff_id: None, reason } = price_period(&event, &[], &book) else {
            panic!()
        };
        assert!(reason.contains("no tariff"), "{reason}");

        let mut named = event.clone();
        named.tariff_id = Some("unknown".into());
        let Pricing::Unbillable { tariff_id: Some(id), reason } = price_period(&named, &[], &book) else {
            panic!()
        };
        assert_eq!(id, "unknown");
        assert!(reason.contains("no published version"), "{reason}");

        let early = london_month("meter-1", date(2024, 5, 1), dec!(0.5));
        let assignments = [assignment("ofgem_price_cap_2024q3", date(2024, 1, 1))];
        let Pricing::Unbillable { reason, .. } = price_period(&early, &assignments, &book) else { panic!() };
        assert!(reason.contains("no version"), "{reason}");

        let mut elsewhere = event.clone();
        elsewhere.time_zone = "Asia/Kolkata".into();
        let Pricing::Unbillable { reason, .. } = price_period(&elsewhere, &assignments, &book) else {
            panic!()
        };
        assert!(reason.contains("Asia/Kolkata"), "{reason}");
    }
}
