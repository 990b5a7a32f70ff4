//! A query API of the test's own on the real services of `infra/up.sh`: a fresh
//! PostgreSQL database (migrated), Kafka topics of its own (named after the test), the
//! live consumer running, the server on a free loopback port. Keys of every role are
//! made through the API itself (`createCustomer`, `createApiKey` with the development
//! admin key).

#![allow(dead_code)]

use std::time::Duration;

use futures::{SinkExt as _, StreamExt as _};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message as _;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::{json, Value};
use smartmeter_core::service::testkit::{self, TestDatabase};
use smartmeter_query_api::{ApiOptions, AppState};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

pub const DEV_KEY: &str = "smartmeter-test-dev-admin-key";
pub const WAIT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct Topics {
    pub telemetry: String,
    pub device_events: String,
    pub tariff_events: String,
    pub invoices: String,
    pub dlq: String,
    pub periods: String,
}

impl Topics {
    pub async fn create(prefix: &str) -> Self {
        let name = |kind: &str| testkit::unique_name(&format!("smartmeter.{kind}.{prefix}"));
        let topics = Self {
            telemetry: name("telemetry"),
            device_events: name("device-events"),
            tariff_events: name("tariff-events"),
            invoices: name("invoices"),
            dlq: name("dlq"),
            periods: name("billing-periods"),
        };
        let brokers = testkit::kafka_brokers();
        for (topic, partitions) in [
            (&topics.telemetry, 3),
            (&topics.device_events, 3),
            (&topics.tariff_events, 1),
            (&topics.invoices, 3),
            (&topics.dlq, 2),
            (&topics.periods, 3),
        ] {
            testkit::create_topic(&brokers, topic, partitions).await.expect("Kafka from infra/up.sh");
        }
        topics
    }
}

pub struct Stack {
    pub db: TestDatabase,
    pub topics: Topics,
    pub state: AppState,
    /// `http://127.0.0.1:<port>`
    pub url: String,
    pub http: reqwest::Client,
    pub shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

pub fn options(topics: &Topics) -> ApiOptions {
    ApiOptions {
        brokers: testkit::kafka_brokers(),
        telemetry_topic: topics.telemetry.clone(),
        device_events_topic: topics.device_events.clone(),
        tariff_events_topic: topics.tariff_events.clone(),
        invoices_topic: topics.invoices.clone(),
        dlq_topic: topics.dlq.clone(),
        publish_timeout: Duration::from_secs(10),
        max_subscriptions: 10_000,
        default_time_zone: "Europe/London".into(),
        dev_admin_key: Some(DEV_KEY.into()),
        link_secret: Some("test link secret".into()),
    }
}

impl Stack {
    /// A new database and topics.
    pub async fn start(prefix: &str) -> Self {
        let db = TestDatabase::create(prefix).await.expect("PostgreSQL from infra/up.sh");
        let topics = Topics::create(prefix).await;
        Self::serve(db, topics, None).await
    }

