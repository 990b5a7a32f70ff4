//! The stack the dashboard's browser tests run against (`query-api/dashboard/tests`),
//! in this one process, on the real Kafka and PostgreSQL of `infra/up.sh` and a
//! Mosquitto of its own: a database and Kafka topics of its own, the bridge, the
//! processor, the billing worker and the query API serving the built dashboard.
//!
//! The broker is the project's Mosquitto with the project's config, ACL and accounts,
//! started on a free port with a state directory of its own (`mosquitto_private` of
//! `infra/lib/mosquitto.sh`, as the benchmarks do). The shared broker on 1883 carries
//! other people's traffic: its retained status messages (21,079 once, left by
//! benchmarks and simulator checks) each became a discovered meter of this stack, and
//! the meter picker, which then listed the first 1000 ids, lost the stack's meters.
//!
//! First the set-up an administrator would do through the API: a tariff (the Ofgem cap
//! rates, re-dated to 2012), a customer owning two meters, nine meters registered on the
//! tariff (one left discovered), keys for an operator and the customer. Then
//! [`UNREGISTERED_FLEET`] meters nobody registered say `online` on their status topics
//! (a fleet larger than any one page, whose ids sort before the households'), and the
//! ten London households of January 2013 (`shared/data`) are replayed over MQTT with
//! the simulator's account; January closes and the worker issues the invoices.
//!
//! When everything is ready it prints one line, `DASHBOARD_STACK {json}` (URL, device
//! ids, API keys per role, the broker and its simulator account, topics, database
//! URL), then runs until SIGTERM, ctrl-c or its standard input closes, and cleans up:
//! services stopped, the database dropped, the broker stopped and its state removed. A
//! later stack removes the broker of one that was killed.
//!
//! ```sh
//! . infra/env.sh && cargo run -p smartmeter-query-api --example dashboard_stack
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser as _;
use jiff::SignedDuration;
use serde_json::json;
use smartmeter_core::billing::TariffDocument;
use smartmeter_core::service::testkit::{self, TestDatabase};
use smartmeter_core::status::status_topic;
use smartmeter_core::telemetry::telemetry_topic;
use smartmeter_core::{topics, DeviceId};
use tokio::io::AsyncReadExt as _;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const LONDON_JANUARY: &str = "lcl_halfhourly_2013-01_10households.csv";
const OFGEM_TARIFF: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/../core/tariffs/ofgem_price_cap_2024q3.json");
/// A published slab tariff (Tata Power Delhi, domestic, 2015-16), for the tariff editor.
const SLAB_TARIFF: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/../core/tariffs/tpddl_domestic_fy2015_16.json");
/// The tariff every household but [`UNASSIGNED`] is billed on.
const TARIFF_ID: &str = "london-standard";
/// Left without a tariff, as a newly discovered meter is.
const UNASSIGNED: &str = "MAC000016";
/// Billed on [`SLAB_TARIFF_REDATED`] (4 kW sanctioned) instead of [`TARIFF_ID`].
const SLAB_HOUSEHOLD: &str = "MAC000024";
const SLAB_TARIFF_REDATED: &str = "tpddl-domestic-redated";
/// The customer account's meters (the customer's key sees these only).
const CUSTOMER_HOUSEHOLDS: [&str; 2] = ["MAC000002", "MAC000006"];
/// Meters that announce themselves on their status topics and are never registered:
/// more than the 1000 devices of one API page. Their ids (`<prefix>000-unregistered-N`)
/// sort before the households' (`<prefix>MAC…`), as the shared broker's leftovers did.
const UNREGISTERED_FLEET: usize = 1_500;
const UNREGISTERED_INFIX: &str = "000-unregistered-";
const WAIT: Duration = Duration::from_secs(300);

/// GraphQL over HTTP with a bearer token.
struct Api {
    http: reqwest::Client,
    url: String,
    token: String,
}

impl Api {
    async fn call(&self, query: &str, variables: serde_json::Value) -> anyhow::Result<serde_json::Value> {
        let response: serde_json::Value = self
            .http
            .post(&self.url)
            .bearer_auth(&self.token)
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await?
            .json()
            .await?;
        anyhow::ensure!(response.get("errors").is_none(), "GraphQL errors: {response}");
        Ok(response["data"].clone())
    }
}

struct Topics {
    telemetry: String,
    dlq: String,
    device_events: String,
    periods: String,
    tariffs: String,
    invoices: String,
}

