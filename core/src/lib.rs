//! smartmeter's shared core: the one home of the domain.
//!
//! - [`device`]: device identity.
//! - [`device_events`]: registry and status events on `smartmeter.device-events.v1`.
//! - [`telemetry`]: the seed MQTT payload, its validation, the validated `Reading`
//!   and dead letters.
//! - [`status`]: the meter's MQTT status messages (birth `online`, last will `offline`).
//! - [`energy`]: the meter counter's arithmetic: counter steps (resets, rollovers,
//!   jitter, quarantine) and their split into local hours and days.
//! - [`event`]: the CloudEvents envelope and deterministic event ids.
//! - [`billing`]: tariffs as validated, versioned documents and the pricing of a
//!   billing period into invoice lines (pure `Decimal` arithmetic).
//! - [`topics`]: Kafka topic names and partition counts.
//! - `service` (feature `service`): runtime plumbing shared by the binaries.

pub mod billing;
pub mod device;
pub mod device_events;
pub mod energy;
pub mod event;
pub mod status;
pub mod telemetry;
pub mod topics;

#[cfg(feature = "service")]
pub mod service;

pub use device::DeviceId;
pub use telemetry::Reading;
