//! `meter-sim`: simulated smart meters (the firmware's core on a simulated PZEM-004T)
//! replaying real data as MQTT telemetry. See the crate README.
//!
//! Exit status: 0 when every meter delivered every reading; 1 on an error (bad data,
//! broker unreachable, ...); 3 when some readings were not delivered (acknowledgements
//! overdue, outbox overflow does not count: it is reported); 130 when interrupted.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use jiff::{SignedDuration, Timestamp};
use meter_simulator::faults::{parse_at, parse_outage, parse_rate, At, FaultConfig};
use meter_simulator::fleet::OUTBOX_CAPACITIES;
use meter_simulator::source::SourceKind;
use meter_simulator::transport::{Connections, MqttSettings};
use meter_simulator::{parse_time, Config, Output, StartAt};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

const EXIT_UNDELIVERED: u8 = 3;
const EXIT_INTERRUPTED: u8 = 130;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum SourceArg {
    /// Recognise the format by the file's header.
    Auto,
    /// Low Carbon London half-hourly CSV (Kaggle re-cut or raw Datastore layout).
    London,
    /// UCI household power, one-minute rows (local time of Paris).
    Uci,
    /// A PZEM-004T log (datetime,port,voltage_v,...), one meter per port.
    PzemLog,
    /// A daily load profile: local_time,power_w rows; needs --from and --to.
    Profile,
}

/// Simulated smart meters replaying real data as smartmeter telemetry over MQTT.
#[derive(Debug, Parser)]
#[command(name = "meter-sim", version)]
struct Args {
    /// Data file(s); a meter may span several files.
    #[arg(long = "input", short = 'i', env = "SMARTMETER_SIM_INPUT", value_delimiter = ',', required = true)]
    inputs: Vec<PathBuf>,

    /// Format of the input files.
    #[arg(long, env = "SMARTMETER_SIM_SOURCE", value_enum, default_value = "auto")]
    source: SourceArg,

    /// Time between readings (e.g. 30m, 15m, 10s); default: the data's own step.
    #[arg(long, env = "SMARTMETER_SIM_INTERVAL", value_parser = parse_interval)]
    interval: Option<Duration>,

    /// London only: readings per half hour (a divisor of 1800); same as --interval 30m/N.
    #[arg(long, env = "SMARTMETER_SIM_POINTS_PER_SLOT", value_parser = parse_points)]
    points_per_slot: Option<u32>,

    /// Data time runs this many times faster than wall time; 0 = as fast as the broker
    /// acknowledges (time moves on once everything sent is acknowledged).
    #[arg(long, env = "SMARTMETER_SIM_SPEEDUP", default_value_t = 0.0, value_parser = parse_speedup)]
    speedup: f64,

    /// Simulate this many meters: the data's supplies repeated in turn (ids get -r1, -r2, ...).
    #[arg(long, env = "SMARTMETER_SIM_METERS")]
    meters: Option<usize>,

    /// Use only the first N supplies of the data (ordered by name).
    #[arg(long, env = "SMARTMETER_SIM_LIMIT_METERS")]
    limit_meters: Option<usize>,

    /// Use only these supplies of the data, by name (e.g. MAC000002,MAC000010 or ttyUSB0).
    #[arg(long, env = "SMARTMETER_SIM_SELECT", value_delimiter = ',')]
    select: Vec<String>,

    /// Put this before every device id (e.g. a test's own prefix).
    #[arg(long, env = "SMARTMETER_SIM_DEVICE_PREFIX", default_value = "")]
    device_prefix: String,

    /// Only readings at or after this time (RFC 3339, or a UTC date/date-time), in the
    /// data's own time. The counter still holds everything before it.
    #[arg(long, env = "SMARTMETER_SIM_FROM", value_parser = parse_time)]
    from: Option<Timestamp>,

    /// Only readings at or before this time (same forms as --from).
    #[arg(long, env = "SMARTMETER_SIM_TO", value_parser = parse_time)]
    to: Option<Timestamp>,

