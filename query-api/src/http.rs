//! The HTTP surface:
//!
//! - GraphQL over `POST` and `GET /graphql` (GET: queries only), subscriptions over
//!   WebSocket at `/graphql/ws` (and `/graphql` with an upgrade), both
//!   `graphql-transport-ws` and the older `graphql-ws` (`subscriptions-transport-ws`).
//! - The seed's REST API under `/api` ([`crate::rest`]), the invoice PDF at
//!   `/api/invoices/{number}/pdf`.
//! - `/metrics` (admins and operators), `/health` (open), GraphiQL at `/graphiql` (a
//!   static page; every request it sends needs a key).
//!
//! Every route but `/health`, `/graphiql`, GraphiQL for a browser at `GET /graphql` and
//! a signed PDF link needs `Authorization: Bearer <token>` ([`crate::auth`]).

use std::time::Instant;

use async_graphql::http::{GraphiQLSource, MultipartOptions, ALL_WEBSOCKET_PROTOCOLS};
use async_graphql::parser::types::OperationType;
use async_graphql::Data;
use async_graphql_axum::{GraphQLProtocol, GraphQLResponse, GraphQLWebSocket};
use axum::body::Bytes;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{DefaultBodyLimit, FromRequestParts, MatchedPath, Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry};
use serde::Deserialize;
use smartmeter_core::service::metrics;
use tracing::Instrument as _;

use crate::auth::{AuthError, Principal};
use crate::rest::{self, RestError};
use crate::schema::error::{code, ApiError};
use crate::AppState;

/// Largest request body accepted (GraphQL, REST).
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// Request counts and latency by route (the matched path, bounded) and WebSockets open.
#[derive(Clone)]
pub struct HttpMetrics {
    requests: IntCounterVec,
    duration: HistogramVec,
    websockets: IntGauge,
}

impl HttpMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let requests = IntCounterVec::new(
            Opts::new("smartmeter_http_requests_total", "HTTP requests answered, by route and status class."),
            &["route", "status"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new("smartmeter_http_request_duration_seconds", "HTTP request latency, by route.")
                .buckets(vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
            &["route"],
        )?;
        let websockets = IntGauge::with_opts(Opts::new(
            "smartmeter_graphql_websocket_connections",
            "GraphQL WebSocket connections open now.",
        ))?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(websockets.clone()))?;
        Ok(Self { requests, duration, websockets })
    }
}

pub fn router(state: AppState) -> Router {
    let protected = Router::new()
        .route("/api/devices", get(rest::list_devices).post(rest::create_device))
        .route("/api/devices/{device_id}/readings", get(rest::device_readings))
        .route("/api/billing/{device_id}", get(rest::device_billing))
        .route("/api/invoices/{number}", get(rest::get_invoice))
        .route("/api/tariffs", get(rest::list_tariffs).post(rest::create_tariff))
        .route("/metrics", get(metrics_text))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_key));
    let open = Router::new()
        .route("/graphql", get(graphql_get).post(graphql_post))
        .route("/graphql/ws", get(graphql_ws))
        .route("/graphiql", get(graphiql))
        .route("/api/invoices/{number}/pdf", get(invoice_pdf))
        .route("/health", get(health));
    protected
        .merge(open)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .route_layer(middleware::from_fn_with_state(state.clone(), trace_request))
        .with_state(state)
}

/// One span per request with the route, never the raw URI (it may carry a query);
/// counts and times it by route.
async fn trace_request(
    State(state): State<AppState>,
    matched_path: Option<MatchedPath>,
    request: Request,
    next: Next,
) -> Response {
    let path = matched_path.as_ref().map_or("unmatched", MatchedPath::as_str).to_owned();
    let span = tracing::info_span!("http", method = %request.method(), matched_path = %path);
    let started = Instant::now();
    let response = next.run(request).instrument(span.clone()).await;
    let elapsed = started.elapsed();
    let status = response.status();
    let class = match status.as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    };
    state.http_metrics.requests.with_label_values(&[&path, class]).inc();
    state.http_metrics.duration.with_label_values(&[&path]).observe(elapsed.as_secs_f64());
    span.in_scope(|| {
        tracing::debug!(status = status.as_u16(), elapsed_ms = elapsed.as_millis() as u64, "Served.");
    });
    response
}

fn authorization(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::AUTHORIZATION).and_then(|value| value.to_str().ok())
}

fn auth_failure(error: AuthError) -> Response {
    match error {
        AuthError::Unavailable(store) => {
            tracing::error!(error = %store, "API keys not readable.");
            RestError(ApiError::Unavailable("the API keys cannot be checked right now; try again".into()))
                .into_response()
        }
        other => RestError(ApiError::Unauthenticated(other.to_string())).into_response(),
    }
}

/// Refuses a request without a valid key; puts the [`Principal`] in its extensions.
async fn require_key(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    match state.api.auth.authorize(authorization(request.headers())).await {
        Ok(principal) => {
            request.extensions_mut().insert(principal);
            next.run(request).await
        }
        Err(error) => auth_failure(error),
    }
}

