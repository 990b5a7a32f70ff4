//! Property tests of the energy accounting (DESIGN "Energy accounting").
//!
//! Arbitrary reading streams of one device: increasing timestamps with gaps from
//! milliseconds to days, counters with normal increases, resets to zero or to small
//! values, rollovers at the register top (9999.99 kWh), jitter under 1 Wh, impossible
//! jumps and meter replacements, in zones with whole-hour, half-hour and
//! three-quarter-hour offsets, starting around their time-zone transitions.
//!
//! What is checked, against models written here from DESIGN's rules rather than by
//! calling the code under test twice:
//! - conservation: the sum of hourly energy = the sum of daily energy = the energy
//!   counted = the counter's increase less quarantined jumps, and every hour's energy is
//!   the linear split of each step over local-hour buckets found by scanning the clock;
//! - arrival order does not matter: a simulation of the processor (stored set, window
//!   from the baseline before the earliest new reading, per-device in-memory tail,
//!   deltas from `Rollup::minus`) ends with the hourly map `account` gives for the
//!   sorted set, for any permutation, any split into batches and any restart point;
//! - exact duplicates change nothing;
//! - hour buckets lie within one local date, never overlap, tile the local day, and a
//!   DST day's buckets add up to its real length (23/25 h, Lord Howe 23.5/24.5 h).

use std::collections::BTreeMap;

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::Config;
use smartmeter_core::energy::{
    account, hour_bucket, merge, CounterReading, HourBucket, Rollup, Rules, StepKind,
};

// ---------------------------------------------------------------------------------
// DESIGN's rules, restated (milliwatt-hours).

/// "Impossible jumps (more energy than 23 kW for the elapsed time) are quarantined."
const MAX_POWER_W: i128 = 23_000;
/// "A fall from near the register's top (9999.99 kWh on a PZEM-004T v3)".
const REGISTER_TOP: i64 = 9_999_990_000;
/// "A decrease under 1 Wh is jitter, not a reset."
const JITTER: i64 = 1_000;
/// How near the top / near zero a rollover must be: DESIGN says "near"; the number is
/// the project's (`Rules::rollover_margin_milli_wh`, 100 kWh), checked equal below.
const ROLLOVER_MARGIN: i64 = 100_000_000;
/// "the allowed lateness (default 7 days)".
const LATENESS: SignedDuration = SignedDuration::from_hours(7 * 24);

const ZONES: [&str; 6] =
    ["Europe/London", "Asia/Kolkata", "Asia/Kathmandu", "America/St_Johns", "Australia/Lord_Howe", "UTC"];

const HOUR: SignedDuration = SignedDuration::from_hours(1);
const NANO: SignedDuration = SignedDuration::from_nanos(1);

/// `cases` unless PROPTEST_CASES says otherwise (for long runs).
fn config(cases: u32) -> Config {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(cases);
    // No regression files: this test must not write into the source tree.
    Config { cases, failure_persistence: None, ..Config::default() }
}

#[test]
fn the_model_uses_the_project_defaults() {
    let rules = Rules::default();
    assert_eq!(i128::from(rules.max_power_w), MAX_POWER_W);
    assert_eq!(rules.register_top_milli_wh, REGISTER_TOP);
    assert_eq!(rules.jitter_milli_wh, JITTER);
    assert_eq!(rules.rollover_margin_milli_wh, ROLLOVER_MARGIN);
}

// ---------------------------------------------------------------------------------
// Reading streams.

#[derive(Debug, Clone)]
struct Stream {
    zone: &'static str,
    tz: TimeZone,
    readings: Vec<CounterReading>,
}

/// What the meter reports at the end of a gap, relative to its previous report.
#[derive(Debug, Clone, Copy)]
enum Move {
    /// A normal increase at this average power (W), wrapping at the register top.
    Power(i64),
    /// A fall of this many mWh (under 1 Wh) below the previous report.
    Jitter(i64),
    ResetZero,
    /// A reset to a small value (mWh).
    ResetTo(i64),
    /// This many mWh more than 23 kW could deliver in the gap.
    Impossible(i64),
    /// A used meter with this counter (mWh).
    Replacement(i64),
    /// The register set to this many mWh below the top.
    NearTop(i64),
}

fn a_move() -> impl Strategy<Value = Move> {
    prop_oneof![
        14 => (0i64..=22_000).prop_map(Move::Power),
        3 => Just(Move::Power(0)),
        3 => (1i64..JITTER).prop_map(Move::Jitter),
        1 => Just(Move::ResetZero),
        1 => (1i64..=5_000_000).prop_map(Move::ResetTo),
        1 => (1i64..=50_000_000).prop_map(Move::Impossible),
        1 => (100_000_000i64..=9_000_000_000).prop_map(Move::Replacement),
        1 => (0i64..=2_000_000).prop_map(Move::NearTop),
    ]
}