    /// Move the data in time so it starts here (`now`, or a time); with --speedup 1 the
    /// meters run live.
    #[arg(long, env = "SMARTMETER_SIM_START_AT", value_parser = parse_start_at)]
    start_at: Option<StartAt>,

    /// IANA zone of the meters, instead of the data set's (profile default: UTC).
    #[arg(long, env = "SMARTMETER_SIM_TIME_ZONE")]
    time_zone: Option<String>,

    /// Readings each meter keeps while offline (the oldest is dropped, and reported, when full).
    #[arg(long, env = "SMARTMETER_SIM_OUTBOX", default_value_t = 720, value_parser = parse_outbox)]
    outbox: usize,

    /// Seed of the meters' random numbers (boot ids, back-off jitter, fault draws).
    #[arg(long, env = "SMARTMETER_SIM_SEED", default_value_t = 1)]
    seed: u64,

    /// FAULT: reboot reporting 0, right after the reading at or after this time
    /// (a time, or +<duration> from the start). Repeatable.
    #[arg(long, env = "SMARTMETER_SIM_REBOOT_AT", value_delimiter = ',', value_parser = parse_at)]
    reboot_at: Vec<At>,

    /// FAULT: reset the energy counter (Modbus 0x42) right after the reading at or after
    /// this time. Repeatable.
    #[arg(long, env = "SMARTMETER_SIM_COUNTER_RESET_AT", value_delimiter = ',', value_parser = parse_at)]
    counter_reset_at: Vec<At>,

    /// FAULT: every counter starts this many kWh below the register top (9999.99 kWh),
    /// so it rolls over to 0 after that much energy.
    #[arg(long, env = "SMARTMETER_SIM_ROLLOVER_IN_KWH", value_parser = parse_rollover)]
    rollover_in_kwh: Option<u32>,

    /// FAULT: probability that a reading's PUBACK is lost, so the meter sends it again
    /// after reconnecting (an MQTT redelivery duplicate).
    #[arg(long, env = "SMARTMETER_SIM_DUPLICATE_RATE", default_value_t = 0.0, value_parser = parse_rate)]
    duplicate_rate: f64,

    /// FAULT: the link is down from <time>/<duration> (e.g. +2d/6h): readings wait in the
    /// outbox, then go out oldest first. Repeatable.
    #[arg(long, env = "SMARTMETER_SIM_OUTAGE", value_delimiter = ',', value_parser = parse_outage)]
    outage: Vec<(At, SignedDuration)>,

    /// FAULT: SNTP answers this long after each boot (e.g. 90s); readings published
    /// before carry an unsynced timestamp.
    #[arg(long, env = "SMARTMETER_SIM_SNTP_DELAY", value_parser = parse_signed)]
    sntp_delay: Option<SignedDuration>,

    /// FAULT: probability that a malformed payload follows a reading on the meter's topic.
    #[arg(long, env = "SMARTMETER_SIM_MALFORMED_RATE", default_value_t = 0.0, value_parser = parse_rate)]
    malformed_rate: f64,

    /// Write the telemetry payloads to --out, one JSON per line, instead of publishing.
    #[arg(long, env = "SMARTMETER_SIM_DRY_RUN", requires = "out")]
    dry_run: bool,

    /// Output file of a dry run.
    #[arg(long, env = "SMARTMETER_SIM_OUT")]
    out: Option<PathBuf>,

    #[arg(long, env = "SMARTMETER_MQTT_HOST", default_value = "127.0.0.1")]
    mqtt_host: String,

    #[arg(long, env = "SMARTMETER_MQTT_PORT", default_value_t = 1883)]
    mqtt_port: u16,

    /// The fleet simulator's broker account.
    #[arg(long, env = "SMARTMETER_MQTT_SIMULATOR_USER")]
    mqtt_user: Option<String>,

    #[arg(long, env = "SMARTMETER_MQTT_SIMULATOR_PASSWORD", hide_env_values = true)]
    mqtt_password: Option<String>,

    /// MQTT connections: a number (a pool shared by the meters) or `per-meter` (one each,
    /// with the meter's last will; up to a few thousand meters).
    #[arg(long, env = "SMARTMETER_SIM_MQTT_CONNECTIONS", default_value = "1", value_parser = parse_connections)]
    mqtt_connections: Connections,

