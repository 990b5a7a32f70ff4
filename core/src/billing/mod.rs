//! Billing arithmetic: a tariff is data, pricing is a pure function of a tariff and a
//! billing period. No I/O, no clock, no floats: money is [`Decimal`](rust_decimal::Decimal).
//!
//! - [`tariff`]: the versioned tariff document ([`TariffDocument`]), made of generic
//!   components; [`Tariff`] is a validated version, [`TariffHistory`] a tariff's versions.
//! - [`validate`]: what a tariff must satisfy; [`TariffError`] says why one was refused.
//! - [`period`]: the [`BillingPeriod`] to price and the month factor of a period.
//! - [`price`](mod@price): [`price()`] one version, [`price_across_versions`] splitting at
//!   tariff changes; [`PricingError`].
//! - [`invoice`]: the result: [`Invoice`] lines and total.
//! - [`projection`]: the month in progress: its bill projected to the month's end and
//!   the kWh left before the next slab.
//! - [`rounding`]: the tariff's rounding rule.
//! - [`events`]: the billing events on Kafka: periods from the processor
//!   ([`events::PeriodEvent`]), tariff versions and assignments, invoices issued and revised.
//!
//! The tariffs shipped with the project are in `core/tariffs/<tariff_id>.json`, one
//! JSON array of versions each.

pub mod events;
pub mod invoice;
pub mod period;
pub mod price;
pub mod projection;
pub mod rounding;
mod serde_decimal;
pub mod tariff;
pub mod validate;

pub use invoice::{IncludedTax, Invoice, InvoiceLine, PricedPart, Unit};
pub use period::{BillingPeriod, HourlyEnergy};
pub use price::{price, price_across_versions, PricingError};
pub use rounding::{Rounding, RoundingMode, RoundingStep};
pub use tariff::{Currency, Phase, Tariff, TariffDocument, TariffHistory};
pub use validate::TariffError;