/// Gaps between readings in milliseconds: seconds, minutes, hours, days.
fn a_gap() -> impl Strategy<Value = i64> {
    prop_oneof![
        3 => (1i64..=60).prop_map(|s| s * 1_000),
        1 => 1i64..=60_000,
        4 => (1i64..=60).prop_map(|m| m * 60_000),
        2 => 3_600_000i64..=6 * 3_600_000,
        1 => 86_400_000i64..=3 * 86_400_000,
    ]
}

fn a_start_counter() -> impl Strategy<Value = i64> {
    prop_oneof![Just(0i64), 0i64..=1_000_000_000, (REGISTER_TOP - 2_000_000)..REGISTER_TOP,]
}

/// 1980-01-01 .. 2040-01-01, seconds.
const BASE_RANGE: std::ops::Range<i64> = 315_532_800..2_208_988_800;

/// An instant shortly before one of the zone's transitions (the next after `base`, or
/// the last before it for zones that no longer change: Kolkata 1945, Kathmandu 1986).
fn near_transition(tz: &TimeZone, base: i64, before_s: i64) -> Timestamp {
    let base = Timestamp::from_second(base).unwrap();
    let transition = tz
        .following(base)
        .next()
        .or_else(|| tz.preceding(base).next())
        .map(|t| t.timestamp())
        .unwrap_or(base);
    transition - SignedDuration::from_secs(before_s)
}

fn a_stream() -> impl Strategy<Value = Stream> {
    (
        0..ZONES.len(),
        BASE_RANGE,
        prop_oneof![2 => 0i64..=7_200, 1 => 0i64..=2 * 86_400],
        a_start_counter(),
        prop::collection::vec((a_gap(), a_move()), 0..25),
    )
        .prop_map(|(zone, base, before_s, start_counter, moves)| {
            let zone = ZONES[zone];
            let tz = TimeZone::get(zone).unwrap();
            let mut at = near_transition(&tz, base, before_s);
            let mut counter = start_counter;
            let mut readings = vec![CounterReading { at, counter_milli_wh: counter }];
            for (gap_ms, mv) in moves {
                // Most energy 23 kW delivers in the gap: W * ms / 3600 = mWh.
                let max_energy = 23_000 * gap_ms / 3_600;
                counter = match mv {
                    Move::Power(w) => (counter + w * gap_ms / 3_600) % REGISTER_TOP,
                    Move::Jitter(fall) => (counter - fall).max(0),
                    Move::ResetZero => 0,
                    Move::ResetTo(value) => value,
                    Move::Impossible(extra) => (counter + max_energy + extra) % REGISTER_TOP,
                    Move::Replacement(value) => value,
                    Move::NearTop(below) => REGISTER_TOP - below,
                };
                at += SignedDuration::from_millis(gap_ms);
                readings.push(CounterReading { at, counter_milli_wh: counter });
            }
            Stream { zone, tz, readings }
        })
}

// ---------------------------------------------------------------------------------
// The model: DESIGN's counter rules and a clock scan for local-hour buckets.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ModelStep {
    from: Timestamp,
    at: Timestamp,
    kind: StepKind,
    counted: i64,
    quarantined: i64,
}

/// Whether `energy` mWh fits 23 kW over `elapsed`: energy <= W * ms / 3600.
fn possible(energy: i64, elapsed: SignedDuration) -> bool {
    i128::from(energy) * 3_600 <= MAX_POWER_W * elapsed.as_millis()
}

fn model_steps(readings: &[CounterReading]) -> Vec<ModelStep> {
    let mut steps = Vec::new();
    let Some((first, rest)) = readings.split_first() else { return steps };
    let mut baseline = *first;
    for reading in rest {
        let elapsed = reading.at.duration_since(baseline.at);
        let (before, after) = (baseline.counter_milli_wh, reading.counter_milli_wh);
        let (kind, counted, quarantined) = if after >= before {
            // The energy is the counter's increase, unless the meter cannot measure it.
            if possible(after - before, elapsed) {
                (StepKind::Normal, after - before, 0)
            } else {
                (StepKind::Quarantined, 0, after - before)
            }
        } else if before - after < JITTER {
            (StepKind::Jitter, 0, 0)
        } else if before >= REGISTER_TOP - ROLLOVER_MARGIN
            && after <= ROLLOVER_MARGIN
            && possible(REGISTER_TOP - before + after, elapsed)
        {
            (StepKind::Rollover, REGISTER_TOP - before + after, 0)
        } else if possible(after, elapsed) {
            // A reset: the energy since it is the new value.
            (StepKind::Reset, after, 0)
        } else {
            // Not energy since a reset: a meter with a used counter.
            (StepKind::Replacement, 0, 0)
        };
        steps.push(ModelStep { from: baseline.at, at: reading.at, kind, counted, quarantined });
        if kind != StepKind::Jitter {
            baseline = *reading;
        }
    }
    steps
}

