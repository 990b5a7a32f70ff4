//! How the simulated meters reach the broker.
//!
//! - **Pool** (the default, and what scales): a few MQTT connections with the fleet
//!   simulator's account, each publishing for many meters. 10,000 meters do not need
//!   10,000 sockets, and one process stays within its file descriptors and the broker's
//!   connection limit. Each meter still runs its own session logic from `meter-core`
//!   (birth on connect, one reading in flight, re-send after a lost link, back-off),
//!   over its share of a connection. What a shared connection cannot do is carry a last
//!   will per meter: the broker publishes a will for a connection, not for a meter. So
//!   in a pool, `offline` is published only by a meter's goodbye at the end; a meter
//!   that drops out (outage, reboot) leaves `online` standing until it returns.
//! - **Dedicated**: one connection per meter, client id = device id, with the meter's
//!   real last will (`offline`, retained). An outage or a reboot closes the socket
//!   without DISCONNECT, so the broker publishes the will. For fleets of up to a few
//!   thousand (each connection is a socket here and one at the broker).
//! - **File** (dry run): the telemetry payloads go to a file, one per line.
//!
//! Acknowledgements: a meter must see the PUBACK of its own reading (it leaves the
//! outbox only then). rumqttc reports `Outgoing::Publish(pkid)` in the order the
//! requests were queued and `Incoming::PubAck(pkid)` when the broker answers; a queue of
//! tags in request order, matched to packet ids as they are assigned, routes each
//! PUBACK to its meter. A connection lost with a clean session drops whatever it had
//! queued, and the tags with it; the meters on it hear that the link went down and
//! send again from their outboxes.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use meter_core::meter::Handover;
use meter_core::mqtt::{Delivery, LastWill as CoreWill, QoS as CoreQoS};
use rumqttc::{AsyncClient, ConnectionError, Event, LastWill, MqttOptions, Outgoing, Packet, QoS};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Who a message belongs to: meter index and that meter's message id (0: nobody waits
/// for its acknowledgement).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tag {
    pub meter: u32,
    pub id: u32,
}

/// What the connections tell the fleet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    Ack(Tag),
    /// Connection `conn` is up (CONNACK).
    Up(u32),
    /// Connection `conn` is down; what it had queued is gone.
    Down(u32),
    /// This many queued publishes were forgotten with a lost connection (no PUBACK
    /// will come for them).
    Forgotten(i64),
    /// The broker refused us, or was never reachable: the run cannot go on.
    Fatal(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("the link is down")]
    Down,
    #[error("the client's queue is full")]
    Busy,
    #[error("{0}")]
    Io(String),
}

/// Whether a meter may consider itself connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    Ready,
    /// A dedicated connection was asked to connect; [`Notice::Up`] follows.
    Pending,
    Unavailable,
}

#[derive(Debug, Clone)]
pub struct MqttSettings {
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Prefix of the pool's client ids (`<prefix>-<n>`); dedicated connections use the
    /// device id after it.
    pub client_id: String,
    /// Publishes in flight per connection, at most.
    pub max_inflight: u16,
    pub connect_timeout: Duration,
    pub keep_alive: Duration,
}

/// PUBACKs a dedicated connection waits for at most (a meter has one reading in flight).
const DEDICATED_INFLIGHT: u16 = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connections {
    Pool(u32),
    Dedicated,
}

/// Per-connection book of what is on its way.
#[derive(Default)]
struct Book {
    up: bool,
    /// Tags of queued publishes without a packet id yet, in request order.
    queued: VecDeque<Tag>,
    /// Tag by packet id, for publishes awaiting their PUBACK.
    by_pkid: Vec<Option<Tag>>,
    collided: Option<(u16, Tag)>,
}

impl Book {
    /// rumqttc numbers publishes 1..=inflight.
    fn new(inflight: u16) -> Self {
        Self { by_pkid: vec![None; usize::from(inflight) + 1], ..Default::default() }
    }

