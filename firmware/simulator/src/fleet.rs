//! A run: the meters of a source, in data time, paced against the wall clock, on a
//! transport; and its [`Report`].
//!
//! Time is the data's. Each meter has one next event (a reading, SNTP, a reconnection
//! attempt, a fault); the fleet takes them in time order from one queue. With a
//! speed-up, data time runs that many times faster than wall time. Unpaced (speed-up
//! 0), time moves on only once the broker has acknowledged everything sent so far, so
//! "as fast as possible" means as fast as the broker takes it, and a meter's outbox
//! never fills because the simulator outran the network.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use jiff::Timestamp;
use meter_core::mqtt::{LastWill, Topics};
use meter_core::DeviceId;
use tokio_util::sync::CancellationToken;

use crate::device::{Counters, Ctx, MeterSettings, SimMeter};
use crate::faults::FaultConfig;
use crate::source::{Source, SourceKind, SourceQuirks};
use crate::transport::{Connections, Notice, Transport, TransportStats};
use crate::Error;

/// Outbox sizes a run may choose (the outbox is a fixed array in each meter, as on the
/// ESP32, so its size is a compile-time constant). 720 is the ESP32 application's.
pub const OUTBOX_CAPACITIES: [usize; 12] = [4, 8, 16, 32, 64, 128, 256, 512, 720, 1024, 2048, 4096];

/// One meter to simulate.
#[derive(Debug, Clone)]
pub struct Plan {
    pub device_id: DeviceId,
    pub trace: u32,
    pub conn: u32,
    pub start_ms: i64,
    pub end_ms: i64,
}

pub struct Run<'a> {
    pub source: &'a Source,
    pub plans: Vec<Plan>,
    pub settings: MeterSettings,
    pub speedup: f64,
    /// Data time is wall time (the data was moved to now and runs at speed 1): each
    /// event waits for its own wall-clock instant, not for its offset from the start.
    pub live: bool,
    pub ack_timeout: Duration,
    pub progress: bool,
    pub connections: Option<Connections>,
    pub faults: FaultConfig,
}

/// What a run did. `Display` is the summary `meter-sim` prints.
#[derive(Debug, Clone)]
pub struct Report {
    pub source: SourceKind,
    pub source_description: &'static str,
    pub quirks: SourceQuirks,
    pub traces_in_data: usize,
    pub meters: usize,
    pub connections: Option<Connections>,
    pub interval_ms: i64,
    pub outbox: usize,
    pub first: Option<Timestamp>,
    pub last: Option<Timestamp>,
    pub counters: Counters,
    pub transport: TransportStats,
    pub faults: FaultConfig,
    /// Meters that did not deliver everything and say goodbye.
    pub unfinished: usize,
    pub interrupted: bool,
    pub dry_run: bool,
    /// From the first event until the last acknowledgement.
    pub elapsed: Duration,
    pub rss_bytes: Option<u64>,
    pub peak_rss_bytes: Option<u64>,
}

impl Report {
    /// Distinct readings the broker acknowledged (or the file took).
    pub fn published(&self) -> u64 {
        self.counters.readings_delivered
    }

    /// Everything measured was delivered and every meter said goodbye.
    pub fn complete(&self) -> bool {
        !self.interrupted && self.unfinished == 0
    }

    pub fn readings_per_second(&self) -> f64 {
        let seconds = self.elapsed.as_secs_f64();
        if seconds > 0.0 {
            self.published() as f64 / seconds
        } else {
            0.0
        }
    }

    pub fn messages_per_second(&self) -> f64 {
        let seconds = self.elapsed.as_secs_f64();
        if seconds > 0.0 {
            self.transport.messages as f64 / seconds
        } else {
            0.0
        }
    }
}