/// Local clock arithmetic done by hand: offset in seconds at `t`.
fn offset_s(tz: &TimeZone, t: Timestamp) -> i64 {
    i64::from(tz.to_offset(t).seconds())
}

const QUARTER_S: i64 = 900;

/// The clock shows a whole hour at `q`.
fn whole_local_hour(tz: &TimeZone, q: Timestamp) -> bool {
    q.subsec_nanosecond() == 0 && (q.as_second() + offset_s(tz, q)).rem_euclid(3_600) == 0
}

/// The instant in `(a, a + 15 min]` where the offset changes, found by bisection to the
/// second (tz transitions are on whole seconds), if it changes there.
fn offset_change_in_quarter(tz: &TimeZone, a: Timestamp) -> Option<Timestamp> {
    let before = offset_s(tz, a);
    let (mut lo, mut hi) = (a.as_second(), a.as_second() + QUARTER_S);
    let at = |s: i64| Timestamp::from_second(s).unwrap();
    if offset_s(tz, at(hi)) == before {
        return None;
    }
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if offset_s(tz, at(mid)) == before {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    assert_eq!(offset_s(tz, at(hi) - NANO), before, "offset changes at {} exactly", at(hi));
    Some(at(hi))
}

fn quarter_floor(t: Timestamp) -> Timestamp {
    let s = t.as_second() - if t.subsec_nanosecond() < 0 { 1 } else { 0 };
    Timestamp::from_second(s.div_euclid(QUARTER_S) * QUARTER_S).unwrap()
}

/// The bucket `[start, end)` containing `t`, by scanning the clock: bucket boundaries
/// are the instants the clock shows a whole hour and the instants the offset changes.
/// In the zones used, offsets are multiples of 15 minutes (checked), so whole local
/// hours are on the UTC quarter-hour grid; transitions are anywhere (St John's changed
/// at 00:01 local until 2011) and found by bisection.
fn model_bucket(tz: &TimeZone, t: Timestamp) -> (Timestamp, Timestamp) {
    let floor = quarter_floor(t);
    let mut boundaries = Vec::new();
    for i in -6i64..=6 {
        let q = floor + SignedDuration::from_secs(i * QUARTER_S);
        assert_eq!(offset_s(tz, q) % QUARTER_S, 0, "offset at {q} is not a multiple of 15 minutes");
        if whole_local_hour(tz, q) {
            boundaries.push(q);
        }
        if let Some(change) = offset_change_in_quarter(tz, q) {
            boundaries.push(change);
        }
    }
    let start =
        boundaries.iter().copied().filter(|b| *b <= t).max().expect("a boundary within 90 minutes before");
    let end =
        boundaries.iter().copied().filter(|b| *b > t).min().expect("a boundary within 90 minutes after");
    assert!(end.duration_since(start) <= HOUR, "bucket {start}..{end} longer than an hour");
    (start, end)
}

/// Local date and hour of an instant, by hand.
fn local_date_hour(tz: &TimeZone, t: Timestamp) -> (Date, i8) {
    let local = tz.to_offset(t).to_datetime(t);
    (local.date(), local.hour())
}

/// What the model says an hour is: start -> (end, local date, local hour, offset, energy).
type ModelHours = BTreeMap<Timestamp, (Timestamp, Date, i8, i32, i64)>;

/// Spreads each counted step over the buckets it spans, in proportion to time; the
/// portions are cumulative floors (the documented rounding of `spread`), so they add up
/// to the step's energy exactly.
fn model_hours(tz: &TimeZone, steps: &[ModelStep]) -> ModelHours {
    let mut hours = ModelHours::new();
    for step in steps.iter().filter(|s| s.counted != 0) {
        let total = step.at.duration_since(step.from).as_nanos();
        let energy = i128::from(step.counted);
        let mut assigned = 0i128;
        let mut cursor = step.from;
        while cursor < step.at {
            let (start, end) = model_bucket(tz, cursor);
            let piece_end = end.min(step.at);
            let cumulative = energy * piece_end.duration_since(step.from).as_nanos() / total;
            let (date, hour) = local_date_hour(tz, start);
            let offset = tz.to_offset(start).seconds();
            hours.entry(start).or_insert((end, date, hour, offset, 0)).4 += (cumulative - assigned) as i64;
            assigned = cumulative;
            cursor = piece_end;
        }
        assert_eq!(assigned, energy);
    }
    hours.retain(|_, h| h.4 != 0);
    hours
}

fn as_model_hours(hourly: &BTreeMap<HourBucket, i64>) -> ModelHours {
    let mut hours = ModelHours::new();
    for (b, energy) in hourly {
        let previous =
            hours.insert(b.start, (b.end, b.local_date, b.local_hour, b.utc_offset_seconds, *energy));
        assert!(previous.is_none(), "two buckets start at {}", b.start);
    }
    hours
}

/// Every bucket lies within one local date, lasts at most an hour, and none overlap.
fn assert_buckets_well_formed(tz: &TimeZone, hourly: &BTreeMap<HourBucket, i64>) {
    let mut buckets: Vec<&HourBucket> = hourly.keys().collect();
    buckets.sort_by_key(|b| b.start);
    for b in &buckets {
        assert!(b.start < b.end, "{b:?}");
        assert!(b.end.duration_since(b.start) <= HOUR, "{b:?}");
        assert_eq!(local_date_hour(tz, b.start), (b.local_date, b.local_hour), "{b:?}");
        assert_eq!(local_date_hour(tz, b.end - NANO).0, b.local_date, "{b:?} leaves its local date");
        assert_eq!(tz.to_offset(b.start).seconds(), b.utc_offset_seconds, "{b:?}");
    }
    for pair in buckets.windows(2) {
        assert!(pair[0].end <= pair[1].start, "overlapping buckets {:?} {:?}", pair[0], pair[1]);
    }
}

// ---------------------------------------------------------------------------------
// The processor, simulated (processor/src/rollup.rs and lib.rs, without the database).

struct Processor<'a> {
    tz: &'a TimeZone,
    rules: Rules,
    /// The readings table (not too late): counter and stored judgement.
    stored: BTreeMap<Timestamp, (i64, StepKind)>,
    newest: Option<Timestamp>,
    /// The in-memory tail: (starts at the device's first reading, readings).
    tail: Option<(bool, Vec<CounterReading>)>,
    /// The hourly rollup table, maintained by deltas only.
    hourly: BTreeMap<HourBucket, i64>,
    too_late: usize,
}

