//! `meter-sim`: replays a real data set as MQTT telemetry. See the crate README.
//!
//! Exit status: 0 when every scheduled reading was sent and confirmed; 1 on an error
//! (bad data, broker unreachable, ...); 3 when some publishes were not acknowledged
//! within the ack timeout; 130 when interrupted.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use jiff::{civil, tz::TimeZone, Timestamp};
use meter_simulator::counter::check_points_per_slot;
use meter_simulator::publish::MqttConfig;
use meter_simulator::{Config, Output, Source};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

const EXIT_UNCONFIRMED: u8 = 3;
const EXIT_INTERRUPTED: u8 = 130;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum SourceArg {
    /// Low Carbon London half-hourly CSV (Kaggle re-cut or raw Datastore layout).
    London,
}

/// Replays a real meter data set as smartmeter telemetry over MQTT.
#[derive(Debug, Parser)]
#[command(name = "meter-sim", version)]
struct Args {
    /// Data file(s); a meter may span several files.
    #[arg(long = "input", short = 'i', env = "SMARTMETER_SIM_INPUT", value_delimiter = ',', required = true)]
    inputs: Vec<PathBuf>,

    /// Format of the input files.
    #[arg(long, env = "SMARTMETER_SIM_SOURCE", value_enum, default_value = "london")]
    source: SourceArg,

    /// Readings per half hour, evenly spaced, the counter interpolated linearly (a divisor of 1800).
    #[arg(long, env = "SMARTMETER_SIM_POINTS_PER_SLOT", default_value_t = 1, value_parser = parse_points)]
    points_per_slot: u32,

    /// Simulated time runs this many times faster than wall time; 0 = as fast as possible.
    #[arg(long, env = "SMARTMETER_SIM_SPEEDUP", default_value_t = 0.0, value_parser = parse_speedup)]
    speedup: f64,

    /// Replay only the first N meters (ordered by device id).
    #[arg(long, env = "SMARTMETER_SIM_LIMIT_METERS")]
    limit_meters: Option<usize>,

    /// Only readings at or after this time (RFC 3339, or a UTC date/date-time such as 2013-01-15).
    #[arg(long, env = "SMARTMETER_SIM_FROM", value_parser = parse_time)]
    from: Option<Timestamp>,

    /// Only readings at or before this time (same forms as --from).
    #[arg(long, env = "SMARTMETER_SIM_TO", value_parser = parse_time)]
    to: Option<Timestamp>,

    /// Write the payloads to --out, one JSON per line, instead of publishing.
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

    /// MQTT client id (default: meter-sim-<pid>).
    #[arg(long, env = "SMARTMETER_SIM_CLIENT_ID")]
    client_id: Option<String>,

    /// Publishes in flight (sent, not yet acknowledged) at most.
    #[arg(long, env = "SMARTMETER_SIM_MAX_INFLIGHT", default_value_t = 100, value_parser = clap::value_parser!(u16).range(1..))]
    max_inflight: u16,

    /// Seconds to wait for the broker's CONNACK.
    #[arg(long, env = "SMARTMETER_SIM_CONNECT_TIMEOUT_SECS", default_value_t = 10)]
    connect_timeout_secs: u64,

    /// Seconds to wait at the end for outstanding PubAcks.
    #[arg(long, env = "SMARTMETER_SIM_ACK_TIMEOUT_SECS", default_value_t = 30)]
    ack_timeout_secs: u64,

    /// Do not draw a progress bar.
    #[arg(long, env = "SMARTMETER_SIM_NO_PROGRESS")]
    no_progress: bool,
}

fn parse_points(text: &str) -> Result<u32, String> {
    let points: u32 = text.parse().map_err(|e| format!("{e}"))?;
    check_points_per_slot(points).map_err(|e| e.to_string())
}

fn parse_speedup(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(x) if x.is_finite() && x >= 0.0 => Ok(x),
        _ => Err(format!("{text:?} is not a finite number >= 0")),
    }
}

fn parse_time(text: &str) -> Result<Timestamp, String> {
    if let Ok(t) = text.parse::<Timestamp>() {
        return Ok(t);
    }
    let civil = text
        .parse::<civil::DateTime>()
        .or_else(|_| text.parse::<civil::Date>().map(|d| d.to_datetime(civil::Time::midnight())))
        .map_err(|_| format!("{text:?} is neither RFC 3339 nor a date or date-time (read as UTC)"))?;
    civil.to_zoned(TimeZone::UTC).map(|z| z.timestamp()).map_err(|e| e.to_string())
}

impl Args {
    fn into_config(self) -> anyhow::Result<Config> {
        let output = if self.dry_run {
            Output::DryRun(self.out.context("--dry-run needs --out FILE")?)
        } else {
            Output::Mqtt(MqttConfig {
                host: self.mqtt_host,
                port: self.mqtt_port,
                username: self.mqtt_user,
                password: self.mqtt_password,
                client_id: self.client_id.unwrap_or_else(|| format!("meter-sim-{}", std::process::id())),
                max_inflight: self.max_inflight,
                connect_timeout: Duration::from_secs(self.connect_timeout_secs),
                keep_alive: Duration::from_secs(30),
            })
        };
        Ok(Config {
            source: match self.source {
                SourceArg::London => Source::London,
            },
            inputs: self.inputs,
            points_per_slot: self.points_per_slot,
            speedup: self.speedup,
            limit_meters: self.limit_meters,
            from: self.from,
            to: self.to,
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
            "error: {} of {} readings were published and {} confirmed",
            report.published, report.scheduled, report.confirmed
        );
        ExitCode::from(EXIT_UNCONFIRMED)
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

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
    fn times_parse_as_utc() {
        let expected: Timestamp = "2013-01-15T00:00:00Z".parse().unwrap();
        assert_eq!(parse_time("2013-01-15").unwrap(), expected);
        assert_eq!(parse_time("2013-01-15T00:00:00Z").unwrap(), expected);
        assert_eq!(parse_time("2013-01-15 00:00:00").unwrap(), expected);
        assert_eq!(parse_time("2013-01-15T01:00:00+01:00").unwrap(), expected);
        assert!(parse_time("yesterday").is_err());
    }
}
