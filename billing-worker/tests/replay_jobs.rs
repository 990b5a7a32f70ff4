//! Replays requested through `replay_jobs` (as query-api's startBillingReplay inserts
//! them), claimed by two workers' request loops at once on the real PostgreSQL and
//! Kafka: each job is run by one of them, once; a job asking for an impossible range
//! fails with the reason; a job only for one device re-prices only that device; a job
//! left `running` by a process that died is run again, one still moving is not.

mod common;

use std::time::Duration;

use common::*;
use jiff::civil::date;
use smartmeter_billing_worker::metrics::Metrics;
use smartmeter_billing_worker::replay::{serve_requests, RequestedReplays};
use smartmeter_core::billing::events::PERIOD_CLOSED;
use smartmeter_core::service::testkit;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requested_replays_are_claimed_once_and_report_their_progress() {
    let brokers = testkit::kafka_brokers();
    let topics = Topics::create(&brokers).await;
    let db = database("billing_replay_jobs").await;
    let client = connect(&db.url).await;

    // Three real Januaries on the periods topic, billed on the London tariff.
    let rows = half_hours();
    let prefix = format!("{}-", testkit::unique_name("rj").replace('_', "x"));
    let mut periods = Vec::new();
    for household in ["MAC000002", "MAC000006", "MAC000010"] {
        let device = format!("{prefix}{household}");
        let event = january_period(&device, household, &rows);
        periods.push((device.clone(), envelope_json(event.event_id(), PERIOD_CLOSED, &device, &event)));
        client
            .execute(
                "INSERT INTO tariff_assignments (device_id, effective_from, tariff_id, event_id, assigned_at)
                 VALUES ($1, '2012-10-01', 'london_test_2013', $2, now())",
                &[&device, &format!("assignment-{device}")],
            )
            .await
            .unwrap();
    }
    produce(&brokers, &topics.periods, &periods).await;
    let tariff = london_tariff("london_test_2013");
    let published = smartmeter_core::billing::events::TariffVersionPublished { document: tariff };
    client
        .execute(
            "INSERT INTO tariff_versions (tariff_id, version, effective_from, document, event_id, published_at)
             VALUES ($1, 1, '2012-10-01', $2, $3, now())",
            &[&"london_test_2013", &serde_json::to_value(&published.document).unwrap(), &published.event_id()],
        )
        .await
        .unwrap();

    let one_device = format!("{prefix}MAC000006");
    let jobs: Vec<i64> = client
        .query(
            "INSERT INTO replay_jobs (from_month, to_month, device_id, status, requested_by) VALUES
                 ('2013-01-01', '2013-01-01', NULL, 'requested', 'ops@example.org'),
                 ('2013-02-01', '2013-01-01', NULL, 'requested', 'typo@example.org'),
                 ('2013-01-01', NULL, $1, 'requested', 'support@example.org'),
                 ('2013-01-01', '2013-01-01', NULL, 'running', NULL),
                 ('2013-01-01', '2013-01-01', NULL, 'running', NULL)
             RETURNING job_id",
            &[&one_device],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();

    // Two replays that were running: one abandoned by a process that died an hour ago
    // (run again), one still making progress elsewhere (left alone).
    client
        .execute(
            "UPDATE replay_jobs SET updated_at = now() - interval '1 hour' WHERE job_id = $1",
            &[&jobs[3]],
        )
        .await
        .unwrap();

    // Two workers' request loops compete for the jobs.
    let shutdown = CancellationToken::new();
    let pool = smartmeter_core::service::db::pool(&db.url, 4, "billing-test").unwrap();
    let settings = RequestedReplays {
        brokers: brokers.clone(),
        topic: topics.periods.clone(),
        invoices_topic: topics.invoices.clone(),
        batch_size: 2,
        pricing_threads: 1,
        poll_interval: Duration::from_millis(100),
    };
    let loops: Vec<_> = (0..2)
        .map(|_| {
            let metrics = Metrics::register(&prometheus::Registry::new()).unwrap();
            tokio::spawn(serve_requests(pool.clone(), settings.clone(), metrics, shutdown.clone()))
        })
        .collect();
    wait_for(&db.url, "SELECT count(*) FROM replay_jobs WHERE status IN ('succeeded', 'failed')", 4, 60)
        .await;
    shutdown.cancel();
    for task in loops {
        task.await.unwrap();
    }

    let job = |id: i64| {
        let client = &client;
        async move {
            let row = client
                .query_one(
                    "SELECT status, error, records_total, records_read, periods_matched, invoices_issued, unchanged
                     FROM replay_jobs WHERE job_id = $1",
                    &[&id],
                )
                .await
                .unwrap();
            (
                row.get::<_, String>(0),
                row.get::<_, Option<String>>(1),
                [row.get::<_, i64>(2), row.get(3), row.get(4), row.get(5), row.get(6)],
            )
        }
    };
    // Whichever ran first issued the three invoices; the one-device job then found its
    // device's unchanged, or issued it and the whole-month job found it unchanged.
    let (status, error, all) = job(jobs[0]).await;
    assert_eq!((status.as_str(), error), ("succeeded", None));
    assert_eq!(all[..3], [3, 3, 3], "records total, read, matched");
    let (status, error, _) = job(jobs[1]).await;
    assert_eq!(status, "failed");
    assert!(error.unwrap().contains("before from_month"));
    let (status, _, device) = job(jobs[2]).await;
    assert_eq!(status, "succeeded");
    assert_eq!(device[..3], [3, 3, 1], "only the device's period matched");
    let (status, _, abandoned) = job(jobs[3]).await;
    assert_eq!(status, "succeeded");
    assert_eq!(abandoned[..3], [3, 3, 3]);
    let (status, ..) = job(jobs[4]).await;
    assert_eq!(status, "running", "a job still moving is not taken over");
    assert_eq!(
        all[3] + device[3] + abandoned[3],
        3,
        "each invoice issued once: {all:?} {device:?} {abandoned:?}"
    );
    assert_eq!(count(&db.url, "SELECT count(*) FROM invoices").await, 3);
    assert_eq!(
        count(&db.url, "SELECT count(*) FROM invoices WHERE month = '2013-01-01' AND revision = 0").await,
        3
    );
    let months: Vec<jiff::civil::Date> = client
        .query("SELECT DISTINCT month FROM invoices", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(months, [date(2013, 1, 1)]);

    drop(client);
    db.drop_database().await.unwrap();
    topics.delete(&brokers).await;
}
