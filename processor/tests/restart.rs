//! The processor against the real Kafka and PostgreSQL: London January 2013 readings
//! produced to a topic of the test's own, consumed in two runs with a stop between
//! them and the first half redelivered; daily energy must equal the CSV sums.

mod common;

use std::collections::BTreeMap;

use common::{count, daily, half_hours, produce, readings, run_until};
use smartmeter_core::service::testkit::{self, TestDatabase};
use smartmeter_processor::Config;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_and_restart_resumes_from_stored_offsets_without_double_counting() {
    let households = ["MAC000002", "MAC000016", "MAC000042"];
    let rows = half_hours(&households);
    let messages = readings(&rows);
    let half = messages.len() / 2;

    let db = TestDatabase::create("processor_restart").await.unwrap();
    let brokers = testkit::kafka_brokers();
    let topic = testkit::unique_name("smartmeter.telemetry.test");
    testkit::create_topic(&brokers, &topic, 3).await.unwrap();
    let config = Config {
        brokers: brokers.clone(),
        database_url: db.url.clone(),
        group_id: testkit::unique_name("processor-test"),
        topic: topic.clone(),
        default_time_zone: "Europe/London".into(),
        ..Config::local_defaults()
    };

    produce(&brokers, &topic, &messages[..half]).await;
    run_until(&config, &db.url, half as i64).await;
    let first_offsets = count(&db.url, "SELECT sum(next_offset)::bigint FROM consumer_offsets").await;
    assert_eq!(first_offsets, half as i64);

    // Redeliver the last 100 of the first half (as an at-least-once bridge would), then the rest.
    produce(&brokers, &topic, &messages[half - 100..]).await;
    run_until(&config, &db.url, messages.len() as i64).await;

    assert_eq!(count(&db.url, "SELECT count(*) FROM readings").await, messages.len() as i64);
    assert_eq!(count(&db.url, "SELECT sum(duplicates_total)::bigint FROM devices").await, 100);

    let mut expected: BTreeMap<(String, String), i64> = BTreeMap::new();
    for (device, start, wh) in &rows {
        // January in London is GMT: the local date is the UTC date.
        let date = start.to_zoned(jiff::tz::TimeZone::UTC).date().to_string();
        *expected.entry((device.clone(), date)).or_insert(0) += wh * 1000;
    }
    expected.retain(|_, energy| *energy != 0);
    assert_eq!(daily(&db.url).await, expected);

    let hourly_total = count(&db.url, "SELECT sum(energy_milli_wh)::bigint FROM energy_hourly").await;
    let csv_total: i64 = rows.iter().map(|(_, _, wh)| wh * 1000).sum();
    assert_eq!(hourly_total, csv_total);
    db.drop_database().await.unwrap();
}
