//! When each reading goes out: all meters interleaved in time order, paced so that
//! simulated time runs `speedup` times faster than wall time (or unpaced).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use jiff::Timestamp;

use crate::counter::MeterReading;

/// A reading of meter `meter` (an index into the caller's meter list).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scheduled<'a> {
    pub meter: usize,
    pub reading: &'a MeterReading,
}

/// The readings of all meters inside `[from, to]` (both inclusive, either open), merged
/// in time order; equal times go in meter order. Each meter's readings must be in
/// time order.
pub fn interleave<'a>(
    meters: &'a [Vec<MeterReading>],
    from: Option<Timestamp>,
    to: Option<Timestamp>,
) -> Vec<Scheduled<'a>> {
    let past_end = |t: Timestamp| to.is_some_and(|last| t > last);
    // At most one entry per meter: (time, meter, index of its next reading).
    let mut heap = BinaryHeap::with_capacity(meters.len());
    for (meter, readings) in meters.iter().enumerate() {
        let first = from.map_or(0, |f| readings.partition_point(|r| r.timestamp < f));
        if let Some(reading) = readings.get(first).filter(|r| !past_end(r.timestamp)) {
            heap.push(Reverse((reading.timestamp, meter, first)));
        }
    }
    let mut out = Vec::with_capacity(meters.iter().map(Vec::len).sum());
    while let Some(Reverse((_, meter, index))) = heap.pop() {
        out.push(Scheduled { meter, reading: &meters[meter][index] });
        if let Some(next) = meters[meter].get(index + 1).filter(|r| !past_end(r.timestamp)) {
            heap.push(Reverse((next.timestamp, meter, index + 1)));
        }
    }
    out
}

/// Wall-clock offset, from the start of the replay, at which a reading `sim_elapsed`
/// after the first one is due; `None` when unpaced (`speedup` 0).
pub fn wall_offset(sim_elapsed: Duration, speedup: f64) -> Option<Duration> {
    (speedup > 0.0).then(|| sim_elapsed.div_f64(speedup))
}

/// Paces a replay against the wall clock.
#[derive(Debug, Clone, Copy)]
pub struct Pacer {
    speedup: f64,
    sim_start: Option<Timestamp>,
    wall_start: tokio::time::Instant,
}

impl Pacer {
    /// `speedup` 0 means as fast as possible.
    pub fn new(speedup: f64) -> Self {
        Self { speedup, sim_start: None, wall_start: tokio::time::Instant::now() }
    }

    /// Waits until the reading stamped `at` is due. The first call sets the origin.
    pub async fn wait_for(&mut self, at: Timestamp) {
        let sim_start = *self.sim_start.get_or_insert_with(|| {
            self.wall_start = tokio::time::Instant::now();
            at
        });
        let sim_elapsed = Duration::try_from(at.duration_since(sim_start)).unwrap_or(Duration::ZERO);
        if let Some(offset) = wall_offset(sim_elapsed, self.speedup) {
            tokio::time::sleep_until(self.wall_start + offset).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counter::ReadingKind;

    fn r(second: i64) -> MeterReading {
        MeterReading {
            timestamp: Timestamp::from_second(second).unwrap(),
            energy_mwh: second as u64,
            slot_energy_wh: 0,
            kind: ReadingKind::SlotEnd,
            seq: 0,
        }
    }

    fn order(s: &[Scheduled<'_>]) -> Vec<(usize, i64)> {
        s.iter().map(|s| (s.meter, s.reading.timestamp.as_second())).collect()
    }

    #[test]
    fn meters_interleave_in_time_order() {
        let meters = vec![vec![r(0), r(1800), r(3600)], vec![r(1800), r(5400)], vec![]];
        let all = interleave(&meters, None, None);
        assert_eq!(order(&all), [(0, 0), (0, 1800), (1, 1800), (0, 3600), (1, 5400)]);
    }

    #[test]
    fn from_and_to_are_inclusive() {
        let meters = vec![vec![r(0), r(1800), r(3600)], vec![r(1800), r(5400)]];
        let from = Some(Timestamp::from_second(1800).unwrap());
        let to = Some(Timestamp::from_second(3600).unwrap());
        assert_eq!(order(&interleave(&meters, from, to)), [(0, 1800), (1, 1800), (0, 3600)]);
        assert!(interleave(&meters, Some(Timestamp::from_second(9000).unwrap()), None).is_empty());
    }

    #[test]
    fn pacing_divides_simulated_time_by_the_speedup() {
        assert_eq!(wall_offset(Duration::from_secs(1800), 0.0), None);
        assert_eq!(wall_offset(Duration::from_secs(1800), 1800.0), Some(Duration::from_secs(1)));
        assert_eq!(wall_offset(Duration::from_secs(60), 1.0), Some(Duration::from_secs(60)));
    }

    #[tokio::test(start_paused = true)]
    async fn the_pacer_sleeps_until_due() {
        let mut pacer = Pacer::new(3600.0);
        let start = tokio::time::Instant::now();
        pacer.wait_for(Timestamp::from_second(0).unwrap()).await;
        assert_eq!(start.elapsed(), Duration::ZERO);
        pacer.wait_for(Timestamp::from_second(7200).unwrap()).await;
        assert_eq!(start.elapsed(), Duration::from_secs(2));
    }
}
