//! The query root: devices, readings and energy per local hour and day.

use async_graphql::connection::{Connection, Edge, OpaqueCursor};
use async_graphql::{Object, Result};
use jiff::SignedDuration;
use smartmeter_core::DeviceId;

use super::error::ApiError;
use super::scalars::{Date, DateTime};
use super::types::{DailyEnergy, Device, HourlyEnergy, Reading};
use crate::store::Store;

/// Most devices in one page of `devices`.
pub const MAX_PAGE_SIZE: i32 = 1_000;
/// Most readings one `readings` query returns.
pub const MAX_READINGS: i32 = 100_000;
/// Longest `[from, to)` of `hourlyEnergy`: a leap year of hours (~8,800 rows).
pub const MAX_HOURLY_RANGE: SignedDuration = SignedDuration::from_hours(366 * 24);
/// Longest `fromDate..=toDate` of `dailyEnergy`, in days: about ten years.
pub const MAX_DAILY_RANGE_DAYS: i64 = 3_660;

/// Relay cursor over devices: the last device id of the page, opaque to clients.
pub type DeviceCursor = OpaqueCursor<String>;

pub struct Query {
    store: Store,
}

impl Query {
    pub fn new(store: Store) -> Self {
        Self { store }
    }
}

fn time_range(from: DateTime, to: DateTime, max: Option<SignedDuration>) -> Result<(), ApiError> {
    if from >= to {
        return Err(ApiError::bad_input("to", "`to` must be later than `from`; the range is [from, to)"));
    }
    if let Some(max) = max {
        if to.0.duration_since(from.0) > max {
            return Err(ApiError::bad_input(
                "to",
                format!("the range is longer than {} days; ask for less", max.as_hours() / 24),
            ));
        }
    }
    Ok(())
}

#[Object]
impl Query {
    /// Devices ordered by `deviceId`, a page at a time (Relay cursor connection).
    async fn devices(
        &self,
        #[graphql(default = 100, desc = "Page size, 0..=1000.")] first: i32,
        #[graphql(desc = "`endCursor` of the previous page.")] after: Option<String>,
    ) -> Result<Connection<DeviceCursor, Device>> {
        if !(0..=MAX_PAGE_SIZE).contains(&first) {
            return Err(ApiError::bad_input("first", format!("first must be in 0..={MAX_PAGE_SIZE}")).into());
        }
        let after = match after {
            None => None,
            Some(cursor) => {
                let decoded = <DeviceCursor as async_graphql::connection::CursorType>::decode_cursor(&cursor)
                    .map_err(|_| ApiError::bad_input("after", "after is not a cursor from this API"))?;
                Some(decoded.0)
            }
        };
        let rows = self.store.devices_after(after.as_deref(), i64::from(first) + 1).await?;
        let page_size = usize::try_from(first).unwrap_or(0);
        let has_next_page = rows.len() > page_size;
        let mut connection = Connection::new(after.is_some(), has_next_page);
        connection.edges.extend(
            rows.into_iter()
                .take(page_size)
                .map(|row| Edge::new(OpaqueCursor(row.device_id.clone()), Device(row))),
        );
        Ok(connection)
    }

    /// One device; a `NOT_FOUND` error (and null) for an unknown id.
    async fn device(&self, device_id: String) -> Result<Option<Device>> {
        let id = device_id_arg(&device_id)?;
        match self.store.device(&id).await? {
            Some(row) => Ok(Some(Device(row))),
            None => Err(ApiError::NotFound(format!("no device {id}")).into()),
        }
    }

    /// Raw readings with `from <= ts < to`, oldest first, at most `limit`
    /// (1..=100000). An unknown device has none.
    async fn readings(
        &self,
        device_id: String,
        from: DateTime,
        to: DateTime,
        #[graphql(default = 10000)] limit: i32,
    ) -> Result<Vec<Reading>> {
        let id = device_id_arg(&device_id)?;
        time_range(from, to, None)?;
        if !(1..=MAX_READINGS).contains(&limit) {
            return Err(ApiError::bad_input("limit", format!("limit must be in 1..={MAX_READINGS}")).into());
        }
        let rows = self.store.readings(&id, from.0, to.0, i64::from(limit)).await?;
        Ok(rows.into_iter().map(Reading).collect())
    }

    /// Energy per local hour of the device's time zone, for hours starting in
    /// `[from, to)` (at most 366 days), oldest first.
    async fn hourly_energy(
        &self,
        device_id: String,
        from: DateTime,
        to: DateTime,
    ) -> Result<Vec<HourlyEnergy>> {
        let id = device_id_arg(&device_id)?;
        time_range(from, to, Some(MAX_HOURLY_RANGE))?;
        let rows = self.store.hourly_energy(&id, from.0, to.0).await?;
        Ok(rows.into_iter().map(HourlyEnergy).collect())
    }

    /// Energy per local day of the device's time zone, `fromDate..=toDate`
    /// (inclusive, at most 3660 days), days with energy only, oldest first.
    async fn daily_energy(
        &self,
        device_id: String,
        from_date: Date,
        to_date: Date,
    ) -> Result<Vec<DailyEnergy>> {
        let id = device_id_arg(&device_id)?;
        if from_date > to_date {
            return Err(ApiError::bad_input(
                "toDate",
                "`toDate` must not be before `fromDate`; both are inclusive",
            )
            .into());
        }
        if to_date.0.duration_since(from_date.0) >= SignedDuration::from_hours(24 * MAX_DAILY_RANGE_DAYS) {
            return Err(ApiError::bad_input(
                "toDate",
                format!("the range is longer than {MAX_DAILY_RANGE_DAYS} days; ask for less"),
            )
            .into());
        }
        let rows = self.store.daily_energy(&id, from_date.0, to_date.0).await?;
        Ok(rows.into_iter().map(DailyEnergy).collect())
    }
}

fn device_id_arg(text: &str) -> Result<DeviceId, ApiError> {
    DeviceId::parse(text).map_err(|error| ApiError::bad_input("deviceId", format!("deviceId: {error}")))
}
