//! Subscriptions over WebSocket (`graphql-transport-ws` and the older `graphql-ws`).
//! Live data comes from the pipeline's own Kafka events through [`crate::live`], never
//! from polling the database. A customer may follow only its own meters; without a
//! `deviceId`, staff follow the whole fleet and a customer all of its meters (as they
//! were when it subscribed).

use std::collections::HashSet;
use std::sync::Arc;

use async_graphql::{Context, Result, Subscription as GraphqlSubscription};
use futures::{Stream, StreamExt as _};
use tokio::sync::broadcast;

use super::billing_types::Invoice;
use super::error::ApiError;
use super::types::{BillProjection, DeviceStatusChange, LiveReading};
use super::{api, caller, visible_device, Api};
use crate::auth::Principal;
use crate::bill::BillProjector;
use crate::live::{DeviceSet, Feed, SubscriptionSlot, TooManySubscriptions};

pub struct Subscription;

fn full(error: TooManySubscriptions) -> ApiError {
    ApiError::Unavailable(error.to_string())
}

/// The devices a subscription with an optional `deviceId` follows.
async fn device_set(ctx: &Context<'_>, device_id: Option<&str>) -> Result<DeviceSet, ApiError> {
    if let Some(device_id) = device_id {
        let id = visible_device(ctx, device_id).await?;
        return Ok(DeviceSet::one(id.as_str()));
    }
    let caller: &Principal = caller(ctx)?;
    match caller.customer_scope() {
        None => Ok(DeviceSet::All),
        Some(customer) => {
            let ids = api(ctx).store.customer_device_ids(customer).await?;
            Ok(DeviceSet::Only(Arc::new(ids.into_iter().collect::<HashSet<_>>())))
        }
    }
}

#[GraphqlSubscription]
impl Subscription {
    /// Every reading of the device as it crosses the pipeline (the telemetry topic),
    /// before the processor stores it.
    async fn live_readings(
        &self,
        ctx: &Context<'_>,
        device_id: String,
    ) -> Result<impl Stream<Item = LiveReading>> {
        let devices = device_set(ctx, Some(&device_id)).await?;
        let feeds = &api(ctx).feeds;
        let slot = feeds.slot(Feed::Readings).map_err(full)?;
        Ok(feeds.readings(slot, devices).map(LiveReading))
    }

    /// Online/offline changes (DeviceStatusChanged events) of one device, or of every
    /// device the caller may see.
    async fn device_status_changes(
        &self,
        ctx: &Context<'_>,
        device_id: Option<String>,
    ) -> Result<impl Stream<Item = DeviceStatusChange>> {
        let devices = device_set(ctx, device_id.as_deref()).await?;
        let feeds = &api(ctx).feeds;
        let slot = feeds.slot(Feed::DeviceStatus).map_err(full)?;
        Ok(feeds.statuses(slot, devices).map(DeviceStatusChange))
    }

    /// Invoices and revisions as the billing worker issues them (InvoiceIssued /
    /// InvoiceRevised), of one device or of every device the caller may see.
    async fn invoices_issued(
        &self,
        ctx: &Context<'_>,
        device_id: Option<String>,
    ) -> Result<impl Stream<Item = Invoice>> {
        let devices = device_set(ctx, device_id.as_deref()).await?;
        let feeds = &api(ctx).feeds;
        let slot = feeds.slot(Feed::Invoices).map_err(full)?;
        Ok(feeds.invoices(slot, devices).map(Invoice))
    }

    /// The month in progress projected to its end: first as the database has it, then
    /// again after every live reading of the device.
    async fn bill_projection(
        &self,
        ctx: &Context<'_>,
        device_id: String,
    ) -> Result<impl Stream<Item = BillProjection>> {
        let id = visible_device(ctx, &device_id).await?;
        let api: &Api = api(ctx);
        let slot = api.feeds.slot(Feed::BillProjection).map_err(full)?;
        // Subscribed before reading the database, so nothing arriving in between is
        // missed; readings the database already counted are at or before the baseline.
        let receiver = api.feeds.reading_receiver();
        let projector = BillProjector::load(&api.store, &id).await?;
        let first = BillProjection::new(
            id.as_str(),
            &projector.tariff_id,
            projector.projection()?,
            projector.month(),
        );
        let state = Projecting { receiver, projector, _slot: slot, feeds: api.feeds.clone() };
        let rest = futures::stream::unfold(state, |mut state| async move {
            loop {
                match state.receiver.recv().await {
                    Ok(reading) => {
                        if !state.projector.apply(&reading) {
                            continue;
                        }
                        match state.projector.project() {
                            Ok(projection) => {
                                let next = BillProjection::new(
                                    state.projector.device_id.as_str(),
                                    &state.projector.tariff_id,
                                    projection,
                                    state.projector.month(),
                                );
                                return Some((next, state));
                            }
                            Err(error) => {
                                tracing::warn!(device_id = %state.projector.device_id, %error,
                                    "Live bill projection not priced.");
                            }
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(skipped)) => {
                        state.feeds.lagged(Feed::BillProjection, skipped);
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        });
        Ok(futures::stream::once(async move { first }).chain(rest))
    }
}

struct Projecting {
    receiver: broadcast::Receiver<Arc<smartmeter_core::telemetry::Reading>>,
    projector: BillProjector,
    /// Counted as open while the stream lives.
    _slot: SubscriptionSlot,
    feeds: crate::live::LiveFeeds,
}
