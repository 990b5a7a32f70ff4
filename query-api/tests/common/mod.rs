//! A database holding a real, billed month: the ten London households of January 2013
//! (`shared/data`) turned into meter readings by the simulator's loader and counter,
//! validated as the bridge validates them, produced to a Kafka topic of the test's own,
//! rolled up by the processor running in this process (with a short period grace so
//! January closes), and priced by the billing worker's own pricing and recording code
//! with a tariff published the way the API publishes one. One household has no tariff
//! assigned ([`UNASSIGNED_HOUSEHOLD`]); one meter's counter is reset mid-month
//! ([`RESET_HOUSEHOLD`]).

#![allow(dead_code)]

use std::collections::HashMap;
use std::time::Duration;

use jiff::Timestamp;
use rdkafka::producer::{FutureProducer, FutureRecord};
use smartmeter_core::billing::events::{PeriodEvent, TariffAssigned, TariffVersionPublished};
use smartmeter_core::billing::TariffDocument;
use smartmeter_core::service::testkit::{self, TestDatabase};
use smartmeter_core::telemetry::{telemetry_topic, validate, ValidationConfig};
use smartmeter_core::DeviceId;

pub const LONDON_JANUARY: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data/lcl_halfhourly_2013-01_10households.csv");
const OFGEM_TARIFF: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/../core/tariffs/ofgem_price_cap_2024q3.json");
/// Left without a tariff assignment, as a newly discovered meter is: its periods are
/// not billable until an operator assigns one.
pub const UNASSIGNED_HOUSEHOLD: &str = "MAC000016";
/// Its meter's counter is reset to 0 just after [`RESET_AT`].
pub const RESET_HOUSEHOLD: &str = "MAC000002";
pub const RESET_AT: &str = "2013-01-15T12:00:00Z";
const WAIT: Duration = Duration::from_secs(120);

pub struct BilledMonth {
    pub db: TestDatabase,
    /// One of the households, with this run's prefix.
    pub device: String,
    pub prefix: String,
}

impl BilledMonth {
    pub async fn finish(self) {
        self.db.drop_database().await.unwrap();
    }
}

pub async fn count(url: &str, sql: &str) -> i64 {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    client.query_one(sql, &[]).await.unwrap().get(0)
}

