//! Low Carbon London smart-meter extracts (`/work/shared/data/lcl_*.csv`) → one series of
//! half-hour slots per household.
//!
//! Both layouts are read: the Kaggle re-cut (`LCLid,tstp,energy(kWh/hh)`) and the
//! London Datastore raw layout (`LCLid,DateTime,KWH/hh (per half hour)`, timestamps with
//! seven fractional-second digits). Each household is one meter; its device id is the
//! `LCLid`. Timestamps are UTC all year (both 2013 DST days have 48 slots) and mark the
//! START of the half hour whose energy the row carries. The households are in
//! [`TIME_ZONE`].
//!
//! Every quirk of the files is handled deliberately and counted in [`Quirks`]; nothing
//! is skipped silently, and nothing is guessed:
//!
//! | quirk | handling |
//! | --- | --- |
//! | repeated header lines (concatenated files) | ignored, counted |
//! | values padded with spaces (`, 0.219 `) | stripped, counted |
//! | float32 renderings (`1.0779999` for 1.078) | rounded to the whole Wh, counted; a value off the Wh grid by more than float32 noise is an error |
//! | exact duplicate rows (same meter, time, value) | kept once, counted |
//! | same meter and time, different value | error listing every conflict |
//! | `Null` values | the slot's energy is unknown: no reading at its end, counted |
//! | timestamps off the half-hour grid | a `Null` there is counted and reported; a value there is an error |
//! | missing slots (gaps) | no reading, counted per run of slots |
//! | zero values | real readings, counted |
//! | rows out of time order per meter | sorted, counted |
//! | blank lines | ignored, counted |

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::{self, BufRead};
use std::path::{Path, PathBuf};

use jiff::{civil, tz::TimeZone, Timestamp};
use smartmeter_core::DeviceId;

use crate::counter::{Slot, SLOT_SECONDS};

/// IANA time zone of every Low Carbon London household (register the meters with it).
pub const TIME_ZONE: &str = "Europe/London";

/// Header of the Kaggle "Smart meters in London" re-cut.
pub const HEADER_RECUT: &str = "LCLid,tstp,energy(kWh/hh)";
/// Header of the London Datastore raw extract (3 of its 6 columns kept).
pub const HEADER_RAW: &str = "LCLid,DateTime,KWH/hh (per half hour)";

/// The value the files use for "no reading".
const NULL_VALUE: &str = "Null";
/// A value this close to a whole Wh (1e-6 kWh = 1 mWh) is a float32 rendering of it:
/// float32 carries ~7 significant digits, so for any half-hour energy below 16 kWh
/// its noise is under 1e-6 kWh. Measured on the files: every 7-decimal value equals
/// `%.8g` of the float32 nearest to a 3-decimal value.
const FLOAT32_NOISE_NANO_KWH: u64 = 1_000;
const NANO_KWH_PER_WH: u64 = 1_000_000;

/// A line of an input file (1-based, counting the header).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: PathBuf,
    pub line: u64,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// One row the summary names individually (a duplicate, a `Null`, an off-grid time).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowRef {
    pub at: Location,
    pub device_id: DeviceId,
    pub timestamp: Timestamp,
}

/// A run of consecutive half hours with no row at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    pub device_id: DeviceId,
    /// Start of the first missing slot.
    pub from: Timestamp,
    pub missing_slots: u64,
}

/// Same meter, same time, different values: the data contradicts itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub device_id: DeviceId,
    pub timestamp: Timestamp,
    pub first: (Location, String),
    pub second: (Location, String),
}

/// What was found in the files. Row-level counts are over data rows (headers and
/// blank lines excluded); `zero_values` counts unique slots.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Quirks {
    pub files: u64,
    pub data_rows: u64,
    pub repeated_headers: u64,
    pub blank_lines: u64,
    pub padded_values: u64,
    /// Values like `1.0779999`, rounded to the whole Wh they render (`1.078`).
    pub float32_values: u64,
    pub exact_duplicates: u64,
    /// `Null` rows (on or off the grid), duplicates excluded.
    pub nulls: u64,
    pub off_grid: u64,
    /// Rows whose time is earlier than an earlier row's of the same meter.
    pub out_of_order_rows: u64,
    /// Half-hour slots with no row at all between a meter's first and last slot.
    pub missing_slots: u64,
    pub zero_values: u64,
    pub duplicate_rows: Vec<RowRef>,
    pub null_rows: Vec<RowRef>,
    pub off_grid_rows: Vec<RowRef>,
    pub gaps: Vec<Gap>,
}

