//! Every fault mode end to end: meter-sim → Mosquitto → bridge → Kafka → processor →
//! PostgreSQL, on the real services of `infra/up.sh` (`. infra/env.sh` for their
//! addresses). The bridge and the processor run in this process from their libraries.
//!
//! Each test has its own device ids, MQTT client ids, Kafka topics and database, so
//! tests run side by side and never touch the demo's data. Each bridge subscribes to
//! its meter's own topics only.
//!
//! What each test holds: the hourly energy in `energy_hourly` equals the source data's,
//! computed here from the raw file (tests/common); the counter events in
//! `counter_events` and the dead letters are exactly the ones the fault must cause.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use clap::Parser as _;
use jiff::{SignedDuration, Timestamp};
use meter_simulator::faults::{At, FaultConfig, Malformed};
use meter_simulator::transport::{Connections, MqttSettings};
use meter_simulator::{Config, Output, Report, StartAt};
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::message::Message as _;
use rdkafka::ClientConfig;
use smartmeter_core::device_events::DeviceEvent;
use smartmeter_core::event::Envelope;
use smartmeter_core::service::testkit::{self, TestDatabase};
use smartmeter_core::telemetry::DeadLetter;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::task::JoinHandle;
use tokio_postgres::NoTls;
use tokio_util::sync::CancellationToken;

use common::{ts, Hourly};

const WAIT: Duration = Duration::from_secs(120);

fn mqtt_host() -> String {
    testkit::env_or("SMARTMETER_MQTT_HOST", "127.0.0.1")
}

