//! What the simulated PZEM-004T modules measure: one [`Trace`] per metered supply,
//! read from a real data set or a load profile.
//!
//! A trace is piecewise constant: each [`Segment`] holds the module's gauges (power,
//! voltage, current, power factor, frequency) over an interval. Two kinds:
//!
//! - [`TraceKind::Power`]: interval data (London, UCI, a profile). The module's energy
//!   counter integrates the power exactly (see `meter_core::sim::SimulatedPzem::advance`),
//!   so the counter's increase over any interval is the data's energy in it, to the Wh
//!   the register counts. Time the data does not cover (a missing or `Null` half hour,
//!   a `?` minute) has no power: the counter stands still there, the data's unknown
//!   energy is not invented.
//! - [`TraceKind::Registers`]: a log of real PZEM readings. The module's registers,
//!   energy counter included, are set to the row in force (the newest row at or before
//!   the instant), so the log's own counter, resets and all, is what the meter reads.
//!
//! Gauges a data set does not carry are derived and said so in [`Source::describe`].

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, BufRead};
use std::path::{Path, PathBuf};

use jiff::civil;
use jiff::tz::TimeZone;
use jiff::Timestamp;

use crate::london::{self, LondonError, Quirks};

/// Nominal supply where a data set has no voltage: 230 V (UK and EU).
pub const NOMINAL_VOLTAGE_DV: u16 = 2_300;
/// Nominal frequency where a data set has none: 50.0 Hz (UK, EU, Vietnam).
pub const NOMINAL_FREQUENCY_DHZ: u16 = 500;

/// Zone of the UCI household (Sceaux, near Paris); its clock is local French time.
pub const UCI_TIME_ZONE: &str = "Europe/Paris";
/// Assumed zone of the PZEM log (its origin is unconfirmed; see shared/data/PROVENANCE.md).
pub const PZEM_LOG_TIME_ZONE: &str = "Asia/Ho_Chi_Minh";

pub const UCI_HEADER: &str =
    "Date;Time;Global_active_power;Global_reactive_power;Voltage;Global_intensity;Sub_metering_1;Sub_metering_2;Sub_metering_3";
pub const PZEM_LOG_HEADER: &str =
    "datetime,port,voltage_v,current_a,power_w,energy_wh,frequency_hz,power_factor,alarm_status";
pub const PROFILE_HEADER: &str = "local_time,power_w";

/// The gauges of a module over `[start_ms, end_ms)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub start_ms: i64,
    pub end_ms: i64,
    pub power_dw: u32,
    pub voltage_dv: u16,
    pub current_ma: u32,
    pub power_factor_hundredths: u16,
    pub frequency_dhz: u16,
    /// The energy register (Wh), for [`TraceKind::Registers`] only.
    pub energy_wh: Option<u32>,
    pub alarm: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraceKind {
    Power,
    Registers,
}

/// One metered supply.
#[derive(Debug, Clone)]
pub struct Trace {
    /// The data set's name for it (`MAC000002`, `ttyUSB0`, ...); device ids derive from it.
    pub name: String,
    pub time_zone: String,
    pub kind: TraceKind,
    /// Ordered, non-overlapping; gaps between them are time without data.
    pub segments: Vec<Segment>,
}

impl Trace {
    pub fn start_ms(&self) -> i64 {
        self.segments.first().map_or(0, |s| s.start_ms)
    }

    pub fn end_ms(&self) -> i64 {
        self.segments.last().map_or(0, |s| s.end_ms)
    }

    /// Index of the segment in force at `at_ms` (the last one starting at or before it),
    /// searching from `from` on.
    pub fn segment_at(&self, at_ms: i64, from: usize) -> Option<usize> {
        let tail = &self.segments[from.min(self.segments.len())..];
        let n = tail.partition_point(|s| s.start_ms <= at_ms);
        (n > 0).then(|| from + n - 1)
    }

    /// Energy of the data in `[from_ms, to_ms)`, in deciwatt-milliseconds (36e6 per Wh).
    /// For a [`TraceKind::Power`] trace.
    pub fn energy_dw_ms(&self, from_ms: i64, to_ms: i64) -> u128 {
        self.segments
            .iter()
            .filter(|s| s.end_ms > from_ms && s.start_ms < to_ms)
            .map(|s| {
                let overlap = s.end_ms.min(to_ms) - s.start_ms.max(from_ms);
                u128::from(s.power_dw) * overlap as u128
            })
            .sum()
    }