    /// Over an existing database and topics, optionally with other options.
    pub async fn serve(db: TestDatabase, topics: Topics, options_override: Option<ApiOptions>) -> Self {
        let pool = smartmeter_core::service::db::pool(&db.url, 8, "query-api-test").unwrap();
        smartmeter_core::service::db::migrate(&pool).await.unwrap();
        let options = options_override.unwrap_or_else(|| options(&topics));
        let state = AppState::new(smartmeter_query_api::store::Store::new(pool), options.clone()).unwrap();
        let shutdown = CancellationToken::new();
        let mut tasks = Vec::new();
        tasks.push(tokio::spawn(smartmeter_query_api::live::consume(
            options.brokers.clone(),
            options.live_topics(),
            state.api.feeds.clone(),
            state.health.clone(),
            shutdown.clone(),
        )));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = smartmeter_query_api::app(state.clone());
        let server_shutdown = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(server_shutdown.cancelled_owned())
                .await
                .unwrap();
        }));
        let stack = Self { db, topics, state, url, http: reqwest::Client::new(), shutdown, tasks };
        stack.wait_live().await;
        stack
    }

    /// Waits until the live consumer has its partitions (the `kafka` health component).
    pub async fn wait_live(&self) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let report = self.state.health.report();
            if report.components.get("kafka").is_some_and(|c| format!("{:?}", c.state) == "Up") {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "the live consumer did not start: {report:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn finish(self) {
        self.shutdown.cancel();
        for task in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(20), task).await;
        }
        self.db.drop_database().await.unwrap();
    }

    pub async fn graphql(&self, token: Option<&str>, query: &str, variables: Value) -> (u16, Value) {
        let mut request = self
            .http
            .post(format!("{}/graphql", self.url))
            .json(&json!({ "query": query, "variables": variables }));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("query-api answers");
        let status = response.status().as_u16();
        (status, response.json().await.expect("a JSON body"))
    }

    /// `data` of an operation that must succeed.
    pub async fn data(&self, token: &str, query: &str, variables: Value) -> Value {
        let (status, body) = self.graphql(Some(token), query, variables).await;
        assert_eq!(status, 200, "{body}");
        assert!(body.get("errors").is_none(), "unexpected errors: {body}");
        body["data"].clone()
    }

    /// The first error of an operation that must fail: (code, argument, field).
    pub async fn error(
        &self,
        token: &str,
        query: &str,
        variables: Value,
    ) -> (String, Option<String>, Option<String>) {
        let (_, body) = self.graphql(Some(token), query, variables).await;
        let error = &body["errors"][0];
        assert!(error.is_object(), "expected an error: {body}");
        let text = |v: &Value| v.as_str().map(str::to_owned);
        (
            text(&error["extensions"]["code"]).unwrap_or_else(|| panic!("no code: {body}")),
            text(&error["extensions"]["argument"]),
            text(&error["extensions"]["field"]),
        )
    }

    pub async fn get(&self, token: Option<&str>, path: &str) -> (u16, Value) {
        let mut request = self.http.get(format!("{}{path}", self.url));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    pub async fn post(&self, token: Option<&str>, path: &str, body: Value) -> (u16, Value) {
        let mut request = self.http.post(format!("{}{path}", self.url)).json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    pub async fn create_customer(&self, customer_id: &str, name: &str) {
        self.data(
            DEV_KEY,
            "mutation($id: String!, $name: String!) { createCustomer(customerId: $id, name: $name) { customerId } }",
            json!({ "id": customer_id, "name": name }),
        )
        .await;
    }

    /// A token of a new key for `user` with `role` (ADMIN, OPERATOR, CUSTOMER).
    pub async fn key(&self, user: &str, role: &str, customer_id: Option<&str>) -> String {
        let data = self
            .data(
                DEV_KEY,
                "mutation($user: String!, $role: Role!, $customer: String) {
                   createApiKey(userName: $user, role: $role, customerId: $customer, label: \"test\") {
                     token key { keyId role customerId } } }",
                json!({ "user": user, "role": role, "customer": customer_id }),
            )
            .await;
        data["createApiKey"]["token"].as_str().unwrap().to_owned()
    }

    pub fn ws_url(&self) -> String {
        format!("{}/graphql/ws", self.url.replace("http://", "ws://"))
    }
}

/// SQL against the test database.
pub async fn sql(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

pub async fn produce(topic: &str, key: &str, payload: &str) {
    let producer: FutureProducer =
        smartmeter_core::service::kafka::idempotent_producer(&testkit::kafka_brokers(), "query-api-test")
            .create()
            .unwrap();
    producer
        .send(FutureRecord::to(topic).key(key).payload(payload), Duration::from_secs(10))
        .await
        .map_err(|(error, _)| error)
        .expect("Kafka accepts the record");
}

/// Every record on `topic` (all partitions, from the start), as JSON, waiting until
/// at least `at_least` are there.
pub async fn read_topic(topic: &str, at_least: usize) -> Vec<(String, Value)> {
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", testkit::kafka_brokers())
            .set("group.id", "query-api-test-reader")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let metadata = consumer.fetch_metadata(Some(&topic), Duration::from_secs(10)).unwrap();
        let mut list = TopicPartitionList::new();
        for partition in metadata.topics()[0].partitions() {
            list.add_partition_offset(&topic, partition.id(), Offset::Beginning).unwrap();
        }
        consumer.assign(&list).unwrap();
        let mut records = Vec::new();
        let deadline = std::time::Instant::now() + WAIT;
        while std::time::Instant::now() < deadline {
            if let Some(Ok(message)) = consumer.poll(Duration::from_millis(200)) {
                let key = String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned();
                let value: Value = serde_json::from_slice(message.payload().unwrap_or_default()).unwrap();
                records.push((key, value));
            } else if records.len() >= at_least {
                break;
            }
        }
        records
    })
    .await
    .unwrap()
}

