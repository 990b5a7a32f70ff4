//! `billing-worker replay`: read `smartmeter.billing-periods.v1` again for some months
//! (and optionally one device) and price every period with the tariffs in force now.
//! Nothing changed → nothing issued; a changed total → one revision with the difference.
//!
//! Where reading starts: Kafka can only look offsets up by record timestamp
//! (`offsets_for_times`), and a period event is stamped when it is published, which
//! is after its local month ended (months close at end + grace, in event time or wall
//! time). So no event of month `from` or later can carry a timestamp before the end of
//! `from` in the earliest zone (UTC+14). The replay starts each partition at the first
//! record stamped at or after `(from + 1 month) 00:00 UTC − 2 days` (the margin also
//! covers producer clock skew), reads up to the end offsets taken when it starts, and
//! keeps the events whose month lies in `[from, to]`. Events of earlier months read
//! on the way, and events newer than the start, are skipped. `to` does not bound the
//! read: an adjustment of an old month can be published at any time later.
//!
//! Pipeline: a reader thread polls; a pricing stage decodes (the costliest step: a
//! period's energy by local hour is most of its ~45 KB of JSON), loads assignments and
//! prices chunks on `pricing_threads` threads; the writer commits each chunk (invoices,
//! outbox events, states and the job's progress in `replay_jobs`) in one transaction.
//! Older period revisions than the one already priced are skipped as stale, so the
//! latest revision of each device-month wins wherever it sits in the topic.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use deadpool_postgres::Pool;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use jiff::civil::Date;
use jiff::{Timestamp, ToSpan as _};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use smartmeter_core::billing::events::{PeriodEvent, PERIOD_ADJUSTED, PERIOD_CLOSED};
use smartmeter_core::event::Envelope;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::bill;
use crate::metrics::Metrics;
use crate::price::Pricing;
use crate::store::{self, Progress};
use crate::tariffs::TariffBook;

#[derive(Debug, Clone)]
pub struct ReplayRequest {
    pub brokers: String,
    pub topic: String,
    /// Where invoice events go (through the outbox).
    pub invoices_topic: String,
    /// First day of the first month to re-price.
    pub from: Date,
    /// First day of the last month to re-price; open when `None`.
    pub to: Option<Date>,
    pub device_id: Option<String>,
    /// Records read per chunk; each chunk is priced and committed in one transaction.
    pub batch_size: usize,
    pub pricing_threads: usize,
    /// Draw an indicatif progress bar on stderr (when it is a terminal).
    pub progress_bar: bool,
}

#[derive(Debug, Clone, Copy)]
pub struct ReplayReport {
    pub job_id: i64,
    pub records_total: i64,
    pub progress: Progress,
    pub elapsed: Duration,
}

