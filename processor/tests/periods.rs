//! Billing periods through the real Kafka and PostgreSQL: a London household's January
//! closes when a reading past the end plus grace arrives (PeriodClosed), and a late
//! reading inside the lateness that changes January publishes PeriodAdjusted.

mod common;

use std::time::Duration;

use common::{half_hours, payload, produce, run_until_count};
use jiff::Timestamp;
use smartmeter_core::billing::events::PeriodEvent;
use smartmeter_core::service::testkit::{self, TestDatabase};
use smartmeter_processor::Config;
use tokio_postgres::NoTls;

async fn period_event(url: &str, device: &str) -> (String, i32, PeriodEvent, bool) {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(connection);
    let row = client
        .query_one(
            "SELECT p.status, p.revision, p.published,
                    EXISTS (SELECT 1 FROM outbox o WHERE o.event_key = p.device_id AND o.published_at IS NULL)
             FROM billing_periods p WHERE p.device_id = $1 AND p.month = '2013-01-01'",
            &[&device],
        )
        .await
        .unwrap();
    let event: PeriodEvent = serde_json::from_value(row.get(2)).unwrap();
    (row.get(0), row.get(1), event, row.get(3))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn january_closes_then_a_late_reading_adjusts_it() {
    let rows = half_hours(&["MAC000002"]);
    let january_wh: i64 = rows.iter().map(|(_, _, wh)| wh).sum();
    let device = format!("p{}-MAC000002", std::process::id());
    let mut counter_wh = 0;
    let mut messages = vec![(device.clone(), payload(&device, rows[0].1, 0))];
    let mut boundary = None;
    for (_, start, wh) in &rows {
        counter_wh += wh;
        let end = *start + jiff::SignedDuration::from_mins(30);
        let message = (device.clone(), payload(&device, end, counter_wh));
        if end == "2013-02-01T00:00:00Z".parse::<Timestamp>().unwrap() {
            // Held back: it arrives late, after January has closed.
            boundary = Some(message);
        } else {
            messages.push(message);
        }
    }
    let boundary = boundary.expect("the file's last slot ends at February's start");
    let after_grace = "2013-02-01T02:00:00Z".parse().unwrap();
    messages.push((device.clone(), payload(&device, after_grace, counter_wh + 200)));

    let db = TestDatabase::create("processor_periods").await.unwrap();
    let brokers = testkit::kafka_brokers();
    let topic = testkit::unique_name("smartmeter.telemetry.test");
    testkit::create_topic(&brokers, &topic, 1).await.unwrap();
    let config = Config {
        brokers: brokers.clone(),
        database_url: db.url.clone(),
        group_id: testkit::unique_name("processor-test"),
        topic: topic.clone(),
        default_time_zone: "Europe/London".into(),
        period_grace: jiff::SignedDuration::from_hours(1),
        housekeeping_interval: Duration::from_millis(200),
        ..Config::local_defaults()
    };

    produce(&brokers, &topic, &messages).await;
    let closed = "SELECT count(*) FROM billing_periods p WHERE status = 'closed'
                  AND NOT EXISTS (SELECT 1 FROM outbox WHERE published_at IS NULL)";
    run_until_count(&config, &db.url, closed, 1).await;
    let (status, revision, closed_event, unpublished) = period_event(&db.url, &device).await;
    assert_eq!((status.as_str(), revision, unpublished), ("closed", 0, false));
    assert_eq!(closed_event.revision, 0);
    assert_eq!(closed_event.reading_count, 1488, "readings from 00:00 on the 1st to 23:30 on the 31st");
    // The step from 23:30 to 02:00 straddles the month end: only its first 30 minutes
    // (a fifth) fall in January.
    let last_slot_wh = rows.last().unwrap().2;
    let straddling_wh = last_slot_wh + 200;
    assert_eq!(closed_event.energy_milli_wh, (january_wh - last_slot_wh) * 1000 + straddling_wh * 1000 / 5);
    assert_eq!(closed_event.period.first_day, jiff::civil::date(2013, 1, 1));
    assert_eq!(closed_event.period.last_day, jiff::civil::date(2013, 1, 31));
    let hourly_sum: rust_decimal::Decimal =
        closed_event.period.hourly_energy.iter().map(|h| h.energy_kwh).sum();
    assert_eq!(hourly_sum, closed_event.period.energy_kwh);
    assert_eq!(closed_event.opening_read.as_ref().unwrap().counter_kwh, rust_decimal::Decimal::ZERO);

    produce(&brokers, &topic, &[boundary]).await;
    run_until_count(&config, &db.url, "SELECT max(revision)::bigint FROM billing_periods", 1).await;
    let (status, revision, adjusted, _) = period_event(&db.url, &device).await;
    assert_eq!((status.as_str(), revision, adjusted.revision), ("closed", 1, 1));
    assert_eq!(adjusted.energy_milli_wh, january_wh * 1000, "January is now exactly the CSV's sum");
    assert_eq!(
        adjusted.closing_read.as_ref().unwrap().at,
        "2013-02-01T00:00:00Z".parse::<Timestamp>().unwrap()
    );
    let (client, connection) = tokio_postgres::connect(&db.url, NoTls).await.unwrap();
    tokio::spawn(connection);
    let events: Vec<(String, String)> = client
        .query("SELECT payload->>'type', payload->'data'->>'month' FROM outbox ORDER BY seq", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    assert_eq!(
        events,
        [
            ("dev.smartmeter.billing.period-closed.v1".to_owned(), "2013-01-01".to_owned()),
            ("dev.smartmeter.billing.period-adjusted.v1".to_owned(), "2013-01-01".to_owned()),
        ]
    );
    db.drop_database().await.unwrap();
}
