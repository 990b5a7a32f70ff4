//! What the mutations and the seed's `POST` endpoints do, once for both: check the
//! caller's role, validate with core's rules (the same the projections apply), refuse
//! the whole command with a typed error naming the field, else publish the events.
//!
//! Fields in errors are the event's (snake_case, as on the wire); the GraphQL layer
//! renames them to the input's camelCase. Tariff documents keep their JSON paths
//! (`components[0].slabs[1]`).

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::Timestamp;
use rust_decimal::Decimal;
use smartmeter_billing_worker::tariffs::{Admitted, Refusal, TariffBook};
use smartmeter_core::billing::events::{TariffAssigned, TariffVersionPublished};
use smartmeter_core::billing::{Phase, TariffDocument, TariffError};
use smartmeter_core::device_events::{
    DeviceDecommissioned, DeviceEvent, DeviceEventError, DeviceRegistered, DeviceUpdated,
    SANCTIONED_LOAD_MAX_KW,
};
use smartmeter_core::DeviceId;

use crate::auth::Principal;
use crate::publish::{Publisher, Receipt};
use crate::schema::error::ApiError;
use crate::store::{ReplayJobRow, Store};

/// Everything a command needs.
#[derive(Clone)]
pub struct Commands {
    pub store: Store,
    pub publisher: Publisher,
}

#[derive(Debug, Clone, Default)]
pub struct RegisterDevice {
    pub device_id: String,
    pub name: Option<String>,
    pub location: Option<String>,
    pub time_zone: String,
    pub tariff_id: Option<String>,
    pub sanctioned_load_kw: Option<Decimal>,
    pub customer_id: Option<String>,
    /// For the tariff assignment published with the registration.
    pub phase: Option<Phase>,
    pub connected_load_kw: Option<Decimal>,
    /// First local day the tariff applies; default: the first day of the device's
    /// current local month (wall clock).
    pub tariff_effective_from: Option<Date>,
}

#[derive(Debug, Clone, Default)]
pub struct UpdateDevice {
    pub device_id: String,
    pub name: Option<String>,
    pub location: Option<String>,
    pub time_zone: Option<String>,
    pub tariff_id: Option<String>,
    pub sanctioned_load_kw: Option<Decimal>,
    pub customer_id: Option<String>,
}

#[derive(Debug, Clone)]
pub struct AssignTariff {
    pub device_id: String,
    pub tariff_id: String,
    pub effective_from: Date,
    pub sanctioned_load_kw: Option<Decimal>,
    pub phase: Option<Phase>,
    pub connected_load_kw: Option<Decimal>,
}

/// The outcome of publishing a tariff version.
#[derive(Debug, Clone)]
pub struct PublishedVersion {
    pub tariff_id: String,
    pub version: u32,
    /// `None` when the same document was published before (nothing sent again).
    pub receipt: Option<Receipt>,
    pub event_id: String,
}

pub fn device_id_field(argument: &'static str, field: &str, text: &str) -> Result<DeviceId, ApiError> {
    DeviceId::parse(text).map_err(|error| ApiError::bad_field(argument, field, format!("{field}: {error}")))
}

/// The field a device event's validation error is about.
fn device_event_field(error: &DeviceEventError) -> &'static str {
    match error {
        DeviceEventError::UnknownTimeZone(_) => "time_zone",
        DeviceEventError::TooLong { field } | DeviceEventError::Empty { field } => field,
        DeviceEventError::SanctionedLoad(_) => "sanctioned_load_kw",
        DeviceEventError::UnknownType(_) | DeviceEventError::Data(_) => "input",
    }
}

fn validate_device_event(event: &DeviceEvent) -> Result<(), ApiError> {
    event
        .validate()
        .map_err(|error| ApiError::bad_field("input", device_event_field(&error), error.to_string()))
}

fn check_load(field: &'static str, kw: Option<Decimal>) -> Result<(), ApiError> {
    match kw {
        Some(kw) if kw < Decimal::ZERO || kw > Decimal::from(SANCTIONED_LOAD_MAX_KW) => {
            Err(ApiError::bad_field(
                "input",
                field,
                format!("{field} {kw} kW is outside 0..={SANCTIONED_LOAD_MAX_KW}"),
            ))
        }
        _ => Ok(()),
    }
}

