//! `meter-sim`: many smart meters on one host, each running the firmware's own core
//! (`meter-core`) against a simulated PZEM-004T, driven by a real data set.
//!
//! ```text
//! source (data set → traces) → device: SimulatedPzem ⇄ Modbus driver → Meter (outbox,
//!   payload, back-off) → transport (MQTT pool, dedicated connections, or a file)
//!   fleet: data time, pacing, acknowledgements, faults, report
//! ```
//!
//! - [`source`]: London, UCI, PZEM log, load profile → one trace per metered supply.
//! - [`device`]: one simulated meter (the firmware's code path on a host).
//! - [`faults`]: the field's failures, each switched on by a flag.
//! - [`transport`]: how the meters reach the broker, and the PUBACKs back to them.
//! - [`fleet`]: the run in data time, its pacing and its [`Report`].
//! - [`london`]: the Low Carbon London loader (every quirk counted).
//! - [`counter`], [`payload`], [`publish`]: London half-hours as cumulative-counter
//!   telemetry without a meter in between, for tests of other crates that need the
//!   same readings fast (query-api). `meter-sim` itself always runs the meters.

pub mod counter;
pub mod device;
pub mod faults;
pub mod fleet;
pub mod london;
pub mod payload;
pub mod publish;
pub mod source;
pub mod transport;

use std::path::PathBuf;
use std::time::Duration;

use jiff::{civil, tz::TimeZone, Timestamp};
use tokio_util::sync::CancellationToken;

pub use fleet::Report;

use crate::device::MeterSettings;
use crate::faults::FaultConfig;
use crate::fleet::{Plan, Run, OUTBOX_CAPACITIES};
use crate::source::{LoadOptions, Source, SourceError, SourceKind};
use crate::transport::{Connections, MqttSettings, Transport};

#[derive(Debug, Clone)]
pub enum Output {
    Mqtt {
        settings: MqttSettings,
        connections: Connections,
    },
    /// Telemetry payloads to this file, one per line, instead of publishing.
    DryRun(PathBuf),
}

/// Where the replay starts in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    Now,
    At(Timestamp),
}

#[derive(Debug, Clone)]
pub struct Config {
    /// `None`: recognised by the first file's header.
    pub source: Option<SourceKind>,
    pub inputs: Vec<PathBuf>,
    /// Time between readings; default: the data's own step (30 min London, 1 min UCI,
    /// 10 s PZEM log, 15 min profile).
    pub interval: Option<Duration>,
    /// London only, kept from the first replayer: readings per half hour.
    pub points_per_slot: Option<u32>,
    /// Data time per wall time; 0 = as fast as the broker acknowledges.
    pub speedup: f64,
    /// Simulate this many meters, the data's supplies repeated in turn.
    pub meters: Option<usize>,
    /// Use only the first N supplies of the data (by name).
    pub limit_meters: Option<usize>,
    /// Use only these supplies of the data, by name (e.g. `MAC000002`); empty: all.
    pub select: Vec<String>,
    pub device_prefix: String,
    /// Readings from (inclusive), in the data's own time.
    pub from: Option<Timestamp>,
    /// Readings until (inclusive), in the data's own time.
    pub to: Option<Timestamp>,
    /// Moves the data in time so its (cut) start is here.
    pub start_at: Option<StartAt>,
    pub time_zone: Option<String>,
    /// Readings each meter keeps while offline (one of [`OUTBOX_CAPACITIES`]).
    pub outbox: usize,
    pub faults: FaultConfig,
    pub seed: u64,
    pub output: Output,
    /// How long to wait for overdue acknowledgements (at the end, and in a step).
    pub ack_timeout: Duration,
    pub progress: bool,
}

