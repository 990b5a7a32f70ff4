//! The whole pipeline on real data, through the real services that `infra/up.sh`
//! starts: the 10-household Low Carbon London file of January 2013 is replayed by the
//! meter simulator's London loader over MQTT (Mosquitto, simulator account), the bridge
//! moves it to Kafka, the processor rolls it up into PostgreSQL, and the query API
//! answers over HTTP. Daily kWh of every household for every London local day, and the
//! hourly kWh of one household, must equal the sums of the file's half-hour values,
//! computed here from the CSV independently of the simulator.
//!
//! Isolation: device ids carry a prefix of this run (`e2e<pid>x…-MAC000002`), Kafka
//! topics and the database are the test's own, and the bridge's MQTT session is
//! discarded at the end, so the test can run again and again beside the demo.

use std::collections::BTreeMap;
use std::time::Duration;

use clap::Parser as _;
use jiff::civil::Date;
use jiff::Timestamp;
use rust_decimal::Decimal;
use serde_json::{json, Value};
use smartmeter_core::service::testkit::{self, TestDatabase};
use smartmeter_core::telemetry::telemetry_topic;
use smartmeter_core::{topics, DeviceId};
use tokio_util::sync::CancellationToken;

const LONDON_JANUARY: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data/lcl_halfhourly_2013-01_10households.csv");
const WAIT: Duration = Duration::from_secs(180);
/// The query API's development admin key in this test.
const E2E_KEY: &str = "end-to-end-dev-key";

/// Energy in mWh of every (household, slot start) in the file, read without the
/// simulator: repeated headers skipped, values trimmed, `Null` left out, exact
/// duplicates once, float32 renderings (`1.0779999`) rounded to the Wh they show.
fn csv_half_hours() -> BTreeMap<(String, Timestamp), i64> {
    let text = std::fs::read_to_string(LONDON_JANUARY).expect("the London file in shared/data");
    let mut slots = BTreeMap::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if fields.len() != 3 || fields[0] == "LCLid" || fields[2] == "Null" {
            continue;
        }
        let start: Timestamp =
            format!("{}Z", fields[1].replace(' ', "T")).parse().expect("a timestamp in the London file");
        let kwh: Decimal = fields[2].parse().expect("a decimal kWh value");
        let milli_wh = (kwh.round_dp(3) * Decimal::from(1_000_000)).try_into().expect("fits i64");
        if let Some(previous) = slots.insert((fields[0].to_owned(), start), milli_wh) {
            assert_eq!(previous, milli_wh, "{} {start}: two different values", fields[0]);
        }
    }
    slots
}