    /// Forgets everything on its way; returns how many.
    fn clear(&mut self) -> i64 {
        let mapped = self.by_pkid.iter_mut().filter_map(Option::take).count();
        let n = self.queued.len() + mapped + usize::from(self.collided.is_some());
        self.queued.clear();
        self.collided = None;
        self.up = false;
        n as i64
    }
}

struct Conn {
    client: AsyncClient,
    book: Arc<Mutex<Book>>,
    /// Dedicated connections only: connect / drop / disconnect.
    commands: Option<mpsc::UnboundedSender<Command>>,
    task: JoinHandle<()>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Command {
    Connect,
    /// Close the socket without DISCONNECT: the broker publishes the will.
    Drop,
    /// DISCONNECT and end.
    Disconnect,
}

pub struct Mqtt {
    conns: Vec<Conn>,
    dedicated: bool,
    notices: mpsc::UnboundedReceiver<Notice>,
    /// Sent and neither acknowledged nor forgotten, as far as the notices taken so far
    /// tell (so a PUBACK still in the channel counts as outstanding).
    outstanding: i64,
    /// Dedicated connections asked to connect whose CONNACK (or failure) is not in yet.
    connecting: Vec<bool>,
    connecting_count: usize,
    stop: CancellationToken,
}

/// Messages the transport took, by kind of outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransportStats {
    pub messages: u64,
    pub acked: u64,
    /// Connection losses seen (pool) or meter links dropped (dedicated).
    pub connection_losses: u64,
}

pub enum Transport {
    Mqtt { mqtt: Mqtt, stats: TransportStats },
    File { out: JsonLines, stats: TransportStats },
}

