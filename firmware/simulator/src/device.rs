//! One simulated meter: the firmware's own code on a host.
//!
//! A `meter_core::sim::SimulatedPzem` plays the PZEM-004T: it answers the Modbus-RTU
//! frames of the real driver (`meter_core::Pzem`) over `embedded-io`, and its registers
//! follow the meter's [`Trace`] (its power integrated into the energy counter). The
//! readings go into `meter_core::Meter`: outbox, payload, birth, back-off, acknowledged
//! delivery, exactly as on the ESP32. What is simulated is only what the ESP32 has
//! and a host has not: the UART, the radio, the clock (data time, not wall time), the
//! random numbers for the jitter (seeded), and the faults.

use embedded_hal::delay::DelayNs;
use meter_core::backoff::{Backoff, Entropy};
use meter_core::meter::{Handover, Link, Publisher};
use meter_core::mqtt::Delivery;
use meter_core::pzem::{Config as PzemConfig, ENERGY_REGISTER_TOP_WH};
use meter_core::schedule::next_reading_ms;
use meter_core::sim::SimulatedPzem;
use meter_core::time::Clock;
use meter_core::{DeviceId, Identity, Measurement, Meter, Pzem};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::faults::{Faults, Malformed};
use crate::fleet::Plan;
use crate::source::{Trace, TraceKind, NOMINAL_FREQUENCY_DHZ, NOMINAL_VOLTAGE_DV};
use crate::transport::{LinkState, SendError, Tag, Transport};

/// Firmware version in `fw`.
pub const FW: &str = concat!("meter-sim/", env!("CARGO_PKG_VERSION"));
/// How long a rebooting meter is away.
pub const REBOOT_MS: i64 = 3_000;
/// SNTP answers from 2000-01-01 on are believed: the data sets reach back to 2006.
/// Unsynced stamps (the epoch plus uptime) stay far below it, and below the bridge's
/// clock floor for replays (2000-01-01 in infra/demo.sh).
pub const CLOCK_FLOOR_UNIX_S: u64 = 946_684_800;
/// The ESP32 application's back-off: 1 s doubling to 5 min, with jitter.
pub const BACKOFF_BASE_MS: u32 = 1_000;
pub const BACKOFF_MAX_MS: u32 = 300_000;

/// The simulated UART answers at once: the driver's waits need no real sleep.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoDelay;

impl DelayNs for NoDelay {
    fn delay_ns(&mut self, _ns: u32) {}
}

struct Jitter<'a>(&'a mut SmallRng);

impl Entropy for Jitter<'_> {
    fn next_u32(&mut self) -> u32 {
        self.0.random()
    }
}

/// Settings shared by every meter of a run.
#[derive(Debug, Clone)]
pub struct MeterSettings {
    pub interval_ms: i64,
    pub faults: Faults,
    pub seed: u64,
}

/// What the fleet counts (never per meter, to keep a meter small).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    pub readings: u64,
    pub read_failures: u64,
    /// Readings that left an outbox acknowledged: each reading once.
    pub readings_delivered: u64,
    pub telemetry_messages: u64,
    pub unsynced_published: u64,
    pub dropped: u64,
    pub lost_at_reboot: u64,
    pub reboots: u64,
    pub counter_resets: u64,
    pub rollovers: u64,
    pub outages: u64,
    pub lost_acks: u64,
    pub births: u64,
    pub goodbyes: u64,
    pub malformed: std::collections::BTreeMap<Malformed, u64>,
    /// Times a publish found the client's queue full (retried later).
    pub busy: u64,
}

/// Everything a meter's step may touch besides itself.
pub struct Ctx<'a> {
    pub traces: &'a [Trace],
    pub settings: &'a MeterSettings,
    pub transport: &'a mut Transport,
    pub counters: &'a mut Counters,
}