    /// MQTT client id prefix (default meter-sim-<pid>): pool connections are
    /// <prefix>-<n>, per-meter ones <prefix><device id>.
    #[arg(long, env = "SMARTMETER_SIM_CLIENT_ID")]
    client_id: Option<String>,

    /// Publishes in flight (sent, not yet acknowledged) per pool connection, at most.
    #[arg(long, env = "SMARTMETER_SIM_MAX_INFLIGHT", default_value_t = 1_000, value_parser = clap::value_parser!(u16).range(1..))]
    max_inflight: u16,

    /// Seconds to wait for the broker's CONNACK.
    #[arg(long, env = "SMARTMETER_SIM_CONNECT_TIMEOUT_SECS", default_value_t = 10)]
    connect_timeout_secs: u64,

    /// Seconds to wait for overdue PubAcks (at the end, and before moving time on).
    #[arg(long, env = "SMARTMETER_SIM_ACK_TIMEOUT_SECS", default_value_t = 30)]
    ack_timeout_secs: u64,

    /// Do not draw a progress bar.
    #[arg(long, env = "SMARTMETER_SIM_NO_PROGRESS")]
    no_progress: bool,
}

fn parse_points(text: &str) -> Result<u32, String> {
    let points: u32 = text.parse().map_err(|e| format!("{e}"))?;
    meter_simulator::counter::check_points_per_slot(points).map_err(|e| e.to_string())
}

fn parse_speedup(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(x) if x.is_finite() && x >= 0.0 => Ok(x),
        _ => Err(format!("{text:?} is not a finite number >= 0")),
    }
}

fn parse_signed(text: &str) -> Result<SignedDuration, String> {
    meter_simulator::faults::parse_duration(text)
}

fn parse_interval(text: &str) -> Result<Duration, String> {
    let d = parse_signed(text)?;
    let d = Duration::try_from(d).map_err(|e| e.to_string())?;
    if d < Duration::from_secs(1) || d.subsec_millis() != 0 {
        return Err(format!("{text:?}: the interval is a whole number of seconds, at least 1 s"));
    }
    Ok(d)
}

fn parse_outbox(text: &str) -> Result<usize, String> {
    let n: usize = text.parse().map_err(|e| format!("{e}"))?;
    if OUTBOX_CAPACITIES.contains(&n) {
        Ok(n)
    } else {
        Err(format!("{n} is not one of {OUTBOX_CAPACITIES:?} (the outbox is a fixed array, as on the ESP32)"))
    }
}

fn parse_rollover(text: &str) -> Result<u32, String> {
    let kwh: f64 = text.parse().map_err(|e| format!("{text:?}: {e}"))?;
    if !(0.001..=9_999.99).contains(&kwh) {
        return Err(format!("{text:?}: between 0.001 and 9999.99 kWh"));
    }
    Ok((kwh * 1_000.0).round() as u32)
}

fn parse_start_at(text: &str) -> Result<StartAt, String> {
    if text == "now" {
        return Ok(StartAt::Now);
    }
    parse_time(text).map(StartAt::At)
}

fn parse_connections(text: &str) -> Result<Connections, String> {
    if text == "per-meter" {
        return Ok(Connections::Dedicated);
    }
    match text.parse::<u32>() {
        Ok(n) if n >= 1 => Ok(Connections::Pool(n)),
        _ => Err(format!("{text:?}: a number of connections (>= 1) or `per-meter`")),
    }
}

