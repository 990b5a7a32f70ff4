//! Mosquitto, Kafka and PostgreSQL each stopped and started again in the middle of a
//! replay through the whole pipeline: publisher → Mosquitto → bridge → Kafka →
//! processor → PostgreSQL. Nothing may be lost and nothing counted twice: every
//! reading the broker accepted is in the database once, each meter's energy is its
//! counter's increase, and the bridge and processor keep running by themselves (they
//! retry with back-off and resume).
//!
//! The services are a private stack (`infra/up.sh` with a state directory and ports of
//! its own, see `common/stack.rs`), so the shared services other tests use are never
//! restarted. Restarts are clean stops (`infra/down.sh`): Mosquitto saves its queues
//! then. (After a `kill -9` Mosquitto loses what it accepted since its last autosave,
//! `autosave_interval 30` in infra; that is the broker's durability, not the
//! pipeline's.)

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser as _;
use common::binary::Binary;
use common::publisher::{self, Account, Progress};
use common::stack::{Service, Stack};
use common::{connect, london};
use tokio_util::sync::CancellationToken;

const POINTS_PER_SLOT: u32 = 2;
const PER_SECOND: u32 = 700;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The body of `GET /health` on `port`, or "" when it does not answer.
async fn health(port: u16) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return String::new();
    };
    let request = "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    let mut response = String::new();
    if stream.write_all(request.as_bytes()).await.is_err()
        || stream.read_to_string(&mut response).await.is_err()
    {
        return String::new();
    }
    response.replace(' ', "")
}

async fn readings(url: &str) -> i64 {
    match tokio_postgres::connect(url, tokio_postgres::NoTls).await {
        Ok((client, connection)) => {
            tokio::spawn(connection);
            client.query_one("SELECT count(*) FROM readings", &[]).await.map(|row| row.get(0)).unwrap_or(-1)
        }
        Err(_) => -1,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restarting_mosquitto_kafka_and_postgres_mid_run_loses_nothing() {
    let started = Instant::now();
    let stack = tokio::task::spawn_blocking(|| {
        Stack::start("restarts", &[Service::Postgres, Service::Mosquitto, Service::Kafka])
    })
    .await
    .unwrap();
    eprintln!("private stack ready in {:.1} s", started.elapsed().as_secs_f64());

    let prefix = format!("r{}-", std::process::id());
    let (messages, totals) = london::mqtt_messages(&prefix, POINTS_PER_SLOT);
    let total = messages.len() as u64;

    let (user, password) = Account::bridge_credentials();
    let bridge_metrics = free_port();
    let bridge_config = smartmeter_bridge::Config::try_parse_from([
        "bridge".to_owned(),
        format!("--mqtt-port={}", stack.mqtt_port),
        format!("--mqtt-user={user}"),
        format!("--mqtt-password={password}"),
        "--mqtt-client-id=restart-test-bridge".to_owned(),
        "--mqtt-reconnect-max=2s".to_owned(),
        format!("--kafka-brokers={}", stack.kafka_brokers()),
        format!("--metrics-addr=127.0.0.1:{bridge_metrics}"),
        "--clock-floor=2000-01-01T00:00:00Z".to_owned(),
    ])
    .unwrap();
    let bridge_stop = CancellationToken::new();
    let bridge = tokio::spawn(smartmeter_bridge::run(bridge_config, bridge_stop.clone()));
    // Its session subscribes on the first connection; before that the broker keeps nothing for it.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !health(bridge_metrics).await.contains(r#""mqtt":{"state":"up""#) {
        assert!(Instant::now() < deadline, "the bridge did not subscribe");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let mut processor = Binary::new(
        "restarts-processor",
        env!("CARGO_BIN_EXE_processor"),
        vec![
            format!("--brokers={}", stack.kafka_brokers()),
            format!("--database-url={}", stack.database_url()),
            "--default-time-zone=Europe/London".into(),
            "--metrics-addr=127.0.0.1:0".into(),
        ],
    );
    processor.start();

    let progress = Arc::new(Progress::default());
    let publishing = tokio::spawn(publisher::publish(
        Account::simulator(stack.mqtt_port),
        format!("{prefix}publisher"),
        messages,
        PER_SECOND,
        progress.clone(),
    ));
    let acked_share = |share: f64| {
        let progress = progress.clone();
        async move {
            while (progress.acked.load(Ordering::SeqCst) as f64) < share * total as f64 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };

    // Each restart once the pipeline is flowing; the next only after readings are
    // stored again (everything resumed by itself).
    let url = stack.database_url();
    let mut flowing_from = 0;
    for (share, service, outage) in [
        (0.15, Service::Mosquitto, Duration::from_secs(2)),
        (0.35, Service::Kafka, Duration::from_secs(3)),
        (0.6, Service::Postgres, Duration::from_secs(3)),
    ] {
        acked_share(share).await;
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let stored = readings(&url).await;
            if stored > flowing_from + 500 {
                break;
            }
            processor.check_alive();
            assert!(Instant::now() < deadline, "nothing stored for 180 s before restarting {service:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let before = readings(&url).await;
        eprintln!(
            "restarting {service:?} at {:.1} s ({before} readings stored)",
            started.elapsed().as_secs_f64()
        );
        stack.restart(service, outage).await;
        flowing_from = readings(&url).await.max(before);
    }

    tokio::time::timeout(Duration::from_secs(240), publishing).await.expect("publisher done").unwrap();
    eprintln!(
        "published {total} at {:.1} s ({} sends, {} publisher connection errors)",
        started.elapsed().as_secs_f64(),
        progress.sent.load(Ordering::SeqCst),
        progress.connection_errors.load(Ordering::SeqCst)
    );
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let stored = readings(&stack.database_url()).await;
        if stored == total as i64 {
            break;
        }
        processor.check_alive();
        assert!(!bridge.is_finished(), "the bridge stopped by itself");
        assert!(Instant::now() < deadline, "{stored} of {total} readings stored after the restarts");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!("all {total} readings stored at {:.1} s", started.elapsed().as_secs_f64());
    // Let redeliveries still in flight arrive; they must change nothing.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let client = connect(&stack.database_url()).await;
    let stored: i64 = client.query_one("SELECT count(*) FROM readings", &[]).await.unwrap().get(0);
    assert_eq!(stored, total as i64, "every reading once");
    for (device, total_milli_wh) in &totals {
        let row = client
            .query_one(
                "SELECT (SELECT coalesce(sum(energy_milli_wh), 0)::bigint FROM energy_daily WHERE device_id = $1),
                        (SELECT coalesce(sum(energy_milli_wh), 0)::bigint FROM energy_hourly WHERE device_id = $1)",
                &[device],
            )
            .await
            .unwrap();
        assert_eq!(
            (row.get::<_, i64>(0), row.get::<_, i64>(1)),
            (*total_milli_wh, *total_milli_wh),
            "{device}"
        );
    }
    let duplicates: i64 = client
        .query_one("SELECT coalesce(sum(duplicates_total), 0)::bigint FROM devices", &[])
        .await
        .unwrap()
        .get(0);
    eprintln!("duplicates seen and dropped by the processor: {duplicates}");

    processor.check_alive();
    assert!(!bridge.is_finished(), "the bridge stopped by itself");
    bridge_stop.cancel();
    tokio::time::timeout(Duration::from_secs(30), bridge).await.expect("bridge stops").unwrap().unwrap();
    processor.terminate();
    drop(stack);
}
