//! Tariff events through the running worker (real Kafka and PostgreSQL):
//!
//! - bad versions (overlapping or unordered slabs, a negative rate deep inside a
//!   choice, an unknown time zone, a float, a version out of order, a changed
//!   re-publication) and a bad assignment are each recorded in `billing_rejects` with
//!   a reason, and nothing of them is applied;
//! - a new utility's tariff, written here purely as JSON from the same kinds of parts
//!   (time-of-use bands across midnight, telescopic slabs, a levy, a daily standing
//!   charge, a tax on named lines, a minimum, total rounding), is published, assigned
//!   and bills a real London January to the penny of the arithmetic done in this test.

mod common;

use std::collections::BTreeMap;

use common::*;
use jiff::civil::date;
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use serde_json::{json, Value};
use smartmeter_core::billing::events::{
    TariffAssigned, PERIOD_CLOSED, TARIFF_ASSIGNED, TARIFF_VERSION_PUBLISHED,
};
use smartmeter_core::billing::{InvoiceLine, TariffDocument};
use smartmeter_core::service::testkit;
use smartmeter_core::DeviceId;

/// "Riverside Power": not a real utility. The structure is the test's point; the rates
/// are illustrative (of the order of UK 2013 prices); the energy is real.
fn riverside(tariff_id: &str) -> Value {
    json!({
        "tariff_id": tariff_id, "version": 1, "effective_from": "2012-04-01",
        "title": "Riverside Power Home Time-of-Use", "currency": "GBP", "time_zone": "Europe/London",
        "rounding": {"line": {"increment": "0.01", "mode": "half_up"},
                     "total": {"increment": "0.05", "mode": "half_up", "line_name": "rounding to 5p"}},
        "components": [
            {"kind": "time_of_use", "group": "energy", "bands": [
                {"name": "energy night", "from": "23:00", "to": "07:00", "rate": "0.0832"},
                {"name": "energy day", "from": "07:00", "to": "16:00", "rate": "0.1450"},
                {"name": "energy peak", "from": "16:00", "to": "19:00", "rate": "0.2210"},
                {"name": "energy evening", "from": "19:00", "to": "23:00", "rate": "0.1450"}]},
            {"kind": "slabs", "group": "network", "pricing": "telescopic", "slabs": [
                {"name": "network first 150 kWh", "up_to_kwh": "150", "rate": "0.0210"},
                {"name": "network 150-400 kWh", "up_to_kwh": "400", "rate": "0.0285"},
                {"name": "network above 400 kWh", "up_to_kwh": null, "rate": "0.0340"}]},
            {"kind": "per_kwh", "name": "climate levy", "group": "levy", "rate": "0.0052"},
            {"kind": "fixed", "name": "standing charge", "group": "standing", "per": "day", "rate": "0.1644"},
            {"kind": "percent", "name": "VAT 5%", "group": "vat", "percent": "5",
             "of": ["energy", "network", "levy", "standing"]},
            {"kind": "minimum", "name": "minimum bill top-up", "group": "minimum", "per": "bill", "rate": "12.00"}
        ]
    })
}

fn document(value: &Value) -> TariffDocument {
    serde_json::from_value(value.clone()).unwrap()
}