impl<'a> Processor<'a> {
    fn new(tz: &'a TimeZone) -> Self {
        Self {
            tz,
            rules: Rules::default(),
            stored: BTreeMap::new(),
            newest: None,
            tail: None,
            hourly: BTreeMap::new(),
            too_late: 0,
        }
    }

    fn sorted(&self) -> Vec<CounterReading> {
        self.stored
            .iter()
            .map(|(at, (counter, _))| CounterReading { at: *at, counter_milli_wh: *counter })
            .collect()
    }

    /// `store::load_window`: from the newest non-jitter reading before `earliest`.
    fn load_window(&self, earliest: Timestamp) -> (bool, Vec<CounterReading>) {
        let baseline = self
            .stored
            .range(..earliest)
            .rev()
            .find(|(_, (_, kind))| *kind != StepKind::Jitter)
            .map(|(at, _)| *at);
        let from = baseline.unwrap_or(Timestamp::MIN);
        let readings = self
            .stored
            .range(from..)
            .map(|(at, (counter, _))| CounterReading { at: *at, counter_milli_wh: *counter })
            .collect();
        (baseline.is_none(), readings)
    }

    fn feed(&mut self, batch: &[CounterReading]) {
        // rollup::split_too_late: event-time lateness from the newest reading so far.
        let mut accepted = Vec::new();
        for reading in batch {
            match self.newest {
                Some(newest) if reading.at < newest - LATENESS => self.too_late += 1,
                _ => {
                    self.newest = Some(self.newest.map_or(reading.at, |n| n.max(reading.at)));
                    accepted.push(*reading);
                }
            }
        }
        let Some(earliest) = accepted.iter().map(|r| r.at).min() else { return };
        // lib.rs: the in-memory tail when the whole batch is newer, else the store.
        let (window_starts_at_first, window) = match &self.tail {
            Some((first, tail)) if tail.last().is_some_and(|last| last.at < earliest) => {
                (*first, tail.clone())
            }
            _ => self.load_window(earliest),
        };
        // rollup::plan.
        let (merged, _) = merge(&window, &accepted);
        let old = account(&window, self.tz, &self.rules);
        let new = account(&merged, self.tz, &self.rules);
        for (bucket, energy) in new.minus(&old) {
            let entry = self.hourly.entry(bucket).or_insert(0);
            *entry += energy;
            if *entry == 0 {
                self.hourly.remove(&bucket);
            }
        }
        let starts_at_first = window_starts_at_first || merged.first() != window.first();
        for reading in &merged {
            let kind = self.stored.get(&reading.at).map_or(StepKind::First, |(_, kind)| *kind);
            self.stored.insert(reading.at, (reading.counter_milli_wh, kind));
        }
        if starts_at_first {
            self.stored.get_mut(&merged[0].at).unwrap().1 = StepKind::First;
        }
        for step in &new.steps {
            self.stored.get_mut(&step.reading.at).unwrap().1 = step.kind;
        }
        // rollup::tail_of.
        let baseline =
            new.steps.iter().rev().find(|s| s.kind.moves_baseline()).map(|s| s.reading).unwrap_or(merged[0]);
        let start = merged.iter().position(|r| r.at == baseline.at).unwrap();
        self.tail = Some((starts_at_first && start == 0, merged[start..].to_vec()));
    }

