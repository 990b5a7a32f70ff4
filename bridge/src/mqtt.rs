//! The MQTT side: the rumqttc event loop, polled in a task of its own, and the
//! acknowledger that sends PUBACKs once Kafka has confirmed a message.
//!
//! The poller never waits on Kafka: it hands each publish to the forwarder over a
//! bounded channel (that channel filling up is the bridge's back-pressure) and keeps
//! polling, so pings, acknowledgements and reconnections go on. The session is
//! persistent (`clean_session = false`, fixed client id) and acknowledgements are
//! manual, so a message the bridge has not acknowledged is redelivered by the broker
//! after a reconnect or a restart.
//!
//! A PUBACK belongs to the connection its PUBLISH came on: after a reconnect the broker
//! resends every unacknowledged message (same packet id), and the old packet ids may be
//! reused for other messages. So each message carries the [`Epoch`] of its connection
//! and acknowledgements from an earlier epoch are skipped, not sent.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use rumqttc::{
    AsyncClient, ConnectReturnCode, Event, EventLoop, MqttOptions, Outgoing, Packet, Publish, QoS,
    SubscribeFilter, SubscribeReasonCode,
};
use smartmeter_core::service::health::Health;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::backoff::Backoff;
use crate::config::Config;
use crate::metrics::Metrics;

/// Health component name.
pub const HEALTH: &str = "mqtt";

/// First wait after a failed connection; it doubles up to the configured maximum.
const RECONNECT_MIN: Duration = Duration::from_millis(100);
/// A connection that lasted this long counts as a success and resets the back-off; a
/// broker that accepts and then drops us at once (a duplicate client id, an ACL) is
/// retried with growing delays instead of in a tight loop.
const STABLE_CONNECTION: Duration = Duration::from_secs(10);
/// Requests (acks, subscribe, disconnect) queued for the event loop.
pub const REQUEST_CHANNEL_CAPACITY: usize = 1024;

/// A publish as the poller hands it to the forwarder.
#[derive(Debug)]
pub struct Received {
    pub publish: Publish,
    pub received_at: Timestamp,
    pub epoch: u64,
}

/// What it takes to acknowledge a publish: packet id and QoS on the connection it
/// came on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckToken {
    pub pkid: u16,
    pub qos: QoS,
    pub epoch: u64,
}

impl AckToken {
    pub fn of(received: &Received) -> Self {
        Self { pkid: received.publish.pkid, qos: received.publish.qos, epoch: received.epoch }
    }
}

/// Numbers the broker connections: it moves on whenever a connection is made or lost.
#[derive(Debug, Clone, Default)]
pub struct Epoch(Arc<EpochState>);

#[derive(Debug, Default)]
struct EpochState {
    number: AtomicU64,
    connected: AtomicBool,
}

impl Epoch {
    pub fn current(&self) -> u64 {
        self.0.number.load(Ordering::SeqCst)
    }

    /// Whether the broker connection is up (CONNACK received, no error since).
    pub fn is_connected(&self) -> bool {
        self.0.connected.load(Ordering::SeqCst)
    }

    fn connected(&self) {
        self.0.number.fetch_add(1, Ordering::SeqCst);
        self.0.connected.store(true, Ordering::SeqCst);
    }

    fn lost(&self) {
        self.0.connected.store(false, Ordering::SeqCst);
        self.0.number.fetch_add(1, Ordering::SeqCst);
    }
}

pub fn options(config: &Config) -> MqttOptions {
    let mut options = MqttOptions::new(&config.mqtt_client_id, &config.mqtt_host, config.mqtt_port);
    options
        .set_clean_session(false)
        .set_manual_acks(true)
        .set_keep_alive(config.mqtt_keep_alive)
        .set_max_packet_size(config.mqtt_max_packet_bytes, config.mqtt_max_packet_bytes)
        .set_request_channel_capacity(REQUEST_CHANNEL_CAPACITY);
    if let Some(user) = &config.mqtt_user {
        options.set_credentials(user, config.mqtt_password.as_deref().unwrap_or_default());
    }
    options
}

