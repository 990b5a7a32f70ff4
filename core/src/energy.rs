//! Energy accounting: from a meter's cumulative counter to energy per local hour and
//! local day.
//!
//! The counter is the billing truth. Readings of one device, sorted by event time and
//! unique per timestamp, form a sequence; each reading after the first ends a *step*
//! from the current *baseline* (the last reading the counter was judged from). A step
//! is classified ([`StepKind`]): normal increase, jitter (a fall under 1 Wh: ignored,
//! the baseline stays), reset (energy since the reset is the new value), rollover at
//! the register top, meter replacement, or an impossible jump (quarantined). The
//! counted energy of a step is spread over the local hours it spans in proportion to
//! time.
//!
//! [`account`] is a pure function of the sequence, so rollups do not depend on arrival
//! order: the processor recomputes the affected window of a device when a reading
//! arrives late and applies the difference ([`Rollup::minus`]). All energy is integer
//! milliwatt-hours (1e-6 kWh) so sums are exact.

use std::collections::BTreeMap;

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp, Zoned};

pub const MILLI_WH_PER_KWH: i64 = 1_000_000;

/// Converts a counter value as sent by a meter (kWh, a few decimals) to milliwatt-hours.
pub fn kwh_to_milli_wh(kwh: f64) -> i64 {
    (kwh * MILLI_WH_PER_KWH as f64).round() as i64
}

/// Exact kWh of an integer milliwatt-hour amount (6 decimal places).
pub fn milli_wh_to_kwh(milli_wh: i64) -> rust_decimal::Decimal {
    rust_decimal::Decimal::new(milli_wh, 6)
}

/// The arithmetic's tunables; defaults are DESIGN's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// A step needing more than this average power is impossible for the meter.
    pub max_power_w: i64,
    /// The energy register's top value; it rolls over to zero after it.
    pub register_top_milli_wh: i64,
    /// A fall smaller than this is measurement jitter, not a reset.
    pub jitter_milli_wh: i64,
    /// How near the top (before) and near zero (after) a fall must be to be a rollover.
    pub rollover_margin_milli_wh: i64,
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            max_power_w: 23_000,
            register_top_milli_wh: 9_999_990_000,
            jitter_milli_wh: 1_000,
            rollover_margin_milli_wh: 100 * MILLI_WH_PER_KWH,
        }
    }
}

impl Rules {
    /// Most energy the meter can measure in `elapsed`, in milliwatt-hours.
    fn max_energy_milli_wh(&self, elapsed: SignedDuration) -> i64 {
        // mWh = W * ms / 3600
        let millis = i128::from(elapsed.as_millis().max(0) as i64);
        (i128::from(self.max_power_w) * millis / 3600).min(i128::from(i64::MAX)) as i64
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CounterReading {
    pub at: Timestamp,
    pub counter_milli_wh: i64,
}

/// How the counter step ending at a reading was judged. Stored with the reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StepKind {
    /// The device's first reading: the counter starts here, nothing is counted.
    First,
    Normal,
    /// A fall under the jitter limit: nothing counted, the baseline stays.
    Jitter,
    /// The counter fell (reset, reboot reporting 0): the energy since is the new value.
    Reset,
    /// The counter passed the register top: (top - previous) + new.
    Rollover,
    /// The counter fell to a value that cannot be energy since a reset (a new meter
    /// with a used counter): nothing counted.
    Replacement,
    /// More energy than the meter can measure in the elapsed time: not counted.
    Quarantined,
}

impl StepKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StepKind::First => "first",
            StepKind::Normal => "normal",
            StepKind::Jitter => "jitter",
            StepKind::Reset => "reset",
            StepKind::Rollover => "rollover",
            StepKind::Replacement => "replacement",
            StepKind::Quarantined => "quarantined",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [
            StepKind::First,
            StepKind::Normal,
            StepKind::Jitter,
            StepKind::Reset,
            StepKind::Rollover,
            StepKind::Replacement,
            StepKind::Quarantined,
        ]
        .into_iter()
        .find(|kind| kind.as_str() == text)
    }

    /// Whether the step is a counter event worth recording (everything but normal).
    pub fn is_event(self) -> bool {
        !matches!(self, StepKind::First | StepKind::Normal)
    }

    /// Whether the reading becomes the baseline for the next step.
    pub fn moves_baseline(self) -> bool {
        self != StepKind::Jitter
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub baseline: CounterReading,
    pub reading: CounterReading,
    pub kind: StepKind,
    pub counted_milli_wh: i64,
    /// Energy the counter claims but that was not counted (impossible jump).
    pub quarantined_milli_wh: i64,
}