pub struct SimMeter<const N: usize> {
    pub index: u32,
    pub conn: u32,
    trace: u32,
    /// Segment in force at `measured_to_ms`.
    cursor: usize,
    pzem: Pzem<SimulatedPzem, NoDelay>,
    meter: Meter<N>,
    rng: SmallRng,
    /// Data time of this boot (uptime 0).
    boot_ms: i64,
    /// The module has measured up to here.
    measured_to_ms: i64,
    next_read_ms: Option<i64>,
    /// The last reading is made here.
    end_ms: i64,
    sntp_at_ms: Option<i64>,
    rebooting_until_ms: Option<i64>,
    next_reboot: usize,
    next_reset: usize,
    next_outage: usize,
    outage_until_ms: Option<i64>,
    /// Registers trace: added to the logged counter (mod the top), moved by resets.
    register_offset_wh: u32,
    last_energy_wh: u32,
    /// A dedicated link asked for, CONNACK awaited.
    connecting: bool,
    /// This message's PUBACK is lost on the way back.
    lost_ack: Option<u32>,
    next_message_id: u32,
    said_goodbye: bool,
    /// The event the fleet has queued for this meter.
    pub scheduled_ms: Option<i64>,
}

impl<const N: usize> SimMeter<N> {
    /// A meter on its plan's trace, switched on at the plan's start (at or after the
    /// trace's start), its last reading at the plan's end. The module has counted the trace's energy before
    /// `start_ms` already, as a meter installed earlier would have.
    pub fn new(index: u32, plan: &Plan, traces: &[Trace], settings: &MeterSettings) -> Self {
        let Plan { ref device_id, trace: trace_index, conn, start_ms, end_ms } = *plan;
        let device_id = device_id.clone();
        let trace = &traces[trace_index as usize];
        let initial_wh = settings
            .faults
            .rollover_in_wh
            .map_or(0, |below| ENERGY_REGISTER_TOP_WH - below.min(ENERGY_REGISTER_TOP_WH));
        let module = SimulatedPzem::new(
            0x01,
            Measurement {
                voltage_decivolts: NOMINAL_VOLTAGE_DV,
                frequency_decihertz: NOMINAL_FREQUENCY_DHZ,
                energy_wh: initial_wh,
                ..Measurement::default()
            },
        );
        let config = PzemConfig { address: 0x01, ..PzemConfig::default() };
        let mut rng = SmallRng::seed_from_u64(settings.seed ^ (u64::from(index) << 20) ^ 0x5EED);
        let boot_id = format!("{:08x}", rng.random::<u32>());
        let identity =
            Identity::new(device_id, Some(&boot_id), Some(FW)).expect("hex and FW are valid labels");
        let mut meter = Self {
            index,
            conn,
            trace: trace_index,
            cursor: 0,
            pzem: Pzem::new(module, NoDelay, config),
            meter: new_meter(identity),
            rng,
            boot_ms: start_ms,
            measured_to_ms: trace.start_ms().min(start_ms),
            next_read_ms: (start_ms <= end_ms).then_some(start_ms),
            end_ms,
            sntp_at_ms: Some(start_ms + settings.faults.sntp_delay_ms),
            rebooting_until_ms: None,
            next_reboot: settings.faults.reboots_ms.partition_point(|t| *t < start_ms),
            next_reset: settings.faults.counter_resets_ms.partition_point(|t| *t < start_ms),
            next_outage: settings.faults.outages_ms.partition_point(|(_, end)| *end <= start_ms),
            outage_until_ms: None,
            register_offset_wh: initial_wh,
            last_energy_wh: initial_wh,
            connecting: false,
            lost_ack: None,
            next_message_id: 1,
            said_goodbye: false,
            scheduled_ms: None,
        };
        if trace.kind == TraceKind::Power {
            // Count what came before the switch-on, silently.
            meter.integrate(start_ms, trace);
        }
        meter
    }

    pub fn device_id(&self) -> &DeviceId {
        self.meter.identity().device_id()
    }

    pub fn meter(&self) -> &Meter<N> {
        &self.meter
    }

    fn uptime(&self, at_ms: i64) -> u64 {
        (at_ms - self.boot_ms).max(0) as u64
    }

    fn sim_ms(&self, uptime_ms: u64) -> i64 {
        self.boot_ms + uptime_ms as i64
    }

