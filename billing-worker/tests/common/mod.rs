//! Shared by the billing worker's integration tests: real London readings, Kafka topics
//! and events of the test's own, the processor and the worker run in-process against
//! the real Kafka and PostgreSQL, and the tables read back.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use jiff::civil::{date, Date};
use jiff::{SignedDuration, Timestamp};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use rust_decimal::Decimal;
use serde::Serialize;
use smartmeter_billing_worker::invoice::{self, Decision};
use smartmeter_billing_worker::price::{self, Assignment};
use smartmeter_billing_worker::tariffs::TariffBook;
use smartmeter_core::billing::events::{
    InvoiceEvent, MeterRead, PeriodEvent, TariffAssigned, TariffVersionPublished, TARIFF_ASSIGNED,
    TARIFF_VERSION_PUBLISHED,
};
use smartmeter_core::billing::{BillingPeriod, HourlyEnergy, TariffDocument};
use smartmeter_core::event::Envelope;
use smartmeter_core::service::testkit::{self, Spawned, TestDatabase};
use smartmeter_core::DeviceId;
use tokio_postgres::NoTls;

pub const LONDON_JANUARY: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data/lcl_halfhourly_2013-01_10households.csv");
const OFGEM: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../core/tariffs/ofgem_price_cap_2024q3.json");

/// The households of the London file.
pub const HOUSEHOLDS: [&str; 10] = [
    "MAC000002",
    "MAC000006",
    "MAC000010",
    "MAC000015",
    "MAC000016",
    "MAC000020",
    "MAC000024",
    "MAC000042",
    "MAC000068",
    "MAC000073",
];

/// (household, half-hour start, Wh) of every data row, sorted, repeated headers and
/// duplicate rows dropped. Values are read as exact decimals.
pub fn half_hours() -> Vec<(String, Timestamp, i64)> {
    let text = std::fs::read_to_string(LONDON_JANUARY).expect("London data file");
    let mut rows = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if fields[0] == "LCLid" || fields.len() < 3 {
            continue;
        }
        let start: Timestamp = format!("{}Z", fields[1].replace(' ', "T")).parse().expect("a UTC time");
        let kwh = Decimal::from_str(fields[2]).expect("kWh");
        let wh = i64::try_from(kwh * Decimal::ONE_THOUSAND).expect("whole Wh");
        rows.push((fields[0].to_owned(), start, wh));
    }
    rows.sort();
    rows.dedup();
    rows
}

/// The household's January in Wh, as the file gives it.
pub fn january_wh(rows: &[(String, Timestamp, i64)], household: &str) -> i64 {
    rows.iter().filter(|(device, ..)| device == household).map(|(.., wh)| wh).sum()
}

/// Cumulative-counter telemetry for `prefix{household}`: a reading at 0 at the first
/// slot's start, then one at the end of each half hour.
pub fn telemetry(prefix: &str, rows: &[(String, Timestamp, i64)]) -> Vec<(String, String)> {
    let mut counters: BTreeMap<&str, i64> = BTreeMap::new();
    let mut out = Vec::new();
    for (household, start, wh) in rows {
        let device = format!("{prefix}{household}");
        let counter = counters.entry(household).or_insert_with(|| {
            out.push((device.clone(), reading(&device, *start, 0)));
            0
        });
        *counter += wh;
        out.push((device.clone(), reading(&device, *start + SignedDuration::from_mins(30), *counter)));
    }
    out
}

fn reading(device: &str, at: Timestamp, counter_wh: i64) -> String {
    serde_json::json!({
        "device_id": device, "timestamp": at, "meter_timestamp": at, "received_at": Timestamp::now(),
        "voltage": 230.0, "current": 0.0, "power_w": 0.0,
        "energy_kwh": counter_wh as f64 / 1000.0, "power_factor": 1.0, "clock_unsynced": false,
    })
    .to_string()
}