/// Ends the persistent session of `config`'s client id: the broker drops what it
/// queued for it and stops queueing. For a bridge (or a test's bridge, whose client id
/// is its own) taken out of service for good; a bridge that will come back must not do
/// this, or the messages queued meanwhile are lost.
pub async fn discard_session(config: &Config) -> Result<(), rumqttc::ConnectionError> {
    let mut options = options(config);
    options.set_clean_session(true);
    let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 8);
    loop {
        match tokio::time::timeout(config.mqtt_keep_alive, eventloop.poll()).await {
            Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_)))) => break,
            Ok(Ok(_)) => {}
            Ok(Err(error)) => return Err(error),
            Err(_) => return Err(rumqttc::ConnectionError::NetworkTimeout),
        }
    }
    let _ = client.disconnect().await;
    // Send the DISCONNECT; the loop ends with an error once the broker closes.
    let _ =
        tokio::time::timeout(Duration::from_secs(2), async { while eventloop.poll().await.is_ok() {} }).await;
    Ok(())
}

/// Polls the event loop until `stop` or until a requested disconnect went out.
pub struct Poller {
    pub eventloop: EventLoop,
    pub client: AsyncClient,
    /// Topic filters, subscribed to together (QoS 1).
    pub subscriptions: Vec<String>,
    pub epoch: Epoch,
    pub health: Health,
    pub metrics: Metrics,
    pub reconnect_max: Duration,
}