fn kwh(milli_wh: i64) -> Decimal {
    Decimal::new(milli_wh, 6)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn mqtt() -> (String, u16) {
    let host = testkit::env_or("SMARTMETER_MQTT_HOST", "127.0.0.1");
    let port = testkit::env_or("SMARTMETER_MQTT_PORT", "1883").parse().expect("SMARTMETER_MQTT_PORT");
    (host, port)
}

/// Publishes every household of the file through the simulator's loader, counter and
/// payload, with device ids prefixed by `prefix`; returns how many readings the broker
/// acknowledged.
async fn replay_over_mqtt(prefix: &str) -> u64 {
    use meter_simulator::{counter, london, payload, publish};

    let dataset = london::load(&[LONDON_JANUARY]).expect("the simulator loads the London file");
    let (host, port) = mqtt();
    let config = publish::MqttConfig {
        host,
        port,
        username: Some(testkit::env_or("SMARTMETER_MQTT_SIMULATOR_USER", "smartmeter-simulator")),
        password: Some(testkit::env_or("SMARTMETER_MQTT_SIMULATOR_PASSWORD", "simulator-dev-only")),
        client_id: format!("{prefix}sim"),
        max_inflight: 100,
        connect_timeout: Duration::from_secs(10),
        keep_alive: Duration::from_secs(30),
    };
    let mut publisher = publish::MqttPublisher::connect(&config).await.expect("connect to Mosquitto");
    for meter in &dataset.meters {
        let device = DeviceId::parse(&format!("{prefix}{}", meter.device_id)).unwrap();
        let readings = counter::readings(&meter.slots, 1).expect("the counter of a London household");
        for reading in &readings {
            let (telemetry, _) = payload::Telemetry::from_reading(&device, reading);
            publisher.publish(telemetry_topic(&device), telemetry.to_json()).await.expect("publish");
        }
    }
    let delivery = publisher.finish(Duration::from_secs(60)).await;
    assert_eq!(delivery.confirmed, delivery.sent, "Mosquitto acknowledged every reading");
    delivery.confirmed
}

async fn count(url: &str, sql: &str) -> i64 {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    client.query_one(sql, &[]).await.unwrap().get(0)
}

async fn wait_healthy(http: &reqwest::Client, url: &str, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(response) = http.get(url).send().await {
            if response.status().is_success() {
                return;
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "{what} not healthy at {url} after 60 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn graphql(http: &reqwest::Client, url: &str, query: &str, variables: Value) -> Value {
    let response: Value = http
        .post(url)
        .bearer_auth(E2E_KEY)
        .json(&json!({"query": query, "variables": variables}))
        .send()
        .await
        .expect("query-api answers")
        .json()
        .await
        .expect("a JSON body");
    assert!(response.get("errors").is_none(), "GraphQL errors: {response}");
    response["data"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn london_january_through_every_service_matches_the_csv() {
    let run = testkit::unique_name("e2e").replace(['_', '.'], "x");
    let prefix = format!("{run}-");
    let brokers = testkit::kafka_brokers();
    let telemetry = testkit::unique_name("smartmeter.telemetry.e2e");
    let dlq = testkit::unique_name("smartmeter.telemetry.dlq.e2e");
    testkit::create_topic(&brokers, &telemetry, topics::TELEMETRY.partitions)
        .await
        .expect("create the test's telemetry topic (is infra/up.sh running?)");
    testkit::create_topic(&brokers, &dlq, 1).await.unwrap();
    let db = TestDatabase::create("end_to_end").await.unwrap();
    let shutdown = CancellationToken::new();

    // The bridge: every meter's telemetry topic, this run's Kafka topics, the clock
    // floor lowered for 2013 data.
    let (mqtt_host, mqtt_port) = mqtt();
    let bridge_client_id = format!("{prefix}bridge");
    let bridge_metrics_port = free_port();
    let bridge_config = smartmeter_bridge::Config::try_parse_from([
        "bridge".to_owned(),
        format!("--mqtt-host={mqtt_host}"),
        format!("--mqtt-port={mqtt_port}"),
        format!("--mqtt-user={}", testkit::env_or("SMARTMETER_MQTT_BRIDGE_USER", "smartmeter-bridge")),
        format!("--mqtt-password={}", testkit::env_or("SMARTMETER_MQTT_BRIDGE_PASSWORD", "bridge-dev-only")),
        format!("--mqtt-client-id={bridge_client_id}"),
        "--mqtt-topic-filter=smartmeter/+/telemetry".to_owned(),
        format!("--kafka-brokers={brokers}"),
        format!("--telemetry-topic={telemetry}"),
        format!("--dlq-topic={dlq}"),
        format!("--metrics-addr=127.0.0.1:{bridge_metrics_port}"),
        "--clock-floor=2000-01-01T00:00:00Z".to_owned(),
    ])
    .expect("bridge flags");
    let bridge = tokio::spawn(smartmeter_bridge::run(bridge_config.clone(), shutdown.clone()));

    let processor = smartmeter_processor::Config {
        brokers: brokers.clone(),
        database_url: db.url.clone(),
        group_id: testkit::unique_name("processor-e2e"),
        topic: telemetry.clone(),
        default_time_zone: "Europe/London".into(),
        ..smartmeter_processor::Config::local_defaults()
    };
    let processor = tokio::spawn(smartmeter_processor::run_embedded(processor, shutdown.clone()));

    let api_port = free_port();
    let api = smartmeter_query_api::Config::try_parse_from([
        "query-api".to_owned(),
        format!("--listen=127.0.0.1:{api_port}"),
        format!("--database-url={}", db.url),
        format!("--brokers={brokers}"),
        format!("--telemetry-topic={telemetry}"),
        format!("--dlq-topic={dlq}"),
        format!("--dev-admin-key={E2E_KEY}"),
    ])
    .expect("query-api flags");
    let api = tokio::spawn(smartmeter_query_api::run(api, shutdown.clone()));

    // Subscribed before publishing: the bridge's session must exist before the first
    // reading, or the broker would not queue for it. Its /health says `ok` once MQTT is
    // subscribed and Kafka answers.
    let http = reqwest::Client::new();
    wait_healthy(&http, &format!("http://127.0.0.1:{bridge_metrics_port}/health"), "bridge").await;
    wait_healthy(&http, &format!("http://127.0.0.1:{api_port}/health"), "query-api").await;

    let published = replay_over_mqtt(&prefix).await as i64;
    let expected_slots = csv_half_hours();
    let like = format!("SELECT count(*) FROM readings WHERE device_id LIKE '{prefix}%'");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let stored = count(&db.url, &like).await;
        if stored >= published {
            assert_eq!(stored, published, "every acknowledged reading is stored once");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "only {stored} of {published} readings stored");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let graphql_url = format!("http://127.0.0.1:{api_port}/graphql");
    let mut daily_expected: BTreeMap<(String, Date), i64> = BTreeMap::new();
    for ((household, start), milli_wh) in &expected_slots {
        // January is GMT: a London local day is the UTC day.
        let day = start.to_zoned(jiff::tz::TimeZone::get("Europe/London").unwrap()).date();
        *daily_expected.entry((household.clone(), day)).or_default() += milli_wh;
    }
    let households: Vec<String> = daily_expected
        .keys()
        .map(|(h, _)| h.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(households.len(), 10);
    for household in &households {
        let data = graphql(
            &http,
            &graphql_url,
            "query DailyEnergy($id: String!) {
               dailyEnergy(deviceId: $id, fromDate: \"2012-12-31\", toDate: \"2013-02-01\") { localDate energyKwh }
             }",
            json!({"id": format!("{prefix}{household}")}),
        )
        .await;
        let got: BTreeMap<Date, Decimal> = data["dailyEnergy"]
            .as_array()
            .unwrap()
            .iter()
            .map(|day| {
                (
                    day["localDate"].as_str().unwrap().parse().unwrap(),
                    day["energyKwh"].as_str().unwrap().parse().unwrap(),
                )
            })
            .filter(|(_, energy): &(Date, Decimal)| !energy.is_zero())
            .collect();
        let want: BTreeMap<Date, Decimal> = daily_expected
            .iter()
            .filter(|((h, _), milli_wh)| h == household && **milli_wh != 0)
            .map(|((_, day), milli_wh)| (*day, kwh(*milli_wh)))
            .collect();
        assert_eq!(got, want, "{household}: daily kWh per London local day");
    }

    // Hourly: MAC000002, every hour of the month (two half hours each).
    let mut hourly_expected: BTreeMap<Timestamp, i64> = BTreeMap::new();
    for ((household, start), milli_wh) in &expected_slots {
        if household == "MAC000002" {
            let hour =
                Timestamp::from_second(start.as_second() - start.as_second().rem_euclid(3600)).unwrap();
            *hourly_expected.entry(hour).or_default() += milli_wh;
        }
    }
    let data = graphql(
        &http,
        &graphql_url,
        "query HourlyEnergy($id: String!) {
           hourlyEnergy(deviceId: $id, from: \"2013-01-01T00:00:00Z\", to: \"2013-02-01T00:00:00Z\") {
             bucketStart energyKwh localHour
           }
         }",
        json!({"id": format!("{prefix}MAC000002")}),
    )
    .await;
    let got: BTreeMap<Timestamp, Decimal> = data["hourlyEnergy"]
        .as_array()
        .unwrap()
        .iter()
        .map(|hour| {
            (
                hour["bucketStart"].as_str().unwrap().parse().unwrap(),
                hour["energyKwh"].as_str().unwrap().parse().unwrap(),
            )
        })
        .collect();
    let want: BTreeMap<Timestamp, Decimal> =
        hourly_expected.iter().filter(|(_, e)| **e != 0).map(|(at, e)| (*at, kwh(*e))).collect();
    assert_eq!(got.len(), want.len(), "hours with energy");
    assert_eq!(got, want, "MAC000002: hourly kWh");
    assert_eq!(
        want.keys().next().copied(),
        Some("2013-01-01T00:00:00Z".parse().unwrap()),
        "the month starts at London midnight"
    );

    shutdown.cancel();
    for (name, task) in [("bridge", bridge), ("processor", processor), ("query-api", api)] {
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .unwrap_or_else(|_| panic!("{name} did not stop within 30 s"))
            .unwrap()
            .unwrap_or_else(|error| panic!("{name} failed: {error:#}"));
    }
    smartmeter_bridge::mqtt::discard_session(&bridge_config).await.expect("end the bridge's MQTT session");
    db.drop_database().await.unwrap();
}
