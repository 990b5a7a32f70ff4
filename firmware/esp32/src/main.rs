//! ESP32 smart meter: a PZEM-004T v3.0 on UART2; Wi-Fi, SNTP and MQTT from ESP-IDF
//! (esp-idf-svc). Everything that can be tested on a host is meter-core: the Modbus
//! driver, the payload, store and forward, the back-off. This file only wires it up.
//!
//! One loop, never blocking for long (a PZEM read is at most ~0.6 s with retries):
//! read the meter on schedule → set the clock when SNTP answers → follow the MQTT
//! session's events → start a connection attempt when the back-off allows → publish
//! queued readings oldest first.

mod config;
mod mqtt;
mod uart;

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::anyhow;
use esp_idf_svc::eventloop::EspSystemEventLoop;
use esp_idf_svc::hal::delay::{FreeRtos, TICK_RATE_HZ};
use esp_idf_svc::hal::gpio::AnyIOPin;
use esp_idf_svc::hal::peripherals::Peripherals;
use esp_idf_svc::hal::uart::{config::Config as UartConfig, UartDriver};
use esp_idf_svc::hal::units::Hertz;
use esp_idf_svc::log::EspLogger;
use esp_idf_svc::nvs::EspDefaultNvsPartition;
use esp_idf_svc::sntp::{EspSntp, SntpConf, SyncStatus};
use esp_idf_svc::wifi::{AuthMethod, ClientConfiguration, Configuration, EspWifi};
use log::{debug, info, warn};
use meter_core::backoff::Backoff;
use meter_core::meter::{Link, Sample};
use meter_core::schedule::next_reading_ms;
use meter_core::{pzem, DeviceId, Identity, Meter, Pzem};

use crate::mqtt::Session;
use crate::uart::PzemPort;

const FW: &str = concat!("meter-esp32/", env!("CARGO_PKG_VERSION"));
/// Readings kept while offline: 2 h at the default 10 s interval, the newest kept. The
/// outbox lives on the main task's stack (CONFIG_ESP_MAIN_TASK_STACK_SIZE).
const OUTBOX_CAPACITY: usize = 720;
const _: () = assert!(
    OUTBOX_CAPACITY * core::mem::size_of::<Sample>() <= 40 * 1024,
    "the outbox outgrows the main task's stack: raise CONFIG_ESP_MAIN_TASK_STACK_SIZE too"
);
const BACKOFF_BASE_MS: u32 = 1_000;
const BACKOFF_MAX_MS: u32 = 300_000;
/// A connection attempt (Wi-Fi join, DHCP, MQTT CONNACK) that takes longer has failed.
const CONNECT_TIMEOUT_MS: u64 = 30_000;
/// Readings handed to the client per loop turn (one is in flight at a time anyway).
const FLUSH_BUDGET: usize = 8;
const LOOP_PERIOD_MS: u32 = 50;
const STATS_EVERY_MS: u64 = 60_000;

type Driver<'d> = Pzem<PzemPort<'d>, FreeRtos>;

fn main() -> anyhow::Result<()> {
    esp_idf_svc::sys::link_patches();
    EspLogger::initialize_default();
    info!("{FW} starting as {}", config::DEVICE_ID);

    let peripherals = Peripherals::take()?;
    let sys_loop = EspSystemEventLoop::take()?;
    let nvs = EspDefaultNvsPartition::take()?;

    // PZEM-004T v3.0: 9600 baud 8N1. ESP32 GPIO17 (TX2) → PZEM RX, GPIO16 (RX2) ← PZEM TX.
    let uart = UartDriver::new(
        peripherals.uart2,
        peripherals.pins.gpio17,
        peripherals.pins.gpio16,
        Option::<AnyIOPin>::None,
        Option::<AnyIOPin>::None,
        &UartConfig::new().baudrate(Hertz(9_600)),
    )?;
    let pzem_config = pzem::Config {
        address: config::PZEM_ADDRESS,
        // Poll the UART once per FreeRTOS tick while a reply is awaited.
        poll_interval_us: 1_000_000 / TICK_RATE_HZ,
        ..pzem::Config::default()
    };
    let mut pzem = Pzem::new(PzemPort(uart), FreeRtos, pzem_config);

    let mut wifi = EspWifi::new(peripherals.modem, sys_loop, Some(nvs))?;
    wifi.set_configuration(&Configuration::Client(ClientConfiguration {
        ssid: config::WIFI_SSID.try_into().map_err(|_| anyhow!("Wi-Fi SSID too long"))?,
        password: config::WIFI_PASSWORD.try_into().map_err(|_| anyhow!("Wi-Fi password too long"))?,
        auth_method: if config::WIFI_PASSWORD.is_empty() {
            AuthMethod::None
        } else {
            AuthMethod::WPA2Personal
        },
        ..Default::default()
    }))?;
    wifi.start()?;

    let mut sntp_conf = SntpConf::default();
    sntp_conf.servers[0] = config::SNTP_SERVER;
    let sntp = EspSntp::new(&sntp_conf)?;

    // The radio is on, so the hardware RNG is truly random from here on.
    let boot_id = format!("{:08x}", hardware_random());
    let identity = Identity::new(DeviceId::parse(config::DEVICE_ID)?, Some(&boot_id), Some(FW))?;
    let mut meter: Meter<OUTBOX_CAPACITY> = Meter::new(identity, Backoff::new(BACKOFF_BASE_MS, BACKOFF_MAX_MS));
    info!("boot_id {boot_id}; a reading every {} s", config::PUBLISH_INTERVAL_MS / 1_000);

    run(&mut meter, &mut pzem, &mut wifi, &sntp)
}

