//! One batch, one transaction: the device events and the telemetry of a batch, their
//! effects on every table, and the consumed offsets of both topics.
//!
//! Device events of the batch are applied first, in the order read, so telemetry in the
//! same batch sees the zone and lifecycle they set. Then telemetry, grouped by device:
//! dedup and lateness ([`rollup::split`]), the plan of what changes
//! ([`rollup::plan`]), the writes ([`store::apply`]), billing periods, and the status
//! changes the readings imply ([`status::from_telemetry`]). Records that cannot be read
//! are kept in `telemetry_rejects` / `device_event_rejects` and committed past.

use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

use deadpool_postgres::{Pool, Transaction};
use jiff::tz::TimeZone;
use smartmeter_core::device_events::DeviceEvent;
use smartmeter_core::energy::{self, CounterReading};
use smartmeter_core::event::Envelope;
use smartmeter_core::service::consumer::{Batch, BatchError, BatchHandler, Record};
use smartmeter_core::{DeviceId, Reading};

use crate::metrics::{BatchTotals, Metrics};
use crate::rollup::{self, Arrived, Window};
use crate::{periods, registry, segment, status, store, Config};

pub struct Ingest {
    pub config: Config,
    pub pool: Pool,
    pub metrics: Metrics,
    /// Per device: the readings from the last baseline to the newest, as committed.
    tails: HashMap<String, Window>,
    zones: HashMap<String, TimeZone>,
}

impl Ingest {
    pub fn new(config: Config, pool: Pool, metrics: Metrics) -> Self {
        Self { config, pool, metrics, tails: HashMap::new(), zones: HashMap::new() }
    }

    fn zone(&mut self, name: &str) -> TimeZone {
        if let Some(tz) = self.zones.get(name) {
            return tz.clone();
        }
        let tz = TimeZone::get(name).unwrap_or_else(|error| {
            tracing::error!(zone = name, %error, "Unknown device time zone; using the default.");
            TimeZone::get(&self.config.default_time_zone).expect("checked at start")
        });
        self.zones.insert(name.to_owned(), tz.clone());
        tz
    }

    async fn process(&mut self, batch: &Batch) -> Result<(), BatchError> {
        let started = Instant::now();
        let mut totals = BatchTotals::default();
        let (events, telemetry): (Vec<&Record>, Vec<&Record>) = batch
            .records
            .iter()
            .partition(|r| self.config.device_events_topic.as_deref() == Some(r.topic.as_str()));

        let mut client = self.pool.get().await.map_err(BatchError::failed)?;
        let tx = client.transaction().await?;
        for record in &events {
            self.device_event(&tx, record, &mut totals).await?;
        }
        let new_tails = self.telemetry(&tx, &telemetry, &mut totals).await?;
        batch.store_offsets(&tx, &self.config.group_id).await?;
        tx.commit().await?;

        for (device_id, tail) in new_tails {
            self.tails.insert(device_id, tail);
        }
        tracing::debug!(
            records = batch.records.len(),
            meters = totals.meters,
            segments = totals.segments,
            rounds = totals.rounds,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "Batch committed."
        );
        self.metrics.observe_batch(batch.records.len(), &totals, started.elapsed());
        Ok(())
    }

