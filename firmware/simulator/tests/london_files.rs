//! The real Low Carbon London files: every quirk count against the numbers measured in
//! shared/data/PROVENANCE.md, and the rebuilt counters against an independent decimal sum.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::str::FromStr;

use jiff::Timestamp;
use meter_simulator::counter::{self, MeterReading, ReadingKind, SLOT_SECONDS};
use meter_simulator::london::{self, Dataset, Gap};
use meter_simulator::payload::Kwh;
use rust_decimal::Decimal;
use smartmeter_core::DeviceId;

use common::{data_file, RAW_MAC000002, TEN_HOUSEHOLDS};

fn ts(text: &str) -> Timestamp {
    text.parse().unwrap()
}

fn load(name: &str) -> Dataset {
    london::load(&[data_file(name)]).unwrap()
}

/// Independent oracle: the file's values summed per household as decimals, each
/// rounded to the Wh (the float32 renderings), a row repeated with the same meter and
/// time counted once, `Null` skipped.
fn decimal_totals(path: &Path) -> BTreeMap<String, Decimal> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut seen = BTreeSet::new();
    let mut totals = BTreeMap::new();
    for line in text.lines().skip(1) {
        let fields: Vec<&str> = line.split(',').collect();
        let value = fields[2].trim();
        if fields[0] == "LCLid" || value == "Null" || !seen.insert((fields[0], fields[1])) {
            continue;
        }
        *totals.entry(fields[0].to_owned()).or_insert(Decimal::ZERO) +=
            Decimal::from_str(value).unwrap().round_dp(3);
    }
    totals
}

fn gap(device: &str, from: &str, missing_slots: u64) -> Gap {
    Gap { device_id: DeviceId::parse(device).unwrap(), from: ts(from), missing_slots }
}

/// Checks the invariants of one meter's readings against its slots.
fn check_readings(meter: &london::Meter, readings: &[MeterReading], points_per_slot: u32) {
    let known: BTreeMap<Timestamp, u32> =
        meter.slots.iter().filter_map(|s| s.energy_wh.map(|e| (s.start, e))).collect();
    let slot_ends = readings.iter().filter(|r| r.kind == ReadingKind::SlotEnd).count();
    assert_eq!(slot_ends, known.len(), "{}: one reading at the end of every known slot", meter.device_id);
    assert_eq!(readings[0].kind, ReadingKind::First);
    assert_eq!(readings[0].energy_mwh, 0);
    assert_eq!(readings[0].timestamp, *known.keys().next().unwrap());
    assert_eq!(
        readings.len(),
        known.len() * points_per_slot as usize
            + 1
            + readings.iter().filter(|r| r.kind == ReadingKind::Resume).count()
    );
    for pair in readings.windows(2) {
        let (before, after) = (&pair[0], &pair[1]);
        assert!(after.timestamp > before.timestamp, "{}: time order at {}", meter.device_id, after.timestamp);
        assert!(
            after.energy_mwh >= before.energy_mwh,
            "{}: counter fell at {}",
            meter.device_id,
            after.timestamp
        );
        assert_eq!(after.seq, before.seq + 1);
    }
    let mut last_end_mwh = 0;
    for reading in readings {
        match reading.kind {
            ReadingKind::SlotEnd => {
                let start = Timestamp::from_second(reading.timestamp.as_second() - SLOT_SECONDS).unwrap();
                let energy_wh = known[&start];
                assert_eq!(reading.energy_mwh - last_end_mwh, u64::from(energy_wh) * 1_000, "slot {start}");
                assert_eq!(reading.slot_energy_wh, energy_wh);
                last_end_mwh = reading.energy_mwh;
            }
            ReadingKind::First | ReadingKind::Resume => {
                assert!(known.contains_key(&reading.timestamp), "starts a known slot");
                assert_eq!(reading.energy_mwh, last_end_mwh, "nothing added across a hole");
            }
            ReadingKind::Inside => assert!(reading.energy_mwh >= last_end_mwh),
        }
    }
}

#[test]
fn ten_household_file_quirks_match_provenance() {
    let data = load(TEN_HOUSEHOLDS);
    let q = &data.quirks;
    assert_eq!(q.files, 1);
    assert_eq!(q.repeated_headers, 9);
    assert_eq!(q.data_rows, 14_102);
    assert_eq!(q.blank_lines, 0);
    assert_eq!(q.padded_values, 14_102, "every value is padded");
    assert_eq!(q.float32_values, 261);
    assert_eq!(q.exact_duplicates, 0);
    assert_eq!(q.nulls, 0);
    assert_eq!(q.off_grid, 0);
    assert_eq!(q.out_of_order_rows, 0);
    assert_eq!(q.zero_values, 264);
    assert_eq!(q.missing_slots, 11);
    assert_eq!(
        q.gaps,
        [
            gap("MAC000015", "2013-01-18T09:30:00Z", 1),
            gap("MAC000020", "2013-01-15T17:30:00Z", 1),
            gap("MAC000024", "2013-01-09T11:00:00Z", 1),
            gap("MAC000042", "2013-01-14T09:00:00Z", 6),
            gap("MAC000068", "2013-01-30T01:30:00Z", 1),
            gap("MAC000073", "2013-01-18T09:30:00Z", 1),
        ]
    );

    let ids: Vec<&str> = data.meters.iter().map(|m| m.device_id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "MAC000002",
            "MAC000006",
            "MAC000010",
            "MAC000015",
            "MAC000016",
            "MAC000020",
            "MAC000024",
            "MAC000042",
            "MAC000068",
            "MAC000073"
        ]
    );
    for meter in &data.meters {
        assert_eq!(meter.slots.first().unwrap().start, ts("2013-01-01T00:00:00Z"));
        let last = if meter.device_id.as_str() == "MAC000016" {
            "2013-01-16T00:00:00Z"
        } else {
            "2013-01-31T23:30:00Z"
        };
        assert_eq!(meter.slots.last().unwrap().start, ts(last), "{}", meter.device_id);
    }
    assert_eq!(data.meters[4].slots.len(), 721);
    let max = data.meters.iter().flat_map(|m| &m.slots).filter_map(|s| s.energy_wh).max();
    assert_eq!(max, Some(4_974));
}

