use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use smartmeter_core::service::{health::Health, logging, metrics, ops_http, shutdown};
use smartmeter_core::topics;
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
    /// Static group membership: a restarted member with the same id gets its
    /// partitions back at once (one id per instance, e.g. the host or pod name).
    #[arg(long, env = "SMARTMETER_PROCESSOR_INSTANCE_ID")]
    group_instance_id: Option<String>,
    /// Registry events and status changes are read from it; the processor's own status
    /// changes are published to it. Empty: neither.
    #[arg(long, env = "SMARTMETER_PROCESSOR_DEVICE_EVENTS_TOPIC", default_value = topics::DEVICE_EVENTS.name)]
    device_events_topic: String,
    #[arg(long, env = "SMARTMETER_PROCESSOR_BILLING_PERIODS_TOPIC", default_value = topics::BILLING_PERIODS.name)]
    billing_periods_topic: String,
    /// Telemetry topic to consume (benchmarks and tests use topics of their own).
    #[arg(long, env = "SMARTMETER_PROCESSOR_TOPIC", default_value = smartmeter_core::topics::TELEMETRY.name)]
    topic: String,
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
    /// A meter from which nothing arrived (telemetry, or going online) for this long is
    /// marked offline. The firmware reports every 10 s; raise it for meters that report
    /// less often.
    #[arg(long, env = "SMARTMETER_INACTIVITY_TIMEOUT", default_value = "5m")]
    inactivity_timeout: jiff::Span,
    /// How often silent meters are looked for (offline, periods to close).
    #[arg(long, env = "SMARTMETER_PROCESSOR_HOUSEKEEPING_INTERVAL_MS", default_value_t = 5000)]
    housekeeping_interval_ms: u64,
    #[arg(long, env = "SMARTMETER_PROCESSOR_METRICS_ADDR", default_value = "127.0.0.1:9102")]
    metrics_addr: SocketAddr,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    logging::init("processor");
    let args = Args::parse();
    let allowed_lateness = args.allowed_lateness.to_duration(jiff::SpanRelativeTo::days_are_24_hours())?;
    let period_grace = args.period_grace.to_duration(jiff::SpanRelativeTo::days_are_24_hours())?;
    let inactivity_timeout = args.inactivity_timeout.to_duration(jiff::SpanRelativeTo::days_are_24_hours())?;
    let config = Config {
        period_grace,
        inactivity_timeout,
        group_instance_id: args.group_instance_id,
        device_events_topic: Some(args.device_events_topic).filter(|topic| !topic.is_empty()),
        billing_periods_topic: args.billing_periods_topic,
        housekeeping_interval: Duration::from_millis(args.housekeeping_interval_ms),
        brokers: args.brokers,
        database_url: args.database_url,
        group_id: args.group_id,
        topic: args.topic,
        default_time_zone: args.default_time_zone,
        allowed_lateness,
        max_batch: args.max_batch,
        linger: Duration::from_millis(args.linger_ms),
        ..Config::local_defaults()
    };
    let shutdown = shutdown::on_signal();
    let registry = metrics::registry();
    let health = Health::new("processor", smartmeter_processor::HEALTH_COMPONENTS);
    let ops =
        tokio::spawn(ops_http::serve(args.metrics_addr, registry.clone(), health.clone(), shutdown.clone()));
    let result = smartmeter_processor::run(config, &registry, health, shutdown.clone()).await;
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), ops).await;
    result
}