/// Waits until `sql` counts `expected`; the tables may not exist yet (the processor
/// applies the migrations when it starts).
async fn wait_for(url: &str, sql: &str, expected: i64) {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let reached = client.query_one(sql, &[]).await.map_or(0, |row| row.get(0));
        if reached >= expected {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{sql}: {reached} of {expected} after {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Telemetry records (key, JSON) of every household, device ids prefixed.
fn telemetry_records(prefix: &str) -> Vec<(String, String)> {
    use meter_simulator::{counter, london, payload};
    let dataset = london::load(&[LONDON_JANUARY]).expect("the London file");
    let config = ValidationConfig {
        clock_floor: "2000-01-01T00:00:00Z".parse().unwrap(),
        ..ValidationConfig::default()
    };
    let received_at = Timestamp::now();
    let mut records = Vec::new();
    for meter in &dataset.meters {
        let device = DeviceId::parse(&format!("{prefix}{}", meter.device_id)).unwrap();
        let mut readings = counter::readings(&meter.slots, 1).unwrap();
        if meter.device_id.as_str() == RESET_HOUSEHOLD {
            reset_counter_at(&mut readings, RESET_AT.parse().unwrap());
        }
        for reading in readings {
            let (telemetry, _) = payload::Telemetry::from_reading(&device, &reading);
            let valid = validate(&telemetry_topic(&device), &telemetry.to_json(), received_at, &config)
                .expect("the simulator's payloads pass the bridge's validation");
            records.push((device.to_string(), serde_json::to_string(&valid).unwrap()));
        }
    }
    records
}

/// A counter reset injected into real data: the meter restarts from 0 after `at`, as
/// a PZEM-004T does after its energy is reset. The energy is the same, so the daily
/// sums stay the CSV's; the processor records a `reset` counter event.
fn reset_counter_at(readings: &mut [meter_simulator::counter::MeterReading], at: Timestamp) {
    let base =
        readings.iter().rev().find(|r| r.timestamp <= at).expect("a reading before the reset").energy_mwh;
    for reading in readings.iter_mut().filter(|r| r.timestamp > at) {
        reading.energy_mwh -= base;
    }
}

/// The Ofgem 2024 Q3 price cap (real, published rates) re-dated to apply from
/// 2012-10-01, so that the 2013 consumption has a version in force.
pub fn replay_tariff() -> TariffDocument {
    let documents: Vec<TariffDocument> =
        serde_json::from_str(&std::fs::read_to_string(OFGEM_TARIFF).unwrap()).unwrap();
    let mut document = documents.into_iter().next().unwrap();
    document.effective_from = jiff::civil::date(2012, 10, 1);
    document
}

pub async fn billed_london_january() -> BilledMonth {
    let prefix = format!("{}-", testkit::unique_name("gf").replace(['_', '.'], "x"));
    let brokers = testkit::kafka_brokers();
    let topic = testkit::unique_name("smartmeter.telemetry.grafana");
    testkit::create_topic(&brokers, &topic, 3).await.expect("Kafka from infra/up.sh");
    let db = TestDatabase::create("grafana").await.unwrap();

    let records = telemetry_records(&prefix);
    let producer: FutureProducer =
        smartmeter_core::service::kafka::idempotent_producer(&brokers, "grafana-test").create().unwrap();
    let deliveries: Vec<_> = records
        .iter()
        .map(|(key, value)| producer.send_result(FutureRecord::to(&topic).key(key).payload(value)).unwrap())
        .collect();
    for delivery in deliveries {
        delivery.await.unwrap().unwrap();
    }

    // The processor: readings, rollups, device state, periods (closed by the wall
    // clock once the meters have been silent for the grace).
    let config = smartmeter_processor::Config {
        brokers: brokers.clone(),
        database_url: db.url.clone(),
        group_id: testkit::unique_name("processor-grafana"),
        topic,
        default_time_zone: "Europe/London".into(),
        period_grace: jiff::SignedDuration::from_secs(1),
        housekeeping_interval: Duration::from_millis(200),
        ..smartmeter_processor::Config::local_defaults()
    };
    let processor = testkit::Spawned::start(|shutdown| smartmeter_processor::run_embedded(config, shutdown));
    wait_for(&db.url, "SELECT count(*) FROM readings", records.len() as i64).await;
    wait_for(
        &db.url,
        "SELECT count(*) FROM billing_periods WHERE month = '2013-01-01' AND status = 'closed'",
        10,
    )
    .await;
    processor.stop().await;

    bill_closed_periods(&db.url, &prefix).await;
    BilledMonth { db, device: format!("{prefix}MAC000002"), prefix }
}

/// The billing worker's steps for a tariff publication, the assignments and the closed
/// periods, without the Kafka transport: admit and store the version, store the
/// assignments, price every closed period and record the invoices.
async fn bill_closed_periods(url: &str, prefix: &str) {
    use smartmeter_billing_worker::{bill, price, store, tariffs};

    let pool = smartmeter_core::service::db::pool(url, 2, "grafana-test").unwrap();
    let mut client = pool.get().await.unwrap();
    let tx = client.transaction().await.unwrap();
    let published = TariffVersionPublished { document: replay_tariff() };
    store::insert_tariff_version(&tx, &published, &published.event_id(), Timestamp::now()).await.unwrap();
    let rows = tx
        .query("SELECT published FROM billing_periods WHERE status = 'closed' ORDER BY device_id, month", &[])
        .await
        .unwrap();
    let events: Vec<PeriodEvent> =
        rows.iter().map(|row| serde_json::from_value(row.get(0)).unwrap()).collect();
    let mut assignments: HashMap<String, Vec<price::Assignment>> = HashMap::new();
    for event in &events {
        if assignments.contains_key(event.device_id.as_str()) {
            continue;
        }
        assert!(event.device_id.as_str().starts_with(prefix));
        if event.device_id.as_str().ends_with(UNASSIGNED_HOUSEHOLD) {
            continue;
        }
        let assigned = TariffAssigned {
            device_id: event.device_id.clone(),
            tariff_id: published.document.tariff_id.clone(),
            effective_from: jiff::civil::date(2012, 10, 1),
            sanctioned_load_kw: None,
            phase: None,
            connected_load_kw: None,
        };
        store::upsert_assignment(&tx, &assigned, &assigned.event_id(), Timestamp::now()).await.unwrap();
        assignments.insert(
            event.device_id.to_string(),
            vec![price::Assignment {
                tariff_id: assigned.tariff_id.clone(),
                effective_from: assigned.effective_from,
                sanctioned_load_kw: None,
                phase: None,
                connected_load_kw: None,
            }],
        );
    }
    let book = tariffs::TariffBook::from_documents(vec![published.document.clone()], 1).unwrap();
    let priced = bill::price_all(events, &assignments, &book, 1);
    let counts = bill::record(&tx, priced, "smartmeter.invoices.test", None).await.unwrap();
    assert!(counts.issued >= 9, "every assigned household's January is invoiced: {counts:?}");
    assert!(counts.unbillable >= 1, "the household without a tariff is not billable: {counts:?}");
    tx.commit().await.unwrap();
}
