//! Against the real Mosquitto of infra/ (start it with `infra/up.sh`): the simulator's
//! account publishes a few hundred readings, the bridge's account receives them intact,
//! and every publish is acknowledged.
//!
//! Connection settings come from the environment, with infra/env.sh's defaults.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use meter_simulator::publish::MqttConfig;
use meter_simulator::{Config, Output, Source};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio_util::sync::CancellationToken;

use common::{data_file, TEN_HOUSEHOLDS};

const METERS: usize = 3;

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

fn host() -> String {
    env_or("SMARTMETER_MQTT_HOST", "127.0.0.1")
}

fn port() -> u16 {
    env_or("SMARTMETER_MQTT_PORT", "1883").parse().expect("SMARTMETER_MQTT_PORT is a port")
}

fn replay_config(output: Output) -> Config {
    Config {
        source: Source::London,
        inputs: vec![data_file(TEN_HOUSEHOLDS)],
        points_per_slot: 1,
        speedup: 0.0,
        limit_meters: Some(METERS),
        from: Some("2013-01-05T00:00:00Z".parse().unwrap()),
        to: Some("2013-01-07T00:00:00Z".parse().unwrap()),
        output,
        ack_timeout: Duration::from_secs(20),
        progress: false,
    }
}

fn simulator_account() -> MqttConfig {
    MqttConfig {
        host: host(),
        port: port(),
        username: Some(env_or("SMARTMETER_MQTT_SIMULATOR_USER", "smartmeter-simulator")),
        password: Some(env_or("SMARTMETER_MQTT_SIMULATOR_PASSWORD", "simulator-dev-only")),
        client_id: format!("meter-sim-smoke-pub-{}", std::process::id()),
        max_inflight: 50,
        connect_timeout: Duration::from_secs(5),
        keep_alive: Duration::from_secs(30),
    }
}

#[tokio::test]
async fn readings_arrive_intact_at_the_bridge_account() {
    // What should arrive: the same replay as a dry run.
    let dir = tempfile::tempdir().unwrap();
    let expected_file = dir.path().join("expected.jsonl");
    let dry =
        meter_simulator::run(&replay_config(Output::DryRun(expected_file.clone())), CancellationToken::new())
            .await
            .unwrap();
    let expected: Vec<String> =
        std::fs::read_to_string(&expected_file).unwrap().lines().map(String::from).collect();
    assert_eq!(expected.len(), METERS * 97, "two days of three meters, both ends included");
    assert_eq!(dry.scheduled as usize, expected.len());
    let devices: BTreeSet<String> = expected
        .iter()
        .map(|line| {
            serde_json::from_str::<serde_json::Value>(line).unwrap()["device_id"].as_str().unwrap().to_owned()
        })
        .collect();

    // Subscribe with the bridge's account (a clean session of our own).
    let mut options = MqttOptions::new(format!("meter-sim-smoke-sub-{}", std::process::id()), host(), port());
    options.set_credentials(
        env_or("SMARTMETER_MQTT_BRIDGE_USER", "smartmeter-bridge"),
        env_or("SMARTMETER_MQTT_BRIDGE_PASSWORD", "bridge-dev-only"),
    );
    options.set_keep_alive(Duration::from_secs(30)).set_clean_session(true);
    let (subscriber, mut eventloop) = AsyncClient::new(options, 64);
    for device in &devices {
        subscriber.subscribe(format!("smartmeter/{device}/telemetry"), QoS::AtLeastOnce).await.unwrap();
    }
    let mut subacks = 0;
    while subacks < devices.len() {
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
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let receiver = tokio::spawn(async move {
        while let Ok(event) = eventloop.poll().await {
            if let Event::Incoming(Packet::Publish(publish)) = event {
                let _ =
                    tx.send((publish.topic.clone(), String::from_utf8(publish.payload.to_vec()).unwrap()));
            }
        }
    });

    // Publish with the simulator's account.
    let report =
        meter_simulator::run(&replay_config(Output::Mqtt(simulator_account())), CancellationToken::new())
            .await
            .unwrap();
    assert_eq!(report.published as usize, expected.len());
    assert_eq!(report.confirmed, report.published, "every publish acknowledged");
    assert!(report.complete());

    // Collect until everything arrived.
    let wanted: BTreeSet<&str> = expected.iter().map(String::as_str).collect();
    let mut arrived: BTreeSet<String> = BTreeSet::new();
    let mut per_device: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while arrived.len() < wanted.len() {
        let Ok(Some((topic, payload))) = tokio::time::timeout_at(deadline, rx.recv()).await else { break };
        let value: serde_json::Value = serde_json::from_str(&payload).unwrap();
        let device = value["device_id"].as_str().unwrap().to_owned();
        assert_eq!(topic, format!("smartmeter/{device}/telemetry"));
        if wanted.contains(payload.as_str()) {
            per_device.entry(device).or_default().push(value["timestamp"].as_str().unwrap().to_owned());
            arrived.insert(payload);
        }
    }
    receiver.abort();
    let missing: Vec<&&str> = wanted.iter().filter(|p| !arrived.contains(**p)).take(3).collect();
    assert!(
        missing.is_empty(),
        "{} of {} payloads missing, e.g. {missing:?}",
        wanted.len() - arrived.len(),
        wanted.len()
    );
    for (device, times) in per_device {
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "{device}: arrived out of order");
    }
}

#[tokio::test]
async fn a_wrong_password_is_reported_not_retried() {
    let mut account = simulator_account();
    account.password = Some("not-the-password".into());
    let err = meter_simulator::run(&replay_config(Output::Mqtt(account)), CancellationToken::new())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("refused"), "{err}");
}
