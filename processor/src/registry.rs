//! The device registry: DeviceRegistered, DeviceUpdated and DeviceDecommissioned from
//! `smartmeter.device-events.v1` projected into `devices`.
//!
//! Lifecycle: `discovered` (telemetry or a status message arrived first; default time
//! zone) → `registered` → `decommissioned`, which is final: the history stays, readings
//! stamped after the decommissioning are stored but never counted, no period opens
//! after it, and a later DeviceRegistered for the device is refused (kept in
//! `device_event_rejects`). DeviceUpdated is applied in any state.
//!
//! A new time zone (registration or update) re-buckets the device's stored energy into
//! the new zone's local hours and days and re-derives its billing periods
//! ([`periods::rederive`]); a closed period whose figures change publishes
//! PeriodAdjusted. Decommissioning (event time `D` = the envelope's `time`) closes the
//! open periods at once, the last one with the final read; readings stamped after `D`
//! that arrived before the event (the two topics are not ordered against each other)
//! are set aside then, and the energy rebuilt without them.

use deadpool_postgres::Transaction;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use smartmeter_core::device_events::{DeviceDecommissioned, DeviceRegistered, DeviceUpdated};
use smartmeter_core::energy::Rules;

use crate::periods;
use crate::store::{self, DECOMMISSIONED_CLASS};

/// What the projection needs besides the event.
pub struct Context<'a> {
    pub default_time_zone: &'a str,
    pub rules: &'a Rules,
    pub period_grace: SignedDuration,
    pub periods_topic: &'a str,
}

/// What applying an event did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Applied {
    /// Refused, with the reason (kept with the event in `device_event_rejects`).
    pub refused: Option<String>,
    /// The device's energy was rebuilt (new zone, or readings set aside).
    pub rebuilt: bool,
    pub periods_closed: u64,
    pub periods_adjusted: u64,
}

#[derive(Debug)]
struct Row {
    time_zone: String,
    lifecycle: String,
    decommissioned_at: Option<Timestamp>,
    /// Readings ever stored for the device (none: a zone change has nothing to move).
    readings_total: i64,
}

/// Locks the device's row, creating it as `discovered` in the default zone if needed.
async fn lock(tx: &Transaction<'_>, device_id: &str, cx: &Context<'_>) -> Result<Row, tokio_postgres::Error> {
    tx.execute(
        "INSERT INTO devices (device_id, time_zone) VALUES ($1, $2) ON CONFLICT (device_id) DO NOTHING",
        &[&device_id, &cx.default_time_zone],
    )
    .await?;
    let row = tx
        .query_one(
            "SELECT time_zone, lifecycle, decommissioned_at, readings_total FROM devices
             WHERE device_id = $1 FOR UPDATE",
            &[&device_id],
        )
        .await?;
    Ok(Row {
        time_zone: row.get(0),
        lifecycle: row.get(1),
        decommissioned_at: row.get(2),
        readings_total: row.get(3),
    })
}

pub async fn register(
    tx: &Transaction<'_>,
    event: &DeviceRegistered,
    at: Timestamp,
    cx: &Context<'_>,
) -> Result<Applied, tokio_postgres::Error> {
    let device_id = event.device_id.as_str();
    let row = lock(tx, device_id, cx).await?;
    if row.lifecycle == "decommissioned" {
        return Ok(Applied {
            refused: Some(format!(
                "device {device_id} was decommissioned at {}; decommissioning is final",
                row.decommissioned_at.map_or_else(|| "an unknown time".to_owned(), |at| at.to_string())
            )),
            ..Applied::default()
        });
    }
    tx.execute(
        "UPDATE devices SET lifecycle = 'registered', name = $2, location = $3, tariff_id = $4,
                            sanctioned_load_kw = $5, customer_id = $6, registered_at = $7, updated_at = now()
         WHERE device_id = $1",
        &[
            &device_id,
            &event.name,
            &event.location,
            &event.tariff_id,
            &event.sanctioned_load_kw,
            &event.customer_id,
            &at,
        ],
    )
    .await?;
    if event.time_zone != row.time_zone {
        return rezone(tx, device_id, &event.time_zone, &row, cx).await;
    }
    Ok(Applied::default())
}