impl Transport {
    /// Opens the connections. A pool waits for every CONNACK (a refusal is an error);
    /// dedicated connections open when their meter asks.
    pub async fn mqtt(
        settings: &MqttSettings,
        connections: Connections,
        wills: &[CoreWill],
        device_ids: &[String],
    ) -> Result<Self, String> {
        let (notice_tx, notices) = mpsc::unbounded_channel();
        let stop = CancellationToken::new();
        let meters = device_ids.len();
        let mut conns = Vec::new();
        match connections {
            Connections::Pool(n) => {
                let n = n.max(1) as usize;
                for i in 0..n {
                    let share = meters.div_ceil(n);
                    let mut options = options(settings, &format!("{}-{i}", settings.client_id));
                    let inflight = settings.max_inflight.max(1);
                    options.set_inflight(inflight);
                    let (client, eventloop) = AsyncClient::new(options, 2 * share + 1_024);
                    let book = Arc::new(Mutex::new(Book::new(inflight)));
                    let task = tokio::spawn(pool_loop(
                        i as u32,
                        eventloop,
                        book.clone(),
                        notice_tx.clone(),
                        stop.clone(),
                    ));
                    conns.push(Conn { client, book, commands: None, task });
                }
            }
            Connections::Dedicated => {
                for (i, (will, device_id)) in wills.iter().zip(device_ids).enumerate() {
                    let mut options = options(settings, &format!("{}{device_id}", settings.client_id));
                    options.set_inflight(DEDICATED_INFLIGHT).set_last_will(LastWill::new(
                        will.topic.as_str(),
                        will.payload.to_vec(),
                        qos(will.delivery.qos),
                        will.delivery.retain,
                    ));
                    let (client, eventloop) = AsyncClient::new(options, 64);
                    let book = Arc::new(Mutex::new(Book::new(DEDICATED_INFLIGHT)));
                    let (command_tx, command_rx) = mpsc::unbounded_channel();
                    let task = tokio::spawn(dedicated_loop(
                        i as u32,
                        eventloop,
                        client.clone(),
                        book.clone(),
                        notice_tx.clone(),
                        command_rx,
                        stop.clone(),
                    ));
                    conns.push(Conn { client, book, commands: Some(command_tx), task });
                }
            }
        }
        let connecting = vec![false; conns.len()];
        let mut mqtt = Mqtt {
            conns,
            dedicated: connections == Connections::Dedicated,
            notices,
            outstanding: 0,
            connecting,
            connecting_count: 0,
            stop,
        };
        if !mqtt.dedicated {
            let deadline = tokio::time::Instant::now() + settings.connect_timeout;
            let mut up = 0;
            while up < mqtt.conns.len() {
                match tokio::time::timeout_at(deadline, mqtt.notices.recv()).await {
                    Ok(Some(Notice::Up(_))) => up += 1,
                    Ok(Some(Notice::Fatal(reason))) => {
                        mqtt.abort().await;
                        return Err(reason);
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => unreachable!("the fleet holds a sender"),
                    Err(_) => {
                        mqtt.abort().await;
                        return Err(format!(
                            "the MQTT broker at {}:{} sent no CONNACK within {:?}",
                            settings.host, settings.port, settings.connect_timeout
                        ));
                    }
                }
            }
        }
        Ok(Transport::Mqtt { mqtt, stats: TransportStats::default() })
    }

    pub fn file(path: &Path) -> Result<Self, String> {
        Ok(Transport::File { out: JsonLines::create(path)?, stats: TransportStats::default() })
    }

    pub fn is_dedicated(&self) -> bool {
        matches!(self, Transport::Mqtt { mqtt, .. } if mqtt.dedicated)
    }

    pub fn is_dry_run(&self) -> bool {
        matches!(self, Transport::File { .. })
    }

    pub fn stats(&self) -> TransportStats {
        match self {
            Transport::Mqtt { stats, .. } | Transport::File { stats, .. } => *stats,
        }
    }

    /// Queues one message. The tag's meter hears of its PUBACK through
    /// [`Notice::Ack`] (MQTT); a file takes it at once ([`Handover::Done`]).
    pub fn send(
        &mut self,
        conn: u32,
        tag: Tag,
        topic: &str,
        payload: &[u8],
        delivery: Delivery,
    ) -> Result<Handover, SendError> {
        match self {
            Transport::File { out, stats } => {
                if topic.ends_with("/telemetry") {
                    out.write(payload).map_err(SendError::Io)?;
                }
                stats.messages += 1;
                stats.acked += 1;
                Ok(Handover::Done)
            }
            Transport::Mqtt { mqtt, stats } => {
                let conn = &mqtt.conns[conn as usize];
                let mut book = conn.book.lock().expect("book lock");
                if !book.up {
                    return Err(SendError::Down);
                }
                book.queued.push_back(tag);
                let sent =
                    conn.client.try_publish(topic, qos(delivery.qos), delivery.retain, payload.to_vec());
                if sent.is_err() {
                    book.queued.pop_back();
                    return Err(SendError::Busy);
                }
                mqtt.outstanding += 1;
                stats.messages += 1;
                Ok(if delivery.qos == CoreQoS::AtMostOnce {
                    Handover::Done
                } else {
                    Handover::AwaitingAck(tag.id)
                })
            }
        }
    }

    /// A meter wants its link: ready at once on an open pool connection.
    pub fn link(&mut self, conn: u32) -> LinkState {
        match self {
            Transport::File { .. } => LinkState::Ready,
            Transport::Mqtt { mqtt, .. } => {
                let c = &mqtt.conns[conn as usize];
                match &c.commands {
                    None if c.book.lock().expect("book lock").up => LinkState::Ready,
                    None => LinkState::Unavailable,
                    Some(commands) => {
                        let _ = commands.send(Command::Connect);
                        mqtt.set_connecting(conn, true);
                        LinkState::Pending
                    }
                }
            }
        }
    }

    /// A meter's link fails (outage, reboot, lost PUBACK). A dedicated connection is
    /// dropped without DISCONNECT, so the broker publishes the meter's will.
    pub fn drop_link(&mut self, conn: u32) {
        if let Transport::Mqtt { mqtt, stats } = self {
            if let Some(commands) = &mqtt.conns[conn as usize].commands {
                let _ = commands.send(Command::Drop);
                stats.connection_losses += 1;
                mqtt.set_connecting(conn, false);
            }
        }
    }

    /// Publishes queued but not acknowledged, over all connections.
    pub fn outstanding(&self) -> i64 {
        match self {
            Transport::File { .. } => 0,
            Transport::Mqtt { mqtt, .. } => mqtt.outstanding,
        }
    }

    /// Dedicated connections on their way up.
    pub fn connecting(&self) -> usize {
        match self {
            Transport::File { .. } => 0,
            Transport::Mqtt { mqtt, .. } => mqtt.connecting_count,
        }
    }

    pub fn try_notice(&mut self) -> Option<Notice> {
        match self {
            Transport::File { .. } => None,
            Transport::Mqtt { mqtt, stats } => {
                let notice = mqtt.notices.try_recv().ok();
                mqtt.take(stats, notice.as_ref());
                notice
            }
        }
    }

    /// Waits for the next notice (forever for a file).
    pub async fn notice(&mut self) -> Notice {
        match self {
            Transport::File { .. } => std::future::pending().await,
            Transport::Mqtt { mqtt, stats } => {
                let notice = mqtt.notices.recv().await.expect("the transport holds a sender");
                mqtt.take(stats, Some(&notice));
                notice
            }
        }
    }

    /// Disconnects (DISCONNECT, so no will) and flushes the file.
    pub async fn close(self) -> Result<TransportStats, String> {
        match self {
            Transport::File { out, stats } => {
                out.finish()?;
                Ok(stats)
            }
            Transport::Mqtt { mqtt, stats } => {
                for conn in &mqtt.conns {
                    match &conn.commands {
                        Some(commands) => {
                            let _ = commands.send(Command::Disconnect);
                        }
                        None => {
                            let _ = conn.client.try_disconnect();
                        }
                    }
                }
                let Mqtt { conns, stop, .. } = mqtt;
                let all = futures::future::join_all(conns.into_iter().map(|c| c.task));
                if tokio::time::timeout(Duration::from_secs(5), all).await.is_err() {
                    stop.cancel();
                }
                Ok(stats)
            }
        }
    }
}

impl Mqtt {
    fn set_connecting(&mut self, conn: u32, connecting: bool) {
        let slot = &mut self.connecting[conn as usize];
        if *slot != connecting {
            *slot = connecting;
            if connecting {
                self.connecting_count += 1;
            } else {
                self.connecting_count -= 1;
            }
        }
    }

