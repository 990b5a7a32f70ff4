//! smartmeter's MQTT → Kafka bridge: at-least-once from the meter to Kafka.
//!
//! - [`config`]: flags, each with its `SMARTMETER_…` environment variable.
//! - [`mqtt`]: the broker connection (poll loop, reconnect back-off, subscription,
//!   connection epochs) and the acknowledger.
//! - [`forward`]: validate → produce → acknowledge, in receive order, with bounded
//!   in-flight messages.
//! - [`kafka`]: the idempotent producer, delivery retries, the health probe.
//! - [`metrics`]: the Prometheus metrics.
//! - [`backoff`]: exponential back-off for reconnects and retries.
//!
//! [`run`] wires them as tasks:
//!
//! ```text
//! broker ─▶ poller ──handoff (bounded)──▶ forwarder ──produce──▶ Kafka
//!             ▲                               │ confirmations, in receive order
//!             └──── PUBACK ◀── acknowledger ◀─┘
//! ```

pub mod backoff;
pub mod config;
pub mod forward;
pub mod kafka;
pub mod metrics;
pub mod mqtt;

use std::future::Future;
use std::time::Duration;

use anyhow::Context as _;
use rumqttc::AsyncClient;
use smartmeter_core::service::health::Health;
use smartmeter_core::service::{metrics as registry, ops_http};
use tokio::sync::mpsc;
use tokio::time::{timeout, timeout_at, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use config::Config;

use crate::forward::Forwarder;
use crate::metrics::Metrics;
use crate::mqtt::{Epoch, Poller};

/// Publishes the poller may hand over before it waits for the forwarder.
const HANDOFF_CAPACITY: usize = 256;
/// After the drain: how long the requested MQTT disconnect and (at most) the producer
/// flush may take.
const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);
/// Time the acknowledger gets past the drain deadline to hand over the last PUBACKs.
const ACK_GRACE: Duration = Duration::from_secs(1);

/// Runs the bridge until `shutdown` is cancelled, then drains: no new publishes are
/// taken, in-flight ones are confirmed by Kafka and acknowledged (for at most
/// `drain_timeout`), the MQTT connection is closed and the producer flushed.
///
/// Fails when the producer fails fatally or the `/metrics` listener cannot run; the
/// unacknowledged messages then stay with the broker for the next start.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let validation = config.validation()?;
    let registry = registry::registry();
    let topics = config.topics();
    let metrics = Metrics::register(&registry, &topics).context("register metrics")?;
    let health = Health::new("bridge", &[mqtt::HEALTH, kafka::HEALTH]);
    let kafka_context = kafka::Context::new(health.clone());
    let producer = kafka::producer(&config.kafka_brokers, kafka_context.clone())?;
    info!(?config, "Bridge configured.");

    // Cancelled by `shutdown`, or by a part that fails, to start the drain.
    let intake_stop = shutdown.child_token();
    // Cancelled at the drain deadline: deliveries still open are abandoned (not acked).
    let give_up = CancellationToken::new();
    // Stop the MQTT poller, the Kafka probe and (last) the ops server.
    let poll_stop = CancellationToken::new();
    let probe_stop = CancellationToken::new();
    let ops_stop = CancellationToken::new();

    let ops = tokio::spawn(stop_on_exit(
        ops_http::serve(config.metrics_addr, registry, health.clone(), ops_stop.clone()),
        intake_stop.clone(),
    ));
    let probe = tokio::spawn(kafka::watch_health(
        producer.clone(),
        kafka_context,
        config.required_topics(),
        probe_stop.clone(),
    ));

    let epoch = Epoch::default();
    let (client, eventloop) = AsyncClient::new(mqtt::options(&config), mqtt::REQUEST_CHANNEL_CAPACITY);
    let (handoff_tx, handoff_rx) = mpsc::channel(HANDOFF_CAPACITY);
    let (ack_tx, ack_rx) = mpsc::unbounded_channel();

    let poller = Poller {
        eventloop,
        client: client.clone(),
        subscriptions: config.subscriptions(),
        epoch: epoch.clone(),
        health: health.clone(),
        metrics: metrics.clone(),
        reconnect_max: config.mqtt_reconnect_max,
    };
    let mut poller = tokio::spawn(poller.run(handoff_tx, poll_stop.clone()));
    let forwarder = Forwarder {
        producer: producer.clone(),
        topics,
        validation,
        metrics: metrics.clone(),
        max_inflight: config.max_inflight,
    };
    let mut forwarder = tokio::spawn(stop_on_exit(
        forwarder.run(handoff_rx, ack_tx, intake_stop.clone(), give_up.clone()),
        intake_stop.clone(),
    ));
    let mut acker = tokio::spawn(mqtt::acknowledge(client.clone(), ack_rx, epoch.clone(), metrics.clone()));

    let mut errors = Vec::new();
    let mut poller_done = false;
    tokio::select! {
        () = intake_stop.cancelled() => {}
        result = &mut poller => {
            // The poller ends on its own only by panicking.
            poller_done = true;
            errors.push(anyhow::anyhow!("MQTT poller stopped unexpectedly: {result:?}"));
            intake_stop.cancel();
        }
    }
    info!(drain_timeout = ?config.drain_timeout, "Stopping: draining in-flight messages.");
    let deadline = Instant::now() + config.drain_timeout;

    let forwarded = match timeout_at(deadline, &mut forwarder).await {
        Ok(result) => result,
        Err(_) => {
            give_up.cancel();
            forwarder.await
        }
    };
    match forwarded {
        Ok(Ok(())) => {}
        Ok(Err(error)) => errors.push(error),
        Err(join) => errors.push(anyhow::anyhow!("forwarder failed: {join}")),
    }
    // The forwarder is done, so the acknowledger ends once the last PUBACK is queued.
    if timeout_at(deadline.max(Instant::now()) + ACK_GRACE, &mut acker).await.is_err() {
        warn!("Not every acknowledgement could be sent; the broker redelivers those messages.");
        acker.abort();
    }

    // Disconnect after the acknowledgements, so they leave first. Without a connection
    // there is nothing to close (and no reason to connect just for that).
    if !poller_done {
        let disconnected = epoch.is_connected()
            && client.try_disconnect().is_ok()
            && timeout(DISCONNECT_TIMEOUT, &mut poller).await.is_ok();
        if !disconnected {
            poll_stop.cancel();
            let _ = poller.await;
        }
    }
    // The flush holds the producer's last handle, so librdkafka shuts down off the runtime.
    probe_stop.cancel();
    let _ = probe.await;
    kafka::flush(producer, config.drain_timeout.min(FLUSH_TIMEOUT)).await;

    ops_stop.cancel();
    match ops.await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => errors.push(error.context(format!("serve /metrics on {}", config.metrics_addr))),
        Err(join) => errors.push(anyhow::anyhow!("ops server failed: {join}")),
    }

    match errors.into_iter().next() {
        None => {
            info!("Stopped.");
            Ok(())
        }
        Some(error) => Err(error),
    }
}

/// Runs `task`, then cancels `stop`: a part that ends before shutdown starts the drain.
async fn stop_on_exit<T>(task: impl Future<Output = T>, stop: CancellationToken) -> T {
    let output = task.await;
    stop.cancel();
    output
}
