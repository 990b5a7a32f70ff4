//! Billing period events inside the caller's transaction, shared by the live consumer
//! and replays: price (CPU, outside any lock), then lock the device-months, decide
//! each event in order against what was issued before, and write the invoices, their
//! outbox events and the new states.

use std::collections::{BTreeSet, HashMap};

use deadpool_postgres::Transaction;
use jiff::Timestamp;
use smartmeter_core::billing::events::PeriodEvent;

use crate::invoice::{self, Outcome};
use crate::price::{self, Assignment, Pricing};
use crate::store;
use crate::tariffs::TariffBook;

/// How many events had each outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub issued: u64,
    pub revised: u64,
    pub unchanged: u64,
    pub unbillable: u64,
    pub stale: u64,
}

impl Counts {
    fn add(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Issued => self.issued += 1,
            Outcome::Revised => self.revised += 1,
            Outcome::Unchanged => self.unchanged += 1,
            Outcome::Unbillable => self.unbillable += 1,
            Outcome::Stale => self.stale += 1,
        }
    }

    pub fn total(&self) -> u64 {
        self.issued + self.revised + self.unchanged + self.unbillable + self.stale
    }
}

/// Prices every event, on up to `threads` threads.
pub fn price_all(
    events: Vec<PeriodEvent>,
    assignments: &HashMap<String, Vec<Assignment>>,
    book: &TariffBook,
    threads: usize,
) -> Vec<(PeriodEvent, Pricing)> {
    let price_one = |event: PeriodEvent| {
        let device_assignments = assignments.get(event.device_id.as_str()).map_or(&[][..], Vec::as_slice);
        let pricing = price::price_period(&event, device_assignments, book);
        (event, pricing)
    };
    let threads = threads.clamp(1, events.len().max(1));
    if threads == 1 {
        return events.into_iter().map(price_one).collect();
    }
    let chunk = events.len().div_ceil(threads);
    let mut chunks = Vec::with_capacity(threads);
    let mut rest = events;
    while rest.len() > chunk {
        let tail = rest.split_off(chunk);
        chunks.push(rest);
        rest = tail;
    }
    chunks.push(rest);
    std::thread::scope(|scope| {
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|chunk| scope.spawn(|| chunk.into_iter().map(price_one).collect::<Vec<_>>()))
            .collect();
        handles.into_iter().flat_map(|handle| handle.join().expect("pricing never panics")).collect()
    })
}

/// Decides and writes priced events (in order) in `tx`; invoice events go to the
/// outbox for `invoices_topic`.
pub async fn record(
    tx: &Transaction<'_>,
    priced: Vec<(PeriodEvent, Pricing)>,
    invoices_topic: &str,
    replay_job: Option<i64>,
) -> Result<Counts, tokio_postgres::Error> {
    let mut counts = Counts::default();
    if priced.is_empty() {
        return Ok(counts);
    }
    let keys: BTreeSet<_> =
        priced.iter().map(|(event, _)| (event.device_id.to_string(), event.month)).collect();
    let mut states = store::lock_states(tx, &keys).await?;
    let issued_at = Timestamp::now();
    let mut decisions = Vec::with_capacity(priced.len());
    for (event, pricing) in priced {
        let key = (event.device_id.to_string(), event.month);
        let decision = invoice::decide(&event, pricing, states.get(&key), issued_at);
        counts.add(decision.outcome);
        if let Some(invoice) = decision.invoice.as_ref().filter(|_| replay_job.is_none()) {
            tracing::info!(
                device_id = %event.device_id,
                invoice_number = invoice.invoice_number,
                total = %invoice.total,
                difference = ?invoice.difference,
                "Invoice {}.",
                decision.outcome.as_str()
            );
        }
        if let Some(invoice) = decision.invoice.as_ref().filter(|_| replay_job.is_some()) {
            // A replay can issue a revision per device-month of a year: its job row counts them.
            tracing::debug!(
                device_id = %event.device_id,
                invoice_number = invoice.invoice_number,
                total = %invoice.total,
                difference = ?invoice.difference,
                "Invoice {}.",
                decision.outcome.as_str()
            );
        }
        if let Some(state) = &decision.state {
            states.insert(key, state.clone());
        }
        decisions.push(decision);
    }
    store::write_decisions(tx, &decisions, invoices_topic, replay_job).await?;
    Ok(counts)
}