async fn metrics_text(
    axum::Extension(caller): axum::Extension<Principal>,
    State(state): State<AppState>,
) -> Response {
    if let Err(error) = caller.require_staff("/metrics") {
        return RestError(error).into_response();
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], metrics::render(&state.registry)).into_response()
}

async fn health(State(state): State<AppState>) -> Response {
    let report = state.health.report();
    let status = if report.status == "ok" { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(report)).into_response()
}

fn graphiql_page() -> Html<String> {
    Html(
        GraphiQLSource::build()
            .endpoint("/graphql")
            .subscription_endpoint("/graphql/ws")
            .title("smartmeter GraphQL (set the Authorization header: Bearer <token>)")
            .finish(),
    )
}

async fn graphiql() -> Html<String> {
    graphiql_page()
}

fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|accept| accept.split(',').any(|part| part.trim().starts_with("text/html")))
}

fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.eq_ignore_ascii_case("websocket"))
}

/// A JSON error body in GraphQL's shape, for requests that never reach the schema.
fn request_error(status: StatusCode, error_code: &str, message: &str) -> Response {
    let body = serde_json::json!({
        "errors": [{ "message": message, "extensions": { "code": error_code } }]
    });
    let mut response = (status, Json(body)).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
    }
    response
}

/// The caller of a GraphQL request over HTTP, or the response refusing it.
async fn graphql_caller(state: &AppState, headers: &HeaderMap) -> Result<Principal, Response> {
    state.api.auth.authorize(authorization(headers)).await.map_err(|error| match error {
        AuthError::Unavailable(store) => {
            tracing::error!(error = %store, "API keys not readable.");
            request_error(
                StatusCode::SERVICE_UNAVAILABLE,
                code::UNAVAILABLE,
                "the API keys cannot be checked right now",
            )
        }
        other => request_error(StatusCode::UNAUTHORIZED, code::UNAUTHENTICATED, &other.to_string()),
    })
}

async fn graphql_get(State(state): State<AppState>, request: Request) -> Response {
    if is_websocket_upgrade(request.headers()) {
        let (mut parts, _) = request.into_parts();
        let protocol = match GraphQLProtocol::from_request_parts(&mut parts, &state).await {
            Ok(protocol) => protocol,
            Err(rejection) => return rejection.into_response(),
        };
        let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &state).await {
            Ok(upgrade) => upgrade,
            Err(rejection) => return rejection.into_response(),
        };
        return graphql_ws(State(state), protocol, parts.headers, upgrade).await;
    }
    if wants_html(request.headers()) {
        return graphiql_page().into_response();
    }
    let principal = match graphql_caller(&state, request.headers()).await {
        Ok(principal) => principal,
        Err(response) => return response,
    };
    let graphql_request =
        match async_graphql::http::parse_query_string(request.uri().query().unwrap_or_default()) {
            Ok(parsed) if !parsed.query.is_empty() => parsed,
            _ => {
                return request_error(
                    StatusCode::BAD_REQUEST,
                    code::BAD_REQUEST,
                    "GET /graphql needs ?query=… (and optionally operationName, variables as JSON)",
                )
            }
        };
    let mut graphql_request = graphql_request.data(principal);
    // GET must not change state (it can be triggered cross-site): queries only. A
    // query that does not parse goes on, so the schema reports the syntax error.
    if selected_operation_type(&mut graphql_request).is_some_and(|ty| ty != OperationType::Query) {
        let mut response = request_error(
            StatusCode::METHOD_NOT_ALLOWED,
            code::BAD_REQUEST,
            "only queries may be sent with GET; use POST",
        );
        response.headers_mut().insert(header::ALLOW, header::HeaderValue::from_static("GET, POST"));
        return response;
    }
    GraphQLResponse::from(state.schema.execute(graphql_request).await).into_response()
}

fn selected_operation_type(request: &mut async_graphql::Request) -> Option<OperationType> {
    let name = request.operation_name.clone();
    let document = request.parsed_query().ok()?;
    match name {
        Some(name) => document.operations.iter().find(|(n, _)| n.map(|n| n.as_str()) == Some(name.as_str())),
        None => document.operations.iter().next(),
    }
    .map(|(_, operation)| operation.node.ty)
}

