//! smartmeter query-api: GraphQL over the pipeline's projections.
//!
//! - [`config`]: flags and environment.
//! - [`schema`]: the GraphQL schema (queries, scalars, error codes, request metrics);
//!   transport-free.
//! - [`store`]: parameterised SQL over devices, readings and energy rollups.
//! - [`http`]: axum routes: `/graphql`, `/graphiql`, `/health`, `/metrics`.
//! - [`ops`]: the `postgres` health check and pool gauges.
//! - [`dashboard`]: the built web dashboard as static files at `/`.
//!
//! [`run`] wires them: pool, migrations, health watch, server, graceful shutdown.

pub mod config;
pub mod dashboard;
pub mod http;
pub mod ops;
pub mod schema;
pub mod store;

use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use prometheus::Registry;
use smartmeter_core::service::{db, health::Health, metrics};
use tokio_util::sync::CancellationToken;

pub use config::Config;

pub const SERVICE: &str = "query-api";

/// What the routes need.
#[derive(Clone)]
pub struct AppState {
    pub schema: schema::ApiSchema,
    pub registry: Registry,
    pub health: Health,
}

impl AppState {
    /// A schema over `store`, a fresh registry (process collector, GraphQL and pool
    /// metrics) and health with the `postgres` component unknown.
    pub fn new(store: store::Store) -> anyhow::Result<Self> {
        let registry = metrics::registry();
        let graphql_metrics = schema::GraphqlMetrics::register(&registry)?;
        registry.register(Box::new(ops::PoolCollector::new(store.pool().clone())?))?;
        Ok(Self {
            schema: schema::build(store, graphql_metrics),
            registry,
            health: Health::new(SERVICE, &[ops::POSTGRES]),
        })
    }
}

pub fn app(state: AppState) -> Router {
    http::router(state)
}

pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let pool = db::pool(&config.database_url, config.db_pool_size, "query-api")?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listen on {}", config.listen))?;
    let Some(version) = migrate_when_reachable(&pool, &shutdown).await? else {
        return Ok(());
    };
    tracing::info!(schema_version = version, "Database ready.");

    let store = store::Store::new(pool);
    let state = AppState::new(store.clone())?;
    let watch = tokio::spawn(ops::watch_postgres(store, state.health.clone(), shutdown.clone()));

    tracing::info!(addr = %config.listen, "Serving /graphql, /graphiql, /health, /metrics.");
    let router = dashboard::serve(app(state), &config.dashboard_dir);
    let server = axum::serve(listener, router).with_graceful_shutdown(shutdown.clone().cancelled_owned());
    let drain = async {
        shutdown.cancelled().await;
        tokio::time::sleep(config.drain_timeout()).await;
    };
    tokio::select! {
        result = server => result.context("HTTP server")?,
        () = drain => {
            tracing::warn!(timeout = ?config.drain_timeout(), "Requests still running at the drain timeout; exiting.");
        }
    }
    shutdown.cancel();
    let _ = watch.await;
    tracing::info!("Stopped.");
    Ok(())
}

/// Applies migrations, retrying with back-off while PostgreSQL is unreachable;
/// `None` when shutdown came first.
async fn migrate_when_reachable(
    pool: &deadpool_postgres::Pool,
    shutdown: &CancellationToken,
) -> anyhow::Result<Option<i32>> {
    let mut delay = Duration::from_millis(250);
    loop {
        match db::migrate(pool).await {
            Ok(version) => return Ok(Some(version)),
            // No connection: PostgreSQL may still be starting. Anything else (a failed
            // migration, a schema newer than this binary) will not heal by waiting.
            Err(error) if error.downcast_ref::<deadpool_postgres::PoolError>().is_some() => {
                tracing::warn!(error = format!("{error:#}"), retry_in = ?delay, "Database not reachable yet.");
            }
            Err(error) => return Err(error.context("migrate the database")),
        }
        tokio::select! {
            () = shutdown.cancelled() => return Ok(None),
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}
