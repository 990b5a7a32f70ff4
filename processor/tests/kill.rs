//! Exactly-once effect, proven with SIGKILL: the real `processor` binary replays the
//! 10-household London January (meter simulator, 8 readings per half hour: 113,000
//! readings) plus device events, once without interruption into one database and once
//! SIGKILLed at random moments (10 or more) and restarted, into another. Every table
//! the processor writes must end the same (digest per table), and the energy must be
//! each counter's increase.
//!
//! The runs see the same records in the same order, each on topics of its own, in
//! three phases gated on the database: registrations (zones Asia/Kolkata,
//! America/St_Johns, Europe/London; two meters stay discovered); the telemetry, with
//! one reading in 97 held back and sent 400 records later (late, re-split, sometimes
//! into a closed month), the Kolkata meters' last January reading after their
//! January closed (PeriodAdjusted); then a time-zone change and a decommissioning.
//! Receive times follow meter time 3600 times faster, so the file's one hole of 3
//! hours is inactivity (timeout 2 s) seen from the telemetry. The killed run also cuts
//! its batches differently (1500 records, 20 ms linger, against 5000 and 50 ms).
//!
//! `SMARTMETER_TEST_SEED` repeats a run's kill moments; logs are in
//! `target/tmp/kill-*.log`.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::binary::{Binary, Rng};
use common::chaos::{digest, topic_end};
use common::{connect, count, device_event, london, produce};
use jiff::{SignedDuration, Timestamp};
use smartmeter_core::device_events::{DeviceDecommissioned, DeviceEvent, DeviceRegistered, DeviceUpdated};
use smartmeter_core::service::testkit::{self, TestDatabase};
use smartmeter_core::DeviceId;

const POINTS_PER_SLOT: u32 = 8;
const MIN_KILLS: u32 = 10;

/// One run's database and topics.
struct Run {
    name: String,
    db: TestDatabase,
    brokers: String,
    telemetry: String,
    events: String,
    periods: String,
    group: String,
}

impl Run {
    async fn create(name: &str) -> Self {
        let db = TestDatabase::create(&format!("kill_{name}")).await.unwrap();
        let brokers = testkit::kafka_brokers();
        let telemetry = testkit::unique_name(&format!("smartmeter.telemetry.kill-{name}"));
        let events = testkit::unique_name(&format!("smartmeter.device-events.kill-{name}"));
        let periods = testkit::unique_name(&format!("smartmeter.billing-periods.kill-{name}"));
        testkit::create_topic(&brokers, &telemetry, 6).await.unwrap();
        testkit::create_topic(&brokers, &events, 3).await.unwrap();
        testkit::create_topic(&brokers, &periods, 3).await.unwrap();
        let group = testkit::unique_name(&format!("processor-kill-{name}"));
        Self { name: name.to_owned(), db, brokers, telemetry, events, periods, group }
    }

    fn binary(&self, extra: &[&str]) -> Binary {
        let mut binary = Binary::new(
            &format!("kill-{}", self.name),
            env!("CARGO_BIN_EXE_processor"),
            vec![
                format!("--brokers={}", self.brokers),
                format!("--database-url={}", self.db.url),
                format!("--group-id={}", self.group),
                format!("--group-instance-id={}-0", self.group),
                format!("--topic={}", self.telemetry),
                format!("--device-events-topic={}", self.events),
                format!("--billing-periods-topic={}", self.periods),
                "--default-time-zone=Europe/London".into(),
                "--period-grace=1h".into(),
                "--inactivity-timeout=2s".into(),
                "--housekeeping-interval-ms=200".into(),
                "--metrics-addr=127.0.0.1:0".into(),
            ],
        );
        binary.add_args(extra);
        binary
    }
}

/// What both runs are fed.
struct Feed {
    devices: Vec<String>,
    totals_milli_wh: Vec<i64>,
    registrations: Vec<(String, String)>,
    telemetry: Vec<(String, String)>,
    changes: Vec<(String, String)>,
}

