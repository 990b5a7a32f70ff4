//! What a pricing means for a device-month, given what was issued before: a first
//! invoice, a revision, nothing, or an unbillable period. Pure.
//!
//! - An older period revision than the one already priced is stale: ignored.
//! - The same inputs (digest) as the last pricing: nothing is issued.
//! - No invoice yet: the original (`INV-{device}-{YYYYMM}`, revision 0).
//! - A new total: a revision (`-R{n}`) with the previous total and the difference.
//!   An issued invoice is never changed.
//! - The same total from other inputs: nothing is issued; the state remembers the
//!   inputs.

use jiff::civil::Date;
use jiff::Timestamp;
use rust_decimal::Decimal;
use smartmeter_core::billing::events::{invoice_number, InvoiceEvent, PeriodEvent};
use smartmeter_core::event::Envelope;

use crate::price::Pricing;

/// The `source` of the events the worker publishes.
pub const EVENT_SOURCE: &str = "/billing-worker";

/// The latest invoice of a device-month.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatestInvoice {
    pub number: String,
    pub revision: u32,
    pub total: Decimal,
}

/// The worker's record of a device-month (table `billing_states`).
#[derive(Debug, Clone, PartialEq)]
pub struct BillingState {
    pub device_id: String,
    pub month: Date,
    pub period_revision: u32,
    pub period_event_id: String,
    pub status: Status,
    pub reason: Option<String>,
    pub tariff_id: Option<String>,
    pub inputs_digest: Option<String>,
    /// The period event, kept while unbillable.
    pub period: Option<serde_json::Value>,
    pub latest: Option<LatestInvoice>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Invoiced,
    Unbillable,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Invoiced => "invoiced",
            Self::Unbillable => "unbillable",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    Issued,
    Revised,
    Unchanged,
    Unbillable,
    Stale,
}

