//! The meter's state machine, free of any radio or RTOS: readings go into the outbox,
//! the outbox drains into a [`Publisher`] while the link is up, and a lost link is
//! retried after a jittered back-off.
//!
//! ```text
//!            connected() ── birth "online" ──▶ Up ── flush(): oldest first ──▶ telemetry
//!   Down ◀── disconnected(): retry_at = now + back-off ◀── publish error / link lost
//! ```
//!
//! At least once, end to end: a reading leaves the outbox only when the broker has
//! acknowledged it (QoS 1 PUBACK, reported through [`Meter::acknowledged`]) or the
//! publisher says it is done with it ([`Handover::Done`]). One reading is in flight at
//! a time, so the oldest is always the one awaited. A link lost while a reading is in
//! flight sends it again after reconnecting; the bridge and processor drop the duplicate.
//!
//! The application calls, from one loop: [`Meter::record`] after each PZEM read (or
//! [`Meter::read_failed`]), [`Meter::clock_set`] when SNTP answers,
//! [`Meter::should_connect`] / [`Meter::connected`] / [`Meter::disconnected`] as the
//! link comes and goes, [`Meter::acknowledged`] for each PUBACK, and [`Meter::flush`].

use crate::backoff::{Backoff, Entropy};
use crate::device::DeviceId;
use crate::mqtt::{
    Delivery, LastWill, Topics, STATUS_DELIVERY, STATUS_OFFLINE, STATUS_ONLINE, TELEMETRY_DELIVERY,
};
use crate::outbox::Outbox;
use crate::pzem::Measurement;
use crate::telemetry::{EncodeError, Telemetry, MAX_PAYLOAD_LEN};
use crate::time::Clock;

/// Longest `boot_id` or `fw`, as the bridge accepts.
pub const LABEL_MAX_LEN: usize = 64;

/// Hands one MQTT message to a client.
pub trait Publisher {
    type Error;
    fn publish(&mut self, topic: &str, payload: &[u8], delivery: Delivery) -> Result<Handover, Self::Error>;
}

/// What became of a published message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handover {
    /// Nothing more will be heard of it: the reading may leave the outbox now.
    Done,
    /// Sent as this message id; the broker's acknowledgement will be reported through
    /// [`Meter::acknowledged`].
    AwaitingAck(u32),
}

/// A `boot_id` or `fw` value: 1..=64 printable ASCII characters without `"` or `\\`.
pub type Label = heapless::String<LABEL_MAX_LEN>;

/// Who is speaking. The labels are owned, so a fleet of simulated meters can each hold
/// their own `boot_id` without borrowing from anywhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    device_id: DeviceId,
    boot_id: Option<Label>,
    fw: Option<Label>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("boot_id and fw must be 1..=64 printable ASCII characters without '\"' or '\\'")]
    BadLabel,
}

impl Identity {
    pub fn new(device_id: DeviceId, boot_id: Option<&str>, fw: Option<&str>) -> Result<Self, IdentityError> {
        Ok(Self { device_id, boot_id: boot_id.map(label).transpose()?, fw: fw.map(label).transpose()? })
    }

    pub fn device_id(&self) -> &DeviceId {
        &self.device_id
    }

    pub fn boot_id(&self) -> Option<&str> {
        self.boot_id.as_deref()
    }

    pub fn fw(&self) -> Option<&str> {
        self.fw.as_deref()
    }
}

fn label(text: &str) -> Result<Label, IdentityError> {
    let printable = text.bytes().all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\');
    if text.is_empty() || !printable {
        return Err(IdentityError::BadLabel);
    }
    Label::try_from(text).map_err(|_| IdentityError::BadLabel)
}

