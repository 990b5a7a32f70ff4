use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use smartmeter_core::service::{health::Health, logging, metrics, ops_http, shutdown};
use smartmeter_processor::Config;

/// Turns meter telemetry into energy per local hour and day, exactly once.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[arg(long, env = "SMARTMETER_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    brokers: String,
    #[arg(
        long,
        env = "SMARTMETER_DATABASE_URL",
        default_value = "postgres://smartmeter:smartmeter@127.0.0.1:55432/smartmeter"
    )]
    database_url: String,
    #[arg(long, env = "SMARTMETER_PROCESSOR_GROUP", default_value = "smartmeter-processor")]
    group_id: String,
    /// IANA zone of meters the device registry does not know yet.
    #[arg(long, env = "SMARTMETER_DEFAULT_TIME_ZONE", default_value = "UTC")]
    default_time_zone: String,
    /// A reading older than its device's newest by more than this is stored but not counted.
    #[arg(long, env = "SMARTMETER_ALLOWED_LATENESS", default_value = "7d")]
    allowed_lateness: jiff::Span,
    #[arg(long, env = "SMARTMETER_PROCESSOR_MAX_BATCH", default_value_t = 5000)]
    max_batch: usize,
    #[arg(long, env = "SMARTMETER_PROCESSOR_LINGER_MS", default_value_t = 50)]
    linger_ms: u64,
    /// A month closes when a reading this long past its end arrives, or when its meter
    /// has been silent this long after it (wall clock).
    #[arg(long, env = "SMARTMETER_PERIOD_GRACE", default_value = "24h")]
    period_grace: jiff::Span,
    #[arg(long, env = "SMARTMETER_PROCESSOR_METRICS_ADDR", default_value = "127.0.0.1:9102")]
    metrics_addr: SocketAddr,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    logging::init("processor");
    let args = Args::parse();
    let allowed_lateness = args.allowed_lateness.to_duration(jiff::SpanRelativeTo::days_are_24_hours())?;
    let period_grace = args.period_grace.to_duration(jiff::SpanRelativeTo::days_are_24_hours())?;
    let config = Config {
        period_grace,
        brokers: args.brokers,
        database_url: args.database_url,
        group_id: args.group_id,
        default_time_zone: args.default_time_zone,
        allowed_lateness,
        max_batch: args.max_batch,
        linger: Duration::from_millis(args.linger_ms),
        ..Config::local_defaults()
    };
    let shutdown = shutdown::on_signal();
    let registry = metrics::registry();
    let health = Health::new("processor", &["kafka", "postgres"]);
    let ops =
        tokio::spawn(ops_http::serve(args.metrics_addr, registry.clone(), health.clone(), shutdown.clone()));
    let result = smartmeter_processor::run(config, &registry, health, shutdown.clone()).await;
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), ops).await;
    result
}