/// A connection attempt under way.
#[derive(Debug, Clone, Copy)]
struct Attempt {
    started_ms: u64,
    wifi_requested: bool,
}

fn run<const N: usize>(
    meter: &mut Meter<N>,
    pzem: &mut Driver<'_>,
    wifi: &mut EspWifi<'_>,
    sntp: &EspSntp<'_>,
) -> anyhow::Result<()> {
    let boot = Instant::now();
    let uptime_ms = || boot.elapsed().as_millis() as u64;
    let mut session: Option<Session> = None;
    let mut attempt: Option<Attempt> = None;
    let mut next_read_at_ms = 0;
    let mut next_stats_ms = STATS_EVERY_MS;

    loop {
        let now = uptime_ms();

        if now >= next_read_at_ms {
            // The next one on the wall-clock grid once SNTP has answered (so readings
            // fall on hour boundaries), every interval since boot before that.
            next_read_at_ms = next_reading_ms(now, config::PUBLISH_INTERVAL_MS, meter.clock());
            match pzem.read_measurement() {
                Ok(m) => {
                    let seq = meter.record(now, m, rssi(wifi));
                    debug!("reading {seq}: {m:?}");
                }
                Err(e) => {
                    warn!("PZEM read failed: {e}");
                    meter.read_failed();
                }
            }
        }

        // Completed once per SNTP sync (then it reads Reset again): each sync refreshes
        // the uptime-to-wall-clock offset.
        if sntp.get_sync_status() == SyncStatus::Completed {
            if let Ok(since_epoch) = SystemTime::now().duration_since(UNIX_EPOCH) {
                let first = !meter.clock().is_synced();
                if meter.clock_set(uptime_ms(), since_epoch.as_millis() as u64) && first {
                    info!("Clock set by SNTP.");
                }
            }
        }

        while let Some(event) = session.as_ref().and_then(Session::next_event) {
            match event {
                mqtt::Event::Connected => {
                    let birth = match session.as_mut() {
                        Some(s) => meter.connected(s),
                        None => break,
                    };
                    match birth {
                        Ok(()) => {
                            attempt = None;
                            info!("Online; {} readings queued.", meter.stats().queued);
                        }
                        Err(e) => link_lost(meter, &mut session, &mut attempt, now, &format!("birth: {e}")),
                    }
                }
                mqtt::Event::Disconnected => {
                    link_lost(meter, &mut session, &mut attempt, now, "MQTT disconnected")
                }
                mqtt::Event::Acknowledged(id) => {
                    meter.acknowledged(id);
                }
            }
        }

        if meter.link() == Link::Up && !wifi.is_up().unwrap_or(false) {
            link_lost(meter, &mut session, &mut attempt, now, "Wi-Fi lost");
        }

        if attempt.is_none() && session.is_none() && meter.should_connect(now) {
            attempt = Some(Attempt { started_ms: now, wifi_requested: false });
        }
        if let Some(a) = attempt {
            if now.saturating_sub(a.started_ms) > CONNECT_TIMEOUT_MS {
                link_lost(meter, &mut session, &mut attempt, now, "connection attempt timed out");
            } else if !wifi.is_connected().unwrap_or(false) {
                if !a.wifi_requested {
                    attempt = Some(Attempt { wifi_requested: true, ..a });
                    if let Err(e) = wifi.connect() {
                        warn!("Wi-Fi connect: {e}");
                    }
                }
            } else if session.is_none() && wifi.is_up().unwrap_or(false) {
                match Session::start(&meter.last_will()) {
                    Ok(s) => session = Some(s),
                    Err(e) => link_lost(meter, &mut session, &mut attempt, now, &format!("MQTT client: {e}")),
                }
            }
        }

        let flushed = match session.as_mut() {
            Some(s) if meter.link() == Link::Up => meter.flush(s, FLUSH_BUDGET).map(drop),
            _ => Ok(()),
        };
        if let Err(e) = flushed {
            link_lost(meter, &mut session, &mut attempt, now, &format!("publish: {e}"));
        }

        if now >= next_stats_ms {
            next_stats_ms = now + STATS_EVERY_MS;
            let s = meter.stats();
            info!(
                "queued {} dropped {} read_failures {} sent {} in_flight {} link {:?} clock_synced {}",
                s.queued, s.dropped, s.read_failures, s.sent, s.in_flight, s.link, s.clock_synced
            );
        }

        FreeRtos::delay_ms(LOOP_PERIOD_MS);
    }
}

/// Ends the session (dropping the client) and schedules the next attempt.
fn link_lost<const N: usize>(
    meter: &mut Meter<N>,
    session: &mut Option<Session>,
    attempt: &mut Option<Attempt>,
    now: u64,
    why: &str,
) {
    *session = None;
    *attempt = None;
    let delay_ms = meter.disconnected(now, &mut hardware_random);
    warn!("{why}; next connection attempt in {delay_ms} ms.");
}

/// Signal strength now, if connected.
fn rssi(wifi: &EspWifi<'_>) -> Option<i8> {
    if !wifi.is_connected().unwrap_or(false) {
        return None;
    }
    wifi.get_rssi().ok().map(|dbm| dbm.clamp(i32::from(i8::MIN), 0) as i8)
}

#[allow(unsafe_code)]
fn hardware_random() -> u32 {
    // SAFETY: `esp_random` takes nothing and has no preconditions: it reads the RNG.
    unsafe { esp_idf_svc::sys::esp_random() }
}
