//! The device registry and device state through the real Kafka and PostgreSQL: device
//! events on a topic of the test's own next to telemetry (London January 2013, real
//! household data), consumed by one processor in one consumer group.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{connect, device_event, half_hours, produce, reading_at, start_processor, wait_for};
use jiff::{SignedDuration, Timestamp};
use smartmeter_core::billing::events::{PeriodEvent, QualityFlag};
use smartmeter_core::device_events::{
    DeviceDecommissioned, DeviceEvent, DeviceRegistered, DeviceStatusChanged, DeviceUpdated, StatusReason,
};
use smartmeter_core::service::testkit::{self, TestDatabase};
use smartmeter_core::DeviceId;
use smartmeter_processor::store::db_precision;
use smartmeter_processor::Config;

struct Setup {
    db: TestDatabase,
    config: Config,
    brokers: String,
    telemetry: String,
    events: String,
}

async fn setup(name: &str) -> Setup {
    let db = TestDatabase::create(name).await.unwrap();
    let brokers = testkit::kafka_brokers();
    let telemetry = testkit::unique_name("smartmeter.telemetry.test");
    let events = testkit::unique_name("smartmeter.device-events.test");
    let periods = testkit::unique_name("smartmeter.billing-periods.test");
    testkit::create_topic(&brokers, &telemetry, 3).await.unwrap();
    testkit::create_topic(&brokers, &events, 3).await.unwrap();
    testkit::create_topic(&brokers, &periods, 3).await.unwrap();
    let config = Config {
        brokers: brokers.clone(),
        database_url: db.url.clone(),
        group_id: testkit::unique_name("processor-test"),
        topic: telemetry.clone(),
        device_events_topic: Some(events.clone()),
        billing_periods_topic: periods,
        default_time_zone: "Europe/London".into(),
        period_grace: SignedDuration::from_hours(1),
        housekeeping_interval: Duration::from_millis(200),
        ..Config::local_defaults()
    };
    Setup { db, config, brokers, telemetry, events }
}

fn id(text: &str) -> DeviceId {
    DeviceId::parse(text).unwrap()
}

/// MAC000002's January as counter readings of `device` (received now), and one more
/// reading at 02:00 on 1 February (so that January closes in London, grace 1 h).
fn january(device: &str) -> Vec<(String, String)> {
    let rows = half_hours(&["MAC000002"]);
    let now = Timestamp::now();
    let mut counter_wh = 0;
    let mut out = vec![(device.to_owned(), reading_at(device, rows[0].1, 0, now, "fw-1"))];
    for (_, start, wh) in &rows {
        counter_wh += wh;
        let end = *start + SignedDuration::from_mins(30);
        out.push((device.to_owned(), reading_at(device, end, counter_wh, now, "fw-1")));
    }
    let after = "2013-02-01T02:00:00Z".parse().unwrap();
    out.push((device.to_owned(), reading_at(device, after, counter_wh + 200, now, "fw-2")));
    out
}

fn registered(device: &str, zone: &str) -> DeviceEvent {
    DeviceEvent::Registered(DeviceRegistered {
        device_id: id(device),
        name: Some(format!("Meter {device}")),
        location: Some("London".into()),
        time_zone: zone.into(),
        tariff_id: Some("uk_standard".into()),
        sanctioned_load_kw: None,
        customer_id: Some("cust-7".into()),
    })
}

