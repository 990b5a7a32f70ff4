//! Device state: online or offline, and why.
//!
//! A device's state is its newest DeviceStatusChanged by `at`: the bridge's (the
//! meter's birth `online` and last will `offline` on MQTT) and the processor's own,
//! derived from telemetry:
//!
//! - **telemetry**: a reading received (bridge receive time `r`) while the device is
//!   offline since before `r`, or has never had a state, makes it online at `r`;
//! - **inactivity**: a device online whose newest sign of life `L` (receive time of its
//!   newest telemetry, or the time it went online if later) is older than the
//!   inactivity timeout `T` goes offline at `L + T`. The housekeeping task notices it
//!   on the wall clock; a reading that arrives after such a silence (received after
//!   `L + T`) notices it too, and emits the same two events (offline at `L + T`, online
//!   at `r`) whether or not the housekeeping got there first, with the same ids.
//!
//! "Newest wins" orders changes by (`at`, offline before online, reason), so applying
//! the same events in any order, or twice, leaves the same state: a replay is
//! idempotent. Derived events have deterministic ids (device, state, reason, `at`) and
//! go through the outbox in the batch's transaction.
//!
//! Telemetry of one device is read in partition order, so what it derives does not
//! depend on batching or restarts. The bridge's events come on another topic, which
//! Kafka does not order against telemetry: the state ends the same whatever the order,
//! but whether a telemetry-derived `online` is published right after a birth can
//! depend on which of the two was read first.

use jiff::{SignedDuration, Timestamp};
use smartmeter_core::device_events::{DeviceEvent, DeviceStatusChanged, StatusReason};
use smartmeter_core::service::outbox;
use smartmeter_core::DeviceId;

/// `source` of the events the processor makes.
pub const EVENT_SOURCE: &str = "/processor";

/// A device's online state as stored: all `None` before the first status event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct State {
    pub online: Option<bool>,
    pub at: Option<Timestamp>,
    pub reason: Option<StatusReason>,
}

/// Newest-wins order of status changes: time, then offline over online, then reason.
fn order_key(online: bool, at: Timestamp, reason: StatusReason) -> (Timestamp, bool, &'static str) {
    (at, !online, reason.as_str())
}

impl State {
    /// Whether `change` wins over this state (it is newer by [`order_key`]).
    pub fn yields_to(&self, change: &DeviceStatusChanged) -> bool {
        match (self.online, self.at) {
            (Some(online), Some(at)) => {
                let reason = self.reason.unwrap_or(StatusReason::Telemetry);
                order_key(online, at, reason) < order_key(change.online, change.at, change.reason)
            }
            _ => true,
        }
    }

    /// Applies `change` if it wins; returns whether it did.
    pub fn apply(&mut self, change: &DeviceStatusChanged) -> bool {
        if !self.yields_to(change) {
            return false;
        }
        *self = Self { online: Some(change.online), at: Some(change.at), reason: Some(change.reason) };
        true
    }

    /// The newest sign of life: the last telemetry, or going online if later.
    fn alive_since(&self, last_seen: Option<Timestamp>) -> Option<Timestamp> {
        let online_at = self.at.filter(|_| self.online == Some(true));
        last_seen.max(online_at)
    }

    /// When inactivity makes this device offline, if it is online: its newest sign of
    /// life plus the timeout.
    pub fn silent_from(&self, last_seen: Option<Timestamp>, timeout: SignedDuration) -> Option<Timestamp> {
        if self.online != Some(true) {
            return None;
        }
        self.alive_since(last_seen).map(|alive| alive + timeout)
    }
}

pub fn inactivity(device_id: &DeviceId, at: Timestamp) -> DeviceStatusChanged {
    DeviceStatusChanged { device_id: device_id.clone(), online: false, reason: StatusReason::Inactivity, at }
}

