//! Shared by the integration tests: where the real data files are, and what they say
//! the energy per hour is, read independently of the simulator's own loaders (plain
//! string splitting and integer arithmetic, nothing of `meter_simulator::source`).

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use jiff::Timestamp;

pub const TEN_HOUSEHOLDS: &str = "lcl_halfhourly_2013-01_10households.csv";
pub const RAW_MAC000002: &str = "lcl_raw_MAC000002_halfhourly_2012-10_to_2014-02.csv";
pub const UCI: &str = "uci_household_power_minute_2006-12-16_to_2006-12-27.txt";
pub const PZEM_LOG: &str = "pzem004t_3meters_idle_log_2025-08-05.csv";

/// `SMARTMETER_DATA_DIR`, or the `shared/data` folder beside the repository.
pub fn data_file(name: &str) -> PathBuf {
    let dir = std::env::var_os("SMARTMETER_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"));
    let path = dir.join(name);
    assert!(path.is_file(), "data file {} not found; set SMARTMETER_DATA_DIR", path.display());
    path
}

pub fn ts(text: &str) -> Timestamp {
    text.parse().unwrap()
}

/// Start of the UTC hour of `t`. The zones used here (London, Paris, Ho Chi Minh City)
/// are whole hours from UTC, so a local hour starts on a UTC hour.
pub fn utc_hour(t: Timestamp) -> Timestamp {
    Timestamp::from_second(t.as_second().div_euclid(3_600) * 3_600).unwrap()
}

/// Energy in milliwatt-hours per hour (bucket start).
pub type Hourly = BTreeMap<Timestamp, i64>;

/// The half hours of one London household in the 10-household file: (start, Wh).
/// Values are decimal kWh, some float32 renderings (`1.0779999`): rounded to the Wh.
pub fn london_half_hours(household: &str) -> Vec<(Timestamp, i64)> {
    let text = std::fs::read_to_string(data_file(TEN_HOUSEHOLDS)).unwrap();
    let mut seen = BTreeSet::new();
    let mut rows = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if fields[0] != household {
            continue;
        }
        let start: Timestamp = format!("{}Z", fields[1].replace(' ', "T")).parse().unwrap();
        let (whole, fraction) = fields[2].split_once('.').unwrap_or((fields[2], ""));
        let nano_kwh: i64 = whole.parse::<i64>().unwrap() * 1_000_000_000
            + format!("{fraction:0<9}")[..9].parse::<i64>().unwrap();
        let wh = (nano_kwh + 500_000) / 1_000_000;
        if seen.insert(start) {
            rows.push((start, wh));
        }
    }
    rows.sort();
    rows
}

/// Hourly energy of half hours that start in `[from, to)`.
pub fn london_hourly(rows: &[(Timestamp, i64)], from: Timestamp, to: Timestamp) -> Hourly {
    let mut hourly = Hourly::new();
    for (start, wh) in rows.iter().filter(|(s, _)| *s >= from && *s < to) {
        *hourly.entry(utc_hour(*start)).or_default() += wh * 1_000;
    }
    hourly
}

/// The UCI minutes (UTC start, active power in W); `?` minutes are absent.
pub fn uci_minutes() -> Vec<(Timestamp, i64)> {
    let text = std::fs::read_to_string(data_file(UCI)).unwrap();
    let paris = TimeZone::get("Europe/Paris").unwrap();
    let mut rows = Vec::new();
    for line in text.lines().skip(1) {
        let fields: Vec<&str> = line.trim_end_matches('\r').split(';').collect();
        if fields[2] == "?" {
            continue;
        }
        let local = DateTime::strptime("%d/%m/%Y %H:%M:%S", format!("{} {}", fields[0], fields[1])).unwrap();
        let start = local.to_zoned(paris.clone()).unwrap().timestamp();
        let (kw, w) = fields[2].split_once('.').unwrap();
        let watts = kw.parse::<i64>().unwrap() * 1_000 + format!("{w:0<3}").parse::<i64>().unwrap();
        rows.push((start, watts));
    }
    rows
}