/// Judges the step from `baseline` to `reading` (`reading.at > baseline.at`).
pub fn classify(baseline: CounterReading, reading: CounterReading, rules: &Rules) -> Step {
    let elapsed = reading.at.duration_since(baseline.at);
    let max_energy = rules.max_energy_milli_wh(elapsed);
    let delta = reading.counter_milli_wh - baseline.counter_milli_wh;
    let step = |kind, counted, quarantined| Step {
        baseline,
        reading,
        kind,
        counted_milli_wh: counted,
        quarantined_milli_wh: quarantined,
    };
    if delta >= 0 {
        return if delta > max_energy {
            step(StepKind::Quarantined, 0, delta)
        } else {
            step(StepKind::Normal, delta, 0)
        };
    }
    if -delta < rules.jitter_milli_wh {
        return step(StepKind::Jitter, 0, 0);
    }
    let rollover_energy =
        (rules.register_top_milli_wh - baseline.counter_milli_wh) + reading.counter_milli_wh;
    let near_top = baseline.counter_milli_wh >= rules.register_top_milli_wh - rules.rollover_margin_milli_wh;
    let near_zero = reading.counter_milli_wh <= rules.rollover_margin_milli_wh;
    if near_top && near_zero && rollover_energy <= max_energy {
        step(StepKind::Rollover, rollover_energy, 0)
    } else if reading.counter_milli_wh <= max_energy {
        step(StepKind::Reset, reading.counter_milli_wh, 0)
    } else {
        step(StepKind::Replacement, 0, 0)
    }
}

/// One local hour of a device's time zone, as a UTC interval.
///
/// A local hour usually lasts an hour, but one cut by a DST change lasts less (Lord
/// Howe's 30-minute shift), and the repeated hour of a fall-back is a bucket of its own
/// (a 25-hour day has 25 buckets).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HourBucket {
    pub start: Timestamp,
    pub end: Timestamp,
    pub local_date: Date,
    pub local_hour: i8,
    pub utc_offset_seconds: i32,
}

/// The local-hour bucket containing instant `at`.
pub fn hour_bucket(at: Timestamp, tz: &TimeZone) -> HourBucket {
    let zoned = at.to_zoned(tz.clone());
    let offset = zoned.offset();
    // The local hour's start at the offset in force at `at`; a transition inside the
    // hour (after that start) starts the bucket instead.
    let hour_floor = zoned
        .datetime()
        .with()
        .minute(0)
        .second(0)
        .subsec_nanosecond(0)
        .build()
        .expect("whole hour of a valid datetime");
    let floor_at = offset.to_timestamp(hour_floor).expect("in range");
    // Only transitions that change the offset cut an hour: TZif files also hold
    // transitions that change nothing but the abbreviation or DST flag (Europe/London
    // 1968, America/St_Johns 1945) and zic's marker at 2038-01-19T03:14:07Z
    // (Asia/Kathmandu, Australia/Lord_Howe with tzdata 2025b), which would otherwise
    // split a local hour into two buckets.
    let changes_offset = |transition: &jiff::tz::TimeZoneTransition<'_>| {
        tz.to_offset(transition.timestamp() - SignedDuration::from_nanos(1)) != transition.offset()
    };
    let start = tz
        .preceding(at.checked_add(SignedDuration::from_nanos(1)).unwrap_or(at))
        .take_while(|transition| transition.timestamp() > floor_at)
        .find(|transition| changes_offset(transition))
        .map_or(floor_at, |transition| transition.timestamp());
    let hour_end = floor_at + SignedDuration::from_hours(1);
    let end = tz
        .following(at)
        .take_while(|transition| transition.timestamp() < hour_end)
        .find(|transition| changes_offset(transition))
        .map_or(hour_end, |transition| transition.timestamp());
    let start_local: Zoned = start.to_zoned(tz.clone());
    HourBucket {
        start,
        end,
        local_date: start_local.date(),
        local_hour: start_local.hour(),
        utc_offset_seconds: start_local.offset().seconds(),
    }
}