fn mqtt_port() -> u16 {
    testkit::env_or("SMARTMETER_MQTT_PORT", "1883").parse().expect("SMARTMETER_MQTT_PORT is a port")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The pieces of one test's pipeline.
struct Pipeline {
    name: String,
    prefix: String,
    dlq: String,
    device_events: String,
    db: TestDatabase,
    bridges: Vec<Bridge>,
    processor: (CancellationToken, JoinHandle<anyhow::Result<()>>),
    /// The meters' retained status messages, removed when the pipeline is dropped
    /// (after `stop`, or when the test fails).
    _statuses: common::RetainedStatuses,
}

struct Bridge {
    config: smartmeter_bridge::Config,
    metrics_port: u16,
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Pipeline {
    /// Topics, database, a processor, and one bridge per device (`names` are the
    /// data's names; device ids are `<prefix><name>`).
    async fn start(name: &str, names: &[&str], time_zone: &str) -> Self {
        if std::env::var_os("SMARTMETER_TEST_LOG").is_some() {
            smartmeter_core::service::logging::init("meter-sim-test");
        }
        let prefix = format!("{}-", testkit::unique_name(&format!("sim-{name}")));
        let brokers = testkit::kafka_brokers();
        let topic = |what: &str| testkit::unique_name(&format!("smartmeter.{what}.sim-{name}"));
        let (telemetry, dlq, device_events, periods) =
            (topic("telemetry"), topic("dlq"), topic("device-events"), topic("billing-periods"));
        for (t, partitions) in [(&telemetry, 6), (&dlq, 1), (&device_events, 1), (&periods, 1)] {
            testkit::create_topic(&brokers, t, partitions)
                .await
                .expect("create the test's Kafka topics (is infra/up.sh running?)");
        }
        let db = TestDatabase::create(&format!("sim_{name}")).await.expect("a test database");

        let config = smartmeter_processor::Config {
            brokers: brokers.clone(),
            database_url: db.url.clone(),
            group_id: testkit::unique_name(&format!("sim-{name}-processor")),
            topic: telemetry.clone(),
            billing_periods_topic: periods.clone(),
            default_time_zone: time_zone.to_owned(),
            housekeeping_interval: Duration::from_millis(500),
            ..smartmeter_processor::Config::local_defaults()
        };
        let shutdown = CancellationToken::new();
        let processor = tokio::spawn(smartmeter_processor::run_embedded(config, shutdown.clone()));

        let statuses = common::RetainedStatuses::of(names.iter().map(|n| format!("{prefix}{n}")));
        let mut bridges = Vec::new();
        for device in names {
            let device = format!("{prefix}{device}");
            let client_id = testkit::unique_name(&format!("sim-{name}-bridge"));
            let metrics_port = free_port();
            let mut args = vec![
                "bridge".to_owned(),
                format!("--mqtt-host={}", mqtt_host()),
                format!("--mqtt-port={}", mqtt_port()),
                format!(
                    "--mqtt-user={}",
                    testkit::env_or("SMARTMETER_MQTT_BRIDGE_USER", "smartmeter-bridge")
                ),
                format!(
                    "--mqtt-password={}",
                    testkit::env_or("SMARTMETER_MQTT_BRIDGE_PASSWORD", "bridge-dev-only")
                ),
                format!("--mqtt-client-id={client_id}"),
                format!("--mqtt-topic-filter=smartmeter/{device}/telemetry"),
                format!("--kafka-brokers={brokers}"),
                format!("--telemetry-topic={telemetry}"),
                format!("--dlq-topic={dlq}"),
                format!("--metrics-addr=127.0.0.1:{metrics_port}"),
                // The data sets are from 2006 and 2013.
                "--clock-floor=2000-01-01T00:00:00Z".to_owned(),
            ];
            // Status messages (birth, will, goodbye) of this meter only, into a topic of
            // this test's, where the bridge turns them into device events.
            args.push(format!("--mqtt-status-topic-filter=smartmeter/{device}/status"));
            args.push(format!("--device-events-topic={device_events}"));
            let config = smartmeter_bridge::Config::try_parse_from(args).expect("bridge flags parse");
            let shutdown = CancellationToken::new();
            let task = tokio::spawn(smartmeter_bridge::run(config.clone(), shutdown.clone()));
            let bridge = Bridge { config, metrics_port, shutdown, task };
            bridge.wait_until_subscribed().await;
            bridges.push(bridge);
        }
        Self {
            name: name.to_owned(),
            prefix,
            dlq,
            device_events,
            db,
            bridges,
            processor: (shutdown, processor),
            _statuses: statuses,
        }
    }

    fn device(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// A simulator run over MQTT with the simulator's account, one shared connection.
    fn config(&self, input: &str, faults: FaultConfig) -> Config {
        let mut config = Config::dry_run(vec![common::data_file(input)], "unused".into());
        config.output = Output::Mqtt {
            settings: MqttSettings {
                host: mqtt_host(),
                port: mqtt_port(),
                username: Some(testkit::env_or("SMARTMETER_MQTT_SIMULATOR_USER", "smartmeter-simulator")),
                password: Some(testkit::env_or("SMARTMETER_MQTT_SIMULATOR_PASSWORD", "simulator-dev-only")),
                client_id: testkit::unique_name(&format!("sim-{}-meters", self.name)),
                max_inflight: 100,
                connect_timeout: Duration::from_secs(10),
                keep_alive: Duration::from_secs(30),
            },
            connections: Connections::Pool(1),
        };
        config.device_prefix = self.prefix.clone();
        config.faults = faults;
        config
    }

    async fn client(&self) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(&self.db.url, NoTls).await.unwrap();
        tokio::spawn(connection);
        client
    }

    /// Waits until the processor has stored `readings` distinct readings of the
    /// test's devices and `duplicates` duplicates.
    async fn wait_for(&self, readings: i64, duplicates: i64) {
        let deadline = tokio::time::Instant::now() + WAIT;
        let like = format!("{}%", self.prefix);
        loop {
            let client = tokio_postgres::connect(&self.db.url, NoTls).await;
            let counts = match client {
                Ok((client, connection)) => {
                    tokio::spawn(connection);
                    let stored = client
                        .query_one("SELECT count(*) FROM readings WHERE device_id LIKE $1", &[&like])
                        .await
                        .map_or(0, |r| r.get::<_, i64>(0));
                    let dups = client
                        .query_one(
                            "SELECT coalesce(sum(duplicates_total), 0)::bigint FROM devices WHERE device_id LIKE $1",
                            &[&like],
                        )
                        .await
                        .map_or(0, |r| r.get::<_, i64>(0));
                    (stored, dups)
                }
                Err(_) => (0, 0),
            };
            if counts.0 >= readings && counts.1 >= duplicates {
                assert_eq!(counts, (readings, duplicates), "more stored than published");
                return;
            }
            assert!(!self.processor.1.is_finished(), "the processor stopped");
            assert!(
                tokio::time::Instant::now() < deadline,
                "{}: {counts:?} of ({readings}, {duplicates}) readings and duplicates after {WAIT:?}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    async fn hourly(&self, device: &str) -> Hourly {
        self.client()
            .await
            .query("SELECT bucket_start, energy_milli_wh FROM energy_hourly WHERE device_id = $1", &[&device])
            .await
            .unwrap()
            .iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect()
    }

    /// (reading time, kind, counted mWh) of the device's counter events.
    async fn counter_events(&self, device: &str) -> Vec<(Timestamp, String, i64)> {
        self.client()
            .await
            .query(
                "SELECT ts, kind, counted_milli_wh FROM counter_events WHERE device_id = $1 ORDER BY ts",
                &[&device],
            )
            .await
            .unwrap()
            .iter()
            .map(|row| (row.get(0), row.get(1), row.get(2)))
            .collect()
    }

    /// The dead letters of this test.
    async fn dead_letters(&self) -> Vec<DeadLetter> {
        records(&self.dlq).await.iter().map(|r| serde_json::from_slice(r).unwrap()).collect()
    }

    /// (online, reason) of the status changes the bridge made of the meters' status
    /// messages, in order.
    async fn status_changes(&self) -> Vec<(bool, String)> {
        records(&self.device_events)
            .await
            .iter()
            .map(|r| {
                let envelope: Envelope<serde_json::Value> = serde_json::from_slice(r).unwrap();
                match DeviceEvent::from_envelope(&envelope).unwrap() {
                    DeviceEvent::StatusChanged(change) => (change.online, change.reason.as_str().to_owned()),
                    other => panic!("not a status change: {other:?}"),
                }
            })
            .collect()
    }

    /// Stops the bridges (so what they took is in Kafka) and removes their sessions.
    async fn stop_bridges(&mut self) {
        for bridge in self.bridges.drain(..) {
            bridge.shutdown.cancel();
            tokio::time::timeout(Duration::from_secs(30), bridge.task)
                .await
                .expect("the bridge stops")
                .unwrap()
                .expect("the bridge stops cleanly");
            smartmeter_bridge::mqtt::discard_session(&bridge.config)
                .await
                .expect("end the bridge's MQTT session");
        }
    }

    /// Stops bridges and processor, removes the bridges' sessions, the database and
    /// (dropping `_statuses`) the meters' retained status messages.
    async fn stop(mut self) {
        self.stop_bridges().await;
        self.processor.0.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.processor.1)
            .await
            .expect("the processor stops")
            .unwrap()
            .expect("the processor stops cleanly");
        self.db.drop_database().await.unwrap();
    }
}

impl Bridge {
    async fn wait_until_subscribed(&self) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(body) = http_get(self.metrics_port, "/health").await {
                let report: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                if report["components"]["mqtt"]["state"] == "up" {
                    return;
                }
            }
            assert!(!self.task.is_finished(), "the bridge stopped while starting");
            assert!(tokio::time::Instant::now() < deadline, "the bridge did not subscribe in time");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Every record of a one-partition topic, as it stands.
async fn records(topic: &str) -> Vec<Vec<u8>> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", testkit::kafka_brokers())
        .set("group.id", testkit::unique_name("sim-test-reader"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let (_, high) = consumer.fetch_watermarks(topic, 0, Duration::from_secs(10)).unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut records = Vec::new();
    while (records.len() as i64) < high {
        let message = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
            .await
            .expect("the topic is readable")
            .unwrap();
        records.push(message.payload().unwrap_or_default().to_vec());
    }
    records
}

async fn http_get(port: u16, path: &str) -> Option<String> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    Some(response.split_once("\r\n\r\n")?.1.to_owned())
}

async fn simulate(config: &Config) -> Report {
    let report = meter_simulator::run(config, CancellationToken::new()).await.expect("the simulator runs");
    println!("{report}");
    report
}

/// Hour by hour, `got` equals `expected` within `tolerance_mwh` (0: exactly), and no
/// hour has energy the data does not.
fn assert_hours(got: &Hourly, expected: &Hourly, tolerance_mwh: i64) {
    let hours: std::collections::BTreeSet<&Timestamp> = got.keys().chain(expected.keys()).collect();
    let wrong: Vec<String> = hours
        .into_iter()
        .filter_map(|h| {
            let (g, e) = (got.get(h).copied().unwrap_or(0), expected.get(h).copied().unwrap_or(0));
            ((g - e).abs() > tolerance_mwh).then(|| format!("{h}: {g} mWh, the data {e} mWh"))
        })
        .collect();
    assert!(wrong.is_empty(), "{} hours differ, e.g. {:?}", wrong.len(), &wrong[..wrong.len().min(5)]);
    assert!(expected.values().sum::<i64>() > 0, "the data has energy");
}

const JANUARY: (&str, &str) = ("2013-01-01T00:00:00Z", "2013-02-01T00:00:00Z");

/// A London household's January, with `faults`.
async fn london_january(
    test: &str,
    household: &str,
    faults: FaultConfig,
    tune: impl FnOnce(&mut Config),
) -> (Pipeline, Report, String) {
    let pipeline = Pipeline::start(test, &[household], "Europe/London").await;
    let mut config = pipeline.config(common::TEN_HOUSEHOLDS, faults);
    config.select = vec![household.to_owned()];
    tune(&mut config);
    let report = simulate(&config).await;
    let device = pipeline.device(household);
    (pipeline, report, device)
}

fn january(household: &str) -> Hourly {
    common::london_hourly(&common::london_half_hours(household), ts(JANUARY.0), ts(JANUARY.1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reboot_reporting_zero_is_a_reset_and_the_energy_is_the_files() {
    let faults =
        FaultConfig { reboots: vec![At::Absolute(ts("2013-01-12T08:00:00Z"))], ..Default::default() };
    let (mut pipeline, report, device) = london_january("reboot", "MAC000006", faults, |_| {}).await;
    assert_eq!(report.counters.reboots, 1);
    assert!(report.complete(), "{report}");
    pipeline.wait_for(report.published() as i64, 0).await;

    assert_hours(&pipeline.hourly(&device).await, &january("MAC000006"), 0);
    // The new boot reads 3 s after the old one's last reading: the counter fell to 0.
    let events = pipeline.counter_events(&device).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!((events[0].0, events[0].1.as_str()), (ts("2013-01-12T08:00:03Z"), "reset"));
    let boots: Vec<(String, i64, i64)> = pipeline
        .client()
        .await
        .query(
            "SELECT boot_id, min(seq), count(*) FROM readings WHERE device_id = $1 GROUP BY boot_id ORDER BY min(ts)",
            &[&device],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(boots.len(), 2, "two boots: {boots:?}");
    assert_eq!((boots[0].1, boots[1].1), (0, 0), "seq starts over with each boot");
    assert!(pipeline.dead_letters().await.is_empty());
    // Birth at each boot, goodbye at the end (a shared connection carries no will).
    pipeline.stop_bridges().await;
    let online: Vec<bool> = pipeline.status_changes().await.iter().map(|(online, _)| *online).collect();
    assert_eq!(online, [true, true, false]);
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_counter_reset_through_modbus_is_a_reset_and_the_energy_is_the_files() {
    let faults =
        FaultConfig { counter_resets: vec![At::Absolute(ts("2013-01-20T00:00:00Z"))], ..Default::default() };
    let (pipeline, report, device) = london_january("reset", "MAC000010", faults, |_| {}).await;
    assert_eq!(report.counters.counter_resets, 1);
    assert!(report.complete(), "{report}");
    pipeline.wait_for(report.published() as i64, 0).await;

    let expected = january("MAC000010");
    assert_hours(&pipeline.hourly(&device).await, &expected, 0);
    // Reset right after the 00:00 reading: the 00:30 reading carries that half hour only.
    let slot_mwh = common::london_half_hours("MAC000010")
        .iter()
        .find(|(start, _)| *start == ts("2013-01-20T00:00:00Z"))
        .unwrap()
        .1
        * 1_000;
    let events = pipeline.counter_events(&device).await;
    assert_eq!(events, [(ts("2013-01-20T00:30:00Z"), "reset".to_owned(), slot_mwh)]);
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_pzem_logs_reset_counters_are_resets() {
    let ports = ["ttyUSB0", "ttyUSB1", "ttyUSB2"];
    let pipeline = Pipeline::start("pzemlog", &ports, "Asia/Ho_Chi_Minh").await;
    let config = pipeline.config(common::PZEM_LOG, FaultConfig::default());
    let report = simulate(&config).await;
    assert_eq!(report.meters, 3);
    assert!(report.complete(), "{report}");
    pipeline.wait_for(report.published() as i64, 0).await;

    // From the raw log: where each port's counter falls (across the 2.5 h gap).
    let text = std::fs::read_to_string(common::data_file(common::PZEM_LOG)).unwrap();
    let hcm = jiff::tz::TimeZone::get("Asia/Ho_Chi_Minh").unwrap();
    for port in ports {
        let mut rows: Vec<(Timestamp, f64)> = text
            .lines()
            .skip(1)
            .map(|l| l.trim_end_matches('\r').split(',').collect::<Vec<_>>())
            .filter(|f| f[1].ends_with(port))
            .map(|f| {
                let local: jiff::civil::DateTime = f[0].parse().unwrap();
                (local.to_zoned(hcm.clone()).unwrap().timestamp(), f[5].parse().unwrap())
            })
            .collect();
        rows.sort_by_key(|r| r.0);
        let fall = rows.windows(2).find(|w| w[1].1 < w[0].1).expect("the log's counter falls");
        // The meter reads every 10 s on the clock's grid: the first reading at or after
        // the row that shows the fall.
        let at = Timestamp::from_second((fall[1].0.as_second() + 9).div_euclid(10) * 10).unwrap();
        let device = pipeline.device(port);
        let events = pipeline.counter_events(&device).await;
        assert_eq!(events, [(at, "reset".to_owned(), 0)], "{port}: {} Wh → {} Wh", fall[0].1, fall[1].1);
        // Idle meters: no energy.
        assert_eq!(pipeline.hourly(&device).await.values().sum::<i64>(), 0, "{port}");
    }
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollover_at_the_register_top_counts_across_it() {
    let pipeline = Pipeline::start("rollover", &["uci-sceaux"], "Europe/Paris").await;
    // 5 kWh below 9999.99 kWh: the household passes it on its first evening.
    let faults = FaultConfig { rollover_in_wh: Some(5_000), ..Default::default() };
    let mut config = pipeline.config(common::UCI, faults);
    config.interval = Some(Duration::from_secs(15 * 60));
    let report = simulate(&config).await;
    assert_eq!(report.counters.rollovers, 1);
    assert!(report.complete(), "{report}");
    pipeline.wait_for(report.published() as i64, 0).await;

    let device = pipeline.device("uci-sceaux");
    let events = pipeline.counter_events(&device).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].1, "rollover");
    // The data's energy per hour, exactly (W·ms); the meter counts whole Wh, so each
    // hour is within 1 Wh and the whole within 1 Wh.
    let minutes = common::uci_minutes();
    let (first, last) = (minutes[0].0, minutes.last().unwrap().0 + SignedDuration::from_mins(1));
    let exact = common::uci_hourly_w_ms(&minutes, first, last);
    let got = pipeline.hourly(&device).await;
    let mut worst: f64 = 0.0;
    for (hour, w_ms) in &exact {
        let diff = got.get(hour).copied().unwrap_or(0) as f64 - common::w_ms_to_mwh(*w_ms);
        worst = worst.max(diff.abs());
    }
    assert!(got.keys().all(|h| exact.contains_key(h)), "no energy outside the data's hours");
    assert!(worst < 1_000.0, "an hour is off by {worst} mWh");
    let total_exact = common::w_ms_to_mwh(exact.values().sum());
    let total = got.values().sum::<i64>() as f64;
    assert!((total - total_exact).abs() < 1_000.0, "{total} mWh vs the data's {total_exact} mWh");
    assert!(total > 300_000_000.0, "twelve days of a household: {total} mWh");
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivered_readings_are_duplicates_not_energy() {
    let faults = FaultConfig { duplicate_rate: 0.05, ..Default::default() };
    let (pipeline, report, device) = london_january("duplicates", "MAC000015", faults, |_| {}).await;
    let lost = report.counters.lost_acks as i64;
    assert!(lost > 20, "{report}");
    assert!(report.complete(), "{report}");
    pipeline.wait_for(report.published() as i64, lost).await;

    assert_hours(&pipeline.hourly(&device).await, &january("MAC000015"), 0);
    assert!(pipeline.counter_events(&device).await.is_empty());
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_meter_sends_its_buffer_late_and_reports_what_it_dropped() {
    let faults = FaultConfig {
        outages: vec![
            // 6 h: 12 readings, the outbox holds 16.
            (At::Absolute(ts("2013-01-08T06:00:00Z")), SignedDuration::from_hours(6)),
            // 12 h: 24 readings and more; the oldest go.
            (At::Absolute(ts("2013-01-20T00:00:00Z")), SignedDuration::from_hours(12)),
        ],
        ..Default::default()
    };
    let (pipeline, report, device) =
        london_january("outage", "MAC000020", faults, |config| config.outbox = 16).await;
    let dropped = report.counters.dropped as i64;
    assert_eq!(report.counters.outages, 2);
    assert!(dropped >= 9, "{report}");
    assert_eq!(report.published() + report.counters.dropped, report.counters.readings);
    assert!(report.complete(), "{report}");
    pipeline.wait_for(report.published() as i64, 0).await;

    // The oldest readings of the long outage are the ones missing.
    let client = pipeline.client().await;
    let stored: Vec<Timestamp> = client
        .query("SELECT ts FROM readings WHERE device_id = $1 ORDER BY ts", &[&device])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let gap_start = ts("2013-01-19T23:30:00Z");
    let first_kept = ts("2013-01-20T00:00:00Z") + SignedDuration::from_mins(30 * dropped);
    let index = stored.iter().position(|t| *t == gap_start).expect("the last reading before the outage");
    assert_eq!(stored[index + 1], first_kept, "{dropped} oldest readings of the outage dropped");
    // The buffered ones arrived after newer ones? No: oldest first, so none is late.
    let late: i64 = client
        .query_one("SELECT count(*) FROM readings WHERE device_id = $1 AND (late OR too_late)", &[&device])
        .await
        .unwrap()
        .get(0);
    assert_eq!(late, 0);

    // Hours away from the hole are the file's; across it the counter's increase is
    // spread in proportion to time, so those hours together still hold the file's sum.
    let expected = january("MAC000020");
    let got = pipeline.hourly(&device).await;
    let in_hole = |h: &Timestamp| *h + SignedDuration::from_hours(1) > gap_start && *h < first_kept;
    let outside =
        |m: &Hourly| -> Hourly { m.iter().filter(|(h, _)| !in_hole(h)).map(|(h, e)| (*h, *e)).collect() };
    assert_hours(&outside(&got), &outside(&expected), 0);
    let hole_sum = |m: &Hourly| m.iter().filter(|(h, _)| in_hole(h)).map(|(_, e)| e).sum::<i64>();
    assert_eq!(hole_sum(&got), hole_sum(&expected));
    assert!(pipeline.counter_events(&device).await.is_empty());
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_sent_before_sntp_answers_are_flagged_and_stamped_on_arrival() {
    // Live: the UCI household's first 20 s moved to now, one reading a second; SNTP
    // answers 5 s after boot.
    let pipeline = Pipeline::start("unsynced", &["uci-sceaux"], "Europe/Paris").await;
    let faults = FaultConfig { sntp_delay: Some(SignedDuration::from_secs(5)), ..Default::default() };
    let mut config = pipeline.config(common::UCI, faults);
    let minutes = common::uci_minutes();
    let data_start = minutes[0].0;
    config.to = Some(data_start + SignedDuration::from_secs(20));
    config.interval = Some(Duration::from_secs(1));
    config.speedup = 1.0;
    // A few seconds ahead, so connecting does not make the first readings late.
    let start = Timestamp::from_second(Timestamp::now().as_second() + 5).unwrap();
    config.start_at = Some(StartAt::At(start));
    let report = simulate(&config).await;
    assert_eq!(report.counters.unsynced_published, 5, "{report}");
    assert!(report.complete(), "{report}");
    assert_eq!(report.published(), 21);
    pipeline.wait_for(21, 0).await;

    let device = pipeline.device("uci-sceaux");
    let rows: Vec<(Timestamp, Timestamp, Timestamp, bool)> = pipeline
        .client()
        .await
        .query(
            "SELECT ts, meter_ts, received_at, clock_unsynced FROM readings WHERE device_id = $1 ORDER BY ts",
            &[&device],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    for (i, (at, meter_ts, received_at, unsynced)) in rows.iter().enumerate() {
        let due = start + SignedDuration::from_secs(i as i64);
        if i < 5 {
            // The meter said "1970 plus my uptime"; the bridge stamped its receive time.
            assert!(*unsynced, "reading {i}");
            assert_eq!(*meter_ts, Timestamp::from_second(i as i64).unwrap());
            assert_eq!(at, received_at);
            assert!(*at >= due && *at < due + SignedDuration::from_secs(1), "reading {i} at {at}, due {due}");
        } else {
            assert!(!*unsynced, "reading {i}");
            assert_eq!((*at, *meter_ts), (due, due));
        }
    }
    // The energy of those 20 s, to the Wh the meter counts.
    let shifted: Vec<(Timestamp, i64)> =
        minutes.iter().map(|(t, w)| (*t + start.duration_since(data_start), *w)).collect();
    let exact: f64 = common::uci_hourly_w_ms(&shifted, start, start + SignedDuration::from_secs(20))
        .values()
        .map(|w_ms| common::w_ms_to_mwh(*w_ms))
        .sum();
    let got = pipeline.hourly(&device).await.values().sum::<i64>() as f64;
    assert!((got - exact).abs() < 1_000.0, "{got} mWh vs the data's {exact} mWh");
    assert!(got > 10_000.0, "{got} mWh");
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_payloads_are_dead_lettered_with_their_reasons() {
    let faults = FaultConfig { malformed_rate: 0.02, ..Default::default() };
    let (pipeline, report, device) = london_january("malformed", "MAC000024", faults, |_| {}).await;
    let sent: u64 = report.counters.malformed.values().sum();
    assert!(report.counters.malformed.len() == Malformed::ALL.len(), "every kind at least once: {report}");
    assert!(report.complete(), "{report}");
    pipeline.wait_for(report.published() as i64, 0).await;
    assert_hours(&pipeline.hourly(&device).await, &january("MAC000024"), 0);

    let letters = pipeline.dead_letters().await;
    assert_eq!(letters.len() as u64, sent);
    let mut by_code: BTreeMap<&str, u64> = BTreeMap::new();
    for letter in &letters {
        assert_eq!(letter.device_id.as_deref(), Some(device.as_str()));
        assert_eq!(letter.mqtt_topic, format!("smartmeter/{device}/telemetry"));
        let payload = base64::engine::general_purpose::STANDARD.decode(&letter.payload_base64).unwrap();
        assert!(!payload.is_empty() && !letter.reason.is_empty());
        *by_code.entry(letter.error_code.as_str()).or_default() += 1;
    }
    let mut expected: BTreeMap<&str, u64> = BTreeMap::new();
    for (kind, n) in &report.counters.malformed {
        *expected.entry(kind.expected_code().as_str()).or_default() += n;
    }
    assert_eq!(by_code, expected);
    pipeline.stop().await;
}