    fn restart(&mut self) {
        self.tail = None;
    }

    /// After every batch the stored rollups and judgements are those of the stored set.
    fn assert_consistent(&self) {
        let full = account(&self.sorted(), self.tz, &self.rules);
        assert_eq!(self.hourly, full.hourly, "hourly rollups drifted from account(stored)");
        let mut kinds: Vec<StepKind> = self.stored.values().map(|(_, kind)| *kind).collect();
        if !kinds.is_empty() {
            assert_eq!(kinds.remove(0), StepKind::First);
        }
        assert_eq!(kinds, full.steps.iter().map(|s| s.kind).collect::<Vec<_>>(), "stored judgements drifted");
    }
}

/// Feeds `arrivals` in batches of the given sizes (cycled), restarting (dropping the
/// in-memory tail) before the batches flagged.
fn run<'a>(
    tz: &'a TimeZone,
    arrivals: &[CounterReading],
    sizes: &[usize],
    restarts: &[bool],
) -> Processor<'a> {
    let mut processor = Processor::new(tz);
    let mut rest = arrivals;
    let mut batch_no = 0;
    while !rest.is_empty() {
        let size = sizes[batch_no % sizes.len()].clamp(1, rest.len());
        if restarts[batch_no % restarts.len()] {
            processor.restart();
        }
        let (batch, after) = rest.split_at(size);
        processor.feed(batch);
        processor.assert_consistent();
        rest = after;
        batch_no += 1;
    }
    processor
}

fn span(readings: &[CounterReading]) -> SignedDuration {
    match (readings.first(), readings.last()) {
        (Some(first), Some(last)) => last.at.duration_since(first.at),
        _ => SignedDuration::ZERO,
    }
}

fn batching() -> impl Strategy<Value = (Vec<usize>, Vec<bool>)> {
    (prop::collection::vec(1usize..=6, 1..8), prop::collection::vec(prop::bool::weighted(0.3), 1..8))
}

// ---------------------------------------------------------------------------------
// The properties.