impl ReplayReport {
    /// Period events of the months asked for, priced per second.
    pub fn periods_per_second(&self) -> f64 {
        self.progress.periods_matched as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// First day of the month `text` (`YYYY-MM`) names.
pub fn parse_month(text: &str) -> anyhow::Result<Date> {
    let date: Date =
        format!("{text}-01").parse().with_context(|| format!("{text:?} is not a month (YYYY-MM)"))?;
    Ok(date)
}

/// The Kafka timestamp (ms) replay starts at for months from `from` on.
pub fn lookup_timestamp_ms(from: Date) -> i64 {
    let next_month =
        from.first_of_month().checked_add(1.month()).expect("a billing month is far from the end of time");
    let at = next_month.to_zoned(jiff::tz::TimeZone::UTC).expect("midnight UTC exists").timestamp();
    at.checked_sub(jiff::SignedDuration::from_hours(48)).expect("far from the start of time").as_millisecond()
}

/// A chunk of records as read (payload, partition, offset), not decoded yet: decoding
/// a period event (its energy by local hour is most of its ~45 KB) costs more than
/// pricing it, so it happens on the pricing threads, not on the one reader thread.
struct Chunk {
    records: Vec<(Vec<u8>, i32, i64)>,
    progress: Progress,
}

struct PricedChunk {
    priced: Vec<(PeriodEvent, Pricing)>,
    progress: Progress,
}

/// Runs a replay asked for on the command line: records it in `replay_jobs` (status
/// `running`) and runs it to the end.
pub async fn replay(
    pool: &Pool,
    request: &ReplayRequest,
    metrics: Option<&Metrics>,
    shutdown: &CancellationToken,
) -> anyhow::Result<ReplayReport> {
    let client = pool.get().await.context("connect to PostgreSQL")?;
    let job_id =
        store::create_replay_job(&**client, request.from, request.to, request.device_id.as_deref()).await?;
    drop(client);
    run_recorded_job(pool, request, job_id, metrics, shutdown, "cancelled").await
}

/// Runs the job `job_id` (already `running` in `replay_jobs`) and records how it ended:
/// `succeeded`, `failed` with the error, or `on_cancel` when shut down before the end.
async fn run_recorded_job(
    pool: &Pool,
    request: &ReplayRequest,
    job_id: i64,
    metrics: Option<&Metrics>,
    shutdown: &CancellationToken,
    on_cancel: &str,
) -> anyhow::Result<ReplayReport> {
    let started = Instant::now();
    tracing::info!(job_id, from = %request.from, to = ?request.to, device_id = ?request.device_id, "Replay started.");
    let result = run_job(pool, request, job_id, metrics, shutdown, started).await;
    let client = pool.get().await.context("connect to PostgreSQL")?;
    match &result {
        Ok(report) => {
            let status = if shutdown.is_cancelled() { on_cancel } else { "succeeded" };
            store::finish_replay_job(&**client, job_id, status, None).await?;
            tracing::info!(job_id, status, progress = ?report.progress, seconds = report.elapsed.as_secs_f64(), "Replay finished.");
        }
        Err(error) => {
            tracing::error!(job_id, error = format!("{error:#}"), "Replay failed.");
            store::finish_replay_job(&**client, job_id, "failed", Some(&format!("{error:#}"))).await?;
        }
    }
    result
}

/// How the worker runs the replays requested through the API.
#[derive(Debug, Clone)]
pub struct RequestedReplays {
    pub brokers: String,
    pub topic: String,
    pub invoices_topic: String,
    pub batch_size: usize,
    pub pricing_threads: usize,
    /// How often to look for a requested job when none is waiting.
    pub poll_interval: Duration,
}

/// Runs the replays requested through the API until `shutdown`, one at a time: claims
/// the oldest `requested` row of `replay_jobs` (FOR UPDATE SKIP LOCKED, so each job is
/// run by one worker of the group), runs it with the same code as the command line and
/// records progress and outcome in the row. A job interrupted by shutdown goes back to
/// `requested` (a replay is idempotent, so the next worker simply runs it again).
pub async fn serve_requests(
    pool: Pool,
    settings: RequestedReplays,
    metrics: Metrics,
    shutdown: CancellationToken,
) {
    while !shutdown.is_cancelled() {
        let claimed = match pool.get().await {
            Ok(mut client) => store::claim_replay_job(&mut client).await.map_err(anyhow::Error::from),
            Err(error) => Err(anyhow::Error::from(error)),
        };
        match claimed {
            Ok(Some(job)) => {
                tracing::info!(job_id = job.job_id, requested_by = ?job.requested_by, "Requested replay claimed.");
                let request = ReplayRequest {
                    brokers: settings.brokers.clone(),
                    topic: settings.topic.clone(),
                    invoices_topic: settings.invoices_topic.clone(),
                    from: job.from_month.first_of_month(),
                    to: job.to_month.map(|to| to.first_of_month()),
                    device_id: job.device_id,
                    batch_size: settings.batch_size.max(1),
                    pricing_threads: settings.pricing_threads.max(1),
                    progress_bar: false,
                };
                let invalid = request.to.is_some_and(|to| to < request.from);
                if invalid {
                    let error = format!("to_month {:?} is before from_month {}", request.to, request.from);
                    if let Ok(client) = pool.get().await {
                        if let Err(db_error) =
                            store::finish_replay_job(&**client, job.job_id, "failed", Some(&error)).await
                        {
                            tracing::warn!(%db_error, "Cannot record a refused replay job.");
                        }
                    }
                    continue;
                }
                // The outcome is recorded in the row; an error is logged there too.
                let _ = run_recorded_job(&pool, &request, job.job_id, Some(&metrics), &shutdown, "requested")
                    .await;
                continue;
            }
            Ok(None) => {}
            Err(error) => tracing::warn!(error = format!("{error:#}"), "Cannot look for requested replays."),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(settings.poll_interval) => {}
        }
    }
}

async fn run_job(
    pool: &Pool,
    request: &ReplayRequest,
    job_id: i64,
    metrics: Option<&Metrics>,
    shutdown: &CancellationToken,
    started: Instant,
) -> anyhow::Result<ReplayReport> {
    let book = {
        let client = pool.get().await?;
        let (documents, seq) = store::load_tariffs(&**client).await?;
        TariffBook::from_documents(documents, seq).context("stored tariffs")?
    };
    let (consumer, ends, records_total) = {
        let request = request.clone();
        tokio::task::spawn_blocking(move || position(&request)).await??
    };
    {
        let client = pool.get().await?;
        store::set_replay_total(&**client, job_id, records_total).await?;
    }
    let bar = if request.progress_bar {
        ProgressBar::with_draw_target(Some(records_total as u64), ProgressDrawTarget::stderr())
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} replay [{elapsed_precise}] {wide_bar} {pos}/{len} records ({per_sec}, eta {eta}) {msg}",
        )
        .expect("a valid template"),
    );