/// The changes a device's telemetry implies, given its state and newest receive time
/// before it, and the receive times of its new readings in the order read (duplicates
/// left out). `state` and `last_seen` are moved on to after them.
pub fn from_telemetry(
    device_id: &DeviceId,
    state: &mut State,
    last_seen: &mut Option<Timestamp>,
    received: impl IntoIterator<Item = Timestamp>,
    timeout: SignedDuration,
) -> Vec<DeviceStatusChanged> {
    let mut changes = Vec::new();
    for r in received {
        if let Some(silent_at) = state.silent_from(*last_seen, timeout) {
            if r > silent_at {
                let offline = inactivity(device_id, silent_at);
                state.apply(&offline);
                changes.push(offline);
            }
        }
        let offline_before = match (state.online, state.at) {
            (None, _) | (_, None) => true,
            (Some(online), Some(at)) => !online && at < r,
        };
        if offline_before {
            let online = DeviceStatusChanged {
                device_id: device_id.clone(),
                online: true,
                reason: StatusReason::Telemetry,
                at: r,
            };
            if state.apply(&online) {
                changes.push(online);
            }
        }
        *last_seen = (*last_seen).max(Some(r));
    }
    changes
}

pub fn parse_reason(text: &str) -> Option<StatusReason> {
    [
        StatusReason::Birth,
        StatusReason::LastWill,
        StatusReason::Disconnect,
        StatusReason::Inactivity,
        StatusReason::Telemetry,
    ]
    .into_iter()
    .find(|reason| reason.as_str() == text)
}

/// Stores `change` if it wins over the stored state (newest wins, see the module
/// documentation); returns whether it did. The device row must exist.
pub async fn store(
    tx: &deadpool_postgres::Transaction<'_>,
    change: &DeviceStatusChanged,
) -> Result<bool, tokio_postgres::Error> {
    let updated = tx
        .execute(
            "UPDATE devices SET online = $2, status_reason = $3, status_changed_at = $4, updated_at = now()
             WHERE device_id = $1
               AND (status_changed_at IS NULL OR online IS NULL
                    OR (status_changed_at, NOT online, coalesce(status_reason, 'telemetry')) < ($4, NOT $2, $3))",
            &[&change.device_id.as_str(), &change.online, &change.reason.as_str(), &change.at],
        )
        .await?;
    Ok(updated == 1)
}

/// Queues a change the processor derived for publication on `topic` (deterministic id;
/// a second enqueue of the same change is a no-op).
pub async fn publish(
    tx: &deadpool_postgres::Transaction<'_>,
    topic: &str,
    change: &DeviceStatusChanged,
) -> Result<(), tokio_postgres::Error> {
    let envelope =
        DeviceEvent::StatusChanged(change.clone()).to_envelope(change.event_id(), EVENT_SOURCE, change.at);
    outbox::enqueue(tx, topic, change.device_id.as_str(), &envelope).await
}