/// Spreads `energy_milli_wh` over the local hours of `[from, to)` in proportion to
/// time. Portions are rounded by cumulative floor, so they add up to the energy exactly.
pub fn spread(
    from: Timestamp,
    to: Timestamp,
    energy_milli_wh: i64,
    tz: &TimeZone,
    add: impl FnMut(HourBucket, i64),
) {
    spread_cached(from, to, energy_milli_wh, tz, &mut None, add);
}

/// [`spread`] reusing `cache`, the last bucket looked up, while the cursor stays in it:
/// a bucket is the same for every instant in `[start, end)`, and consecutive steps of
/// frequent readings mostly fall in the same local hour, so `account` calls the time
/// zone lookups of [`hour_bucket`] about once per hour instead of once per step.
fn spread_cached(
    from: Timestamp,
    to: Timestamp,
    energy_milli_wh: i64,
    tz: &TimeZone,
    cache: &mut Option<HourBucket>,
    mut add: impl FnMut(HourBucket, i64),
) {
    if energy_milli_wh == 0 || to <= from {
        return;
    }
    let total_ns = to.as_nanosecond() - from.as_nanosecond();
    let energy = i128::from(energy_milli_wh);
    let mut assigned: i128 = 0;
    let mut cursor = from;
    while cursor < to {
        let bucket = match *cache {
            Some(bucket) if bucket.start <= cursor && cursor < bucket.end => bucket,
            _ => *cache.insert(hour_bucket(cursor, tz)),
        };
        let piece_end = bucket.end.min(to);
        let elapsed_ns = piece_end.as_nanosecond() - from.as_nanosecond();
        let cumulative = energy * elapsed_ns / total_ns;
        let portion = (cumulative - assigned) as i64;
        assigned = cumulative;
        if portion != 0 {
            add(bucket, portion);
        }
        cursor = piece_end;
    }
}

/// Energy per local hour and the judged steps of a reading sequence.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rollup {
    pub hourly: BTreeMap<HourBucket, i64>,
    /// One per reading after the first.
    pub steps: Vec<Step>,
}

impl Rollup {
    /// Energy per local date, derived from the hours (a local hour never spans midnight).
    pub fn daily(&self) -> BTreeMap<Date, i64> {
        let mut daily = BTreeMap::new();
        for (bucket, energy) in &self.hourly {
            *daily.entry(bucket.local_date).or_insert(0) += energy;
        }
        daily
    }

    pub fn counted_milli_wh(&self) -> i64 {
        self.steps.iter().map(|s| s.counted_milli_wh).sum()
    }

    /// Hourly energy of `self` less that of `older`, without zero entries: what a
    /// store must add to go from `older` to `self`.
    pub fn minus(&self, older: &Rollup) -> BTreeMap<HourBucket, i64> {
        let mut delta = self.hourly.clone();
        for (bucket, energy) in &older.hourly {
            *delta.entry(*bucket).or_insert(0) -= energy;
        }
        delta.retain(|_, energy| *energy != 0);
        delta
    }
}

/// Accounts a device's readings, sorted by `at` with unique timestamps. The first
/// reading is the starting baseline and gets no step of its own.
pub fn account(readings: &[CounterReading], tz: &TimeZone, rules: &Rules) -> Rollup {
    let mut rollup = Rollup::default();
    let Some((first, rest)) = readings.split_first() else { return rollup };
    rollup.steps.reserve_exact(rest.len());
    let mut baseline = *first;
    let mut cache = None;
    // Energy of the bucket being filled, added to the map when another bucket starts.
    let mut pending: Option<(HourBucket, i64)> = None;
    for reading in rest {
        debug_assert!(reading.at > baseline.at, "readings must be sorted and unique");
        let step = classify(baseline, *reading, rules);
        spread_cached(baseline.at, reading.at, step.counted_milli_wh, tz, &mut cache, |bucket, energy| {
            match &mut pending {
                Some((current, sum)) if *current == bucket => *sum += energy,
                _ => {
                    if let Some((done, sum)) = pending.replace((bucket, energy)) {
                        *rollup.hourly.entry(done).or_insert(0) += sum;
                    }
                }
            }
        });
        if step.kind.moves_baseline() {
            baseline = *reading;
        }
        rollup.steps.push(step);
    }
    if let Some((done, sum)) = pending {
        *rollup.hourly.entry(done).or_insert(0) += sum;
    }
    rollup.hourly.retain(|_, energy| *energy != 0);
    rollup
}

