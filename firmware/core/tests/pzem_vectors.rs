//! Every vector of `shared/data/pzem004t_v3_modbus_vectors.json`, replayed through the
//! driver byte for byte: the driver's request must equal the vector's request, the
//! decoded values its `expected`, and the error replies must give the right typed error.

mod common;

use std::collections::BTreeMap;

use common::{hex, hex_u16, FakeDelay, FakePort, Reply};
use meter_core::modbus::{holding, FN_READ_HOLDING, FN_READ_INPUT};
use meter_core::pzem::{Config, Error, ExceptionCode, Parameters};
use meter_core::Pzem;
use serde_json::Value;

const VECTORS: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data/pzem004t_v3_modbus_vectors.json");

struct Vector {
    id: String,
    request: Option<Vec<u8>>,
    response: Option<Vec<u8>>,
    expected: Value,
}

fn vectors() -> Vec<Vector> {
    let text = std::fs::read_to_string(VECTORS).unwrap_or_else(|e| panic!("{VECTORS}: {e}"));
    let json: Value = serde_json::from_str(&text).unwrap();
    json["vectors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| Vector {
            id: v["id"].as_str().unwrap().to_owned(),
            request: v["request_hex"].as_str().map(hex),
            response: v["response_hex"].as_str().map(hex),
            expected: v["expected"].clone(),
        })
        .collect()
}

type Driver = Pzem<FakePort, FakeDelay>;

fn driver(address: u8, reply: Option<&[u8]>, retries: u8) -> Driver {
    let script = (0..=retries).map(|_| match reply {
        Some(bytes) => Reply::Bytes(bytes.to_vec()),
        None => Reply::Silence,
    });
    let config = Config { address, retries, ..Config::default() };
    Pzem::new(FakePort::new(script), FakeDelay::default(), config)
}

fn sent(driver: Driver) -> Vec<Vec<u8>> {
    driver.release().0.requests
}

/// `expected[field]` (a decimal in the unit) in the register's fixed-point units.
fn fixed(expected: &Value, field: &str, scale: f64) -> u64 {
    let value = expected[field].as_f64().unwrap_or_else(|| panic!("{field} missing"));
    (value * scale).round() as u64
}

fn exception_code(expected: &Value) -> ExceptionCode {
    ExceptionCode::from(expected["exception_code"].as_u64().unwrap() as u8)
}

fn exception_function(expected: &Value) -> u8 {
    hex_u16(expected["exception_function"].as_str().unwrap()) as u8 & 0x7F
}

/// What kind of exchange a vector records; every vector must be one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    ReadMeasurement,
    ReadSilence,
    ReadParameters,
    ReadHoldingRange,
    WriteSingle,
    WriteMultiple,
    ResetEnergy,
    ResetEnergyRefused,
    Calibrate,
    ExceptionOnly,
}

fn kind(v: &Vector) -> Kind {
    let Some(request) = &v.request else {
        return Kind::ExceptionOnly;
    };
    let refused = v.response.as_ref().is_some_and(|r| r[1] & 0x80 != 0);
    match (request[1], v.response.is_some(), refused) {
        (0x04, true, false) => Kind::ReadMeasurement,
        (0x04, false, _) => Kind::ReadSilence,
        (0x03, true, false) if request[2..6] == [0x00, 0x01, 0x00, 0x02] => Kind::ReadParameters,
        (0x03, true, false) => Kind::ReadHoldingRange,
        (0x06, true, false) => Kind::WriteSingle,
        (0x10, true, false) => Kind::WriteMultiple,
        (0x42, true, false) => Kind::ResetEnergy,
        (0x42, true, true) => Kind::ResetEnergyRefused,
        (0x41, true, false) => Kind::Calibrate,
        other => panic!("vector {}: no test handles {other:?}", v.id),
    }
}