/// Queues changes the processor derived for publication on `topic`, in order, in one
/// statement (see [`publish`]).
pub async fn publish_many(
    tx: &deadpool_postgres::Transaction<'_>,
    topic: &str,
    changes: &[DeviceStatusChanged],
) -> Result<(), tokio_postgres::Error> {
    let envelopes: Vec<_> = changes
        .iter()
        .map(|change| {
            DeviceEvent::StatusChanged(change.clone()).to_envelope(change.event_id(), EVENT_SOURCE, change.at)
        })
        .collect();
    let queued: Vec<_> = changes
        .iter()
        .zip(&envelopes)
        .map(|(change, envelope)| (topic, change.device_id.as_str(), envelope))
        .collect();
    outbox::enqueue_many(tx, &queued).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn device() -> DeviceId {
        DeviceId::parse("m1").unwrap()
    }

    fn change(online: bool, reason: StatusReason, at: &str) -> DeviceStatusChanged {
        DeviceStatusChanged { device_id: device(), online, reason, at: ts(at) }
    }

    const T: SignedDuration = SignedDuration::from_mins(5);

    #[test]
    fn newest_wins_whatever_the_order() {
        let events = [
            change(true, StatusReason::Birth, "2026-01-01T00:00:00Z"),
            change(false, StatusReason::LastWill, "2026-01-01T00:10:00Z"),
            change(true, StatusReason::Birth, "2026-01-01T00:20:00Z"),
            change(false, StatusReason::Inactivity, "2026-01-01T00:20:00Z"),
        ];
        let mut orders = vec![vec![0, 1, 2, 3], vec![3, 2, 1, 0], vec![2, 0, 3, 1], vec![1, 3, 0, 2, 3, 1]];
        orders.push(vec![0, 0, 1, 1, 2, 2, 3, 3]);
        let mut ends = Vec::new();
        for order in orders {
            let mut state = State::default();
            for i in order {
                state.apply(&events[i]);
            }
            ends.push(state);
        }
        assert!(ends.windows(2).all(|w| w[0] == w[1]), "{ends:?}");
        // At the same instant, offline wins.
        assert_eq!((ends[0].online, ends[0].reason), (Some(false), Some(StatusReason::Inactivity)));
    }

    #[test]
    fn first_telemetry_brings_a_device_online() {
        let mut state = State::default();
        let mut last_seen = None;
        let changes = from_telemetry(
            &device(),
            &mut state,
            &mut last_seen,
            [ts("2026-01-01T00:00:00Z"), ts("2026-01-01T00:00:10Z")],
            T,
        );
        assert_eq!(changes, [change(true, StatusReason::Telemetry, "2026-01-01T00:00:00Z")]);
        assert_eq!(last_seen, Some(ts("2026-01-01T00:00:10Z")));
    }

    #[test]
    fn a_silence_longer_than_the_timeout_is_an_offline_spell_whenever_it_is_noticed() {
        let received = [
            ts("2026-01-01T00:00:00Z"),
            ts("2026-01-01T00:04:00Z"),
            ts("2026-01-01T00:20:00Z"),
            ts("2026-01-01T00:21:00Z"),
        ];
        let expected = [
            change(true, StatusReason::Telemetry, "2026-01-01T00:00:00Z"),
            change(false, StatusReason::Inactivity, "2026-01-01T00:09:00Z"),
            change(true, StatusReason::Telemetry, "2026-01-01T00:20:00Z"),
        ];
        // In one batch.
        let (mut state, mut last_seen) = (State::default(), None);
        assert_eq!(from_telemetry(&device(), &mut state, &mut last_seen, received, T), expected);
        // Reading by reading, with the housekeeping noticing the silence in between.
        let (mut state, mut last_seen) = (State::default(), None);
        let mut changes = Vec::new();
        for (i, r) in received.into_iter().enumerate() {
            if i == 2 {
                let silent_at = state.silent_from(last_seen, T).unwrap();
                let offline = inactivity(&device(), silent_at);
                assert!(state.apply(&offline));
                changes.push(offline);
            }
            changes.extend(from_telemetry(&device(), &mut state, &mut last_seen, [r], T));
        }
        assert_eq!(changes, expected);
    }

    #[test]
    fn telemetry_older_than_a_last_will_changes_nothing() {
        let mut state = State::default();
        state.apply(&change(true, StatusReason::Birth, "2026-01-01T00:00:00Z"));
        state.apply(&change(false, StatusReason::LastWill, "2026-01-01T00:01:00Z"));
        let mut last_seen = Some(ts("2026-01-01T00:00:30Z"));
        let late = from_telemetry(&device(), &mut state, &mut last_seen, [ts("2026-01-01T00:00:50Z")], T);
        assert!(late.is_empty());
        let after = from_telemetry(&device(), &mut state, &mut last_seen, [ts("2026-01-01T00:02:00Z")], T);
        assert_eq!(after, [change(true, StatusReason::Telemetry, "2026-01-01T00:02:00Z")]);
    }

    #[test]
    fn a_birth_counts_as_a_sign_of_life() {
        let mut state = State::default();
        state.apply(&change(true, StatusReason::Birth, "2026-01-01T01:00:00Z"));
        assert_eq!(state.silent_from(Some(ts("2026-01-01T00:00:00Z")), T), Some(ts("2026-01-01T01:05:00Z")));
        state.apply(&change(false, StatusReason::LastWill, "2026-01-01T01:01:00Z"));
        assert_eq!(state.silent_from(Some(ts("2026-01-01T00:00:00Z")), T), None);
    }

    #[test]
    fn reasons_parse_back() {
        for reason in [
            StatusReason::Birth,
            StatusReason::LastWill,
            StatusReason::Disconnect,
            StatusReason::Inactivity,
            StatusReason::Telemetry,
        ] {
            assert_eq!(parse_reason(reason.as_str()), Some(reason));
        }
        assert_eq!(parse_reason("nope"), None);
    }
}
