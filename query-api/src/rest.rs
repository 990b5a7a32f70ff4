//! The seed system's REST API, kept for old clients, served from the same tables and
//! the same commands as GraphQL (shapes in `query-api/README.md`):
//!
//! - `GET /api/devices` → `{"devices": [...], "count": N}`
//! - `POST /api/devices` → 202 `{"message", "device_id", "events": [...]}` (publishes
//!   DeviceRegistered, and TariffAssigned with a tariff)
//! - `GET /api/devices/{id}/readings?start=&end=&limit=` → newest first
//! - `GET /api/billing/{id}?month=YYYY-MM` → the month's invoice, or its state, or the
//!   projection of the month in progress
//! - `GET /api/invoices/{number}` and `GET /api/invoices/{number}/pdf`
//! - `GET /api/tariffs`, `POST /api/tariffs` (a tariff version document)
//!
//! Field names are snake_case as in the MQTT payload; money and exact energy are
//! decimal strings; times are RFC 3339 UTC. Errors: `{"error": message, "code": CODE}`
//! (plus `"field"` for bad input) with the matching HTTP status.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use jiff::Timestamp;
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::{json, Value};
use smartmeter_core::billing::events::InvoiceEvent;
use smartmeter_core::billing::{InvoiceLine, Phase};

use crate::auth::Principal;
use crate::bill::BillProjector;
use crate::commands::{device_id_field, RegisterDevice};
use crate::schema::error::{code, ApiError};
use crate::schema::scalars::{format_month, parse_month};
use crate::schema::{check_device, Api};
use crate::store::{DeviceRow, ReadingRow};
use crate::AppState;

/// Most readings one `GET /api/devices/{id}/readings` returns.
pub const MAX_READINGS: i64 = 10_000;
/// Most devices one `GET /api/devices` returns.
pub const MAX_DEVICES: i64 = 10_000;

/// An [`ApiError`] as a REST response.
pub struct RestError(pub ApiError);

impl From<ApiError> for RestError {
    fn from(error: ApiError) -> Self {
        Self(error)
    }
}

impl From<crate::store::StoreError> for RestError {
    fn from(error: crate::store::StoreError) -> Self {
        Self(error.into())
    }
}

impl IntoResponse for RestError {
    fn into_response(self) -> Response {
        let status = match self.0.code() {
            code::BAD_USER_INPUT => StatusCode::BAD_REQUEST,
            code::NOT_FOUND => StatusCode::NOT_FOUND,
            code::UNAUTHENTICATED => StatusCode::UNAUTHORIZED,
            code::FORBIDDEN => StatusCode::FORBIDDEN,
            code::UNAVAILABLE => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let mut body = json!({ "error": self.0.client_message(), "code": self.0.code() });
        if let ApiError::BadUserInput { field: Some(field), .. } = &self.0 {
            body["field"] = json!(field);
        }
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        }
        response
    }
}

type RestResult = Result<Response, RestError>;

fn ts(at: Option<Timestamp>) -> Value {
    at.map_or(Value::Null, |at| json!(at.to_string()))
}

fn kwh(milli_wh: i64) -> String {
    Decimal::new(milli_wh, 6).to_string()
}

fn device_json(row: &DeviceRow) -> Value {
    json!({
        "device_id": row.device_id,
        "name": row.name,
        "location": row.location,
        "time_zone": row.time_zone,
        "status": match row.online { Some(true) => "online", Some(false) => "offline", None => "unknown" },
        "lifecycle": row.lifecycle,
        "last_seen": ts(row.last_seen_at),
        "newest_reading_at": ts(row.newest_reading_at),
        "firmware_version": row.firmware_version,
        "tariff_id": row.tariff_id,
        "sanctioned_load_kw": row.sanctioned_load_kw,
        "customer_id": row.customer_id,
        "registered_at": ts(row.registered_at),
        "readings_total": row.readings_total,
    })
}

