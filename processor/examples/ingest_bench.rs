//! Ingest throughput of the processor, from Kafka to committed rows, on replay data:
//! the 10-household London January (meter simulator, `--points` readings per half
//! hour) replayed as `--meters` meters (meter `i` is household `i % 10` under the id
//! prefix `m{i / 10}-`), each sending its first `--readings` readings, all meters
//! interleaved in meter-time order (as a fleet reports). The records are produced to a
//! topic of their own first; then the real `processor` binary (release build, next to
//! this example) consumes the backlog into a database of its own. Prints figures; it
//! is not a test.
//!
//! ```sh
//! . infra/env.sh
//! cargo build --release -p smartmeter-processor --bin processor --example ingest_bench
//! target/release/examples/ingest_bench                      # 40 meters, the whole January
//! target/release/examples/ingest_bench --meters 10000       # 60 readings each
//! target/release/examples/ingest_bench --meters 100000 --readings 10
//! ```
//!
//! Defaults: 40 meters, 8 points per slot, every reading of January (451,328
//! readings); with `--meters N` alone, `max(10, 600,000 / N)` readings per meter. The
//! old positional form `COPIES POINTS` (COPIES x 10 meters) still works.
//!
//! `--seconds S` (default 600) stops a run that takes longer and reports what was
//! committed by then.
//!
//! Printed: readings/s (from the processor's start and from its first commit), batch
//! commit time p50 / p99 / max (from the processor's own per-batch debug log line),
//! distinct meters per batch (mean), and the processor's resident memory (sampled
//! every 100 ms while it works, and its high-water mark).

#[path = "../tests/common/london.rs"]
mod london;

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::producer::{FutureProducer, FutureRecord};
use smartmeter_core::service::testkit::{self, TestDatabase};

async fn scalar(client: &tokio_postgres::Client, sql: &str) -> i64 {
    client.query_one(sql, &[]).await.unwrap().get(0)
}

struct Args {
    meters: usize,
    points: u32,
    /// Readings per meter; `None`: all of January.
    readings: Option<usize>,
    max_batch: Option<usize>,
    /// Stop after this long and report what was committed by then.
    seconds: u64,
}

fn args() -> anyhow::Result<Args> {
    let mut args = Args { meters: 40, points: 8, readings: None, max_batch: None, seconds: 600 };
    let mut positional = Vec::new();
    let mut meters_given = false;
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| -> anyhow::Result<usize> {
            it.next().with_context(|| format!("{name} needs a value"))?.parse().context(name.to_owned())
        };
        match arg.as_str() {
            "--meters" => {
                args.meters = value("--meters")?;
                meters_given = true;
            }
            "--points" => args.points = value("--points")? as u32,
            "--readings" => args.readings = Some(value("--readings")?),
            "--max-batch" => args.max_batch = Some(value("--max-batch")?),
            "--seconds" => args.seconds = value("--seconds")? as u64,
            "-h" | "--help" => {
                println!("ingest_bench [--meters N] [--points P] [--readings R] [--max-batch B] [--seconds S] | [COPIES POINTS]");
                std::process::exit(0);
            }
            other => positional.push(other.parse::<usize>().with_context(|| format!("argument {other:?}"))?),
        }
    }
    if let Some(copies) = positional.first() {
        args.meters = copies * 10;
    }
    if let Some(points) = positional.get(1) {
        args.points = *points as u32;
    }
    if meters_given && args.readings.is_none() {
        args.readings = Some((600_000 / args.meters.max(1)).max(10));
    }
    anyhow::ensure!(args.meters > 0 && args.points > 0, "meters and points must be positive");
    Ok(args)
}

