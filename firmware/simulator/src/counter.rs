//! A meter's cumulative energy counter, rebuilt from the energy of each half hour.
//!
//! The counter starts at 0 at the start of the meter's first known slot (a reading is
//! emitted there) and after each known slot a reading at the slot's END carries
//! `previous + slot energy`. With `points_per_slot = N > 1`, N evenly spaced readings
//! cover the slot, the counter interpolated linearly (floored to the mWh, exact at the
//! slot's end).
//!
//! The counter only ever adds known energy. A slot whose energy is unknown (`Null`) or
//! missing gets no reading at its end; the next known slot starts with a "resume"
//! reading at its START carrying the last known counter, so the energy of that slot is
//! attributed to that slot and not smeared over the hole. Across the hole the counter
//! stands still: the hole's energy is unknown, and it is not invented.
//!
//! All arithmetic is in integer milliwatt-hours (mWh, 1e-6 kWh); the values of the
//! London files are whole Wh.

use jiff::Timestamp;

/// Length of a slot, in seconds.
pub const SLOT_SECONDS: i64 = 1800;
/// The PZEM-004T v3 energy register's top (9999.99 kWh), in mWh. A replayed counter
/// must stay below it: the bridge refuses a larger `energy_kwh`.
pub const REGISTER_TOP_MWH: u64 = 9_999_990_000;
const MWH_PER_WH: u64 = 1_000;

/// One half hour of interval data. Slots are on the half-hour grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    pub start: Timestamp,
    /// Energy of the half hour starting at `start`; `None` when unknown.
    pub energy_wh: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReadingKind {
    /// The first reading of the meter, counter 0, at its first known slot's start.
    First,
    /// At the start of a known slot that follows a missing or unknown one.
    Resume,
    /// Inside a slot (only with `points_per_slot > 1`).
    Inside,
    /// At the end of a known slot.
    SlotEnd,
}

/// What the meter reports at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MeterReading {
    pub timestamp: Timestamp,
    /// The cumulative counter, in milliwatt-hours.
    pub energy_mwh: u64,
    /// Energy of the slot the reading belongs to, in Wh: the slot it ends or lies in,
    /// or for `First`/`Resume` the slot it begins. The derived gauges come from it.
    pub slot_energy_wh: u32,
    pub kind: ReadingKind,
    /// 0-based position in the meter's complete reading sequence; the payload's `seq`.
    /// It does not depend on a `--from`/`--to` cut.
    pub seq: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CounterError {
    #[error("{0} points per slot do not divide the half hour into whole seconds (use a divisor of 1800)")]
    PointsPerSlot(u32),
    #[error("slots are not strictly increasing on the half-hour grid at {0}")]
    Unordered(Timestamp),
    #[error("the counter would pass the meter register's top of 9999.99 kWh at {0}; replay a shorter range")]
    RegisterOverflow(Timestamp),
}

/// Checks a `points_per_slot` value: 1..=1800 and a divisor of 1800.
pub fn check_points_per_slot(points: u32) -> Result<u32, CounterError> {
    if points == 0 || i64::from(points) > SLOT_SECONDS || SLOT_SECONDS % i64::from(points) != 0 {
        Err(CounterError::PointsPerSlot(points))
    } else {
        Ok(points)
    }
}