fn feed(prefix: &str) -> Feed {
    // Receive times in the future: the wall-clock housekeeping never finds a meter of
    // this replay silent, only the telemetry's own gaps do (deterministically).
    let received_from = Timestamp::now() + SignedDuration::from_mins(30);
    let replay = london::replay(prefix, POINTS_PER_SLOT, received_from, 3600);
    let mut telemetry = replay.records;
    let mut held = Vec::new();
    let mut index = 0;
    telemetry.retain(|record| {
        index += 1;
        let keep = index % 97 != 0;
        if !keep {
            held.push((index + 400, record.clone()));
        }
        keep
    });
    for (position, record) in held.into_iter().rev() {
        telemetry.insert(position.min(telemetry.len()), record);
    }
    // The Kolkata meters' reading at 18:00 UTC on 31 January (23:30 local) arrives
    // last, after their January has closed: PeriodAdjusted.
    let kolkata = &replay.devices[..4];
    let (last, rest): (Vec<_>, Vec<_>) = telemetry.into_iter().partition(|(key, value)| {
        kolkata.contains(key) && value.contains(r#""timestamp":"2013-01-31T18:00:00Z""#)
    });
    assert_eq!(last.len(), 4);
    let mut telemetry = rest;
    telemetry.extend(last);

    let zones = ["Asia/Kolkata", "Asia/Kolkata", "Asia/Kolkata", "Asia/Kolkata", "America/St_Johns"];
    let zones = zones.iter().chain(&["America/St_Johns", "Europe/London", "Europe/London"]);
    let at: Timestamp = "2012-12-01T00:00:00Z".parse().unwrap();
    let registrations = replay
        .devices
        .iter()
        .zip(zones)
        .enumerate()
        .map(|(i, (device, zone))| {
            let event = DeviceEvent::Registered(DeviceRegistered {
                device_id: DeviceId::parse(device).unwrap(),
                name: Some(format!("Household {i}")),
                location: Some("London".into()),
                time_zone: (*zone).into(),
                tariff_id: Some("uk_standard".into()),
                sanctioned_load_kw: None,
                customer_id: Some(format!("customer-{}", i % 3)),
            });
            device_event(event, at, &format!("registration-{i}"))
        })
        .collect();
    let mut update = DeviceUpdated::of(DeviceId::parse(&replay.devices[6]).unwrap());
    update.time_zone = Some("Australia/Lord_Howe".into());
    let decommission = DeviceEvent::Decommissioned(DeviceDecommissioned {
        device_id: DeviceId::parse(&replay.devices[8]).unwrap(),
        reason: Some("meter removed".into()),
    });
    let changes = vec![
        device_event(DeviceEvent::Updated(update), "2013-02-02T00:00:00Z".parse().unwrap(), "update-6"),
        device_event(decommission, "2013-01-25T00:00:00Z".parse().unwrap(), "decommission-8"),
    ];
    Feed {
        devices: replay.devices,
        totals_milli_wh: replay.totals_milli_wh,
        registrations,
        telemetry,
        changes,
    }
}

/// Polls `done` (every 200 ms, for at most 150 s) while checking the process is alive.
async fn wait(binary: &Arc<Mutex<Binary>>, what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(150);
    loop {
        if done().await {
            return;
        }
        binary.lock().unwrap().check_alive();
        let log = binary.lock().unwrap().log_path().display().to_string();
        assert!(Instant::now() < deadline, "{what}: not reached in 150 s (log: {log})");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn offsets(url: &str, topic: &str) -> i64 {
    let client = connect(url).await;
    client
        .query_one(
            "SELECT coalesce(sum(next_offset), 0)::bigint FROM consumer_offsets WHERE topic = $1",
            &[&topic],
        )
        .await
        .unwrap()
        .get(0)
}

/// Feeds `run` phase by phase; with `chaos`, SIGKILLs and restarts the processor at
/// random moments all along (at least `MIN_KILLS` times). Returns (kills, kills while
/// telemetry was being consumed, seconds).
async fn drive(run: &Run, feed: &Feed, chaos: Option<Rng>) -> (u32, u32, f64) {
    let started = Instant::now();
    // The killed run also cuts its batches differently: any batching and any restart
    // point must give the same tables.
    let extra: &[&str] = if chaos.is_some() { &["--max-batch=1500", "--linger-ms=20"] } else { &[] };
    let binary = Arc::new(Mutex::new(run.binary(extra)));
    binary.lock().unwrap().start();
    let stop_chaos = Arc::new(AtomicBool::new(false));
    let chaos_task = chaos.map(|mut rng| {
        let binary = binary.clone();
        let stop = stop_chaos.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(rng.millis(200, 1500)).await;
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let mut binary = binary.lock().unwrap();
                binary.kill9();
                binary.start();
            }
        })
    });
    let url = run.db.url.clone();

    let phase = |what: &str| eprintln!("  {}: {what} at {:.1} s", run.name, started.elapsed().as_secs_f64());
    produce(&run.brokers, &run.events, &feed.registrations).await;
    let registered = feed.registrations.len() as i64;
    wait(&binary, "registrations applied", async || {
        count(&url, "SELECT count(*) FROM devices WHERE lifecycle = 'registered'").await == registered
    })
    .await;

    phase("registrations applied");
    let kills_before = binary.lock().unwrap().kills;
    produce(&run.brokers, &run.telemetry, &feed.telemetry).await;
    let records = feed.telemetry.len() as i64;
    wait(&binary, "telemetry consumed", async || offsets(&url, &run.telemetry).await == records).await;
    let kills_during_telemetry = binary.lock().unwrap().kills - kills_before;
    phase("telemetry consumed");

    produce(&run.brokers, &run.events, &feed.changes).await;
    wait(&binary, "time zone changed and meter decommissioned", async || {
        count(
            &url,
            "SELECT count(*) FROM devices WHERE lifecycle = 'decommissioned' OR time_zone = 'Australia/Lord_Howe'",
        )
        .await
            == 2
    })
    .await;
    phase("zone changed, meter decommissioned");
    // Done: every device event read (the processor's own included), nothing left in
    // the outbox, twice in a row.
    let mut quiet = 0;
    wait(&binary, "outbox published and read back", async || {
        let end = topic_end(&run.brokers, &run.events).await;
        let caught_up = offsets(&url, &run.events).await == end
            && count(&url, "SELECT count(*) FROM outbox WHERE published_at IS NULL").await == 0;
        quiet = if caught_up { quiet + 1 } else { 0 };
        if quiet < 2 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        quiet >= 2
    })
    .await;
    phase("all published and read back");
    stop_chaos.store(true, Ordering::SeqCst);
    if let Some(task) = chaos_task {
        task.await.unwrap();
    }
    let mut binary = binary.lock().unwrap();
    binary.terminate();
    (binary.kills, kills_during_telemetry, started.elapsed().as_secs_f64())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_leaves_every_table_as_an_uninterrupted_run() {
    let prefix = format!("k{}-", std::process::id());
    let feed = feed(&prefix);
    assert!(feed.telemetry.len() >= 100_000, "{} readings", feed.telemetry.len());

    let calm = Run::create("calm").await;
    let (_, _, calm_seconds) = drive(&calm, &feed, None).await;
    let killed = Run::create("killed").await;
    let (kills, kills_during_telemetry, killed_seconds) =
        drive(&killed, &feed, Some(Rng::from_env("kill test"))).await;
    eprintln!(
        "{} readings: uninterrupted run {calm_seconds:.1} s; killed run {killed_seconds:.1} s with {kills} SIGKILLs \
         ({kills_during_telemetry} while telemetry was consumed)",
        feed.telemetry.len()
    );
    assert!(kills_during_telemetry >= MIN_KILLS, "{kills_during_telemetry} kills during the replay");

    let expected = digest(&calm.db.url).await;
    let got = digest(&killed.db.url).await;
    for (table, (rows, _)) in &expected {
        eprintln!("  {table}: {rows} rows");
    }
    assert_eq!(got, expected, "every table equals the uninterrupted run's");

    // And the uninterrupted run is right: each reading once; each meter's energy is its
    // counter's increase (the decommissioned one's up to the decommissioning).
    assert_eq!(expected["readings"].0, feed.telemetry.len() as i64);
    let client = connect(&calm.db.url).await;
    for (i, device) in feed.devices.iter().enumerate() {
        let row = client
            .query_one(
                "SELECT (SELECT coalesce(sum(energy_milli_wh), 0)::bigint FROM energy_daily WHERE device_id = $1),
                        (SELECT coalesce(sum(energy_milli_wh), 0)::bigint FROM energy_hourly WHERE device_id = $1),
                        (SELECT coalesce(sum(counted_milli_wh), 0)::bigint FROM readings WHERE device_id = $1)",
                &[device],
            )
            .await
            .unwrap();
        let (daily, hourly, counted): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
        assert_eq!((daily, hourly), (counted, counted), "{device}: hours = days = counted");
        if i != 8 {
            assert_eq!(counted, feed.totals_milli_wh[i], "{device}: the counter's increase");
        } else {
            assert!(counted < feed.totals_milli_wh[i]);
        }
    }
    let kinds: Vec<(String, i64)> = client
        .query("SELECT payload->>'type', count(*) FROM outbox GROUP BY 1 ORDER BY 1", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    eprintln!("  outbox: {kinds:?}");
    assert_eq!(kinds.len(), 3, "period closed, period adjusted and status changes: {kinds:?}");
    calm.db.drop_database().await.unwrap();
    killed.db.drop_database().await.unwrap();
}
