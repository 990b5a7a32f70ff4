//! Load generator of `infra/bench.sh`: N simulated meters publish real London readings
//! over MQTT (QoS 1) at a fixed total rate, and a JSON summary is printed at the end.
//!
//! ```text
//! . infra/env.sh
//! cargo run --release -p meter-simulator --example bench_load -- \
//!     --meters 1000 --rate 5000 --duration-secs 60 --device-prefix bench-
//! ```
//!
//! Meter `i` (device id `<prefix><i, 6 digits>`) reports the counter of household
//! `i mod H` of the Low Carbon London January 2013 file (`shared/data`), rebuilt by the
//! simulator's own counter code with `--points-per-slot` readings per half hour (30: one
//! a minute). All meters advance together through event time, one reading each per
//! round, so every meter is active from the first second. Event times are 2013: the
//! bridge's clock floor must be lowered (`--clock-floor 2000-01-01T00:00:00Z`).
//!
//! The publishes are spread over `--connections` MQTT clients, each paced to its share
//! of `--rate`; a client that cannot keep up falls behind its schedule, which shows as
//! an achieved rate under the target. The summary (one JSON line on stdout) has what
//! was published and acknowledged, the achieved rate, and wall-clock marks (Unix ms)
//! of the start and of the end of publishing, which the harness matches with its
//! samples of the rows stored.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use clap::Parser;
use meter_simulator::counter::{self, MeterReading};
use meter_simulator::london;
use meter_simulator::payload::Telemetry;
use meter_simulator::publish::{MqttConfig, MqttPublisher};
use smartmeter_core::telemetry::telemetry_topic;
use smartmeter_core::DeviceId;

const LONDON_JANUARY: &str = "lcl_halfhourly_2013-01_10households.csv";

#[derive(Debug, Parser)]
#[command(name = "bench_load")]
struct Args {
    /// Simulated meters.
    #[arg(long, default_value_t = 1000)]
    meters: usize,
    /// Readings per second, all meters together.
    #[arg(long)]
    rate: f64,
    /// How long to publish (it stops earlier when the data set is used up).
    #[arg(long, default_value_t = 60.0)]
    duration_secs: f64,
    /// Device ids are this prefix and the meter's number.
    #[arg(long, default_value = "bench-")]
    device_prefix: String,
    /// Readings per half hour (a divisor of 1800).
    #[arg(long, default_value_t = 30)]
    points_per_slot: u32,
    /// MQTT clients the meters are spread over.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Publishes in flight per client.
    #[arg(long, default_value_t = 100)]
    max_inflight: u16,
    /// Client ids are this prefix and the client's number.
    #[arg(long, default_value = "bench-load-")]
    client_id_prefix: String,
    /// Seconds to wait at the end for outstanding PubAcks.
    #[arg(long, default_value_t = 60)]
    ack_timeout_secs: u64,
    /// Data folder (default: `shared/data` beside the repository).
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

/// What one client did.
#[derive(Debug, Default, Clone, Copy)]
struct ClientReport {
    published: u64,
    confirmed: u64,
    reconnects: u64,
    exhausted: bool,
    /// Largest shortfall against the schedule, in readings.
    max_behind: u64,
    /// When the last publish was handed to the client (acknowledgements may follow).
    publish_end: Option<Instant>,
}

/// One client's share of the load.
struct Share {
    mqtt: MqttConfig,
    devices: Vec<(DeviceId, String)>,
    households: Vec<usize>,
    rate: f64,
}

fn unix_ms() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis())
}