    // Reader → pricing → writer, each stage a chunk ahead of the next.
    let (chunks_out, mut chunks_in) = mpsc::channel::<Chunk>(2);
    let reader = {
        let request = request.clone();
        let shutdown = shutdown.clone();
        tokio::task::spawn_blocking(move || read(consumer, &ends, &request, chunks_out, &shutdown))
    };
    let (priced_out, mut priced_in) = mpsc::channel::<PricedChunk>(2);
    let pricer = {
        let pool = pool.clone();
        let request = request.clone();
        let threads = request.pricing_threads;
        tokio::spawn(async move {
            while let Some(chunk) = chunks_in.recv().await {
                let mut progress = chunk.progress;
                let events = {
                    let request = request.clone();
                    tokio::task::spawn_blocking(move || decode_matching(chunk.records, &request, threads))
                        .await?
                };
                progress.periods_matched = events.len() as i64;
                let devices: BTreeSet<String> = events.iter().map(|e| e.device_id.to_string()).collect();
                let devices: Vec<&str> = devices.iter().map(String::as_str).collect();
                let client = pool.get().await?;
                let assignments = store::load_assignments(&**client, &devices).await?;
                drop(client);
                let book = book.clone();
                let priced = tokio::task::spawn_blocking(move || {
                    bill::price_all(events, &assignments, &book, threads)
                })
                .await?;
                if priced_out.send(PricedChunk { priced, progress }).await.is_err() {
                    break;
                }
            }
            anyhow::Ok(())
        })
    };

    let mut total = Progress::default();
    let mut write_error = None;
    while let Some(chunk) = priced_in.recv().await {
        match write(pool, job_id, &request.invoices_topic, chunk).await {
            Ok(progress) => {
                if let Some(metrics) = metrics {
                    metrics.invoices_issued.inc_by(progress.issued as u64);
                    metrics.invoices_revised.inc_by(progress.revised as u64);
                }
                bar.inc(progress.records_read as u64);
                bar.set_message(format!(
                    "{} issued, {} revised, {} unchanged, {} unbillable",
                    total.issued + progress.issued,
                    total.revised + progress.revised,
                    total.unchanged + progress.unchanged,
                    total.unbillable + progress.unbillable
                ));
                total += progress;
            }
            Err(error) => {
                write_error = Some(error);
                break;
            }
        }
    }
    drop(priced_in);
    let read_result = reader.await.context("reader thread")?;
    let price_result = pricer.await.context("pricing task")?;
    bar.finish();
    if let Some(error) = write_error {
        return Err(error);
    }
    read_result?;
    price_result?;
    Ok(ReplayReport { job_id, records_total, progress: total, elapsed: started.elapsed() })
}