/// One reading waiting to be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// When it was measured, in milliseconds since boot; stamped on sending.
    pub uptime_ms: u64,
    /// Per-boot sequence number; a gap means readings were dropped.
    pub seq: u32,
    pub measurement: Measurement,
    /// Wi-Fi signal at measurement time, if connected then.
    pub rssi_dbm: Option<i8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// Not connected; the next attempt is due at this uptime.
    Down {
        retry_at_ms: u64,
    },
    Up,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FlushError<E> {
    #[error("publish failed: {0:?}")]
    Publish(E),
    #[error(transparent)]
    Encode(EncodeError),
}

/// Counters worth logging or showing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub queued: usize,
    /// Readings dropped for lack of outbox room since boot.
    pub dropped: u32,
    /// PZEM reads that failed (no reading was made up for them).
    pub read_failures: u32,
    /// Readings the broker acknowledged (or the publisher finished with).
    pub sent: u32,
    /// A reading is published and its acknowledgement awaited.
    pub in_flight: bool,
    pub link: Link,
    pub clock_synced: bool,
}

pub struct Meter<const N: usize> {
    identity: Identity,
    topics: Topics,
    clock: Clock,
    outbox: Outbox<Sample, N>,
    backoff: Backoff,
    link: Link,
    /// Message id of the oldest reading, published and not yet acknowledged.
    in_flight: Option<u32>,
    next_seq: u32,
    read_failures: u32,
    sent: u32,
}

impl<const N: usize> Meter<N> {
    pub fn new(identity: Identity, backoff: Backoff) -> Self {
        let topics = Topics::new(identity.device_id());
        Self {
            identity,
            topics,
            clock: Clock::new(),
            outbox: Outbox::new(),
            backoff,
            link: Link::Down { retry_at_ms: 0 },
            in_flight: None,
            next_seq: 0,
            read_failures: 0,
            sent: 0,
        }
    }

    /// Replaces the clock (e.g. with [`Clock::with_floor`]); call before it is set.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    pub fn topics(&self) -> &Topics {
        &self.topics
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// To register with the MQTT client before connecting.
    pub fn last_will(&self) -> LastWill {
        LastWill::new(&self.topics)
    }

