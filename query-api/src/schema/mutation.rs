//! Mutations. Device and tariff commands are validated with core's rules and
//! published as events (the processor and billing worker project them; the API writes
//! none of their tables); a replay is requested by a `replay_jobs` row the billing
//! worker claims; customers and API keys are the API's own tables.
//!
//! Roles: registering, updating and decommissioning devices, assigning tariffs and
//! starting replays need admin or operator; publishing tariff versions and managing
//! customers and keys need admin. Customers may not change anything.

use async_graphql::{Context, InputObject, Json, Object, Result};
use jiff::Timestamp;
use rust_decimal::Decimal;

use super::billing_types::{EventReceipt, ReplayJob, SupplyPhase, TariffVersionReceipt};
use super::error::ApiError;
use super::ops_types::{ApiKey, CreatedApiKey, Customer};
use super::scalars::{Date, DateTime, Month};
use super::{api, caller};
use crate::auth::{self, Role};
use crate::commands::{AssignTariff, RegisterDevice, UpdateDevice};
use crate::store::access::{NewKey, NewKeyError};

/// A meter joins the fleet (or a discovered one is completed).
#[derive(InputObject)]
pub struct RegisterDeviceInput {
    pub device_id: String,
    pub name: Option<String>,
    pub location: Option<String>,
    /// IANA time zone, e.g. `Asia/Kolkata`, `Europe/London`.
    pub time_zone: String,
    /// Also published as a TariffAssigned event (billing uses that).
    pub tariff_id: Option<String>,
    pub sanctioned_load_kw: Option<Decimal>,
    /// The customer account the meter belongs to (must exist).
    pub customer_id: Option<String>,
    /// For the tariff assignment.
    pub phase: Option<SupplyPhase>,
    pub connected_load_kw: Option<Decimal>,
    /// First local day the tariff applies; default: the first day of the device's
    /// current local month.
    pub tariff_effective_from: Option<Date>,
}

/// Fields to change; absent fields stay as they are. A new time zone re-buckets the
/// device's stored energy. Use `assignTariff` to change what billing uses.
#[derive(InputObject)]
pub struct UpdateDeviceInput {
    pub device_id: String,
    pub name: Option<String>,
    pub location: Option<String>,
    pub time_zone: Option<String>,
    pub tariff_id: Option<String>,
    pub sanctioned_load_kw: Option<Decimal>,
    pub customer_id: Option<String>,
}

#[derive(InputObject)]
pub struct AssignTariffInput {
    pub device_id: String,
    pub tariff_id: String,
    /// First local day of the device on which the tariff applies (a period is priced
    /// on the assignment in force on its first day).
    pub effective_from: Date,
    pub sanctioned_load_kw: Option<Decimal>,
    pub phase: Option<SupplyPhase>,
    pub connected_load_kw: Option<Decimal>,
}