    async fn device_event(
        &mut self,
        tx: &Transaction<'_>,
        record: &Record,
        totals: &mut BatchTotals,
    ) -> Result<(), tokio_postgres::Error> {
        let parsed = serde_json::from_slice::<Envelope<serde_json::Value>>(&record.payload)
            .map_err(|e| format!("not a CloudEvents JSON envelope: {e}"))
            .and_then(|envelope| {
                DeviceEvent::from_envelope(&envelope)
                    .map(|event| (envelope.time, event))
                    .map_err(|e| e.to_string())
            });
        let (at, mut event) = match parsed {
            Ok(parsed) => parsed,
            Err(reason) => return reject_event(tx, record, &reason, totals).await,
        };
        let at = store::db_precision(at);
        if let DeviceEvent::StatusChanged(change) = &mut event {
            change.at = store::db_precision(change.at);
        }
        let device_id = event.device_id().to_string();
        self.tails.remove(&device_id);
        let cx = registry::Context {
            default_time_zone: &self.config.default_time_zone,
            rules: &self.config.rules,
            period_grace: self.config.period_grace,
            periods_topic: &self.config.billing_periods_topic,
        };
        let applied = match &event {
            DeviceEvent::Registered(e) => registry::register(tx, e, at, &cx).await?,
            DeviceEvent::Updated(e) => registry::update(tx, e, &cx).await?,
            DeviceEvent::Decommissioned(e) => registry::decommission(tx, e, at, &cx).await?,
            DeviceEvent::StatusChanged(change) => {
                store::ensure_device(tx, &device_id, &self.config.default_time_zone).await?;
                if status::store(tx, change).await? {
                    totals.status_changes += 1;
                }
                registry::Applied::default()
            }
        };
        if let Some(reason) = applied.refused {
            tracing::warn!(%device_id, event_type = event.event_type(), %reason, "Device event refused.");
            return reject_event(tx, record, &reason, totals).await;
        }
        tracing::debug!(%device_id, event_type = event.event_type(), rebuilt = applied.rebuilt, "Device event applied.");
        totals.device_events += 1;
        totals.rebuilt += u64::from(applied.rebuilt);
        totals.periods_closed += applied.periods_closed;
        totals.periods_adjusted += applied.periods_adjusted;
        Ok(())
    }

    /// Applies the batch's telemetry; returns the devices' new tails.
    async fn telemetry(
        &mut self,
        tx: &Transaction<'_>,
        records: &[&Record],
        totals: &mut BatchTotals,
    ) -> Result<Vec<(String, Window)>, tokio_postgres::Error> {
        let mut by_device: Vec<(String, Vec<Arrived>)> = Vec::new();
        let mut device_index: HashMap<String, usize> = HashMap::new();
        for record in records {
            match serde_json::from_slice::<Reading>(&record.payload) {
                Ok(mut reading) => {
                    // As stored: PostgreSQL keeps microseconds, so compare and derive in them.
                    reading.timestamp = store::db_precision(reading.timestamp);
                    reading.meter_timestamp = store::db_precision(reading.meter_timestamp);
                    reading.received_at = store::db_precision(reading.received_at);
                    let counter = CounterReading {
                        at: reading.timestamp,
                        counter_milli_wh: energy::kwh_to_milli_wh(reading.energy_kwh),
                    };
                    let device = reading.device_id.to_string();
                    let index = *device_index.entry(device.clone()).or_insert_with(|| {
                        by_device.push((device, Vec::new()));
                        by_device.len() - 1
                    });
                    by_device[index].1.push(Arrived {
                        reading,
                        counter,
                        partition: record.partition,
                        offset: record.offset,
                    });
                }
                Err(error) => {
                    let reason = error.to_string();
                    tracing::error!(partition = record.partition, offset = record.offset, %reason, "Unreadable telemetry record kept aside.");
                    tx.execute(
                        "INSERT INTO telemetry_rejects (kafka_partition, kafka_offset, payload, reason)
                         VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                        &[&record.partition, &record.offset, &record.payload, &reason],
                    )
                    .await?;
                    totals.rejected += 1;
                }
            }
        }
        if by_device.is_empty() {
            return Ok(Vec::new());
        }
        totals.meters = by_device.len() as u64;
        let device_ids: Vec<&str> = by_device.iter().map(|(id, _)| id.as_str()).collect();
        let mut devices = store::load_devices(tx, &device_ids, &self.config.default_time_zone).await?;
        // Exact copies of stored readings (a redelivery, a replay) change nothing: set
        // aside here, in one query, so that a replay of old history costs no window
        // loads and no per-month segments.
        totals.duplicates += store::drop_stored_duplicates(tx, &mut by_device, &devices).await?;
        by_device.retain(|(_, arrived)| !arrived.is_empty());
        if by_device.is_empty() {
            return Ok(Vec::new());
        }
        let device_ids: Vec<&str> = by_device.iter().map(|(id, _)| id.as_str()).collect();
        let mut periods_by_device = store::load_periods(tx, &device_ids).await?;

        let mut works = Vec::with_capacity(by_device.len());
        for (device_id, arrived) in by_device {
            let row = devices.remove(&device_id).expect("load_devices returns every device asked for");
            let tz = self.zone(&row.time_zone);
            let periods = periods_by_device.remove(&device_id).unwrap_or_default();
            let segments = segment::cut(
                arrived,
                &segment::Device {
                    tz: &tz,
                    newest_reading_at: row.newest_reading_at,
                    decommissioned_at: row.decommissioned_at,
                    allowed_lateness: self.config.allowed_lateness,
                    grace: self.config.period_grace,
                },
                periods.clone(),
            );
            totals.segments += segments.len() as u64;
            works.push(DeviceWork {
                device: DeviceId::parse(&device_id).expect("device ids on the telemetry topic are validated"),
                tail: self.tails.get(&device_id).cloned(),
                id: device_id,
                row,
                tz,
                periods,
                segments: segments.into_iter(),
                accounted: false,
            });
        }
        // Round n applies the n-th segment of every device that has one: each device's
        // segments in order, every device's writes of a round in a few set-based
        // statements. Most batches are one round.
        loop {
            let round: Vec<(usize, Vec<Arrived>)> = works
                .iter_mut()
                .enumerate()
                .filter_map(|(index, work)| work.segments.next().map(|segment| (index, segment)))
                .collect();
            if round.is_empty() {
                break;
            }
            totals.rounds += 1;
            self.round(tx, &mut works, round, totals).await?;
        }
        Ok(works
            .into_iter()
            .filter(|work| work.accounted)
            .filter_map(|work| work.tail.map(|tail| (work.id, tail)))
            .collect())
    }