/// A GraphQL WebSocket client speaking either protocol.
pub struct WsClient {
    socket: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    /// `graphql-transport-ws` (true) or the legacy `graphql-ws`.
    pub transport_ws: bool,
}

impl WsClient {
    /// Connects with `protocol` and sends `connection_init` with `payload`; returns the
    /// client and the server's first answer (`connection_ack`, or the refusal).
    pub async fn connect(
        url: &str,
        protocol: &str,
        payload: Value,
        header_token: Option<&str>,
    ) -> (Self, Value) {
        let mut request = url.into_client_request().unwrap();
        request.headers_mut().insert("Sec-WebSocket-Protocol", protocol.parse().unwrap());
        if let Some(token) = header_token {
            request.headers_mut().insert("Authorization", format!("Bearer {token}").parse().unwrap());
        }
        let (socket, response) = tokio_tungstenite::connect_async(request).await.expect("WebSocket upgrade");
        assert_eq!(
            response.headers().get("sec-websocket-protocol").and_then(|v| v.to_str().ok()),
            Some(protocol),
            "the server speaks the protocol asked for"
        );
        let mut client = Self { socket, transport_ws: protocol == "graphql-transport-ws" };
        client.send(json!({ "type": "connection_init", "payload": payload })).await;
        let first = client.next().await;
        (client, first)
    }

    pub async fn send(&mut self, message: Value) {
        self.socket.send(Message::Text(message.to_string().into())).await.unwrap();
    }

    pub async fn subscribe(&mut self, id: &str, query: &str, variables: Value) {
        let kind = if self.transport_ws { "subscribe" } else { "start" };
        self.send(json!({ "id": id, "type": kind, "payload": { "query": query, "variables": variables } }))
            .await;
    }

    /// The next message as JSON (pings answered, keep-alives skipped); a close frame
    /// becomes `{"type": "close", "code": n, "reason": text}`.
    pub async fn next(&mut self) -> Value {
        loop {
            let message = tokio::time::timeout(WAIT, self.socket.next())
                .await
                .expect("a WebSocket message in time")
                .map(|m| m.expect("a WebSocket message"));
            match message {
                Some(Message::Text(text)) => {
                    let value: Value = serde_json::from_str(&text).unwrap();
                    match value["type"].as_str() {
                        Some("ping") => self.send(json!({ "type": "pong" })).await,
                        Some("ka") => {}
                        _ => return value,
                    }
                }
                Some(Message::Close(frame)) => {
                    let (code, reason) =
                        frame.map_or((0, String::new()), |f| (u16::from(f.code), f.reason.to_string()));
                    return json!({ "type": "close", "code": code, "reason": reason });
                }
                None => return json!({ "type": "close", "code": 0, "reason": "" }),
                Some(_) => {}
            }
        }
    }

    /// The next message or `None` within `timeout`.
    pub async fn next_within(&mut self, timeout: Duration) -> Option<Value> {
        tokio::time::timeout(timeout, self.next()).await.ok()
    }

    /// The next message about subscription `id` within `timeout` (others are skipped:
    /// late results of a subscription already stopped).
    pub async fn next_for(&mut self, id: &str, timeout: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let message = self.next_within(left).await?;
            if message["id"] == id || message["type"] == "close" {
                return Some(message);
            }
        }
    }

    /// Stops subscription `id` and waits for the server's `complete`.
    pub async fn stop(&mut self, id: &str) {
        let kind = if self.transport_ws { "complete" } else { "stop" };
        self.send(json!({ "id": id, "type": kind })).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while tokio::time::Instant::now() < deadline {
            match self.next_within(Duration::from_millis(200)).await {
                Some(message) if message["id"] == id && message["type"] == "complete" => return,
                _ => {}
            }
        }
    }

    /// The `data` of the next result of subscription `id`.
    pub async fn next_data(&mut self, id: &str) -> Value {
        let message = self.next().await;
        let kind = if self.transport_ws { "next" } else { "data" };
        assert_eq!(message["type"], kind, "{message}");
        assert_eq!(message["id"], id, "{message}");
        assert!(message["payload"].get("errors").is_none(), "{message}");
        message["payload"]["data"].clone()
    }

    pub async fn close(mut self) {
        let _ = self.socket.close(None).await;
    }
}