/// The meter's readings for its slots (ordered, on the grid), in time order.
pub fn readings(slots: &[Slot], points_per_slot: u32) -> Result<Vec<MeterReading>, CounterError> {
    let points = check_points_per_slot(points_per_slot)?;
    let step_seconds = SLOT_SECONDS / i64::from(points);
    let mut out = Vec::with_capacity(slots.len() * (points as usize) + 1);
    let mut counter_mwh: u64 = 0;
    // End of the last known slot: where the counter was last reported.
    let mut reported_until: Option<Timestamp> = None;
    let mut previous_start: Option<Timestamp> = None;

    for slot in slots {
        let start = slot.start.as_second();
        if slot.start.subsec_nanosecond() != 0
            || start % SLOT_SECONDS != 0
            || previous_start.is_some_and(|p| p >= slot.start)
        {
            return Err(CounterError::Unordered(slot.start));
        }
        previous_start = Some(slot.start);
        let Some(energy_wh) = slot.energy_wh else { continue };
        let mut push = |timestamp: Timestamp, energy_mwh: u64, kind: ReadingKind| {
            let seq = out.len() as u64;
            out.push(MeterReading { timestamp, energy_mwh, slot_energy_wh: energy_wh, kind, seq });
        };
        if reported_until != Some(slot.start) {
            let kind = if reported_until.is_none() { ReadingKind::First } else { ReadingKind::Resume };
            push(slot.start, counter_mwh, kind);
        }
        let slot_mwh = u64::from(energy_wh) * MWH_PER_WH;
        for k in 1..=u64::from(points) {
            let at = Timestamp::from_second(start + step_seconds * k as i64)
                .map_err(|_| CounterError::Unordered(slot.start))?;
            let energy_mwh = counter_mwh + slot_mwh * k / u64::from(points);
            if energy_mwh > REGISTER_TOP_MWH {
                return Err(CounterError::RegisterOverflow(at));
            }
            let kind = if k == u64::from(points) { ReadingKind::SlotEnd } else { ReadingKind::Inside };
            push(at, energy_mwh, kind);
        }
        counter_mwh += slot_mwh;
        reported_until = Some(
            Timestamp::from_second(start + SLOT_SECONDS).map_err(|_| CounterError::Unordered(slot.start))?,
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(hh_mm: &str) -> Timestamp {
        format!("2013-01-01T{hh_mm}:00Z").parse().unwrap()
    }

    fn slot(hh_mm: &str, energy_wh: Option<u32>) -> Slot {
        Slot { start: at(hh_mm), energy_wh }
    }

    fn summary(readings: &[MeterReading]) -> Vec<(Timestamp, u64, ReadingKind)> {
        readings.iter().map(|r| (r.timestamp, r.energy_mwh, r.kind)).collect()
    }

    #[test]
    fn starts_at_zero_and_reports_each_slot_at_its_end() {
        let r = readings(&[slot("00:00", Some(219)), slot("00:30", Some(0)), slot("01:00", Some(241))], 1)
            .unwrap();
        assert_eq!(
            summary(&r),
            [
                (at("00:00"), 0, ReadingKind::First),
                (at("00:30"), 219_000, ReadingKind::SlotEnd),
                (at("01:00"), 219_000, ReadingKind::SlotEnd),
                (at("01:30"), 460_000, ReadingKind::SlotEnd),
            ]
        );
        assert_eq!(r.iter().map(|r| r.seq).collect::<Vec<_>>(), [0, 1, 2, 3]);
        assert_eq!(r[0].slot_energy_wh, 219);
        assert_eq!(r[3].slot_energy_wh, 241);
    }

    #[test]
    fn unknown_and_missing_slots_add_nothing_and_the_next_slot_resumes() {
        let r = readings(
            &[
                slot("00:00", Some(100)),
                slot("00:30", None),
                slot("01:00", Some(200)),
                slot("02:30", Some(50)),
            ],
            1,
        )
        .unwrap();
        assert_eq!(
            summary(&r),
            [
                (at("00:00"), 0, ReadingKind::First),
                (at("00:30"), 100_000, ReadingKind::SlotEnd),
                (at("01:00"), 100_000, ReadingKind::Resume),
                (at("01:30"), 300_000, ReadingKind::SlotEnd),
                (at("02:30"), 300_000, ReadingKind::Resume),
                (at("03:00"), 350_000, ReadingKind::SlotEnd),
            ]
        );
    }

    #[test]
    fn a_leading_null_slot_moves_the_start() {
        let r = readings(&[slot("00:00", None), slot("00:30", Some(7))], 1).unwrap();
        assert_eq!(
            summary(&r),
            [(at("00:30"), 0, ReadingKind::First), (at("01:00"), 7_000, ReadingKind::SlotEnd)]
        );
    }

    #[test]
    fn points_inside_a_slot_are_linear_and_exact_at_its_end() {
        let r = readings(&[slot("00:00", Some(1_001))], 3).unwrap();
        assert_eq!(
            summary(&r),
            [
                (at("00:00"), 0, ReadingKind::First),
                (at("00:10"), 333_666, ReadingKind::Inside),
                (at("00:20"), 667_333, ReadingKind::Inside),
                (at("00:30"), 1_001_000, ReadingKind::SlotEnd),
            ]
        );
    }

    #[test]
    fn points_per_slot_must_divide_the_half_hour() {
        for ok in [1, 2, 3, 6, 30, 60, 1800] {
            assert_eq!(check_points_per_slot(ok), Ok(ok));
        }
        for bad in [0, 7, 1801, 3600] {
            assert!(check_points_per_slot(bad).is_err());
        }
    }

    #[test]
    fn unordered_or_off_grid_slots_are_refused() {
        assert!(readings(&[slot("00:30", Some(1)), slot("00:00", Some(1))], 1).is_err());
        assert!(readings(&[slot("00:30", Some(1)), slot("00:30", Some(1))], 1).is_err());
        assert!(readings(&[slot("00:10", Some(1))], 1).is_err());
    }

    #[test]
    fn the_register_top_is_never_passed() {
        let slots: Vec<Slot> = (0..2_100)
            .map(|i| Slot {
                start: Timestamp::from_second(1_356_998_400 + i * SLOT_SECONDS).unwrap(),
                energy_wh: Some(4_800),
            })
            .collect();
        assert!(matches!(readings(&slots, 1), Err(CounterError::RegisterOverflow(_))));
        assert!(readings(&slots[..2_000], 1).is_ok());
    }
}