    fn shift(&mut self, by_ms: i64) {
        for s in &mut self.segments {
            s.start_ms += by_ms;
            s.end_ms += by_ms;
        }
    }
}

/// The data sets `meter-sim` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// Low Carbon London half-hourly CSV, either layout.
    London,
    /// UCI "Individual household electric power consumption", one-minute rows.
    Uci,
    /// A PZEM-004T v3 log (ac_management's CSV format), one trace per port.
    PzemLog,
    /// A daily load profile: `local_time,power_w` rows, repeated every day.
    Profile,
}

impl SourceKind {
    /// Recognises a file by its header line.
    pub fn detect(path: &Path) -> Result<Self, SourceError> {
        let header = first_line(path)?;
        let header = header.trim_start_matches('\u{feff}').trim();
        Ok(match header {
            london::HEADER_RECUT | london::HEADER_RAW => SourceKind::London,
            UCI_HEADER => SourceKind::Uci,
            PZEM_LOG_HEADER => SourceKind::PzemLog,
            PROFILE_HEADER => SourceKind::Profile,
            other => {
                return Err(SourceError::UnknownFormat { path: path.to_owned(), header: other.to_owned() })
            }
        })
    }

    pub fn natural_interval_ms(self) -> i64 {
        match self {
            SourceKind::London => 30 * 60_000,
            SourceKind::Uci => 60_000,
            SourceKind::PzemLog => 10_000,
            SourceKind::Profile => 15 * 60_000,
        }
    }
}

/// Counts of what a file held that needed a decision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceQuirks {
    pub london: Option<Quirks>,
    /// Data rows read (all sources).
    pub rows: u64,
    /// UCI rows with `?` for every measurement: no power that minute.
    pub unknown_rows: u64,
    /// UCI minutes at the local clock that do not exist or repeat (DST): refused.
    pub rows_sorted: u64,
}