    /// The meter has made its last reading and delivered everything.
    pub fn done(&self) -> bool {
        self.said_goodbye
    }

    /// When this meter next has something to do, if ever.
    pub fn next_event_ms(&self, settings: &MeterSettings) -> Option<i64> {
        if let Some(until) = self.rebooting_until_ms {
            return Some(until);
        }
        if self.said_goodbye {
            return None;
        }
        let mut next: Option<i64> = None;
        let mut consider = |t: Option<i64>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        consider(self.next_read_ms);
        consider(self.sntp_at_ms);
        consider(self.outage_until_ms);
        consider(settings.faults.outages_ms.get(self.next_outage).map(|(from, _)| *from));
        if let Link::Down { retry_at_ms } = self.meter.link() {
            if !self.connecting {
                consider(Some(self.sim_ms(retry_at_ms)));
            }
        }
        next
    }

    /// Everything due at `at_ms`.
    pub fn step(&mut self, at_ms: i64, ctx: &mut Ctx<'_>) {
        if let Some(until) = self.rebooting_until_ms {
            if at_ms < until {
                return;
            }
            self.rebooting_until_ms = None;
            self.boot(until, ctx.settings);
        }
        let trace = &ctx.traces[self.trace as usize];
        self.integrate(at_ms, trace);

        let faults = &ctx.settings.faults;
        if let Some((from, until)) = faults.outages_ms.get(self.next_outage).copied() {
            if from <= at_ms {
                self.next_outage += 1;
                self.outage_until_ms = Some(until);
                ctx.counters.outages += 1;
                self.link_lost(at_ms, ctx);
            }
        }
        if self.outage_until_ms.is_some_and(|until| until <= at_ms) {
            self.outage_until_ms = None;
        }

        if self.sntp_at_ms.is_some_and(|t| t <= at_ms) {
            self.sntp_at_ms = None;
            self.meter.clock_set(self.uptime(at_ms), at_ms as u64);
        }

        if self.next_read_ms.is_some_and(|t| t <= at_ms) {
            self.read(at_ms, ctx);
            let faults = &ctx.settings.faults;
            if faults.counter_resets_ms.get(self.next_reset).is_some_and(|t| *t <= at_ms) {
                self.next_reset += 1;
                self.reset_counter(ctx);
            }
            if ctx.settings.faults.reboots_ms.get(self.next_reboot).is_some_and(|t| *t <= at_ms) {
                self.next_reboot += 1;
                // The reading just made leaves first (it is on its way), then the lights go out.
                self.connect_if_due(at_ms, ctx);
                self.flush(at_ms, ctx);
                self.reboot(at_ms, ctx);
                return;
            }
        }

        self.connect_if_due(at_ms, ctx);
        self.flush(at_ms, ctx);
        self.goodbye_if_done(ctx);
    }

    /// Lets the module measure up to `to_ms`.
    fn integrate(&mut self, to_ms: i64, trace: &Trace) {
        match trace.kind {
            TraceKind::Power => {
                while self.measured_to_ms < to_ms {
                    let at = self.measured_to_ms;
                    let (segment, until) = match trace.segment_at(at, self.cursor) {
                        Some(i) if trace.segments[i].end_ms > at => {
                            self.cursor = i;
                            (Some(i), trace.segments[i].end_ms)
                        }
                        found => {
                            // No data here: until the next segment starts.
                            let next = found.map_or(0, |i| i + 1);
                            let until = trace.segments.get(next).map_or(to_ms, |s| s.start_ms);
                            (None, until)
                        }
                    };
                    self.show(segment.map(|i| &trace.segments[i]));
                    let step = until.min(to_ms) - at;
                    self.pzem_module().advance(step as u64);
                    self.measured_to_ms = at + step;
                }
                // At a boundary the module shows what it just measured; at the very
                // start of the data, what it is about to.
                if to_ms == trace.start_ms() {
                    self.show(trace.segments.first());
                }
            }
            TraceKind::Registers => {
                self.measured_to_ms = to_ms;
                if let Some(i) = trace.segment_at(to_ms, self.cursor) {
                    self.cursor = i;
                    let row = trace.segments[i];
                    self.show(Some(&row));
                    let logged = row.energy_wh.unwrap_or(0);
                    let top = ENERGY_REGISTER_TOP_WH;
                    self.pzem_module().measurement.energy_wh =
                        ((u64::from(logged) + u64::from(self.register_offset_wh)) % u64::from(top)) as u32;
                }
            }
        }
    }