async fn write(
    pool: &Pool,
    job_id: i64,
    invoices_topic: &str,
    chunk: PricedChunk,
) -> anyhow::Result<Progress> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let counts = bill::record(&tx, chunk.priced, invoices_topic, Some(job_id)).await?;
    let progress = Progress {
        issued: counts.issued as i64,
        revised: counts.revised as i64,
        unchanged: counts.unchanged as i64,
        unbillable: counts.unbillable as i64,
        stale: counts.stale as i64,
        ..chunk.progress
    };
    store::add_replay_progress(&tx, job_id, &progress).await?;
    tx.commit().await?;
    Ok(progress)
}

/// Creates the reading consumer, assigned at the start offsets; returns it with the
/// end offset of each partition it must read to and the number of records between.
fn position(request: &ReplayRequest) -> anyhow::Result<(BaseConsumer, HashMap<i32, i64>, i64)> {
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &request.brokers)
        // Never joins the group or commits: the assignment is manual.
        .set("group.id", "smartmeter-billing-replay")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .set("fetch.max.bytes", "104857600")
        .set("max.partition.fetch.bytes", "16777216")
        .set("queued.max.messages.kbytes", "262144")
        .create()
        .context("create Kafka consumer")?;
    let timeout = Duration::from_secs(10);
    let metadata = consumer.fetch_metadata(Some(&request.topic), timeout).context("topic metadata")?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|topic| topic.name() == request.topic)
        .flat_map(|topic| topic.partitions().iter().map(|partition| partition.id()))
        .collect();
    anyhow::ensure!(!partitions.is_empty(), "topic {} has no partitions (does it exist?)", request.topic);

    let lookup_ms = lookup_timestamp_ms(request.from);
    let mut times = TopicPartitionList::new();
    for &partition in &partitions {
        times.add_partition_offset(&request.topic, partition, Offset::Offset(lookup_ms))?;
    }
    let starts = consumer.offsets_for_times(times, timeout).context("look offsets up by time")?;
    let mut assignment = TopicPartitionList::new();
    let mut ends = HashMap::new();
    let mut records_total = 0;
    for &partition in &partitions {
        let (low, high) = consumer.fetch_watermarks(&request.topic, partition, timeout)?;
        let start = match starts.find_partition(&request.topic, partition).map(|element| element.offset()) {
            Some(Offset::Offset(offset)) => offset.max(low),
            // No record at or after the time: nothing to read here.
            _ => high,
        };
        if start < high {
            assignment.add_partition_offset(&request.topic, partition, Offset::Offset(start))?;
            ends.insert(partition, high);
            records_total += high - start;
        }
        tracing::debug!(partition, start, end = high, "Replay range.");
    }
    consumer.assign(&assignment).context("assign partitions")?;
    Ok((consumer, ends, records_total))
}

