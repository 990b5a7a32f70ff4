//! Processor metrics. Labels are bounded; never a device id.

use std::time::Duration;

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, Opts, Registry};

use crate::rollup::DevicePlan;

#[derive(Clone)]
pub struct Metrics {
    pub records_consumed: IntCounter,
    pub records_skipped: IntCounter,
    /// Readings by what became of them: stored, duplicate, conflict, too_late, rejected.
    pub readings: IntCounterVec,
    pub batch_failures: IntCounter,
    pub batch_commit_seconds: Histogram,
    pub batch_records: Histogram,
    /// Billing periods by what happened: closed, adjusted.
    pub periods: IntCounterVec,
    /// Device events by outcome: applied, rejected.
    pub device_events: IntCounterVec,
    /// Online/offline changes stored (from the bridge's events, telemetry and inactivity).
    pub status_changes: IntCounter,
    /// Devices whose energy was rebuilt (new time zone, decommissioning).
    pub rebuilds: IntCounter,
    /// Kafka consumers replaced because their group membership was stuck.
    pub consumer_restarts: IntCounter,
}

#[derive(Debug, Default)]
pub struct BatchTotals {
    pub stored: u64,
    pub duplicates: u64,
    pub conflicts: u64,
    pub too_late: u64,
    pub after_decommission: u64,
    pub late: u64,
    pub rejected: u64,
    pub periods_closed: u64,
    pub periods_adjusted: u64,
    pub device_events: u64,
    pub device_events_rejected: u64,
    /// Device segments the batch was applied in (see `segment`).
    pub segments: u64,
    /// Distinct meters whose telemetry the batch held.
    pub meters: u64,
    /// Rounds the telemetry was applied in (the most segments of one device).
    pub rounds: u64,
    pub status_changes: u64,
    pub rebuilt: u64,
}

impl BatchTotals {
    pub fn add(&mut self, plan: &DevicePlan) {
        self.stored += (plan.inserts.len() + plan.replacements.len()) as u64;
        self.late += plan.inserts.iter().filter(|(_, j)| j.late).count() as u64;
        self.duplicates += plan.duplicates;
        self.conflicts += plan.conflicts.len() as u64;
        self.too_late += plan.too_late.len() as u64;
        self.after_decommission += plan.after_decommission.len() as u64;
    }
}

impl Metrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let metrics = Self {
            records_consumed: IntCounter::new(
                "smartmeter_processor_records_consumed_total",
                "Telemetry records taken off Kafka and committed.",
            )?,
            records_skipped: IntCounter::new(
                "smartmeter_processor_records_skipped_total",
                "Records dropped before processing because they precede the stored offset (already applied).",
            )?,
            readings: IntCounterVec::new(
                Opts::new("smartmeter_processor_readings_total", "Readings by outcome."),
                &["outcome"],
            )?,
            batch_failures: IntCounter::new(
                "smartmeter_processor_batch_failures_total",
                "Batches whose transaction failed and was retried.",
            )?,
            batch_commit_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "smartmeter_processor_batch_commit_seconds",
                    "Time to plan, write and commit one batch.",
                )
                .buckets(vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]),
            )?,
            batch_records: Histogram::with_opts(
                HistogramOpts::new("smartmeter_processor_batch_records", "Records per batch.")
                    .buckets(prometheus::exponential_buckets(1.0, 4.0, 8)?),
            )?,
            periods: IntCounterVec::new(
                Opts::new(
                    "smartmeter_processor_billing_periods_total",
                    "Billing periods closed or adjusted.",
                ),
                &["event"],
            )?,
            device_events: IntCounterVec::new(
                Opts::new("smartmeter_processor_device_events_total", "Device events by outcome."),
                &["outcome"],
            )?,
            status_changes: IntCounter::new(
                "smartmeter_processor_status_changes_total",
                "Online/offline changes stored (newest wins), from status events, telemetry and inactivity.",
            )?,
            rebuilds: IntCounter::new(
                "smartmeter_processor_energy_rebuilds_total",
                "Devices whose energy was rebuilt from their readings (new time zone, decommissioning).",
            )?,
            consumer_restarts: IntCounter::new(
                "smartmeter_processor_consumer_restarts_total",
                "Kafka consumers replaced because their group membership stayed unsettled while Kafka was reachable.",
            )?,
        };
        registry.register(Box::new(metrics.consumer_restarts.clone()))?;
        registry.register(Box::new(metrics.periods.clone()))?;
        registry.register(Box::new(metrics.device_events.clone()))?;
        registry.register(Box::new(metrics.status_changes.clone()))?;
        registry.register(Box::new(metrics.rebuilds.clone()))?;
        registry.register(Box::new(metrics.records_consumed.clone()))?;
        registry.register(Box::new(metrics.records_skipped.clone()))?;
        registry.register(Box::new(metrics.readings.clone()))?;
        registry.register(Box::new(metrics.batch_failures.clone()))?;
        registry.register(Box::new(metrics.batch_commit_seconds.clone()))?;
        registry.register(Box::new(metrics.batch_records.clone()))?;
        Ok(metrics)
    }

    pub fn observe_batch(&self, records: usize, totals: &BatchTotals, elapsed: Duration) {
        self.records_consumed.inc_by(records as u64);
        self.batch_records.observe(records as f64);
        self.batch_commit_seconds.observe(elapsed.as_secs_f64());
        for (outcome, count) in [
            ("stored", totals.stored),
            ("late", totals.late),
            ("duplicate", totals.duplicates),
            ("conflict", totals.conflicts),
            ("too_late", totals.too_late),
            ("after_decommission", totals.after_decommission),
            ("rejected", totals.rejected),
        ] {
            self.readings.with_label_values(&[outcome]).inc_by(count);
        }
        self.periods.with_label_values(&["closed"]).inc_by(totals.periods_closed);
        self.periods.with_label_values(&["adjusted"]).inc_by(totals.periods_adjusted);
        self.device_events.with_label_values(&["applied"]).inc_by(totals.device_events);
        self.device_events.with_label_values(&["rejected"]).inc_by(totals.device_events_rejected);
        self.status_changes.inc_by(totals.status_changes);
        self.rebuilds.inc_by(totals.rebuilt);
    }
}