#[test]
fn raw_file_quirks_match_provenance() {
    let data = load(RAW_MAC000002);
    let q = &data.quirks;
    assert_eq!(q.repeated_headers, 0);
    assert_eq!(q.data_rows, 24_158);
    assert_eq!(q.exact_duplicates, 17);
    assert_eq!(q.nulls, 1);
    assert_eq!(q.off_grid, 1);
    assert_eq!(q.padded_values, 24_157, "all but the Null row");
    assert_eq!(q.float32_values, 117);
    assert_eq!(q.missing_slots, 52);
    assert_eq!(q.zero_values, 21);
    assert_eq!(q.out_of_order_rows, 0);

    let null = &q.null_rows[0];
    assert_eq!(null.timestamp, ts("2012-12-19T12:37:27Z"));
    assert_eq!(null.at.line, 3_242);
    assert_eq!(q.off_grid_rows, q.null_rows);

    // One duplicate per month, always at midnight (monthly extract boundaries).
    let months: BTreeSet<String> =
        q.duplicate_rows.iter().map(|r| r.timestamp.strftime("%Y-%m").to_string()).collect();
    assert_eq!(months.len(), 17);
    for row in &q.duplicate_rows {
        assert_eq!(row.timestamp.as_second() % 86_400, 0, "{}", row.timestamp);
    }

    assert_eq!(data.meters.len(), 1);
    let meter = &data.meters[0];
    assert_eq!(meter.slots.len(), 24_158 - 17 - 1);
    assert_eq!(meter.slots.first().unwrap().start, ts("2012-10-12T00:30:00Z"));
    assert_eq!(meter.slots.last().unwrap().start, ts("2014-02-28T00:00:00Z"));
    // Both 2013 DST days have 48 slots: the timestamps are UTC, not UK clock time.
    for day in ["2013-03-31", "2013-10-27"] {
        let start = ts(&format!("{day}T00:00:00Z"));
        let n = meter
            .slots
            .iter()
            .filter(|s| s.start >= start && s.start.as_second() < start.as_second() + 86_400)
            .count();
        assert_eq!(n, 48, "{day}");
    }
}

#[test]
fn each_counter_ends_at_the_exact_decimal_sum_of_its_values() {
    for (name, points) in [(TEN_HOUSEHOLDS, 1), (RAW_MAC000002, 1), (TEN_HOUSEHOLDS, 6)] {
        let data = load(name);
        let totals = decimal_totals(&data_file(name));
        assert_eq!(totals.len(), data.meters.len());
        for meter in &data.meters {
            let readings = counter::readings(&meter.slots, points).unwrap();
            check_readings(meter, &readings, points);
            let last = readings.last().unwrap();
            assert_eq!(last.energy_mwh, meter.total_wh() * 1_000);
            let expected = totals[meter.device_id.as_str()];
            assert_eq!(
                Decimal::from_str(&Kwh(last.energy_mwh).to_string()).unwrap(),
                expected,
                "{}",
                meter.device_id
            );
        }
    }
}

#[test]
fn known_household_totals() {
    let data = load(TEN_HOUSEHOLDS);
    let totals: Vec<(&str, String)> =
        data.meters.iter().map(|m| (m.device_id.as_str(), Kwh(m.total_wh() * 1_000).to_string())).collect();
    assert_eq!(
        totals,
        [
            ("MAC000002", "359.872"),
            ("MAC000006", "82.819"),
            ("MAC000010", "894.303"),
            ("MAC000015", "357.774"),
            ("MAC000016", "22.025"),
            ("MAC000020", "280.498"),
            ("MAC000024", "1321.377"),
            ("MAC000042", "362.966"),
            ("MAC000068", "643.463"),
            ("MAC000073", "130.982"),
        ]
        .map(|(a, b)| (a, b.to_owned()))
    );
    let raw = load(RAW_MAC000002);
    assert_eq!(Kwh(raw.meters[0].total_wh() * 1_000).to_string(), "6095.672");
}

#[test]
fn the_raw_files_hole_gives_resume_readings() {
    let data = load(RAW_MAC000002);
    let readings = counter::readings(&data.meters[0].slots, 1).unwrap();
    let resumes = readings.iter().filter(|r| r.kind == ReadingKind::Resume).count();
    assert_eq!(
        resumes,
        data.quirks.gaps.len(),
        "one resume after every gap (the off-grid Null leaves no hole)"
    );
    assert_eq!(readings.len(), 24_140 + 1 + resumes);
}

#[test]
fn both_files_together_agree_on_mac000002() {
    // The 10-household file's January of MAC000002 is also in the raw file: the values
    // agree, so the overlap is counted as exact duplicates, not conflicts.
    let data = london::load(&[data_file(TEN_HOUSEHOLDS), data_file(RAW_MAC000002)]).unwrap();
    assert_eq!(data.quirks.files, 2);
    assert_eq!(data.meters.len(), 10);
    let ten = load(TEN_HOUSEHOLDS).quirks;
    let raw = load(RAW_MAC000002).quirks;
    let overlap = data.quirks.exact_duplicates - ten.exact_duplicates - raw.exact_duplicates;
    assert_eq!(overlap, 1_488, "all of January 2013");
}
