//! A fleet publisher for the tests that restart or kill things: QoS 1, a persistent
//! session, paced, reconnecting by itself, done when the broker acknowledged every
//! message. Also used by the bridge's tests (`#[path]`).

#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};

pub struct Account {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
}

impl Account {
    /// The simulator account of `infra/env.sh` on `port`.
    pub fn simulator(port: u16) -> Self {
        Self {
            host: "127.0.0.1".into(),
            port,
            user: std::env::var("SMARTMETER_MQTT_SIMULATOR_USER")
                .unwrap_or_else(|_| "smartmeter-simulator".into()),
            password: std::env::var("SMARTMETER_MQTT_SIMULATOR_PASSWORD")
                .unwrap_or_else(|_| "simulator-dev-only".into()),
        }
    }

    /// The bridge account of `infra/env.sh`: (user, password).
    pub fn bridge_credentials() -> (String, String) {
        (
            std::env::var("SMARTMETER_MQTT_BRIDGE_USER").unwrap_or_else(|_| "smartmeter-bridge".into()),
            std::env::var("SMARTMETER_MQTT_BRIDGE_PASSWORD").unwrap_or_else(|_| "bridge-dev-only".into()),
        )
    }
}

/// Progress of a publisher, readable while it runs.
#[derive(Debug, Default)]
pub struct Progress {
    pub sent: AtomicU64,
    pub acked: AtomicU64,
    pub connection_errors: AtomicU64,
}

/// Publishes `messages` in order, `per_second` at most, and returns once the broker
/// acknowledged each (PUBACK). Unacknowledged messages are sent again after a
/// reconnection (the session is persistent), so a broker restart loses nothing; a
/// message may reach the broker twice (QoS 1), which is the bridge's and processor's
/// to deduplicate.
pub async fn publish(
    account: Account,
    client_id: String,
    messages: Vec<(String, Vec<u8>)>,
    per_second: u32,
    progress: Arc<Progress>,
) {
    let mut options = MqttOptions::new(client_id, account.host, account.port);
    options
        .set_credentials(account.user, account.password)
        .set_clean_session(false)
        .set_keep_alive(Duration::from_secs(5))
        .set_max_packet_size(64 * 1024, 64 * 1024);
    let (client, mut eventloop) = AsyncClient::new(options, 1000);
    let expected = messages.len() as u64;
    let poller_progress = progress.clone();
    let poller = tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => {
                    if poller_progress.acked.fetch_add(1, Ordering::SeqCst) + 1 == expected {
                        return eventloop;
                    }
                }
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    assert_eq!(ack.code, rumqttc::ConnectReturnCode::Success, "simulator account refused");
                }
                Ok(Event::Outgoing(Outgoing::Publish(_))) => {
                    poller_progress.sent.fetch_add(1, Ordering::SeqCst);
                }
                Ok(_) => {}
                Err(_) => {
                    poller_progress.connection_errors.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    });
    let started = Instant::now();
    for (i, (topic, payload)) in messages.into_iter().enumerate() {
        let due = started + Duration::from_secs_f64(i as f64 / f64::from(per_second));
        tokio::time::sleep_until(due.into()).await;
        client.publish(topic, QoS::AtLeastOnce, false, payload).await.unwrap();
    }
    let mut eventloop = tokio::time::timeout(Duration::from_secs(180), poller)
        .await
        .expect("the broker acknowledged every message within 180 s")
        .unwrap();
    client.disconnect().await.unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while let Ok(event) = eventloop.poll().await {
            if matches!(event, Event::Outgoing(Outgoing::Disconnect)) {
                break;
            }
        }
    })
    .await;
}