impl Outcome {
    /// Bounded label for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Issued => "issued",
            Self::Revised => "revised",
            Self::Unchanged => "unchanged",
            Self::Unbillable => "unbillable",
            Self::Stale => "stale",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Decision {
    pub outcome: Outcome,
    /// The invoice to store and publish (issued or revised).
    pub invoice: Option<InvoiceEvent>,
    /// The device-month's new state; `None` when nothing changed.
    pub state: Option<BillingState>,
}

/// Decides what pricing `event` gives, knowing `state` (the device-month's state
/// before it, if any).
pub fn decide(
    event: &PeriodEvent,
    pricing: Pricing,
    state: Option<&BillingState>,
    issued_at: Timestamp,
) -> Decision {
    if state.is_some_and(|state| event.revision < state.period_revision) {
        return Decision { outcome: Outcome::Stale, invoice: None, state: None };
    }
    let latest = state.and_then(|state| state.latest.clone());
    let base = BillingState {
        device_id: event.device_id.to_string(),
        month: event.month,
        period_revision: event.revision,
        period_event_id: event.event_id(),
        status: Status::Invoiced,
        reason: None,
        tariff_id: None,
        inputs_digest: None,
        period: None,
        latest: latest.clone(),
    };
    let priced = match pricing {
        Pricing::Unbillable { tariff_id, reason } => {
            let period = serde_json::to_value(event).expect("a period event serializes");
            let state = BillingState {
                status: Status::Unbillable,
                reason: Some(reason),
                tariff_id,
                period: Some(period),
                ..base
            };
            return Decision { outcome: Outcome::Unbillable, invoice: None, state: Some(state) };
        }
        Pricing::Priced(priced) => priced,
    };
    let state_after = |latest: Option<LatestInvoice>| BillingState {
        tariff_id: Some(priced.tariff_id.clone()),
        inputs_digest: Some(priced.inputs_digest.clone()),
        latest,
        ..base.clone()
    };
    if let (Some(state), Some(latest)) = (state, &latest) {
        if state.status == Status::Invoiced && state.inputs_digest.as_deref() == Some(&priced.inputs_digest) {
            return Decision { outcome: Outcome::Unchanged, invoice: None, state: None };
        }
        if latest.total == priced.invoice.total {
            let state = state_after(Some(latest.clone()));
            return Decision { outcome: Outcome::Unchanged, invoice: None, state: Some(state) };
        }
    }
    let revision = latest.as_ref().map_or(0, |latest| latest.revision + 1);
    let number = invoice_number(&event.device_id, event.month, revision);
    let invoice = &priced.invoice;
    let event_data = InvoiceEvent {
        invoice_number: number.clone(),
        device_id: event.device_id.clone(),
        month: event.month,
        revision,
        period_revision: event.revision,
        tariff_id: priced.tariff_id.clone(),
        tariff_versions: priced.tariff_versions.clone(),
        currency: invoice.currency,
        time_zone: event.time_zone.clone(),
        first_day: invoice.first_day,
        last_day: invoice.last_day,
        energy_kwh: event.period.energy_kwh,
        opening_read: event.opening_read.clone(),
        closing_read: event.closing_read.clone(),
        parts: invoice.parts.clone(),
        lines: invoice.lines.clone(),
        included_taxes: invoice.included_taxes.clone(),
        total: invoice.total,
        revises: latest.as_ref().map(|latest| latest.number.clone()),
        previous_total: latest.as_ref().map(|latest| latest.total),
        difference: latest.as_ref().map(|latest| invoice.total - latest.total),
        inputs_digest: priced.inputs_digest.clone(),
        issued_at,
    };
    let state = state_after(Some(LatestInvoice { number, revision, total: invoice.total }));
    Decision {
        outcome: if revision == 0 { Outcome::Issued } else { Outcome::Revised },
        invoice: Some(event_data),
        state: Some(state),
    }
}

/// The CloudEvents envelope of an invoice event (key: device id).
pub fn envelope(invoice: &InvoiceEvent) -> Envelope<&InvoiceEvent> {
    Envelope::new(
        invoice.event_id(),
        EVENT_SOURCE,
        invoice.event_type(),
        invoice.issued_at,
        invoice.device_id.as_str(),
        invoice,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::price::tests::{london_month, ofgem_documents};
    use crate::price::{price_period, Assignment};
    use crate::tariffs::TariffBook;
    use jiff::civil::date;
    use rust_decimal_macros::dec;
    use smartmeter_core::billing::events::{INVOICE_ISSUED, INVOICE_REVISED};

    fn pricing(event: &PeriodEvent, book: &TariffBook) -> Pricing {
        let assignments = [Assignment {
            tariff_id: "ofgem_price_cap_2024q3".into(),
            effective_from: date(2024, 1, 1),
            sanctioned_load_kw: None,
            phase: None,
            connected_load_kw: None,
        }];
        price_period(event, &assignments, book)
    }

    #[test]
    fn first_pricing_issues_a_repeat_issues_nothing_a_change_revises() {
        let mut book = TariffBook::default();
        let documents = ofgem_documents();
        book.admit(documents[0].clone()).unwrap();
        let now = Timestamp::UNIX_EPOCH;
        let event = london_month("meter-1", date(2024, 11, 1), dec!(0.4));

        // Only version 1 exists: in force in November.
        let first = decide(&event, pricing(&event, &book), None, now);
        assert_eq!(first.outcome, Outcome::Issued);
        let issued = first.invoice.unwrap();
        assert_eq!(issued.invoice_number, "INV-meter-1-202411");
        assert_eq!(envelope(&issued).event_type, INVOICE_ISSUED);
        let state = first.state.unwrap();

        let again = decide(&event, pricing(&event, &book), Some(&state), now);
        assert_eq!(
            (again.outcome, again.invoice.is_none(), again.state.is_none()),
            (Outcome::Unchanged, true, true)
        );

        // Version 2 (from 1 October) now prices November: a revision with the difference.
        book.admit(documents[1].clone()).unwrap();
        let revised = decide(&event, pricing(&event, &book), Some(&state), now);
        assert_eq!(revised.outcome, Outcome::Revised);
        let revision = revised.invoice.unwrap();
        assert_eq!(revision.invoice_number, "INV-meter-1-202411-R1");
        assert_eq!(revision.revises.as_deref(), Some("INV-meter-1-202411"));
        assert_eq!(revision.previous_total, Some(issued.total));
        assert_eq!(revision.difference, Some(revision.total - issued.total));
        assert!(revision.total > issued.total);
        assert_eq!(envelope(&revision).event_type, INVOICE_REVISED);
        let state = revised.state.unwrap();

        // An older period revision than the one priced is stale.
        let mut adjusted = event.clone();
        adjusted.revision = 1;
        let adjusted_decision = decide(&adjusted, pricing(&adjusted, &book), Some(&state), now);
        assert_eq!(adjusted_decision.outcome, Outcome::Unchanged, "same total, new inputs");
        let state = adjusted_decision.state.unwrap();
        assert_eq!(state.period_revision, 1);
        assert_eq!(decide(&event, pricing(&event, &book), Some(&state), now).outcome, Outcome::Stale);
    }

    #[test]
    fn unbillable_keeps_the_period_and_the_latest_invoice() {
        let book = TariffBook::default();
        let event = london_month("meter-1", date(2024, 11, 1), dec!(0.4));
        let decision = decide(&event, pricing(&event, &book), None, Timestamp::UNIX_EPOCH);
        assert_eq!(decision.outcome, Outcome::Unbillable);
        let state = decision.state.unwrap();
        assert_eq!(state.status, Status::Unbillable);
        assert!(state.reason.unwrap().contains("no published version"));
        let kept: PeriodEvent = serde_json::from_value(state.period.unwrap()).unwrap();
        assert_eq!(kept, event);
    }
}