    fn pzem_module(&mut self) -> &mut SimulatedPzem {
        self.pzem.port_mut()
    }

    /// Sets the module's gauges to a segment's (or to no load).
    fn show(&mut self, segment: Option<&crate::source::Segment>) {
        let m = &mut self.pzem_module().measurement;
        match segment {
            Some(s) => {
                m.power_deciwatts = s.power_dw;
                m.voltage_decivolts = s.voltage_dv;
                m.current_milliamps = s.current_ma;
                m.power_factor_hundredths = s.power_factor_hundredths;
                m.frequency_decihertz = s.frequency_dhz;
                m.alarm = s.alarm;
            }
            None => {
                m.power_deciwatts = 0;
                m.current_milliamps = 0;
                m.power_factor_hundredths = 0;
            }
        }
    }

    fn read(&mut self, at_ms: i64, ctx: &mut Ctx<'_>) {
        let uptime = self.uptime(at_ms);
        match self.pzem.read_measurement() {
            Ok(m) => {
                if m.energy_wh < self.last_energy_wh
                    && self.last_energy_wh - m.energy_wh > ENERGY_REGISTER_TOP_WH / 2
                {
                    ctx.counters.rollovers += 1;
                }
                self.last_energy_wh = m.energy_wh;
                let dropped = self.meter.stats().dropped;
                // No radio on a host: no RSSI.
                self.meter.record(uptime, m, None);
                ctx.counters.dropped += u64::from(self.meter.stats().dropped - dropped);
                ctx.counters.readings += 1;
            }
            Err(error) => {
                tracing::warn!(device_id = %self.device_id(), %error, "PZEM read failed.");
                self.meter.read_failed();
                ctx.counters.read_failures += 1;
            }
        }
        let interval = ctx.settings.interval_ms as u64;
        let next = self.sim_ms(next_reading_ms(uptime, interval, self.meter.clock()));
        self.next_read_ms = if at_ms >= self.end_ms { None } else { Some(next.min(self.end_ms)) };
    }

    /// Reset energy (0x42) through the driver, right after a reading.
    fn reset_counter(&mut self, ctx: &mut Ctx<'_>) {
        match self.pzem.reset_energy() {
            Ok(()) => {
                ctx.counters.counter_resets += 1;
                self.last_energy_wh = 0;
                if ctx.traces[self.trace as usize].kind == TraceKind::Registers {
                    // The logged counter goes on; what the module shows starts at 0.
                    let logged = ctx.traces[self.trace as usize].segments[self.cursor].energy_wh.unwrap_or(0);
                    self.register_offset_wh =
                        (ENERGY_REGISTER_TOP_WH - logged % ENERGY_REGISTER_TOP_WH) % ENERGY_REGISTER_TOP_WH;
                }
            }
            Err(error) => tracing::warn!(device_id = %self.device_id(), %error, "Reset energy failed."),
        }
    }

    /// The lights go out: the outbox, the clock and `seq` are lost with the RAM; the PZEM
    /// shares the supply and comes back at 0.
    fn reboot(&mut self, at_ms: i64, ctx: &mut Ctx<'_>) {
        let stats = self.meter.stats();
        ctx.counters.lost_at_reboot += stats.queued as u64;
        ctx.counters.reboots += 1;
        if self.meter.link() == Link::Up || self.connecting {
            ctx.transport.drop_link(self.conn);
        }
        self.pzem_module().power_cycle();
        self.last_energy_wh = 0;
        if ctx.traces[self.trace as usize].kind == TraceKind::Registers {
            let logged = ctx.traces[self.trace as usize].segments[self.cursor].energy_wh.unwrap_or(0);
            self.register_offset_wh =
                (ENERGY_REGISTER_TOP_WH - logged % ENERGY_REGISTER_TOP_WH) % ENERGY_REGISTER_TOP_WH;
        }
        self.rebooting_until_ms = Some(at_ms + REBOOT_MS);
        self.next_read_ms = None;
        self.sntp_at_ms = None;
        self.connecting = false;
        self.lost_ack = None;
    }