/// The path of the faulty part of a tariff document, as the document spells it.
pub fn tariff_error_field(error: &TariffError) -> Option<String> {
    Some(match error {
        TariffError::Json(_) | TariffError::EmptyHistory => return None,
        TariffError::InvalidCurrency { .. } => "currency".into(),
        TariffError::UnknownTimeZone { .. } => "time_zone".into(),
        TariffError::Empty { at, field } if at == "tariff" => (*field).into(),
        TariffError::Empty { at, field } => format!("{at}.{field}"),
        TariffError::NegativeRate { at, .. }
        | TariffError::NegativeLimit { at, .. }
        | TariffError::LimitsNotAscending { at, .. }
        | TariffError::OpenLimitNotLast { at }
        | TariffError::LastBandClosed { at }
        | TariffError::TimeOfUseNotOnTheHour { at, .. }
        | TariffError::TimeOfUseEmptyBand { at, .. }
        | TariffError::TimeOfUseOverlap { at, .. }
        | TariffError::TimeOfUseGap { at, .. }
        | TariffError::UnknownGroup { at, .. }
        | TariffError::MinimumRateAmbiguous { at }
        | TariffError::KwSlabsWithoutLoadBasis { at } => at.clone(),
        TariffError::InvalidRounding { .. } => "rounding".into(),
        TariffError::InvalidPeriodMonths { .. } => "period_months".into(),
        TariffError::InVersion { source, .. } => return tariff_error_field(source),
        TariffError::MixedTariffs { .. } => "tariff_id".into(),
        TariffError::InconsistentHistory { what, .. } => (*what).into(),
        TariffError::VersionsNotOrdered { .. } => "version".into(),
    })
}

/// Reads a tariff document from JSON, naming the path of what does not fit.
pub fn parse_tariff_document(json: &serde_json::Value) -> Result<TariffDocument, ApiError> {
    serde_path_to_error::deserialize(json).map_err(|error| {
        let mut path = error.path().to_string();
        let mut message = format!("not a tariff document: {}", error.inner());
        // Components are internally tagged (`kind`), so serde can only say which one
        // failed; look inside it for the field.
        let segments: Vec<&serde_path_to_error::Segment> = error.path().iter().collect();
        if let [serde_path_to_error::Segment::Map { key }, serde_path_to_error::Segment::Seq { index }, ..] =
            segments[..]
        {
            if key == "components" {
                let at = format!("components[{index}]");
                if let Some((inner, reason)) = locate_in_component(&json["components"][index], &at) {
                    path = inner;
                    message = format!("not a tariff document: {reason}");
                }
            }
        }
        if path == "." {
            ApiError::bad_input("document", message)
        } else {
            ApiError::bad_field("document", path, message)
        }
    })
}