    pub fn link(&self) -> Link {
        self.link
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    pub fn stats(&self) -> Stats {
        Stats {
            queued: self.outbox.len(),
            dropped: self.outbox.dropped(),
            read_failures: self.read_failures,
            sent: self.sent,
            in_flight: self.in_flight.is_some(),
            link: self.link,
            clock_synced: self.clock.is_synced(),
        }
    }

    /// Queues a reading; returns its sequence number. When the outbox is full the oldest
    /// reading makes room: counted as dropped, unless it is the one in flight (the client
    /// has it; its acknowledgement will then be ignored).
    pub fn record(&mut self, uptime_ms: u64, measurement: Measurement, rssi_dbm: Option<i8>) -> u32 {
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        if self.outbox.len() == self.outbox.capacity() && self.in_flight.take().is_some() {
            self.outbox.pop_oldest();
        }
        self.outbox.push(Sample { uptime_ms, seq, measurement, rssi_dbm });
        seq
    }

    /// A PZEM read failed after its retries: counted, nothing queued.
    pub fn read_failed(&mut self) {
        self.read_failures = self.read_failures.saturating_add(1);
    }

    /// SNTP answered `unix_ms` at `uptime_ms`. See [`Clock::set`].
    pub fn clock_set(&mut self, uptime_ms: u64, unix_ms: u64) -> bool {
        self.clock.set(uptime_ms, unix_ms)
    }

    /// Whether a connection attempt is due.
    pub fn should_connect(&self, uptime_ms: u64) -> bool {
        matches!(self.link, Link::Down { retry_at_ms } if uptime_ms >= retry_at_ms)
    }

    /// The client is connected: publishes the retained birth message. On success the
    /// link is up and the back-off starts over.
    pub fn connected<P: Publisher>(&mut self, publisher: &mut P) -> Result<(), P::Error> {
        publisher.publish(&self.topics.status, STATUS_ONLINE, STATUS_DELIVERY)?;
        self.link = Link::Up;
        self.in_flight = None;
        self.backoff.reset();
        Ok(())
    }

    /// The link is lost (or an attempt failed): schedules the next attempt; returns the
    /// delay in milliseconds. A reading in flight stays queued and is sent again.
    pub fn disconnected(&mut self, uptime_ms: u64, entropy: &mut impl Entropy) -> u32 {
        self.in_flight = None;
        let delay_ms = self.backoff.next_delay_ms(entropy);
        self.link = Link::Down { retry_at_ms: uptime_ms.saturating_add(u64::from(delay_ms)) };
        delay_ms
    }

    /// Before a planned shutdown: the retained `offline` the will would have said.
    pub fn goodbye<P: Publisher>(&mut self, publisher: &mut P) -> Result<(), P::Error> {
        publisher.publish(&self.topics.status, STATUS_OFFLINE, STATUS_DELIVERY).map(drop)
    }

    /// The broker acknowledged message `message_id`. Returns whether it was the reading
    /// in flight (which then leaves the outbox); other ids (the birth message, a
    /// reading already given up) are ignored.
    pub fn acknowledged(&mut self, message_id: u32) -> bool {
        if self.in_flight != Some(message_id) {
            return false;
        }
        self.in_flight = None;
        self.outbox.pop_oldest();
        self.sent = self.sent.saturating_add(1);
        true
    }

    /// Publishes queued readings, oldest first, while the link is up and nothing is in
    /// flight, at most `max_messages`; returns how many were handed over. On an error
    /// the reading stays queued and the caller should report [`Meter::disconnected`].
    pub fn flush<P: Publisher>(
        &mut self,
        publisher: &mut P,
        max_messages: usize,
    ) -> Result<usize, FlushError<P::Error>> {
        let mut handed_over = 0;
        let mut payload = [0u8; MAX_PAYLOAD_LEN];
        while self.link == Link::Up && self.in_flight.is_none() && handed_over < max_messages {
            let Some(sample) = self.outbox.oldest() else { break };
            let telemetry = Telemetry {
                device_id: &self.identity.device_id,
                timestamp: self.clock.stamp(sample.uptime_ms),
                measurement: &sample.measurement,
                rssi_dbm: sample.rssi_dbm,
                seq: Some(sample.seq),
                boot_id: self.identity.boot_id(),
                fw: self.identity.fw(),
                dropped: self.outbox.dropped(),
            };
            let len = telemetry.encode(&mut payload).map_err(FlushError::Encode)?;
            let handover = publisher
                .publish(&self.topics.telemetry, &payload[..len], TELEMETRY_DELIVERY)
                .map_err(FlushError::Publish)?;
            handed_over += 1;
            match handover {
                Handover::Done => {
                    self.outbox.pop_oldest();
                    self.sent = self.sent.saturating_add(1);
                }
                Handover::AwaitingAck(message_id) => self.in_flight = Some(message_id),
            }
        }
        Ok(handed_over)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::mqtt::QoS;

    #[derive(Default)]
    struct Broker {
        messages: Vec<(String, Vec<u8>, Delivery)>,
        /// Publishes that succeed before every further one fails.
        fail_after: Option<usize>,
        /// Answer like a QoS 1 client: message ids to be acknowledged later.
        with_acks: bool,
    }

    impl Publisher for Broker {
        type Error = &'static str;
        fn publish(
            &mut self,
            topic: &str,
            payload: &[u8],
            delivery: Delivery,
        ) -> Result<Handover, Self::Error> {
            if self.fail_after.is_some_and(|n| self.messages.len() >= n) {
                return Err("link lost");
            }
            self.messages.push((topic.to_owned(), payload.to_vec(), delivery));
            Ok(if self.with_acks {
                Handover::AwaitingAck(100 + self.messages.len() as u32)
            } else {
                Handover::Done
            })
        }
    }

    fn seqs(broker: &Broker) -> Vec<u64> {
        broker.telemetry().iter().map(|v| v["seq"].as_u64().unwrap()).collect()
    }

    impl Broker {
        fn telemetry(&self) -> Vec<Value> {
            self.messages
                .iter()
                .filter(|(topic, ..)| topic.ends_with("/telemetry"))
                .map(|(_, payload, _)| serde_json::from_slice(payload).unwrap())
                .collect()
        }
    }

    fn reading(energy_wh: u32) -> Measurement {
        Measurement {
            voltage_decivolts: 2304,
            current_milliamps: 2730,
            power_deciwatts: 6289,
            energy_wh,
            frequency_decihertz: 500,
            power_factor_hundredths: 98,
            alarm: false,
        }
    }

    fn meter<const N: usize>() -> Meter<N> {
        let identity =
            Identity::new(DeviceId::parse("meter-001").unwrap(), Some("b00t"), Some("meter-esp32/0.1.0"))
                .unwrap();
        Meter::new(identity, Backoff::new(1_000, 60_000))
    }

    const SYNC_UNIX_MS: u64 = 1_769_680_800_000; // 2026-01-29T10:00:00Z

    #[test]
    fn birth_then_readings_oldest_first() {
        let mut m = meter::<8>();
        assert!(m.should_connect(0));
        m.record(10_000, reading(100), Some(-60));
        m.record(20_000, reading(101), Some(-61));
        let mut broker = Broker::default();
        m.connected(&mut broker).unwrap();
        assert_eq!(m.flush(&mut broker, usize::MAX), Ok(2));

        let (topic, payload, delivery) = &broker.messages[0];
        assert_eq!(topic, "smartmeter/meter-001/status");
        assert_eq!(payload, b"online");
        assert_eq!(*delivery, Delivery { qos: QoS::AtLeastOnce, retain: true });
        assert_eq!(broker.messages[1].0, "smartmeter/meter-001/telemetry");
        assert!(!broker.messages[1].2.retain);

        let sent = broker.telemetry();
        assert_eq!(sent[0]["seq"], 0);
        assert_eq!(sent[0]["energy_kwh"].as_f64(), Some(0.1));
        assert_eq!(sent[1]["seq"], 1);
        assert_eq!(sent[1]["rssi"], -61);
        assert_eq!(sent[1]["boot_id"], "b00t");
        assert!(sent[1].get("dropped").is_none());
        assert_eq!(m.stats().queued, 0);
        assert_eq!(m.stats().sent, 2);
    }

    #[test]
    fn before_the_clock_is_set_readings_carry_uptime_and_the_bridge_flags_them() {
        let mut m = meter::<8>();
        m.record(125_000, reading(1), None);
        let mut broker = Broker::default();
        m.connected(&mut broker).unwrap();
        m.flush(&mut broker, usize::MAX).unwrap();
        let sent = broker.telemetry();
        assert_eq!(sent[0]["timestamp"], "1970-01-01T00:02:05Z");

        let received_at: jiff::Timestamp = "2026-01-29T10:05:00Z".parse().unwrap();
        let reading = smartmeter_core::telemetry::validate(
            "smartmeter/meter-001/telemetry",
            &broker.messages[1].1,
            received_at,
            &Default::default(),
        )
        .unwrap();
        assert!(reading.clock_unsynced);
        assert_eq!(reading.timestamp, received_at);
    }

    #[test]
    fn readings_taken_before_sntp_but_sent_after_get_their_true_time() {
        let mut m = meter::<8>();
        m.record(10_000, reading(1), None);
        assert!(m.clock_set(60_000, SYNC_UNIX_MS));
        m.record(70_000, reading(2), None);
        let mut broker = Broker::default();
        m.connected(&mut broker).unwrap();
        m.flush(&mut broker, usize::MAX).unwrap();
        let sent = broker.telemetry();
        assert_eq!(sent[0]["timestamp"], "2026-01-29T09:59:10Z");
        assert_eq!(sent[1]["timestamp"], "2026-01-29T10:00:10Z");

        let reading = smartmeter_core::telemetry::validate(
            "smartmeter/meter-001/telemetry",
            &broker.messages[1].1,
            "2026-01-29T10:00:11Z".parse().unwrap(),
            &Default::default(),
        )
        .unwrap();
        assert!(!reading.clock_unsynced);
        assert_eq!(reading.seq, Some(0));
        assert_eq!(reading.fw.as_deref(), Some("meter-esp32/0.1.0"));
    }

    #[test]
    fn a_long_outage_keeps_the_newest_and_reports_the_drops() {
        let mut m = meter::<4>();
        for i in 0..6 {
            m.record(u64::from(i) * 10_000, reading(i), None);
        }
        assert_eq!(m.stats().dropped, 2);
        let mut broker = Broker::default();
        m.connected(&mut broker).unwrap();
        m.flush(&mut broker, usize::MAX).unwrap();
        let sent = broker.telemetry();
        let seqs: Vec<u64> = sent.iter().map(|v| v["seq"].as_u64().unwrap()).collect();
        assert_eq!(seqs, [2, 3, 4, 5]);
        assert!(sent.iter().all(|v| v["dropped"] == 2));
    }

    #[test]
    fn a_failed_publish_keeps_the_reading_and_backs_off() {
        let mut m = meter::<8>();
        for i in 0..3 {
            m.record(u64::from(i) * 1_000, reading(i), None);
        }
        let mut broker = Broker { fail_after: Some(2), ..Default::default() };
        m.connected(&mut broker).unwrap();
        assert_eq!(m.flush(&mut broker, usize::MAX), Err(FlushError::Publish("link lost")));
        assert_eq!(m.stats().queued, 2);

        let delay = m.disconnected(5_000, &mut || u32::MAX);
        assert_eq!(delay, 1_000);
        assert!(!m.should_connect(5_999));
        assert!(m.should_connect(6_000));
        // Nothing is sent while down.
        assert_eq!(m.flush(&mut broker, usize::MAX), Ok(0));

        // The next attempts fail too: the ceiling doubles.
        assert_eq!(m.disconnected(6_000, &mut || u32::MAX), 2_000);
        assert_eq!(m.disconnected(8_000, &mut || u32::MAX), 4_000);

        broker.fail_after = None;
        m.connected(&mut broker).unwrap();
        m.flush(&mut broker, usize::MAX).unwrap();
        let seqs: Vec<u64> = broker.telemetry().iter().map(|v| v["seq"].as_u64().unwrap()).collect();
        assert_eq!(seqs, [0, 1, 2]);
        // After a good connection the back-off starts over.
        assert_eq!(m.disconnected(20_000, &mut || u32::MAX), 1_000);
    }

    #[test]
    fn a_failed_birth_leaves_the_link_down() {
        let mut m = meter::<8>();
        let mut broker = Broker { fail_after: Some(0), ..Default::default() };
        assert_eq!(m.connected(&mut broker), Err("link lost"));
        assert_eq!(m.link(), Link::Down { retry_at_ms: 0 });
    }

    #[test]
    fn flush_respects_its_budget() {
        let mut m = meter::<8>();
        for i in 0..5 {
            m.record(u64::from(i), reading(i), None);
        }
        let mut broker = Broker::default();
        m.connected(&mut broker).unwrap();
        assert_eq!(m.flush(&mut broker, 2), Ok(2));
        assert_eq!(m.stats().queued, 3);
    }

    #[test]
    fn goodbye_and_will_say_offline_retained() {
        let mut m = meter::<1>();
        let will = m.last_will();
        assert_eq!((will.topic.as_str(), will.payload), ("smartmeter/meter-001/status", &b"offline"[..]));
        let mut broker = Broker::default();
        m.goodbye(&mut broker).unwrap();
        assert_eq!(broker.messages[0].1, b"offline");
        assert!(broker.messages[0].2.retain);
    }

    #[test]
    fn read_failures_are_counted_not_queued() {
        let mut m = meter::<4>();
        m.read_failed();
        assert_eq!(m.stats().read_failures, 1);
        assert_eq!(m.stats().queued, 0);
    }

    #[test]
    fn labels_are_checked() {
        let id = || DeviceId::parse("m").unwrap();
        assert!(Identity::new(id(), Some("ok-1"), Some("fw/1.0+g")).is_ok());
        assert_eq!(Identity::new(id(), Some(""), None), Err(IdentityError::BadLabel));
        assert_eq!(Identity::new(id(), None, Some("a\"b")), Err(IdentityError::BadLabel));
        assert_eq!(Identity::new(id(), Some(&"x".repeat(65)), None), Err(IdentityError::BadLabel));
    }

    #[test]
    fn a_reading_leaves_only_when_acknowledged() {
        let mut m = meter::<8>();
        m.record(1_000, reading(1), None);
        m.record(2_000, reading(2), None);
        let mut broker = Broker { with_acks: true, ..Default::default() };
        m.connected(&mut broker).unwrap();
        // One in flight at a time.
        assert_eq!(m.flush(&mut broker, usize::MAX), Ok(1));
        assert_eq!(m.flush(&mut broker, usize::MAX), Ok(0));
        assert!(m.stats().in_flight);
        assert_eq!(m.stats().queued, 2);
        // The birth message's id, or any other, does not count.
        assert!(!m.acknowledged(101));
        assert!(m.acknowledged(102));
        assert_eq!((m.stats().queued, m.stats().sent), (1, 1));
        assert_eq!(m.flush(&mut broker, usize::MAX), Ok(1));
        assert!(m.acknowledged(103));
        assert_eq!(seqs(&broker), [0, 1]);
        assert_eq!(m.stats().queued, 0);
    }

    #[test]
    fn a_reading_in_flight_when_the_link_drops_is_sent_again() {
        let mut m = meter::<8>();
        m.record(1_000, reading(1), None);
        let mut broker = Broker { with_acks: true, ..Default::default() };
        m.connected(&mut broker).unwrap();
        m.flush(&mut broker, usize::MAX).unwrap();
        m.disconnected(3_000, &mut || 0);
        // A late acknowledgement from the old connection changes nothing.
        assert!(!m.acknowledged(102));
        m.connected(&mut broker).unwrap();
        m.flush(&mut broker, usize::MAX).unwrap();
        assert!(m.acknowledged(104));
        assert_eq!(seqs(&broker), [0, 0]);
        assert_eq!(m.stats().sent, 1);
    }

    #[test]
    fn evicting_the_reading_in_flight_is_not_a_drop() {
        let mut m = meter::<2>();
        m.record(1_000, reading(1), None);
        m.record(2_000, reading(2), None);
        let mut broker = Broker { with_acks: true, ..Default::default() };
        m.connected(&mut broker).unwrap();
        m.flush(&mut broker, usize::MAX).unwrap(); // seq 0 in flight
        m.record(3_000, reading(3), None); // evicts seq 0: the client has it
        assert_eq!(m.stats().dropped, 0);
        assert!(!m.stats().in_flight);
        // Its acknowledgement must not remove seq 1.
        assert!(!m.acknowledged(102));
        m.record(4_000, reading(4), None); // now a real drop: seq 1 was never sent
        assert_eq!(m.stats().dropped, 1);
        m.flush(&mut broker, usize::MAX).unwrap();
        assert!(m.acknowledged(103));
        m.flush(&mut broker, usize::MAX).unwrap();
        assert_eq!(seqs(&broker), [0, 2, 3]);
    }
}