proptest! {
    #![proptest_config(config(1_000))]

    /// Conservation, and every hour's energy, against the independent model.
    #[test]
    fn conservation_and_hours_match_the_model(stream in a_stream()) {
        let tz = &stream.tz;
        let rollup = account(&stream.readings, tz, &Rules::default());
        let model = model_steps(&stream.readings);

        // Judgement of each step.
        prop_assert_eq!(rollup.steps.len(), model.len());
        for (step, expected) in rollup.steps.iter().zip(&model) {
            prop_assert_eq!(
                (step.baseline.at, step.reading.at, step.kind, step.counted_milli_wh, step.quarantined_milli_wh),
                (expected.from, expected.at, expected.kind, expected.counted, expected.quarantined),
                "zone {}", stream.zone
            );
        }

        // The counter's increase less quarantined jumps: every baseline-moving step's
        // rise (through the top for a rollover, from zero for a reset; a replaced meter
        // brings none) minus what was quarantined.
        let mut increase = 0i64;
        let mut quarantined = 0i64;
        for step in &model {
            let before = stream.readings.iter().find(|r| r.at == step.from).unwrap().counter_milli_wh;
            let after = stream.readings.iter().find(|r| r.at == step.at).unwrap().counter_milli_wh;
            increase += match step.kind {
                StepKind::Normal | StepKind::Quarantined => after - before,
                StepKind::Rollover => REGISTER_TOP - before + after,
                StepKind::Reset => after,
                StepKind::First | StepKind::Jitter | StepKind::Replacement => 0,
            };
            quarantined += step.quarantined;
        }
        let expected_total = increase - quarantined;

        let hourly_sum: i64 = rollup.hourly.values().sum();
        let daily = rollup.daily();
        let daily_sum: i64 = daily.values().sum();
        prop_assert_eq!(hourly_sum, expected_total);
        prop_assert_eq!(daily_sum, expected_total);
        prop_assert_eq!(rollup.counted_milli_wh(), expected_total);
        prop_assert_eq!(rollup.steps.iter().map(|s| s.quarantined_milli_wh).sum::<i64>(), quarantined);

        // Hour by hour against the clock scan.
        let expected_hours = model_hours(tz, &model);
        prop_assert_eq!(as_model_hours(&rollup.hourly), expected_hours.clone(), "zone {}", stream.zone);

        // Day by day: the model's hours grouped by the local date of their start.
        let mut expected_daily: BTreeMap<Date, i64> = BTreeMap::new();
        for (_, date, _, _, energy) in expected_hours.values() {
            *expected_daily.entry(*date).or_insert(0) += energy;
        }
        expected_daily.retain(|_, e| *e != 0);
        let mut daily_nonzero = daily.clone();
        daily_nonzero.retain(|_, e| *e != 0);
        prop_assert_eq!(daily_nonzero, expected_daily);

        assert_buckets_well_formed(tz, &rollup.hourly);
        prop_assert!(rollup.hourly.values().all(|e| *e > 0));
    }

    /// Any permutation, split into any batches with restarts anywhere, fed the way the
    /// processor does, ends with the rollups of the sorted set.
    #[test]
    fn any_arrival_order_gives_the_rollups_of_the_sorted_set(
        (stream, arrivals) in a_stream().prop_flat_map(|s| {
            let shuffled = Just(s.readings.clone()).prop_shuffle();
            (Just(s), shuffled)
        }),
        (sizes, restarts) in batching(),
    ) {
        let tz = &stream.tz;
        let processor = run(tz, &arrivals, &sizes, &restarts);
        let accepted = processor.sorted();
        // Inside the lateness nothing is too late and the set is the whole stream.
        if span(&stream.readings) <= LATENESS {
            prop_assert_eq!(processor.too_late, 0);
            prop_assert_eq!(&accepted, &stream.readings);
        }
        prop_assert_eq!(accepted.len() + processor.too_late, stream.readings.len());
        // Too-late readings never count: the rollups are those of the accepted set.
        prop_assert_eq!(&processor.hourly, &account(&accepted, tz, &Rules::default()).hourly);
    }

    /// In-order arrival: any split into batches and any restart points (dropping the
    /// in-memory tails and recomputing from the stored state) give the same rollups.
    #[test]
    fn any_split_and_restart_gives_the_same_rollups(stream in a_stream(), (sizes, restarts) in batching()) {
        let tz = &stream.tz;
        let expected = account(&stream.readings, tz, &Rules::default());
        let processor = run(tz, &stream.readings, &sizes, &restarts);
        prop_assert_eq!(processor.too_late, 0);
        prop_assert_eq!(&processor.hourly, &expected.hourly);
        // One reading at a time without tails, and the whole stream at once.
        let one_by_one = run(tz, &stream.readings, &[1], &[true]);
        prop_assert_eq!(&one_by_one.hourly, &expected.hourly);
        let all_at_once = run(tz, &stream.readings, &[usize::MAX], &[false]);
        prop_assert_eq!(&all_at_once.hourly, &expected.hourly);
    }

    /// Exact duplicates (QoS 1 / Kafka redelivery), each arriving after its original,
    /// change nothing.
    #[test]
    fn exact_duplicates_change_nothing(
        (stream, arrivals) in a_stream().prop_flat_map(|s| {
            let shuffled = Just(s.readings.clone()).prop_shuffle();
            (Just(s), prop_oneof![Just(None), shuffled.prop_map(Some)])
        }),
        injected in prop::collection::vec((any::<Index>(), any::<Index>()), 1..12),
        (sizes, restarts) in batching(),
    ) {
        let tz = &stream.tz;
        let arrivals = arrivals.unwrap_or_else(|| stream.readings.clone());
        let mut with_duplicates = arrivals.clone();
        for (which, delay) in injected {
            let original = which.index(arrivals.len());
            let reading = arrivals[original];
            let position = with_duplicates.iter().position(|r| *r == reading).unwrap();
            // Somewhere after the original, possibly in the same batch.
            let insert_at = position + 1 + delay.index(with_duplicates.len() - position);
            with_duplicates.insert(insert_at, reading);
        }
        let without = run(tz, &arrivals, &sizes, &restarts);
        let with = run(tz, &with_duplicates, &sizes, &restarts);
        prop_assert_eq!(&with.hourly, &without.hourly);
        prop_assert_eq!(with.sorted(), without.sorted());
        prop_assert_eq!(
            with.stored.values().map(|(_, k)| *k).collect::<Vec<_>>(),
            without.stored.values().map(|(_, k)| *k).collect::<Vec<_>>()
        );
        // And with everything on time, the rollups are those of the stream.
        if span(&stream.readings) <= LATENESS {
            prop_assert_eq!(&with.hourly, &account(&stream.readings, tz, &Rules::default()).hourly);
        }
        // account itself ignores nothing: duplicates are the merge's business.
        let (merged, losers) = merge(&stream.readings, &with_duplicates);
        prop_assert!(losers.is_empty());
        prop_assert_eq!(merged, stream.readings.clone());
    }

    /// Hour buckets around transitions: each contains its instant, lies within one local
    /// date, agrees with the clock scan, and the buckets of a local day tile it exactly.
    #[test]
    fn hour_buckets_tile_local_days(
        zone in 0..ZONES.len(),
        base in BASE_RANGE,
        before_s in 0i64..=3 * 86_400,
        probe_s in 0i64..=86_400,
    ) {
        let tz = TimeZone::get(ZONES[zone]).unwrap();
        // Until 2011 St John's changed at 00:01 local: a fall-back then shows the
        // previous date again for an hour after a minute of the new one, so its local
        // dates are not contiguous in time (see `st_johns_midnight_transition`). The
        // tiling of days below is for contiguous local dates: St John's from 2012.
        let base = if ZONES[zone] == "America/St_Johns" { base.max(1_325_376_000) } else { base };
        let near = near_transition(&tz, base, before_s);
        let probe = near + SignedDuration::from_secs(probe_s);
        let bucket = hour_bucket(probe, &tz);
        prop_assert!(bucket.start <= probe && probe < bucket.end);
        prop_assert_eq!((bucket.start, bucket.end), model_bucket(&tz, probe));

        let date = local_date_hour(&tz, probe).0;
        let (hours, length) = walk_day(&tz, date);
        prop_assert_eq!(hours.iter().map(|b| b.end.duration_since(b.start)).sum::<SignedDuration>(), length);
        for b in &hours {
            prop_assert_eq!((b.start, b.end), model_bucket(&tz, b.start));
        }
    }
}