/// The path and reason of the first fault inside the component `value` at `at`,
/// following `kind` and, for choices, `by` down to the field.
fn locate_in_component(value: &serde_json::Value, at: &str) -> Option<(String, String)> {
    use smartmeter_core::billing::tariff::{
        FixedCharge, KwBand, KwhBand, MinimumCharge, PerKwhCharge, PercentCharge, SlabCharge, TimeOfUseCharge,
    };

    fn check<T: serde::de::DeserializeOwned>(
        value: &serde_json::Value,
        at: &str,
    ) -> Option<(String, String)> {
        serde_path_to_error::deserialize::<_, T>(value).err().map(|error| {
            let inner = error.path().to_string();
            let path = if inner == "." { at.to_owned() } else { format!("{at}.{inner}") };
            (path, error.inner().to_string())
        })
    }

    let mut rest = value.as_object()?.clone();
    let kind = rest.remove("kind")?;
    let rest = serde_json::Value::Object(rest);
    match kind.as_str()? {
        "per_kwh" => check::<PerKwhCharge>(&rest, at),
        "slabs" => check::<SlabCharge>(&rest, at),
        "time_of_use" => check::<TimeOfUseCharge>(&rest, at),
        "fixed" => check::<FixedCharge>(&rest, at),
        "percent" => check::<PercentCharge>(&rest, at),
        "minimum" => check::<MinimumCharge>(&rest, at),
        "choose" => {
            let by = rest.get("by")?.as_str()?;
            let inside = |components: &serde_json::Value, at: String| {
                components
                    .as_array()?
                    .iter()
                    .enumerate()
                    .find_map(|(j, component)| locate_in_component(component, &format!("{at}[{j}]")))
            };
            match by {
                "total_kwh" | "sanctioned_kw" | "connected_kw" => {
                    rest.get("bands")?.as_array()?.iter().enumerate().find_map(|(i, band)| {
                        let band_at = format!("{at}.bands[{i}]");
                        inside(&band["then"], format!("{band_at}.then")).or_else(|| {
                            let mut shallow = band.clone();
                            shallow["then"] = serde_json::json!([]);
                            if by == "total_kwh" {
                                check::<KwhBand>(&shallow, &band_at)
                            } else {
                                check::<KwBand>(&shallow, &band_at)
                            }
                        })
                    })
                }
                "phase" => inside(&rest["single"], format!("{at}.single"))
                    .or_else(|| inside(&rest["three"], format!("{at}.three"))),
                _ => None,
            }
        }
        _ => None,
    }
}

impl Commands {
    async fn check_customer(&self, customer_id: Option<&str>) -> Result<(), ApiError> {
        if let Some(customer_id) = customer_id {
            if !self.store.customer_exists(customer_id).await? {
                return Err(ApiError::bad_field(
                    "input",
                    "customer_id",
                    format!("no customer {customer_id:?}; create it first (createCustomer)"),
                ));
            }
        }
        Ok(())
    }

    async fn check_tariff_published(&self, tariff_id: Option<&str>) -> Result<(), ApiError> {
        if let Some(tariff_id) = tariff_id {
            if self.store.tariff_versions(tariff_id).await?.is_empty() {
                return Err(ApiError::bad_field(
                    "input",
                    "tariff_id",
                    format!("tariff {tariff_id:?} has no published version; publish one first"),
                ));
            }
        }
        Ok(())
    }

    fn publish_failed(error: impl std::fmt::Display, done: &[Receipt]) -> ApiError {
        if done.is_empty() {
            ApiError::Unavailable(format!("{error}; nothing was published, send the command again"))
        } else {
            let ids: Vec<&str> = done.iter().map(|r| r.event_id.as_str()).collect();
            ApiError::Unavailable(format!(
                "{error}; published before it: {} ({}), so repeat only what is missing",
                done.iter().map(|r| r.event_type.as_str()).collect::<Vec<_>>().join(", "),
                ids.join(", ")
            ))
        }
    }

    /// DeviceRegistered, and TariffAssigned when a tariff is given.
    pub async fn register_device(
        &self,
        caller: &Principal,
        input: RegisterDevice,
    ) -> Result<Vec<Receipt>, ApiError> {
        caller.require_staff("registering a device")?;
        let device_id = device_id_field("input", "device_id", &input.device_id)?;
        let registered = DeviceRegistered {
            device_id: device_id.clone(),
            name: input.name,
            location: input.location,
            time_zone: input.time_zone,
            tariff_id: input.tariff_id,
            sanctioned_load_kw: input.sanctioned_load_kw,
            customer_id: input.customer_id,
        };
        let event = DeviceEvent::Registered(registered.clone());
        validate_device_event(&event)?;
        check_load("connected_load_kw", input.connected_load_kw)?;
        if (input.phase.is_some()
            || input.connected_load_kw.is_some()
            || input.tariff_effective_from.is_some())
            && registered.tariff_id.is_none()
        {
            return Err(ApiError::bad_field(
                "input",
                "tariff_id",
                "phase, connected load and tariff start belong to a tariff assignment: give tariff_id too",
            ));
        }
        self.check_customer(registered.customer_id.as_deref()).await?;
        self.check_tariff_published(registered.tariff_id.as_deref()).await?;
        let assignment = registered.tariff_id.as_ref().map(|tariff_id| {
            let zone = TimeZone::get(&registered.time_zone).unwrap_or(TimeZone::UTC);
            TariffAssigned {
                device_id: device_id.clone(),
                tariff_id: tariff_id.clone(),
                effective_from: input
                    .tariff_effective_from
                    .unwrap_or_else(|| Timestamp::now().to_zoned(zone).date().first_of_month()),
                sanctioned_load_kw: registered.sanctioned_load_kw,
                phase: input.phase,
                connected_load_kw: input.connected_load_kw,
            }
        });
        let mut receipts = Vec::new();
        receipts
            .push(self.publisher.device_event(&event).await.map_err(|e| Self::publish_failed(e, &receipts))?);
        if let Some(assignment) = assignment {
            receipts.push(
                self.publisher
                    .tariff_assigned(&assignment)
                    .await
                    .map_err(|e| Self::publish_failed(e, &receipts))?,
            );
        }
        Ok(receipts)
    }