/// A TariffVersionPublished envelope whose document is raw JSON (it may not even
/// parse as a document).
fn raw_version_event(key: &str, id: &str, document: Value) -> (String, String) {
    (
        key.to_owned(),
        envelope_json(id.to_owned(), TARIFF_VERSION_PUBLISHED, key, &json!({"document": document})),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tariff_events_are_refused_whole_and_a_new_utility_needs_no_code() {
    let brokers = testkit::kafka_brokers();
    let topics = Topics::create(&brokers).await;
    let db = database("billing_tariffs").await;
    let device = format!("{}-MAC000002", testkit::unique_name("bt").replace('_', "x"));
    let tariff_id = "riverside_home_tou";

    let mut overlapping = riverside("bad_overlapping");
    overlapping["components"][1]["slabs"][1]["up_to_kwh"] = json!("100");
    let mut unordered = riverside("bad_unordered");
    unordered["components"][1]["slabs"][0]["up_to_kwh"] = json!("400");
    unordered["components"][1]["slabs"][1]["up_to_kwh"] = json!("150");
    let mut negative = riverside("bad_negative");
    negative["components"].as_array_mut().unwrap().push(json!(
        {"kind": "choose", "by": "total_kwh", "bands": [
            {"up_to_kwh": "100", "then": [{"kind": "per_kwh", "name": "small user rebate", "group": "rebate", "rate": "-0.01"}]},
            {"up_to_kwh": null, "then": []}]}
    ));
    let mut unknown_zone = riverside("bad_zone");
    unknown_zone["time_zone"] = json!("Europe/Atlantis");
    let mut float_rate = riverside("bad_float");
    float_rate["components"][2]["rate"] = json!(0.0052);
    // Version 2 of the good tariff dated on version 1's day: out of order.
    let mut same_day = riverside(tariff_id);
    same_day["version"] = json!(2);
    same_day["components"][3]["rate"] = json!("0.2000");
    // Version 1 again with another rate: a published version never changes.
    let mut changed = riverside(tariff_id);
    changed["components"][3]["rate"] = json!("0.1700");

    let bad_assignment = TariffAssigned {
        device_id: DeviceId::parse(&device).unwrap(),
        tariff_id: tariff_id.to_owned(),
        effective_from: date(2012, 4, 1),
        sanctioned_load_kw: None,
        phase: None,
        connected_load_kw: Some(dec!(-3)),
    };
    let events = vec![
        raw_version_event("bad_overlapping", "t-overlapping", overlapping),
        raw_version_event("bad_unordered", "t-unordered", unordered),
        raw_version_event("bad_negative", "t-negative", negative),
        raw_version_event("bad_zone", "t-zone", unknown_zone),
        raw_version_event("bad_float", "t-float", float_rate),
        version_event(&document(&riverside(tariff_id))),
        raw_version_event(tariff_id, "t-same-day", same_day),
        raw_version_event(tariff_id, "t-changed", changed),
        (
            tariff_id.to_owned(),
            envelope_json(bad_assignment.event_id(), TARIFF_ASSIGNED, &device, &bad_assignment),
        ),
        assignment_event(&device, tariff_id, date(2012, 4, 1)),
    ];
    produce(&brokers, &topics.tariffs, &events).await;

    let rows = half_hours();
    let period = january_period(&device, "MAC000002", &rows);
    let period_json = envelope_json(period.event_id(), PERIOD_CLOSED, &device, &period);
    produce(&brokers, &topics.periods, &[(device.clone(), period_json)]).await;

    let worker = start_worker(worker_config(&db.url, &topics));
    wait_for(&db.url, "SELECT count(*) FROM billing_rejects", 8, 120).await;
    wait_for(&db.url, "SELECT count(*) FROM invoices", 1, 60).await;
    worker.stop().await;

    let client = connect(&db.url).await;
    let rejects: BTreeMap<String, (String, String)> = client
        .query("SELECT coalesce(event_id, ''), error_code, reason FROM billing_rejects", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), (row.get(1), row.get(2))))
        .collect();
    let reason =
        |id: &str| rejects.get(id).unwrap_or_else(|| panic!("{id} not rejected: {rejects:?}")).clone();
    let expect = |id: &str, code: &str, words: &str| {
        let (error_code, reason) = reason(id);
        assert_eq!(error_code, code, "{id}: {reason}");
        assert!(reason.contains(words), "{id}: {reason:?} should say {words:?}");
    };
    expect(
        "t-overlapping",
        "tariff_refused",
        "limits must be strictly ascending, without overlap: 100 follows 150",
    );
    expect("t-unordered", "tariff_refused", "150 follows 400");
    expect("t-negative", "tariff_refused", "components[6].bands[0].then[0]: negative rate -0.01");
    expect("t-zone", "tariff_refused", "unknown time zone \"Europe/Atlantis\"");
    expect("t-float", "tariff_refused", "not a tariff document");
    expect("t-same-day", "tariff_refused", "does not follow the stored versions");
    expect("t-changed", "tariff_conflict", "a published version never changes");
    expect(&bad_assignment.event_id(), "assignment_refused", "negative connected load -3 kW");

    // Nothing of a refused event was applied: one version, one assignment.
    let versions: Vec<(String, i32)> = client
        .query("SELECT tariff_id, version FROM tariff_versions", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    assert_eq!(versions, [(tariff_id.to_owned(), 1)]);
    let stored: Value = client.query_one("SELECT document FROM tariff_versions", &[]).await.unwrap().get(0);
    assert_eq!(stored["components"][3]["rate"], "0.1644", "the changed re-publication left no trace");
    assert_eq!(
        count(&db.url, "SELECT count(*) FROM tariff_assignments WHERE connected_load_kw IS NULL").await,
        1
    );
    assert_eq!(count(&db.url, "SELECT count(*) FROM tariff_assignments").await, 1);

    // The new utility's bill, computed here from the hourly data.
    let row = client.query_one("SELECT lines, total FROM invoices", &[]).await.unwrap();
    let lines: Vec<InvoiceLine> = serde_json::from_value(row.get(0)).unwrap();
    let total: Decimal = row.get(1);
    let mut by_band = [Decimal::ZERO; 4];
    for hour in &period.period.hourly_energy {
        let band = match hour.hour_start.hour() {
            23 | 0..=6 => 0,
            7..=15 => 1,
            16..=18 => 2,
            _ => 3,
        };
        by_band[band] += hour.energy_kwh;
    }
    let energy = period.period.energy_kwh;
    assert!(energy > dec!(150) && energy < dec!(400), "MAC000002's January is {energy} kWh");
    let mut expected = vec![
        ("energy night", cents(by_band[0] * dec!(0.0832))),
        ("energy day", cents(by_band[1] * dec!(0.1450))),
        ("energy peak", cents(by_band[2] * dec!(0.2210))),
        ("energy evening", cents(by_band[3] * dec!(0.1450))),
        ("network first 150 kWh", cents(dec!(150) * dec!(0.0210))),
        ("network 150-400 kWh", cents((energy - dec!(150)) * dec!(0.0285))),
        ("climate levy", cents(energy * dec!(0.0052))),
        ("standing charge", cents(dec!(31) * dec!(0.1644))),
    ];
    let before_vat: Decimal = expected.iter().map(|(_, amount)| amount).sum();
    expected.push(("VAT 5%", cents(before_vat * dec!(5) / dec!(100))));
    let sum: Decimal = expected.iter().map(|(_, amount)| amount).sum();
    assert!(sum > dec!(12), "no minimum top-up at {sum}");
    let to_5p = (sum / dec!(0.05))
        .round_dp_with_strategy(0, rust_decimal::RoundingStrategy::MidpointAwayFromZero)
        * dec!(0.05);
    if to_5p != sum {
        expected.push(("rounding to 5p", to_5p - sum));
    }
    let got: Vec<(&str, Decimal)> = lines.iter().map(|line| (line.name.as_str(), line.amount)).collect();
    assert_eq!(got, expected);
    assert_eq!(total, to_5p);
    db.drop_database().await.unwrap();
    topics.delete(&brokers).await;
}
