//! The HTTP surface: GraphQL over POST and GET `/graphql`, GraphiQL at `/graphiql`
//! (and at `GET /graphql` for a browser), `/health` and `/metrics` from core.

use std::time::Instant;

use async_graphql::http::{GraphiQLSource, MultipartOptions};
use async_graphql::parser::types::OperationType;
use async_graphql_axum::GraphQLResponse;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use smartmeter_core::service::ops_http;
use tracing::Instrument as _;

use crate::schema::error::code;
use crate::AppState;

/// Largest GraphQL request body accepted.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

pub fn router(state: AppState) -> Router {
    let graphql = Router::new()
        .route("/graphql", get(graphql_get).post(graphql_post))
        .route("/graphiql", get(graphiql))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state.schema);
    graphql
        .merge(ops_http::router(state.registry, state.health))
        .route_layer(middleware::from_fn(trace_request))
}

/// One span per request with the route, never the raw URI (it may carry a query).
async fn trace_request(matched_path: Option<MatchedPath>, request: Request, next: Next) -> Response {
    let path = matched_path.as_ref().map_or("unmatched", MatchedPath::as_str).to_owned();
    let span = tracing::info_span!("http", method = %request.method(), matched_path = %path);
    let started = Instant::now();
    let response = next.run(request).instrument(span.clone()).await;
    span.in_scope(|| {
        tracing::debug!(
            status = response.status().as_u16(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "Served."
        );
    });
    response
}

fn graphiql_page() -> Html<String> {
    Html(GraphiQLSource::build().endpoint("/graphql").title("smartmeter GraphQL").finish())
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

/// A JSON error body in GraphQL's shape, for requests that never reach the schema.
fn request_error(status: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({
        "errors": [{ "message": message, "extensions": { "code": code::BAD_REQUEST } }]
    });
    (status, Json(body)).into_response()
}

async fn graphql_get(State(schema): State<crate::schema::ApiSchema>, request: Request) -> Response {
    if wants_html(request.headers()) {
        return graphiql_page().into_response();
    }
    let mut graphql_request =
        match async_graphql::http::parse_query_string(request.uri().query().unwrap_or_default()) {
            Ok(parsed) if !parsed.query.is_empty() => parsed,
            _ => {
                return request_error(
                    StatusCode::BAD_REQUEST,
                    "GET /graphql needs ?query=… (and optionally operationName, variables as JSON)",
                )
            }
        };
    // GET must not change state (it can be triggered cross-site): queries only. A
    // query that does not parse goes on, so the schema reports the syntax error.
    if selected_operation_type(&mut graphql_request).is_some_and(|ty| ty != OperationType::Query) {
        let mut response =
            request_error(StatusCode::METHOD_NOT_ALLOWED, "only queries may be sent with GET; use POST");
        response.headers_mut().insert(header::ALLOW, header::HeaderValue::from_static("GET, POST"));
        return response;
    }
    GraphQLResponse::from(schema.execute(graphql_request).await).into_response()
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

async fn graphql_post(
    State(schema): State<crate::schema::ApiSchema>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // JSON only: a cross-site form or `text/plain` POST (no CORS preflight) is refused
    // before it can run anything.
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|value| value.to_str().ok());
    let is_json = content_type
        .and_then(|value| value.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return request_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "send the request as application/json");
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
                "the body is not a GraphQL request (JSON with a `query`)",
            );
        }
    };
    let Ok(graphql_request) = batch.into_single() else {
        return request_error(
            StatusCode::BAD_REQUEST,
            "batched requests are not supported; send one at a time",
        );
    };
    GraphQLResponse::from(schema.execute(graphql_request).await).into_response()
}

#[cfg(test)]
mod tests;
