//! Against the real Mosquitto of infra/ (start it with `infra/up.sh`; addresses from
//! `infra/env.sh`): the simulator's account publishes, the bridge's account receives.
//! - on a shared connection, every reading arrives intact and every publish is acknowledged;
//! - on one connection per meter, each meter's birth, last will (when its link drops
//!   during an outage) and goodbye arrive on its status topic;
//! - a wrong password is an error, not a retry loop.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use jiff::SignedDuration;
use meter_simulator::faults::{At, FaultConfig};
use meter_simulator::transport::{Connections, MqttSettings};
use meter_simulator::{Config, Output};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use smartmeter_core::service::testkit;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use common::{data_file, ts, RetainedStatuses, TEN_HOUSEHOLDS};

fn host() -> String {
    testkit::env_or("SMARTMETER_MQTT_HOST", "127.0.0.1")
}

fn port() -> u16 {
    testkit::env_or("SMARTMETER_MQTT_PORT", "1883").parse().expect("SMARTMETER_MQTT_PORT is a port")
}

fn simulator_account(client_id: &str) -> MqttSettings {
    MqttSettings {
        host: host(),
        port: port(),
        username: Some(testkit::env_or("SMARTMETER_MQTT_SIMULATOR_USER", "smartmeter-simulator")),
        password: Some(testkit::env_or("SMARTMETER_MQTT_SIMULATOR_PASSWORD", "simulator-dev-only")),
        client_id: client_id.to_owned(),
        max_inflight: 50,
        connect_timeout: Duration::from_secs(5),
        keep_alive: Duration::from_secs(30),
    }
}

fn households(prefix: &str, n: usize) -> Config {
    let mut config = Config::dry_run(vec![data_file(TEN_HOUSEHOLDS)], "unused".into());
    config.limit_meters = Some(n);
    config.from = Some(ts("2013-01-05T00:00:00Z"));
    config.to = Some(ts("2013-01-07T00:00:00Z"));
    config.device_prefix = prefix.to_owned();
    config
}

/// Subscribes with the bridge's account (a clean session of its own) and forwards
/// (topic, payload) of everything that arrives.
async fn subscribe(
    filters: &[String],
) -> (mpsc::UnboundedReceiver<(String, String)>, tokio::task::JoinHandle<()>) {
    let mut options = MqttOptions::new(testkit::unique_name("meter-sim-smoke-sub"), host(), port());
    options.set_credentials(
        testkit::env_or("SMARTMETER_MQTT_BRIDGE_USER", "smartmeter-bridge"),
        testkit::env_or("SMARTMETER_MQTT_BRIDGE_PASSWORD", "bridge-dev-only"),
    );
    options.set_keep_alive(Duration::from_secs(30)).set_clean_session(true);
    let (subscriber, mut eventloop) = AsyncClient::new(options, 64);
    for filter in filters {
        subscriber.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
    }
    let mut subacks = 0;
    while subacks < filters.len() {
        match tokio::time::timeout(Duration::from_secs(5), eventloop.poll()).await {
            Ok(Ok(Event::Incoming(Packet::SubAck(ack)))) => {
                assert!(
                    ack.return_codes.iter().all(|c| matches!(c, rumqttc::SubscribeReasonCode::Success(_))),
                    "{ack:?}"
                );
                subacks += 1;
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!(
                "cannot subscribe at {}:{} with the bridge account ({e}); is infra/up.sh running?",
                host(),
                port()
            ),
            Err(_) => panic!("no SUBACK from {}:{} within 5 s", host(), port()),
        }
    }
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let _subscriber = subscriber;
        while let Ok(event) = eventloop.poll().await {
            if let Event::Incoming(Packet::Publish(publish)) = event {
                let _ =
                    tx.send((publish.topic.clone(), String::from_utf8_lossy(&publish.payload).into_owned()));
            }
        }
    });
    (rx, task)
}