    /// Applies one segment (see [`segment`]) of each of several devices: readings,
    /// rollups, device rows, billing periods, status changes. Each `work` is moved on
    /// to after its segment.
    async fn round(
        &self,
        tx: &Transaction<'_>,
        works: &mut [DeviceWork],
        round: Vec<(usize, Vec<Arrived>)>,
        totals: &mut BatchTotals,
    ) -> Result<(), tokio_postgres::Error> {
        let config = &self.config;
        // The windows to recompute: the tail in memory when the segment starts after
        // it, else what is stored, for all such devices in one query.
        let mut splits = Vec::with_capacity(round.len());
        let mut to_load: Vec<(String, jiff::Timestamp)> = Vec::new();
        for (index, arrived) in round {
            let work = &mut works[index];
            let split = rollup::split(
                arrived,
                work.row.newest_reading_at,
                config.allowed_lateness,
                work.row.decommissioned_at,
            );
            let window = match split.accepted.iter().map(|(a, _)| a.counter.at).min() {
                None => Some(Window::default()),
                Some(earliest) => match work.tail.take() {
                    Some(tail) if tail.readings.last().is_some_and(|last| last.at < earliest) => Some(tail),
                    _ => {
                        to_load.push((work.id.clone(), earliest));
                        None
                    }
                },
            };
            splits.push((index, split, window));
        }
        let mut loaded = store::load_windows(tx, &to_load).await?;

        let grace = jiff::SignedDuration::from_secs(config.period_grace.as_secs());
        let mut writes = store::Writes::default();
        let mut opening = periods::Opening::default();
        let mut steps = Vec::new();
        let mut status_changes = Vec::new();
        for (index, split, window) in splits {
            let work = &mut works[index];
            let window = window.unwrap_or_else(|| loaded.remove(&work.id).unwrap_or_default());
            let had_accepted = !split.accepted.is_empty();
            let plan = rollup::plan(window, split, &work.tz, &config.rules);
            work.row.newest_reading_at = plan.newest_reading_at;
            let tz = &work.tz;

            let stored_at: Vec<jiff::Timestamp> =
                plan.inserts.iter().chain(&plan.replacements).map(|(a, _)| a.counter.at).collect();
            // A month opens with a reading inside it or energy on one of its days; a
            // meter's first reading at 00:00 on the 1st opens no empty month before it.
            // After a decommissioning no month opens.
            let opened: BTreeSet<jiff::civil::Date> = stored_at
                .iter()
                .map(|at| at.to_zoned(tz.clone()).date())
                .chain(plan.daily.keys().copied())
                .map(|date| date.first_of_month())
                .filter(|first| {
                    work.row
                        .decommissioned_at
                        .is_none_or(|until| periods::LocalMonth::containing(*first, tz).starts_at < until)
                })
                .collect();
            for first in &opened {
                if !work.periods.months.contains_key(first) {
                    let month = periods::LocalMonth::containing(*first, tz);
                    opening.push(&work.id, &work.row.time_zone, &month);
                    work.periods.months.insert(*first, (false, month.ends_at));
                }
            }
            // A reading exactly at local midnight is also the closing read of the day
            // (and maybe the month) before it, which it can change.
            let mut touched = opened;
            touched.extend(stored_at.iter().map(|at| {
                (*at - jiff::SignedDuration::from_nanos(1)).to_zoned(tz.clone()).date().first_of_month()
            }));
            // The period step, from the device's periods as locked at the start of the
            // batch and kept up to date since: due months close; closed months the
            // segment touched may be adjusted; a decommissioned device's open months close.
            let mut step = periods::Step { device_id: work.id.clone(), ..periods::Step::default() };
            let closed_before: BTreeSet<jiff::civil::Date> =
                work.periods.months.iter().filter(|(_, (closed, _))| *closed).map(|(m, _)| *m).collect();
            if let Some(now) = plan.newest_reading_at {
                for (month, (closed, ends_at)) in work.periods.months.iter_mut() {
                    if !*closed && *ends_at + grace <= now {
                        *closed = true;
                        step.due.push(*month);
                    }
                }
            }
            step.check = touched.intersection(&closed_before).copied().collect();
            if work.row.decommissioned_at.is_some() {
                // A late reading from before the decommissioning may have opened a month.
                for (month, (closed, _)) in work.periods.months.iter_mut() {
                    if !*closed {
                        *closed = true;
                        step.last.push(*month);
                    }
                }
            }
            if !step.is_empty() {
                steps.push(step);
            }

            let received = store::arrivals(&plan).into_iter().map(|a| a.reading.received_at);
            let changes = status::from_telemetry(
                &work.device,
                &mut work.row.status,
                &mut work.row.last_seen_at,
                received,
                config.inactivity_timeout,
            );
            totals.status_changes += changes.len() as u64;
            writes.add(&work.id, &plan, (!changes.is_empty()).then_some(work.row.status));
            status_changes.extend(changes);
            totals.add(&plan);
            if had_accepted {
                work.tail = Some(plan.tail);
                work.accounted = true;
            }
        }
        writes.flush(tx).await?;
        opening.insert(tx).await?;
        let (closed, adjusted) = periods::apply(tx, &config.billing_periods_topic, &steps).await?;
        totals.periods_closed += closed;
        totals.periods_adjusted += adjusted;
        if let Some(topic) = &config.device_events_topic {
            status::publish_many(tx, topic, &status_changes).await?;
        }
        Ok(())
    }
}

