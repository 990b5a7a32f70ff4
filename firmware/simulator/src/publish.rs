//! Where the payloads go: an MQTT broker (QoS 1, not retained, every PubAck counted)
//! or, for a dry run, a file with one JSON payload per line.
//!
//! The MQTT event loop is polled in its own task and never blocked; it counts PubAcks.
//! The session is persistent (clean session off) so that rumqttc re-sends unacknowledged
//! publishes after a reconnect; a broker that lost the session makes the final ack count
//! fall short, which the caller reports as a failure.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rumqttc::{AsyncClient, ConnectionError, Event, MqttOptions, Outgoing, Packet, QoS};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Capacity of the queue between the publisher and the event loop.
const REQUEST_QUEUE: usize = 256;
const RECONNECT_DELAY_MIN: Duration = Duration::from_millis(200);
const RECONNECT_DELAY_MAX: Duration = Duration::from_secs(5);
const DISCONNECT_GRACE: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
pub struct MqttConfig {
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    pub password: Option<String>,
    pub client_id: String,
    /// Publishes sent but not yet acknowledged, at most.
    pub max_inflight: u16,
    pub connect_timeout: Duration,
    pub keep_alive: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("cannot connect to the MQTT broker at {addr}: {reason}")]
    Connect { addr: String, reason: String },
    #[error("the MQTT broker at {addr} sent no CONNACK within {timeout:?}")]
    ConnectTimeout { addr: String, timeout: Duration },
    #[error("the MQTT connection failed for good: {0}")]
    Lost(String),
    #[error("cannot write {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
}

/// What the event loop has seen.
#[derive(Debug, Clone, Default)]
struct LoopState {
    connected: bool,
    acked: u64,
    reconnects: u64,
    fatal: Option<String>,
}

/// Delivery counts once a sink is finished.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delivery {
    pub sent: u64,
    /// PubAcks received (MQTT), or lines written (dry run).
    pub confirmed: u64,
    pub reconnects: u64,
}

pub struct MqttPublisher {
    client: AsyncClient,
    state: watch::Receiver<LoopState>,
    stop: CancellationToken,
    task: JoinHandle<()>,
    sent: u64,
}

impl MqttPublisher {
    /// Connects and waits for the broker's CONNACK. A failure before the first CONNACK
    /// (broker down, bad credentials) is an error; later failures are retried.
    pub async fn connect(config: &MqttConfig) -> Result<Self, PublishError> {
        let addr = format!("{}:{}", config.host, config.port);
        let mut options = MqttOptions::new(&config.client_id, &config.host, config.port);
        options
            .set_keep_alive(config.keep_alive)
            .set_clean_session(false)
            .set_inflight(config.max_inflight.max(1));
        if let Some(user) = &config.username {
            options.set_credentials(user, config.password.as_deref().unwrap_or_default());
        }
        let (client, mut eventloop) = AsyncClient::new(options, REQUEST_QUEUE);
        eventloop.network_options.set_connection_timeout(config.connect_timeout.as_secs().max(1));

        let (state_tx, mut state) = watch::channel(LoopState::default());
        let stop = CancellationToken::new();
        let task = tokio::spawn(poll_loop(eventloop, state_tx, stop.clone()));

        let connected = tokio::time::timeout(
            config.connect_timeout,
            state.wait_for(|s| s.connected || s.fatal.is_some()),
        )
        .await
        .map(|waited| waited.map(|s| s.fatal.clone()));
        let failure = match connected {
            Err(_) => Some(PublishError::ConnectTimeout { addr, timeout: config.connect_timeout }),
            Ok(Err(_)) => Some(PublishError::Connect { addr, reason: "event loop ended".into() }),
            Ok(Ok(fatal)) => fatal.map(|reason| PublishError::Connect { addr, reason }),
        };
        if let Some(error) = failure {
            stop.cancel();
            let _ = task.await;
            return Err(error);
        }
        Ok(Self { client, state, stop, task, sent: 0 })
    }

    /// Queues one QoS 1, non-retained publish; waits while the queue is full.
    pub async fn publish(&mut self, topic: String, payload: Vec<u8>) -> Result<(), PublishError> {
        if let Some(fatal) = self.state.borrow().fatal.clone() {
            return Err(PublishError::Lost(fatal));
        }
        self.client.publish(topic, QoS::AtLeastOnce, false, payload).await.map_err(|e| {
            PublishError::Lost(self.state.borrow().fatal.clone().unwrap_or_else(|| e.to_string()))
        })?;
        self.sent += 1;
        Ok(())
    }

