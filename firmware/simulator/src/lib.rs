//! `meter-sim`: replays real meter data sets as the telemetry of simulated meters.
//!
//! A data source turns a file into per-meter interval data; the counter turns that into
//! what a meter reports; the schedule orders and paces the reports; the publisher sends
//! them. Later the same pipeline is fed by the firmware core on a simulated PZEM.
//!
//! - [`london`]: Low Carbon London CSV → half-hour slots per household, every quirk counted.
//! - [`counter`]: slots → the meter's cumulative counter readings (integer mWh).
//! - [`payload`]: a reading → the seed telemetry JSON (gauges derived, not measured).
//! - [`schedule`]: all meters interleaved in time order; speed-up pacing.
//! - [`publish`]: MQTT (QoS 1, PubAcks counted) or a JSON-lines file for dry runs.
//! - [`replay`]: one run wired end to end, and its [`replay::Report`].

pub mod counter;
pub mod london;
pub mod payload;
pub mod publish;
pub mod replay;
pub mod schedule;

pub use replay::{run, Config, Output, Report, Source};
