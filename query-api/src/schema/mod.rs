//! The GraphQL schema: transport-free (no axum here); `http` mounts it.
//!
//! - [`query`]: devices, readings, downsampled series, energy per hour, day and month,
//!   counter events, quarantined readings, the bill projection.
//! - [`billing`]: tariffs and assignments, billing periods, invoices, replay jobs.
//! - [`ops`]: the caller, dead letters and rejects, customers and API keys.
//! - [`mutation`]: commands that publish events, replay requests, access management.
//! - [`subscription`]: live readings, status changes, invoices, bill projection.
//! - [`types`], [`billing_types`], [`ops_types`]: output objects.
//! - [`scalars`]: `DateTime`, `Date`, `Month`.
//! - [`error`]: `extensions.code` on every error; internals hidden.
//! - [`metrics`]: per-operation request counters and latency.
//!
//! Every resolver reads the caller ([`crate::auth::Principal`], put in the request or
//! WebSocket session data by `http`) and limits what it returns by role.

pub mod billing;
pub mod billing_types;
pub mod error;
pub mod metrics;
pub mod mutation;
pub mod ops;
pub mod ops_types;
pub mod query;
pub mod scalars;
pub mod subscription;
pub mod types;

use async_graphql::{Context, MergedObject, Schema};
use smartmeter_core::DeviceId;

pub use self::metrics::GraphqlMetrics;
pub use self::mutation::Mutation;
pub use self::subscription::Subscription;
use crate::auth::{Authenticator, Principal};
use crate::commands::Commands;
use crate::dlq::DlqReader;
use crate::links::LinkSigner;
use crate::live::LiveFeeds;
use crate::store::Store;
use error::ApiError;

/// Deepest selection a query may nest.
pub const MAX_DEPTH: usize = 10;
/// Largest query complexity (each selected field counts 1).
pub const MAX_COMPLEXITY: usize = 1_000;

#[derive(MergedObject, Default)]
pub struct Query(query::DeviceQuery, billing::BillingQuery, ops::OpsQuery);

pub type ApiSchema = Schema<Query, Mutation, Subscription>;

/// What every resolver may use; schema data.
#[derive(Clone)]
pub struct Api {
    pub store: Store,
    pub commands: Commands,
    pub feeds: LiveFeeds,
    pub dlq: DlqReader,
    pub links: LinkSigner,
    pub auth: Authenticator,
}

pub fn build(api: Api, metrics: GraphqlMetrics) -> ApiSchema {
    Schema::build(Query::default(), Mutation, Subscription)
        .data(api)
        // First registered is outermost: metrics see the codes `ErrorCodes` adds.
        .extension(metrics)
        .extension(error::ErrorCodes)
        .limit_depth(MAX_DEPTH)
        .limit_complexity(MAX_COMPLEXITY)
        .finish()
}

pub fn api<'a>(ctx: &Context<'a>) -> &'a Api {
    ctx.data_unchecked::<Api>()
}

/// The authenticated caller; `http` refuses requests without one before they get here,
/// so a missing principal means a transport that forgot to set it.
pub fn caller<'a>(ctx: &Context<'a>) -> Result<&'a Principal, ApiError> {
    ctx.data_opt::<Principal>()
        .ok_or_else(|| ApiError::Unauthenticated("no API key: send Authorization: Bearer <token>".into()))
}

pub fn device_id_arg(text: &str) -> Result<DeviceId, ApiError> {
    DeviceId::parse(text).map_err(|error| ApiError::bad_input("deviceId", format!("deviceId: {error}")))
}

/// Whether `caller` may see `device_id`: staff see every device, a customer only its
/// own (an unknown device is refused alike, so nothing leaks about other meters).
pub async fn check_device(api: &Api, caller: &Principal, device_id: &DeviceId) -> Result<(), ApiError> {
    let Some(customer) = caller.customer_scope() else { return Ok(()) };
    match api.store.device_customer(device_id).await? {
        Some(Some(owner)) if owner == customer => Ok(()),
        _ => Err(ApiError::Forbidden(format!("{device_id} is not one of your meters"))),
    }
}

/// The argument parsed and the caller allowed to see it.
pub async fn visible_device(ctx: &Context<'_>, device_id: &str) -> Result<DeviceId, ApiError> {
    let id = device_id_arg(device_id)?;
    check_device(api(ctx), caller(ctx)?, &id).await?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    /// `schema.graphql` beside `Cargo.toml` is the contract clients read; it must be
    /// what the code serves. `UPDATE_SCHEMA=1 cargo test -p smartmeter-query-api` rewrites it.
    #[test]
    fn sdl_matches_schema_graphql() {
        let sdl = crate::tests::offline_state().schema.sdl();
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schema.graphql");
        if std::env::var_os("UPDATE_SCHEMA").is_some() {
            std::fs::write(&path, &sdl).unwrap();
        }
        let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(checked_in == sdl, "schema.graphql is stale; rerun with UPDATE_SCHEMA=1\n{sdl}");
    }
}