    /// Books a notice as it is taken from the channel.
    fn take(&mut self, stats: &mut TransportStats, notice: Option<&Notice>) {
        match notice {
            Some(Notice::Ack(_)) => {
                stats.acked += 1;
                self.outstanding -= 1;
            }
            Some(Notice::Forgotten(n)) => self.outstanding -= n,
            Some(Notice::Up(conn)) => self.set_connecting(*conn, false),
            Some(Notice::Down(conn)) => {
                self.set_connecting(*conn, false);
                if !self.dedicated {
                    stats.connection_losses += 1;
                }
            }
            _ => {}
        }
    }

    async fn abort(&mut self) {
        self.stop.cancel();
        for conn in self.conns.drain(..) {
            let _ = conn.task.await;
        }
    }
}

fn qos(qos: CoreQoS) -> QoS {
    match qos {
        CoreQoS::AtMostOnce => QoS::AtMostOnce,
        CoreQoS::AtLeastOnce => QoS::AtLeastOnce,
    }
}

fn options(settings: &MqttSettings, client_id: &str) -> MqttOptions {
    let mut options = MqttOptions::new(client_id, &settings.host, settings.port);
    options.set_keep_alive(settings.keep_alive).set_clean_session(true);
    if let Some(user) = &settings.username {
        options.set_credentials(user, settings.password.as_deref().unwrap_or_default());
    }
    options
}

/// Matches an event to the book; `false` once the connection is done (DISCONNECT sent).
fn on_event(conn: u32, event: Event, book: &Mutex<Book>, notices: &mpsc::UnboundedSender<Notice>) -> bool {
    match event {
        Event::Incoming(Packet::ConnAck(_)) => {
            book.lock().expect("book lock").up = true;
            let _ = notices.send(Notice::Up(conn));
        }
        Event::Outgoing(Outgoing::Publish(pkid)) => {
            let mut book = book.lock().expect("book lock");
            let slot = usize::from(pkid);
            if book.by_pkid[slot].is_none() {
                // A new publish (a re-sent one keeps its tag).
                let tag = match book.collided.take() {
                    Some((p, tag)) if p == pkid => Some(tag),
                    other => {
                        book.collided = other;
                        book.queued.pop_front()
                    }
                };
                book.by_pkid[slot] = tag;
            }
        }
        Event::Outgoing(Outgoing::AwaitAck(pkid)) => {
            let mut book = book.lock().expect("book lock");
            if let Some(tag) = book.queued.pop_front() {
                book.collided = Some((pkid, tag));
            }
        }
        Event::Incoming(Packet::PubAck(ack)) => {
            let tag = book.lock().expect("book lock").by_pkid[usize::from(ack.pkid)].take();
            if let Some(tag) = tag {
                let _ = notices.send(Notice::Ack(tag));
            }
        }
        Event::Outgoing(Outgoing::Disconnect) => return false,
        _ => {}
    }
    true
}

fn describe(error: &ConnectionError) -> String {
    match error {
        ConnectionError::ConnectionRefused(code) => format!(
            "the broker refused the connection ({code:?}); check SMARTMETER_MQTT_SIMULATOR_USER/PASSWORD"
        ),
        other => format!("cannot connect to the MQTT broker: {other}"),
    }
}

/// Forgets the connection's queue after a loss: rumqttc's clean session drops it too.
/// `clean` again under the lock, so no request slips in between.
fn lost(eventloop: &mut rumqttc::EventLoop, book: &Mutex<Book>, notices: &mpsc::UnboundedSender<Notice>) {
    let mut book = book.lock().expect("book lock");
    eventloop.clean();
    eventloop.pending.clear();
    let forgotten = book.clear();
    if forgotten > 0 {
        let _ = notices.send(Notice::Forgotten(forgotten));
    }
}

async fn pool_loop(
    conn: u32,
    mut eventloop: rumqttc::EventLoop,
    book: Arc<Mutex<Book>>,
    notices: mpsc::UnboundedSender<Notice>,
    stop: CancellationToken,
) {
    const RETRY_MIN: Duration = Duration::from_millis(200);
    const RETRY_MAX: Duration = Duration::from_secs(5);
    let mut ever_connected = false;
    let mut retry = RETRY_MIN;
    loop {
        let event = tokio::select! {
            () = stop.cancelled() => return,
            event = eventloop.poll() => event,
        };
        match event {
            Ok(event) => {
                if matches!(event, Event::Incoming(Packet::ConnAck(_))) {
                    ever_connected = true;
                    retry = RETRY_MIN;
                }
                if !on_event(conn, event, &book, &notices) {
                    return;
                }
            }
            Err(error) => {
                lost(&mut eventloop, &book, &notices);
                if !ever_connected || matches!(error, ConnectionError::ConnectionRefused(_)) {
                    let _ = notices.send(Notice::Fatal(describe(&error)));
                    return;
                }
                tracing::warn!(conn, %error, retry_ms = retry.as_millis() as u64, "MQTT connection lost; reconnecting.");
                let _ = notices.send(Notice::Down(conn));
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(retry) => {}
                }
                retry = (retry * 2).min(RETRY_MAX);
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn dedicated_loop(
    conn: u32,
    mut eventloop: rumqttc::EventLoop,
    client: AsyncClient,
    book: Arc<Mutex<Book>>,
    notices: mpsc::UnboundedSender<Notice>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    stop: CancellationToken,
) {
    loop {
        // Offline until the meter asks.
        let command = tokio::select! {
            () = stop.cancelled() => return,
            command = commands.recv() => command,
        };
        match command {
            Some(Command::Connect) => {}
            Some(Command::Drop) => continue,
            Some(Command::Disconnect) | None => return,
        }
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                command = commands.recv() => match command {
                    Some(Command::Connect) => {
                        // Asked again while connected (or connecting): say so again once up.
                        if book.lock().expect("book lock").up {
                            let _ = notices.send(Notice::Up(conn));
                        }
                    }
                    Some(Command::Drop) => {
                        lost(&mut eventloop, &book, &notices);
                        break;
                    }
                    Some(Command::Disconnect) | None => {
                        let _ = client.try_disconnect();
                        // Until DISCONNECT has left (or the connection fails).
                        let deadline = tokio::time::sleep(Duration::from_secs(2));
                        tokio::pin!(deadline);
                        loop {
                            tokio::select! {
                                () = &mut deadline => return,
                                event = eventloop.poll() => match event {
                                    Ok(event) => if !on_event(conn, event, &book, &notices) { return },
                                    Err(_) => return,
                                },
                            }
                        }
                    }
                },
                event = eventloop.poll() => match event {
                    Ok(event) => {
                        if !on_event(conn, event, &book, &notices) {
                            return;
                        }
                    }
                    Err(error) => {
                        lost(&mut eventloop, &book, &notices);
                        if matches!(error, ConnectionError::ConnectionRefused(_)) {
                            let _ = notices.send(Notice::Fatal(describe(&error)));
                            return;
                        }
                        let _ = notices.send(Notice::Down(conn));
                        break;
                    }
                },
            }
        }
    }
}

/// A dry run's output: the telemetry payloads, one per line.
pub struct JsonLines {
    path: PathBuf,
    out: BufWriter<File>,
}

impl JsonLines {
    pub fn create(path: &Path) -> Result<Self, String> {
        let file = File::create(path).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        Ok(Self { path: path.to_owned(), out: BufWriter::new(file) })
    }

    fn write(&mut self, payload: &[u8]) -> Result<(), String> {
        self.out
            .write_all(payload)
            .and_then(|()| self.out.write_all(b"\n"))
            .map_err(|e: io::Error| format!("cannot write {}: {e}", self.path.display()))
    }

    fn finish(mut self) -> Result<(), String> {
        self.out.flush().map_err(|e| format!("cannot write {}: {e}", self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publishes_are_matched_to_their_tags_through_resends_and_collisions() {
        let book = Mutex::new(Book::new(16));
        let (tx, mut rx) = mpsc::unbounded_channel();
        let tag = |meter| Tag { meter, id: meter * 10 };
        {
            let mut b = book.lock().unwrap();
            b.up = true;
            b.queued.extend([tag(1), tag(2), tag(3), tag(4)]);
        }
        let ev = |e| on_event(0, e, &book, &tx);
        ev(Event::Outgoing(Outgoing::Publish(1)));
        ev(Event::Outgoing(Outgoing::Publish(2)));
        // A re-send of packet 1 (session resumed) keeps its tag.
        ev(Event::Outgoing(Outgoing::Publish(1)));
        // Packet id 2 is taken: the third publish waits for it.
        ev(Event::Outgoing(Outgoing::AwaitAck(2)));
        ev(Event::Incoming(Packet::PubAck(rumqttc::PubAck::new(2))));
        ev(Event::Outgoing(Outgoing::Publish(2)));
        ev(Event::Outgoing(Outgoing::Publish(3)));
        for pkid in [1, 2, 3] {
            ev(Event::Incoming(Packet::PubAck(rumqttc::PubAck::new(pkid))));
        }
        // An unsolicited PUBACK routes nowhere.
        ev(Event::Incoming(Packet::PubAck(rumqttc::PubAck::new(9))));
        let acks: Vec<Notice> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
        assert_eq!(
            acks,
            [tag(2), tag(1), tag(3), tag(4)].map(Notice::Ack),
            "PUBACK 2 is meter 2's, then 1, then the collided meter 3's, then meter 4's"
        );
    }

    #[test]
    fn a_lost_connection_forgets_its_queue() {
        let mut book = Book::new(16);
        book.up = true;
        book.queued.push_back(Tag { meter: 0, id: 1 });
        book.by_pkid[7] = Some(Tag { meter: 1, id: 1 });
        assert_eq!(book.clear(), 2);
        assert!(!book.up);
        assert!(book.by_pkid.iter().all(Option::is_none));
    }
}