fn reading_json(row: &ReadingRow) -> Value {
    json!({
        "timestamp": row.ts.to_string(),
        "meter_timestamp": row.meter_ts.to_string(),
        "received_at": row.received_at.to_string(),
        "voltage": row.voltage_v,
        "current": row.current_a,
        "power_w": row.power_w,
        "energy_kwh": row.energy_kwh,
        "power_factor": row.power_factor,
        "frequency_hz": row.frequency_hz,
        "rssi": row.rssi,
        "counted_kwh": kwh(row.counted_milli_wh),
        "flags": {
            "clock_unsynced": row.clock_unsynced,
            "late": row.late,
            "too_late": row.too_late,
            "counter_class": row.counter_class,
        },
    })
}

fn lines_json(lines: &[InvoiceLine]) -> Value {
    Value::Array(
        lines
            .iter()
            .map(|line| {
                json!({
                    "name": line.name,
                    "quantity": line.quantity,
                    "unit": line.unit.map(|u| u.to_string()),
                    "rate": line.rate,
                    "amount": line.amount,
                })
            })
            .collect(),
    )
}

fn invoice_json(api: &Api, invoice: &InvoiceEvent) -> Value {
    json!({
        "invoice_id": invoice.invoice_number,
        "invoice_number": invoice.invoice_number,
        "device_id": invoice.device_id.as_str(),
        "month": format_month(invoice.month),
        "revision": invoice.revision,
        "period": { "from": invoice.first_day.to_string(), "to": invoice.last_day.to_string() },
        "time_zone": invoice.time_zone,
        "energy_kwh": invoice.energy_kwh,
        "tariff_id": invoice.tariff_id,
        "tariff_versions": invoice.tariff_versions,
        "currency": invoice.currency.as_str(),
        "lines": lines_json(&invoice.lines),
        "total": invoice.total,
        "revises": invoice.revises,
        "previous_total": invoice.previous_total,
        "difference": invoice.difference,
        "issued_at": invoice.issued_at.to_string(),
        "pdf_url": api.links.invoice_pdf_path(&invoice.invoice_number, Timestamp::now()),
    })
}

#[derive(Debug, Deserialize)]
pub struct DevicesQuery {
    limit: Option<i64>,
}

pub async fn list_devices(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Query(query): Query<DevicesQuery>,
) -> RestResult {
    let limit = query.limit.unwrap_or(1_000);
    if !(1..=MAX_DEVICES).contains(&limit) {
        return Err(ApiError::bad_input("limit", format!("limit must be in 1..={MAX_DEVICES}")).into());
    }
    let filter = crate::store::devices::DeviceFilter {
        customer_id: caller.customer_scope().map(str::to_owned),
        ..Default::default()
    };
    let rows = state.api.store.devices_after(&filter, None, limit).await?;
    let devices: Vec<Value> = rows.iter().map(device_json).collect();
    Ok(Json(json!({ "count": devices.len(), "devices": devices })).into_response())
}

#[derive(Debug, Deserialize)]
pub struct NewDevice {
    device_id: String,
    name: Option<String>,
    location: Option<String>,
    time_zone: Option<String>,
    tariff_id: Option<String>,
    sanctioned_load_kw: Option<Decimal>,
    customer_id: Option<String>,
    phase: Option<Phase>,
    connected_load_kw: Option<Decimal>,
    tariff_effective_from: Option<jiff::civil::Date>,
}

fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, RestError> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let message = format!("the body is not what this endpoint takes: {}", error.inner());
        RestError(if path == "." {
            ApiError::bad_input("body", message)
        } else {
            ApiError::bad_field("body", path, message)
        })
    })
}

pub async fn create_device(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    body: axum::body::Bytes,
) -> RestResult {
    let body: NewDevice = json_body(&body)?;
    let command = RegisterDevice {
        device_id: body.device_id,
        name: body.name,
        location: body.location,
        time_zone: body.time_zone.unwrap_or_else(|| state.default_time_zone.clone()),
        tariff_id: body.tariff_id,
        sanctioned_load_kw: body.sanctioned_load_kw,
        customer_id: body.customer_id,
        phase: body.phase,
        connected_load_kw: body.connected_load_kw,
        tariff_effective_from: body.tariff_effective_from,
    };
    let device_id = command.device_id.clone();
    let receipts = state.api.commands.register_device(&caller, command).await?;
    let events: Vec<Value> =
        receipts.iter().map(|r| json!({ "event_id": r.event_id, "event_type": r.event_type })).collect();
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "message": "device registration accepted", "device_id": device_id, "events": events })),
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
pub struct ReadingsQuery {
    start: Option<String>,
    end: Option<String>,
    limit: Option<i64>,
}