    pub async fn update_device(&self, caller: &Principal, input: UpdateDevice) -> Result<Receipt, ApiError> {
        caller.require_staff("updating a device")?;
        let device_id = device_id_field("input", "device_id", &input.device_id)?;
        let update = DeviceUpdated {
            device_id: device_id.clone(),
            name: input.name,
            location: input.location,
            time_zone: input.time_zone,
            tariff_id: input.tariff_id,
            sanctioned_load_kw: input.sanctioned_load_kw,
            customer_id: input.customer_id,
        };
        if update == DeviceUpdated::of(device_id.clone()) {
            return Err(ApiError::bad_input("input", "nothing to update: give at least one field"));
        }
        let event = DeviceEvent::Updated(update.clone());
        validate_device_event(&event)?;
        if self.store.device(&device_id).await?.is_none() {
            return Err(ApiError::NotFound(format!("no device {device_id}")));
        }
        self.check_customer(update.customer_id.as_deref()).await?;
        self.check_tariff_published(update.tariff_id.as_deref()).await?;
        self.publisher.device_event(&event).await.map_err(|e| Self::publish_failed(e, &[]))
    }

    pub async fn decommission_device(
        &self,
        caller: &Principal,
        device_id: &str,
        reason: Option<String>,
    ) -> Result<Receipt, ApiError> {
        caller.require_staff("decommissioning a device")?;
        let device_id = device_id_field("deviceId", "device_id", device_id)?;
        let event =
            DeviceEvent::Decommissioned(DeviceDecommissioned { device_id: device_id.clone(), reason });
        event.validate().map_err(|error| ApiError::bad_input("reason", error.to_string()))?;
        match self.store.device(&device_id).await? {
            None => return Err(ApiError::NotFound(format!("no device {device_id}"))),
            Some(device) if device.lifecycle == "decommissioned" => {
                return Err(ApiError::bad_input("deviceId", format!("{device_id} is decommissioned already")))
            }
            Some(_) => {}
        }
        self.publisher.device_event(&event).await.map_err(|e| Self::publish_failed(e, &[]))
    }

