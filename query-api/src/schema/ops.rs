//! Queries for operators and administrators: the caller itself, the dead-letter queue,
//! what the consumers rejected, customers and API keys.

use async_graphql::{Context, Object, Result};

use super::error::ApiError;
use super::ops_types::{ApiKey, Caller, Customer, DeadLetter, DeadLetterPage, Reject, RejectKind};
use super::{api, caller};
use crate::dlq;

/// Most dead letters or rejects in one page.
pub const MAX_OPS_PAGE: i32 = 500;

#[derive(Default)]
pub struct OpsQuery;

#[Object]
impl OpsQuery {
    /// The caller: user, role and, for a customer, its customer id.
    async fn me(&self, ctx: &Context<'_>) -> Result<Caller> {
        Ok(Caller(caller(ctx)?.clone()))
    }

    /// Messages the bridge refused, newest first, each with its error code, reason and
    /// payload, read from the dead-letter topic (admins and operators).
    async fn dead_letters(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 50, desc = "1..=500.")] first: i32,
        #[graphql(desc = "`nextCursor` of the previous page.")] before: Option<String>,
    ) -> Result<DeadLetterPage> {
        caller(ctx)?.require_staff("the dead-letter queue")?;
        if !(1..=MAX_OPS_PAGE).contains(&first) {
            return Err(ApiError::bad_input("first", format!("first must be in 1..={MAX_OPS_PAGE}")).into());
        }
        let before = match before {
            None => None,
            Some(text) => Some(
                dlq::decode_cursor(&text)
                    .ok_or_else(|| ApiError::bad_input("before", "before is not a cursor from this API"))?,
            ),
        };
        let reader = &api(ctx).dlq;
        let page = reader.page(usize::try_from(first).unwrap_or(1), before).await.map_err(|error| {
            tracing::warn!(%error, topic = reader.topic(), "Dead-letter topic not readable.");
            ApiError::Unavailable(format!("the dead-letter topic cannot be read now: {error}"))
        })?;
        Ok(DeadLetterPage {
            topic: reader.topic().to_owned(),
            items: page.records.into_iter().map(DeadLetter).collect(),
            next_cursor: page.next.as_ref().map(dlq::opaque_cursor),
            retained: page.retained,
        })
    }

    /// Records a consumer could not apply (the processor's telemetry and device-event
    /// rejects, the billing worker's refused events), newest first (admins and operators).
    async fn rejects(
        &self,
        ctx: &Context<'_>,
        kind: RejectKind,
        #[graphql(default = 50, desc = "1..=500.")] first: i32,
    ) -> Result<Vec<Reject>> {
        caller(ctx)?.require_staff("rejected records")?;
        if !(1..=MAX_OPS_PAGE).contains(&first) {
            return Err(ApiError::bad_input("first", format!("first must be in 1..={MAX_OPS_PAGE}")).into());
        }
        let rows = api(ctx).store.rejects(kind.source(), i64::from(first)).await?;
        Ok(rows.into_iter().map(Reject).collect())
    }

    /// Customer accounts (admins and operators).
    async fn customers(&self, ctx: &Context<'_>) -> Result<Vec<Customer>> {
        caller(ctx)?.require_staff("customers")?;
        Ok(api(ctx).store.customers().await?.into_iter().map(Customer).collect())
    }

    /// API keys, without their secrets (admins).
    async fn api_keys(&self, ctx: &Context<'_>) -> Result<Vec<ApiKey>> {
        caller(ctx)?.require_admin("API keys")?;
        Ok(api(ctx).store.api_keys().await?.into_iter().map(ApiKey).collect())
    }
}