fn instant(argument: &'static str, text: Option<&str>) -> Result<Option<Timestamp>, RestError> {
    text.map(|text| {
        text.parse::<Timestamp>().map_err(|_| {
            RestError(ApiError::bad_input(
                argument,
                format!("{argument} {text:?} is not an RFC 3339 instant"),
            ))
        })
    })
    .transpose()
}

pub async fn device_readings(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Path(device_id): Path<String>,
    Query(query): Query<ReadingsQuery>,
) -> RestResult {
    let id = device_id_field("device_id", "device_id", &device_id)?;
    let limit = query.limit.unwrap_or(100);
    if !(1..=MAX_READINGS).contains(&limit) {
        return Err(ApiError::bad_input("limit", format!("limit must be in 1..={MAX_READINGS}")).into());
    }
    let (start, end) = (instant("start", query.start.as_deref())?, instant("end", query.end.as_deref())?);
    check_device(&state.api, &caller, &id).await?;
    if state.api.store.device(&id).await?.is_none() {
        return Err(ApiError::NotFound(format!("no device {id}")).into());
    }
    let rows = state.api.store.newest_readings(&id, start, end, limit).await?;
    let readings: Vec<Value> = rows.iter().map(reading_json).collect();
    Ok(Json(json!({ "device_id": id.as_str(), "count": readings.len(), "readings": readings }))
        .into_response())
}

#[derive(Debug, Deserialize)]
pub struct BillingQuery {
    month: Option<String>,
}

pub async fn device_billing(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Path(device_id): Path<String>,
    Query(query): Query<BillingQuery>,
) -> RestResult {
    let id = device_id_field("device_id", "device_id", &device_id)?;
    let month = query
        .month
        .as_deref()
        .map(|text| parse_month(text).map_err(|message| RestError(ApiError::bad_input("month", message))))
        .transpose()?;
    check_device(&state.api, &caller, &id).await?;
    let store = &state.api.store;
    if store.device(&id).await?.is_none() {
        return Err(ApiError::NotFound(format!("no device {id}")).into());
    }
    // The month in progress, when it can be projected.
    let projector = BillProjector::load(store, &id).await.ok();
    let Some(month) = month.or(projector.as_ref().map(BillProjector::month)) else {
        return Err(ApiError::bad_input("month", "give ?month=YYYY-MM").into());
    };
    let mut body = json!({ "device_id": id.as_str(), "month": format_month(month) });

    if let Some(invoice) = store.invoice_revisions(&id, month).await?.pop() {
        body["status"] = json!("invoiced");
        body["energy_kwh"] = json!(invoice.energy_kwh);
        body["tariff_id"] = json!(invoice.tariff_id);
        body["currency"] = json!(invoice.currency.as_str());
        body["amount"] = json!(invoice.total);
        body["invoice"] = invoice_json(&state.api, &invoice);
        return Ok(Json(body).into_response());
    }
    let period = store.billing_periods(&id, month, month).await?.pop();
    if let Some(period) = period.as_ref().filter(|p| p.status == "closed") {
        body["status"] = json!(if period.billing_status.as_deref() == Some("unbillable") {
            "unbillable"
        } else {
            "closed_not_invoiced_yet"
        });
        body["energy_kwh"] = json!(kwh(period.energy_milli_wh));
        body["reason"] = json!(period.billing_reason);
        body["amount"] = Value::Null;
        return Ok(Json(body).into_response());
    }
    if let Some(projector) = projector.filter(|p| p.month() == month) {
        let projection = projector.projection()?;
        body["status"] = json!("open");
        body["energy_kwh"] = json!(projection.energy_so_far_kwh);
        body["tariff_id"] = json!(projector.tariff_id);
        body["currency"] = json!(projection.invoice.currency.as_str());
        body["amount"] = Value::Null;
        body["projection"] = json!({
            "as_of": projection.as_of.to_string(),
            "projected_energy_kwh": projection.projected_energy_kwh,
            "projected_amount": projection.invoice.total,
            "elapsed_share": projection.elapsed_share,
            "lines": lines_json(&projection.invoice.lines),
            "slab": projection.slab.slab_name,
            "kwh_to_next_slab": projection.slab.kwh_to_next_slab,
        });
        return Ok(Json(body).into_response());
    }
    if let Some(period) = period {
        body["status"] = json!("open");
        body["energy_kwh"] = json!(kwh(period.energy_milli_wh));
        body["amount"] = Value::Null;
        return Ok(Json(body).into_response());
    }
    Err(ApiError::NotFound(format!("no billing data for {id} in {}", format_month(month))).into())
}