#[tokio::test]
async fn readings_arrive_intact_at_the_bridge_account() {
    let prefix = format!("{}-", testkit::unique_name("smoke"));
    // What should arrive: the same run as a dry run (the same seed, the same boot ids).
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("expected.jsonl");
    let mut dry = households(&prefix, 3);
    dry.output = Output::DryRun(file.clone());
    let dry_report = meter_simulator::run(&dry, CancellationToken::new()).await.unwrap();
    let expected: Vec<String> = std::fs::read_to_string(&file).unwrap().lines().map(String::from).collect();
    assert_eq!(expected.len(), 3 * 97, "two days of three meters, both ends included");
    assert_eq!(dry_report.published() as usize, expected.len());

    let devices: BTreeSet<String> = expected
        .iter()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["device_id"].as_str().unwrap().to_owned()
        })
        .collect();
    let filters: Vec<String> = devices.iter().map(|d| format!("smartmeter/{d}/telemetry")).collect();
    let (mut rx, receiver) = subscribe(&filters).await;
    // The meters' births are retained: gone when the test ends, however it ends.
    let _statuses = RetainedStatuses::of(&devices);

    let mut config = households(&prefix, 3);
    config.output = Output::Mqtt {
        settings: simulator_account(&testkit::unique_name("meter-sim-smoke-pub")),
        connections: Connections::Pool(2),
    };
    let report = meter_simulator::run(&config, CancellationToken::new()).await.unwrap();
    assert!(report.complete(), "{report}");
    assert_eq!(report.published() as usize, expected.len());
    assert_eq!(report.transport.acked, report.transport.messages, "every publish acknowledged");

    let wanted: BTreeSet<&str> = expected.iter().map(String::as_str).collect();
    let mut arrived: BTreeSet<String> = BTreeSet::new();
    let mut per_device: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while arrived.len() < wanted.len() {
        let Ok(Some((topic, payload))) = tokio::time::timeout_at(deadline, rx.recv()).await else { break };
        let value: serde_json::Value = serde_json::from_str(&payload).unwrap();
        let device = value["device_id"].as_str().unwrap().to_owned();
        assert_eq!(topic, format!("smartmeter/{device}/telemetry"));
        assert!(wanted.contains(payload.as_str()), "unexpected payload {payload}");
        per_device.entry(device).or_default().push(value["timestamp"].as_str().unwrap().to_owned());
        arrived.insert(payload);
    }
    receiver.abort();
    assert_eq!(arrived.len(), wanted.len(), "payloads missing");
    for (device, times) in per_device {
        assert!(times.windows(2).all(|w| w[0] < w[1]), "{device}: arrived out of order or twice");
    }
}

#[tokio::test]
async fn per_meter_connections_carry_birth_will_and_goodbye() {
    let prefix = format!("{}-", testkit::unique_name("wills"));
    let mut config = households(&prefix, 2);
    config.to = Some(ts("2013-01-05T12:00:00Z"));
    config.faults = FaultConfig {
        outages: vec![(At::Absolute(ts("2013-01-05T03:00:00Z")), SignedDuration::from_hours(2))],
        ..Default::default()
    };
    config.output = Output::Mqtt {
        settings: simulator_account(&format!("{}-", testkit::unique_name("meter-sim-smoke"))),
        connections: Connections::Dedicated,
    };
    let devices = [format!("{prefix}MAC000002"), format!("{prefix}MAC000006")];
    let filters: Vec<String> = devices.iter().map(|d| format!("smartmeter/{d}/status")).collect();
    let (mut rx, receiver) = subscribe(&filters).await;
    // Births, wills and goodbyes are retained: gone when the test ends, however it ends.
    let _statuses = RetainedStatuses::of(&devices);

    let report = meter_simulator::run(&config, CancellationToken::new()).await.unwrap();
    assert!(report.complete(), "{report}");
    assert_eq!(report.counters.births, 4, "each meter: at boot and after the outage");
    assert_eq!(report.counters.goodbyes, 2);

    let mut statuses: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while statuses.values().map(Vec::len).sum::<usize>() < 8 {
        let Ok(Some((topic, payload))) = tokio::time::timeout_at(deadline, rx.recv()).await else { break };
        statuses.entry(topic).or_default().push(payload);
    }
    receiver.abort();
    for topic in &filters {
        // Birth, the will the broker published when the outage dropped the socket,
        // birth again, and the goodbye.
        assert_eq!(
            statuses.get(topic).map(Vec::as_slice),
            Some(&["online", "offline", "online", "offline"].map(String::from)[..]),
            "{topic}"
        );
    }
}

#[tokio::test]
async fn a_wrong_password_is_reported_not_retried() {
    let mut settings = simulator_account(&testkit::unique_name("meter-sim-smoke-bad"));
    settings.password = Some("not-the-password".into());
    let mut config = households("bad-", 1);
    config.output = Output::Mqtt { settings, connections: Connections::Pool(1) };
    let err = meter_simulator::run(&config, CancellationToken::new()).await.unwrap_err();
    assert!(err.to_string().contains("refused"), "{err}");
}
