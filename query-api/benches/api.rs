//! Benchmark of the query API (prints figures; asserts nothing about speed):
//!
//! 1. "24 hours of hourly energy of one meter": `wrk` (apt) POSTs the GraphQL query to a
//!    query-api process (the release binary) for `--seconds` with `--connections`
//!    connections; requests/s and latency percentiles from wrk's `--latency` report.
//! 2. Concurrent subscriptions one query-api holds while readings flow: a ladder of
//!    subscription counts (`liveReadings`, `--per-socket` subscriptions multiplexed on
//!    each graphql-transport-ws connection), readings produced to the telemetry topic at
//!    `--rate` per second across the ten meters; per step: subscriptions open on the
//!    server (its own gauge), how many received every reading, deliveries per second,
//!    delivery latency (bridge receive time → client) p50/p99, server RSS and CPU.
//!
//! The data is real: the ten London households of January 2013 rolled up by the
//! processor and billed (`tests/common`), in a database and topics of the run's own.
//!
//! ```sh
//! . infra/env.sh && cargo bench -p smartmeter-query-api --bench api
//! cargo bench -p smartmeter-query-api --bench api -- --seconds 30 --connections 16 \
//!     --subscriptions 1000,5000,10000,20000,40000 --per-socket 100 --rate 20
//! ```

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::Write as _;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{SinkExt as _, StreamExt as _};
use jiff::Timestamp;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{json, Value};
use smartmeter_core::service::testkit;
use smartmeter_core::telemetry::{telemetry_topic, validate, ValidationConfig};
use smartmeter_core::DeviceId;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::Message;

const KEY: &str = "bench-dev-admin-key";

struct Args {
    seconds: u64,
    connections: u32,
    subscriptions: Vec<usize>,
    per_socket: usize,
    rate: u64,
    step_seconds: u64,
}

fn args() -> Args {
    let mut args = Args {
        seconds: 30,
        connections: 16,
        subscriptions: vec![1_000, 5_000, 10_000, 20_000, 40_000],
        per_socket: 100,
        rate: 20,
        step_seconds: 10,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--seconds" => args.seconds = value().parse().unwrap(),
            "--connections" => args.connections = value().parse().unwrap(),
            "--subscriptions" => {
                args.subscriptions = value().split(',').map(|n| n.parse().unwrap()).collect()
            }
            "--per-socket" => args.per_socket = value().parse().unwrap(),
            "--rate" => args.rate = value().parse().unwrap(),
            "--step-seconds" => args.step_seconds = value().parse().unwrap(),
            "--bench" => {}
            other => panic!("unknown flag {other}"),
        }
    }
    args
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// RSS (kB) and CPU ticks (user + system) of `pid`.
fn process_usage(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let ticks = fields.get(11).and_then(|u| u.parse::<u64>().ok()).unwrap_or(0)
        + fields.get(12).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
    (rss, ticks)
}

fn ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
    }
}

