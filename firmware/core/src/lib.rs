//! The smartmeter firmware's core: everything a meter does that is not radio or RTOS,
//! `no_std`, without heap, tested on the host.
//!
//! How a reading flows:
//!
//! ```text
//! pzem (Modbus-RTU over UART) → Measurement → meter: outbox (store and forward)
//!   → telemetry JSON → MQTT smartmeter/{id}/telemetry
//! ```
//!
//! - [`modbus`]: function codes, register addresses, CRC-16/MODBUS, request frames.
//! - [`pzem`]: the PZEM-004T v3.0 driver over `embedded-io` + `embedded-hal` delay.
//! - [`time`]: uptime → RFC 3339 timestamps; unsynced clocks.
//! - [`telemetry`]: the seed payload, written into a byte buffer.
//! - [`outbox`]: fixed-capacity store and forward with a drop counter.
//! - [`backoff`]: exponential reconnect back-off with jitter.
//! - [`mqtt`]: topics, birth and last-will messages.
//! - [`device`]: the device id rules (the bridge's).
//! - [`schedule`]: when to read: on the wall-clock grid once the clock is set.
//! - [`meter`]: the state machine that ties them together.
//! - [`sim`]: a simulated PZEM-004T on the other end of the port, for host tools and tests.

#![cfg_attr(not(any(test, feature = "std")), no_std)]

pub mod backoff;
pub mod device;
pub mod meter;
pub mod modbus;
pub mod mqtt;
pub mod outbox;
pub mod pzem;
pub mod schedule;
pub mod sim;
pub mod telemetry;
pub mod time;

pub use device::DeviceId;
pub use meter::{Handover, Identity, Meter, Publisher};
pub use pzem::{Measurement, Pzem};