fn check(v: &Vector) {
    let e = &v.expected;
    let request = v.request.as_deref();
    let response = v.response.as_deref();
    let address = request.or(response).unwrap()[0];
    match kind(v) {
        Kind::ReadMeasurement => {
            let mut pzem = driver(address, response, 0);
            let m = pzem.read_measurement().unwrap_or_else(|err| panic!("{}: {err}", v.id));
            assert_eq!(u64::from(m.voltage_decivolts), fixed(e, "voltage_v", 10.0), "{}", v.id);
            assert_eq!(u64::from(m.current_milliamps), fixed(e, "current_a", 1_000.0), "{}", v.id);
            assert_eq!(u64::from(m.power_deciwatts), fixed(e, "power_w", 10.0), "{}", v.id);
            assert_eq!(u64::from(m.energy_wh), e["energy_wh"].as_u64().unwrap(), "{}", v.id);
            assert_eq!(u64::from(m.frequency_decihertz), fixed(e, "frequency_hz", 10.0), "{}", v.id);
            assert_eq!(u64::from(m.power_factor_hundredths), fixed(e, "power_factor", 100.0), "{}", v.id);
            assert_eq!(m.alarm, e["alarm"] != "off", "{}", v.id);
            assert_eq!(e["slave_address"].as_u64(), Some(u64::from(address)), "{}", v.id);
            assert_eq!(sent(pzem), [request.unwrap()], "{}", v.id);

            // The raw registers, through the generic read.
            let mut pzem = driver(address, response, 0);
            let mut registers = [0u16; 10];
            pzem.read_input_registers(0, &mut registers).unwrap();
            let expected: Vec<u16> = e["raw_registers_hex"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| hex_u16(r.as_str().unwrap()))
                .collect();
            assert_eq!(registers.to_vec(), expected, "{}", v.id);
            assert_eq!(sent(pzem), [request.unwrap()], "{}", v.id);
        }
        Kind::ReadSilence => {
            let request = request.unwrap();
            assert_eq!(request[1], FN_READ_INPUT);
            assert_eq!(u64::from(address), e["slave_address"].as_u64().unwrap());
            let mut pzem = driver(address, None, 2);
            assert_eq!(pzem.read_measurement(), Err(Error::Timeout), "{}", v.id);
            assert_eq!(sent(pzem), vec![request.to_vec(); 3], "{}: one try and two retries", v.id);
        }
        Kind::ReadParameters => {
            let mut pzem = driver(address, response, 0);
            let parameters = pzem.read_parameters().unwrap();
            let expected = Parameters {
                power_alarm_threshold_w: e["power_alarm_threshold_w"].as_u64().unwrap() as u16,
                address: e["address"].as_u64().unwrap() as u8,
            };
            assert_eq!(parameters, expected, "{}", v.id);
            assert_eq!(sent(pzem), [request.unwrap()], "{}", v.id);
        }
        Kind::ReadHoldingRange => {
            let request = request.unwrap();
            assert_eq!(request[1], FN_READ_HOLDING);
            let start = u16::from_be_bytes([request[2], request[3]]);
            let expected: Vec<u16> =
                e["registers_hex"].as_array().unwrap().iter().map(|r| hex_u16(r.as_str().unwrap())).collect();
            let mut pzem = driver(address, response, 0);
            let mut registers = vec![0u16; expected.len()];
            pzem.read_holding_registers(start, &mut registers).unwrap();
            assert_eq!(registers, expected, "{}", v.id);
            assert_eq!(registers.len() * 2, e["byte_count"].as_u64().unwrap() as usize);
            let partial = &e["interpretation_partial"];
            let at = |register: u16| registers[usize::from(register - start)];
            assert_eq!(
                u64::from(at(holding::POWER_ALARM_THRESHOLD)),
                partial["0x0001_power_alarm_threshold_w"].as_u64().unwrap()
            );
            assert_eq!(u64::from(at(holding::MODBUS_ADDRESS)), partial["0x0002_address"].as_u64().unwrap());
            assert_eq!(sent(pzem), [request], "{}", v.id);
        }
        Kind::WriteSingle => {
            let register = hex_u16(e["register"].as_str().unwrap());
            let value = e["value"].as_u64().unwrap() as u16;
            let mut pzem = driver(address, response, 0);
            match register {
                holding::POWER_ALARM_THRESHOLD => pzem.set_power_alarm_threshold_w(value).unwrap(),
                holding::MODBUS_ADDRESS => {
                    pzem.set_address(value as u8).unwrap();
                    assert_eq!(pzem.config().address, value as u8, "later requests go to the new address");
                }
                other => panic!("{}: no setter for register {other:#06x}", v.id),
            }
            assert_eq!(sent(pzem), [request.unwrap()], "{}", v.id);
        }
        Kind::WriteMultiple => {
            let request = request.unwrap();
            let start = u16::from_be_bytes([request[2], request[3]]);
            let count = u16::from_be_bytes([request[4], request[5]]);
            assert_eq!(
                (u64::from(start), u64::from(count)),
                (e["start"].as_u64().unwrap(), e["count"].as_u64().unwrap())
            );
            // The values as the vector lists them, else as the captured frame carries them.
            let values: Vec<u16> = match e["values_hex"].as_array() {
                Some(values) => values.iter().map(|r| hex_u16(r.as_str().unwrap())).collect(),
                None => request[7..request.len() - 2]
                    .chunks_exact(2)
                    .map(|b| u16::from_be_bytes([b[0], b[1]]))
                    .collect(),
            };
            assert_eq!(values.len(), usize::from(count));
            let mut pzem = driver(address, response, 0);
            pzem.write_multiple_registers(start, &values).unwrap();
            assert_eq!(sent(pzem), [request], "{}", v.id);
        }
        Kind::ResetEnergy => {
            let mut pzem = driver(address, response, 0);
            pzem.reset_energy().unwrap();
            assert_eq!(sent(pzem), [request.unwrap()], "{}", v.id);
        }
        Kind::ResetEnergyRefused => {
            let mut pzem = driver(address, response, 2);
            let err = pzem.reset_energy().unwrap_err();
            assert_eq!(
                err,
                Error::Exception { function: exception_function(e), code: exception_code(e) },
                "{}",
                v.id
            );
            assert_eq!(exception_code(e), ExceptionCode::SlaveError);
            // The device said no: no retry.
            assert_eq!(sent(pzem), [request.unwrap()], "{}", v.id);
        }
        Kind::Calibrate => {
            let mut pzem = driver(address, response, 0);
            pzem.calibrate().unwrap();
            assert_eq!(sent(pzem), [request.unwrap()], "{}", v.id);
        }
        Kind::ExceptionOnly => {
            // A captured exception reply without its request: provoke it with the request
            // the vector describes (function = exception function without 0x80).
            let function = exception_function(e);
            let mut pzem = driver(address, response, 2);
            let err = match function {
                FN_READ_INPUT => pzem.read_measurement().unwrap_err(),
                // A write of the slave address the device refuses (espurna: 0, 248, 255).
                0x06 => pzem.write_single_register(holding::MODBUS_ADDRESS, 0).unwrap_err(),
                other => panic!("{}: no request provokes exception function {other:#04x}", v.id),
            };
            assert_eq!(err, Error::Exception { function, code: exception_code(e) }, "{}", v.id);
            assert_eq!(sent(pzem).len(), 1, "{}: exceptions are not retried", v.id);
        }
    }
}