/// `VmRSS` and `VmHWM` of this process, in bytes (Linux).
pub fn memory() -> (Option<u64>, Option<u64>) {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else { return (None, None) };
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.trim().strip_suffix("kB"))
            .and_then(|kb| kb.trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

struct Pacer {
    speedup: f64,
    sim_start_ms: i64,
    wall_start: tokio::time::Instant,
}

impl Pacer {
    fn due(&self, at_ms: i64) -> Option<tokio::time::Instant> {
        (self.speedup > 0.0).then(|| {
            let sim = Duration::from_millis((at_ms - self.sim_start_ms).max(0) as u64);
            self.wall_start + sim.div_f64(self.speedup)
        })
    }
}

/// Runs `run` with meters whose outbox holds `N` readings.
pub async fn simulate<const N: usize>(
    run: Run<'_>,
    mut transport: Transport,
    cancel: CancellationToken,
) -> Result<Report, Error> {
    let traces = &run.source.traces;
    let mut meters: Vec<SimMeter<N>> = run
        .plans
        .iter()
        .enumerate()
        .map(|(i, p)| SimMeter::new(i as u32, p, traces, &run.settings))
        .collect();
    let conn_count = run.plans.iter().map(|p| p.conn + 1).max().unwrap_or(0) as usize;
    let mut by_conn: Vec<Vec<u32>> = vec![Vec::new(); conn_count];
    for (i, p) in run.plans.iter().enumerate() {
        by_conn[p.conn as usize].push(i as u32);
    }

    let start_ms = run.plans.iter().map(|p| p.start_ms).min().unwrap_or(0);
    let end_ms = run.plans.iter().map(|p| p.end_ms).max().unwrap_or(start_ms);
    let progress = progress_bar(run.progress, (end_ms - start_ms).max(0) as u64 / 1_000);
    let mut counters = Counters::default();
    let mut queue: BinaryHeap<Reverse<(i64, u32)>> = BinaryHeap::with_capacity(meters.len());
    for (i, m) in meters.iter_mut().enumerate() {
        if let Some(t) = m.next_event_ms(&run.settings) {
            m.scheduled_ms = Some(t);
            queue.push(Reverse((t, i as u32)));
        }
    }
    let pacer = if run.live {
        // Wall-clock instant `start_ms` as a tokio instant (it may lie in the past).
        let now_ms = Timestamp::now().as_millisecond();
        let now = tokio::time::Instant::now();
        let wall_start = if start_ms >= now_ms {
            now + Duration::from_millis((start_ms - now_ms) as u64)
        } else {
            now.checked_sub(Duration::from_millis((now_ms - start_ms) as u64)).unwrap_or(now)
        };
        Pacer { speedup: 1.0, sim_start_ms: start_ms, wall_start }
    } else {
        Pacer { speedup: run.speedup, sim_start_ms: start_ms, wall_start: tokio::time::Instant::now() }
    };
    let started = Instant::now();
    let mut now_ms = start_ms;
    let mut interrupted = false;
    let mut last_draw = Instant::now();

    macro_rules! ctx {
        () => {
            Ctx { traces, settings: &run.settings, transport: &mut transport, counters: &mut counters }
        };
    }
    let dedicated = run.connections == Some(Connections::Dedicated);

    loop {
        // What the connections have to say, without waiting.
        while let Some(notice) = transport.try_notice() {
            handle(notice, now_ms, dedicated, &mut meters, &by_conn, &mut queue, &mut ctx!())?;
        }
        if cancel.is_cancelled() {
            interrupted = true;
            break;
        }
        let next = queue.peek().map(|Reverse((t, _))| *t);
        // Wait for the wall clock (paced), or for the broker (unpaced: time moves on
        // once everything sent is acknowledged; at the end: until it all is).
        let wait_until = next.and_then(|t| pacer.due(t)).filter(|due| *due > tokio::time::Instant::now());
        let in_flight = transport.outstanding() > 0 || transport.connecting() > 0;
        let awaiting_acks = in_flight && next.is_none_or(|t| run.speedup == 0.0 && t > now_ms);
        if next.is_none() && !awaiting_acks {
            break;
        }
        if wait_until.is_some() || awaiting_acks {
            let deadline = wait_until.unwrap_or_else(|| tokio::time::Instant::now() + run.ack_timeout);
            tokio::select! {
                () = cancel.cancelled() => {}
                notice = transport.notice() => {
                    handle(notice, now_ms, dedicated, &mut meters, &by_conn, &mut queue, &mut ctx!())?;
                }
                () = tokio::time::sleep_until(deadline) => {
                    if wait_until.is_none() {
                        tracing::warn!(outstanding = transport.outstanding(), "Acknowledgements overdue.");
                        match next {
                            Some(t) => now_ms = t,
                            None => break,
                        }
                    }
                }
            }
            continue;
        }
        let Some(Reverse((t, i))) = queue.pop() else { break };
        let m = &mut meters[i as usize];
        if m.scheduled_ms != Some(t) {
            continue;
        }
        m.scheduled_ms = None;
        now_ms = now_ms.max(t);
        m.step(t, &mut ctx!());
        reschedule(m, &mut queue, now_ms, &run.settings);
        if last_draw.elapsed() > Duration::from_millis(100) {
            last_draw = Instant::now();
            progress.set_position((now_ms - start_ms).max(0) as u64 / 1_000);
            progress.set_message(format!(
                "{} readings delivered, {} in flight",
                counters.readings_delivered,
                transport.outstanding()
            ));
        }
    }
    if interrupted {
        // Only the acknowledgements of what was sent; nothing new goes out.
        progress.set_message("interrupted: waiting for acknowledgements");
        let deadline = tokio::time::Instant::now() + run.ack_timeout;
        while transport.outstanding() > 0 {
            tokio::select! {
                _ = transport.notice() => {}
                () = tokio::time::sleep_until(deadline) => break,
            }
        }
    }
    let elapsed = started.elapsed();
    let unfinished = meters.iter().filter(|m| !m.done()).count();
    let (rss_bytes, peak_rss_bytes) = memory();
    let dry_run = transport.is_dry_run();
    drop(meters);
    let transport_stats = transport.close().await.map_err(Error::Output)?;
    progress.finish_and_clear();
    let first = run.plans.iter().map(|p| p.start_ms).min().and_then(|t| Timestamp::from_millisecond(t).ok());
    let last = run.plans.iter().map(|p| p.end_ms).max().and_then(|t| Timestamp::from_millisecond(t).ok());
    Ok(Report {
        source: run.source.kind,
        source_description: run.source.describe(),
        quirks: run.source.quirks.clone(),
        traces_in_data: run.source.traces.len(),
        meters: run.plans.len(),
        connections: run.connections,
        interval_ms: run.settings.interval_ms,
        outbox: N,
        first,
        last,
        counters,
        transport: transport_stats,
        faults: run.faults.clone(),
        unfinished,
        interrupted,
        dry_run,
        elapsed,
        rss_bytes,
        peak_rss_bytes,
    })
}

/// Queues a meter's next event (never in the past).
fn reschedule<const N: usize>(
    m: &mut SimMeter<N>,
    queue: &mut BinaryHeap<Reverse<(i64, u32)>>,
    now_ms: i64,
    settings: &MeterSettings,
) {
    let next = m.next_event_ms(settings).map(|t| t.max(now_ms));
    if next != m.scheduled_ms {
        m.scheduled_ms = next;
        if let Some(t) = next {
            queue.push(Reverse((t, m.index)));
        }
    }
}

fn handle<const N: usize>(
    notice: Notice,
    now_ms: i64,
    dedicated: bool,
    meters: &mut [SimMeter<N>],
    by_conn: &[Vec<u32>],
    queue: &mut BinaryHeap<Reverse<(i64, u32)>>,
    ctx: &mut Ctx<'_>,
) -> Result<(), Error> {
    match notice {
        Notice::Ack(tag) => {
            let m = &mut meters[tag.meter as usize];
            if tag.id != 0 {
                m.acknowledged(tag.id, now_ms, ctx);
            }
            reschedule(m, queue, now_ms, ctx.settings);
        }
        Notice::Up(conn) => {
            for &i in &by_conn[conn as usize] {
                let m = &mut meters[i as usize];
                if dedicated {
                    // Its meter asked for it (a pool's meters reconnect at their own
                    // retry times).
                    m.link_up(now_ms, ctx);
                }
                reschedule(m, queue, now_ms, ctx.settings);
            }
        }
        Notice::Down(conn) => {
            for &i in &by_conn[conn as usize] {
                let m = &mut meters[i as usize];
                m.link_down(now_ms);
                reschedule(m, queue, now_ms, ctx.settings);
            }
        }
        Notice::Forgotten(_) => {}
        Notice::Fatal(reason) => return Err(Error::Broker(reason)),
    }
    Ok(())
}

fn progress_bar(enabled: bool, len: u64) -> ProgressBar {
    if !enabled {
        return ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::hidden());
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(
            "{elapsed_precise} [{wide_bar}] {percent}% of data time, eta {eta} {msg}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar
}

/// The will a meter's dedicated connection registers.
pub fn will_of(device_id: &DeviceId) -> LastWill {
    LastWill::new(&Topics::new(device_id))
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.counters;
        let range = match (self.first, self.last) {
            (Some(a), Some(b)) => format!("{a} .. {b}"),
            _ => "empty".to_owned(),
        };
        let link = match (self.dry_run, self.connections) {
            (true, _) => "dry run (file)".to_owned(),
            (false, Some(Connections::Pool(n))) => format!("{n} shared MQTT connection(s)"),
            (false, Some(Connections::Dedicated)) => "one MQTT connection per meter".to_owned(),
            (false, None) => "-".to_owned(),
        };
        writeln!(f, "meter-sim summary")?;
        writeln!(
            f,
            "  source:               {} ({} in the data); {}",
            self.source, self.traces_in_data, self.source_description
        )?;
        writeln!(
            f,
            "  meters:               {} on {link}, a reading every {} s, outbox {}",
            self.meters,
            self.interval_ms / 1_000,
            self.outbox
        )?;
        writeln!(f, "  data time:            {range}")?;
        writeln!(
            f,
            "  published {} readings (distinct, acknowledged{}); {} measured, {} read failures",
            self.published(),
            if self.dry_run { " by the file" } else { " by the broker" },
            c.readings,
            c.read_failures
        )?;
        writeln!(
            f,
            "  messages:             {} sent, {} acknowledged ({} telemetry incl. re-sends, {} birth, {} goodbye)",
            self.transport.messages, self.transport.acked, c.telemetry_messages, c.births, c.goodbyes
        )?;
        writeln!(
            f,
            "  elapsed:              {:.3} s, {:.0} readings/s, {:.0} messages/s",
            self.elapsed.as_secs_f64(),
            self.readings_per_second(),
            self.messages_per_second()
        )?;
        if let (Some(rss), Some(peak)) = (self.rss_bytes, self.peak_rss_bytes) {
            writeln!(f, "  memory:               {:.1} MiB resident, {:.1} MiB peak", mib(rss), mib(peak))?;
        }
        writeln!(f, "  dropped:              {} (outbox full while offline)", c.dropped)?;
        writeln!(f, "  lost at reboot:       {} (queued in RAM when the meter rebooted)", c.lost_at_reboot)?;
        writeln!(f, "  unsynced published:   {} (sent before SNTP answered)", c.unsynced_published)?;
        writeln!(f, "  connection losses:    {}", self.transport.connection_losses)?;
        if !self.faults.is_empty() {
            writeln!(f, "faults")?;
            writeln!(f, "  reboots:              {}", c.reboots)?;
            writeln!(f, "  counter resets:       {}", c.counter_resets)?;
            writeln!(f, "  rollovers:            {}", c.rollovers)?;
            writeln!(f, "  outages:              {}", c.outages)?;
            writeln!(f, "  lost PUBACKs:         {} (each reading sent again)", c.lost_acks)?;
            let malformed: u64 = c.malformed.values().sum();
            writeln!(f, "  malformed payloads:   {malformed}")?;
            for (kind, n) in &c.malformed {
                writeln!(f, "    {kind}: {n} (expect {})", kind.expected_code().as_str())?;
            }
        }
        if self.interrupted {
            writeln!(f, "  INTERRUPTED before the end")?;
        }
        if self.unfinished > 0 {
            writeln!(f, "  UNFINISHED: {} meter(s) did not deliver everything", self.unfinished)?;
        }
        let q = &self.quirks;
        if let Some(london) = &q.london {
            writeln!(f, "data quirks (files: {}, data rows: {})", london.files, london.data_rows)?;
            writeln!(f, "  repeated headers:     {} (ignored)", london.repeated_headers)?;
            writeln!(f, "  blank lines:          {} (ignored)", london.blank_lines)?;
            writeln!(f, "  padded values:        {} (stripped)", london.padded_values)?;
            writeln!(
                f,
                "  float32 values:       {} (rounded to the whole Wh they render)",
                london.float32_values
            )?;
            writeln!(f, "  exact duplicates:     {} (used once)", london.exact_duplicates)?;
            writeln!(f, "  Null values:          {} (energy unknown: no power there)", london.nulls)?;
            writeln!(f, "  off-grid timestamps:  {} (ignored)", london.off_grid)?;
            writeln!(
                f,
                "  missing slots:        {} in {} gaps (no power there)",
                london.missing_slots,
                london.gaps.len()
            )?;
            writeln!(f, "  zero values:          {} (real readings)", london.zero_values)?;
            writeln!(f, "  rows out of order:    {} (sorted)", london.out_of_order_rows)?;
            const DETAIL_LIMIT: usize = 20;
            let details = [
                ("duplicate", &london.duplicate_rows),
                ("Null", &london.null_rows),
                ("off-grid", &london.off_grid_rows),
            ];
            for (what, rows) in details {
                for row in rows.iter().take(DETAIL_LIMIT) {
                    writeln!(f, "    {what}: {} {} ({})", row.device_id, row.timestamp, row.at)?;
                }
                if rows.len() > DETAIL_LIMIT {
                    writeln!(f, "    ... {} more {what} rows", rows.len() - DETAIL_LIMIT)?;
                }
            }
            for gap in london.gaps.iter().take(DETAIL_LIMIT) {
                writeln!(f, "    gap: {} from {}, {} slot(s)", gap.device_id, gap.from, gap.missing_slots)?;
            }
        } else {
            writeln!(f, "data: {} rows", q.rows)?;
            if q.unknown_rows > 0 {
                writeln!(f, "  unknown rows:         {} ('?': no power that minute)", q.unknown_rows)?;
            }
            if q.rows_sorted > 0 {
                writeln!(f, "  rows out of order:    {} (sorted)", q.rows_sorted)?;
            }
        }
        Ok(())
    }
}
