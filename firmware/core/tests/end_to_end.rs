//! Recorded PZEM replies → driver → meter (through an outage) → telemetry JSON → the
//! bridge's own validator. What the bridge accepts must be what the meter measured.

mod common;

use common::{hex, FakeDelay, FakePort, Reply};
use meter_core::backoff::Backoff;
use meter_core::mqtt::Delivery;
use meter_core::pzem::Config;
use meter_core::{DeviceId, Handover, Identity, Meter, Publisher, Pzem};
use serde_json::Value;
use smartmeter_core::telemetry::{validate, ValidationConfig};

const VECTORS: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data/pzem004t_v3_modbus_vectors.json");

#[derive(Default)]
struct Broker {
    messages: Vec<(String, Vec<u8>)>,
}

impl Publisher for Broker {
    type Error = ();
    fn publish(&mut self, topic: &str, payload: &[u8], _: Delivery) -> Result<Handover, ()> {
        self.messages.push((topic.to_owned(), payload.to_vec()));
        Ok(Handover::AwaitingAck(self.messages.len() as u32))
    }
}

#[test]
fn a_buffered_outage_reaches_the_bridge_intact() {
    let json: Value = serde_json::from_str(&std::fs::read_to_string(VECTORS).unwrap()).unwrap();
    let recorded: Vec<&Value> = json["vectors"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["id"].as_str().unwrap().starts_with("tasmota11817-"))
        .collect();
    assert_eq!(recorded.len(), 22);

    let script = recorded.iter().map(|v| Reply::Bytes(hex(v["response_hex"].as_str().unwrap())));
    let config = Config { address: 0x01, ..Config::default() };
    let mut pzem = Pzem::new(FakePort::new(script), FakeDelay::default(), config);

    let identity =
        Identity::new(DeviceId::parse("meter-001").unwrap(), Some("5eed"), Some("meter-esp32/0.1.0"))
            .unwrap();
    let mut meter: Meter<16> = Meter::new(identity, Backoff::new(1_000, 60_000));
    // SNTP answered at 5 s of uptime: 2021-04-20T15:11:00Z.
    assert!(meter.clock_set(5_000, 1_618_931_460_000));

    // One reading per second while the broker is unreachable.
    for (i, _) in recorded.iter().enumerate() {
        let m = pzem.read_measurement().unwrap();
        meter.record(8_000 + 1_000 * i as u64, m, None);
    }
    assert_eq!(meter.stats().dropped, 6, "22 readings into 16 places");

    let mut broker = Broker::default();
    meter.connected(&mut broker).unwrap();
    let mut id = 1;
    while meter.stats().queued > 0 {
        meter.flush(&mut broker, usize::MAX).unwrap();
        id += 1;
        assert!(meter.acknowledged(id));
    }

    let telemetry: Vec<&(String, Vec<u8>)> =
        broker.messages.iter().filter(|(t, _)| t == "smartmeter/meter-001/telemetry").collect();
    assert_eq!(telemetry.len(), 16);
    let received_at: jiff::Timestamp = "2021-04-20T15:20:00Z".parse().unwrap();
    for ((topic, payload), (i, vector)) in telemetry.iter().zip(recorded.iter().enumerate().skip(6)) {
        let reading = validate(topic, payload, received_at, &ValidationConfig::default())
            .unwrap_or_else(|e| panic!("bridge refused {}: {e}", String::from_utf8_lossy(payload)));
        let e = &vector["expected"];
        assert!(!reading.clock_unsynced);
        assert_eq!(reading.seq, Some(i as u64));
        assert_eq!(reading.voltage, e["voltage_v"].as_f64().unwrap());
        assert_eq!(reading.current, e["current_a"].as_f64().unwrap());
        assert_eq!(reading.power_w, e["power_w"].as_f64().unwrap());
        assert_eq!(reading.energy_kwh, e["energy_wh"].as_f64().unwrap() / 1_000.0);
        assert_eq!(reading.power_factor, e["power_factor"].as_f64().unwrap());
        assert_eq!(reading.frequency_hz, e["frequency_hz"].as_f64());
        let expected_time = jiff::Timestamp::from_second(1_618_931_460 + 3 + i as i64).unwrap();
        assert_eq!(reading.timestamp, expected_time, "original measurement time");
        let payload: Value = serde_json::from_slice(payload).unwrap();
        assert_eq!(payload["dropped"], 6);
    }
}
