//! Request parsing, authentication and error shapes through the router, with a
//! database that is never reachable: argument checks answer before any SQL runs, and
//! the development key is checked from memory.

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use serde_json::{json, Value};
use tower::ServiceExt as _;

use crate::tests::DEV_KEY;
use crate::{app, AppState};

fn state() -> AppState {
    // Port 1 refuses connections at once; nothing in these tests needs the database
    // except `internal_errors_hide_the_cause` and the stored-key lookups.
    crate::tests::offline_state()
}

/// Sends `request` with the development admin key unless it has an Authorization.
async fn send(state: &AppState, mut request: Request<Body>) -> (StatusCode, String) {
    if !request.headers().contains_key(header::AUTHORIZATION) {
        request.headers_mut().insert(header::AUTHORIZATION, format!("Bearer {DEV_KEY}").parse().unwrap());
    }
    send_as_is(state, request).await
}

async fn send_as_is(state: &AppState, request: Request<Body>) -> (StatusCode, String) {
    let response = app(state.clone()).oneshot(request).await.unwrap();
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

async fn post(state: &AppState, body: Value) -> (StatusCode, Value) {
    let request = Request::post("/graphql")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let (status, text) = send(state, request).await;
    (status, serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}")))
}

async fn query(query: &str) -> Value {
    let (status, body) = post(&state(), json!({ "query": query })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// The first error's `extensions.code`, and its `argument` when there is one.
fn first_error(body: &Value) -> (String, Option<String>) {
    let error = &body["errors"][0];
    assert!(error.is_object(), "expected an error: {body}");
    let code = error["extensions"]["code"].as_str().unwrap_or_else(|| panic!("no code: {body}"));
    (code.to_owned(), error["extensions"]["argument"].as_str().map(str::to_owned))
}

fn assert_bad_input(body: &Value, argument: Option<&str>) {
    assert_eq!(first_error(body), ("BAD_USER_INPUT".to_owned(), argument.map(str::to_owned)), "{body}");
}

#[tokio::test]
async fn graphiql_page_at_graphiql_and_for_browsers_at_graphql() {
    let state = state();
    let (status, page) = send(&state, Request::get("/graphiql").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("graphiql") && page.contains("/graphql"), "{page}");

    let browser = Request::get("/graphql")
        .header(header::ACCEPT, "text/html,application/xhtml+xml;q=0.9,*/*;q=0.8")
        .body(Body::empty())
        .unwrap();
    let (status, page) = send(&state, browser).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("graphiql"));
}

#[tokio::test]
async fn get_runs_queries_and_refuses_mutations() {
    let state = state();
    let get = Request::get("/graphql?query=%7B__typename%7D").body(Body::empty()).unwrap();
    let (status, text) = send(&state, get).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), json!({ "data": { "__typename": "Query" } }));

    let mutation = Request::get("/graphql?query=mutation%7B__typename%7D").body(Body::empty()).unwrap();
    let (status, text) = send(&state, mutation).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{text}");
    assert!(text.contains("BAD_REQUEST"));

    let no_query = Request::get("/graphql").body(Body::empty()).unwrap();
    assert_eq!(send(&state, no_query).await.0, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn malformed_bodies_batches_and_non_json_are_refused() {
    let state = state();
    let garbage = Request::post("/graphql")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("{not json"))
        .unwrap();
    let (status, text) = send(&state, garbage).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(first_error(&serde_json::from_str(&text).unwrap()).0, "BAD_REQUEST");

    let (status, body) =
        post(&state, json!([{ "query": "{__typename}" }, { "query": "{__typename}" }])).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(first_error(&body).0, "BAD_REQUEST");

    for content_type in [None, Some("text/plain"), Some("application/x-www-form-urlencoded")] {
        let mut request = Request::post("/graphql");
        if let Some(content_type) = content_type {
            request = request.header(header::CONTENT_TYPE, content_type);
        }
        let request = request.body(Body::from(r#"{"query":"{__typename}"}"#)).unwrap();
        assert_eq!(send(&state, request).await.0, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{content_type:?}");
    }
    let with_charset = Request::post("/graphql")
        .header(header::CONTENT_TYPE, "application/json; charset=utf-8")
        .body(Body::from(r#"{"query":"{__typename}"}"#))
        .unwrap();
    assert_eq!(send(&state, with_charset).await.0, StatusCode::OK);

    let huge = Request::post("/graphql")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(" ".repeat(crate::http::MAX_BODY_BYTES + 1)))
        .unwrap();
    assert_eq!(send(&state, huge).await.0, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn syntax_and_schema_errors_have_graphql_codes() {
    assert_eq!(first_error(&query("{ devices { ").await).0, "GRAPHQL_PARSE_FAILED");
    assert_eq!(first_error(&query("{ noSuchField }").await).0, "GRAPHQL_VALIDATION_FAILED");
    assert_eq!(first_error(&query("{ device { deviceId } }").await).0, "GRAPHQL_VALIDATION_FAILED");
    let (status, body) = post(
        &state(),
        json!({ "query": "query A { __typename } query B { __typename }", "operationName": "C" }),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(first_error(&body).0, "BAD_REQUEST");
}

#[tokio::test]
async fn bad_device_ids_are_refused_before_any_sql() {
    for id in ["", "a/b", "smartmeter/+/x", &"x".repeat(65)] {
        let body = query(&format!(r#"{{ device(deviceId: {id:?}) {{ deviceId }} }}"#)).await;
        assert_bad_input(&body, Some("deviceId"));
        assert!(body["data"]["device"].is_null(), "{body}");
    }
}

#[tokio::test]
async fn time_ranges_are_checked() {
    let same = query(
        r#"{ readings(deviceId: "MAC000002", from: "2013-01-01T00:00:00Z", to: "2013-01-01T00:00:00Z") { ts } }"#,
    )
    .await;
    assert_bad_input(&same, Some("to"));
    let backwards = query(
        r#"{ hourlyEnergy(deviceId: "MAC000002", from: "2013-01-02T00:00:00Z", to: "2013-01-01T00:00:00Z") { energyKwh } }"#,
    )
    .await;
    assert_bad_input(&backwards, Some("to"));
    let too_long = query(
        r#"{ hourlyEnergy(deviceId: "MAC000002", from: "2013-01-01T00:00:00Z", to: "2014-01-02T00:00:01Z") { energyKwh } }"#,
    )
    .await;
    assert_bad_input(&too_long, Some("to"));
    let days_backwards = query(
        r#"{ dailyEnergy(deviceId: "MAC000002", fromDate: "2013-01-02", toDate: "2013-01-01") { hours } }"#,
    )
    .await;
    assert_bad_input(&days_backwards, Some("toDate"));
    let decades = query(
        r#"{ dailyEnergy(deviceId: "MAC000002", fromDate: "2000-01-01", toDate: "2013-01-01") { hours } }"#,
    )
    .await;
    assert_bad_input(&decades, Some("toDate"));
}

#[tokio::test]
async fn malformed_scalars_fail_validation_as_bad_input() {
    let no_offset = query(
        r#"{ readings(deviceId: "m", from: "2013-01-01T00:00:00", to: "2013-01-02T00:00:00Z") { ts } }"#,
    )
    .await;
    assert_bad_input(&no_offset, None);
    assert!(no_offset["data"].is_null());
    let bad_date =
        query(r#"{ dailyEnergy(deviceId: "m", fromDate: "2013-02-30", toDate: "2013-03-01") { hours } }"#)
            .await;
    assert_bad_input(&bad_date, None);

    // Through variables too.
    let (_, body) = post(
        &state(),
        json!({
            "query": "query DailyEnergy($from: Date!) { dailyEnergy(deviceId: \"m\", fromDate: $from, toDate: \"2013-01-01\") { hours } }",
            "variables": { "from": "01/01/2013" },
        }),
    )
    .await;
    assert_bad_input(&body, None);
}

#[tokio::test]
async fn limits_are_checked() {
    for limit in [0, 100_001, -1] {
        let body = query(&format!(
            r#"{{ readings(deviceId: "m", from: "2013-01-01T00:00:00Z", to: "2013-01-02T00:00:00Z", limit: {limit}) {{ ts }} }}"#
        ))
        .await;
        assert_bad_input(&body, Some("limit"));
    }
    for first in [-1, 1_001] {
        let body = query(&format!("{{ devices(first: {first}) {{ edges {{ cursor }} }} }}")).await;
        assert_bad_input(&body, Some("first"));
    }
    let body = query(r#"{ devices(after: "not a cursor") { edges { cursor } } }"#).await;
    assert_bad_input(&body, Some("after"));
}

#[tokio::test]
async fn depth_and_complexity_are_limited() {
    let deep = "{ __schema { types { fields { type { ofType { ofType { ofType { ofType { ofType { ofType { name } } } } } } } } } } }";
    let body = query(deep).await;
    assert_eq!(first_error(&body).0, "GRAPHQL_VALIDATION_FAILED", "{body}");
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("too deep"), "{body}");

    let wide: String = (0..600).map(|i| format!(r#"d{i}: device(deviceId: "m") {{ deviceId }} "#)).collect();
    let body = query(&format!("{{ {wide} }}")).await;
    assert_eq!(first_error(&body).0, "GRAPHQL_VALIDATION_FAILED", "{body}");
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("too complex"), "{body}");
}

#[tokio::test]
async fn internal_errors_hide_the_cause() {
    let body = query(r#"{ device(deviceId: "MAC000002") { deviceId } }"#).await;
    assert_eq!(first_error(&body).0, "INTERNAL");
    assert_eq!(body["errors"][0]["message"], "Internal error.");
    assert!(!body.to_string().contains("127.0.0.1") && !body.to_string().contains("secret"), "{body}");
}

#[tokio::test]
async fn health_is_unavailable_until_postgres_is_checked() {
    let state = state();
    let (status, text) = send_as_is(&state, Request::get("/health").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let report: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(report["status"], "degraded");
    assert_eq!(report["components"]["postgres"]["state"], "unknown");

    state.health.up(crate::ops::POSTGRES);
    let (status, _) = send_as_is(&state, Request::get("/health").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "the live consumer's kafka is still unknown");
    state.health.up(crate::live::KAFKA);
    let (status, text) = send_as_is(&state, Request::get("/health").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{text}");
}

#[tokio::test]
async fn metrics_count_operations_with_bounded_labels() {
    let state = state();
    for (name, query) in
        [("Device", "query Device { __typename }"), ("MyOwnName", "query MyOwnName { __typename }")]
    {
        let (status, _) = post(&state, json!({ "query": query, "operationName": name })).await;
        assert_eq!(status, StatusCode::OK);
    }
    // Named in the document only, no operationName.
    post(&state, json!({ "query": "query DailyEnergy { __typename }" })).await;
    post(&state, json!({ "query": "{ nope }" })).await;

    let (status, text) = send(&state, Request::get("/metrics").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    for line in [
        r#"smartmeter_graphql_requests_total{operation="Device"} 1"#,
        r#"smartmeter_graphql_requests_total{operation="DailyEnergy"} 1"#,
        r#"smartmeter_graphql_requests_total{operation="other"} 2"#,
        r#"smartmeter_graphql_request_duration_seconds_count{operation="Device"} 1"#,
        r#"smartmeter_graphql_errors_total{code="GRAPHQL_VALIDATION_FAILED",operation="other"} 1"#,
        "smartmeter_db_pool_max_connections 2",
        r#"smartmeter_http_requests_total{route="/graphql",status="2xx"} 4"#,
        "smartmeter_db_pool_connections 0",
        "smartmeter_db_pool_idle_connections 0",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
    }
    assert!(!text.contains("MyOwnName"));
}

#[tokio::test]
async fn every_route_but_health_and_graphiql_needs_a_key() {
    let state = state();
    let routes = [
        ("GET", "/graphql?query=%7B__typename%7D"),
        ("POST", "/graphql"),
        ("GET", "/api/devices"),
        ("POST", "/api/devices"),
        ("GET", "/api/devices/MAC000002/readings"),
        ("GET", "/api/billing/MAC000002?month=2013-01"),
        ("GET", "/api/invoices/INV-MAC000002-201301"),
        ("GET", "/api/invoices/INV-MAC000002-201301/pdf"),
        ("GET", "/api/tariffs"),
        ("POST", "/api/tariffs"),
        ("GET", "/metrics"),
    ];
    for (method, path) in routes {
        for authorization in [None, Some("Bearer smk_0000000000000000_wrong"), Some("Basic YWRtaW46YWRtaW4=")]
        {
            let mut request = Request::builder().method(method).uri(path);
            request = request.header(header::CONTENT_TYPE, "application/json");
            if let Some(value) = authorization {
                request = request.header(header::AUTHORIZATION, value);
            }
            let request = request.body(Body::from(r#"{"query":"{__typename}"}"#)).unwrap();
            let (status, text) = send_as_is(&state, request).await;
            // A wrong smk_ token is looked up in the (unreachable) database: 503, never 200.
            let expected = if authorization.is_some_and(|a| a.contains("smk_")) {
                [StatusCode::UNAUTHORIZED, StatusCode::SERVICE_UNAVAILABLE]
            } else {
                [StatusCode::UNAUTHORIZED, StatusCode::UNAUTHORIZED]
            };
            assert!(expected.contains(&status), "{method} {path} with {authorization:?}: {status} {text}");
            assert!(!text.contains("__typename\":\"Query"), "{text}");
        }
    }
    let (status, _) = send_as_is(&state, Request::get("/graphiql").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = send_as_is(&state, Request::get("/health").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "answers (degraded) without a key");

    let (status, text) =
        send_as_is(&state, Request::get("/graphql?query=%7B__typename%7D").body(Body::empty()).unwrap())
            .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(first_error(&serde_json::from_str(&text).unwrap()).0, "UNAUTHENTICATED");
}

#[tokio::test]
async fn the_dev_key_is_an_admin() {
    let (status, body) =
        post(&state(), json!({ "query": "{ me { userName role customerId keyId } }" })).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body["data"]["me"],
        json!({ "userName": "dev-admin", "role": "ADMIN", "customerId": null, "keyId": "dev" })
    );
}
