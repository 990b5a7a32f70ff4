//! End to end through the real Kafka and PostgreSQL: a month of real London readings
//! through the processor (in-process), the periods it closes through the billing worker
//! (in-process), then replays: nothing new twice; a retroactive tariff change and a
//! replay requested through `replay_jobs` give exactly one revision per invoice with
//! the right difference; a replay after that gives nothing new again.

mod common;

use std::collections::BTreeMap;

use common::*;
use jiff::civil::{date, Date};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use smartmeter_billing_worker::replay::{self, ReplayRequest};
use smartmeter_core::billing::events::{INVOICE_ISSUED, INVOICE_REVISED};
use smartmeter_core::service::testkit;
use tokio_util::sync::CancellationToken;

/// An issued invoice as stored: (device, month) → (number, revision, total, kWh).
async fn invoices(url: &str) -> BTreeMap<(String, Date, i32), (String, Decimal, Decimal, Option<Decimal>)> {
    connect(url)
        .await
        .query(
            "SELECT device_id, month, revision, invoice_number, total, energy_kwh, difference FROM invoices",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| ((row.get(0), row.get(1), row.get(2)), (row.get(3), row.get(4), row.get(5), row.get(6))))
        .collect()
}

/// kWh of the device's local days from `first` to `last` in `energy_daily`.
async fn daily_kwh(url: &str, device: &str, first: Date, last: Date) -> Decimal {
    let milli_wh: i64 = connect(url)
        .await
        .query_one(
            "SELECT coalesce(sum(energy_milli_wh), 0)::bigint FROM energy_daily
             WHERE device_id = $1 AND local_date BETWEEN $2 AND $3",
            &[&device, &first, &last],
        )
        .await
        .unwrap()
        .get(0);
    Decimal::new(milli_wh, 6)
}

