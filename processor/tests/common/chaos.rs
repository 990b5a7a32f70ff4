//! For the exactly-once tests: the real `processor` binary started and SIGKILLed by the
//! test, a seeded random source for the moments, digests of every table the processor
//! writes, and Kafka's high watermarks.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;

/// xorshift64*: enough randomness for kill moments, reproducible from its seed.
pub struct Rng(u64);

impl Rng {
    /// From `SMARTMETER_TEST_SEED`, else the clock; the seed is printed so a failing
    /// run can be repeated.
    pub fn from_env(label: &str) -> Self {
        let seed = std::env::var("SMARTMETER_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| jiff::Timestamp::now().as_nanosecond() as u64 | 1);
        eprintln!("{label}: SMARTMETER_TEST_SEED={seed}");
        Self(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `low..high` milliseconds.
    pub fn millis(&mut self, low: u64, high: u64) -> Duration {
        Duration::from_millis(low + self.next() % (high - low))
    }
}

/// The `processor` binary with fixed arguments, (re)started and killed on demand. Its
/// output goes to `CARGO_TARGET_TMPDIR/<name>.log`.
pub struct Binary {
    pub name: String,
    args: Vec<String>,
    child: Option<Child>,
    pub starts: u32,
    pub kills: u32,
    log: PathBuf,
}

impl Binary {
    pub fn new(name: &str, args: Vec<String>) -> Self {
        let log = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}.log"));
        let _ = std::fs::remove_file(&log);
        Self { name: name.to_owned(), args, child: None, starts: 0, kills: 0, log }
    }

    pub fn add_args(&mut self, args: &[&str]) {
        self.args.extend(args.iter().map(|arg| (*arg).to_owned()));
    }

    pub fn log_path(&self) -> &PathBuf {
        &self.log
    }

    pub fn start(&mut self) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        let log = File::options().create(true).append(true).open(&self.log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_processor"))
            .args(&self.args)
            .env("RUST_LOG", std::env::var("SMARTMETER_TEST_RUST_LOG").unwrap_or_else(|_| "info".into()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start the processor binary");
        self.child = Some(child);
        self.starts += 1;
    }

    /// SIGKILL: no shutdown code runs, whatever the process was doing.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().expect("SIGKILL");
        child.wait().unwrap();
        self.kills += 1;
    }

    /// SIGTERM and wait (30 s at most) for a clean exit.
    pub fn terminate(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
        assert!(status.success());
        for _ in 0..300 {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(status.success(), "{} exited with {status}; log: {}", self.name, self.log.display());
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        panic!("{} did not stop within 30 s of SIGTERM", self.name);
    }

    /// Fails the test when the process exited on its own.
    pub fn check_alive(&mut self) {
        if let Some(child) = &mut self.child {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("{} exited by itself with {status}; log: {}", self.name, self.log.display());
            }
        }
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Every table the processor writes, without wall-clock columns (`created_at`,
/// `updated_at`, `closed_at`, `published_at`, `rejected_at`) and without what names
/// the run's own topics: (rows, md5 of the sorted rows) per table.
pub async fn digest(url: &str) -> BTreeMap<&'static str, (i64, String)> {
    const TABLES: [(&str, &str); 10] = [
        ("readings", "SELECT * FROM readings"),
        ("energy_hourly", "SELECT * FROM energy_hourly"),
        ("energy_daily", "SELECT * FROM energy_daily"),
        ("counter_events", "SELECT * FROM counter_events"),
        ("reading_conflicts", "SELECT * FROM reading_conflicts"),
        (
            "devices",
            "SELECT device_id, name, location, time_zone, lifecycle, tariff_id, sanctioned_load_kw,
                    firmware_version, online, status_changed_at, first_seen_at, last_seen_at,
                    newest_reading_at, readings_total, duplicates_total, customer_id, registered_at,
                    decommissioned_at, decommission_reason, status_reason, telemetry_partition
             FROM devices",
        ),
        (
            "billing_periods",
            "SELECT device_id, month, time_zone, starts_at, ends_at, status, revision, published
             FROM billing_periods",
        ),
        ("outbox", "SELECT event_id, event_key, payload FROM outbox"),
        ("telemetry_rejects", "SELECT kafka_partition, kafka_offset, payload, reason FROM telemetry_rejects"),
        (
            "device_event_rejects",
            "SELECT kafka_partition, kafka_offset, payload, reason FROM device_event_rejects",
        ),
    ];
    let client = super::connect(url).await;
    let mut out = BTreeMap::new();
    for (table, select) in TABLES {
        let sql = format!(
            "SELECT count(*), coalesce(md5(string_agg(t::text, E'\\n' ORDER BY t::text)), '')
             FROM ({select}) t"
        );
        let row = client.query_one(&sql, &[]).await.unwrap();
        out.insert(table, (row.get(0), row.get(1)));
    }
    out
}

/// Sum of the high watermarks of `topic`'s partitions: records ever written to it.
pub async fn topic_end(brokers: &str, topic: &str) -> i64 {
    let brokers = brokers.to_owned();
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer =
            ClientConfig::new().set("bootstrap.servers", &brokers).create().expect("Kafka client");
        let metadata = consumer.fetch_metadata(Some(&topic), Duration::from_secs(10)).expect("metadata");
        let partitions = metadata.topics()[0].partitions().len() as i32;
        (0..partitions)
            .map(|p| consumer.fetch_watermarks(&topic, p, Duration::from_secs(10)).expect("watermarks").1)
            .sum()
    })
    .await
    .unwrap()
}