    fn boot(&mut self, at_ms: i64, settings: &MeterSettings) {
        let boot_id = format!("{:08x}", self.rng.random::<u32>());
        let identity =
            Identity::new(self.device_id().clone(), Some(&boot_id), Some(FW)).expect("valid labels");
        self.meter = new_meter(identity);
        self.boot_ms = at_ms;
        self.sntp_at_ms = Some(at_ms + settings.faults.sntp_delay_ms);
        self.next_read_ms = (at_ms <= self.end_ms).then_some(at_ms);
    }

    fn connect_if_due(&mut self, at_ms: i64, ctx: &mut Ctx<'_>) {
        if self.connecting || !self.meter.should_connect(self.uptime(at_ms)) {
            return;
        }
        if self.outage_until_ms.is_some() {
            // No network: the attempt fails.
            let uptime = self.uptime(at_ms);
            self.meter.disconnected(uptime, &mut Jitter(&mut self.rng));
            return;
        }
        match ctx.transport.link(self.conn) {
            LinkState::Ready => self.link_up(at_ms, ctx),
            LinkState::Pending => self.connecting = true,
            LinkState::Unavailable => {
                let uptime = self.uptime(at_ms);
                self.meter.disconnected(uptime, &mut Jitter(&mut self.rng));
            }
        }
    }

    /// The link came up (at once on a pool, on CONNACK for a dedicated connection).
    pub fn link_up(&mut self, at_ms: i64, ctx: &mut Ctx<'_>) {
        if ctx.transport.is_dedicated() && !std::mem::take(&mut self.connecting) {
            // Not asked for (any more): a drop that follows closes it again.
            return;
        }
        if self.rebooting_until_ms.is_some() || self.outage_until_ms.is_some() {
            return;
        }
        let mut outlet = Outlet::new(self.index, self.conn, &mut self.next_message_id, ctx);
        match self.meter.connected(&mut outlet) {
            Ok(()) => {
                ctx.counters.births += 1;
                self.flush(at_ms, ctx);
                self.goodbye_if_done(ctx);
            }
            Err(_) => self.link_lost(at_ms, ctx),
        }
    }

    /// The link failed under the meter: back off and try again.
    pub fn link_lost(&mut self, at_ms: i64, ctx: &mut Ctx<'_>) {
        let was_up = self.meter.link() == Link::Up || self.connecting;
        self.connecting = false;
        self.lost_ack = None;
        if was_up {
            ctx.transport.drop_link(self.conn);
            let uptime = self.uptime(at_ms);
            self.meter.disconnected(uptime, &mut Jitter(&mut self.rng));
        }
    }

    /// The connection went down by itself (broker gone, or CONNACK never came).
    pub fn link_down(&mut self, at_ms: i64) {
        if self.meter.link() == Link::Up || self.connecting {
            self.connecting = false;
            self.lost_ack = None;
            let uptime = self.uptime(at_ms);
            self.meter.disconnected(uptime, &mut Jitter(&mut self.rng));
        }
    }

    /// The broker acknowledged message `id`.
    pub fn acknowledged(&mut self, id: u32, at_ms: i64, ctx: &mut Ctx<'_>) {
        if self.lost_ack == Some(id) {
            // The PUBACK never reaches the meter: its link times out and the reading is
            // sent again after reconnecting.
            ctx.counters.lost_acks += 1;
            self.link_lost(at_ms, ctx);
            return;
        }
        if self.meter.acknowledged(id) {
            ctx.counters.readings_delivered += 1;
        }
        self.flush(at_ms, ctx);
        self.goodbye_if_done(ctx);
    }