async fn start_server(database_url: &str, telemetry: &str) -> Server {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_query-api"))
        .args([
            &format!("--listen=127.0.0.1:{port}"),
            &format!("--database-url={database_url}"),
            &format!("--brokers={}", testkit::kafka_brokers()),
            &format!("--telemetry-topic={telemetry}"),
            "--max-subscriptions=200000",
            "--db-pool-size=16",
        ])
        .env("SMARTMETER_QUERY_API_DEV_ADMIN_KEY", KEY)
        .env("SMARTMETER_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("the query-api binary");
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(response) = http.get(format!("{url}/health")).send().await {
            if response.status().is_success() {
                break;
            }
        }
        assert!(Instant::now() < deadline, "query-api did not become healthy");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Server { child, url }
}

async fn hourly_energy(server: &Server, device: &str, args: &Args) {
    let body = json!({
        "operationName": "HourlyEnergy",
        "query": "query HourlyEnergy($d: String!, $f: DateTime!, $t: DateTime!) { hourlyEnergy(deviceId: $d, from: $f, to: $t) { bucketStart energyKwh } }",
        "variables": { "d": device, "f": "2013-01-15T00:00:00Z", "t": "2013-01-16T00:00:00Z" },
    });
    let check: Value = reqwest::Client::new()
        .post(format!("{}/graphql", server.url))
        .bearer_auth(KEY)
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let rows = check["data"]["hourlyEnergy"].as_array().map_or(0, Vec::len);
    assert_eq!(rows, 24, "the query answers 24 hours: {check}");

    let script = std::env::temp_dir().join(format!("{}.lua", testkit::unique_name("bench-hourly")));
    // Counts answers that are not 200 or carry GraphQL errors, over all wrk threads.
    let lua = format!(
        "wrk.method = \"POST\"\nwrk.body = {body:?}\nwrk.headers[\"Content-Type\"] = \"application/json\"\n\
         wrk.headers[\"Authorization\"] = \"Bearer {KEY}\"\n\
         local threads = {{}}\nfunction setup(thread) table.insert(threads, thread) end\n\
         function init(args) errors = 0 end\n\
         function response(status, headers, body)\n  if status ~= 200 or string.find(body, '\"errors\"', 1, true) then errors = errors + 1 end\nend\n\
         function done(summary, latency, requests)\n  local total = 0\n  for _, t in ipairs(threads) do total = total + t:get(\"errors\") end\n  io.write(\"graphql_errors \" .. total .. \"\\n\")\nend\n",
        body = body.to_string()
    );
    std::fs::File::create(&script).unwrap().write_all(lua.as_bytes()).unwrap();
    let command = format!(
        "wrk -t2 -c{} -d{}s --latency -s {} {}/graphql",
        args.connections,
        args.seconds,
        script.display(),
        server.url
    );
    println!("\n## 24 hours of hourly energy of one meter\n\n`{command}`\n");
    let (_, cpu0) = process_usage(server.child.id());
    let started = Instant::now();
    let output = Command::new("sh").arg("-c").arg(&command).output().expect("wrk (apt install wrk)");
    let wall = started.elapsed().as_secs_f64();
    let (rss, cpu1) = process_usage(server.child.id());
    std::fs::remove_file(&script).ok();
    let text = String::from_utf8_lossy(&output.stdout);
    let find = |prefix: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix).map(|v| v.trim().to_owned()))
            .unwrap_or_default()
    };
    println!("| figure | value |\n|---|---|");
    println!("| requests/s | {} |", find("Requests/sec:"));
    for p in ["50%", "75%", "90%", "99%"] {
        println!("| latency p{} | {} |", p.trim_end_matches('%'), find(p));
    }
    println!("| requests | {} |", text.lines().find(|l| l.contains("requests in")).unwrap_or("").trim());
    println!("| answers not 200 or with GraphQL errors | {} |", find("graphql_errors"));
    println!(
        "| query-api CPU | {:.0}% of one core |",
        (cpu1 - cpu0) as f64 / ticks_per_second() / wall * 100.0
    );
    println!("| query-api RSS after | {} MB |", rss / 1024);
}

/// Subscriptions of one step: counters per subscription and a latency sample.
struct Fanout {
    received: Vec<AtomicU64>,
    latencies_us: Mutex<Vec<u64>>,
    errors: AtomicU64,
}