#[test]
fn every_vector_replays() {
    let vectors = vectors();
    assert_eq!(vectors.len(), 63, "the data set changed; look at the new vectors");
    let mut kinds: BTreeMap<Kind, usize> = BTreeMap::new();
    for v in &vectors {
        check(v);
        *kinds.entry(kind(v)).or_default() += 1;
    }
    let expected = BTreeMap::from([
        (Kind::ReadMeasurement, 50),
        (Kind::ReadSilence, 1),
        (Kind::ReadParameters, 1),
        (Kind::ReadHoldingRange, 1),
        (Kind::WriteSingle, 2),
        (Kind::WriteMultiple, 2),
        (Kind::ResetEnergy, 2),
        (Kind::ResetEnergyRefused, 1),
        (Kind::Calibrate, 1),
        (Kind::ExceptionOnly, 2),
    ]);
    assert_eq!(kinds, expected);
}

#[test]
fn exception_vectors_name_the_documented_codes() {
    let vectors = vectors();
    let codes: BTreeMap<&str, ExceptionCode> = vectors
        .iter()
        .filter(|v| v.expected.get("exception_code").is_some())
        .map(|v| (v.id.as_str(), exception_code(&v.expected)))
        .collect();
    assert_eq!(codes["ds-error-illegal-address"], ExceptionCode::IllegalAddress);
    assert_eq!(codes["ds-error-reset-energy"], ExceptionCode::SlaveError);
    assert_eq!(codes["espurna-error-illegal-data"], ExceptionCode::IllegalData);
}

/// Each measurement reply, one byte at a time: the driver must assemble partial reads.
#[test]
fn measurement_replies_survive_byte_by_byte_delivery() {
    for v in vectors().iter().filter(|v| kind(v) == Kind::ReadMeasurement) {
        let response = v.response.clone().unwrap();
        let mut port = FakePort::new([Reply::Bytes(response)]);
        port.chunk = 1;
        let mut pzem = Pzem::new(
            port,
            FakeDelay::default(),
            Config { address: v.request.as_ref().unwrap()[0], ..Config::default() },
        );
        let m = pzem.read_measurement().unwrap();
        assert_eq!(u64::from(m.energy_wh), v.expected["energy_wh"].as_u64().unwrap(), "{}", v.id);
    }
}
