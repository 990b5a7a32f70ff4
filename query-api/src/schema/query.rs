//! Queries over devices, readings and energy, and the bill projection. A customer sees
//! only its own meters: lists are filtered, a single device of someone else is
//! `FORBIDDEN`.

use async_graphql::connection::{Connection, Edge, OpaqueCursor};
use async_graphql::{Context, Object, Result};
use jiff::SignedDuration;

use super::error::ApiError;
use super::scalars::{Date, DateTime, Month};
use super::types::{
    BillProjection, CounterEvent, DailyEnergy, Device, GaugePoint, HourlyEnergy, Lifecycle, MonthlyEnergy,
    QuarantinedReading, Reading, ReadingSeries,
};
use super::{api, caller, visible_device};
use crate::bill::BillProjector;
use crate::store::devices::DeviceFilter;

/// Most devices in one page of `devices`.
pub const MAX_PAGE_SIZE: i32 = 1_000;
/// Most readings one `readings` query returns.
pub const MAX_READINGS: i32 = 100_000;
/// Longest `[from, to)` of `hourlyEnergy` and `readingSeries`: a leap year of hours.
pub const MAX_HOURLY_RANGE: SignedDuration = SignedDuration::from_hours(366 * 24);
/// Longest `fromDate..=toDate` of `dailyEnergy`, in days: about ten years.
pub const MAX_DAILY_RANGE_DAYS: i64 = 3_660;
/// Longest `fromMonth..=toMonth` of `monthlyEnergy` and `billingPeriods`, in months.
pub const MAX_MONTHS: i32 = 240;
/// Most points `readingSeries` returns.
pub const MAX_POINTS: i32 = 10_000;
/// Bucket widths `readingSeries` chooses from when none is asked for, in seconds.
pub const BUCKET_WIDTHS_S: [i64; 14] =
    [60, 120, 300, 600, 900, 1_800, 3_600, 7_200, 10_800, 21_600, 43_200, 86_400, 604_800, 2_419_200];
/// Most counter events and quarantined readings one query returns.
pub const MAX_EVENTS: i32 = 10_000;

/// Relay cursor over devices: the last device id of the page, opaque to clients.
pub type DeviceCursor = OpaqueCursor<String>;

/// Longest `search` of `devices`, in characters.
pub const MAX_SEARCH_CHARS: usize = 100;

/// The connection's own fields. The count is a query of its own, run only when a
/// client asks for `totalCount`.
pub struct DeviceConnectionFields {
    filter: DeviceFilter,
}

#[Object]
impl DeviceConnectionFields {
    /// Devices matching the filter (and visible to the caller), all pages.
    async fn total_count(&self, ctx: &Context<'_>) -> Result<i64> {
        Ok(api(ctx).store.count_devices(&self.filter).await?)
    }
}

/// `search` as the store's filter: trimmed; blank is no filter.
fn search_text(search: Option<String>) -> Result<Option<String>, ApiError> {
    let Some(text) = search.as_deref().map(str::trim).filter(|t| !t.is_empty()) else { return Ok(None) };
    if text.chars().count() > MAX_SEARCH_CHARS {
        return Err(ApiError::bad_input(
            "search",
            format!("search is longer than {MAX_SEARCH_CHARS} characters"),
        ));
    }
    Ok(Some(text.to_owned()))
}

#[derive(Default)]
pub struct DeviceQuery;

