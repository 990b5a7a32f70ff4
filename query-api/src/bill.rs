//! The live bill projection of a device's month in progress. The arithmetic is core's
//! ([`smartmeter_core::billing::projection`]); this module gathers its inputs and keeps
//! them current:
//!
//! - The month in progress is the local month (device's zone) of the newest reading's
//!   event time, so a meter replaying old history is projected in its own time, like
//!   everything else in the pipeline; a device without readings uses the wall clock.
//! - Start: energy so far by local hour from `energy_hourly`, the counter baseline
//!   from `readings`, the tariff assignment in force on the month's first day
//!   (`tariff_assignments`, else the registry's `devices.tariff_id`) and that tariff's
//!   versions (`tariff_versions`).
//! - Then each live reading of the device (from the telemetry topic, not the database)
//!   is judged against the baseline and spread over local hours with core's energy
//!   arithmetic, exactly as the processor does. A reading at or before the baseline
//!   (late, duplicate) changes nothing here: the counter is cumulative, so the next
//!   step counts its energy. A reading in a later month starts that month.

use std::collections::BTreeMap;

use jiff::civil::{self, Date};
use jiff::tz::TimeZone;
use jiff::Timestamp;
use rust_decimal::Decimal;
use smartmeter_core::billing::projection::{project, BillProjection, MonthSoFar};
use smartmeter_core::billing::{HourlyEnergy, Phase, PricingError, Tariff, TariffHistory};
use smartmeter_core::energy::{classify, kwh_to_milli_wh, spread, CounterReading, Rules};
use smartmeter_core::telemetry::Reading;
use smartmeter_core::DeviceId;

use crate::schema::error::ApiError;
use crate::store::Store;

/// The month of `at` in `tz`: first and last local day and its UTC bounds.
pub fn local_month(at: Timestamp, tz: &TimeZone) -> (Date, Date, Timestamp, Timestamp) {
    let first_day = at.to_zoned(tz.clone()).date().first_of_month();
    let last_day = first_day.last_of_month();
    let starts_at = first_day.to_zoned(tz.clone()).map(|z| z.timestamp()).unwrap_or(at);
    let ends_at = last_day
        .tomorrow()
        .ok()
        .and_then(|day| day.to_zoned(tz.clone()).ok())
        .map(|z| z.timestamp())
        .unwrap_or(at);
    (first_day, last_day, starts_at, ends_at)
}

/// A device's month in progress, kept current by live readings.
#[derive(Debug, Clone)]
pub struct BillProjector {
    pub device_id: DeviceId,
    pub tariff_id: String,
    history: TariffHistory,
    time_zone: TimeZone,
    first_day: Date,
    last_day: Date,
    starts_at: Timestamp,
    ends_at: Timestamp,
    as_of: Timestamp,
    /// Energy by local hour of the month, keyed by the hour's UTC start (a repeated DST
    /// hour is its own entry).
    hours: BTreeMap<Timestamp, (civil::DateTime, i64)>,
    baseline: Option<CounterReading>,
    sanctioned_load_kw: Option<Decimal>,
    connected_load_kw: Option<Decimal>,
    phase: Option<Phase>,
}

