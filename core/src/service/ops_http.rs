//! `/metrics` and `/health` over HTTP for services without an API of their own; the
//! query-api mounts [`router`] beside its GraphQL routes.

use std::net::SocketAddr;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use prometheus::Registry;
use tokio_util::sync::CancellationToken;

use super::health::Health;

#[derive(Clone)]
struct Ops {
    registry: Registry,
    health: Health,
}

pub fn router(registry: Registry, health: Health) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(health_report))
        .with_state(Ops { registry, health })
}

async fn metrics(State(ops): State<Ops>) -> impl IntoResponse {
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], super::metrics::render(&ops.registry))
}

async fn health_report(State(ops): State<Ops>) -> impl IntoResponse {
    let report = ops.health.report();
    let status = if report.status == "ok" { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(report))
}

/// Serves [`router`] on `addr` until `shutdown` is cancelled.
pub async fn serve(
    addr: SocketAddr,
    registry: Registry,
    health: Health,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "Serving /metrics and /health.");
    axum::serve(listener, router(registry, health))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await?;
    Ok(())
}