impl Config {
    /// A dry run of `inputs` with the defaults of the command line.
    pub fn dry_run(inputs: Vec<PathBuf>, out: PathBuf) -> Self {
        Self {
            source: None,
            inputs,
            interval: None,
            points_per_slot: None,
            speedup: 0.0,
            meters: None,
            limit_meters: None,
            select: Vec::new(),
            device_prefix: String::new(),
            from: None,
            to: None,
            start_at: None,
            time_zone: None,
            outbox: 720,
            faults: FaultConfig::default(),
            seed: 1,
            output: Output::DryRun(out),
            ack_timeout: Duration::from_secs(30),
            progress: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Broker(String),
    #[error("{0}")]
    Output(String),
}

/// RFC 3339, or a UTC date or date-time such as `2013-01-15` or `2013-01-15 06:00`.
pub fn parse_time(text: &str) -> Result<Timestamp, String> {
    if let Ok(t) = text.parse::<Timestamp>() {
        return Ok(t);
    }
    let civil = text
        .parse::<civil::DateTime>()
        .or_else(|_| text.parse::<civil::Date>().map(|d| d.to_datetime(civil::Time::midnight())))
        .map_err(|_| format!("{text:?} is neither RFC 3339 nor a date or date-time (read as UTC)"))?;
    civil.to_zoned(TimeZone::UTC).map(|z| z.timestamp()).map_err(|e| e.to_string())
}

/// The source, cut and moved in time as configured, and the meters to run on it.
pub fn plan(config: &Config) -> Result<(Source, Vec<Plan>, i64), Error> {
    let first = config.inputs.first().ok_or_else(|| Error::Invalid("no input file".into()))?;
    let kind = match config.source {
        Some(kind) => kind,
        None => SourceKind::detect(first)?,
    };
    let options = LoadOptions { time_zone: config.time_zone.clone(), from: config.from, to: config.to };
    let mut source = Source::load(kind, &config.inputs, &options)?;
    if !config.select.is_empty() {
        if let Some(missing) =
            config.select.iter().find(|name| !source.traces.iter().any(|t| &t.name == *name))
        {
            return Err(Error::Invalid(format!("the data has no meter {missing:?}")));
        }
        source.traces.retain(|t| config.select.contains(&t.name));
    }
    if let Some(limit) = config.limit_meters {
        source.traces.truncate(limit);
    }
    if source.traces.is_empty() {
        return Err(Error::Invalid("the data holds no meter".into()));
    }
    let interval_ms = match (config.interval, config.points_per_slot) {
        (Some(interval), _) => interval.as_millis() as i64,
        (None, Some(points)) if kind == SourceKind::London => {
            counter::check_points_per_slot(points).map_err(|e| Error::Invalid(e.to_string()))?;
            kind.natural_interval_ms() / i64::from(points)
        }
        (None, Some(_)) => {
            return Err(Error::Invalid("--points-per-slot is for London data; use --interval".into()))
        }
        (None, None) => kind.natural_interval_ms(),
    };
    if interval_ms < 1_000 {
        return Err(Error::Invalid("the interval is at least 1 s".into()));
    }

    // The cut, in the data's own time.
    let window = |t: &source::Trace| {
        let start = config.from.map_or(t.start_ms(), |f| t.start_ms().max(f.as_millisecond()));
        let end = config.to.map_or(t.end_ms(), |to| t.end_ms().min(to.as_millisecond()));
        (start, end)
    };
    let earliest = source.traces.iter().map(|t| window(t).0).min().expect("not empty");
    let shift_ms = match config.start_at {
        None => 0,
        Some(StartAt::Now) => Timestamp::now().as_second() * 1_000 - earliest,
        Some(StartAt::At(t)) => t.as_millisecond() - earliest,
    };
    let windows: Vec<(i64, i64)> = source.traces.iter().map(window).collect();
    if shift_ms != 0 {
        source.rebase(
            Timestamp::from_millisecond(earliest + shift_ms).map_err(|e| Error::Invalid(e.to_string()))?,
        );
    }

    let count = config.meters.unwrap_or(source.traces.len());
    let connections = match &config.output {
        Output::Mqtt { connections, .. } => *connections,
        Output::DryRun(_) => Connections::Pool(1),
    };
    let mut plans = Vec::with_capacity(count);
    for i in 0..count {
        let trace = i % source.traces.len();
        let replica = i / source.traces.len();
        let name = &source.traces[trace].name;
        let id = if replica == 0 {
            format!("{}{name}", config.device_prefix)
        } else {
            format!("{}{name}-r{replica}", config.device_prefix)
        };
        let device_id =
            meter_core::DeviceId::parse(&id).map_err(|e| Error::Invalid(format!("device id {id:?}: {e}")))?;
        let (start, end) = windows[trace];
        if start > end {
            continue;
        }
        let conn = match connections {
            Connections::Pool(n) => (plans.len() as u32) % n.max(1),
            Connections::Dedicated => plans.len() as u32,
        };
        plans.push(Plan {
            device_id,
            trace: trace as u32,
            conn,
            start_ms: start + shift_ms,
            end_ms: end + shift_ms,
        });
    }
    if plans.is_empty() {
        return Err(Error::Invalid("no meter has data in the chosen time range".into()));
    }
    Ok((source, plans, interval_ms))
}

/// Runs the simulation until it is done or `cancel` fires (then it stops, waits for the
/// acknowledgements of what it sent, and reports `interrupted`).
pub async fn run(config: &Config, cancel: CancellationToken) -> Result<Report, Error> {
    if !OUTBOX_CAPACITIES.contains(&config.outbox) {
        return Err(Error::Invalid(format!("--outbox must be one of {OUTBOX_CAPACITIES:?}")));
    }
    let (source, plans, interval_ms) = plan(config)?;
    let start_ms = plans.iter().map(|p| p.start_ms).min().expect("plans are not empty");
    let settings = MeterSettings { interval_ms, faults: config.faults.resolve(start_ms), seed: config.seed };
    let (transport, connections) = match &config.output {
        Output::DryRun(path) => (Transport::file(path).map_err(Error::Output)?, None),
        Output::Mqtt { settings: mqtt, connections } => {
            let wills: Vec<_> = plans.iter().map(|p| fleet::will_of(&p.device_id)).collect();
            let ids: Vec<String> = plans.iter().map(|p| p.device_id.to_string()).collect();
            let transport = Transport::mqtt(mqtt, *connections, &wills, &ids).await.map_err(Error::Broker)?;
            (transport, Some(*connections))
        }
    };
    let run = Run {
        source: &source,
        plans,
        settings,
        speedup: config.speedup,
        live: config.speedup == 1.0 && config.start_at.is_some(),
        ack_timeout: config.ack_timeout,
        progress: config.progress,
        connections,
        faults: config.faults.clone(),
    };
    macro_rules! with_outbox {
        ($($n:literal),*) => {
            match config.outbox {
                $($n => fleet::simulate::<$n>(run, transport, cancel).await,)*
                other => Err(Error::Invalid(format!("outbox {other} is not one of {OUTBOX_CAPACITIES:?}"))),
            }
        };
    }
    with_outbox!(4, 8, 16, 32, 64, 128, 256, 512, 720, 1024, 2048, 4096)
}
