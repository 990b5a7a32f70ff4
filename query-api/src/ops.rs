//! Operations plumbing around the database: the `postgres` health component and the
//! pool gauges on `/metrics`.

use std::time::Duration;

use deadpool_postgres::Pool;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntGauge, Opts};
use smartmeter_core::service::health::Health;
use tokio_util::sync::CancellationToken;

use crate::store::Store;

pub const POSTGRES: &str = "postgres";
pub const HEALTH_INTERVAL: Duration = Duration::from_secs(5);
const PING_TIMEOUT: Duration = Duration::from_secs(3);

/// Flips the `postgres` component with a `SELECT 1` every [`HEALTH_INTERVAL`] until
/// `shutdown`; logs transitions only.
pub async fn watch_postgres(store: Store, health: Health, shutdown: CancellationToken) {
    let mut interval = tokio::time::interval(HEALTH_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut was_up = None;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = interval.tick() => {}
        }
        let result = match tokio::time::timeout(PING_TIMEOUT, store.ping()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err(format!("no answer to SELECT 1 within {PING_TIMEOUT:?}")),
        };
        match result {
            Ok(()) => {
                health.up(POSTGRES);
                if was_up != Some(true) {
                    tracing::info!(component = POSTGRES, "Health check up.");
                }
                was_up = Some(true);
            }
            Err(detail) => {
                if was_up != Some(false) {
                    tracing::warn!(component = POSTGRES, %detail, "Health check down.");
                }
                // The detail is shown on /health: keep it free of connection strings.
                health.down(POSTGRES, "SELECT 1 failed");
                was_up = Some(false);
            }
        }
    }
}

/// Pool gauges read at scrape time: `smartmeter_db_pool_connections` (open),
/// `smartmeter_db_pool_idle_connections` (available), `smartmeter_db_pool_max_connections`
/// and `smartmeter_db_pool_waiting` (tasks waiting for a connection).
pub struct PoolCollector {
    pool: Pool,
    size: IntGauge,
    idle: IntGauge,
    max: IntGauge,
    waiting: IntGauge,
}

impl PoolCollector {
    pub fn new(pool: Pool) -> prometheus::Result<Self> {
        Ok(Self {
            pool,
            size: IntGauge::with_opts(Opts::new(
                "smartmeter_db_pool_connections",
                "Open database connections.",
            ))?,
            idle: IntGauge::with_opts(Opts::new(
                "smartmeter_db_pool_idle_connections",
                "Open database connections not in use.",
            ))?,
            max: IntGauge::with_opts(Opts::new(
                "smartmeter_db_pool_max_connections",
                "Most database connections the pool opens.",
            ))?,
            waiting: IntGauge::with_opts(Opts::new(
                "smartmeter_db_pool_waiting",
                "Requests waiting for a database connection.",
            ))?,
        })
    }

    fn gauges(&self) -> [&IntGauge; 4] {
        [&self.size, &self.idle, &self.max, &self.waiting]
    }
}

fn gauge_value(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Collector for PoolCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.gauges().into_iter().flat_map(|g| g.desc()).collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let status = self.pool.status();
        self.size.set(gauge_value(status.size));
        self.idle.set(gauge_value(status.available));
        self.max.set(gauge_value(status.max_size));
        self.waiting.set(gauge_value(status.waiting));
        self.gauges().into_iter().flat_map(|g| g.collect()).collect()
    }
}