/// A device's energy and periods with the device id left out, for comparing devices.
async fn tables(url: &str, device: &str) -> (BTreeMap<String, i64>, BTreeMap<String, i64>, Vec<String>) {
    let client = connect(url).await;
    let hourly = client
        .query(
            "SELECT bucket_start::text || ' ' || local_date || ' ' || local_hour || ' ' || utc_offset_seconds,
                    energy_milli_wh FROM energy_hourly WHERE device_id = $1",
            &[&device],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    let daily = client
        .query("SELECT local_date::text, energy_milli_wh FROM energy_daily WHERE device_id = $1", &[&device])
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    let periods = client
        .query(
            "SELECT month || ' ' || time_zone || ' ' || starts_at || ' ' || ends_at || ' ' || status
             FROM billing_periods WHERE device_id = $1 ORDER BY month",
            &[&device],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    (hourly, daily, periods)
}

async fn period(url: &str, device: &str, month: &str) -> (String, i32, PeriodEvent) {
    let client = connect(url).await;
    let row = client
        .query_one(
            "SELECT status, revision, published FROM billing_periods WHERE device_id = $1 AND month = $2::text::date",
            &[&device, &month],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1), serde_json::from_value(row.get(2)).unwrap())
}

/// The same January in Asia/Kolkata three ways: registered there before any telemetry
/// (A), discovered in London then registered in Kolkata (B), registered in London then
/// updated to Kolkata (C). B and C are re-bucketed; all three end with the same hours,
/// days and periods, and the January that B and C had closed in London is adjusted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_time_zone_rebuckets_energy_and_adjusts_closed_periods() {
    let s = setup("device_zone").await;
    let p = format!("z{}", std::process::id());
    let (a, b, c) = (format!("{p}-a"), format!("{p}-b"), format!("{p}-c"));
    let processor = start_processor(&s.config);

    let t0: Timestamp = "2026-02-01T00:00:00Z".parse().unwrap();
    produce(
        &s.brokers,
        &s.events,
        &[
            device_event(registered(&a, "Asia/Kolkata"), t0, "a1"),
            device_event(registered(&c, "Europe/London"), t0, "c1"),
        ],
    )
    .await;
    wait_for(&s.db.url, "SELECT count(*) FROM devices WHERE lifecycle = 'registered'", 2).await;
    let mut telemetry = january(&a);
    telemetry.extend(january(&b));
    telemetry.extend(january(&c));
    produce(&s.brokers, &s.telemetry, &telemetry).await;
    wait_for(&s.db.url, "SELECT count(*) FROM readings", telemetry.len() as i64).await;
    wait_for(&s.db.url, "SELECT count(*) FROM billing_periods WHERE status = 'closed'", 3).await;

    // London January of B and C closed (2013-01 ends at 00:00 UTC in London).
    for device in [&b, &c] {
        let (status, revision, event) = period(&s.db.url, device, "2013-01-01").await;
        assert_eq!((status.as_str(), revision, event.time_zone.as_str()), ("closed", 0, "Europe/London"));
    }
    let t1 = t0 + SignedDuration::from_hours(1);
    let mut update = DeviceUpdated::of(id(&c));
    update.time_zone = Some("Asia/Kolkata".into());
    produce(
        &s.brokers,
        &s.events,
        &[
            device_event(registered(&b, "Asia/Kolkata"), t1, "b1"),
            device_event(DeviceEvent::Updated(update), t1, "c2"),
        ],
    )
    .await;
    wait_for(&s.db.url, "SELECT count(*) FROM billing_periods WHERE revision = 1", 2).await;
    processor.stop().await;

    let expected = tables(&s.db.url, &a).await;
    assert!(expected.0.values().all(|e| *e != 0) && !expected.0.is_empty());
    let first_hour = expected.0.keys().next().unwrap().clone();
    assert!(first_hour.contains(" 5 19800"), "Kolkata hours start at :30 UTC: {first_hour}");
    for device in [&b, &c] {
        assert_eq!(tables(&s.db.url, device).await, expected, "{device} re-bucketed equals {a}");
        let (status, revision, adjusted) = period(&s.db.url, device, "2013-01-01").await;
        let (_, _, direct) = period(&s.db.url, &a, "2013-01-01").await;
        assert_eq!(
            (status.as_str(), revision, adjusted.revision),
            ("closed", 1, 1),
            "{device}: PeriodAdjusted"
        );
        assert_eq!(adjusted.time_zone, "Asia/Kolkata");
        assert_eq!(
            (adjusted.energy_milli_wh, adjusted.starts_at, adjusted.ends_at, &adjusted.closing_read),
            (direct.energy_milli_wh, direct.starts_at, direct.ends_at, &direct.closing_read)
        );
    }
    let client = connect(&s.db.url).await;
    type DeviceRow = (String, String, String, Option<String>, Option<String>);
    let devices: Vec<DeviceRow> = client
        .query(
            "SELECT device_id, lifecycle, time_zone, customer_id, firmware_version FROM devices ORDER BY device_id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4)))
        .collect();
    for (device, lifecycle, zone, customer, firmware) in &devices {
        assert_eq!((lifecycle.as_str(), zone.as_str()), ("registered", "Asia/Kolkata"), "{device}");
        assert_eq!(customer.as_deref(), Some("cust-7"));
        assert_eq!(firmware.as_deref(), Some("fw-2"), "the firmware of the newest reading");
    }
    // Every event the processor emitted for periods: A closed once; B and C closed in
    // London, then adjusted.
    let kinds: Vec<(String, String, String)> = client
        .query(
            "SELECT event_key, payload->>'type', payload->'data'->>'month' FROM outbox
             WHERE payload->>'type' LIKE '%period%' ORDER BY event_key, seq",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect();
    let closed = "dev.smartmeter.billing.period-closed.v1".to_owned();
    let adjusted = "dev.smartmeter.billing.period-adjusted.v1".to_owned();
    let jan = "2013-01-01".to_owned();
    assert_eq!(
        kinds,
        [
            (a.clone(), closed.clone(), jan.clone()),
            (b.clone(), closed.clone(), jan.clone()),
            (b.clone(), adjusted.clone(), jan.clone()),
            (c.clone(), closed, jan.clone()),
            (c.clone(), adjusted, jan),
        ]
    );
    s.db.drop_database().await.unwrap();
}

/// Decommissioning at 12:00 on 20 January: the open January closes with the final
/// read (PeriodClosed, flagged), readings after it are stored but never counted and
/// open no February; the same whether they arrive after the event (D) or before it (E,
/// set aside then, its closed January adjusted). Registering the device again is
/// refused and kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decommissioning_closes_the_period_with_the_final_read_and_counts_nothing_after() {
    let s = setup("device_decommission").await;
    let p = format!("d{}", std::process::id());
    let (d, e) = (format!("{p}-d"), format!("{p}-e"));
    let at: Timestamp = "2013-01-20T12:00:00Z".parse().unwrap();
    let processor = start_processor(&s.config);

    let all_d = january(&d);
    let all_e = january(&e);
    let before = |messages: &[(String, String)]| -> usize {
        messages
            .iter()
            .filter(|(_, value)| {
                let reading: smartmeter_core::Reading = serde_json::from_str(value).unwrap();
                reading.timestamp <= at
            })
            .count()
    };
    let split = before(&all_d);
    // D: readings up to the decommissioning, the event, then the rest. E: all, then the event.
    produce(&s.brokers, &s.telemetry, &all_d[..split]).await;
    produce(&s.brokers, &s.telemetry, &all_e).await;
    wait_for(&s.db.url, "SELECT count(*) FROM readings", (split + all_e.len()) as i64).await;
    let decommission = |device: &str| {
        DeviceEvent::Decommissioned(DeviceDecommissioned {
            device_id: id(device),
            reason: Some("removed".into()),
        })
    };
    produce(
        &s.brokers,
        &s.events,
        &[device_event(decommission(&d), at, "d1"), device_event(decommission(&e), at, "e1")],
    )
    .await;
    wait_for(&s.db.url, "SELECT count(*) FROM devices WHERE lifecycle = 'decommissioned'", 2).await;
    produce(&s.brokers, &s.telemetry, &all_d[split..]).await;
    wait_for(&s.db.url, "SELECT count(*) FROM readings", (all_d.len() + all_e.len()) as i64).await;
    produce(&s.brokers, &s.events, &[device_event(registered(&d, "Europe/London"), at, "d2")]).await;
    wait_for(&s.db.url, "SELECT count(*) FROM device_event_rejects", 1).await;
    processor.stop().await;

    let expected_wh: i64 = {
        let rows = half_hours(&["MAC000002"]);
        rows.iter()
            .filter(|(_, start, _)| *start + SignedDuration::from_mins(30) <= at)
            .map(|(_, _, wh)| wh)
            .sum()
    };
    // E's January had closed (a reading two hours into February arrived) before the
    // decommissioning was read: it is adjusted, not rewritten.
    for (device, expected_revision) in [(&d, 0), (&e, 1)] {
        let (status, revision, event) = period(&s.db.url, device, "2013-01-01").await;
        assert_eq!((status.as_str(), revision), ("closed", expected_revision), "{device}");
        assert_eq!(event.energy_milli_wh, expected_wh * 1000, "{device}: energy up to the decommissioning");
        assert_eq!(event.closing_read.as_ref().unwrap().at, at, "{device}: the final read");
        assert!(event.quality_flags.contains(&QualityFlag::Decommissioned));
        let (hourly, daily, periods) = tables(&s.db.url, device).await;
        assert_eq!(periods.len(), 1, "{device}: no February: {periods:?}");
        assert_eq!(daily.values().sum::<i64>(), expected_wh * 1000);
        assert_eq!(hourly.values().sum::<i64>(), expected_wh * 1000);
        assert!(daily.keys().all(|date| date.as_str() <= "2013-01-20"));
    }
    let client = connect(&s.db.url).await;
    let after: Vec<(String, i64, i64)> = client
        .query(
            "SELECT device_id, count(*) FILTER (WHERE after_decommission AND counted_milli_wh = 0
                                                 AND counter_class = 'decommissioned'),
                    count(*) FILTER (WHERE ts > '2013-01-20T12:00:00Z')
             FROM readings GROUP BY device_id ORDER BY device_id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect();
    let later = (all_d.len() - split) as i64;
    assert_eq!(after, [(d.clone(), later, later), (e.clone(), later, later)]);
    let reject: (String, String) = client
        .query_one("SELECT reason, lifecycle FROM device_event_rejects, devices WHERE device_id = $1", &[&d])
        .await
        .map(|row| (row.get(0), row.get(1)))
        .unwrap();
    assert!(reject.0.contains("decommissioning is final"), "{}", reject.0);
    assert_eq!(reject.1, "decommissioned");
    let events: i64 = client
        .query_one("SELECT count(*) FROM outbox WHERE payload->>'type' LIKE '%period%'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(events, 3, "D: PeriodClosed; E: PeriodClosed (in London, before), PeriodAdjusted");
    s.db.drop_database().await.unwrap();
}

/// Online and offline from the meter's birth and will, from telemetry and from
/// silence; newest wins, so replaying the events changes nothing; the processor's
/// changes are published to the device-events topic with deterministic ids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_follows_birth_will_telemetry_and_silence() {
    let mut s = setup("device_status").await;
    s.config.inactivity_timeout = SignedDuration::from_secs(4);
    let device = format!("s{}", std::process::id());
    let processor = start_processor(&s.config);
    let state = |url: String, device: String| async move {
        let client = connect(&url).await;
        let row = client
            .query_one(
                "SELECT online, status_reason, status_changed_at, last_seen_at, firmware_version
                 FROM devices WHERE device_id = $1",
                &[&device],
            )
            .await
            .unwrap();
        type State = (Option<bool>, Option<String>, Option<Timestamp>, Option<Timestamp>, Option<String>);
        let state: State = (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
        state
    };
    let status = |online: bool, reason: StatusReason, at: Timestamp| {
        let change = DeviceStatusChanged { device_id: id(&device), online, reason, at };
        let event_id = change.event_id();
        device_event(DeviceEvent::StatusChanged(change), at, &event_id)
    };

    // Birth, then readings received over the next second.
    let birth_at = db_precision(Timestamp::now());
    produce(&s.brokers, &s.events, &[status(true, StatusReason::Birth, birth_at)]).await;
    let received: Vec<Timestamp> = (1..=5).map(|i| birth_at + SignedDuration::from_millis(200 * i)).collect();
    let meter_time: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
    let readings: Vec<(String, String)> = received
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let at = meter_time + SignedDuration::from_secs(10 * i as i64);
            (device.clone(), reading_at(&device, at, 1000 + i as i64, *r, "2.1.0"))
        })
        .collect();
    produce(&s.brokers, &s.telemetry, &readings).await;
    wait_for(&s.db.url, "SELECT count(*) FROM readings", 5).await;
    let (online, reason, _, last_seen, firmware) = state(s.db.url.clone(), device.clone()).await;
    assert_eq!((online, firmware.as_deref()), (Some(true), Some("2.1.0")));
    assert_eq!(last_seen, Some(received[4]));
    let telemetry_online = reason.as_deref() == Some("telemetry");

    // Silence: offline at the last reading's receive time plus the timeout.
    wait_for(&s.db.url, "SELECT count(*) FROM devices WHERE online = false", 1).await;
    let (_, reason, changed_at, _, _) = state(s.db.url.clone(), device.clone()).await;
    let silent_at = received[4] + SignedDuration::from_secs(4);
    assert_eq!((reason.as_deref(), changed_at), (Some("inactivity"), Some(silent_at)));

    // Telemetry again: online, by telemetry, at its receive time.
    let back = db_precision(Timestamp::now());
    produce(
        &s.brokers,
        &s.telemetry,
        &[(
            device.clone(),
            reading_at(&device, meter_time + SignedDuration::from_secs(60), 2000, back, "2.1.0"),
        )],
    )
    .await;
    wait_for(&s.db.url, "SELECT count(*) FROM devices WHERE online", 1).await;
    let (_, reason, changed_at, _, _) = state(s.db.url.clone(), device.clone()).await;
    assert_eq!((reason.as_deref(), changed_at), (Some("telemetry"), Some(back)));

    // A last will after it, then an older birth replayed and the will twice: the will stands.
    let will_at = back + SignedDuration::from_millis(500);
    produce(
        &s.brokers,
        &s.events,
        &[
            status(false, StatusReason::LastWill, will_at),
            status(true, StatusReason::Birth, birth_at),
            status(false, StatusReason::LastWill, will_at),
        ],
    )
    .await;
    wait_for(&s.db.url, "SELECT count(*) FROM devices WHERE status_reason = 'last_will'", 1).await;
    // Let the processor read its own published changes back (a no-op, newest wins).
    wait_for(&s.db.url, "SELECT (count(*) = 0)::int::bigint FROM outbox WHERE published_at IS NULL", 1).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    processor.stop().await;
    let (online, reason, changed_at, _, _) = state(s.db.url.clone(), device.clone()).await;
    assert_eq!((online, reason.as_deref(), changed_at), (Some(false), Some("last_will"), Some(will_at)));

    // What the processor published: the silence and the return (and the first reading's
    // online if it was read before the birth), each once, with deterministic ids.
    let client = connect(&s.db.url).await;
    let published: Vec<(String, serde_json::Value)> = client
        .query("SELECT event_id, payload->'data' FROM outbox WHERE topic = $1 ORDER BY seq", &[&s.events])
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    let mut expected = vec![
        DeviceStatusChanged {
            device_id: id(&device),
            online: false,
            reason: StatusReason::Inactivity,
            at: silent_at,
        },
        DeviceStatusChanged {
            device_id: id(&device),
            online: true,
            reason: StatusReason::Telemetry,
            at: back,
        },
    ];
    if telemetry_online {
        expected.insert(
            0,
            DeviceStatusChanged {
                device_id: id(&device),
                online: true,
                reason: StatusReason::Telemetry,
                at: received[0],
            },
        );
    }
    let got: Vec<(String, DeviceStatusChanged)> =
        published.into_iter().map(|(id, data)| (id, serde_json::from_value(data).unwrap())).collect();
    assert_eq!(got, expected.into_iter().map(|c| (c.event_id(), c)).collect::<Vec<_>>());
    s.db.drop_database().await.unwrap();
}