/// Polls every assigned partition up to its end offset, decoding and filtering into
/// chunks.
fn read(
    consumer: BaseConsumer,
    ends: &HashMap<i32, i64>,
    request: &ReplayRequest,
    chunks: mpsc::Sender<Chunk>,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let mut open: HashMap<i32, i64> = ends.clone();
    let empty = || Chunk { records: Vec::with_capacity(request.batch_size), progress: Progress::default() };
    let mut chunk = empty();
    let mut idle_since = Instant::now();
    while !open.is_empty() && !shutdown.is_cancelled() {
        let Some(polled) = consumer.poll(Duration::from_millis(200)) else {
            anyhow::ensure!(
                idle_since.elapsed() < Duration::from_secs(60),
                "no records for 60 s while partitions {:?} are not read to their end",
                open.keys().collect::<Vec<_>>()
            );
            continue;
        };
        idle_since = Instant::now();
        let message = match polled {
            Ok(message) => message,
            Err(KafkaError::PartitionEOF(partition)) => {
                open.remove(&partition);
                continue;
            }
            Err(KafkaError::MessageConsumption(RDKafkaErrorCode::PartitionEOF)) => continue,
            Err(error) => return Err(error).context("read the period topic"),
        };
        let (partition, offset) = (message.partition(), message.offset());
        let Some(&end) = open.get(&partition) else { continue };
        if offset >= end {
            open.remove(&partition);
            continue;
        }
        if offset + 1 >= end {
            open.remove(&partition);
        }
        chunk.progress.records_read += 1;
        chunk.records.push((message.payload().unwrap_or_default().to_vec(), partition, offset));
        if chunk.records.len() >= request.batch_size {
            let full = std::mem::replace(&mut chunk, empty());
            if chunks.blocking_send(full).is_err() {
                return Ok(());
            }
        }
    }
    if chunk.progress.records_read > 0 {
        let _ = chunks.blocking_send(chunk);
    }
    Ok(())
}

/// The period events among `records` that the request asks for, in record order,
/// decoded on up to `threads` threads.
fn decode_matching(
    records: Vec<(Vec<u8>, i32, i64)>,
    request: &ReplayRequest,
    threads: usize,
) -> Vec<PeriodEvent> {
    let decode = |records: &[(Vec<u8>, i32, i64)]| -> Vec<PeriodEvent> {
        records
            .iter()
            .filter_map(|(payload, partition, offset)| decode_period(payload, *partition, *offset))
            .filter(|event| matches(request, event))
            .collect()
    };
    let threads = threads.clamp(1, records.len().max(1));
    if threads == 1 {
        return decode(&records);
    }
    let size = records.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = records.chunks(size).map(|piece| scope.spawn(move || decode(piece))).collect();
        handles.into_iter().flat_map(|handle| handle.join().expect("decoding never panics")).collect()
    })
}

fn decode_period(payload: &[u8], partition: i32, offset: i64) -> Option<PeriodEvent> {
    match serde_json::from_slice::<Envelope<PeriodEvent>>(payload) {
        Ok(envelope) if envelope.event_type == PERIOD_CLOSED || envelope.event_type == PERIOD_ADJUSTED => {
            Some(envelope.data)
        }
        Ok(envelope) => {
            tracing::debug!(
                partition,
                offset,
                event_type = envelope.event_type,
                "Not a period event; skipped."
            );
            None
        }
        Err(error) => {
            // The live consumer recorded it in billing_rejects when it first read it.
            tracing::warn!(partition, offset, %error, "Unreadable record skipped.");
            None
        }
    }
}

fn matches(request: &ReplayRequest, event: &PeriodEvent) -> bool {
    event.month >= request.from
        && request.to.is_none_or(|to| event.month <= to)
        && request.device_id.as_deref().is_none_or(|device| device == event.device_id.as_str())
}

/// For a caller that has only a timestamp: the time a replay from `from` starts at.
pub fn lookup_time(from: Date) -> Timestamp {
    Timestamp::from_millisecond(lookup_timestamp_ms(from)).expect("in range")
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;

    #[test]
    fn months_parse_and_the_lookup_is_two_days_before_the_month_ends_in_utc() {
        assert_eq!(parse_month("2025-01").unwrap(), date(2025, 1, 1));
        assert!(parse_month("2025-13").is_err());
        assert!(parse_month("January").is_err());
        assert_eq!(lookup_time(date(2024, 12, 1)).to_string(), "2024-12-30T00:00:00Z");
        assert_eq!(lookup_time(date(2024, 2, 1)).to_string(), "2024-02-28T00:00:00Z");
    }
}