/// The household's January as the processor would publish it: energy by local hour
/// (London is on UTC in January) from the file's half hours, counter reads at the
/// start and end. Used where a test needs a real period without running the pipeline.
pub fn january_period(device: &str, household: &str, rows: &[(String, Timestamp, i64)]) -> PeriodEvent {
    let tz = jiff::tz::TimeZone::get("Europe/London").unwrap();
    let mut by_hour: BTreeMap<Timestamp, i64> = BTreeMap::new();
    for (_, start, wh) in rows.iter().filter(|(h, ..)| h == household) {
        let hour = start.as_second() - start.as_second().rem_euclid(3600);
        *by_hour.entry(Timestamp::from_second(hour).unwrap()).or_default() += wh;
    }
    let hourly_energy: Vec<HourlyEnergy> = by_hour
        .iter()
        .map(|(hour, wh)| HourlyEnergy {
            hour_start: hour.to_zoned(tz.clone()).datetime(),
            energy_kwh: Decimal::new(*wh, 3),
        })
        .collect();
    let total_wh: i64 = by_hour.values().sum();
    let mut period = BillingPeriod::new(date(2013, 1, 1), date(2013, 1, 31), Decimal::new(total_wh, 3));
    period.hourly_energy = hourly_energy;
    let starts_at: Timestamp = "2013-01-01T00:00:00Z".parse().unwrap();
    let ends_at: Timestamp = "2013-02-01T00:00:00Z".parse().unwrap();
    let last_read_at =
        rows.iter().filter(|(h, ..)| h == household).map(|(_, start, _)| *start).max().unwrap()
            + SignedDuration::from_mins(30);
    PeriodEvent {
        device_id: DeviceId::parse(device).unwrap(),
        month: date(2013, 1, 1),
        revision: 0,
        time_zone: "Europe/London".into(),
        starts_at,
        ends_at,
        period,
        energy_milli_wh: total_wh * 1000,
        opening_read: Some(MeterRead { at: starts_at, counter_kwh: Decimal::ZERO }),
        closing_read: Some(MeterRead { at: last_read_at, counter_kwh: Decimal::new(total_wh, 3) }),
        reading_count: rows.iter().filter(|(h, ..)| h == household).count() as i64 + 1,
        coverage: Decimal::ONE,
        quality_flags: Vec::new(),
        tariff_id: None,
    }
}

/// The tariff the London tests bill on: the Ofgem cap's July 2024 version (GBP incl. 5 %
/// VAT: 22.36 p/kWh, 60.12 p/day), published again as `tariff_id` from 1 October 2012
/// so that it is in force for the 2013 data. The numbers are Ofgem's; applying them to
/// 2013 is the test's choice.
pub fn london_tariff(tariff_id: &str) -> TariffDocument {
    let mut document = ofgem_versions().remove(0);
    document.tariff_id = tariff_id.to_owned();
    document.effective_from = date(2012, 10, 1);
    document
}

/// A retroactive change of [`london_tariff`]: version 2 with the Ofgem October 2024
/// rates (24.50 p/kWh, 60.99 p/day), in force from `effective_from`.
pub fn london_tariff_change(tariff_id: &str, effective_from: Date) -> TariffDocument {
    let mut document = ofgem_versions().remove(1);
    document.tariff_id = tariff_id.to_owned();
    document.effective_from = effective_from;
    document
}

/// The Ofgem versions with line names that do not name 2024's dates.
fn ofgem_versions() -> Vec<TariffDocument> {
    let mut versions: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(OFGEM).unwrap()).unwrap();
    for version in &mut versions {
        version["components"][0]["name"] = "energy (incl VAT)".into();
        version["components"][1]["name"] = "standing charge (incl VAT)".into();
        version["title"] = "London test tariff on Ofgem cap rates".into();
    }
    versions.into_iter().map(|version| serde_json::from_value(version).unwrap()).collect()
}

/// Rounded half up to the cent, as the tariff's line rule says.
pub fn cents(amount: Decimal) -> Decimal {
    amount.round_dp_with_strategy(2, rust_decimal::RoundingStrategy::MidpointAwayFromZero)
}

/// A CloudEvents envelope as JSON.
pub fn envelope_json<T: Serialize>(id: String, event_type: &str, subject: &str, data: &T) -> String {
    serde_json::to_string(&Envelope::new(id, "/test", event_type, Timestamp::now(), subject, data)).unwrap()
}

pub fn version_event(document: &TariffDocument) -> (String, String) {
    let published = TariffVersionPublished { document: document.clone() };
    let json = envelope_json(published.event_id(), TARIFF_VERSION_PUBLISHED, &document.tariff_id, &published);
    (document.tariff_id.clone(), json)
}