/// The traces of one run and what was found on the way.
#[derive(Debug, Clone)]
pub struct Source {
    pub kind: SourceKind,
    pub traces: Vec<Trace>,
    pub quirks: SourceQuirks,
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot read {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{}: unknown header {header:?} (London, UCI, PZEM log or profile expected)", path.display())]
    UnknownFormat { path: PathBuf, header: String },
    #[error(transparent)]
    London(#[from] LondonError),
    #[error("{}:{line}: {reason}", path.display())]
    Row { path: PathBuf, line: u64, reason: String },
    #[error("a load profile needs --from and --to (it has no dates of its own)")]
    ProfileNeedsRange,
    #[error("{0}")]
    Invalid(String),
}

fn first_line(path: &Path) -> Result<String, SourceError> {
    let file =
        std::fs::File::open(path).map_err(|source| SourceError::Io { path: path.to_owned(), source })?;
    let mut line = String::new();
    io::BufReader::new(file)
        .read_line(&mut line)
        .map_err(|source| SourceError::Io { path: path.to_owned(), source })?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

fn lines(path: &Path) -> Result<impl Iterator<Item = (u64, Result<String, SourceError>)>, SourceError> {
    let file =
        std::fs::File::open(path).map_err(|source| SourceError::Io { path: path.to_owned(), source })?;
    let owned = path.to_owned();
    Ok(io::BufReader::new(file).lines().enumerate().map(move |(i, line)| {
        let line = line
            .map(|l| l.strip_suffix('\r').map(str::to_owned).unwrap_or(l))
            .map_err(|source| SourceError::Io { path: owned.clone(), source });
        (i as u64 + 1, line)
    }))
}

/// Options that shape the traces.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Overrides the data set's time zone.
    pub time_zone: Option<String>,
    /// A profile's range (required for profiles).
    pub from: Option<Timestamp>,
    pub to: Option<Timestamp>,
}

impl Source {
    pub fn load(kind: SourceKind, inputs: &[PathBuf], options: &LoadOptions) -> Result<Self, SourceError> {
        let mut source = match kind {
            SourceKind::London => london_traces(inputs)?,
            SourceKind::Uci => uci_traces(inputs)?,
            SourceKind::PzemLog => pzem_log_traces(inputs)?,
            SourceKind::Profile => profile_traces(inputs, options)?,
        };
        if let Some(zone) = &options.time_zone {
            TimeZone::get(zone).map_err(|e| SourceError::Invalid(format!("time zone {zone:?}: {e}")))?;
            for trace in &mut source.traces {
                trace.time_zone = zone.clone();
            }
        }
        source.traces.retain(|t| !t.segments.is_empty());
        Ok(source)
    }

    /// Moves every trace by the same amount so the earliest starts at `start`
    /// (whole seconds; the traces keep their relative timing).
    pub fn rebase(&mut self, start: Timestamp) {
        let Some(earliest) = self.traces.iter().map(Trace::start_ms).min() else { return };
        let by = start.as_second() * 1_000 - earliest;
        for trace in &mut self.traces {
            trace.shift(by);
        }
    }

    /// What the gauges of this source are made of.
    pub fn describe(&self) -> &'static str {
        match self.kind {
            SourceKind::London => {
                "London half-hours: power = the half hour's energy / 0.5 h; voltage 230.0 V and frequency 50.0 Hz nominal; current = power / voltage; power factor 1.00 (0.00 at no load)"
            }
            SourceKind::Uci => {
                "UCI minutes: power, voltage and current measured; power factor = P / (V x I); frequency 50.0 Hz nominal"
            }
            SourceKind::PzemLog => "PZEM log: every register as logged, energy counter included",
            SourceKind::Profile => {
                "load profile: power as given; voltage 230.0 V and frequency 50.0 Hz nominal; current = power / voltage; power factor 1.00 (0.00 at no load)"
            }
        }
    }
}

/// Gauges of a supply at nominal voltage with unit power factor.
fn nominal(start_ms: i64, end_ms: i64, power_dw: u32) -> Segment {
    // mA = W * 1000 / V = dW * 100 / dV... with dW and dV: (dW / 10) * 1000 / (dV / 10).
    let current_ma =
        (u64::from(power_dw) * 1_000 + u64::from(NOMINAL_VOLTAGE_DV) / 2) / u64::from(NOMINAL_VOLTAGE_DV);
    Segment {
        start_ms,
        end_ms,
        power_dw,
        voltage_dv: NOMINAL_VOLTAGE_DV,
        current_ma: current_ma as u32,
        // At no load a PZEM shows 0.00 (as in the PZEM log's idle rows).
        power_factor_hundredths: if power_dw == 0 { 0 } else { 100 },
        frequency_dhz: NOMINAL_FREQUENCY_DHZ,
        energy_wh: None,
        alarm: false,
    }
}

fn london_traces(inputs: &[PathBuf]) -> Result<Source, SourceError> {
    let dataset = london::load(inputs)?;
    const SLOT_MS: i64 = 1_800_000;
    let traces = dataset
        .meters
        .iter()
        .map(|meter| Trace {
            name: meter.device_id.to_string(),
            time_zone: london::TIME_ZONE.to_owned(),
            kind: TraceKind::Power,
            segments: meter
                .slots
                .iter()
                .filter_map(|slot| {
                    let start = slot.start.as_millisecond();
                    // E Wh in half an hour is an average of 2E W = 20E dW: exact.
                    slot.energy_wh.map(|wh| nominal(start, start + SLOT_MS, wh * 20))
                })
                .collect(),
        })
        .collect();
    let rows = dataset.quirks.data_rows;
    Ok(Source {
        kind: SourceKind::London,
        traces,
        quirks: SourceQuirks { london: Some(dataset.quirks), rows, ..Default::default() },
    })
}

/// `4.216` → 4216 (thousandths), refusing anything but plain decimals with at most 3
/// decimals (the UCI file's form).
fn thousandths(text: &str) -> Result<u64, String> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits(whole) || !digits(fraction) || fraction.len() > 3 {
        return Err(format!("{text:?} is not a decimal with at most 3 decimals"));
    }
    let whole: u64 = whole.parse().map_err(|e| format!("{text:?}: {e}"))?;
    let fraction: u64 = format!("{fraction:0<3}").parse().map_err(|e| format!("{text:?}: {e}"))?;
    Ok(whole * 1_000 + fraction)
}

