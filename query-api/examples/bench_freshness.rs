//! Freshness probe of `infra/bench.sh`: how long from a reading published over MQTT to
//! its hourly rollup visible through GraphQL.
//!
//! ```text
//! . infra/env.sh
//! cargo run --release -p smartmeter-query-api --example bench_freshness -- \
//!     --graphql-url http://127.0.0.1:8080/graphql --device-id probe-1 --duration-secs 60
//! ```
//!
//! One probe meter replays household MAC000002 of the Low Carbon London January 2013
//! file (`shared/data`), one reading a minute of event time (the simulator's counter
//! code, 30 points per half hour). Readings go one at a time: publish (QoS 1), then ask
//! `hourlyEnergy` for the local hour the reading ends in, every `--poll-ms`, until that
//! hour's energy equals what the counter says it must be (counter now minus counter at
//! the hour's start, exact to the mWh); the time from just before the publish to the
//! answer that shows it is one sample. Then `--gap-ms` of rest and the next reading.
//!
//! The probe's hours are London hours; in January London is on UTC, so the processor
//! must bucket unknown meters in `Europe/London` or `UTC` (the bench sets the former).
//! Prints one JSON line: samples, p50/p90/p99/max in ms, timeouts.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use jiff::Timestamp;
use meter_simulator::counter::{self, MeterReading};
use meter_simulator::london;
use meter_simulator::payload::Telemetry;
use meter_simulator::publish::{MqttConfig, MqttPublisher};
use serde_json::json;
use smartmeter_core::telemetry::telemetry_topic;
use smartmeter_core::DeviceId;

const LONDON_JANUARY: &str = "lcl_halfhourly_2013-01_10households.csv";
const HOUSEHOLD: &str = "MAC000002";
const QUERY: &str = "query HourlyEnergy($deviceId: String!, $from: DateTime!, $to: DateTime!) {
  hourlyEnergy(deviceId: $deviceId, from: $from, to: $to) { bucketStart energyKwh }
}";

#[derive(Debug, Parser)]
#[command(name = "bench_freshness")]
struct Args {
    #[arg(long, default_value = "http://127.0.0.1:8080/graphql")]
    graphql_url: String,
    /// Sent as `Authorization: Bearer <token>` when set.
    #[arg(long, env = "SMARTMETER_BENCH_GRAPHQL_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The probe meter's id (a device of its own).
    #[arg(long, default_value = "bench-probe")]
    device_id: String,
    #[arg(long, default_value_t = 60.0)]
    duration_secs: f64,
    /// Rest between one reading seen and the next published.
    #[arg(long, default_value_t = 50)]
    gap_ms: u64,
    /// Interval between GraphQL polls.
    #[arg(long, default_value_t = 5)]
    poll_ms: u64,
    /// A reading not visible after this long is a timeout.
    #[arg(long, default_value_t = 30)]
    timeout_secs: u64,
    /// Also write every sample (ms, one a line) here.
    #[arg(long)]
    samples_out: Option<PathBuf>,
    #[arg(long, env = "SMARTMETER_DATA_DIR")]
    data_dir: Option<PathBuf>,
    #[arg(long, env = "SMARTMETER_MQTT_HOST", default_value = "127.0.0.1")]
    mqtt_host: String,
    #[arg(long, env = "SMARTMETER_MQTT_PORT", default_value_t = 1883)]
    mqtt_port: u16,
    #[arg(long, env = "SMARTMETER_MQTT_SIMULATOR_USER")]
    mqtt_user: Option<String>,
    #[arg(long, env = "SMARTMETER_MQTT_SIMULATOR_PASSWORD", hide_env_values = true)]
    mqtt_password: Option<String>,
}

/// Start of the hour whose energy the step ending at `at` lands in (a reading exactly
/// on the hour ends the previous hour).
fn hour_of_step_ending(at: Timestamp) -> anyhow::Result<Timestamp> {
    let second = at.as_second() - 1;
    Ok(Timestamp::from_second(second - second.rem_euclid(3600))?)
}

/// The counter at `at`: that of the newest reading at or before it (across a hole in
/// the data the counter stands still, so the processor adds nothing there).
fn counter_at(readings: &[MeterReading], at: Timestamp) -> u64 {
    readings.iter().take_while(|r| r.timestamp <= at).last().map_or(0, |r| r.energy_mwh)
}