/// `time_zone` → `timeZone`: the input's spelling of an event field.
fn camel(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut upper = false;
    for c in field.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// Renames the field of an input-object error to the input's camelCase.
fn input_fields(error: ApiError) -> ApiError {
    match error {
        ApiError::BadUserInput { argument: "input", field: Some(field), message } => {
            ApiError::BadUserInput { argument: "input", field: Some(camel(&field)), message }
        }
        other => other,
    }
}

#[derive(Default)]
pub struct Mutation;

#[Object]
impl Mutation {
    /// Publishes DeviceRegistered (and TariffAssigned when a tariff is given); refused
    /// whole, nothing published, when any field is invalid.
    async fn register_device(
        &self,
        ctx: &Context<'_>,
        input: RegisterDeviceInput,
    ) -> Result<Vec<EventReceipt>> {
        let command = RegisterDevice {
            device_id: input.device_id,
            name: input.name,
            location: input.location,
            time_zone: input.time_zone,
            tariff_id: input.tariff_id,
            sanctioned_load_kw: input.sanctioned_load_kw,
            customer_id: input.customer_id,
            phase: input.phase.map(SupplyPhase::core),
            connected_load_kw: input.connected_load_kw,
            tariff_effective_from: input.tariff_effective_from.map(|d| d.0),
        };
        let receipts =
            api(ctx).commands.register_device(caller(ctx)?, command).await.map_err(input_fields)?;
        Ok(receipts.into_iter().map(EventReceipt::from).collect())
    }

    /// Publishes DeviceUpdated for a known device.
    async fn update_device(&self, ctx: &Context<'_>, input: UpdateDeviceInput) -> Result<EventReceipt> {
        let command = UpdateDevice {
            device_id: input.device_id,
            name: input.name,
            location: input.location,
            time_zone: input.time_zone,
            tariff_id: input.tariff_id,
            sanctioned_load_kw: input.sanctioned_load_kw,
            customer_id: input.customer_id,
        };
        Ok(api(ctx).commands.update_device(caller(ctx)?, command).await.map_err(input_fields)?.into())
    }

    /// Publishes DeviceDecommissioned: the open period closes with a final read; the
    /// history is kept.
    async fn decommission_device(
        &self,
        ctx: &Context<'_>,
        device_id: String,
        reason: Option<String>,
    ) -> Result<EventReceipt> {
        Ok(api(ctx).commands.decommission_device(caller(ctx)?, &device_id, reason).await?.into())
    }

    /// Validates a tariff version (a `core/tariffs/*.json` document) with core's rules
    /// and against the stored versions of the tariff, exactly as the billing worker
    /// admits it, then publishes TariffVersionPublished. A fault refuses it whole:
    /// `BAD_USER_INPUT` with `argument: "document"` and `field` the path of the fault.
    async fn publish_tariff_version(
        &self,
        ctx: &Context<'_>,
        document: Json<serde_json::Value>,
    ) -> Result<TariffVersionReceipt> {
        let published = api(ctx).commands.publish_tariff_version(caller(ctx)?, &document.0).await?;
        Ok(TariffVersionReceipt {
            tariff_id: published.tariff_id,
            version: i64::from(published.version),
            event_id: published.event_id,
            already_published: published.receipt.is_none(),
            event: published.receipt.map(EventReceipt::from),
        })
    }

    /// Publishes TariffAssigned: the device is billed on the tariff from `effectiveFrom`.
    async fn assign_tariff(&self, ctx: &Context<'_>, input: AssignTariffInput) -> Result<EventReceipt> {
        let command = AssignTariff {
            device_id: input.device_id,
            tariff_id: input.tariff_id,
            effective_from: input.effective_from.0,
            sanctioned_load_kw: input.sanctioned_load_kw,
            phase: input.phase.map(SupplyPhase::core),
            connected_load_kw: input.connected_load_kw,
        };
        Ok(api(ctx).commands.assign_tariff(caller(ctx)?, command).await.map_err(input_fields)?.into())
    }

    /// Asks the billing worker to re-price `fromMonth..=toMonth` (all months from
    /// `fromMonth` when `toMonth` is absent), of one device or all; follow it with
    /// `replayJob(jobId)`.
    async fn start_billing_replay(
        &self,
        ctx: &Context<'_>,
        from_month: Month,
        to_month: Option<Month>,
        device_id: Option<String>,
    ) -> Result<ReplayJob> {
        let job = api(ctx)
            .commands
            .start_billing_replay(caller(ctx)?, from_month.0, to_month.map(|m| m.0), device_id.as_deref())
            .await?;
        Ok(ReplayJob(job))
    }

    /// A customer account (admins).
    async fn create_customer(
        &self,
        ctx: &Context<'_>,
        customer_id: String,
        name: String,
        email: Option<String>,
    ) -> Result<Customer> {
        caller(ctx)?.require_admin("creating customers")?;
        smartmeter_core::DeviceId::parse(&customer_id).map_err(|_| {
            ApiError::bad_input("customerId", "customerId must be 1 to 64 of letters, digits and . _ : -")
        })?;
        if name.trim().is_empty() || name.chars().count() > 200 {
            return Err(ApiError::bad_input("name", "name must be 1 to 200 characters").into());
        }
        let store = &api(ctx).store;
        if !store.create_customer(&customer_id, name.trim(), email.as_deref()).await? {
            return Err(ApiError::bad_input(
                "customerId",
                format!("customer {customer_id:?} exists already"),
            )
            .into());
        }
        let customer = store.customers().await?.into_iter().find(|c| c.customer_id == customer_id);
        customer.map(Customer).ok_or_else(|| ApiError::Internal.into())
    }

    /// A new API key for `userName` (created with `role` if new; a user keeps one role).
    /// The token is in the answer only (admins).
    async fn create_api_key(
        &self,
        ctx: &Context<'_>,
        user_name: String,
        role: Role,
        #[graphql(desc = "Required for the customer role, refused for the others.")] customer_id: Option<
            String,
        >,
        label: Option<String>,
        expires_at: Option<DateTime>,
    ) -> Result<CreatedApiKey> {
        caller(ctx)?.require_admin("creating API keys")?;
        if user_name.trim().is_empty() || user_name.chars().count() > 200 {
            return Err(ApiError::bad_input("userName", "userName must be 1 to 200 characters").into());
        }
        if (role == Role::Customer) != customer_id.is_some() {
            return Err(ApiError::bad_input(
                "customerId",
                "a customer key needs customerId; other roles take none",
            )
            .into());
        }
        if expires_at.is_some_and(|at| at.0 <= Timestamp::now()) {
            return Err(ApiError::bad_input("expiresAt", "expiresAt is in the past").into());
        }
        let token = auth::new_token().map_err(|error| {
            tracing::error!(%error, "No randomness for a token.");
            ApiError::Internal
        })?;
        let key = NewKey {
            user_name: user_name.trim(),
            role: role.as_str(),
            customer_id: customer_id.as_deref(),
            key_id: &token.key_id,
            token_sha256: &token.sha256,
            label: label.as_deref(),
            expires_at: expires_at.map(|at| at.0),
        };
        let created = api(ctx).store.create_key(&key).await.map_err(|error| match error {
            NewKeyError::RoleMismatch { .. } => ApiError::bad_input("role", error.to_string()),
            NewKeyError::UnknownCustomer(_) => ApiError::bad_input("customerId", error.to_string()),
            NewKeyError::Store(store) => store.into(),
        })?;
        tracing::info!(key_id = %created.key_id, user_name = %created.user_name, role = %created.role,
            created_by = %caller(ctx)?.user_name, "API key created.");
        Ok(CreatedApiKey { token: token.token, key: ApiKey(created) })
    }

    /// Revokes a key: at once on this instance, within 30 seconds on others (admins).
    async fn revoke_api_key(&self, ctx: &Context<'_>, key_id: String) -> Result<ApiKey> {
        caller(ctx)?.require_admin("revoking API keys")?;
        let Some(row) = api(ctx).store.revoke_key(&key_id).await? else {
            return Err(ApiError::NotFound(format!("no API key {key_id}")).into());
        };
        api(ctx).auth.forget();
        tracing::info!(%key_id, revoked_by = %caller(ctx)?.user_name, "API key revoked.");
        Ok(ApiKey(row))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_fields_become_input_fields() {
        assert_eq!(camel("time_zone"), "timeZone");
        assert_eq!(camel("sanctioned_load_kw"), "sanctionedLoadKw");
        assert_eq!(camel("name"), "name");
    }
}