/// The buckets of a local day from its first instant to the next day's, and the day's
/// real length.
fn walk_day(tz: &TimeZone, date: Date) -> (Vec<HourBucket>, SignedDuration) {
    let start = date.to_zoned(tz.clone()).unwrap().start_of_day().unwrap().timestamp();
    let next = date.tomorrow().unwrap().to_zoned(tz.clone()).unwrap().start_of_day().unwrap().timestamp();
    let mut hours: Vec<HourBucket> = Vec::new();
    let mut cursor = start;
    while cursor < next {
        let bucket = hour_bucket(cursor, tz);
        assert_eq!(bucket.start, cursor, "buckets of {date} are not contiguous");
        assert_eq!(bucket.local_date, date, "{bucket:?} is not on {date}");
        assert!(bucket.end <= next, "{bucket:?} runs into the next day");
        assert!(bucket.end.duration_since(bucket.start) <= HOUR);
        if let Some(previous) = hours.last() {
            assert!(previous.local_hour <= bucket.local_hour, "hours go back within {date}");
        }
        hours.push(bucket);
        cursor = bucket.end;
    }
    (hours, next.duration_since(start))
}

#[test]
fn dst_days_have_their_real_length() {
    let minutes = |m: i64| SignedDuration::from_mins(m);
    let cases: [(&str, &str, SignedDuration, usize); 12] = [
        ("Europe/London", "2012-10-28", minutes(25 * 60), 25),
        ("Europe/London", "2013-03-31", minutes(23 * 60), 23),
        ("Europe/London", "2013-10-27", minutes(25 * 60), 25),
        ("Europe/London", "2013-06-01", minutes(24 * 60), 24),
        ("America/St_Johns", "2026-03-08", minutes(23 * 60), 23),
        ("America/St_Johns", "2026-11-01", minutes(25 * 60), 25),
        // 02:00 +10:30 -> 02:30 +11: local hour 2 lasts 30 minutes.
        ("Australia/Lord_Howe", "2026-10-04", minutes(23 * 60 + 30), 24),
        // 02:00 +11 -> 01:30 +10:30: local hour 1 again, for 30 minutes.
        ("Australia/Lord_Howe", "2026-04-05", minutes(24 * 60 + 30), 25),
        // Nepal moved from +05:30 to +05:45 at the start of 1986: hour 0 lasts 45 minutes.
        ("Asia/Kathmandu", "1986-01-01", minutes(23 * 60 + 45), 24),
        ("Asia/Kathmandu", "2026-01-01", minutes(24 * 60), 24),
        ("Asia/Kolkata", "2026-06-01", minutes(24 * 60), 24),
        // India's last change, 1945-10-15: +06:30 -> +05:30 at midnight (a 25-hour day).
        ("Asia/Kolkata", "1945-10-14", minutes(25 * 60), 25),
    ];
    for (zone, date, length, count) in cases {
        let tz = TimeZone::get(zone).unwrap();
        let date: Date = date.parse().unwrap();
        let (hours, real) = walk_day(&tz, date);
        assert_eq!(real, length, "{zone} {date}");
        assert_eq!(hours.len(), count, "{zone} {date}: {hours:#?}");
        let sum: SignedDuration = hours.iter().map(|b| b.end.duration_since(b.start)).sum();
        assert_eq!(sum, length, "{zone} {date}");
    }
}