impl Topics {
    async fn create(brokers: &str) -> anyhow::Result<Self> {
        let topics = Self {
            telemetry: testkit::unique_name("smartmeter.telemetry.dash"),
            dlq: testkit::unique_name("smartmeter.telemetry.dlq.dash"),
            device_events: testkit::unique_name("smartmeter.device-events.dash"),
            periods: testkit::unique_name("smartmeter.billing-periods.dash"),
            tariffs: testkit::unique_name("smartmeter.tariff-events.dash"),
            invoices: testkit::unique_name("smartmeter.invoices.dash"),
        };
        for (topic, partitions) in [
            (&topics.telemetry, topics::TELEMETRY.partitions),
            (&topics.dlq, 1),
            (&topics.device_events, 3),
            (&topics.periods, 3),
            (&topics.tariffs, 1),
            (&topics.invoices, 3),
        ] {
            testkit::create_topic(brokers, topic, partitions)
                .await
                .with_context(|| format!("create {topic} (is infra/up.sh running?)"))?;
        }
        Ok(topics)
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `infra/` of this source tree.
const INFRA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../infra");
/// State directories of the stacks' brokers: this and the stack's process id.
const BROKER_STATE_PREFIX: &str = "smartmeter-dashboard-mqtt-";
const BROKER_HOST: &str = "127.0.0.1";

/// The stack's own Mosquitto (see the module's documentation).
#[derive(Debug, Clone)]
struct Broker {
    state_dir: PathBuf,
    port: u16,
}

impl Broker {
    /// `mosquitto_private <args>` of `infra/lib/mosquitto.sh`.
    fn private(args: &[&str]) -> anyhow::Result<()> {
        let script = r#"infra=$1; shift; . "$infra/lib/common.sh" && . "$infra/lib/mosquitto.sh" && mosquitto_private "$@""#;
        let output = Command::new("bash")
            .args(["-c", script, "mosquitto_private", INFRA])
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .context("run bash")?;
        anyhow::ensure!(
            output.status.success(),
            "mosquitto_private {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(())
    }

    /// Starts the broker on a free port (another try if the port was taken meanwhile).
    fn start() -> anyhow::Result<Self> {
        Self::sweep();
        let state_dir = std::env::temp_dir().join(format!("{BROKER_STATE_PREFIX}{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&state_dir);
        let dir = state_dir.to_str().context("a UTF-8 temporary directory")?;
        let mut attempt = 0;
        loop {
            let port = free_port();
            match Self::private(&["up", dir, &port.to_string()]) {
                Ok(()) => return Ok(Self { state_dir, port }),
                Err(error) if attempt < 2 => {
                    eprintln!("dashboard-stack: private broker on {port}: {error:#}; another port");
                    let _ = Self::private(&["down", dir]);
                    attempt += 1;
                }
                Err(error) => return Err(error.context("start the stack's Mosquitto")),
            }
        }
    }

    /// Stops the broker and removes its state (persistence, retained messages, log).
    fn stop(&self) {
        Self::stop_dir(&self.state_dir);
    }

    fn stop_dir(state_dir: &Path) {
        if let Some(dir) = state_dir.to_str() {
            if let Err(error) = Self::private(&["down", dir]) {
                eprintln!("dashboard-stack: stop the private broker: {error:#}");
            }
        }
        let _ = std::fs::remove_dir_all(state_dir);
    }

    /// Brokers of stacks whose process is gone (killed before they cleaned up).
    fn sweep() {
        let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else { return };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(BROKER_STATE_PREFIX)) else { continue };
            let Ok(pid) = pid.parse::<u32>() else { continue };
            if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
                eprintln!("dashboard-stack: removing the broker of stack {pid}, which is gone");
                Self::stop_dir(&entry.path());
            }
        }
    }

    /// The simulator's account: it may publish every meter's telemetry and status.
    fn simulator_account() -> (String, String) {
        (
            testkit::env_or("SMARTMETER_MQTT_SIMULATOR_USER", "smartmeter-simulator"),
            testkit::env_or("SMARTMETER_MQTT_SIMULATOR_PASSWORD", "simulator-dev-only"),
        )
    }

    async fn publisher(&self, client_id: String) -> anyhow::Result<meter_simulator::publish::MqttPublisher> {
        let (user, password) = Self::simulator_account();
        let config = meter_simulator::publish::MqttConfig {
            host: BROKER_HOST.to_owned(),
            port: self.port,
            username: Some(user),
            password: Some(password),
            client_id,
            max_inflight: 100,
            connect_timeout: Duration::from_secs(10),
            keep_alive: Duration::from_secs(30),
        };
        Ok(meter_simulator::publish::MqttPublisher::connect(&config).await?)
    }
}

async fn connect(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

/// Waits until `sql` (one bigint) reaches `expected`; the tables may not exist yet.
async fn wait_for(url: &str, sql: &str, expected: i64) -> anyhow::Result<()> {
    let client = connect(url).await?;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let reached: i64 = client.query_one(sql, &[]).await.map_or(0, |row| row.get(0));
        if reached >= expected {
            return Ok(());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "{sql}: {reached} of {expected} after {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn wait_healthy(url: &str) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        if http.get(url).send().await.is_ok_and(|response| response.status().is_success()) {
            return Ok(());
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "{url} not healthy after 120 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The Ofgem 2024 Q3 cap (real, published rates) as `london-standard`, in force from
/// 2012-10-01 so that the 2013 data has a version.
fn london_tariff() -> anyhow::Result<TariffDocument> {
    let mut versions: Vec<serde_json::Value> = serde_json::from_str(&std::fs::read_to_string(OFGEM_TARIFF)?)?;
    let mut version = versions.remove(0);
    version["tariff_id"] = TARIFF_ID.into();
    version["effective_from"] = "2012-10-01".into();
    version["title"] = "London standard (Ofgem cap rates of July 2024)".into();
    version["components"][0]["name"] = "energy (incl VAT)".into();
    version["components"][1]["name"] = "standing charge (incl VAT)".into();
    Ok(serde_json::from_value(version)?)
}

/// [`UNREGISTERED_FLEET`] meters say `online` on their status topics (the bridge turns
/// each into a DeviceStatusChanged; the processor lists the meter as discovered).
async fn announce_unregistered_fleet(broker: &Broker, prefix: &str) -> anyhow::Result<Vec<String>> {
    let mut publisher = broker.publisher(format!("{prefix}fleet")).await?;
    let mut devices = Vec::with_capacity(UNREGISTERED_FLEET);
    for n in 1..=UNREGISTERED_FLEET {
        let device = DeviceId::parse(&format!("{prefix}{UNREGISTERED_INFIX}{n:04}"))?;
        publisher.publish(status_topic(&device), b"online".to_vec()).await?;
        devices.push(device.to_string());
    }
    let delivery = publisher.finish(Duration::from_secs(60)).await;
    anyhow::ensure!(delivery.confirmed == delivery.sent, "Mosquitto acknowledged {delivery:?}");
    Ok(devices)
}

/// Every household over MQTT with the simulator's account; returns the readings sent.
async fn replay_over_mqtt(broker: &Broker, prefix: &str) -> anyhow::Result<(u64, Vec<String>)> {
    use meter_simulator::{counter, london, payload};

    let dataset =
        london::load(&[testkit::shared_data(LONDON_JANUARY)]).context("the London file in shared/data")?;
    let mut publisher = broker.publisher(format!("{prefix}sim")).await?;
    let mut devices = Vec::new();
    for meter in &dataset.meters {
        let device = DeviceId::parse(&format!("{prefix}{}", meter.device_id))?;
        for reading in &counter::readings(&meter.slots, 1)? {
            let (telemetry, _) = payload::Telemetry::from_reading(&device, reading);
            publisher.publish(telemetry_topic(&device), telemetry.to_json()).await?;
        }
        devices.push(device.to_string());
    }
    let delivery = publisher.finish(Duration::from_secs(60)).await;
    anyhow::ensure!(delivery.confirmed == delivery.sent, "Mosquitto acknowledged {delivery:?}");
    Ok((delivery.confirmed, devices))
}

/// Until SIGTERM, ctrl-c or the end of standard input (the test runner went away).
async fn until_stopped() {
    let mut term =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("a SIGTERM handler");
    let stdin_closed = async {
        let mut stdin = tokio::io::stdin();
        let mut buffer = [0u8; 64];
        while stdin.read(&mut buffer).await.is_ok_and(|n| n > 0) {}
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
        () = stdin_closed => {}
    }
}

struct Services {
    shutdown: CancellationToken,
    tasks: Vec<(&'static str, JoinHandle<anyhow::Result<()>>)>,
}

impl Services {
    async fn stop(self) {
        self.shutdown.cancel();
        for (name, task) in self.tasks {
            match tokio::time::timeout(Duration::from_secs(30), task).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(error))) => eprintln!("dashboard-stack: {name} failed: {error:#}"),
                Ok(Err(error)) => eprintln!("dashboard-stack: {name} panicked: {error}"),
                Err(_) => eprintln!("dashboard-stack: {name} did not stop within 30 s"),
            }
        }
    }
}

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build()?;
    let result = runtime.block_on(run());
    // The read of standard input blocks a thread until the runner closes it; do not
    // wait for it.
    runtime.shutdown_background();
    result
}

async fn run() -> anyhow::Result<()> {
    smartmeter_core::service::logging::init("dashboard-stack");
    let prefix = format!("{}-", testkit::unique_name("dash").replace(['_', '.'], "x"));
    let brokers = testkit::kafka_brokers();
    let topics = Topics::create(&brokers).await?;
    let broker = tokio::task::spawn_blocking(Broker::start).await??;
    let db = match TestDatabase::create("dashboard").await {
        Ok(db) => db,
        Err(error) => {
            tokio::task::spawn_blocking(move || broker.stop()).await?;
            return Err(error);
        }
    };
    let result = serve(&prefix, &brokers, &topics, &db, &broker).await;
    if let Err(error) = db.drop_database().await {
        eprintln!("dashboard-stack: drop the database: {error:#}");
    }
    tokio::task::spawn_blocking(move || broker.stop()).await?;
    result
}

async fn serve(
    prefix: &str,
    brokers: &str,
    topics: &Topics,
    db: &TestDatabase,
    broker: &Broker,
) -> anyhow::Result<()> {
    let services = Services { shutdown: CancellationToken::new(), tasks: Vec::new() };
    let bridge = smartmeter_bridge::Config::try_parse_from([
        "bridge".to_owned(),
        format!("--mqtt-host={BROKER_HOST}"),
        format!("--mqtt-port={}", broker.port),
        format!("--mqtt-user={}", testkit::env_or("SMARTMETER_MQTT_BRIDGE_USER", "smartmeter-bridge")),
        format!("--mqtt-password={}", testkit::env_or("SMARTMETER_MQTT_BRIDGE_PASSWORD", "bridge-dev-only")),
        format!("--mqtt-client-id={prefix}bridge"),
        format!("--kafka-brokers={brokers}"),
        format!("--telemetry-topic={}", topics.telemetry),
        format!("--dlq-topic={}", topics.dlq),
        format!("--device-events-topic={}", topics.device_events),
        format!("--metrics-addr=127.0.0.1:{}", free_port()),
        "--clock-floor=2000-01-01T00:00:00Z".to_owned(),
    ])?;
    // The bridge's persistent session goes with the broker's state when the stack stops.
    start_and_wait(prefix, brokers, topics, db, broker, bridge, services).await
}

async fn start_and_wait(
    prefix: &str,
    brokers: &str,
    topics: &Topics,
    db: &TestDatabase,
    broker: &Broker,
    bridge: smartmeter_bridge::Config,
    mut services: Services,
) -> anyhow::Result<()> {
    let shutdown = services.shutdown.clone();
    let bridge_metrics = bridge.metrics_addr;
    services.tasks.push(("bridge", tokio::spawn(smartmeter_bridge::run(bridge, shutdown.clone()))));

    let processor = smartmeter_processor::Config {
        brokers: brokers.to_owned(),
        database_url: db.url.clone(),
        group_id: testkit::unique_name("processor-dash"),
        topic: topics.telemetry.clone(),
        device_events_topic: Some(topics.device_events.clone()),
        billing_periods_topic: topics.periods.clone(),
        default_time_zone: "Europe/London".into(),
        // January closes once the replayed meters have been silent this long (wall
        // clock; silence counts from when the readings were received).
        period_grace: SignedDuration::from_secs(20),
        housekeeping_interval: Duration::from_millis(500),
        ..smartmeter_processor::Config::local_defaults()
    };
    services
        .tasks
        .push(("processor", tokio::spawn(smartmeter_processor::run_embedded(processor, shutdown.clone()))));

    let worker = smartmeter_billing_worker::Config {
        brokers: brokers.to_owned(),
        database_url: db.url.clone(),
        group_id: testkit::unique_name("billing-dash"),
        periods_topic: topics.periods.clone(),
        tariffs_topic: topics.tariffs.clone(),
        invoices_topic: topics.invoices.clone(),
        outbox_interval: Duration::from_millis(200),
        replay_poll_interval: Duration::from_millis(500),
        ..smartmeter_billing_worker::Config::local_defaults()
    };
    services.tasks.push((
        "billing-worker",
        tokio::spawn(smartmeter_billing_worker::run_embedded(worker, shutdown.clone())),
    ));

    let api_port = free_port();
    // The development admin key, accepted from memory only: random per run.
    let admin_key = format!("dev-{}", testkit::unique_name("admin"));
    let api = smartmeter_query_api::Config::try_parse_from([
        "query-api".to_owned(),
        format!("--listen=127.0.0.1:{api_port}"),
        format!("--database-url={}", db.url),
        format!("--brokers={brokers}"),
        format!("--telemetry-topic={}", topics.telemetry),
        format!("--device-events-topic={}", topics.device_events),
        format!("--tariff-events-topic={}", topics.tariffs),
        format!("--invoices-topic={}", topics.invoices),
        format!("--dlq-topic={}", topics.dlq),
        format!("--dev-admin-key={admin_key}"),
        "--default-time-zone=Europe/London".to_owned(),
    ])?;
    services.tasks.push(("query-api", tokio::spawn(smartmeter_query_api::run(api, shutdown.clone()))));

    let ready = async {
        wait_healthy(&format!("http://{bridge_metrics}/health")).await?;
        wait_healthy(&format!("http://127.0.0.1:{api_port}/health")).await?;

        // Through the API, as an administrator would: the tariff, a customer, the
        // meters registered with the tariff from 2012-10-01 (one left discovered), an
        // operator's key and the customer's key. Before the replay, so that January
        // is billable the moment it closes.
        let graphql = format!("http://127.0.0.1:{api_port}/graphql");
        let api = Api { http: reqwest::Client::new(), url: graphql.clone(), token: admin_key.clone() };
        let households = meter_simulator::london::load(&[testkit::shared_data(LONDON_JANUARY)])
            .context("the London file")?;
        let devices: Vec<String> =
            households.meters.iter().map(|m| format!("{prefix}{}", m.device_id)).collect();
        api.call(
            "mutation($document: JSON!) { publishTariffVersion(document: $document) { version } }",
            json!({ "document": london_tariff()? }),
        )
        .await?;
        let mut slab_tariff: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(SLAB_TARIFF)?)?;
        if let Some(first) = slab_tariff.as_array().and_then(|versions| versions.first()) {
            slab_tariff = first.clone();
        }
        api.call(
            "mutation($document: JSON!) { publishTariffVersion(document: $document) { version } }",
            json!({ "document": slab_tariff }),
        )
        .await?;
        // The same published rates under an id of their own, re-dated to 2012-10-01 and
        // read in London time: the household on it gets a January invoice with a slab
        // breakdown.
        let mut redated = slab_tariff.clone();
        redated["tariff_id"] = SLAB_TARIFF_REDATED.into();
        redated["effective_from"] = "2012-10-01".into();
        // Periods are priced in the meter's local days: the copy reads London's.
        redated["time_zone"] = "Europe/London".into();
        redated["title"] =
            "TPDDL domestic slab rates, from 2012-10-01 in London time (for the replay)".into();
        api.call(
            "mutation($document: JSON!) { publishTariffVersion(document: $document) { version } }",
            json!({ "document": redated }),
        )
        .await?;
        wait_for(&db.url, "SELECT count(*) FROM tariff_versions", 3).await?;
        let customer_id = format!("{prefix}household");
        api.call(
            "mutation($id: String!) { createCustomer(customerId: $id, name: \"A London household\") { customerId } }",
            json!({ "id": customer_id }),
        )
        .await?;
        let customer_devices: Vec<String> =
            devices.iter().filter(|d| CUSTOMER_HOUSEHOLDS.iter().any(|h| d.ends_with(h))).cloned().collect();
        for device in devices.iter().filter(|d| !d.ends_with(UNASSIGNED)) {
            let household = device.trim_start_matches(prefix);
            let customer = customer_devices.contains(device).then_some(customer_id.as_str());
            api.call(
                "mutation($input: RegisterDeviceInput!) { registerDevice(input: $input) { eventId } }",
                json!({ "input": {
                    "deviceId": device,
                    "name": format!("Household {household}"),
                    "location": "London",
                    "timeZone": "Europe/London",
                    "tariffId": if device.ends_with(SLAB_HOUSEHOLD) { SLAB_TARIFF_REDATED } else { TARIFF_ID },
                    "sanctionedLoadKw": device.ends_with(SLAB_HOUSEHOLD).then_some("4"),
                    "tariffEffectiveFrom": "2012-10-01",
                    "customerId": customer,
                }}),
            )
            .await?;
        }
        wait_for(&db.url, "SELECT count(*) FROM tariff_assignments", devices.len() as i64 - 1).await?;
        wait_for(
            &db.url,
            "SELECT count(*) FROM devices WHERE lifecycle = 'registered'",
            devices.len() as i64 - 1,
        )
        .await?;
        let create_key = "mutation($user: String!, $role: Role!, $customer: String) {
            createApiKey(userName: $user, role: $role, customerId: $customer, label: \"dashboard tests\") { token }
        }";
        let operator =
            api.call(create_key, json!({ "user": format!("{prefix}operator"), "role": "OPERATOR" })).await?;
        let customer = api
            .call(
                create_key,
                json!({ "user": format!("{prefix}customer"), "role": "CUSTOMER", "customer": customer_id }),
            )
            .await?;
        let tokens = json!({
            "admin": admin_key,
            "operator": operator["createApiKey"]["token"],
            "customer": customer["createApiKey"]["token"],
        });
        let unregistered = announce_unregistered_fleet(broker, prefix).await?;
        wait_for(
            &db.url,
            &format!(
                "SELECT count(*) FROM devices WHERE lifecycle = 'discovered' AND device_id LIKE '{prefix}{UNREGISTERED_INFIX}%'"
            ),
            unregistered.len() as i64,
        )
        .await?;
        let (sent, replayed) = replay_over_mqtt(broker, prefix).await?;
        anyhow::ensure!(replayed == devices, "the replay's meters are the file's");
        let like = format!("SELECT count(*) FROM readings WHERE device_id LIKE '{prefix}%'");
        wait_for(&db.url, &like, sent as i64).await?;
        // Every assigned household's January, and the unassigned one's period closed.
        wait_for(
            &db.url,
            "SELECT count(*) FROM invoices WHERE month = '2013-01-01'",
            devices.len() as i64 - 1,
        )
        .await?;
        wait_for(
            &db.url,
            "SELECT count(*) FROM billing_periods WHERE month = '2013-01-01' AND status = 'closed'",
            devices.len() as i64,
        )
        .await?;
        anyhow::Ok((sent, devices, tokens, customer_id, customer_devices, unregistered))
    };
    let outcome = tokio::select! {
        outcome = ready => outcome,
        () = until_stopped() => Err(anyhow::anyhow!("stopped before the stack was ready")),
    };
    let (readings, devices, tokens, customer_id, customer_devices, unregistered) = match outcome {
        Ok(ready) => ready,
        Err(error) => {
            services.stop().await;
            return Err(error);
        }
    };

    let slab_tariff_id = "tpddl_domestic_fy2015_16";
    let line = json!({
        "url": format!("http://127.0.0.1:{api_port}"),
        "graphql": format!("http://127.0.0.1:{api_port}/graphql"),
        "prefix": prefix,
        "devices": devices,
        "unassignedDevice": format!("{prefix}{UNASSIGNED}"),
        "tokens": tokens,
        "customerId": customer_id,
        "customerDevices": customer_devices,
        "tariffId": TARIFF_ID,
        "slabTariffId": slab_tariff_id,
        "slabDevice": format!("{prefix}{SLAB_HOUSEHOLD}"),
        "readings": readings,
        "unregisteredDevices": { "count": unregistered.len(), "first": unregistered.first(), "last": unregistered.last() },
        // The stack's own broker: what the tests publish goes here.
        "mqtt": {
            "host": BROKER_HOST,
            "port": broker.port,
            "simulatorUser": Broker::simulator_account().0,
            "simulatorPassword": Broker::simulator_account().1,
        },
        "databaseUrl": db.url,
        "topics": {
            "telemetry": topics.telemetry,
            "deviceEvents": topics.device_events,
            "tariffs": topics.tariffs,
            "periods": topics.periods,
            "invoices": topics.invoices,
        },
    });
    println!("DASHBOARD_STACK {line}");
    until_stopped().await;
    // A safety net: whatever hangs in the shutdown, the process is gone in a minute (the
    // database of a killed stack would stay behind; its broker is stopped here, or by the
    // next stack).
    let broker = broker.clone();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(60));
        eprintln!("dashboard-stack: shutdown took over 60 s; exiting");
        broker.stop();
        std::process::exit(1);
    });
    services.stop().await;
    Ok(())
}