async fn graphql_post(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let principal = match graphql_caller(&state, &headers).await {
        Ok(principal) => principal,
        Err(response) => return response,
    };
    // JSON only: a cross-site form or `text/plain` POST (no CORS preflight) is refused
    // before it can run anything.
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|value| value.to_str().ok());
    let is_json = content_type
        .and_then(|value| value.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return request_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            code::BAD_REQUEST,
            "send the request as application/json",
        );
    }
    let batch = match async_graphql::http::receive_batch_body(
        content_type.map(str::to_owned),
        body.as_ref(),
        MultipartOptions::default(),
    )
    .await
    {
        Ok(batch) => batch,
        Err(error) => {
            tracing::debug!(%error, "Unreadable GraphQL request.");
            return request_error(
                StatusCode::BAD_REQUEST,
                code::BAD_REQUEST,
                "the body is not a GraphQL request (JSON with a `query`)",
            );
        }
    };
    let Ok(graphql_request) = batch.into_single() else {
        return request_error(
            StatusCode::BAD_REQUEST,
            code::BAD_REQUEST,
            "batched requests are not supported; send one at a time",
        );
    };
    GraphQLResponse::from(state.schema.execute(graphql_request.data(principal)).await).into_response()
}

/// The token of a `connection_init` payload: `Authorization` / `authorization`
/// (`Bearer …`) or `token`.
fn init_authorization(payload: &serde_json::Value) -> Option<String> {
    let header = ["Authorization", "authorization"]
        .iter()
        .find_map(|key| payload.get(key).and_then(serde_json::Value::as_str))
        .map(str::to_owned);
    header.or_else(|| {
        payload.get("token").and_then(serde_json::Value::as_str).map(|token| format!("Bearer {token}"))
    })
}

/// GraphQL over WebSocket. A key in the upgrade request's `Authorization` header is
/// checked before the upgrade (a bad one gets 401); otherwise the `connection_init`
/// payload must carry one, or the connection is closed (graphql-transport-ws: close
/// code 1002 with the reason; graphql-ws: `connection_error`).
async fn graphql_ws(
    State(state): State<AppState>,
    protocol: GraphQLProtocol,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let from_header = match authorization(&headers) {
        Some(value) => match state.api.auth.authorize(Some(value)).await {
            Ok(principal) => Some(principal),
            Err(error) => return auth_failure(error),
        },
        None => None,
    };
    let schema = state.schema.clone();
    let auth = state.api.auth.clone();
    let websockets = state.http_metrics.websockets.clone();
    upgrade.protocols(ALL_WEBSOCKET_PROTOCOLS).on_upgrade(move |stream| async move {
        websockets.inc();
        GraphQLWebSocket::new(stream, schema, protocol)
            .on_connection_init(move |payload| async move {
                let principal = match from_header {
                    Some(principal) => principal,
                    None => auth
                        .authorize(init_authorization(&payload).as_deref())
                        .await
                        .map_err(|error| async_graphql::Error::new(error.to_string()))?,
                };
                let mut data = Data::default();
                data.insert(principal);
                Ok(data)
            })
            .serve()
            .await;
        websockets.dec();
    })
}

#[derive(Debug, Deserialize)]
struct PdfQuery {
    expires: Option<i64>,
    signature: Option<String>,
}

/// The invoice as a PDF, rendered by the billing worker's renderer: for a signed link
/// (`Invoice.pdfUrl`) or a caller allowed to read the invoice.
async fn invoice_pdf(
    State(state): State<AppState>,
    Path(number): Path<String>,
    Query(query): Query<PdfQuery>,
    headers: HeaderMap,
) -> Response {
    let signed = match (query.expires, query.signature.as_deref()) {
        (Some(expires), Some(signature)) => {
            state.api.links.verify(&number, expires, signature, jiff::Timestamp::now())
        }
        _ => false,
    };
    let invoice = if signed {
        match state.api.store.invoice(&number).await {
            Ok(Some(invoice)) => std::sync::Arc::new(invoice),
            Ok(None) => return RestError(ApiError::NotFound(format!("no invoice {number}"))).into_response(),
            Err(error) => return RestError(error.into()).into_response(),
        }
    } else {
        if query.signature.is_some() && authorization(&headers).is_none() {
            return RestError(ApiError::Unauthenticated("the link has expired or is not valid".into()))
                .into_response();
        }
        let principal = match state.api.auth.authorize(authorization(&headers)).await {
            Ok(principal) => principal,
            Err(error) => return auth_failure(error),
        };
        match rest::visible_invoice(&state.api, &principal, &number).await {
            Ok(invoice) => invoice,
            Err(error) => return error.into_response(),
        }
    };
    let rendered =
        tokio::task::spawn_blocking(move || smartmeter_billing_worker::pdf::render(&invoice)).await;
    match rendered {
        Ok(Ok(pdf)) => (
            [
                (header::CONTENT_TYPE, "application/pdf".to_owned()),
                (header::CONTENT_DISPOSITION, format!("inline; filename=\"{number}.pdf\"")),
                (header::CACHE_CONTROL, "private, max-age=300".to_owned()),
            ],
            pdf,
        )
            .into_response(),
        Ok(Err(error)) => {
            tracing::error!(invoice_number = %number, %error, "PDF not rendered.");
            RestError(ApiError::Internal).into_response()
        }
        Err(error) => {
            tracing::error!(invoice_number = %number, %error, "PDF renderer stopped.");
            RestError(ApiError::Internal).into_response()
        }
    }
}

#[cfg(test)]
mod tests;