fn uci_traces(inputs: &[PathBuf]) -> Result<Source, SourceError> {
    let tz = TimeZone::get(UCI_TIME_ZONE).expect("a known zone");
    let mut minutes: BTreeMap<i64, Option<Segment>> = BTreeMap::new();
    let mut quirks = SourceQuirks::default();
    for path in inputs {
        for (line_no, line) in lines(path)? {
            let line = line?;
            if line_no == 1 {
                if line.trim_start_matches('\u{feff}') != UCI_HEADER {
                    return Err(SourceError::UnknownFormat { path: path.clone(), header: line });
                }
                continue;
            }
            if line.trim().is_empty() {
                continue;
            }
            let row = |reason: String| SourceError::Row { path: path.clone(), line: line_no, reason };
            let fields: Vec<&str> = line.split(';').collect();
            if fields.len() != 9 {
                return Err(row(format!("{} fields, 9 expected", fields.len())));
            }
            let civil =
                civil::DateTime::strptime("%d/%m/%Y %H:%M:%S", format!("{} {}", fields[0], fields[1]))
                    .map_err(|e| row(format!("date {:?} {:?}: {e}", fields[0], fields[1])))?;
            // The local clock: a time that does not exist or repeats (DST) would need a
            // guess; this data set has none, and any other is refused.
            let start = match tz.to_ambiguous_zoned(civil) {
                z if z.is_ambiguous() => return Err(row(format!("{civil} is ambiguous in {UCI_TIME_ZONE}"))),
                z => z.unambiguous().map_err(|e| row(e.to_string()))?.timestamp().as_millisecond(),
            };
            quirks.rows += 1;
            let segment = if fields[2..8].iter().all(|f| *f == "?") {
                quirks.unknown_rows += 1;
                None
            } else {
                let power_w_thousandths = thousandths(fields[2]).map_err(&row)?; // kW with 3 decimals = W
                let voltage_mv = thousandths(fields[4]).map_err(&row)?;
                let current_ma = thousandths(fields[5]).map_err(&row)?;
                let power_dw =
                    u32::try_from(power_w_thousandths * 10).map_err(|_| row("power too large".into()))?;
                let voltage_dv =
                    u16::try_from((voltage_mv + 50) / 100).map_err(|_| row("voltage too large".into()))?;
                // P / (V I), in hundredths, at most 1.00.
                let va = voltage_mv as u128 * current_ma as u128; // µVA
                let pf = (power_w_thousandths as u128 * 1_000_000 * 100 + va / 2)
                    .checked_div(va)
                    .map_or(100, |pf| pf.min(100) as u16);
                Some(Segment {
                    start_ms: start,
                    end_ms: start + 60_000,
                    power_dw,
                    voltage_dv,
                    current_ma: current_ma as u32,
                    power_factor_hundredths: pf,
                    frequency_dhz: NOMINAL_FREQUENCY_DHZ,
                    energy_wh: None,
                    alarm: false,
                })
            };
            if minutes.insert(start, segment).is_some() {
                return Err(row(format!("a second row for {civil}")));
            }
        }
    }
    let segments = minutes.into_values().flatten().collect();
    Ok(Source {
        kind: SourceKind::Uci,
        traces: vec![Trace {
            name: "uci-sceaux".to_owned(),
            time_zone: UCI_TIME_ZONE.to_owned(),
            kind: TraceKind::Power,
            segments,
        }],
        quirks,
    })
}

/// `2.0` → 2, refusing a fractional Wh (the register counts whole Wh).
fn whole(text: &str) -> Result<u32, String> {
    let (int, fraction) = text.split_once('.').unwrap_or((text, ""));
    if !fraction.bytes().all(|b| b == b'0') {
        return Err(format!("{text:?} is not a whole number"));
    }
    int.parse().map_err(|e| format!("{text:?}: {e}"))
}

/// `214.8` with `decimals` 1 → 2148.
fn fixed(text: &str, decimals: usize) -> Result<u32, String> {
    let (int, fraction) = text.split_once('.').unwrap_or((text, ""));
    if fraction.len() > decimals || !int.bytes().all(|b| b.is_ascii_digit()) || int.is_empty() {
        return Err(format!("{text:?} is not a decimal with at most {decimals} decimals"));
    }
    let int: u32 = int.parse().map_err(|e| format!("{text:?}: {e}"))?;
    let fraction: u32 = format!("{fraction:0<decimals$}").parse().map_err(|e| format!("{text:?}: {e}"))?;
    Ok(int * 10u32.pow(decimals as u32) + fraction)
}

