//! One replay: load a data set, rebuild each meter's counter, interleave the meters in
//! time order, pace, publish, and report what happened.

use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use jiff::Timestamp;
use smartmeter_core::telemetry::telemetry_topic;
use smartmeter_core::DeviceId;
use tokio_util::sync::CancellationToken;

use crate::counter::{self, CounterError, MeterReading, ReadingKind};
use crate::london::{self, LondonError, Quirks};
use crate::payload::{Clamped, Telemetry};
use crate::publish::{JsonLines, MqttConfig, MqttPublisher, PublishError, Sink};
use crate::schedule::{self, Pacer};

/// How many quirky rows of each kind the summary names one by one.
const DETAIL_LIMIT: usize = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Low Carbon London half-hourly CSV (either layout).
    London,
}

#[derive(Debug, Clone)]
pub enum Output {
    Mqtt(MqttConfig),
    /// Write the payloads to this file, one per line, instead of publishing.
    DryRun(PathBuf),
}

#[derive(Debug, Clone)]
pub struct Config {
    pub source: Source,
    pub inputs: Vec<PathBuf>,
    pub points_per_slot: u32,
    /// Simulated seconds per wall second; 0 = as fast as possible.
    pub speedup: f64,
    /// Replay only the first N meters (by device id).
    pub limit_meters: Option<usize>,
    /// Only readings stamped at or after this instant.
    pub from: Option<Timestamp>,
    /// Only readings stamped at or before this instant.
    pub to: Option<Timestamp>,
    pub output: Output,
    /// How long to wait for outstanding PubAcks at the end.
    pub ack_timeout: Duration,
    pub progress: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    London(#[from] LondonError),
    #[error("meter {device_id}: {source}")]
    Counter { device_id: DeviceId, source: CounterError },
    #[error(transparent)]
    Publish(#[from] PublishError),
}

/// What a replay did. `Display` is the summary printed at the end.
#[derive(Debug, Clone)]
pub struct Report {
    pub quirks: Quirks,
    pub meters_in_data: usize,
    pub meters_replayed: usize,
    /// Readings inside the time range, i.e. what the replay meant to send.
    pub scheduled: u64,
    pub published: u64,
    /// PubAcks (MQTT) or lines written (dry run).
    pub confirmed: u64,
    pub resumes: u64,
    pub power_clamped: u64,
    pub reconnects: u64,
    pub first_timestamp: Option<Timestamp>,
    pub last_timestamp: Option<Timestamp>,
    /// From the first publish until every acknowledgement arrived (or the timeout).
    pub elapsed: Duration,
    pub interrupted: bool,
    pub dry_run: bool,
}

impl Report {
    /// Everything scheduled was sent and confirmed.
    pub fn complete(&self) -> bool {
        !self.interrupted && self.published == self.scheduled && self.confirmed == self.published
    }

    pub fn readings_per_second(&self) -> f64 {
        let seconds = self.elapsed.as_secs_f64();
        if seconds > 0.0 {
            self.published as f64 / seconds
        } else {
            0.0
        }
    }
}

/// Runs a replay until it is done or `cancel` fires (then it stops sending, waits for
/// the acknowledgements of what it sent, and reports `interrupted`).
pub async fn run(config: &Config, cancel: CancellationToken) -> Result<Report, ReplayError> {
    let dataset = match config.source {
        Source::London => london::load(&config.inputs)?,
    };
    let meters_in_data = dataset.meters.len();
    let meters = &dataset.meters[..config.limit_meters.unwrap_or(usize::MAX).min(meters_in_data)];
    let readings: Vec<Vec<MeterReading>> = meters
        .iter()
        .map(|m| {
            counter::readings(&m.slots, config.points_per_slot)
                .map_err(|source| ReplayError::Counter { device_id: m.device_id.clone(), source })
        })
        .collect::<Result<_, _>>()?;
    let timeline = schedule::interleave(&readings, config.from, config.to);
    let topics: Vec<String> = meters.iter().map(|m| telemetry_topic(&m.device_id)).collect();

    let mut sink = match &config.output {
        Output::Mqtt(mqtt) => Sink::Mqtt(MqttPublisher::connect(mqtt).await?),
        Output::DryRun(path) => Sink::DryRun(JsonLines::create(path)?),
    };

    let progress = progress_bar(config.progress, timeline.len() as u64);
    let mut report = Report {
        quirks: dataset.quirks.clone(),
        meters_in_data,
        meters_replayed: meters.len(),
        scheduled: timeline.len() as u64,
        published: 0,
        confirmed: 0,
        resumes: 0,
        power_clamped: 0,
        reconnects: 0,
        first_timestamp: timeline.first().map(|s| s.reading.timestamp),
        last_timestamp: timeline.last().map(|s| s.reading.timestamp),
        elapsed: Duration::ZERO,
        interrupted: false,
        dry_run: matches!(config.output, Output::DryRun(_)),
    };
    let mut pacer = Pacer::new(config.speedup);
    let started = Instant::now();
    for item in &timeline {
        tokio::select! {
            biased;
            () = cancel.cancelled() => { report.interrupted = true; break; }
            () = pacer.wait_for(item.reading.timestamp) => {}
        }
        let device_id = &meters[item.meter].device_id;
        let (telemetry, Clamped(clamped)) = Telemetry::from_reading(device_id, item.reading);
        let sent = tokio::select! {
            biased;
            () = cancel.cancelled() => { report.interrupted = true; break; }
            sent = sink.send(topics[item.meter].clone(), telemetry.to_json()) => sent,
        };
        if let Err(error) = sent {
            progress.abandon();
            return Err(error.into());
        }
        report.published += 1;
        report.power_clamped += u64::from(clamped);
        report.resumes += u64::from(item.reading.kind == ReadingKind::Resume);
        progress.inc(1);
        if report.published % 512 == 0 {
            progress.set_message(format!("acked {}", sink.confirmed()));
        }
    }
    progress.set_message("waiting for acks");
    let delivery = sink.finish(config.ack_timeout).await?;
    report.elapsed = started.elapsed();
    report.confirmed = delivery.confirmed;
    report.reconnects = delivery.reconnects;
    progress.finish_and_clear();
    Ok(report)
}

fn progress_bar(enabled: bool, len: u64) -> ProgressBar {
    if !enabled {
        return ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::hidden());
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(
            "{elapsed_precise} [{wide_bar}] {human_pos}/{human_len} readings, {per_sec}, eta {eta} {msg}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let q = &self.quirks;
        let range = match (self.first_timestamp, self.last_timestamp) {
            (Some(a), Some(b)) => format!("{a} .. {b}"),
            _ => "empty".to_owned(),
        };
        let confirmed = if self.dry_run { "written" } else { "acked" };
        writeln!(f, "meter-sim summary")?;
        writeln!(
            f,
            "  meters:               {} replayed of {} in the data (time zone {})",
            self.meters_replayed,
            self.meters_in_data,
            london::TIME_ZONE
        )?;
        writeln!(
            f,
            "  readings:             {} scheduled, {} published, {} {confirmed}",
            self.scheduled, self.published, self.confirmed
        )?;
        writeln!(f, "  time range:           {range}")?;
        writeln!(
            f,
            "  elapsed:              {:.3} s, {:.0} readings/s",
            self.elapsed.as_secs_f64(),
            self.readings_per_second()
        )?;
        writeln!(f, "  resume readings:      {} (first reading after a missing or Null slot)", self.resumes)?;
        writeln!(f, "  power clamped:        {}", self.power_clamped)?;
        if !self.dry_run {
            writeln!(f, "  reconnects:           {}", self.reconnects)?;
        }
        if self.interrupted {
            writeln!(f, "  INTERRUPTED before the end")?;
        }
        writeln!(f, "data quirks (files: {}, data rows: {})", q.files, q.data_rows)?;
        writeln!(f, "  repeated headers:     {} (ignored)", q.repeated_headers)?;
        writeln!(f, "  blank lines:          {} (ignored)", q.blank_lines)?;
        writeln!(f, "  padded values:        {} (stripped)", q.padded_values)?;
        writeln!(f, "  float32 values:       {} (rounded to the whole Wh they render)", q.float32_values)?;
        writeln!(f, "  exact duplicates:     {} (sent once)", q.exact_duplicates)?;
        writeln!(f, "  Null values:          {} (energy unknown: no reading)", q.nulls)?;
        writeln!(f, "  off-grid timestamps:  {} (no reading)", q.off_grid)?;
        writeln!(f, "  missing slots:        {} in {} gaps (no reading)", q.missing_slots, q.gaps.len())?;
        writeln!(f, "  zero values:          {} (real readings)", q.zero_values)?;
        writeln!(f, "  rows out of order:    {} (sorted)", q.out_of_order_rows)?;
        let details =
            [("duplicate", &q.duplicate_rows), ("Null", &q.null_rows), ("off-grid", &q.off_grid_rows)];
        for (what, rows) in details {
            for row in rows.iter().take(DETAIL_LIMIT) {
                writeln!(f, "    {what}: {} {} ({})", row.device_id, row.timestamp, row.at)?;
            }
            if rows.len() > DETAIL_LIMIT {
                writeln!(f, "    ... {} more {what} rows", rows.len() - DETAIL_LIMIT)?;
            }
        }
        for gap in q.gaps.iter().take(DETAIL_LIMIT) {
            writeln!(f, "    gap: {} from {}, {} slot(s)", gap.device_id, gap.from, gap.missing_slots)?;
        }
        if q.gaps.len() > DETAIL_LIMIT {
            writeln!(f, "    ... {} more gaps", q.gaps.len() - DETAIL_LIMIT)?;
        }
        Ok(())
    }
}