/// Hourly energy of the UCI minutes in `[from, to)` (minutes cut at the edges), in
/// milliwatt-hours scaled by 3600 (W·ms exactly: mWh × 3600 = W × ms).
pub fn uci_hourly_w_ms(
    rows: &[(Timestamp, i64)],
    from: Timestamp,
    to: Timestamp,
) -> BTreeMap<Timestamp, i128> {
    let mut hourly: BTreeMap<Timestamp, i128> = BTreeMap::new();
    for (start, watts) in rows {
        let (a, b) = (start.as_millisecond(), start.as_millisecond() + 60_000);
        let (a, b) = (a.max(from.as_millisecond()), b.min(to.as_millisecond()));
        let mut t = a;
        while t < b {
            let hour_end = (t.div_euclid(3_600_000) + 1) * 3_600_000;
            let until = hour_end.min(b);
            let hour = Timestamp::from_millisecond(t.div_euclid(3_600_000) * 3_600_000).unwrap();
            *hourly.entry(hour).or_default() += i128::from(*watts) * i128::from(until - t);
            t = until;
        }
    }
    hourly
}

/// W·ms to mWh, as a real number.
pub fn w_ms_to_mwh(w_ms: i128) -> f64 {
    w_ms as f64 / 3_600.0
}

/// The retained status messages a test's meters leave on the broker (every birth and
/// goodbye is retained, as on a real meter), removed when this is dropped — when the
/// test ends, and also when it fails — by an empty retained message on each topic. The
/// broker is the shared one of `infra/up.sh`: a bridge subscribed to every status topic
/// (the demo's, a dashboard's) would otherwise turn each leftover into a discovered meter.
pub struct RetainedStatuses {
    topics: Vec<String>,
}

impl RetainedStatuses {
    /// The status topics of `devices`.
    pub fn of<I, S>(devices: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Self { topics: devices.into_iter().map(|d| format!("smartmeter/{}/status", d.as_ref())).collect() }
    }
}

impl Drop for RetainedStatuses {
    fn drop(&mut self) {
        let topics = std::mem::take(&mut self.topics);
        if topics.is_empty() {
            return;
        }
        // Drop runs inside the test's runtime, which must not block on a future of its
        // own: a thread with a runtime of its own does the publishing.
        let cleared = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?
                .block_on(clear_retained(&topics))
        })
        .join();
        match cleared {
            Ok(Ok(())) => {}
            Ok(Err(error)) => eprintln!("could not remove the test's retained status messages: {error}"),
            Err(_) => eprintln!("removing the test's retained status messages panicked"),
        }
    }
}

/// Publishes an empty retained message (which removes the retained one) on each topic,
/// with the simulator's account, and waits for the broker's acknowledgements.
async fn clear_retained(topics: &[String]) -> Result<(), String> {
    use smartmeter_core::service::testkit;

    let port = testkit::env_or("SMARTMETER_MQTT_PORT", "1883").parse().map_err(|_| "SMARTMETER_MQTT_PORT")?;
    let mut options = rumqttc::MqttOptions::new(
        testkit::unique_name("meter-sim-test-clear"),
        testkit::env_or("SMARTMETER_MQTT_HOST", "127.0.0.1"),
        port,
    );
    options.set_credentials(
        testkit::env_or("SMARTMETER_MQTT_SIMULATOR_USER", "smartmeter-simulator"),
        testkit::env_or("SMARTMETER_MQTT_SIMULATOR_PASSWORD", "simulator-dev-only"),
    );
    let (client, mut eventloop) = rumqttc::AsyncClient::new(options, topics.len().max(1) + 1);
    for topic in topics {
        client
            .publish(topic, rumqttc::QoS::AtLeastOnce, true, Vec::new())
            .await
            .map_err(|e| e.to_string())?;
    }
    let mut acks = 0;
    while acks < topics.len() {
        match tokio::time::timeout(std::time::Duration::from_secs(5), eventloop.poll()).await {
            Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)))) => acks += 1,
            Ok(Ok(_)) => {}
            Ok(Err(error)) => return Err(error.to_string()),
            Err(_) => return Err(format!("{acks} of {} acknowledged within 5 s", topics.len())),
        }
    }
    let _ = client.disconnect().await;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), eventloop.poll()).await;
    Ok(())
}