#[derive(Debug, thiserror::Error)]
pub enum LondonError {
    #[error("cannot read {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{}: the file is empty (no header line)", path.display())]
    Empty { path: PathBuf },
    #[error("{at}: unknown header {found:?}; expected {HEADER_RECUT:?} or {HEADER_RAW:?}")]
    UnknownHeader { at: Location, found: String },
    #[error("{at}: {reason} (line {text:?})")]
    Malformed { at: Location, reason: String, text: String },
    #[error("{at}: {device_id} has the value {value:?} at {timestamp}, which is not on the half-hour grid; refusing to guess its slot")]
    OffGridValue { at: Location, device_id: DeviceId, timestamp: Timestamp, value: String },
    #[error("{} rows contradict an earlier row for the same meter and time (first: {})", .0.len(), describe_conflict(&.0[0]))]
    Conflicts(Vec<Conflict>),
}

fn describe_conflict(c: &Conflict) -> String {
    format!(
        "{} at {}: {:?} at {} vs {:?} at {}",
        c.device_id, c.timestamp, c.first.1, c.first.0, c.second.1, c.second.0
    )
}

/// One household: its slots in time order, with `None` energy for `Null` slots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meter {
    pub device_id: DeviceId,
    pub slots: Vec<Slot>,
}

impl Meter {
    /// Sum of the known slot energies, in Wh.
    pub fn total_wh(&self) -> u64 {
        self.slots.iter().filter_map(|s| s.energy_wh).map(u64::from).sum()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dataset {
    /// Ordered by device id.
    pub meters: Vec<Meter>,
    pub quirks: Quirks,
}

/// A parsed value: the energy of the half hour, or unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Value {
    Null,
    Wh { wh: u32, float32: bool },
}

struct Entry {
    value: Value,
    text: String,
    at: Location,
}

/// Reads any number of London files into one data set (a meter may span files).
#[derive(Default)]
pub struct Loader {
    meters: HashMap<DeviceId, BTreeMap<Timestamp, Entry>>,
    latest: HashMap<DeviceId, Timestamp>,
    quirks: Quirks,
    conflicts: Vec<Conflict>,
}

/// Reads the files into one data set.
pub fn load<P: AsRef<Path>>(paths: &[P]) -> Result<Dataset, LondonError> {
    let mut loader = Loader::default();
    for path in paths {
        loader.add_file(path.as_ref())?;
    }
    loader.finish()
}

impl Loader {
    pub fn add_file(&mut self, path: &Path) -> Result<(), LondonError> {
        let file =
            std::fs::File::open(path).map_err(|source| LondonError::Io { path: path.to_owned(), source })?;
        self.add_reader(path, io::BufReader::new(file))
    }

    /// Reads one file's content; `name` is used in locations.
    pub fn add_reader(&mut self, name: &Path, reader: impl BufRead) -> Result<(), LondonError> {
        self.quirks.files += 1;
        let mut header: Option<String> = None;
        for (index, line) in reader.lines().enumerate() {
            let line = line.map_err(|source| LondonError::Io { path: name.to_owned(), source })?;
            let line = line.strip_suffix('\r').unwrap_or(&line);
            let at = Location { file: name.to_owned(), line: index as u64 + 1 };
            let Some(header) = header.as_deref() else {
                let found = line.trim_start_matches('\u{feff}').trim();
                if found != HEADER_RECUT && found != HEADER_RAW {
                    return Err(LondonError::UnknownHeader { at, found: found.to_owned() });
                }
                header = Some(found.to_owned());
                continue;
            };
            if line.trim().is_empty() {
                self.quirks.blank_lines += 1;
            } else if line.trim() == header {
                self.quirks.repeated_headers += 1;
            } else {
                self.add_row(at, line)?;
            }
        }
        if header.is_none() {
            return Err(LondonError::Empty { path: name.to_owned() });
        }
        Ok(())
    }