fn pzem_log_traces(inputs: &[PathBuf]) -> Result<Source, SourceError> {
    let tz = TimeZone::get(PZEM_LOG_TIME_ZONE).expect("a known zone");
    let mut ports: BTreeMap<String, BTreeMap<i64, Segment>> = BTreeMap::new();
    let mut quirks = SourceQuirks::default();
    for path in inputs {
        let mut latest: BTreeMap<String, i64> = BTreeMap::new();
        for (line_no, line) in lines(path)? {
            let line = line?;
            if line_no == 1 {
                if line.trim_start_matches('\u{feff}') != PZEM_LOG_HEADER {
                    return Err(SourceError::UnknownFormat { path: path.clone(), header: line });
                }
                continue;
            }
            if line.trim().is_empty() {
                continue;
            }
            let row = |reason: String| SourceError::Row { path: path.clone(), line: line_no, reason };
            let f: Vec<&str> = line.split(',').map(str::trim).collect();
            if f.len() != 9 {
                return Err(row(format!("{} fields, 9 expected", f.len())));
            }
            let civil: civil::DateTime =
                f[0].parse().map_err(|e| row(format!("datetime {:?}: {e}", f[0])))?;
            let at = tz.to_ambiguous_zoned(civil).compatible().map_err(|e| row(e.to_string()))?;
            let at = at.timestamp().as_millisecond();
            let port = f[1].rsplit('/').next().unwrap_or(f[1]).to_owned();
            let alarm = match f[8] {
                "OFF" => false,
                "ON" => true,
                other => return Err(row(format!("alarm_status {other:?} is neither ON nor OFF"))),
            };
            let segment = Segment {
                start_ms: at,
                end_ms: at,
                voltage_dv: fixed(f[2], 1).map_err(&row)? as u16,
                current_ma: fixed(f[3], 3).map_err(&row)?,
                power_dw: fixed(f[4], 1).map_err(&row)?,
                energy_wh: Some(whole(f[5]).map_err(&row)?),
                frequency_dhz: fixed(f[6], 1).map_err(&row)? as u16,
                power_factor_hundredths: fixed(f[7], 2).map_err(&row)? as u16,
                alarm,
            };
            quirks.rows += 1;
            let previous = latest.insert(port.clone(), at);
            if previous.is_some_and(|p| p > at) {
                quirks.rows_sorted += 1;
            }
            if ports.entry(port).or_default().insert(at, segment).is_some() {
                return Err(row("a second row for the same port and second".into()));
            }
        }
    }
    let traces = ports
        .into_iter()
        .map(|(port, rows)| {
            let mut segments: Vec<Segment> = rows.into_values().collect();
            // Each row holds until the next; the last one for one sampling step (7 s).
            for i in 0..segments.len() {
                segments[i].end_ms = segments.get(i + 1).map_or(segments[i].start_ms + 7_000, |n| n.start_ms);
            }
            Trace {
                name: port,
                time_zone: PZEM_LOG_TIME_ZONE.to_owned(),
                kind: TraceKind::Registers,
                segments,
            }
        })
        .collect();
    Ok(Source { kind: SourceKind::PzemLog, traces, quirks })
}