/// `energyKwh` (six decimals, exact) as mWh.
fn milli_wh(energy_kwh: &str) -> anyhow::Result<i64> {
    let (whole, fraction) = energy_kwh.split_once('.').unwrap_or((energy_kwh, ""));
    anyhow::ensure!(fraction.len() <= 6, "energyKwh {energy_kwh:?} has more than six decimals");
    Ok(whole.parse::<i64>()? * 1_000_000 + format!("{fraction:0<6}").parse::<i64>()?)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

struct Graphql {
    http: reqwest::Client,
    url: String,
    token: Option<String>,
}

impl Graphql {
    /// The hour's energy in mWh, or None while the hour has no row.
    async fn hour_energy(&self, device: &str, hour: Timestamp) -> anyhow::Result<Option<i64>> {
        let to = hour.checked_add(jiff::SignedDuration::from_hours(1))?;
        let body = json!({
            "operationName": "HourlyEnergy",
            "query": QUERY,
            "variables": { "deviceId": device, "from": hour.to_string(), "to": to.to_string() },
        });
        let mut request = self.http.post(&self.url).json(&body);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await?;
        let status = response.status();
        let answer: serde_json::Value = response.json().await?;
        anyhow::ensure!(
            status.is_success() && answer.get("errors").is_none(),
            "GraphQL answered {status}: {answer}"
        );
        let rows = answer["data"]["hourlyEnergy"].as_array().context("no hourlyEnergy in the answer")?;
        match rows.first() {
            None => Ok(None),
            Some(row) => Ok(Some(milli_wh(row["energyKwh"].as_str().context("energyKwh")?)?)),
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data")));
    let file = data_dir.join(LONDON_JANUARY);
    let dataset = london::load(&[&file]).with_context(|| format!("{}", file.display()))?;
    let household = dataset
        .meters
        .iter()
        .find(|m| m.device_id.as_str() == HOUSEHOLD)
        .with_context(|| format!("{HOUSEHOLD} is not in {}", file.display()))?;
    let readings = counter::readings(&household.slots, 30)?;
    let device = DeviceId::parse(&args.device_id)?;
    let topic = telemetry_topic(&device);

    let mut publisher = MqttPublisher::connect(&MqttConfig {
        host: args.mqtt_host.clone(),
        port: args.mqtt_port,
        username: args.mqtt_user.clone(),
        password: args.mqtt_password.clone(),
        client_id: format!("{}-probe", args.device_id),
        max_inflight: 10,
        connect_timeout: Duration::from_secs(10),
        keep_alive: Duration::from_secs(30),
    })
    .await?;
    let graphql =
        Graphql { http: reqwest::Client::new(), url: args.graphql_url.clone(), token: args.token.clone() };

    let duration = Duration::from_secs_f64(args.duration_secs);
    let started = Instant::now();
    let mut samples: Vec<f64> = Vec::new();
    let mut timeouts = 0u64;
    let mut polls = 0u64;
    for (k, reading) in readings.iter().enumerate() {
        if started.elapsed() >= duration {
            break;
        }
        let (telemetry, _) = Telemetry::from_reading(&device, reading);
        let sent = Instant::now();
        publisher.publish(topic.clone(), telemetry.to_json()).await?;
        if k == 0 {
            continue; // the first reading only sets the counter: nothing to roll up
        }
        let hour = hour_of_step_ending(reading.timestamp)?;
        let expected = (reading.energy_mwh - counter_at(&readings[..k], hour)) as i64;
        let deadline = sent + Duration::from_secs(args.timeout_secs);
        loop {
            polls += 1;
            if graphql.hour_energy(device.as_str(), hour).await? == Some(expected) {
                samples.push(sent.elapsed().as_secs_f64() * 1000.0);
                break;
            }
            if Instant::now() >= deadline {
                timeouts += 1;
                eprintln!("reading {k} at {} not visible after {}s", reading.timestamp, args.timeout_secs);
                break;
            }
            tokio::time::sleep(Duration::from_millis(args.poll_ms)).await;
        }
        tokio::time::sleep(Duration::from_millis(args.gap_ms)).await;
    }
    let delivery = publisher.finish(Duration::from_secs(10)).await;
    if let Some(path) = &args.samples_out {
        let lines: Vec<String> = samples.iter().map(|ms| format!("{ms:.3}")).collect();
        std::fs::write(path, lines.join("\n") + "\n")?;
    }
    let mut sorted = samples.clone();
    sorted.sort_by(f64::total_cmp);
    println!(
        "{}",
        json!({
            "samples": sorted.len(),
            "timeouts": timeouts,
            "polls": polls,
            "published": delivery.sent,
            "confirmed": delivery.confirmed,
            "p50_ms": percentile(&sorted, 50.0),
            "p90_ms": percentile(&sorted, 90.0),
            "p99_ms": percentile(&sorted, 99.0),
            "max_ms": sorted.last().copied().unwrap_or(f64::NAN),
            "poll_ms": args.poll_ms,
        })
    );
    anyhow::ensure!(!samples.is_empty(), "no reading became visible");
    anyhow::ensure!(timeouts == 0, "{timeouts} readings were not visible within {}s", args.timeout_secs);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn energy_text_to_milli_wh() {
        assert_eq!(milli_wh("0.123000").unwrap(), 123_000);
        assert_eq!(milli_wh("12.000001").unwrap(), 12_000_001);
        assert_eq!(milli_wh("3").unwrap(), 3_000_000);
        assert!(milli_wh("0.1234567").is_err());
    }

    #[test]
    fn a_reading_on_the_hour_ends_the_previous_hour() {
        let on_the_hour: Timestamp = "2013-01-02T10:00:00Z".parse().unwrap();
        assert_eq!(hour_of_step_ending(on_the_hour).unwrap(), "2013-01-02T09:00:00Z".parse().unwrap());
        let inside: Timestamp = "2013-01-02T10:01:00Z".parse().unwrap();
        assert_eq!(hour_of_step_ending(inside).unwrap(), "2013-01-02T10:00:00Z".parse().unwrap());
    }

    #[test]
    fn percentiles_by_rank() {
        let sorted: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&sorted, 50.0), 50.0);
        assert_eq!(percentile(&sorted, 99.0), 99.0);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
    }
}