pub async fn get_invoice(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Path(number): Path<String>,
) -> RestResult {
    let invoice = visible_invoice(&state.api, &caller, &number).await?;
    Ok(Json(invoice_json(&state.api, &invoice)).into_response())
}

/// The invoice if the caller may read it; a customer is refused alike for unknown
/// numbers and others' invoices.
pub async fn visible_invoice(
    api: &Api,
    caller: &Principal,
    number: &str,
) -> Result<Arc<InvoiceEvent>, RestError> {
    let refused = || RestError(ApiError::Forbidden(format!("{number} is not one of your invoices")));
    let Some(invoice) = api.store.invoice(number).await? else {
        if caller.customer_scope().is_some() {
            return Err(refused());
        }
        return Err(ApiError::NotFound(format!("no invoice {number}")).into());
    };
    check_device(api, caller, &invoice.device_id).await.map_err(|_| refused())?;
    Ok(Arc::new(invoice))
}

pub async fn list_tariffs(
    State(state): State<AppState>,
    Extension(_caller): Extension<Principal>,
) -> RestResult {
    let mut tariffs: Vec<Value> = Vec::new();
    let mut versions: Vec<Vec<u32>> = Vec::new();
    for row in state.api.store.tariff_versions_all().await? {
        let same = tariffs.last().is_some_and(|t| t["tariff_id"] == json!(row.document.tariff_id));
        let entry = json!({
            "tariff_id": row.document.tariff_id,
            "version": row.document.version,
            "effective_from": row.document.effective_from.to_string(),
            "title": row.document.title,
            "currency": row.document.currency.as_str(),
            "time_zone": row.document.time_zone,
            "published_at": row.published_at.to_string(),
            "document": serde_json::to_value(&row.document).unwrap_or_default(),
        });
        if same {
            *tariffs.last_mut().expect("checked") = entry;
            versions.last_mut().expect("parallel").push(row.document.version);
        } else {
            tariffs.push(entry);
            versions.push(vec![row.document.version]);
        }
    }
    for (tariff, versions) in tariffs.iter_mut().zip(versions) {
        tariff["versions"] = json!(versions);
    }
    Ok(Json(json!({ "count": tariffs.len(), "tariffs": tariffs })).into_response())
}

pub async fn create_tariff(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    body: axum::body::Bytes,
) -> RestResult {
    let document: Value = serde_json::from_slice(&body)
        .map_err(|error| RestError(ApiError::bad_input("body", format!("the body is not JSON: {error}"))))?;
    let published = state.api.commands.publish_tariff_version(&caller, &document).await?;
    let status = if published.receipt.is_some() { StatusCode::ACCEPTED } else { StatusCode::OK };
    Ok((
        status,
        Json(json!({
            "message": if published.receipt.is_some() { "tariff version published" } else { "tariff version already published" },
            "tariff_id": published.tariff_id,
            "version": published.version,
            "event_id": published.event_id,
            "already_published": published.receipt.is_none(),
        })),
    )
        .into_response())
}