/// (key, JSON value) of every record, meters interleaved in meter-time order.
fn records(args: &Args) -> Vec<(String, String)> {
    let base = london::replay("", args.points, jiff::Timestamp::now(), 3600);
    let households = base.devices.len();
    // Each household's records in meter-time order, cut to the first `readings`.
    let mut per_household: Vec<Vec<&(String, String)>> = vec![Vec::new(); households];
    for record in &base.records {
        let household = base.devices.iter().position(|d| *d == record.0).expect("known household");
        per_household[household].push(record);
    }
    if let Some(limit) = args.readings {
        for records in &mut per_household {
            records.truncate(limit);
        }
    }
    // Interleave: the base order (meter time, then household) and, within it, copies.
    let mut kept = vec![0usize; households];
    let mut order = Vec::new();
    for record in &base.records {
        let household = base.devices.iter().position(|d| *d == record.0).unwrap();
        if kept[household] < per_household[household].len() {
            kept[household] += 1;
            order.push((household, record));
        }
    }
    let copies = args.meters.div_ceil(households);
    let mut out = Vec::with_capacity(order.len() * copies);
    for (household, (key, value)) in order {
        let field = format!(r#""device_id":"{key}""#);
        assert!(value.contains(&field), "the reading names its device");
        for copy in 0..copies {
            if copy * households + household >= args.meters {
                break;
            }
            let device = format!("m{copy}-{key}");
            out.push((device.clone(), value.replacen(&field, &format!(r#""device_id":"{device}""#), 1)));
        }
    }
    out
}

/// The processor binary built next to this example.
fn processor_binary() -> anyhow::Result<std::path::PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().and_then(|examples| examples.parent()).context("target directory")?;
    let binary = dir.join("processor");
    anyhow::ensure!(
        binary.exists(),
        "{} not found: cargo build --release -p smartmeter-processor --bin processor --example ingest_bench",
        binary.display()
    );
    Ok(binary)
}

fn rss_kb(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = args()?;
    let binary = processor_binary()?;

    let started = Instant::now();
    let records = records(&args);
    let per_meter = args.readings.map_or_else(|| "all".to_owned(), |r| r.to_string());
    println!(
        "replay: {} readings ({} meters from 10 London households, {} per half hour, {per_meter} readings per \
         meter), built in {:.1} s",
        records.len(),
        args.meters,
        args.points,
        started.elapsed().as_secs_f64()
    );

    let brokers = testkit::kafka_brokers();
    let topic = testkit::unique_name("smartmeter.telemetry.bench");
    testkit::create_topic(&brokers, &topic, 6).await?;
    let producer: FutureProducer =
        smartmeter_core::service::kafka::idempotent_producer(&brokers, "ingest-bench").create()?;
    let started = Instant::now();
    for chunk in records.chunks(50_000) {
        let deliveries: Vec<_> = chunk
            .iter()
            .map(|(key, value)| {
                producer.send_result(FutureRecord::to(&topic).key(key).payload(value)).unwrap()
            })
            .collect();
        for delivery in deliveries {
            delivery.await.unwrap().unwrap();
        }
    }
    let produce = started.elapsed();
    println!(
        "produced to {topic} (6 partitions) in {:.1} s: {:.0} records/s",
        produce.as_secs_f64(),
        records.len() as f64 / produce.as_secs_f64()
    );
    let total = records.len() as i64;
    drop(records);

    let db = TestDatabase::create("ingest_bench").await?;
    let (client, connection) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    let mut command = Command::new(&binary);
    command
        .args([
            format!("--brokers={brokers}"),
            format!("--database-url={}", db.url),
            format!("--group-id={}", testkit::unique_name("processor-bench")),
            format!("--topic={topic}"),
            "--device-events-topic=".into(),
            format!("--billing-periods-topic={}", testkit::unique_name("smartmeter.billing-periods.bench")),
            "--default-time-zone=Europe/London".into(),
            "--metrics-addr=127.0.0.1:0".into(),
        ])
        .env("SMARTMETER_LOG_FORMAT", "json")
        .env("SMARTMETER_LOG", "warn,smartmeter_processor::consume=debug")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if let Some(max_batch) = args.max_batch {
        command.arg(format!("--max-batch={max_batch}"));
    }
    let started = Instant::now();
    let mut child = command.spawn().with_context(|| format!("start {}", binary.display()))?;
    let pid = child.id();
    // Per batch: (commit seconds, records, segments).
    let log = child.stdout.take().context("processor stdout")?;
    let batches = std::thread::spawn(move || {
        let mut batches = Vec::new();
        for line in BufReader::new(log).lines() {
            let Ok(line) = line else { break };
            let Ok(value) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
            let fields = &value["fields"];
            if fields["message"] == "Batch committed." {
                batches.push((
                    fields["elapsed_ms"].as_f64().unwrap_or(0.0) / 1000.0,
                    fields["records"].as_u64().unwrap_or(0),
                    fields["meters"].as_u64().unwrap_or(0),
                ));
            }
        }
        batches
    });

    let mut first_commit: Option<Duration> = None;
    let mut rss_max = 0;
    let mut stopped = false;
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Some(status) = child.try_wait()? {
            anyhow::bail!("the processor exited: {status}");
        }
        rss_max = rss_max.max(rss_kb(pid).0);
        let done =
            scalar(&client, "SELECT coalesce(sum(next_offset), 0)::bigint FROM consumer_offsets").await;
        if done > 0 && first_commit.is_none() {
            first_commit = Some(started.elapsed());
        }
        if done >= total {
            break;
        }
        if started.elapsed() >= Duration::from_secs(args.seconds) {
            println!("  STOPPED after {} s (--seconds): {done} of {total} records committed", args.seconds);
            stopped = true;
            break;
        }
    }
    let elapsed = started.elapsed();
    let first = first_commit.unwrap_or_default();
    let (rss_end, hwm) = rss_kb(pid);
    // SIGTERM: the processor finishes the batch in hand and stops.
    Command::new("kill").args(["-TERM", &pid.to_string()]).status()?;
    child.wait()?;
    let batches = batches.join().expect("log reader");

    let stored = scalar(&client, "SELECT count(*) FROM readings").await;
    let hours = scalar(&client, "SELECT count(*) FROM energy_hourly").await;
    let devices = scalar(&client, "SELECT count(*) FROM devices WHERE readings_total > 0").await;
    println!(
        "processor: {stored} readings of {devices} meters ({hours} hourly rows) committed in {:.1} s from start \
         ({:.1} s to the first commit: connect, migrations, group join); {} batches",
        elapsed.as_secs_f64(),
        first.as_secs_f64(),
        batches.len()
    );
    println!(
        "  {:.0} readings/s from start, {:.0} readings/s from the first commit",
        stored as f64 / elapsed.as_secs_f64(),
        stored as f64 / (elapsed - first).as_secs_f64()
    );
    let mut seconds: Vec<f64> = batches.iter().map(|b| b.0).collect();
    seconds.sort_by(f64::total_cmp);
    let n = batches.len().max(1) as f64;
    println!(
        "  batch commit p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms; mean {:.0} records and {:.0} meters per batch",
        percentile(&seconds, 50.0) * 1000.0,
        percentile(&seconds, 99.0) * 1000.0,
        seconds.last().copied().unwrap_or(0.0) * 1000.0,
        batches.iter().map(|b| b.1).sum::<u64>() as f64 / n,
        batches.iter().map(|b| b.2).sum::<u64>() as f64 / n,
    );
    println!(
        "  processor RSS: {} MB at the end, {} MB at most (sampled), high-water mark {} MB",
        rss_end / 1024,
        rss_max / 1024,
        hwm / 1024
    );
    if stored != total && !stopped {
        println!("  WARNING: {total} records produced, {stored} readings stored");
    }
    drop(client);
    db.drop_database().await?;
    Ok(())
}
