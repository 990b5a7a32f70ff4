//! The GraphQL schema: transport-free (no axum here); `http` mounts it.
//!
//! - [`query`]: the query root and its argument checks.
//! - [`types`]: output objects (devices, readings, hourly and daily energy).
//! - [`scalars`]: `DateTime` and `Date`.
//! - [`error`]: `extensions.code` on every error; internals hidden.
//! - [`metrics`]: per-operation request counters and latency.

pub mod error;
pub mod metrics;
pub mod query;
pub mod scalars;
pub mod types;

use async_graphql::{EmptyMutation, EmptySubscription, Schema};

pub use self::metrics::GraphqlMetrics;
pub use self::query::Query;
use crate::store::Store;

/// Deepest selection a query may nest.
pub const MAX_DEPTH: usize = 10;
/// Largest query complexity (each selected field counts 1).
pub const MAX_COMPLEXITY: usize = 1_000;

pub type ApiSchema = Schema<Query, EmptyMutation, EmptySubscription>;

pub fn build(store: Store, metrics: GraphqlMetrics) -> ApiSchema {
    Schema::build(Query::new(store), EmptyMutation, EmptySubscription)
        // First registered is outermost: metrics see the codes `ErrorCodes` adds.
        .extension(metrics)
        .extension(error::ErrorCodes)
        .limit_depth(MAX_DEPTH)
        .limit_complexity(MAX_COMPLEXITY)
        .finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `schema.graphql` beside `Cargo.toml` is the contract clients read; it must be
    /// what the code serves. `UPDATE_SCHEMA=1 cargo test -p smartmeter-query-api` rewrites it.
    #[test]
    fn sdl_matches_schema_graphql() {
        let pool =
            smartmeter_core::service::db::pool("postgres://unused@127.0.0.1:1/none", 1, "query-api").unwrap();
        let metrics = GraphqlMetrics::register(&prometheus::Registry::new()).unwrap();
        let sdl = build(Store::new(pool), metrics).sdl();
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schema.graphql");
        if std::env::var_os("UPDATE_SCHEMA").is_some() {
            std::fs::write(&path, &sdl).unwrap();
        }
        let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(checked_in == sdl, "schema.graphql is stale; rerun with UPDATE_SCHEMA=1\n{sdl}");
    }
}