pub fn assignment_event(device: &str, tariff_id: &str, effective_from: Date) -> (String, String) {
    let assigned = TariffAssigned {
        device_id: DeviceId::parse(device).unwrap(),
        tariff_id: tariff_id.to_owned(),
        effective_from,
        sanctioned_load_kw: None,
        phase: None,
        connected_load_kw: None,
    };
    (tariff_id.to_owned(), envelope_json(assigned.event_id(), TARIFF_ASSIGNED, device, &assigned))
}

/// Prices `event` with `documents` (one tariff's versions) the way the worker does,
/// as a first invoice.
pub fn invoice_for(event: &PeriodEvent, documents: &[TariffDocument]) -> InvoiceEvent {
    let mut book = TariffBook::default();
    for document in documents {
        book.admit(document.clone()).unwrap();
    }
    let assignment = Assignment {
        tariff_id: documents[0].tariff_id.clone(),
        effective_from: documents[0].effective_from,
        sanctioned_load_kw: None,
        phase: None,
        connected_load_kw: None,
    };
    let pricing = price::price_period(event, &[assignment], &book);
    let decision: Decision = invoice::decide(event, pricing, None, "2013-02-03T09:00:00Z".parse().unwrap());
    decision.invoice.expect("an invoice")
}

/// Topics of one test, created fresh.
pub struct Topics {
    pub telemetry: String,
    pub periods: String,
    pub tariffs: String,
    pub invoices: String,
}

impl Topics {
    pub async fn create(brokers: &str) -> Self {
        let topics = Self {
            telemetry: testkit::unique_name("smartmeter.telemetry.billtest"),
            periods: testkit::unique_name("smartmeter.billing-periods.billtest"),
            tariffs: testkit::unique_name("smartmeter.tariff-events.billtest"),
            invoices: testkit::unique_name("smartmeter.invoices.billtest"),
        };
        for (topic, partitions) in
            [(&topics.telemetry, 3), (&topics.periods, 3), (&topics.tariffs, 1), (&topics.invoices, 3)]
        {
            testkit::create_topic(brokers, topic, partitions).await.expect("Kafka from infra/up.sh");
        }
        topics
    }
}

impl Topics {
    /// Deletes the test's topics (at the end of a test that passed).
    pub async fn delete(self, brokers: &str) {
        let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
            rdkafka::ClientConfig::new().set("bootstrap.servers", brokers).create().unwrap();
        let names = [&self.telemetry, &self.periods, &self.tariffs, &self.invoices].map(String::as_str);
        admin.delete_topics(&names, &rdkafka::admin::AdminOptions::new()).await.unwrap();
    }
}

pub async fn produce(brokers: &str, topic: &str, messages: &[(String, String)]) {
    let producer: FutureProducer =
        smartmeter_core::service::kafka::idempotent_producer(brokers, "billing-test").create().unwrap();
    let deliveries: Vec<_> = messages
        .iter()
        .map(|(key, value)| producer.send_result(FutureRecord::to(topic).key(key).payload(value)).unwrap())
        .collect();
    for delivery in deliveries {
        delivery.await.unwrap().unwrap();
    }
}

/// Every record of `topic` as (key, envelope JSON), read from the beginning to the end
/// offsets of now.
pub fn read_all(brokers: &str, topic: &str) -> Vec<(String, serde_json::Value)> {
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", testkit::unique_name("billing-test-reader"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let timeout = Duration::from_secs(10);
    let metadata = consumer.fetch_metadata(Some(topic), timeout).unwrap();
    let mut ends = BTreeMap::new();
    let mut assignment = TopicPartitionList::new();
    for partition in metadata.topics()[0].partitions() {
        let (low, high) = consumer.fetch_watermarks(topic, partition.id(), timeout).unwrap();
        if high > low {
            ends.insert(partition.id(), high);
            assignment.add_partition_offset(topic, partition.id(), Offset::Offset(low)).unwrap();
        }
    }
    consumer.assign(&assignment).unwrap();
    let mut records = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !ends.is_empty() {
        assert!(std::time::Instant::now() < deadline, "{topic} not read to its end in 60 s");
        let Some(message) = consumer.poll(Duration::from_millis(200)) else { continue };
        let message = message.unwrap();
        if ends.get(&message.partition()).is_some_and(|end| message.offset() + 1 >= *end) {
            ends.remove(&message.partition());
        }
        let key = String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned();
        records.push((key, serde_json::from_slice(message.payload().unwrap_or_default()).unwrap()));
    }
    records
}

pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

pub async fn count(url: &str, sql: &str) -> i64 {
    connect(url).await.query_one(sql, &[]).await.unwrap().get(0)
}

/// Waits until `sql` (one bigint) returns `expected`, at most `seconds`.
pub async fn wait_for(url: &str, sql: &str, expected: i64, seconds: u64) {
    let client = connect(url).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
    loop {
        let value: i64 = client.query_one(sql, &[]).await.unwrap().get(0);
        if value == expected {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{sql}: {value}, not {expected}, after {seconds} s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A test database with the schema applied.
pub async fn database(prefix: &str) -> TestDatabase {
    let db = TestDatabase::create(prefix).await.expect("PostgreSQL from infra/up.sh");
    let pool = smartmeter_core::service::db::pool(&db.url, 1, "billing-test").unwrap();
    smartmeter_core::service::db::migrate(&pool).await.unwrap();
    db
}

/// The processor publishes its period events to the fixed topic name; in the test's
/// own database a trigger sends its outbox rows for that topic to `periods_topic`, so
/// the test reads only its own periods.
pub async fn route_periods_to(url: &str, periods_topic: &str) {
    let sql = format!(
        "CREATE FUNCTION test_route_periods() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF NEW.topic = '{}' THEN NEW.topic := '{periods_topic}'; END IF;
             RETURN NEW;
         END $$;
         CREATE TRIGGER test_route_periods BEFORE INSERT ON outbox
             FOR EACH ROW EXECUTE FUNCTION test_route_periods();",
        smartmeter_core::topics::BILLING_PERIODS.name
    );
    connect(url).await.batch_execute(&sql).await.unwrap();
}

pub fn processor_config(url: &str, topics: &Topics) -> smartmeter_processor::Config {
    smartmeter_processor::Config {
        brokers: testkit::kafka_brokers(),
        database_url: url.to_owned(),
        group_id: testkit::unique_name("processor-billtest"),
        topic: topics.telemetry.clone(),
        default_time_zone: "Europe/London".into(),
        // Closed by the wall clock once the meters have been silent for the grace. Silence
        // counts from the readings' received_at (when the test made them), so the grace
        // must outlast producing and processing them all, or a period would close early
        // and be adjusted later.
        period_grace: SignedDuration::from_secs(30),
        housekeeping_interval: Duration::from_millis(200),
        ..smartmeter_processor::Config::local_defaults()
    }
}

pub fn start_processor(config: smartmeter_processor::Config) -> Spawned {
    Spawned::start(|shutdown| smartmeter_processor::run_embedded(config, shutdown))
}

pub fn worker_config(url: &str, topics: &Topics) -> smartmeter_billing_worker::Config {
    smartmeter_billing_worker::Config {
        brokers: testkit::kafka_brokers(),
        database_url: url.to_owned(),
        group_id: testkit::unique_name("billing-billtest"),
        periods_topic: topics.periods.clone(),
        tariffs_topic: topics.tariffs.clone(),
        invoices_topic: topics.invoices.clone(),
        outbox_interval: Duration::from_millis(100),
        lag_interval: Duration::from_secs(3600),
        replay_poll_interval: Duration::from_millis(200),
        ..smartmeter_billing_worker::Config::local_defaults()
    }
}

pub fn start_worker(config: smartmeter_billing_worker::Config) -> Spawned {
    Spawned::start(|shutdown| smartmeter_billing_worker::run_embedded(config, shutdown))
}

/// The London telemetry `prefix{household}` through the processor: returns once every
/// period it opened is closed and published.
pub async fn run_pipeline(url: &str, topics: &Topics, prefix: &str) -> Vec<(String, Timestamp, i64)> {
    let rows = half_hours();
    let messages = telemetry(prefix, &rows);
    produce(&testkit::kafka_brokers(), &topics.telemetry, &messages).await;
    let processor = start_processor(processor_config(url, topics));
    wait_for(url, "SELECT count(*) FROM readings", messages.len() as i64, 120).await;
    wait_for(
        url,
        "SELECT count(*) FROM billing_periods WHERE status = 'open'
         OR EXISTS (SELECT 1 FROM outbox WHERE published_at IS NULL)",
        0,
        120,
    )
    .await;
    processor.stop().await;
    rows
}