/// A device's share of a batch while it is applied.
struct DeviceWork {
    id: String,
    device: DeviceId,
    row: store::DeviceRow,
    tz: TimeZone,
    /// The device's billing periods (month → closed, end), as locked at the start of
    /// the batch and kept up to date as the rounds open and close them.
    periods: segment::Periods,
    segments: std::vec::IntoIter<Vec<Arrived>>,
    /// The readings from the last baseline to the newest, once accounted.
    tail: Option<Window>,
    /// Whether a segment had readings to account (else the tail is unchanged).
    accounted: bool,
}

async fn reject_event(
    tx: &Transaction<'_>,
    record: &Record,
    reason: &str,
    totals: &mut BatchTotals,
) -> Result<(), tokio_postgres::Error> {
    tracing::error!(topic = %record.topic, partition = record.partition, offset = record.offset, reason, "Device event kept aside.");
    tx.execute(
        "INSERT INTO device_event_rejects (topic, kafka_partition, kafka_offset, payload, reason)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        &[&record.topic, &record.partition, &record.offset, &record.payload, &reason],
    )
    .await?;
    totals.device_events_rejected += 1;
    Ok(())
}

impl BatchHandler for Ingest {
    async fn handle(&mut self, batch: &Batch) -> Result<(), BatchError> {
        self.process(batch).await
    }

    fn reset(&mut self) {
        self.tails.clear();
    }
}