    fn flush(&mut self, at_ms: i64, ctx: &mut Ctx<'_>) {
        if self.meter.link() != Link::Up {
            return;
        }
        let synced = self.meter.clock().is_synced();
        let mut outlet = Outlet::new(self.index, self.conn, &mut self.next_message_id, ctx);
        let delivered_before = self.meter.stats().sent;
        let result = self.meter.flush(&mut outlet, usize::MAX);
        let telemetry = std::mem::take(&mut outlet.telemetry);
        let busy = outlet.busy;
        ctx.counters.readings_delivered += u64::from(self.meter.stats().sent - delivered_before);
        ctx.counters.telemetry_messages += telemetry.len() as u64;
        if !synced {
            ctx.counters.unsynced_published += telemetry.len() as u64;
        }
        for (id, payload) in telemetry {
            let faults = &ctx.settings.faults;
            if faults.duplicate_rate > 0.0 && id != 0 && self.rng.random_bool(faults.duplicate_rate) {
                self.lost_ack = Some(id);
            }
            if faults.malformed_rate > 0.0 && self.rng.random_bool(faults.malformed_rate) {
                let n: u64 = ctx.counters.malformed.values().sum();
                let kind = Malformed::nth(n);
                let bad = kind.apply(&payload);
                let topic = self.meter.topics().telemetry.clone();
                let tag = Tag { meter: self.index, id: 0 };
                let delivery = meter_core::mqtt::TELEMETRY_DELIVERY;
                if ctx.transport.send(self.conn, tag, &topic, &bad, delivery).is_ok() {
                    *ctx.counters.malformed.entry(kind).or_default() += 1;
                }
            }
        }
        match result {
            Ok(_) => {}
            Err(_) if busy => ctx.counters.busy += 1,
            Err(_) => self.link_lost(at_ms, ctx),
        }
    }

    fn goodbye_if_done(&mut self, ctx: &mut Ctx<'_>) {
        let stats = self.meter.stats();
        if self.said_goodbye
            || self.next_read_ms.is_some()
            || self.rebooting_until_ms.is_some()
            || stats.queued > 0
            || stats.in_flight
            || self.meter.link() != Link::Up
        {
            return;
        }
        let mut outlet = Outlet::new(self.index, self.conn, &mut self.next_message_id, ctx);
        if self.meter.goodbye(&mut outlet).is_ok() {
            ctx.counters.goodbyes += 1;
            self.said_goodbye = true;
        }
    }
}

fn new_meter<const N: usize>(identity: Identity) -> Meter<N> {
    Meter::new(identity, Backoff::new(BACKOFF_BASE_MS, BACKOFF_MAX_MS))
        .with_clock(Clock::with_floor(CLOCK_FLOOR_UNIX_S))
}

/// The meter's `Publisher`: one meter's share of the transport.
struct Outlet<'a, 'c> {
    meter: u32,
    conn: u32,
    next_id: &'a mut u32,
    ctx: &'a mut Ctx<'c>,
    /// Telemetry handed over in this flush: (message id, payload).
    telemetry: Vec<(u32, Vec<u8>)>,
    busy: bool,
}

impl<'a, 'c> Outlet<'a, 'c> {
    fn new(meter: u32, conn: u32, next_id: &'a mut u32, ctx: &'a mut Ctx<'c>) -> Self {
        Self { meter, conn, next_id, ctx, telemetry: Vec::new(), busy: false }
    }
}

impl Publisher for Outlet<'_, '_> {
    type Error = SendError;

    fn publish(&mut self, topic: &str, payload: &[u8], delivery: Delivery) -> Result<Handover, SendError> {
        let id = *self.next_id;
        *self.next_id = self.next_id.wrapping_add(1).max(1);
        let tag = Tag { meter: self.meter, id };
        let handover =
            self.ctx.transport.send(self.conn, tag, topic, payload, delivery).inspect_err(|e| {
                self.busy = *e == SendError::Busy;
            })?;
        if topic.ends_with("/telemetry") {
            self.telemetry.push((id, payload.to_vec()));
        }
        Ok(handover)
    }
}
