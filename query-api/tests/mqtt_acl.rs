//! The broker's access rules, on the real Mosquitto of `infra/up.sh` (auth + ACL from
//! `infra/mosquitto/`): every meter has its own account (`infra/mqtt-add-meter.sh`) and
//! may publish only on its own topics; the bridge's account reads every meter and
//! publishes nothing; wrong or missing credentials are refused at connect.
//!
//! MQTT 5 clients are told about a refused publish (PUBACK reason 0x87 "not
//! authorized"); the test also checks, with the bridge's account subscribed, that the
//! refused message reaches no one while an allowed one does.
//!
//! Meter accounts are unique to the run and removed at the end (the same way the
//! script documents: `mosquitto_passwd -D`, then SIGHUP).

use std::path::PathBuf;
use std::time::Duration;

use rumqttc::v5::mqttbytes::v5::{Packet, PubAckReason};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, ConnectionError, Event, EventLoop, MqttOptions};
use smartmeter_core::service::testkit;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn state_dir() -> PathBuf {
    std::env::var_os("SMARTMETER_STATE_DIR").map_or_else(|| repo().join(".state"), PathBuf::from)
}

fn broker() -> (String, u16) {
    (
        testkit::env_or("SMARTMETER_MQTT_HOST", "127.0.0.1"),
        testkit::env_or("SMARTMETER_MQTT_PORT", "1883").parse().unwrap(),
    )
}

fn bridge_account() -> (String, String) {
    (
        testkit::env_or("SMARTMETER_MQTT_BRIDGE_USER", "smartmeter-bridge"),
        testkit::env_or("SMARTMETER_MQTT_BRIDGE_PASSWORD", "bridge-dev-only"),
    )
}

fn provision(device: &str, password: &str) {
    let status = std::process::Command::new("bash")
        .arg(repo().join("infra/mqtt-add-meter.sh"))
        .args([device, password])
        .env("SMARTMETER_STATE_DIR", state_dir())
        .status()
        .expect("bash");
    assert!(status.success(), "infra/mqtt-add-meter.sh {device}");
}

/// Removes the test's meter accounts and makes the broker reload.
fn deprovision(devices: &[&str]) {
    let passwd = state_dir().join("mosquitto/passwd");
    for device in devices {
        let _ = std::process::Command::new("mosquitto_passwd").arg("-D").arg(&passwd).arg(device).status();
    }
    if let Ok(pid) = std::fs::read_to_string(state_dir().join("run/mosquitto.pid")) {
        let _ = std::process::Command::new("kill").args(["-HUP", pid.trim()]).status();
    }
}

/// A connected MQTT 5 client, or why the broker refused it.
async fn connect(
    client_id: &str,
    credentials: Option<(&str, &str)>,
) -> Result<(AsyncClient, EventLoop), ConnectionError> {
    let (host, port) = broker();
    let mut options = MqttOptions::new(client_id, host, port);
    options.set_clean_start(true).set_keep_alive(Duration::from_secs(30));
    if let Some((user, password)) = credentials {
        options.set_credentials(user, password);
    }
    let (client, mut eventloop) = AsyncClient::new(options, 16);
    loop {
        match tokio::time::timeout(Duration::from_secs(10), eventloop.poll())
            .await
            .expect("the broker answers")
        {
            Ok(Event::Incoming(Packet::ConnAck(_))) => return Ok((client, eventloop)),
            Ok(_) => {}
            Err(error) => return Err(error),
        }
    }
}

/// Publishes at QoS 1 and returns the PUBACK's reason.
async fn publish(
    client: &AsyncClient,
    eventloop: &mut EventLoop,
    topic: &str,
    payload: &str,
) -> PubAckReason {
    client.publish(topic, QoS::AtLeastOnce, false, payload.as_bytes().to_vec()).await.unwrap();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), eventloop.poll()).await.expect("a PUBACK in time")
        {
            Ok(Event::Incoming(Packet::PubAck(ack))) => return ack.reason,
            Ok(_) => {}
            Err(error) => panic!("connection failed while publishing: {error}"),
        }
    }
}

