//! Ingest throughput of the processor, from Kafka to committed rows, on replay data:
//! the 10-household London January (meter simulator, `POINTS` readings per half hour),
//! `COPIES` times under other device ids, produced to a topic of its own first, then
//! consumed by the processor (in-process, the library the binary runs) into a database
//! of its own. Prints figures; it is not a test.
//!
//! ```sh
//! . infra/env.sh
//! cargo run --release -p smartmeter-processor --example ingest_bench [-- COPIES POINTS]
//! ```
//!
//! Defaults: 4 copies, 8 points per slot (451,328 readings, 40 meters).

#[path = "../tests/common/london.rs"]
mod london;

use std::time::{Duration, Instant};

use rdkafka::producer::{FutureProducer, FutureRecord};
use smartmeter_core::service::health::Health;
use smartmeter_core::service::testkit::{self, TestDatabase};
use smartmeter_processor::Config;
use tokio_util::sync::CancellationToken;

async fn scalar(client: &tokio_postgres::Client, sql: &str) -> i64 {
    client.query_one(sql, &[]).await.unwrap().get(0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let copies: usize = args.next().map_or(4, |a| a.parse().unwrap());
    let points: u32 = args.next().map_or(8, |a| a.parse().unwrap());

    let started = Instant::now();
    let received_from = jiff::Timestamp::now();
    let mut records = Vec::new();
    for copy in 0..copies {
        records.extend(london::replay(&format!("bench{copy}-"), points, received_from, 3600).records);
    }
    println!(
        "replay: {} readings ({copies} x 10 London households, {points} per half hour), built in {:.1} s",
        records.len(),
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

    let db = TestDatabase::create("ingest_bench").await?;
    let (client, connection) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    let config = Config {
        brokers,
        database_url: db.url.clone(),
        group_id: testkit::unique_name("processor-bench"),
        topic: topic.clone(),
        default_time_zone: "Europe/London".into(),
        ..Config::local_defaults()
    };
    let shutdown = CancellationToken::new();
    let registry = prometheus::Registry::new();
    let task = tokio::spawn({
        let shutdown = shutdown.clone();
        let registry = registry.clone();
        async move {
            smartmeter_processor::run(
                config,
                &registry,
                Health::new("processor", &["kafka", "postgres"]),
                shutdown,
            )
            .await
        }
    });
    let started = Instant::now();
    let total = records.len() as i64;
    let mut first_commit: Option<Duration> = None;
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let done =
            scalar(&client, "SELECT coalesce(sum(next_offset), 0)::bigint FROM consumer_offsets").await;
        if done > 0 && first_commit.is_none() {
            first_commit = Some(started.elapsed());
        }
        if done >= total {
            break;
        }
    }
    let elapsed = started.elapsed();
    let first = first_commit.unwrap_or_default();
    shutdown.cancel();
    task.await??;
    let stored = scalar(&client, "SELECT count(*) FROM readings").await;
    let hours = scalar(&client, "SELECT count(*) FROM energy_hourly").await;
    let text = smartmeter_core::service::metrics::render(&registry);
    let batches = text
        .lines()
        .find_map(|l| l.strip_prefix("smartmeter_processor_batch_commit_seconds_count "))
        .unwrap_or("?")
        .to_owned();
    println!(
        "processor: {stored} readings ({hours} hourly rows) committed in {:.1} s from start ({:.1} s to the first \
         commit: connect, migrations, group join); {batches} batches",
        elapsed.as_secs_f64(),
        first.as_secs_f64()
    );
    println!(
        "  {:.0} readings/s from start, {:.0} readings/s from the first commit",
        stored as f64 / elapsed.as_secs_f64(),
        stored as f64 / (elapsed - first).as_secs_f64()
    );
    drop(client);
    db.drop_database().await?;
    Ok(())
}
