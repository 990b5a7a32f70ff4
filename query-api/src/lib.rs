//! smartmeter query-api: GraphQL (queries, mutations, subscriptions) and the seed's
//! REST API over the pipeline's projections; commands become Kafka events.
//!
//! - [`config`]: flags and environment; the `create-api-key` command ([`cli`]).
//! - [`auth`]: API keys, roles, the caller.
//! - [`schema`]: the GraphQL schema; transport-free.
//! - [`store`]: parameterised SQL over the projections and the API's access tables.
//! - [`commands`]: validate and publish (shared by mutations and REST `POST`s).
//! - [`publish`]: the idempotent Kafka producer of device and tariff events.
//! - [`live`]: the live consumer (telemetry, device events, invoices) and its
//!   broadcast channels, for subscriptions.
//! - [`bill`]: the live bill projection's inputs (arithmetic in core).
//! - [`dlq`]: browsing the dead-letter topic.
//! - [`links`]: signed invoice PDF links.
//! - [`rest`]: the seed's REST endpoints.
//! - [`http`]: axum routes, authentication, WebSocket, PDF.
//! - [`ops`]: the `postgres` health check and pool gauges.
//! - [`dashboard`]: the built web dashboard as static files at `/`.
//!
//! [`run`] wires them: pool, migrations, health watch, live consumer, server, graceful
//! shutdown.

pub mod auth;
pub mod bill;
pub mod cli;
pub mod commands;
pub mod config;
pub mod dashboard;
pub mod dlq;
pub mod http;
pub mod links;
pub mod live;
pub mod ops;
pub mod publish;
pub mod rest;
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

/// What [`AppState::new`] needs besides the database.
#[derive(Debug, Clone)]
pub struct ApiOptions {
    pub brokers: String,
    pub telemetry_topic: String,
    pub device_events_topic: String,
    pub tariff_events_topic: String,
    pub invoices_topic: String,
    pub dlq_topic: String,
    pub publish_timeout: Duration,
    pub max_subscriptions: usize,
    pub default_time_zone: String,
    pub dev_admin_key: Option<String>,
    pub link_secret: Option<String>,
}

impl ApiOptions {
    pub fn from_config(config: &Config) -> Self {
        Self {
            brokers: config.brokers.clone(),
            telemetry_topic: config.telemetry_topic.clone(),
            device_events_topic: config.device_events_topic.clone(),
            tariff_events_topic: config.tariff_events_topic.clone(),
            invoices_topic: config.invoices_topic.clone(),
            dlq_topic: config.dlq_topic.clone(),
            publish_timeout: Duration::from_secs(config.publish_timeout_seconds),
            max_subscriptions: config.max_subscriptions,
            default_time_zone: config.default_time_zone.clone(),
            dev_admin_key: config.dev_admin_key.clone(),
            link_secret: config.link_secret.clone(),
        }
    }

    /// The defaults of the flags (the local stack's Kafka and topics), no dev key.
    pub fn local_defaults() -> Self {
        use clap::Parser as _;
        Self::from_config(&Config::parse_from(["query-api"]))
    }

    pub fn live_topics(&self) -> live::LiveTopics {
        live::LiveTopics {
            telemetry: self.telemetry_topic.clone(),
            device_events: self.device_events_topic.clone(),
            invoices: self.invoices_topic.clone(),
        }
    }
}

/// What the routes need.
#[derive(Clone)]
pub struct AppState {
    pub schema: schema::ApiSchema,
    pub api: schema::Api,
    pub registry: Registry,
    pub health: Health,
    pub http_metrics: http::HttpMetrics,
    pub default_time_zone: String,
}

impl AppState {
    /// A schema over `store`, a fresh registry (process collector, GraphQL, pool, live,
    /// publish, auth and HTTP metrics) and health with `postgres` and `kafka` unknown.
    /// Nothing connects yet: the live consumer is started by [`run`].
    pub fn new(store: store::Store, options: ApiOptions) -> anyhow::Result<Self> {
        let registry = metrics::registry();
        let graphql_metrics = schema::GraphqlMetrics::register(&registry)?;
        registry.register(Box::new(ops::PoolCollector::new(store.pool().clone())?))?;
        let publisher = publish::Publisher::new(
            &options.brokers,
            publish::EventTopics {
                device_events: options.device_events_topic.clone(),
                tariff_events: options.tariff_events_topic.clone(),
            },
            options.publish_timeout,
            &registry,
        )?;
        let feeds = live::LiveFeeds::new(options.max_subscriptions, live::LiveMetrics::register(&registry)?);
        let auth = auth::Authenticator::new(store.clone(), options.dev_admin_key.as_deref(), &registry)?;
        let api = schema::Api {
            store: store.clone(),
            commands: commands::Commands { store, publisher },
            feeds,
            dlq: dlq::DlqReader::new(&options.brokers, &options.dlq_topic),
            links: links::LinkSigner::new(options.link_secret.as_deref())?,
            auth,
        };
        Ok(Self {
            schema: schema::build(api.clone(), graphql_metrics),
            api,
            http_metrics: http::HttpMetrics::register(&registry)?,
            registry,
            health: Health::new(SERVICE, &[ops::POSTGRES, live::KAFKA]),
            default_time_zone: options.default_time_zone,
        })
    }
}

pub fn app(state: AppState) -> Router {
    http::router(state)
}

pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let pool = db::pool(&config.database_url, config.db_pool_size, "query-api")?;
    if let Some(config::Command::CreateApiKey(command)) = &config.command {
        let Some(_) = migrate_when_reachable(&pool, &shutdown).await? else {
            return Ok(());
        };
        return cli::create_api_key(store::Store::new(pool), command).await;
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listen on {}", config.listen))?;
    let Some(version) = migrate_when_reachable(&pool, &shutdown).await? else {
        return Ok(());
    };
    tracing::info!(schema_version = version, "Database ready.");

    let options = ApiOptions::from_config(&config);
    if options.dev_admin_key.is_some() {
        tracing::warn!("A development admin key is configured (--dev-admin-key): for local runs only.");
    }
    let store = store::Store::new(pool);
    let state = AppState::new(store.clone(), options.clone())?;
    let watch = tokio::spawn(ops::watch_postgres(store, state.health.clone(), shutdown.clone()));
    let live = tokio::spawn(live::consume(
        options.brokers.clone(),
        options.live_topics(),
        state.api.feeds.clone(),
        state.health.clone(),
        shutdown.clone(),
    ));

    tracing::info!(addr = %config.listen, "Serving /graphql, /graphql/ws, /api, /graphiql, /health, /metrics.");
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
    let _ = live.await;
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The development key of the offline state.
    pub const DEV_KEY: &str = "dev-test-key";

    /// A state whose database never answers (port 1 refuses at once) and whose Kafka is
    /// never contacted: for what is decided before any I/O.
    pub fn offline_state() -> AppState {
        let pool =
            smartmeter_core::service::db::pool("postgres://nobody:secret@127.0.0.1:1/none", 2, "query-api")
                .unwrap();
        let options = ApiOptions {
            brokers: "127.0.0.1:1".into(),
            dev_admin_key: Some(DEV_KEY.into()),
            link_secret: Some("test".into()),
            ..ApiOptions::local_defaults()
        };
        AppState::new(store::Store::new(pool), options).unwrap()
    }
}