pub async fn update(
    tx: &Transaction<'_>,
    event: &DeviceUpdated,
    cx: &Context<'_>,
) -> Result<Applied, tokio_postgres::Error> {
    let device_id = event.device_id.as_str();
    let row = lock(tx, device_id, cx).await?;
    tx.execute(
        "UPDATE devices SET name = coalesce($2, name), location = coalesce($3, location),
                            tariff_id = coalesce($4, tariff_id),
                            sanctioned_load_kw = coalesce($5, sanctioned_load_kw),
                            customer_id = coalesce($6, customer_id), updated_at = now()
         WHERE device_id = $1",
        &[
            &device_id,
            &event.name,
            &event.location,
            &event.tariff_id,
            &event.sanctioned_load_kw,
            &event.customer_id,
        ],
    )
    .await?;
    match &event.time_zone {
        Some(zone) if *zone != row.time_zone => rezone(tx, device_id, zone, &row, cx).await,
        _ => Ok(Applied::default()),
    }
}

pub async fn decommission(
    tx: &Transaction<'_>,
    event: &DeviceDecommissioned,
    at: Timestamp,
    cx: &Context<'_>,
) -> Result<Applied, tokio_postgres::Error> {
    let device_id = event.device_id.as_str();
    let row = lock(tx, device_id, cx).await?;
    if row.lifecycle == "decommissioned" {
        // The first decommissioning stands; a repeat changes nothing.
        return Ok(Applied::default());
    }
    tx.execute(
        "UPDATE devices SET lifecycle = 'decommissioned', decommissioned_at = $2, decommission_reason = $3,
                            updated_at = now()
         WHERE device_id = $1",
        &[&device_id, &at, &event.reason],
    )
    .await?;
    let set_aside = tx
        .execute(
            "UPDATE readings SET after_decommission = true, counted_milli_wh = 0, counter_class = $3
             WHERE device_id = $1 AND ts > $2 AND NOT too_late AND NOT after_decommission",
            &[&device_id, &at, &DECOMMISSIONED_CLASS],
        )
        .await?;
    if set_aside > 0 {
        tx.execute("DELETE FROM counter_events WHERE device_id = $1 AND ts > $2", &[&device_id, &at]).await?;
        tracing::info!(device_id, set_aside, decommissioned_at = %at, "Readings after the decommissioning set aside.");
    }
    let mut applied = rebuild(tx, device_id, &row.time_zone, Some(at), cx).await?;
    applied.rebuilt = set_aside > 0;
    Ok(applied)
}

/// Moves the device to `zone`: energy re-bucketed, periods re-derived (nothing to do
/// for a device without readings).
async fn rezone(
    tx: &Transaction<'_>,
    device_id: &str,
    zone: &str,
    row: &Row,
    cx: &Context<'_>,
) -> Result<Applied, tokio_postgres::Error> {
    tx.execute("UPDATE devices SET time_zone = $2 WHERE device_id = $1", &[&device_id, &zone]).await?;
    if row.readings_total == 0 {
        return Ok(Applied::default());
    }
    let mut applied = rebuild(tx, device_id, zone, row.decommissioned_at, cx).await?;
    applied.rebuilt = true;
    tracing::info!(device_id, zone, "Device moved to a new time zone; energy re-bucketed.");
    Ok(applied)
}

async fn rebuild(
    tx: &Transaction<'_>,
    device_id: &str,
    zone: &str,
    decommissioned_at: Option<Timestamp>,
    cx: &Context<'_>,
) -> Result<Applied, tokio_postgres::Error> {
    // Validated with the event; the processor's zone table is the same tz database.
    let tz = TimeZone::get(zone).unwrap_or(TimeZone::UTC);
    let rebuilt = store::rebuild_energy(tx, device_id, &tz, cx.rules).await?;
    tx.execute(
        "UPDATE devices SET newest_reading_at = $2 WHERE device_id = $1",
        &[&device_id, &rebuilt.newest_reading_at],
    )
    .await?;
    let (periods_closed, periods_adjusted) = periods::rederive(
        tx,
        cx.periods_topic,
        device_id,
        zone,
        &tz,
        &rebuilt.dates,
        rebuilt.newest_reading_at,
        decommissioned_at,
        cx.period_grace,
    )
    .await?;
    Ok(Applied { refused: None, rebuilt: true, periods_closed, periods_adjusted })
}