impl BillProjector {
    /// Reads the inputs of `device_id`'s month in progress from the database.
    pub async fn load(store: &Store, device_id: &DeviceId) -> Result<Self, ApiError> {
        let device = store
            .device(device_id)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("no device {device_id}")))?;
        let time_zone = TimeZone::get(&device.time_zone).map_err(|_| {
            tracing::error!(%device_id, time_zone = %device.time_zone, "Unknown time zone in devices.");
            ApiError::Internal
        })?;
        let baseline = store
            .counter_baseline(device_id)
            .await?
            .map(|(at, counter_milli_wh)| CounterReading { at, counter_milli_wh });
        let as_of = baseline.map(|b| b.at).or(device.newest_reading_at).unwrap_or_else(Timestamp::now);
        let (first_day, last_day, starts_at, ends_at) = local_month(as_of, &time_zone);

        let assignment =
            store.assignments(device_id).await?.into_iter().rev().find(|a| a.effective_from <= first_day);
        let (tariff_id, sanctioned_load_kw, connected_load_kw, phase) = match assignment {
            Some(a) => (
                a.tariff_id,
                a.sanctioned_load_kw,
                a.connected_load_kw,
                a.phase.as_deref().and_then(|p| match p {
                    "single" => Some(Phase::Single),
                    "three" => Some(Phase::Three),
                    _ => None,
                }),
            ),
            None => match device.tariff_id {
                Some(tariff_id) => (tariff_id, device.sanctioned_load_kw, None, None),
                None => {
                    return Err(ApiError::NotFound(format!(
                        "device {device_id} has no tariff assigned for {first_day}: assign one to project its bill"
                    )))
                }
            },
        };
        let versions = store.tariff_versions(&tariff_id).await?;
        if versions.is_empty() {
            return Err(ApiError::NotFound(format!("tariff {tariff_id} has no published version")));
        }
        let history = versions
            .into_iter()
            .map(|row| Tariff::new(row.document))
            .collect::<Result<Vec<_>, _>>()
            .and_then(TariffHistory::new)
            .map_err(|error| {
                tracing::error!(%tariff_id, %error, "Stored tariff versions do not validate.");
                ApiError::Internal
            })?;
        let mut hours = BTreeMap::new();
        for row in store.hourly_energy(device_id, starts_at, ends_at).await? {
            let hour_start = row.local_date.at(i8::try_from(row.local_hour).unwrap_or(0), 0, 0, 0);
            hours.insert(row.bucket_start, (hour_start, row.energy_milli_wh));
        }
        Ok(Self {
            device_id: device_id.clone(),
            tariff_id,
            history,
            time_zone,
            first_day,
            last_day,
            starts_at,
            ends_at,
            as_of,
            hours,
            baseline,
            sanctioned_load_kw,
            connected_load_kw,
            phase,
        })
    }

    pub fn month(&self) -> Date {
        self.first_day
    }

    /// Applies a live reading; `true` when it moved the projection.
    pub fn apply(&mut self, reading: &Reading) -> bool {
        if reading.device_id != self.device_id {
            return false;
        }
        let current =
            CounterReading { at: reading.timestamp, counter_milli_wh: kwh_to_milli_wh(reading.energy_kwh) };
        let Some(baseline) = self.baseline else {
            self.baseline = Some(current);
            self.advance_to(current.at);
            return true;
        };
        if current.at <= baseline.at {
            return false;
        }
        let step = classify(baseline, current, &Rules::default());
        if step.kind.moves_baseline() {
            self.baseline = Some(current);
        }
        let mut pieces = Vec::new();
        spread(baseline.at, current.at, step.counted_milli_wh, &self.time_zone, |bucket, energy| {
            pieces.push((bucket.start, bucket.local_date.at(bucket.local_hour, 0, 0, 0), energy));
        });
        self.advance_to(current.at);
        for (start, hour_start, energy) in pieces {
            if self.starts_at <= start && start < self.ends_at {
                self.hours.entry(start).or_insert((hour_start, 0)).1 += energy;
            }
        }
        true
    }

    /// Moves `as_of` forward, starting a new month when `at` is past this one.
    fn advance_to(&mut self, at: Timestamp) {
        if at >= self.ends_at {
            let (first_day, last_day, starts_at, ends_at) = local_month(at, &self.time_zone);
            self.first_day = first_day;
            self.last_day = last_day;
            self.starts_at = starts_at;
            self.ends_at = ends_at;
            self.hours.clear();
        }
        self.as_of = self.as_of.max(at);
    }

    pub fn project(&self) -> Result<BillProjection, PricingError> {
        let month = MonthSoFar {
            first_day: self.first_day,
            last_day: self.last_day,
            starts_at: self.starts_at,
            ends_at: self.ends_at,
            as_of: self.as_of,
            time_zone: self.time_zone.clone(),
            hourly_so_far: self
                .hours
                .values()
                .map(|(hour_start, energy)| HourlyEnergy {
                    hour_start: *hour_start,
                    energy_kwh: Decimal::new(*energy, 6),
                })
                .collect(),
            sanctioned_load_kw: self.sanctioned_load_kw,
            connected_load_kw: self.connected_load_kw,
            phase: self.phase,
        };
        project(&self.history, &month)
    }

    /// The projection, or a typed error saying why the tariff cannot price it.
    pub fn projection(&self) -> Result<BillProjection, ApiError> {
        self.project().map_err(|error| {
            ApiError::NotFound(format!(
                "the month {} of {} cannot be priced with tariff {}: {error}",
                self.first_day, self.device_id, self.tariff_id
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_months_follow_the_zone() {
        let tz = TimeZone::get("Asia/Kolkata").unwrap();
        // 2024-01-31T19:00Z is 1 February 00:30 in India.
        let (first, last, starts, ends) = local_month("2024-01-31T19:00:00Z".parse().unwrap(), &tz);
        assert_eq!((first, last), (jiff::civil::date(2024, 2, 1), jiff::civil::date(2024, 2, 29)));
        assert_eq!(starts.to_string(), "2024-01-31T18:30:00Z");
        assert_eq!(ends.to_string(), "2024-02-29T18:30:00Z");
    }
}