fn profile_traces(inputs: &[PathBuf], options: &LoadOptions) -> Result<Source, SourceError> {
    let (Some(from), Some(to)) = (options.from, options.to) else {
        return Err(SourceError::ProfileNeedsRange);
    };
    let zone = options.time_zone.clone().unwrap_or_else(|| "UTC".to_owned());
    let tz = TimeZone::get(&zone).map_err(|e| SourceError::Invalid(format!("time zone {zone:?}: {e}")))?;
    let mut quirks = SourceQuirks::default();
    let mut traces = Vec::new();
    for path in inputs {
        let mut points: BTreeMap<civil::Time, u32> = BTreeMap::new();
        for (line_no, line) in lines(path)? {
            let line = line?;
            if line_no == 1 || line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let row = |reason: String| SourceError::Row { path: path.clone(), line: line_no, reason };
            let (time, watts) =
                line.split_once(',').ok_or_else(|| row("expected local_time,power_w".into()))?;
            let time: civil::Time =
                time.trim().parse().map_err(|e| row(format!("local_time {time:?}: {e}")))?;
            let power_dw = fixed(watts.trim(), 1).map_err(&row)?;
            quirks.rows += 1;
            points.insert(time, power_dw);
        }
        if points.is_empty() {
            return Err(SourceError::Invalid(format!("{}: the profile has no rows", path.display())));
        }
        // Walk the local days from `from` to `to`, one segment per profile step.
        let mut segments = Vec::new();
        let mut day = from.to_zoned(tz.clone()).date();
        let last_day = to.to_zoned(tz.clone()).date();
        let (from_ms, to_ms) = (from.as_millisecond(), to.as_millisecond());
        let at = |date: civil::Date, time: civil::Time| -> Result<i64, SourceError> {
            let zoned = date
                .to_datetime(time)
                .to_zoned(tz.clone())
                .map_err(|e| SourceError::Invalid(e.to_string()))?;
            Ok(zoned.timestamp().as_millisecond())
        };
        let steps: Vec<(civil::Time, u32)> = points.into_iter().collect();
        while day <= last_day {
            let next_day = day.tomorrow().map_err(|e| SourceError::Invalid(e.to_string()))?;
            for (i, (time, power_dw)) in steps.iter().enumerate() {
                let start = at(day, *time)?;
                let end = match steps.get(i + 1) {
                    Some((next, _)) => at(day, *next)?,
                    None => at(next_day, steps[0].0)?,
                };
                let (start, end) = (start.max(from_ms), end.min(to_ms));
                if start < end {
                    segments.push(nominal(start, end, *power_dw));
                }
            }
            day = next_day;
        }
        if let Some((time, _)) = steps.first().filter(|(t, _)| *t != civil::Time::midnight()) {
            // Before the first step of the first day the last step of the day before runs.
            let start = from_ms;
            let end = at(from.to_zoned(tz.clone()).date(), *time)?.min(to_ms);
            if start < end {
                segments.insert(0, nominal(start, end, steps.last().expect("not empty").1));
            }
        }
        segments.sort_by_key(|s| s.start_ms);
        let name = path.file_stem().map_or("profile".into(), |s| s.to_string_lossy().into_owned());
        traces.push(Trace { name, time_zone: zone.clone(), kind: TraceKind::Power, segments });
    }
    Ok(Source { kind: SourceKind::Profile, traces, quirks })
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SourceKind::London => "london",
            SourceKind::Uci => "uci",
            SourceKind::PzemLog => "pzem-log",
            SourceKind::Profile => "profile",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_parse_exactly() {
        assert_eq!(thousandths("4.216"), Ok(4_216));
        assert_eq!(thousandths("234.84"), Ok(234_840));
        assert_eq!(thousandths("18"), Ok(18_000));
        assert!(thousandths("1.2345").is_err());
        assert!(thousandths("?").is_err());
        assert!(thousandths("-1").is_err());
        assert_eq!(fixed("214.8", 1), Ok(2_148));
        assert_eq!(fixed("0.032", 3), Ok(32));
        assert_eq!(fixed("50", 1), Ok(500));
        assert!(fixed("0.0321", 3).is_err());
        assert_eq!(whole("20.0"), Ok(20));
        assert!(whole("2.5").is_err());
    }

    #[test]
    fn nominal_gauges() {
        let s = nominal(0, 1, 4_380); // 438.0 W
        assert_eq!((s.voltage_dv, s.current_ma, s.power_factor_hundredths), (2_300, 1_904, 100));
    }

    #[test]
    fn segment_lookup_and_energy() {
        let trace = Trace {
            name: "t".into(),
            time_zone: "UTC".into(),
            kind: TraceKind::Power,
            segments: vec![nominal(0, 1_000, 10), nominal(2_000, 3_000, 20)],
        };
        assert_eq!(trace.segment_at(-1, 0), None);
        assert_eq!(trace.segment_at(0, 0), Some(0));
        assert_eq!(trace.segment_at(1_500, 0), Some(0));
        assert_eq!(trace.segment_at(2_000, 0), Some(1));
        assert_eq!(trace.segment_at(9_000, 1), Some(1));
        assert_eq!(trace.energy_dw_ms(500, 2_500), 10 * 500 + 20 * 500);
    }
}