/// Merges `incoming` into the sorted, unique `existing` sequence. At an equal timestamp
/// the higher counter wins, whichever arrived first, so the result does not depend on
/// arrival order; the losers are returned.
pub fn merge(
    existing: &[CounterReading],
    incoming: &[CounterReading],
) -> (Vec<CounterReading>, Vec<CounterReading>) {
    let mut by_time: BTreeMap<Timestamp, i64> = BTreeMap::new();
    let mut losers = Vec::new();
    for reading in existing.iter().chain(incoming) {
        match by_time.get_mut(&reading.at) {
            None => {
                by_time.insert(reading.at, reading.counter_milli_wh);
            }
            Some(kept) if *kept == reading.counter_milli_wh => {}
            Some(kept) => {
                let loser = (*kept).min(reading.counter_milli_wh);
                *kept = (*kept).max(reading.counter_milli_wh);
                losers.push(CounterReading { at: reading.at, counter_milli_wh: loser });
            }
        }
    }
    let merged =
        by_time.into_iter().map(|(at, counter_milli_wh)| CounterReading { at, counter_milli_wh }).collect();
    (merged, losers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn reading(at: &str, kwh: f64) -> CounterReading {
        CounterReading { at: ts(at), counter_milli_wh: kwh_to_milli_wh(kwh) }
    }

    fn tz(name: &str) -> TimeZone {
        TimeZone::get(name).unwrap()
    }

    #[test]
    fn counter_values_convert_exactly() {
        assert_eq!(kwh_to_milli_wh(12.345), 12_345_000);
        assert_eq!(kwh_to_milli_wh(9999.99), 9_999_990_000);
        assert_eq!(kwh_to_milli_wh(0.1 + 0.2), 300_000);
    }

    #[test]
    fn steps_are_classified() {
        let rules = Rules::default();
        let base = reading("2026-01-01T00:00:00Z", 100.0);
        let kind = |at: &str, kwh: f64| classify(base, reading(at, kwh), &rules);
        assert_eq!(kind("2026-01-01T01:00:00Z", 101.5).kind, StepKind::Normal);
        assert_eq!(kind("2026-01-01T01:00:00Z", 101.5).counted_milli_wh, 1_500_000);
        assert_eq!(kind("2026-01-01T01:00:00Z", 99.9995).kind, StepKind::Jitter);
        let reboot = kind("2026-01-01T01:00:00Z", 0.0);
        assert_eq!((reboot.kind, reboot.counted_milli_wh), (StepKind::Reset, 0));
        let reset = kind("2026-01-01T01:00:00Z", 0.4);
        assert_eq!((reset.kind, reset.counted_milli_wh), (StepKind::Reset, 400_000));
        // 23 kW for one hour is the most a meter can see; one Wh more is impossible.
        assert_eq!(kind("2026-01-01T01:00:00Z", 123.0).kind, StepKind::Normal);
        let jump = kind("2026-01-01T01:00:00Z", 123.001);
        assert_eq!(
            (jump.kind, jump.counted_milli_wh, jump.quarantined_milli_wh),
            (StepKind::Quarantined, 0, 23_001_000)
        );
        let wrap = kind("2026-01-01T01:00:00Z", 42_949.67 - 32_950.0);
        assert_eq!(wrap.kind, StepKind::Quarantined);
        assert_eq!(kind("2026-01-01T01:00:00Z", 50.0).kind, StepKind::Replacement);

        let near_top = reading("2026-01-01T00:00:00Z", 9_999.5);
        let rollover = classify(near_top, reading("2026-01-01T01:00:00Z", 0.7), &rules);
        assert_eq!((rollover.kind, rollover.counted_milli_wh), (StepKind::Rollover, 1_190_000));
    }

    #[test]
    fn london_hours_and_dst_days() {
        let london = tz("Europe/London");
        // Spring forward 2013-03-31 01:00 UTC: local 00:00-01:00 GMT, then 02:00 BST.
        let before = hour_bucket(ts("2013-03-31T00:30:00Z"), &london);
        assert_eq!((before.local_hour, before.end), (0, ts("2013-03-31T01:00:00Z")));
        let after = hour_bucket(ts("2013-03-31T01:30:00Z"), &london);
        assert_eq!((after.local_hour, after.start), (2, ts("2013-03-31T01:00:00Z")));
        // Fall back 2013-10-27 01:00 UTC: 01:00 BST and 01:00 GMT are two buckets.
        let first = hour_bucket(ts("2013-10-27T00:30:00Z"), &london);
        let second = hour_bucket(ts("2013-10-27T01:30:00Z"), &london);
        assert_eq!((first.local_hour, second.local_hour), (1, 1));
        assert_eq!((first.utc_offset_seconds, second.utc_offset_seconds), (3600, 0));
        assert_ne!(first.start, second.start);
    }

    #[test]
    fn half_hour_and_three_quarter_hour_zones() {
        let kolkata = hour_bucket(ts("2026-01-01T10:10:00Z"), &tz("Asia/Kolkata"));
        assert_eq!((kolkata.start, kolkata.local_hour), (ts("2026-01-01T09:30:00Z"), 15));
        let kathmandu = hour_bucket(ts("2026-01-01T10:10:00Z"), &tz("Asia/Kathmandu"));
        // 10:10 UTC is 15:55 at +05:45: the local hour 15 started at 09:15 UTC.
        assert_eq!((kathmandu.start, kathmandu.local_hour), (ts("2026-01-01T09:15:00Z"), 15));
    }

    #[test]
    fn lord_howe_half_hour_shift_cuts_hours() {
        let lord_howe = tz("Australia/Lord_Howe");
        // 2026-10-04 02:00 local (+10:30) jumps to 02:30 (+11): 15:30 UTC on the 3rd.
        let cut = hour_bucket(ts("2026-10-03T15:40:00Z"), &lord_howe);
        assert_eq!(
            (cut.start, cut.end, cut.local_hour),
            (ts("2026-10-03T15:30:00Z"), ts("2026-10-03T16:00:00Z"), 2)
        );
        // 2026-04-05 02:00 local (+11) falls back to 01:30 (+10:30): 15:00 UTC on the 4th.
        let repeated = hour_bucket(ts("2026-04-04T15:10:00Z"), &lord_howe);
        assert_eq!(
            (repeated.start, repeated.end, repeated.local_hour),
            (ts("2026-04-04T15:00:00Z"), ts("2026-04-04T15:30:00Z"), 1)
        );
    }

    #[test]
    fn spread_is_proportional_and_exact() {
        let mut parts = Vec::new();
        spread(ts("2026-01-01T00:30:00Z"), ts("2026-01-01T02:00:00Z"), 3_000_001, &TimeZone::UTC, |b, e| {
            parts.push((b.local_hour, e))
        });
        assert_eq!(parts, vec![(0, 1_000_000), (1, 2_000_001)]);
    }

    #[test]
    fn jitter_keeps_the_baseline() {
        let readings = [
            reading("2026-01-01T00:00:00Z", 100.0),
            reading("2026-01-01T00:20:00Z", 99.9996),
            reading("2026-01-01T00:40:00Z", 100.002),
        ];
        let rollup = account(&readings, &TimeZone::UTC, &Rules::default());
        assert_eq!(rollup.counted_milli_wh(), 2_000);
        assert_eq!(rollup.steps[0].kind, StepKind::Jitter);
        assert_eq!(rollup.steps[1].baseline, readings[0]);
    }

    #[test]
    fn merge_prefers_the_higher_counter_at_equal_time() {
        let a = reading("2026-01-01T00:00:00Z", 1.0);
        let b = reading("2026-01-01T00:00:00Z", 2.0);
        let c = reading("2026-01-01T00:10:00Z", 3.0);
        let (merged, losers) = merge(&[a, c], &[b, c]);
        assert_eq!(merged, vec![b, c]);
        assert_eq!(losers, vec![a]);
        let (merged_other_order, _) = merge(&[b], &[a, c]);
        assert_eq!(merged_other_order, merged);
    }
}
