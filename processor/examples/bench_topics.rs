//! Kafka topics for `infra/bench.sh`, made in milliseconds instead of a JVM start per
//! topic: `bench_topics create NAME:PARTITIONS...` or `bench_topics delete PREFIX`.
//!
//! ```text
//! . infra/env.sh
//! cargo run -p smartmeter-processor --example bench_topics -- create smartmeter.bench.x.telemetry:6
//! cargo run -p smartmeter-processor --example bench_topics -- delete smartmeter.bench.x.
//! ```
//!
//! `delete` removes every topic whose name starts with PREFIX, which must start with
//! `smartmeter.bench.` so that nothing else can be hit.

use std::time::Duration;

use anyhow::Context as _;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::ClientConfig;
use smartmeter_core::service::testkit;

const BENCH_PREFIX: &str = "smartmeter.bench.";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let brokers = testkit::kafka_brokers();
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        Some("create") => {
            for spec in args {
                let (name, partitions) = spec.split_once(':').unwrap_or((&spec, "1"));
                testkit::create_topic(&brokers, name, partitions.parse().context("partitions")?).await?;
            }
        }
        Some("delete") => {
            let prefix = args.next().context("delete needs a prefix")?;
            anyhow::ensure!(
                prefix.starts_with(BENCH_PREFIX) && prefix.len() > BENCH_PREFIX.len(),
                "only topics under {BENCH_PREFIX}<run> are deleted"
            );
            let consumer: BaseConsumer = ClientConfig::new().set("bootstrap.servers", &brokers).create()?;
            let metadata = consumer.fetch_metadata(None, Duration::from_secs(10))?;
            let names: Vec<&str> =
                metadata.topics().iter().map(|t| t.name()).filter(|n| n.starts_with(&prefix)).collect();
            if !names.is_empty() {
                let admin: AdminClient<DefaultClientContext> =
                    ClientConfig::new().set("bootstrap.servers", &brokers).create()?;
                admin.delete_topics(&names, &AdminOptions::new()).await?;
            }
            println!("deleted {} topics", names.len());
        }
        _ => anyhow::bail!("usage: bench_topics create NAME:PARTITIONS... | delete PREFIX"),
    }
    Ok(())
}