    /// Validated as the billing worker admits versions (core's `Tariff` and
    /// `TariffHistory` over the stored versions) before anything is published.
    pub async fn publish_tariff_version(
        &self,
        caller: &Principal,
        document: &serde_json::Value,
    ) -> Result<PublishedVersion, ApiError> {
        caller.require_admin("publishing a tariff version")?;
        let document = parse_tariff_document(document)?;
        let stored: Vec<TariffDocument> = self
            .store
            .tariff_versions(&document.tariff_id)
            .await?
            .into_iter()
            .map(|row| row.document)
            .collect();
        let mut book = TariffBook::from_documents(stored, 0).map_err(|error| {
            tracing::error!(tariff_id = %document.tariff_id, %error, "Stored tariff versions do not validate.");
            ApiError::Internal
        })?;
        let published = TariffVersionPublished { document: document.clone() };
        let (tariff_id, version, event_id) =
            (document.tariff_id.clone(), document.version, published.event_id());
        match book.admit(document) {
            Ok(Admitted::AlreadyStored) => {
                Ok(PublishedVersion { tariff_id, version, receipt: None, event_id })
            }
            Ok(Admitted::New) => {
                let receipt = self
                    .publisher
                    .tariff_version(&published)
                    .await
                    .map_err(|e| Self::publish_failed(e, &[]))?;
                Ok(PublishedVersion { tariff_id, version, receipt: Some(receipt), event_id })
            }
            Err(refusal) => {
                let field = match &refusal {
                    Refusal::Invalid { source, .. } | Refusal::OutOfOrder { source, .. } => {
                        tariff_error_field(source)
                    }
                    Refusal::Conflict { .. } => Some("version".to_owned()),
                };
                Err(ApiError::BadUserInput { argument: "document", field, message: refusal.to_string() })
            }
        }
    }

    pub async fn assign_tariff(&self, caller: &Principal, input: AssignTariff) -> Result<Receipt, ApiError> {
        caller.require_staff("assigning a tariff")?;
        let device_id = device_id_field("input", "device_id", &input.device_id)?;
        if input.tariff_id.trim().is_empty() {
            return Err(ApiError::bad_field("input", "tariff_id", "tariff_id is empty"));
        }
        check_load("sanctioned_load_kw", input.sanctioned_load_kw)?;
        check_load("connected_load_kw", input.connected_load_kw)?;
        self.check_tariff_published(Some(&input.tariff_id)).await?;
        let assigned = TariffAssigned {
            device_id,
            tariff_id: input.tariff_id,
            effective_from: input.effective_from,
            sanctioned_load_kw: input.sanctioned_load_kw,
            phase: input.phase,
            connected_load_kw: input.connected_load_kw,
        };
        self.publisher.tariff_assigned(&assigned).await.map_err(|e| Self::publish_failed(e, &[]))
    }

    /// A `requested` replay job for the billing worker to claim.
    pub async fn start_billing_replay(
        &self,
        caller: &Principal,
        from_month: Date,
        to_month: Option<Date>,
        device_id: Option<&str>,
    ) -> Result<ReplayJobRow, ApiError> {
        caller.require_staff("starting a billing replay")?;
        if to_month.is_some_and(|to| to < from_month) {
            return Err(ApiError::bad_input("toMonth", "toMonth must not be before fromMonth"));
        }
        let device_id = device_id.map(|id| device_id_field("deviceId", "device_id", id)).transpose()?;
        let job = self
            .store
            .request_replay(from_month, to_month, device_id.as_ref().map(DeviceId::as_str), &caller.user_name)
            .await?;
        tracing::info!(job_id = job.job_id, requested_by = %caller.user_name, "Billing replay requested.");
        Ok(job)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_errors_name_the_path() {
        let json: serde_json::Value =
            serde_json::from_str(include_str!("../../core/tariffs/kseb_lt1_domestic_2019.json")).unwrap();
        let good = &json[0];
        assert!(parse_tariff_document(good).is_ok());
        let mut bad = good.clone();
        bad["components"][0]["bands"][0]["then"][0]["slabs"][1]["rate"] = serde_json::json!(3.7);
        let error = parse_tariff_document(&bad).unwrap_err();
        let ApiError::BadUserInput { argument, field, .. } = &error else { panic!("{error:?}") };
        assert_eq!(*argument, "document");
        assert_eq!(field.as_deref(), Some("components[0].bands[0].then[0].slabs[1].rate"), "{error}");
    }

    #[test]
    fn validation_errors_name_the_component() {
        let json = include_str!("../../core/tariffs/kseb_lt1_domestic_2019.json");
        let mut documents: Vec<TariffDocument> = serde_json::from_str(json).unwrap();
        let mut document = documents.remove(0);
        document.time_zone = "Mars/Olympus".into();
        let error = smartmeter_core::billing::Tariff::new(document).unwrap_err();
        assert_eq!(tariff_error_field(&error).as_deref(), Some("time_zone"));
    }
}