/// One client: its meters publish round by round, paced to `rate` readings/s.
async fn client(
    share: Share,
    sequences: Arc<Vec<Vec<MeterReading>>>,
    duration: Duration,
    started: Instant,
    ack_timeout: Duration,
) -> anyhow::Result<ClientReport> {
    let Share { mqtt, devices, households, rate } = share;
    let mut publisher = MqttPublisher::connect(&mqtt).await?;
    let mut report = ClientReport::default();
    let meters = devices.len() as u64;
    let rounds = households.iter().map(|&h| sequences[h].len()).min().unwrap_or(0) as u64;
    let total = meters * rounds;
    let mut next: u64 = 0;
    'publishing: loop {
        let elapsed = started.elapsed();
        if elapsed >= duration {
            break;
        }
        let due = ((elapsed.as_secs_f64() * rate) as u64).min(total);
        report.max_behind = report.max_behind.max(due.saturating_sub(next));
        if next >= total {
            report.exhausted = true;
            break;
        }
        if next >= due {
            tokio::time::sleep(Duration::from_millis(1)).await;
            continue;
        }
        while next < due {
            let round = (next / meters) as usize;
            let meter = (next % meters) as usize;
            let (device, topic) = &devices[meter];
            let reading = &sequences[households[meter]][round];
            let (telemetry, _) = Telemetry::from_reading(device, reading);
            publisher.publish(topic.clone(), telemetry.to_json()).await?;
            next += 1;
            if next % 256 == 0 && started.elapsed() >= duration {
                break 'publishing;
            }
        }
    }
    report.published = next;
    report.publish_end = Some(Instant::now());
    let delivery = publisher.finish(ack_timeout).await;
    report.confirmed = delivery.confirmed;
    report.reconnects = delivery.reconnects;
    Ok(report)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.meters > 0 && args.connections > 0, "--meters and --connections must be > 0");
    anyhow::ensure!(args.rate > 0.0 && args.rate.is_finite(), "--rate must be > 0");
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data")));
    let file = data_dir.join(LONDON_JANUARY);
    let dataset = london::load(&[&file]).with_context(|| format!("{}", file.display()))?;
    let sequences: Vec<Vec<MeterReading>> = dataset
        .meters
        .iter()
        .map(|meter| counter::readings(&meter.slots, args.points_per_slot))
        .collect::<Result<_, _>>()?;
    anyhow::ensure!(!sequences.is_empty(), "no household in {}", file.display());
    let sequences = Arc::new(sequences);

    let connections = args.connections.min(args.meters);
    let duration = Duration::from_secs_f64(args.duration_secs);
    let started_unix_ms = unix_ms();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..connections {
        let mut devices = Vec::new();
        let mut households = Vec::new();
        for meter in (c..args.meters).step_by(connections) {
            let device = DeviceId::parse(&format!("{}{meter:06}", args.device_prefix))?;
            let topic = telemetry_topic(&device);
            devices.push((device, topic));
            households.push(meter % sequences.len());
        }
        let share = args.rate * devices.len() as f64 / args.meters as f64;
        let mqtt = MqttConfig {
            host: args.mqtt_host.clone(),
            port: args.mqtt_port,
            username: args.mqtt_user.clone(),
            password: args.mqtt_password.clone(),
            client_id: format!("{}{c}", args.client_id_prefix),
            max_inflight: args.max_inflight,
            connect_timeout: Duration::from_secs(10),
            keep_alive: Duration::from_secs(30),
        };
        tasks.push(tokio::spawn(client(
            Share { mqtt, devices, households, rate: share },
            sequences.clone(),
            duration,
            started,
            Duration::from_secs(args.ack_timeout_secs),
        )));
    }
    let mut total = ClientReport::default();
    let mut publish_end = started;
    for task in tasks {
        let report = task.await??;
        total.published += report.published;
        total.confirmed += report.confirmed;
        total.reconnects += report.reconnects;
        total.exhausted |= report.exhausted;
        total.max_behind += report.max_behind;
        publish_end = publish_end.max(report.publish_end.unwrap_or(started));
    }
    // Publishing ends when the last client stops; acknowledgements may still follow.
    let publish_seconds = publish_end.duration_since(started).as_secs_f64();
    let publish_end_unix_ms = started_unix_ms + (publish_seconds * 1000.0) as u128;
    let summary = serde_json::json!({
        "meters": args.meters,
        "connections": connections,
        "rate_target": args.rate,
        "duration_target_s": args.duration_secs,
        "published": total.published,
        "confirmed": total.confirmed,
        "reconnects": total.reconnects,
        "exhausted": total.exhausted,
        "max_behind": total.max_behind,
        "publish_seconds": publish_seconds,
        "achieved_rate": total.published as f64 / publish_seconds.max(1e-9),
        "started_unix_ms": started_unix_ms as u64,
        "publish_end_unix_ms": publish_end_unix_ms as u64,
        "finished_unix_ms": unix_ms() as u64,
    });
    println!("{summary}");
    anyhow::ensure!(
        total.confirmed == total.published,
        "{} of {} publishes were acknowledged",
        total.confirmed,
        total.published
    );
    Ok(())
}