impl Args {
    fn into_config(self) -> anyhow::Result<Config> {
        let output = if self.dry_run {
            Output::DryRun(self.out.context("--dry-run needs --out FILE")?)
        } else {
            Output::Mqtt {
                settings: MqttSettings {
                    host: self.mqtt_host,
                    port: self.mqtt_port,
                    username: self.mqtt_user,
                    password: self.mqtt_password,
                    client_id: self.client_id.unwrap_or_else(|| format!("meter-sim-{}", std::process::id())),
                    max_inflight: self.max_inflight,
                    connect_timeout: Duration::from_secs(self.connect_timeout_secs),
                    keep_alive: Duration::from_secs(30),
                },
                connections: self.mqtt_connections,
            }
        };
        Ok(Config {
            source: match self.source {
                SourceArg::Auto => None,
                SourceArg::London => Some(SourceKind::London),
                SourceArg::Uci => Some(SourceKind::Uci),
                SourceArg::PzemLog => Some(SourceKind::PzemLog),
                SourceArg::Profile => Some(SourceKind::Profile),
            },
            inputs: self.inputs,
            interval: self.interval,
            points_per_slot: self.points_per_slot,
            speedup: self.speedup,
            meters: self.meters,
            limit_meters: self.limit_meters,
            select: self.select,
            device_prefix: self.device_prefix,
            from: self.from,
            to: self.to,
            start_at: self.start_at,
            time_zone: self.time_zone,
            outbox: self.outbox,
            faults: FaultConfig {
                reboots: self.reboot_at,
                counter_resets: self.counter_reset_at,
                rollover_in_wh: self.rollover_in_kwh,
                duplicate_rate: self.duplicate_rate,
                outages: self.outage,
                sntp_delay: self.sntp_delay,
                malformed_rate: self.malformed_rate,
            },
            seed: self.seed,
            output,
            ack_timeout: Duration::from_secs(self.ack_timeout_secs),
            progress: !self.no_progress,
        })
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let filter =
        EnvFilter::try_from_env("SMARTMETER_LOG").unwrap_or_else(|_| EnvFilter::new("info,rumqttc=warn"));
    tracing_subscriber::fmt().with_env_filter(filter).with_target(false).with_writer(std::io::stderr).init();

    let config = Args::parse().into_config()?;
    let cancel = CancellationToken::new();
    let on_signal = cancel.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            tracing::info!("Interrupted; waiting for outstanding acknowledgements.");
            on_signal.cancel();
        }
    });

    let report = meter_simulator::run(&config, cancel).await?;
    print!("{report}");
    Ok(if report.interrupted {
        ExitCode::from(EXIT_INTERRUPTED)
    } else if !report.complete() {
        eprintln!(
            "error: {} meter(s) did not deliver every reading ({} published of {} measured)",
            report.unfinished,
            report.published(),
            report.counters.readings
        );
        ExitCode::from(EXIT_UNDELIVERED)
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_is_consistent_and_every_flag_has_an_env() {
        Args::command().debug_assert();
        for arg in Args::command().get_arguments() {
            let id = arg.get_id().as_str();
            if matches!(id, "help" | "version") {
                continue;
            }
            let env = arg.get_env().unwrap_or_else(|| panic!("--{id} has no env"));
            assert!(env.to_string_lossy().starts_with("SMARTMETER_"), "--{id}");
        }
    }

    #[test]
    fn flags_parse() {
        assert_eq!(parse_connections("per-meter"), Ok(Connections::Dedicated));
        assert_eq!(parse_connections("4"), Ok(Connections::Pool(4)));
        assert!(parse_connections("0").is_err());
        assert_eq!(parse_interval("15m"), Ok(Duration::from_secs(900)));
        assert!(parse_interval("500ms").is_err());
        assert_eq!(parse_rollover("0.5"), Ok(500));
        assert!(parse_outbox("100").is_err());
        assert_eq!(parse_start_at("now"), Ok(StartAt::Now));
        let args = Args::try_parse_from([
            "meter-sim",
            "--input",
            "x.csv",
            "--reboot-at",
            "+36h",
            "--outage",
            "2013-01-10T06:00:00Z/6h",
            "--sntp-delay",
            "90s",
        ])
        .unwrap();
        let config = args.into_config().unwrap();
        assert_eq!(config.faults.reboots, [At::Offset(SignedDuration::from_hours(36))]);
        assert_eq!(config.faults.outages.len(), 1);
        assert_eq!(config.faults.sntp_delay, Some(SignedDuration::from_secs(90)));
    }
}