fn replay_request(topics: &Topics, from: Date) -> ReplayRequest {
    ReplayRequest {
        brokers: testkit::kafka_brokers(),
        topic: topics.periods.clone(),
        invoices_topic: topics.invoices.clone(),
        from,
        to: None,
        device_id: None,
        batch_size: 7,
        pricing_threads: 2,
        progress_bar: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_london_january_is_invoiced_replayed_and_revised() {
    let brokers = testkit::kafka_brokers();
    let topics = Topics::create(&brokers).await;
    let db = database("billing_pipeline").await;
    route_periods_to(&db.url, &topics.periods).await;
    let prefix = format!("{}-", testkit::unique_name("bp").replace('_', "x"));
    let tariff_id = "london_test_2013";

    // The tariff and the assignments are events, like the API publishes them.
    let mut tariff_events = vec![version_event(&london_tariff(tariff_id))];
    for household in HOUSEHOLDS {
        tariff_events.push(assignment_event(&format!("{prefix}{household}"), tariff_id, date(2012, 10, 1)));
    }
    produce(&brokers, &topics.tariffs, &tariff_events).await;

    // Telemetry → processor → closed periods on the test's periods topic.
    let rows = run_pipeline(&db.url, &topics, &prefix).await;
    let periods = count(&db.url, "SELECT count(*) FROM billing_periods WHERE status = 'closed'").await;
    assert!(periods >= 10, "every household's January closed: {periods}");
    assert_eq!(
        count(&db.url, "SELECT count(*) FROM billing_periods WHERE revision > 0").await,
        0,
        "a period was adjusted: the processor closed it before all readings were in"
    );

    // The worker prices every closed period.
    let pool = smartmeter_core::service::db::pool(&db.url, 4, "billing-test").unwrap();
    let worker = start_worker(worker_config(&db.url, &topics));
    wait_for(&db.url, "SELECT count(*) FROM invoices", periods, 120).await;
    wait_for(&db.url, "SELECT count(*) FROM outbox WHERE published_at IS NULL", 0, 60).await;

    let issued = invoices(&db.url).await;
    let standing_january = cents(dec!(31) * dec!(0.6012));
    let mut januaries = 0;
    for household in HOUSEHOLDS {
        let device = format!("{prefix}{household}");
        let (number, total, energy_kwh, _) = &issued[&(device.clone(), date(2013, 1, 1), 0)];
        assert_eq!(number, &format!("INV-{device}-201301"));
        // Exactly the month's daily energy, and the file's half hours.
        let daily = daily_kwh(&db.url, &device, date(2013, 1, 1), date(2013, 1, 31)).await;
        assert_eq!(*energy_kwh, daily, "{device}: invoice kWh = Σ energy_daily");
        assert_eq!(*energy_kwh, Decimal::new(january_wh(&rows, household), 3), "{device}: the file's sum");
        // The tariff's arithmetic, done here: each line rounded half up to the penny.
        let reference = cents(daily * dec!(0.2236)) + standing_january;
        assert_eq!(*total, reference, "{device}: {daily} kWh");
        januaries += 1;
    }
    assert_eq!(januaries, 10);
    // Households whose last reading is at 1 February 00:00 opened February: no energy,
    // the standing charge only.
    let februaries: Vec<_> = issued.iter().filter(|((_, month, _), _)| *month == date(2013, 2, 1)).collect();
    for ((device, ..), (_, total, energy_kwh, _)) in &februaries {
        assert_eq!(*energy_kwh, Decimal::ZERO, "{device}");
        assert_eq!(*total, cents(dec!(28) * dec!(0.6012)), "{device}");
    }
    assert_eq!(januaries + februaries.len() as i64, periods);

    // The reads on the invoice are the counter's, and they account for the energy.
    let client = connect(&db.url).await;
    for row in client
        .query(
            "SELECT invoice_number, opening_read_kwh, closing_read_kwh, energy_kwh FROM invoices
             WHERE month = '2013-01-01'",
            &[],
        )
        .await
        .unwrap()
    {
        let (opening, closing, energy): (Decimal, Decimal, Decimal) = (row.get(1), row.get(2), row.get(3));
        assert_eq!(closing - opening, energy, "{}", row.get::<_, String>(0));
    }

    // InvoiceIssued on the invoices topic, one per invoice.
    let events = read_all(&brokers, &topics.invoices);
    assert_eq!(events.len() as i64, periods);
    assert!(events.iter().all(|(_, event)| event["type"] == INVOICE_ISSUED));

    // Replay twice: nothing new.
    for _ in 0..2 {
        let report = replay::replay(
            &pool,
            &replay_request(&topics, date(2013, 1, 1)),
            None,
            &CancellationToken::new(),
        )
        .await
        .unwrap();
        let progress = report.progress;
        assert_eq!(progress.periods_matched, periods);
        assert_eq!((progress.issued, progress.revised, progress.unchanged), (0, 0, periods), "{progress:?}");
    }
    assert_eq!(invoices(&db.url).await, issued);
    // The outbox holds the processor's period events and the invoices: nothing more.
    assert_eq!(count(&db.url, "SELECT count(*) FROM outbox").await, periods * 2);

    // A retroactive change: version 2 from 15 January, published after the invoices.
    let change = london_tariff_change(tariff_id, date(2013, 1, 15));
    produce(&brokers, &topics.tariffs, &[version_event(&change)]).await;
    wait_for(&db.url, "SELECT count(*) FROM tariff_versions", 2, 60).await;
    assert_eq!(
        count(&db.url, "SELECT count(*) FROM invoices").await,
        periods,
        "no re-pricing without a replay"
    );

    // A replay requested through the API: the running worker claims and runs it.
    let job_id: i64 = client
        .query_one(
            "INSERT INTO replay_jobs (from_month, to_month, status, requested_by)
             VALUES ('2013-01-01', '2013-02-01', 'requested', 'test@example.org') RETURNING job_id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let done = format!("SELECT count(*) FROM replay_jobs WHERE job_id = {job_id} AND status = 'succeeded'");
    wait_for(&db.url, &done, 1, 120).await;
    let job = client
        .query_one(
            "SELECT periods_matched, invoices_issued, invoices_revised, unchanged, records_read, records_total,
                    requested_by, finished_at IS NOT NULL
             FROM replay_jobs WHERE job_id = $1",
            &[&job_id],
        )
        .await
        .unwrap();
    assert_eq!(
        (job.get::<_, i64>(0), job.get::<_, i64>(1), job.get::<_, i64>(2), job.get::<_, i64>(3)),
        (periods, 0, periods, 0),
        "every invoice of January and February is revised once"
    );
    assert_eq!(job.get::<_, i64>(4), job.get::<_, i64>(5));
    assert_eq!(job.get::<_, Option<String>>(6).as_deref(), Some("test@example.org"));
    assert!(job.get::<_, bool>(7));
    wait_for(&db.url, "SELECT count(*) FROM outbox WHERE published_at IS NULL", 0, 60).await;

    let after = invoices(&db.url).await;
    assert_eq!(after.len() as i64, periods * 2);
    for (key, original) in &issued {
        // The original is never overwritten.
        assert_eq!(&after[key], original);
        let (device, month, _) = key;
        let (number, total, energy_kwh, difference) = &after[&(device.clone(), *month, 1)];
        assert_eq!(number, &format!("{}-R1", original.0));
        assert_eq!(energy_kwh, &original.2);
        let reference = if *month == date(2013, 1, 1) {
            // Energy by the hourly data on each side of the 15th, the standing charge
            // by the days on each side.
            let before = daily_kwh(&db.url, device, date(2013, 1, 1), date(2013, 1, 14)).await;
            let from = daily_kwh(&db.url, device, date(2013, 1, 15), date(2013, 1, 31)).await;
            assert_eq!(before + from, *energy_kwh);
            cents(before * dec!(0.2236))
                + cents(dec!(14) * dec!(0.6012))
                + cents(from * dec!(0.2450))
                + cents(dec!(17) * dec!(0.6099))
        } else {
            cents(dec!(28) * dec!(0.6099))
        };
        assert_eq!(*total, reference, "{number}");
        assert_eq!(*difference, Some(reference - original.1), "{number}");
    }

    // InvoiceRevised on the topic: exactly one per invoice, with the difference.
    let events = read_all(&brokers, &topics.invoices);
    let revised: Vec<_> = events.iter().filter(|(_, event)| event["type"] == INVOICE_REVISED).collect();
    assert_eq!(revised.len() as i64, periods);
    for (key, event) in revised {
        let data = &event["data"];
        assert_eq!(key, data["device_id"].as_str().unwrap());
        let original = issued
            .values()
            .find(|(number, ..)| Some(number.as_str()) == data["revises"].as_str())
            .expect("revises an issued invoice");
        let total: Decimal = data["total"].as_str().unwrap().parse().unwrap();
        let difference: Decimal = data["difference"].as_str().unwrap().parse().unwrap();
        assert_eq!(difference, total - original.1);
        assert_eq!(
            data["tariff_versions"].as_array().unwrap().len(),
            if data["month"] == "2013-01-01" { 2 } else { 1 }
        );
    }

    // And a replay after that: nothing new again.
    let report =
        replay::replay(&pool, &replay_request(&topics, date(2013, 1, 1)), None, &CancellationToken::new())
            .await
            .unwrap();
    assert_eq!((report.progress.issued, report.progress.revised), (0, 0), "{:?}", report.progress);
    assert_eq!(invoices(&db.url).await, after);

    worker.stop().await;
    db.drop_database().await.unwrap();
    topics.delete(&brokers).await;
}
