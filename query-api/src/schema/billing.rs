//! Queries over tariffs, billing periods, invoices and replay jobs. Tariffs are public
//! to every role (they are published prices); periods and invoices follow the device's
//! visibility; replay jobs are for staff.

use std::sync::Arc;

use async_graphql::connection::{Connection, Edge, OpaqueCursor};
use async_graphql::{Context, Object, Result};

use super::billing_types::{BillingPeriod, Invoice, ReplayJob, Tariff, TariffAssignment};
use super::error::ApiError;
use super::query::month_span;
use super::scalars::Month;
use super::{api, caller, check_device, device_id_arg, visible_device};
use crate::store::InvoiceCursor;

/// Most invoices in one page of `invoices`.
pub const MAX_INVOICE_PAGE: i32 = 500;

#[derive(Default)]
pub struct BillingQuery;

#[Object]
impl BillingQuery {
    /// Every tariff with published versions, by id.
    async fn tariffs(&self, ctx: &Context<'_>) -> Result<Vec<Tariff>> {
        caller(ctx)?;
        let mut tariffs: Vec<Tariff> = Vec::new();
        for row in api(ctx).store.tariff_versions_all().await? {
            match tariffs.last_mut() {
                Some(last) if last.versions[0].document.tariff_id == row.document.tariff_id => {
                    last.versions.push(row)
                }
                _ => tariffs.push(Tariff { versions: vec![row] }),
            }
        }
        Ok(tariffs)
    }

    /// One tariff and its versions; `NOT_FOUND` when none is published.
    async fn tariff(&self, ctx: &Context<'_>, tariff_id: String) -> Result<Option<Tariff>> {
        caller(ctx)?;
        let versions = api(ctx).store.tariff_versions(&tariff_id).await?;
        if versions.is_empty() {
            return Err(ApiError::NotFound(format!("no published tariff {tariff_id:?}")).into());
        }
        Ok(Some(Tariff { versions }))
    }

    /// A device's tariff assignments, oldest first.
    async fn tariff_assignments(
        &self,
        ctx: &Context<'_>,
        device_id: String,
    ) -> Result<Vec<TariffAssignment>> {
        let id = visible_device(ctx, &device_id).await?;
        Ok(api(ctx).store.assignments(&id).await?.into_iter().map(TariffAssignment).collect())
    }

    /// A device's billing periods (local months) `fromMonth..=toMonth`, oldest first,
    /// with whether each was invoiced or why not.
    async fn billing_periods(
        &self,
        ctx: &Context<'_>,
        device_id: String,
        from_month: Month,
        to_month: Month,
    ) -> Result<Vec<BillingPeriod>> {
        let id = device_id_arg(&device_id)?;
        month_span(from_month, to_month, "toMonth")?;
        check_device(api(ctx), caller(ctx)?, &id).await?;
        let rows = api(ctx).store.billing_periods(&id, from_month.0, to_month.0).await?;
        Ok(rows.into_iter().map(BillingPeriod).collect())
    }

    /// Invoices and revisions, newest month first (then device, then revision, both
    /// descending), a page at a time. A customer gets its own meters' only.
    async fn invoices(
        &self,
        ctx: &Context<'_>,
        device_id: Option<String>,
        month: Option<Month>,
        #[graphql(default = 50, desc = "Page size, 0..=500.")] first: i32,
        after: Option<String>,
    ) -> Result<Connection<OpaqueCursor<InvoiceCursor>, Invoice>> {
        let caller = caller(ctx)?;
        if !(0..=MAX_INVOICE_PAGE).contains(&first) {
            return Err(
                ApiError::bad_input("first", format!("first must be in 0..={MAX_INVOICE_PAGE}")).into()
            );
        }
        let device = device_id.as_deref().map(device_id_arg).transpose()?;
        if let Some(device) = &device {
            check_device(api(ctx), caller, device).await?;
        }
        let after = match after {
            None => None,
            Some(cursor) => Some(
                <OpaqueCursor<InvoiceCursor> as async_graphql::connection::CursorType>::decode_cursor(
                    &cursor,
                )
                .map_err(|_| ApiError::bad_input("after", "after is not a cursor from this API"))?
                .0,
            ),
        };
        let rows = api(ctx)
            .store
            .invoices(
                device.as_ref().map(|d| d.as_str()),
                month.map(|m| m.0),
                caller.customer_scope(),
                after.as_ref(),
                i64::from(first) + 1,
            )
            .await?;
        let page_size = usize::try_from(first).unwrap_or(0);
        let mut connection = Connection::new(after.is_some(), rows.len() > page_size);
        connection.edges.extend(rows.into_iter().take(page_size).map(|invoice| {
            let cursor = InvoiceCursor {
                month: invoice.month,
                device_id: invoice.device_id.to_string(),
                revision: i32::try_from(invoice.revision).unwrap_or(i32::MAX),
            };
            Edge::new(OpaqueCursor(cursor), Invoice(Arc::new(invoice)))
        }));
        Ok(connection)
    }

    /// One invoice by number (`INV-{device}-{YYYYMM}` or `...-R{n}`); `NOT_FOUND` when
    /// unknown.
    async fn invoice(&self, ctx: &Context<'_>, invoice_number: String) -> Result<Option<Invoice>> {
        let caller = caller(ctx)?;
        let Some(invoice) = api(ctx).store.invoice(&invoice_number).await? else {
            // A customer is refused alike for unknown numbers and others' invoices.
            if caller.customer_scope().is_some() {
                return Err(
                    ApiError::Forbidden(format!("{invoice_number} is not one of your invoices")).into()
                );
            }
            return Err(ApiError::NotFound(format!("no invoice {invoice_number}")).into());
        };
        check_device(api(ctx), caller, &invoice.device_id)
            .await
            .map_err(|_| ApiError::Forbidden(format!("{invoice_number} is not one of your invoices")))?;
        Ok(Some(Invoice(Arc::new(invoice))))
    }

    /// A billing replay's progress (admins and operators).
    async fn replay_job(&self, ctx: &Context<'_>, job_id: i64) -> Result<Option<ReplayJob>> {
        caller(ctx)?.require_staff("replay jobs")?;
        match api(ctx).store.replay_job(job_id).await? {
            Some(row) => Ok(Some(ReplayJob(row))),
            None => Err(ApiError::NotFound(format!("no replay job {job_id}")).into()),
        }
    }

    /// The newest replay jobs first (admins and operators).
    async fn replay_jobs(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 20)] first: i32,
    ) -> Result<Vec<ReplayJob>> {
        caller(ctx)?.require_staff("replay jobs")?;
        if !(1..=1000).contains(&first) {
            return Err(ApiError::bad_input("first", "first must be in 1..=1000").into());
        }
        Ok(api(ctx).store.replay_jobs(i64::from(first)).await?.into_iter().map(ReplayJob).collect())
    }
}
