//! Reads from the pipeline's projections (`core/migrations/`) and the API's own access
//! tables. Every statement is parameterised (values are always `$n` parameters; the
//! only text spliced into SQL is the constant column lists of this module); rows come
//! back as plain data, free of GraphQL types.
//!
//! - [`devices`]: the device registry and state.
//! - [`energy`]: readings, downsampled gauges, hourly, daily and monthly energy,
//!   counter events, quarantined readings.
//! - [`billing`]: tariffs and assignments, billing periods, invoices, replay jobs.
//! - [`rejects`]: what the processor and the billing worker refused.
//! - [`access`]: customers, API users and keys (the only tables query-api writes).

pub mod access;
pub mod billing;
pub mod devices;
pub mod energy;
pub mod rejects;

use deadpool_postgres::Pool;

pub use access::{ApiKeyRow, CustomerRow};
pub use billing::{AssignmentRow, BillingPeriodRow, InvoiceCursor, ReplayJobRow, TariffVersionRow};
pub use devices::DeviceRow;
pub use energy::{
    CounterEventRow, DailyRow, GaugeBucketRow, HourlyRow, MonthlyRow, QuarantinedRow, ReadingRow,
};
pub use rejects::RejectRow;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no database connection: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("query failed: {0}")]
    Query(#[from] tokio_postgres::Error),
    /// A stored value that breaks an invariant of the schema (logged, never shown).
    #[error("stored {what} is not valid: {reason}")]
    Corrupt { what: &'static str, reason: String },
}

impl StoreError {
    /// A unique or foreign-key violation: the input conflicts with what is stored.
    pub fn constraint(&self) -> Option<&str> {
        match self {
            Self::Query(error) => error.as_db_error().and_then(|db| db.constraint()),
            _ => None,
        }
    }
}

#[derive(Clone)]
pub struct Store {
    pool: Pool,
    /// Whether the TimescaleDB gauge aggregate exists (looked up once).
    gauge_aggregate: std::sync::Arc<tokio::sync::OnceCell<bool>>,
}

impl Store {
    pub fn new(pool: Pool) -> Self {
        Self { pool, gauge_aggregate: Default::default() }
    }

    /// Whether `readings_gauges_15m` exists (migration 8 created it, which happens only
    /// where TimescaleDB is installed) along with the TimescaleDB 2.x catalog tables its
    /// staleness check reads.
    pub async fn has_gauge_aggregate(&self) -> Result<bool, StoreError> {
        let found = self
            .gauge_aggregate
            .get_or_try_init(|| async {
                let client = self.pool.get().await?;
                let row =
                    client
                        .query_one(
                            "SELECT to_regclass('readings_gauges_15m') IS NOT NULL
                                AND to_regclass('_timescaledb_catalog.continuous_aggs_invalidation_threshold') IS NOT NULL
                                AND to_regclass('_timescaledb_catalog.continuous_aggs_hypertable_invalidation_log') IS NOT NULL
                                AND to_regclass('_timescaledb_catalog.continuous_aggs_materialization_invalidation_log') IS NOT NULL",
                            &[],
                        )
                        .await?;
                Ok::<_, StoreError>(row.get::<_, bool>(0))
            })
            .await?;
        Ok(*found)
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// A round trip to the server, for health checks.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        client.query_one("SELECT 1", &[]).await?;
        Ok(())
    }
}