async fn open_socket(
    url: String,
    devices: Arc<Vec<String>>,
    first: usize,
    count: usize,
    fanout: Arc<Fanout>,
) -> anyhow::Result<()> {
    let mut request = format!("{}/graphql/ws", url.replace("http://", "ws://")).into_client_request()?;
    request.headers_mut().insert("Sec-WebSocket-Protocol", "graphql-transport-ws".parse()?);
    let (socket, _) = tokio_tungstenite::connect_async(request).await?;
    let (mut sink, mut stream) = socket.split();
    sink.send(Message::Text(
        json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {KEY}") } })
            .to_string()
            .into(),
    ))
    .await?;
    loop {
        match stream.next().await {
            Some(Ok(Message::Text(text))) if text.contains("connection_ack") => break,
            Some(Ok(_)) => {}
            other => anyhow::bail!("no connection_ack: {other:?}"),
        }
    }
    for index in first..first + count {
        let device = &devices[index % devices.len()];
        let message = json!({ "id": index.to_string(), "type": "subscribe", "payload": {
            "query": "subscription($d: String!) { liveReadings(deviceId: $d) { receivedAt } }", "variables": { "d": device } } });
        sink.send(Message::Text(message.to_string().into())).await?;
    }
    tokio::spawn(async move {
        let _sink = sink; // keeps the socket open
        while let Some(Ok(message)) = stream.next().await {
            let Message::Text(text) = message else { continue };
            let Ok(value) = serde_json::from_str::<Value>(&text) else { continue };
            match value["type"].as_str() {
                Some("next") => {
                    let Some(index) = value["id"].as_str().and_then(|id| id.parse::<usize>().ok()) else {
                        continue;
                    };
                    if let Some(counter) = fanout.received.get(index) {
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                    if let Some(at) = value["payload"]["data"]["liveReadings"]["receivedAt"]
                        .as_str()
                        .and_then(|t| t.parse::<Timestamp>().ok())
                    {
                        let micros = Timestamp::now().duration_since(at).as_micros().max(0) as u64;
                        if let Ok(mut sample) = fanout.latencies_us.lock() {
                            if sample.len() < 2_000_000 {
                                sample.push(micros);
                            }
                        }
                    }
                    if value["payload"].get("errors").is_some() {
                        fanout.errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Some("error") => {
                    fanout.errors.fetch_add(1, Ordering::Relaxed);
                }
                _ => {}
            }
        }
    });
    Ok(())
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index] as f64 / 1000.0
}

async fn server_gauge(server: &Server, name: &str) -> f64 {
    let text = reqwest::Client::new()
        .get(format!("{}/metrics", server.url))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn subscriptions(server: &Server, devices: Vec<String>, telemetry: &str, args: &Args) {
    println!(
        "\n## Concurrent subscriptions while readings flow\n\n`liveReadings` over graphql-transport-ws, {} per connection, \
         readings produced at {}/s across {} meters, {} s per step\n",
        args.per_socket,
        args.rate,
        devices.len(),
        args.step_seconds
    );
    println!("| subscriptions | connections | open on server | received every reading | deliveries/s | latency p50 | latency p99 | errors | query-api RSS | query-api CPU |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let devices = Arc::new(devices);
    let max = *args.subscriptions.iter().max().unwrap_or(&0);
    let fanout = Arc::new(Fanout {
        received: (0..max).map(|_| AtomicU64::new(0)).collect(),
        latencies_us: Mutex::new(Vec::new()),
        errors: AtomicU64::new(0),
    });
    let producer: FutureProducer =
        smartmeter_core::service::kafka::idempotent_producer(&testkit::kafka_brokers(), "bench-api")
            .create()
            .unwrap();
    let config =
        ValidationConfig { clock_floor: "2000-01-01T00:00:00Z".parse().unwrap(), ..Default::default() };
    let mut opened = 0;
    let mut reading_second = 0_i64;
    for &target in &args.subscriptions {
        // Open what is missing, a connection at a time (a few in flight).
        let mut pending = Vec::new();
        while opened < target {
            let count = args.per_socket.min(target - opened);
            pending.push(tokio::spawn(open_socket(
                server.url.clone(),
                devices.clone(),
                opened,
                count,
                fanout.clone(),
            )));
            opened += count;
            if pending.len() >= 32 {
                for task in pending.drain(..) {
                    task.await.unwrap().expect("a WebSocket");
                }
            }
        }
        for task in pending {
            task.await.unwrap().expect("a WebSocket");
        }
        // Wait until the server counts them all open.
        let deadline = Instant::now() + Duration::from_secs(120);
        while server_gauge(server, "smartmeter_graphql_subscriptions_open").await < target as f64
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let open_on_server = server_gauge(server, "smartmeter_graphql_subscriptions_open").await;
        for counter in &fanout.received {
            counter.store(0, Ordering::Relaxed);
        }
        fanout.latencies_us.lock().unwrap().clear();
        let errors_before = fanout.errors.load(Ordering::Relaxed);

        // Readings flow for the step.
        let (_, cpu0) = process_usage(server.child.id());
        let started = Instant::now();
        let interval = Duration::from_secs_f64(1.0 / args.rate as f64);
        let mut next = tokio::time::Instant::now();
        let mut produced_per_device = vec![0_u64; devices.len()];
        let mut n = 0_usize;
        while started.elapsed() < Duration::from_secs(args.step_seconds) {
            let device_index = n % devices.len();
            let device = DeviceId::parse(&devices[device_index]).unwrap();
            let at = Timestamp::from_second(1_359_676_800 + reading_second).unwrap();
            reading_second += 1;
            let payload = json!({ "device_id": device.as_str(), "timestamp": at.to_string(), "voltage": 240.0,
                "current": 1.0, "power_w": 240.0, "energy_kwh": 1.0 + reading_second as f64 / 1000.0, "power_factor": 1.0 });
            let reading = validate(
                &telemetry_topic(&device),
                payload.to_string().as_bytes(),
                Timestamp::now(),
                &config,
            )
            .unwrap();
            let value = serde_json::to_string(&reading).unwrap();
            let _ = producer
                .send(
                    FutureRecord::to(telemetry).key(device.as_str()).payload(&value),
                    Duration::from_secs(5),
                )
                .await;
            produced_per_device[device_index] += 1;
            n += 1;
            next += interval;
            tokio::time::sleep_until(next).await;
        }
        tokio::time::sleep(Duration::from_secs(2)).await; // let the last readings arrive
        let wall = started.elapsed().as_secs_f64();
        let (rss, cpu1) = process_usage(server.child.id());
        let mut complete = 0;
        let mut delivered = 0_u64;
        for (index, counter) in fanout.received.iter().take(target).enumerate() {
            let got = counter.load(Ordering::Relaxed);
            delivered += got;
            if got >= produced_per_device[index % devices.len()] {
                complete += 1;
            }
        }
        let mut sample = std::mem::take(&mut *fanout.latencies_us.lock().unwrap());
        sample.sort_unstable();
        println!(
            "| {target} | {} | {open_on_server} | {complete} | {:.0} | {:.1} ms | {:.1} ms | {} | {} MB | {:.0}% |",
            target.div_ceil(args.per_socket),
            delivered as f64 / wall,
            percentile(&sample, 0.5),
            percentile(&sample, 0.99),
            fanout.errors.load(Ordering::Relaxed) - errors_before,
            rss / 1024,
            (cpu1 - cpu0) as f64 / ticks_per_second() / wall * 100.0,
        );
    }
}

fn main() {
    let args = args();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        println!(
            "# query-api benchmark ({} cores)",
            std::thread::available_parallelism().map_or(1, |n| n.get())
        );
        eprintln!("Preparing the billed London January (processor and billing worker in this process)...");
        let world = common::billed_london_january().await;
        let telemetry = testkit::unique_name("smartmeter.telemetry.bench-api");
        testkit::create_topic(&testkit::kafka_brokers(), &telemetry, 6).await.unwrap();
        let server = start_server(&world.db.url, &telemetry).await;
        hourly_energy(&server, &world.device, &args).await;
        let devices: Vec<String> = {
            let (client, connection) =
                tokio_postgres::connect(&world.db.url, tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(connection);
            client
                .query("SELECT device_id FROM devices ORDER BY device_id", &[])
                .await
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect()
        };
        subscriptions(&server, devices, &telemetry, &args).await;
        drop(server);
        world.finish().await;
    });
}
