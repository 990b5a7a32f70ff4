//! What an operator watches: invoices issued and revised, what each priced period came
//! to, pricing latency, tariff events applied and refused, consumer lag.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry};

use crate::bill::Counts;

#[derive(Clone)]
pub struct Metrics {
    pub invoices_issued: IntCounter,
    pub invoices_revised: IntCounter,
    /// By outcome: issued, revised, unchanged, unbillable, stale, duplicate.
    pub periods: IntCounterVec,
    /// Seconds to price one period (core arithmetic and digest); the live consumer
    /// prices a batch together and observes each period at the batch's mean.
    pub pricing_seconds: Histogram,
    /// Seconds from receiving a batch to its commit.
    pub batch_seconds: Histogram,
    /// By kind (version, assignment) and result (applied, duplicate, refused).
    pub tariff_events: IntCounterVec,
    /// Records that are not readable events, by topic.
    pub rejected: IntCounterVec,
    pub records_skipped: IntCounter,
    pub batch_failures: IntCounter,
    /// High watermark minus the stored offset, by topic.
    pub consumer_lag: IntGaugeVec,
    pub emails: IntCounterVec,
}

impl Metrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let metrics = Self {
            invoices_issued: IntCounter::new(
                "smartmeter_billing_invoices_issued_total",
                "Original invoices issued.",
            )?,
            invoices_revised: IntCounter::new(
                "smartmeter_billing_invoices_revised_total",
                "Invoice revisions issued (a re-pricing changed the total).",
            )?,
            periods: IntCounterVec::new(
                Opts::new("smartmeter_billing_periods_total", "Period events priced, by outcome."),
                &["outcome"],
            )?,
            pricing_seconds: Histogram::with_opts(
                HistogramOpts::new("smartmeter_billing_pricing_seconds", "Time to price one period.")
                    .buckets(vec![1e-6, 5e-6, 1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 1e-2]),
            )?,
            batch_seconds: Histogram::with_opts(
                HistogramOpts::new("smartmeter_billing_batch_seconds", "Time to apply and commit a batch.")
                    .buckets(prometheus::exponential_buckets(0.001, 2.0, 14)?),
            )?,
            tariff_events: IntCounterVec::new(
                Opts::new("smartmeter_billing_tariff_events_total", "Tariff events, by kind and result."),
                &["kind", "result"],
            )?,
            rejected: IntCounterVec::new(
                Opts::new(
                    "smartmeter_billing_rejected_records_total",
                    "Records that are not readable events.",
                ),
                &["topic"],
            )?,
            records_skipped: IntCounter::new(
                "smartmeter_billing_records_skipped_total",
                "Records dropped as leftovers of a rebalance or seek.",
            )?,
            batch_failures: IntCounter::new(
                "smartmeter_billing_batch_failures_total",
                "Batches that failed and were retried.",
            )?,
            consumer_lag: IntGaugeVec::new(
                Opts::new("smartmeter_billing_consumer_lag_records", "Records not yet consumed, by topic."),
                &["topic"],
            )?,
            emails: IntCounterVec::new(
                Opts::new("smartmeter_billing_emails_total", "Invoice e-mails, by result."),
                &["result"],
            )?,
        };
        registry.register(Box::new(metrics.invoices_issued.clone()))?;
        registry.register(Box::new(metrics.invoices_revised.clone()))?;
        registry.register(Box::new(metrics.periods.clone()))?;
        registry.register(Box::new(metrics.pricing_seconds.clone()))?;
        registry.register(Box::new(metrics.batch_seconds.clone()))?;
        registry.register(Box::new(metrics.tariff_events.clone()))?;
        registry.register(Box::new(metrics.rejected.clone()))?;
        registry.register(Box::new(metrics.records_skipped.clone()))?;
        registry.register(Box::new(metrics.batch_failures.clone()))?;
        registry.register(Box::new(metrics.consumer_lag.clone()))?;
        registry.register(Box::new(metrics.emails.clone()))?;
        Ok(metrics)
    }

    pub fn observe(&self, counts: &Counts) {
        self.invoices_issued.inc_by(counts.issued);
        self.invoices_revised.inc_by(counts.revised);
        for (outcome, count) in [
            ("issued", counts.issued),
            ("revised", counts.revised),
            ("unchanged", counts.unchanged),
            ("unbillable", counts.unbillable),
            ("stale", counts.stale),
        ] {
            if count > 0 {
                self.periods.with_label_values(&[outcome]).inc_by(count);
            }
        }
    }
}