/// A day of constant consumption across each DST change gets energy in proportion to
/// the day's real length.
#[test]
fn constant_power_over_a_dst_day_is_proportional_to_its_length() {
    for (zone, date, minutes, buckets) in [
        ("Europe/London", "2013-03-31", 23 * 60, 23),
        ("Europe/London", "2013-10-27", 25 * 60, 25),
        ("Australia/Lord_Howe", "2026-10-04", 23 * 60 + 30, 24),
        ("Australia/Lord_Howe", "2026-04-05", 24 * 60 + 30, 25),
        ("America/St_Johns", "2026-11-01", 25 * 60, 25),
    ] {
        let tz = TimeZone::get(zone).unwrap();
        let date: Date = date.parse().unwrap();
        let start = date.to_zoned(tz.clone()).unwrap().start_of_day().unwrap().timestamp();
        // 1.2 kW from two days before to two days after, one reading every 10 minutes
        // (200 Wh each); the 10-minute grid from local midnight meets every bucket edge.
        let first = start - SignedDuration::from_hours(48);
        let readings: Vec<CounterReading> = (0..=(24 * 6 * 5))
            .map(|i| CounterReading {
                at: first + SignedDuration::from_mins(10 * i),
                counter_milli_wh: 200_000 * i,
            })
            .collect();
        let rollup: Rollup = account(&readings, &tz, &Rules::default());
        let daily = rollup.daily();
        // 1.2 kW is 20 Wh a minute.
        assert_eq!(daily[&date], 20_000 * minutes, "{zone} {date}");
        assert_eq!(rollup.hourly.keys().filter(|b| b.local_date == date).count(), buckets, "{zone} {date}");
    }
}

/// St John's until 2011 changed at 00:01 local. On 2006-10-29 at 00:01 NDT (-02:30) the
/// clock went back to 23:01 NST (-03:30) on the 28th: the 29th shows for one minute,
/// then the 28th again for an hour. Buckets follow the clock: a one-minute hour 0 of
/// the 29th, then a 59-minute hour 23 of the 28th; each within its date, contiguous.
#[test]
fn st_johns_midnight_transition() {
    let tz = TimeZone::get("America/St_Johns").unwrap();
    let at = |s: &str| s.parse::<Timestamp>().unwrap();
    let minute = hour_bucket(at("2006-10-29T02:30:30Z"), &tz);
    assert_eq!((minute.start, minute.end), (at("2006-10-29T02:30:00Z"), at("2006-10-29T02:31:00Z")));
    assert_eq!((minute.local_date, minute.local_hour), ("2006-10-29".parse().unwrap(), 0));
    let again = hour_bucket(at("2006-10-29T02:31:00Z"), &tz);
    assert_eq!((again.start, again.end), (at("2006-10-29T02:31:00Z"), at("2006-10-29T03:30:00Z")));
    assert_eq!((again.local_date, again.local_hour), ("2006-10-28".parse().unwrap(), 23));
    assert_eq!(model_bucket(&tz, at("2006-10-29T02:30:30Z")), (minute.start, minute.end));
    assert_eq!(model_bucket(&tz, at("2006-10-29T02:31:00Z")), (again.start, again.end));
}

/// TZif files hold transitions that change no offset: zic's marker at
/// 2038-01-19T03:14:07Z (Kathmandu and Lord Howe in tzdata 2025b), abbreviation-only
/// changes (London 1968, St John's 1945). They must not split a local hour.
#[test]
fn transitions_that_change_no_offset_do_not_cut_hours() {
    let at = |s: &str| s.parse::<Timestamp>().unwrap();
    for (zone, probe, start, end) in [
        ("Asia/Kathmandu", "2038-01-19T03:00:00Z", "2038-01-19T02:15:00Z", "2038-01-19T03:15:00Z"),
        ("Asia/Kathmandu", "2038-01-19T03:14:30Z", "2038-01-19T02:15:00Z", "2038-01-19T03:15:00Z"),
        ("Australia/Lord_Howe", "2038-01-19T03:14:30Z", "2038-01-19T03:00:00Z", "2038-01-19T04:00:00Z"),
        ("Europe/London", "1968-10-26T23:30:00Z", "1968-10-26T23:00:00Z", "1968-10-27T00:00:00Z"),
        ("America/St_Johns", "1945-08-14T23:10:00Z", "1945-08-14T22:30:00Z", "1945-08-14T23:30:00Z"),
    ] {
        let tz = TimeZone::get(zone).unwrap();
        let bucket = hour_bucket(at(probe), &tz);
        assert_eq!((bucket.start, bucket.end), (at(start), at(end)), "{zone} {probe}");
        assert_eq!(model_bucket(&tz, at(probe)), (at(start), at(end)), "{zone} {probe}");
    }
}