impl Poller {
    pub async fn run(mut self, handoff: mpsc::Sender<Received>, stop: CancellationToken) {
        let mut handoff = Some(handoff);
        let mut backoff = Backoff::new(RECONNECT_MIN, self.reconnect_max);
        let mut connected_at: Option<Instant> = None;
        let mut subscribed_once = false;
        loop {
            let event = tokio::select! {
                biased;
                () = stop.cancelled() => break,
                event = self.eventloop.poll() => event,
            };
            match event {
                Ok(Event::Incoming(Packet::ConnAck(connack))) => {
                    self.epoch.connected();
                    self.metrics.mqtt_connections.inc();
                    connected_at = Some(Instant::now());
                    let session_present = connack.session_present;
                    info!(session_present, client_id = %self.eventloop.mqtt_options.client_id(), "Connected to MQTT broker.");
                    // A new session has no subscription. The first connection of the process
                    // subscribes even to a kept session, in case an earlier run never did.
                    if session_present && subscribed_once {
                        self.health.up(HEALTH);
                    } else {
                        self.health.down(HEALTH, "connected; subscribing");
                        self.subscribe();
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(suback))) => {
                    let refused =
                        suback.return_codes.iter().any(|code| matches!(code, SubscribeReasonCode::Failure));
                    if refused {
                        error!(subscriptions = ?self.subscriptions, "Broker refused a subscription; check the bridge account's ACL.");
                        self.health.down(HEALTH, format!("subscription to {:?} refused", self.subscriptions));
                    } else {
                        info!(subscriptions = ?self.subscriptions, "Subscribed.");
                        subscribed_once = true;
                        self.health.up(HEALTH);
                    }
                }
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    let received_at = Timestamp::now();
                    self.metrics.mqtt_received.inc();
                    let Some(tx) = &handoff else {
                        debug!(topic = %publish.topic, "Not taking new messages while shutting down; the broker redelivers this one.");
                        continue;
                    };
                    let received = Received { publish, received_at, epoch: self.epoch.current() };
                    // Waits only while the forwarder is full: back-pressure towards the broker.
                    let handed_over = tokio::select! {
                        biased;
                        () = stop.cancelled() => break,
                        sent = tx.send(received) => sent.is_ok(),
                    };
                    if !handed_over {
                        handoff = None;
                    }
                }
                Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                    self.epoch.lost();
                    info!("Disconnected from MQTT broker.");
                    break;
                }
                Ok(_) => {}
                Err(error) => {
                    self.epoch.lost();
                    self.metrics.mqtt_connection_errors.inc();
                    self.health.down(HEALTH, error.to_string());
                    if connected_at.take().is_some_and(|at| at.elapsed() >= STABLE_CONNECTION) {
                        backoff.reset();
                    }
                    let delay = backoff.next_delay();
                    let retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
                    if let rumqttc::ConnectionError::ConnectionRefused(code) = &error {
                        error!(code = ?code, retry_in_ms, hint = refusal_hint(*code), "MQTT broker refused the connection.");
                    } else {
                        warn!(%error, retry_in_ms, "MQTT connection failed.");
                    }
                    tokio::select! {
                        () = stop.cancelled() => break,
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
        self.epoch.lost();
        self.health.down(HEALTH, "stopped");
    }

    fn subscribe(&self) {
        let filters = || self.subscriptions.iter().map(|f| SubscribeFilter::new(f.clone(), QoS::AtLeastOnce));
        // Never wait on the request channel here: only this task drains it.
        if self.client.try_subscribe_many(filters()).is_err() {
            let client = self.client.clone();
            let filters: Vec<SubscribeFilter> = filters().collect();
            tokio::spawn(async move {
                if let Err(error) = client.subscribe_many(filters).await {
                    warn!(%error, "Could not request the subscription.");
                }
            });
        }
    }
}

fn refusal_hint(code: ConnectReturnCode) -> &'static str {
    match code {
        ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized => {
            "check SMARTMETER_MQTT_BRIDGE_USER and SMARTMETER_MQTT_BRIDGE_PASSWORD"
        }
        ConnectReturnCode::BadClientId => "check --mqtt-client-id",
        _ => "the broker is not accepting connections",
    }
}

/// Sends the PUBACKs, in the order the forwarder confirms the messages (which is the
/// order they were received), until the forwarder is done.
pub async fn acknowledge(
    client: AsyncClient,
    mut acks: mpsc::UnboundedReceiver<AckToken>,
    epoch: Epoch,
    metrics: Metrics,
) {
    while let Some(token) = acks.recv().await {
        let Some(publish) = ack_for(token, epoch.current()) else {
            if token.qos != QoS::AtMostOnce {
                metrics.mqtt_stale_acks.inc();
                debug!(pkid = token.pkid, "Connection changed since receipt; the broker redelivers instead.");
            }
            continue;
        };
        if let Err(error) = client.ack(&publish).await {
            warn!(%error, "MQTT event loop is gone; unacknowledged messages will be redelivered.");
            break;
        }
        metrics.mqtt_acks.inc();
    }
}

/// The publish to hand to [`AsyncClient::ack`], or `None` when there is nothing to
/// send: QoS 0 needs no acknowledgement, and one from an earlier connection is stale.
fn ack_for(token: AckToken, current_epoch: u64) -> Option<Publish> {
    if token.qos == QoS::AtMostOnce || token.epoch != current_epoch {
        return None;
    }
    let mut publish = Publish::new("", token.qos, Vec::new());
    publish.pkid = token.pkid;
    Some(publish)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_is_persistent_and_acks_are_manual() {
        use clap::Parser as _;
        let config = Config::try_parse_from(["bridge", "--mqtt-client-id", "bridge-a"]).unwrap();
        let options = options(&config);
        assert!(!options.clean_session());
        assert!(options.manual_acks());
        assert_eq!(options.client_id(), "bridge-a");
    }

    #[test]
    fn acks_of_an_earlier_connection_are_not_sent() {
        let token = AckToken { pkid: 7, qos: QoS::AtLeastOnce, epoch: 3 };
        let publish = ack_for(token, 3).unwrap();
        assert_eq!((publish.pkid, publish.qos), (7, QoS::AtLeastOnce));
        assert!(ack_for(token, 4).is_none());
    }

    #[test]
    fn qos0_needs_no_ack() {
        assert!(ack_for(AckToken { pkid: 0, qos: QoS::AtMostOnce, epoch: 0 }, 0).is_none());
    }

    #[test]
    fn epoch_moves_on_with_every_connection_made_or_lost() {
        let epoch = Epoch::default();
        let clone = epoch.clone();
        epoch.connected();
        assert_eq!((clone.current(), clone.is_connected()), (1, true));
        epoch.lost();
        assert_eq!((clone.current(), clone.is_connected()), (2, false));
    }
}