    fn add_row(&mut self, at: Location, line: &str) -> Result<(), LondonError> {
        let malformed =
            |at: Location, reason: String| LondonError::Malformed { at, reason, text: line.to_owned() };
        let fields: Vec<&str> = line.split(',').collect();
        let [id, time, raw_value] = fields[..] else {
            return Err(malformed(at, format!("expected 3 comma-separated fields, found {}", fields.len())));
        };
        let device_id =
            DeviceId::parse(id.trim()).map_err(|e| malformed(at.clone(), format!("bad LCLid: {e}")))?;
        let timestamp = parse_time(time.trim()).map_err(|e| malformed(at.clone(), e))?;
        let text = raw_value.trim();
        let value = parse_value(text).map_err(|e| malformed(at.clone(), e))?;

        self.quirks.data_rows += 1;
        if text.len() != raw_value.len() {
            self.quirks.padded_values += 1;
        }
        if let Value::Wh { float32: true, .. } = value {
            self.quirks.float32_values += 1;
        }
        let latest = self.latest.entry(device_id.clone()).or_insert(timestamp);
        if timestamp < *latest {
            self.quirks.out_of_order_rows += 1;
        } else {
            *latest = timestamp;
        }

        let series = self.meters.entry(device_id.clone()).or_default();
        if let Some(earlier) = series.get(&timestamp) {
            if earlier.value == value || same_energy(earlier.value, value) {
                self.quirks.exact_duplicates += 1;
                self.quirks.duplicate_rows.push(RowRef { at, device_id, timestamp });
            } else {
                self.conflicts.push(Conflict {
                    device_id,
                    timestamp,
                    first: (earlier.at.clone(), earlier.text.clone()),
                    second: (at, text.to_owned()),
                });
            }
            return Ok(());
        }

        let on_grid = timestamp.subsec_nanosecond() == 0 && timestamp.as_second() % SLOT_SECONDS == 0;
        if !on_grid {
            if value != Value::Null {
                return Err(LondonError::OffGridValue { at, device_id, timestamp, value: text.to_owned() });
            }
            self.quirks.off_grid += 1;
            self.quirks.off_grid_rows.push(RowRef {
                at: at.clone(),
                device_id: device_id.clone(),
                timestamp,
            });
        }
        if value == Value::Null {
            self.quirks.nulls += 1;
            self.quirks.null_rows.push(RowRef { at: at.clone(), device_id: device_id.clone(), timestamp });
        }
        // Off-grid rows are remembered so that a repeat of them is recognised as a
        // duplicate, but they never become slots.
        series.insert(timestamp, Entry { value, text: text.to_owned(), at });
        Ok(())
    }