/// Payloads the subscriber receives within `wait`.
async fn received(eventloop: &mut EventLoop, wait: Duration) -> Vec<(String, String)> {
    let mut messages = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    while let Ok(event) = tokio::time::timeout_at(deadline, eventloop.poll()).await {
        if let Ok(Event::Incoming(Packet::Publish(publish))) = event {
            messages.push((
                String::from_utf8_lossy(&publish.topic).into_owned(),
                String::from_utf8_lossy(&publish.payload).into_owned(),
            ));
        }
    }
    messages
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_meter_publishes_only_its_own_topics_and_the_bridge_publishes_nothing() {
    let run = testkit::unique_name("acl").replace('_', "-");
    let (meter_a, meter_b) = (format!("{run}-a"), format!("{run}-b"));
    provision(&meter_a, "password-of-a");
    provision(&meter_b, "password-of-b");
    // The broker reloads its password file on SIGHUP; give it a moment.
    let mut connected = None;
    for _ in 0..50 {
        if let Ok(client) = connect(&format!("{run}-client-a"), Some((&meter_a, "password-of-a"))).await {
            connected = Some(client);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (a, mut a_loop) = connected.expect("meter a connects with its own account");

    // The bridge's account watches both meters' topics.
    let (bridge_user, bridge_password) = bridge_account();
    let (watcher, mut watch_loop) =
        connect(&format!("{run}-watcher"), Some((&bridge_user, &bridge_password)))
            .await
            .expect("the bridge account");
    let watched: Vec<String> = [&meter_a, &meter_b]
        .iter()
        .flat_map(|meter| [format!("smartmeter/{meter}/telemetry"), format!("smartmeter/{meter}/status")])
        .collect();
    for topic in &watched {
        watcher.subscribe(topic, QoS::AtLeastOnce).await.unwrap();
    }
    let mut subscribed = 0;
    while subscribed < watched.len() {
        if let Ok(Event::Incoming(Packet::SubAck(_))) = watch_loop.poll().await {
            subscribed += 1;
        }
    }

    let own = format!("smartmeter/{meter_a}/telemetry");
    assert!(
        matches!(
            publish(&a, &mut a_loop, &own, "own reading").await,
            PubAckReason::Success | PubAckReason::NoMatchingSubscribers
        ),
        "a meter publishes on its own telemetry topic"
    );
    assert!(matches!(
        publish(&a, &mut a_loop, &format!("smartmeter/{meter_a}/status"), "online").await,
        PubAckReason::Success | PubAckReason::NoMatchingSubscribers
    ));
    for topic in [
        format!("smartmeter/{meter_b}/telemetry"),
        format!("smartmeter/{meter_b}/status"),
        "smartmeter/other-meter/telemetry".to_owned(),
        format!("smartmeter/{meter_a}/commands"),
    ] {
        assert_eq!(publish(&a, &mut a_loop, &topic, "spoofed").await, PubAckReason::NotAuthorized, "{topic}");
    }

    // The bridge account reads, but may not write, even on a meter's topic.
    let (b_bridge, mut b_bridge_loop) =
        connect(&format!("{run}-bridge-writer"), Some((&bridge_user, &bridge_password))).await.unwrap();
    assert_eq!(
        publish(&b_bridge, &mut b_bridge_loop, &own, "from the bridge").await,
        PubAckReason::NotAuthorized
    );
    assert_eq!(
        publish(&b_bridge, &mut b_bridge_loop, &format!("smartmeter/{meter_b}/telemetry"), "from the bridge")
            .await,
        PubAckReason::NotAuthorized
    );

    // What reached the subscriber: the allowed messages only.
    let messages = received(&mut watch_loop, Duration::from_secs(2)).await;
    assert_eq!(
        messages,
        [
            (own.clone(), "own reading".to_owned()),
            (format!("smartmeter/{meter_a}/status"), "online".to_owned())
        ],
        "refused publishes reach no one"
    );

    // Wrong password, another meter's password, no account: refused at connect.
    for (id, credentials) in [
        ("wrong", Some((meter_a.as_str(), "not-the-password"))),
        ("swapped", Some((meter_a.as_str(), "password-of-b"))),
        ("anonymous", None),
    ] {
        let refused = connect(&format!("{run}-{id}"), credentials).await;
        assert!(
            matches!(refused, Err(ConnectionError::ConnectionRefused(_))),
            "{id}: {:?}",
            refused.map(|_| "connected")
        );
    }

    let _ = a.disconnect().await;
    let _ = watcher.disconnect().await;
    let _ = b_bridge.disconnect().await;
    deprovision(&[&meter_a, &meter_b]);
}