pub fn time_range(from: DateTime, to: DateTime, max: Option<SignedDuration>) -> Result<(), ApiError> {
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

/// Months between two first days, counting both.
pub fn month_span(from: Month, to: Month, argument: &'static str) -> Result<(), ApiError> {
    if from > to {
        return Err(ApiError::bad_input(
            argument,
            "the range ends before it starts; both months are inclusive",
        ));
    }
    let months = (i32::from(to.0.year()) - i32::from(from.0.year())) * 12 + i32::from(to.0.month())
        - i32::from(from.0.month())
        + 1;
    if months > MAX_MONTHS {
        return Err(ApiError::bad_input(argument, format!("the range is longer than {MAX_MONTHS} months")));
    }
    Ok(())
}

fn limit_arg(argument: &'static str, value: i32, max: i32) -> Result<i64, ApiError> {
    if !(1..=max).contains(&value) {
        return Err(ApiError::bad_input(argument, format!("{argument} must be in 1..={max}")));
    }
    Ok(i64::from(value))
}

/// `a / b` rounded up, for positive `b`.
fn ceil_div(a: i64, b: i64) -> i64 {
    (a + b - 1).div_euclid(b)
}

/// The bucket width for a series over `range` in at most `max_points` buckets.
pub fn bucket_width(range: SignedDuration, max_points: i32) -> i64 {
    let needed = ceil_div(range.as_secs(), i64::from(max_points.max(1)));
    BUCKET_WIDTHS_S
        .iter()
        .copied()
        .find(|width| *width >= needed)
        .unwrap_or(BUCKET_WIDTHS_S[BUCKET_WIDTHS_S.len() - 1])
}

#[Object]
impl DeviceQuery {
    /// Devices ordered by `deviceId`, a page at a time (Relay cursor connection). A
    /// customer gets its own meters only.
    async fn devices(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 100, desc = "Page size, 0..=1000.")] first: i32,
        #[graphql(desc = "`endCursor` of the previous page.")] after: Option<String>,
        #[graphql(desc = "Only devices in this lifecycle state.")] lifecycle: Option<Lifecycle>,
        #[graphql(desc = "Only devices online (true) or offline (false).")] online: Option<bool>,
        #[graphql(desc = "Only devices whose `deviceId`, `name` or `location` contains this text, \
                          ignoring case (`%` and `_` are plain characters). Leading and trailing \
                          spaces are ignored; blank is no filter. At most 100 characters. \
                          Combines with the other filters; pages with the same cursors.")]
        search: Option<String>,
    ) -> Result<Connection<DeviceCursor, Device, DeviceConnectionFields>> {
        let caller = caller(ctx)?;
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
        let filter = DeviceFilter {
            customer_id: caller.customer_scope().map(str::to_owned),
            lifecycle: lifecycle.map(Lifecycle::as_db),
            online,
            contains: search_text(search)?,
        };
        let rows = api(ctx).store.devices_after(&filter, after.as_deref(), i64::from(first) + 1).await?;
        let page_size = usize::try_from(first).unwrap_or(0);
        let has_next_page = rows.len() > page_size;
        let mut connection = Connection::with_additional_fields(
            after.is_some(),
            has_next_page,
            DeviceConnectionFields { filter },
        );
        connection.edges.extend(
            rows.into_iter()
                .take(page_size)
                .map(|row| Edge::new(OpaqueCursor(row.device_id.clone()), Device(row))),
        );
        Ok(connection)
    }

    /// One device; a `NOT_FOUND` error (and null) for an unknown id.
    async fn device(&self, ctx: &Context<'_>, device_id: String) -> Result<Option<Device>> {
        let id = visible_device(ctx, &device_id).await?;
        match api(ctx).store.device(&id).await? {
            Some(row) => Ok(Some(Device(row))),
            None => Err(ApiError::NotFound(format!("no device {id}")).into()),
        }
    }

    /// The reading with the newest event time; null when the device has none.
    async fn latest_reading(&self, ctx: &Context<'_>, device_id: String) -> Result<Option<Reading>> {
        let id = visible_device(ctx, &device_id).await?;
        Ok(api(ctx).store.latest_reading(&id).await?.map(Reading))
    }

    /// Raw readings with `from <= ts < to`, oldest first, at most `limit`
    /// (1..=100000). An unknown device has none.
    async fn readings(
        &self,
        ctx: &Context<'_>,
        device_id: String,
        from: DateTime,
        to: DateTime,
        #[graphql(default = 10000)] limit: i32,
    ) -> Result<Vec<Reading>> {
        let id = super::device_id_arg(&device_id)?;
        time_range(from, to, None)?;
        let limit = limit_arg("limit", limit, MAX_READINGS)?;
        super::check_device(api(ctx), caller(ctx)?, &id).await?;
        let rows = api(ctx).store.readings(&id, from.0, to.0, limit).await?;
        Ok(rows.into_iter().map(Reading).collect())
    }

    /// Readings of `[from, to)` (at most 366 days) downsampled on the server for
    /// charts: average, minimum and maximum power, voltage and current per time bucket.
    /// The bucket is `bucketSeconds` (60..=2419200) when given, else the smallest of
    /// 1, 2, 5, 10, 15, 30 minutes, 1, 2, 3, 6, 12 hours, 1, 7, 28 days that gives at
    /// most `maxPoints` buckets. Buckets without readings are absent.
    async fn reading_series(
        &self,
        ctx: &Context<'_>,
        device_id: String,
        from: DateTime,
        to: DateTime,
        #[graphql(default = 500, desc = "1..=10000.")] max_points: i32,
        bucket_seconds: Option<i32>,
    ) -> Result<ReadingSeries> {
        let id = super::device_id_arg(&device_id)?;
        time_range(from, to, Some(MAX_HOURLY_RANGE))?;
        limit_arg("maxPoints", max_points, MAX_POINTS)?;
        let range = to.0.duration_since(from.0);
        let width = match bucket_seconds {
            Some(seconds) => {
                let seconds = i64::from(seconds);
                if !(60..=BUCKET_WIDTHS_S[BUCKET_WIDTHS_S.len() - 1]).contains(&seconds) {
                    return Err(ApiError::bad_input(
                        "bucketSeconds",
                        "bucketSeconds must be in 60..=2419200",
                    )
                    .into());
                }
                if ceil_div(range.as_secs(), seconds) > i64::from(MAX_POINTS) {
                    return Err(ApiError::bad_input(
                        "bucketSeconds",
                        format!("more than {MAX_POINTS} buckets; choose wider buckets or a shorter range"),
                    )
                    .into());
                }
                seconds
            }
            None => bucket_width(range, max_points),
        };
        super::check_device(api(ctx), caller(ctx)?, &id).await?;
        let rows = api(ctx).store.gauge_buckets(&id, from.0, to.0, width).await?;
        Ok(ReadingSeries {
            bucket_seconds: i32::try_from(width).unwrap_or(i32::MAX),
            points: rows.into_iter().map(GaugePoint).collect(),
        })
    }

    /// Energy per local hour of the device's time zone, for hours starting in
    /// `[from, to)` (at most 366 days), oldest first.
    async fn hourly_energy(
        &self,
        ctx: &Context<'_>,
        device_id: String,
        from: DateTime,
        to: DateTime,
    ) -> Result<Vec<HourlyEnergy>> {
        let id = super::device_id_arg(&device_id)?;
        time_range(from, to, Some(MAX_HOURLY_RANGE))?;
        super::check_device(api(ctx), caller(ctx)?, &id).await?;
        let rows = api(ctx).store.hourly_energy(&id, from.0, to.0).await?;
        Ok(rows.into_iter().map(HourlyEnergy).collect())
    }

    /// Energy per local day of the device's time zone, `fromDate..=toDate`
    /// (inclusive, at most 3660 days), days with energy only, oldest first.
    async fn daily_energy(
        &self,
        ctx: &Context<'_>,
        device_id: String,
        from_date: Date,
        to_date: Date,
    ) -> Result<Vec<DailyEnergy>> {
        let id = super::device_id_arg(&device_id)?;
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
        super::check_device(api(ctx), caller(ctx)?, &id).await?;
        let rows = api(ctx).store.daily_energy(&id, from_date.0, to_date.0).await?;
        Ok(rows.into_iter().map(DailyEnergy).collect())
    }

    /// Energy per local month of the device's time zone, `fromMonth..=toMonth`
    /// (inclusive, at most 240 months), summed from the daily energy; months with
    /// energy only, oldest first.
    async fn monthly_energy(
        &self,
        ctx: &Context<'_>,
        device_id: String,
        from_month: Month,
        to_month: Month,
    ) -> Result<Vec<MonthlyEnergy>> {
        let id = super::device_id_arg(&device_id)?;
        month_span(from_month, to_month, "toMonth")?;
        super::check_device(api(ctx), caller(ctx)?, &id).await?;
        let rows = api(ctx).store.monthly_energy(&id, from_month.0, to_month.0).await?;
        Ok(rows.into_iter().map(MonthlyEnergy).collect())
    }

    /// Counter steps that were not a plain increase (jitter, reset, rollover,
    /// replacement, quarantined) ending in `[from, to)`, oldest first, at most `limit`.
    async fn counter_events(
        &self,
        ctx: &Context<'_>,
        device_id: String,
        from: DateTime,
        to: DateTime,
        #[graphql(default = 1000)] limit: i32,
    ) -> Result<Vec<CounterEvent>> {
        let id = super::device_id_arg(&device_id)?;
        time_range(from, to, None)?;
        let limit = limit_arg("limit", limit, MAX_EVENTS)?;
        super::check_device(api(ctx), caller(ctx)?, &id).await?;
        let rows = api(ctx).store.counter_events(&id, from.0, to.0, limit).await?;
        Ok(rows.into_iter().map(CounterEvent).collect())
    }

    /// Readings whose counter step was an impossible jump (quarantined: not counted,
    /// not billed) in `[from, to)`, oldest first.
    async fn quarantined_readings(
        &self,
        ctx: &Context<'_>,
        device_id: String,
        from: DateTime,
        to: DateTime,
        #[graphql(default = 1000)] limit: i32,
    ) -> Result<Vec<QuarantinedReading>> {
        let id = super::device_id_arg(&device_id)?;
        time_range(from, to, None)?;
        let limit = limit_arg("limit", limit, MAX_EVENTS)?;
        super::check_device(api(ctx), caller(ctx)?, &id).await?;
        let rows = api(ctx).store.quarantined_readings(&id, from.0, to.0, limit).await?;
        Ok(rows.into_iter().map(QuarantinedReading).collect())
    }

    /// The bill of the month in progress projected to the month's end, and the kWh
    /// left before the next slab (the `billProjection` subscription keeps it live).
    async fn bill_projection(&self, ctx: &Context<'_>, device_id: String) -> Result<BillProjection> {
        let id = visible_device(ctx, &device_id).await?;
        let projector = BillProjector::load(&api(ctx).store, &id).await?;
        let projection = projector.projection()?;
        Ok(BillProjection::new(id.as_str(), &projector.tariff_id, projection, projector.month()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_widths_keep_within_the_points() {
        assert_eq!(bucket_width(SignedDuration::from_hours(24), 500), 300);
        assert_eq!(bucket_width(SignedDuration::from_hours(24), 1440), 60);
        assert_eq!(bucket_width(SignedDuration::from_hours(24 * 31), 500), 7_200);
        assert_eq!(bucket_width(SignedDuration::from_hours(24 * 366), 10), 2_419_200);
        assert_eq!(bucket_width(SignedDuration::from_secs(30), 500), 60);
    }
}