    pub fn finish(mut self) -> Result<Dataset, LondonError> {
        if !self.conflicts.is_empty() {
            return Err(LondonError::Conflicts(self.conflicts));
        }
        let mut ids: Vec<DeviceId> = self.meters.keys().cloned().collect();
        ids.sort();
        let mut meters = Vec::with_capacity(ids.len());
        for device_id in ids {
            let series = self.meters.remove(&device_id).expect("key listed above");
            let slots: Vec<Slot> = series
                .into_iter()
                .filter(|(t, _)| t.subsec_nanosecond() == 0 && t.as_second() % SLOT_SECONDS == 0)
                .map(|(start, entry)| Slot {
                    start,
                    energy_wh: match entry.value {
                        Value::Null => None,
                        Value::Wh { wh, .. } => Some(wh),
                    },
                })
                .collect();
            self.quirks.zero_values += slots.iter().filter(|s| s.energy_wh == Some(0)).count() as u64;
            for pair in slots.windows(2) {
                let step = pair[1].start.as_second() - pair[0].start.as_second();
                let missing = (step / SLOT_SECONDS - 1) as u64;
                if missing > 0 {
                    self.quirks.missing_slots += missing;
                    self.quirks.gaps.push(Gap {
                        device_id: device_id.clone(),
                        from: Timestamp::from_second(pair[0].start.as_second() + SLOT_SECONDS)
                            .expect("within the data's range"),
                        missing_slots: missing,
                    });
                }
            }
            meters.push(Meter { device_id, slots });
        }
        Ok(Dataset { meters, quirks: self.quirks })
    }
}

fn same_energy(a: Value, b: Value) -> bool {
    match (a, b) {
        (Value::Wh { wh: x, .. }, Value::Wh { wh: y, .. }) => x == y,
        (Value::Null, Value::Null) => true,
        _ => false,
    }
}

/// `2013-01-01 00:30:00` or `2012-10-12 00:30:00.0000000`, read as UTC.
fn parse_time(text: &str) -> Result<Timestamp, String> {
    let civil: civil::DateTime = text.parse().map_err(|e| format!("bad timestamp {text:?}: {e}"))?;
    civil
        .to_zoned(TimeZone::UTC)
        .map(|z| z.timestamp())
        .map_err(|e| format!("timestamp {text:?} out of range: {e}"))
}

/// A stripped value: `Null`, or non-negative kWh with up to 9 decimals that is a whole
/// Wh up to float32 noise.
fn parse_value(text: &str) -> Result<Value, String> {
    if text == NULL_VALUE {
        return Ok(Value::Null);
    }
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !(digits(whole) || (whole.is_empty() && digits(fraction)))
        || !(fraction.is_empty() || digits(fraction))
    {
        return Err(format!("value {text:?} is neither a non-negative decimal kWh nor {NULL_VALUE:?}"));
    }
    if fraction.len() > 9 || whole.len() > 6 {
        return Err(format!("value {text:?} has more digits than a half-hour energy can"));
    }
    let whole: u64 = if whole.is_empty() { 0 } else { whole.parse().expect("checked digits") };
    let fraction_nano: u64 = format!("{fraction:0<9}").parse().expect("checked digits");
    let nano_kwh = whole * 1_000_000_000 + fraction_nano;
    let wh = (nano_kwh + NANO_KWH_PER_WH / 2) / NANO_KWH_PER_WH;
    let residue = nano_kwh.abs_diff(wh * NANO_KWH_PER_WH);
    if residue > FLOAT32_NOISE_NANO_KWH {
        return Err(format!(
            "value {text:?} is not a whole Wh and not a float32 rendering of one; refusing to guess"
        ));
    }
    let wh = u32::try_from(wh).map_err(|_| format!("value {text:?} is too large"))?;
    Ok(Value::Wh { wh, float32: residue != 0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_text(text: &str) -> Result<Dataset, LondonError> {
        let mut loader = Loader::default();
        loader.add_reader(Path::new("test.csv"), text.as_bytes())?;
        loader.finish()
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn values_are_whole_wh_after_stripping() {
        assert_eq!(parse_value("0.219"), Ok(Value::Wh { wh: 219, float32: false }));
        assert_eq!(parse_value("0"), Ok(Value::Wh { wh: 0, float32: false }));
        assert_eq!(parse_value("1.2"), Ok(Value::Wh { wh: 1200, float32: false }));
        assert_eq!(parse_value("4.974"), Ok(Value::Wh { wh: 4974, float32: false }));
        assert_eq!(parse_value(".5"), Ok(Value::Wh { wh: 500, float32: false }));
        assert_eq!(parse_value("Null"), Ok(Value::Null));
    }

    #[test]
    fn float32_renderings_round_to_their_wh() {
        assert_eq!(parse_value("1.0779999"), Ok(Value::Wh { wh: 1078, float32: true }));
        assert_eq!(parse_value("1.2410001"), Ok(Value::Wh { wh: 1241, float32: true }));
        assert_eq!(parse_value("2.0000000"), Ok(Value::Wh { wh: 2000, float32: false }));
    }

    #[test]
    fn sub_wh_values_and_junk_are_refused() {
        for bad in ["0.2195", "1.07799", "-0.1", "", "null", "NaN", "1e3", "0.1.2", "1,5", "."] {
            assert!(parse_value(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn both_timestamp_layouts_are_utc() {
        assert_eq!(parse_time("2013-01-01 00:30:00").unwrap(), ts("2013-01-01T00:30:00Z"));
        assert_eq!(parse_time("2012-10-12 00:30:00.0000000").unwrap(), ts("2012-10-12T00:30:00Z"));
        assert_eq!(parse_time("2012-12-19 12:37:27.0000000").unwrap(), ts("2012-12-19T12:37:27Z"));
        // Summer time is not applied: the files are UTC all year.
        assert_eq!(parse_time("2013-07-01 12:00:00").unwrap(), ts("2013-07-01T12:00:00Z"));
    }

    #[test]
    fn every_quirk_is_counted() {
        let data = load_text(
            "LCLid,DateTime,KWH/hh (per half hour)\n\
             B,2013-01-01 00:00:00.0000000, 0.100 \n\
             A,2013-01-01 01:00:00.0000000, 0.300 \n\
             A,2013-01-01 00:00:00.0000000, 1.0779999 \n\
             A,2013-01-01 00:30:00.0000000,Null\n\
             A,2013-01-01 00:12:34.0000000,Null\n\
             LCLid,DateTime,KWH/hh (per half hour)\n\
             \n\
             A,2013-01-01 01:00:00.0000000, 0.300 \n\
             A,2013-01-01 02:30:00.0000000, 0 \n",
        )
        .unwrap();
        let q = &data.quirks;
        assert_eq!(q.data_rows, 7);
        assert_eq!(q.repeated_headers, 1);
        assert_eq!(q.blank_lines, 1);
        assert_eq!(q.padded_values, 5);
        assert_eq!(q.float32_values, 1);
        assert_eq!(q.exact_duplicates, 1);
        assert_eq!(q.duplicate_rows[0].at.line, 9);
        assert_eq!(q.nulls, 2);
        assert_eq!(q.off_grid, 1);
        assert_eq!(q.off_grid_rows[0].timestamp, ts("2013-01-01T00:12:34Z"));
        assert_eq!(q.out_of_order_rows, 3);
        assert_eq!(q.missing_slots, 2);
        assert_eq!(q.gaps[0].from, ts("2013-01-01T01:30:00Z"));
        assert_eq!(q.zero_values, 1);

        let ids: Vec<&str> = data.meters.iter().map(|m| m.device_id.as_str()).collect();
        assert_eq!(ids, ["A", "B"]);
        let a = &data.meters[0];
        let energies: Vec<Option<u32>> = a.slots.iter().map(|s| s.energy_wh).collect();
        assert_eq!(energies, [Some(1078), None, Some(300), Some(0)]);
        assert_eq!(a.total_wh(), 1378);
    }

    #[test]
    fn conflicting_values_are_an_error_naming_both_rows() {
        let err = load_text(
            "LCLid,tstp,energy(kWh/hh)\n\
             A,2013-01-01 00:00:00, 0.100 \n\
             A,2013-01-01 00:00:00, 0.200 \n\
             A,2013-01-01 00:30:00, 0.100 \n\
             A,2013-01-01 00:30:00,Null\n",
        )
        .unwrap_err();
        let LondonError::Conflicts(conflicts) = &err else { panic!("{err}") };
        assert_eq!(conflicts.len(), 2);
        assert_eq!(conflicts[0].first.0.line, 2);
        assert_eq!(conflicts[0].second, (Location { file: "test.csv".into(), line: 3 }, "0.200".into()));
        assert!(err.to_string().contains("test.csv:2"), "{err}");
    }

    #[test]
    fn a_value_off_the_grid_is_an_error() {
        let err = load_text("LCLid,tstp,energy(kWh/hh)\nA,2013-01-01 00:10:00, 0.100 \n").unwrap_err();
        assert!(matches!(err, LondonError::OffGridValue { .. }), "{err}");
    }

    #[test]
    fn malformed_lines_name_their_location() {
        let err = load_text("LCLid,tstp,energy(kWh/hh)\nA,2013-01-01 00:00:00\n").unwrap_err();
        assert!(err.to_string().starts_with("test.csv:2:"), "{err}");
        let err = load_text("id,time,kwh\n").unwrap_err();
        assert!(matches!(err, LondonError::UnknownHeader { .. }), "{err}");
        let err = load_text("LCLid,tstp,energy(kWh/hh)\nA/B,2013-01-01 00:00:00,1\n").unwrap_err();
        assert!(err.to_string().contains("bad LCLid"), "{err}");
        assert!(matches!(load_text(""), Err(LondonError::Empty { .. })));
    }
}