    pub fn acked(&self) -> u64 {
        self.state.borrow().acked
    }

    /// Waits up to `ack_timeout` for every publish to be acknowledged, then disconnects.
    pub async fn finish(mut self, ack_timeout: Duration) -> Delivery {
        let sent = self.sent;
        let _ =
            tokio::time::timeout(ack_timeout, self.state.wait_for(|s| s.acked >= sent || s.fatal.is_some()))
                .await;
        let _ = self.client.disconnect().await;
        if tokio::time::timeout(DISCONNECT_GRACE, &mut self.task).await.is_err() {
            self.stop.cancel();
            let _ = self.task.await;
        }
        let state = self.state.borrow().clone();
        Delivery { sent, confirmed: state.acked, reconnects: state.reconnects }
    }
}

async fn poll_loop(
    mut eventloop: rumqttc::EventLoop,
    state: watch::Sender<LoopState>,
    stop: CancellationToken,
) {
    let mut delay = RECONNECT_DELAY_MIN;
    loop {
        let event = tokio::select! {
            () = stop.cancelled() => return,
            event = eventloop.poll() => event,
        };
        match event {
            Ok(Event::Incoming(Packet::PubAck(_))) => state.send_modify(|s| s.acked += 1),
            Ok(Event::Incoming(Packet::ConnAck(connack))) => {
                delay = RECONNECT_DELAY_MIN;
                let reconnect = state.borrow().connected;
                if reconnect && connack.session_present {
                    tracing::info!("MQTT reconnected; the broker kept the session.");
                } else if reconnect {
                    tracing::warn!("MQTT reconnected but the broker lost the session: unacknowledged publishes are not re-sent.");
                }
                state.send_modify(|s| {
                    s.reconnects += u64::from(reconnect);
                    s.connected = true;
                });
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => return,
            Ok(_) => {}
            Err(error) => {
                let first_connection = !state.borrow().connected;
                if first_connection || matches!(error, ConnectionError::ConnectionRefused(_)) {
                    state.send_modify(|s| s.fatal = Some(describe(&error)));
                    return;
                }
                tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "MQTT connection lost; reconnecting.");
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(RECONNECT_DELAY_MAX);
            }
        }
    }
}

fn describe(error: &ConnectionError) -> String {
    match error {
        ConnectionError::ConnectionRefused(code) => {
            format!(
                "the broker refused the connection ({code:?}); check SMARTMETER_MQTT_SIMULATOR_USER/PASSWORD"
            )
        }
        other => other.to_string(),
    }
}

/// A dry run's output: one JSON payload per line.
pub struct JsonLines {
    path: PathBuf,
    out: BufWriter<File>,
    written: u64,
}

impl JsonLines {
    pub fn create(path: &Path) -> Result<Self, PublishError> {
        let file = File::create(path).map_err(|source| PublishError::Io { path: path.to_owned(), source })?;
        Ok(Self { path: path.to_owned(), out: BufWriter::new(file), written: 0 })
    }

    pub fn write(&mut self, payload: &[u8]) -> Result<(), PublishError> {
        self.out
            .write_all(payload)
            .and_then(|()| self.out.write_all(b"\n"))
            .map_err(|source| PublishError::Io { path: self.path.clone(), source })?;
        self.written += 1;
        Ok(())
    }

    pub fn finish(mut self) -> Result<Delivery, PublishError> {
        self.out.flush().map_err(|source| PublishError::Io { path: self.path.clone(), source })?;
        Ok(Delivery { sent: self.written, confirmed: self.written, reconnects: 0 })
    }
}

/// Either sink, behind one interface.
pub enum Sink {
    Mqtt(MqttPublisher),
    DryRun(JsonLines),
}

impl Sink {
    pub async fn send(&mut self, topic: String, payload: Vec<u8>) -> Result<(), PublishError> {
        match self {
            Sink::Mqtt(mqtt) => mqtt.publish(topic, payload).await,
            Sink::DryRun(file) => file.write(&payload),
        }
    }

    /// Confirmed so far (for progress display).
    pub fn confirmed(&self) -> u64 {
        match self {
            Sink::Mqtt(mqtt) => mqtt.acked(),
            Sink::DryRun(file) => file.written,
        }
    }

    pub async fn finish(self, ack_timeout: Duration) -> Result<Delivery, PublishError> {
        match self {
            Sink::Mqtt(mqtt) => Ok(mqtt.finish(ack_timeout).await),
            Sink::DryRun(file) => file.finish(),
        }
    }
}
