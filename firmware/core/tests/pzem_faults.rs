//! Line faults made from recorded frames: corrupted CRC, truncation, silence, stray
//! bytes, replies from someone else, port errors. Each gives its typed error after the
//! configured retries, or the true reading once a retry gets a clean reply; never a
//! made-up value.

mod common;

use common::{hex, FakeDelay, FakePort, Reply};
use embedded_io::ErrorKind;
use meter_core::modbus::crc16;
use meter_core::pzem::{Config, Error, Unexpected};
use meter_core::{Measurement, Pzem};

/// ds-read-input-01: request and reply from the manual.
const REQUEST: &str = "01 04 00 00 00 0A 70 0D";
const REPLY: &str = "01 04 14 08 98 03 E8 00 00 08 98 00 00 00 00 00 00 01 F4 00 64 00 00 63 CE";

const MANUAL_READING: Measurement = Measurement {
    voltage_decivolts: 2200,
    current_milliamps: 1000,
    power_deciwatts: 2200,
    energy_wh: 0,
    frequency_decihertz: 500,
    power_factor_hundredths: 100,
    alarm: false,
};

fn config(retries: u8) -> Config {
    Config { address: 0x01, retries, ..Config::default() }
}

fn pzem(script: Vec<Reply>, retries: u8) -> Pzem<FakePort, FakeDelay> {
    Pzem::new(FakePort::new(script), FakeDelay::default(), config(retries))
}

fn reply() -> Vec<u8> {
    hex(REPLY)
}

fn with_crc(mut body: Vec<u8>) -> Vec<u8> {
    let crc = crc16(&body);
    body.extend(crc.to_le_bytes());
    body
}

#[test]
fn a_clean_reply_reads() {
    let mut p = pzem(vec![Reply::Bytes(reply())], 0);
    assert_eq!(p.read_measurement(), Ok(MANUAL_READING));
    assert_eq!(p.release().0.requests, [hex(REQUEST)]);
}

#[test]
fn bad_crc_is_retried_then_reported() {
    let mut bad = reply();
    *bad.last_mut().unwrap() ^= 0xFF;
    let mut p = pzem(vec![Reply::Bytes(bad.clone()); 3], 2);
    assert_eq!(p.read_measurement(), Err(Error::Crc { carried: 0x3163, computed: 0xCE63 }));
    let port = p.release().0;
    assert_eq!(port.requests.len(), 3);
}

#[test]
fn a_flipped_data_bit_is_a_crc_error_not_a_reading() {
    let mut bad = reply();
    bad[4] ^= 0x01; // voltage 220.0 V would read 220.1 V
    let mut p = pzem(vec![Reply::Bytes(bad)], 0);
    assert!(matches!(p.read_measurement(), Err(Error::Crc { .. })));
}

#[test]
fn a_retry_after_a_bad_reply_returns_the_true_reading() {
    let mut bad = reply();
    bad[10] ^= 0x40;
    let mut p = pzem(vec![Reply::Bytes(bad), Reply::Bytes(reply())], 2);
    assert_eq!(p.read_measurement(), Ok(MANUAL_READING));
    assert_eq!(p.release().0.requests, [hex(REQUEST), hex(REQUEST)]);
}

#[test]
fn a_truncated_reply_is_reported_with_its_length() {
    let short = reply()[..24].to_vec();
    let mut p = pzem(vec![Reply::Bytes(short)], 0);
    assert_eq!(p.read_measurement(), Err(Error::Truncated { expected: 25, received: 24 }));
}

#[test]
fn a_reply_cut_inside_the_header_is_truncated() {
    let mut p = pzem(vec![Reply::Bytes(vec![0x01])], 0);
    assert_eq!(p.read_measurement(), Err(Error::Truncated { expected: 3, received: 1 }));
}

#[test]
fn silence_times_out_after_the_configured_wait_per_attempt() {
    let mut p = pzem(vec![Reply::Silence; 3], 2);
    assert_eq!(p.read_measurement(), Err(Error::Timeout));
    let (port, delay) = p.release();
    assert_eq!(port.requests.len(), 3);
    let slept_ms = delay.slept_ns.get() / 1_000_000;
    // 3 × 200 ms of waiting plus two 4 ms inter-frame gaps.
    assert!((600..=620).contains(&slept_ms), "slept {slept_ms} ms");
}

#[test]
fn zero_retries_means_one_attempt() {
    let mut p = pzem(vec![Reply::Silence], 0);
    assert_eq!(p.read_measurement(), Err(Error::Timeout));
    assert_eq!(p.release().0.unused_replies(), 0);
}

#[test]
fn stale_bytes_on_the_line_are_not_taken_for_the_reply() {
    let port = FakePort::new([Reply::Bytes(reply())]).with_stale_input(&reply()[5..]);
    let mut p = Pzem::new(port, FakeDelay::default(), config(0));
    assert_eq!(p.read_measurement(), Ok(MANUAL_READING));
}

#[test]
fn a_reply_from_another_address_is_rejected() {
    let mut other = reply()[..23].to_vec();
    other[0] = 0x02;
    let mut p = pzem(vec![Reply::Bytes(with_crc(other))], 0);
    assert_eq!(
        p.read_measurement(),
        Err(Error::Unexpected(Unexpected::Address { expected: 0x01, got: 0x02 }))
    );
}

#[test]
fn the_general_address_accepts_whoever_answers() {
    let mut p = Pzem::new(FakePort::new([Reply::Bytes(reply())]), FakeDelay::default(), Config::default());
    assert_eq!(p.read_measurement(), Ok(MANUAL_READING));
    assert_eq!(p.release().0.requests, [hex("F8 04 00 00 00 0A 64 64")]);
}

#[test]
fn a_reply_to_another_function_is_rejected() {
    let echo = hex("01 06 00 01 08 FC DF 8B");
    let mut p = pzem(vec![Reply::Bytes(echo)], 0);
    assert_eq!(
        p.read_measurement(),
        Err(Error::Unexpected(Unexpected::Function { expected: 0x04, got: 0x06 }))
    );
}

#[test]
fn a_wrong_byte_count_is_rejected_before_reading_on() {
    let mut p = pzem(vec![Reply::Bytes(with_crc(hex("01 04 02 08 98")))], 0);
    assert_eq!(p.read_measurement(), Err(Error::Unexpected(Unexpected::ByteCount { expected: 20, got: 2 })));
}

#[test]
fn a_wrong_echo_is_rejected() {
    // The device echoes a different threshold than the one written.
    let echo = with_crc(hex("01 06 00 01 08 FD"));
    let mut p = pzem(vec![Reply::Bytes(echo)], 0);
    assert_eq!(p.set_power_alarm_threshold_w(2300), Err(Error::Unexpected(Unexpected::Echo)));
}

#[test]
fn port_errors_are_retried_then_reported() {
    let mut p = pzem(vec![Reply::PortError, Reply::Bytes(reply())], 1);
    assert_eq!(p.read_measurement(), Ok(MANUAL_READING));
    let mut p = pzem(vec![Reply::PortError], 0);
    assert_eq!(p.read_measurement(), Err(Error::Io(ErrorKind::Other)));
}

#[test]
fn invalid_arguments_never_reach_the_line() {
    let mut p = pzem(vec![], 2);
    assert!(matches!(p.set_address(0), Err(Error::InvalidArgument(_))));
    assert!(matches!(p.set_address(0xF8), Err(Error::InvalidArgument(_))));
    assert!(matches!(p.read_input_registers(0, &mut []), Err(Error::InvalidArgument(_))));
    assert!(matches!(p.write_multiple_registers(0, &[0; 124]), Err(Error::InvalidArgument(_))));
    assert!(p.release().0.requests.is_empty());
}

#[test]
fn an_out_of_range_address_register_is_not_believed() {
    let reply = with_crc(hex("01 03 04 08 FC 01 00"));
    let mut p = pzem(vec![Reply::Bytes(reply)], 0);
    assert_eq!(
        p.read_parameters(),
        Err(Error::Unexpected(Unexpected::Value { register: 0x0002, value: 0x0100 }))
    );
}

#[test]
fn an_address_change_through_the_general_address_keeps_using_it() {
    let echo = with_crc(hex("F8 06 00 02 00 05"));
    let mut p = Pzem::new(FakePort::new([Reply::Bytes(echo)]), FakeDelay::default(), Config::default());
    p.set_address(5).unwrap();
    assert_eq!(p.config().address, 0xF8);
}

/// 9600 baud, 8N1: 10 bits a byte.
const BYTE_TIME_US: u64 = 1_042;

#[test]
fn at_9600_baud_a_reply_takes_its_time_and_is_read_whole() {
    let delay = FakeDelay::default();
    let port = FakePort::new([Reply::Bytes(reply())]).timed(&delay, BYTE_TIME_US);
    let mut p = Pzem::new(port, delay.clone(), config(0));
    assert_eq!(p.read_measurement(), Ok(MANUAL_READING));
    let slept_ms = delay.slept_ns.get() / 1_000_000;
    assert!((26..=28).contains(&slept_ms), "25 bytes at 9600 baud, waited {slept_ms} ms");
}

#[test]
fn the_tail_of_a_refused_reply_is_not_mistaken_for_the_next_one() {
    // A reply to another function arrives (25 bytes on their way) and is refused after
    // its first 3 bytes; its remaining 22 bytes must not become the start of the next.
    let mut stray = reply();
    stray[1] = 0x03;
    let stray = with_crc(stray[..23].to_vec());
    let delay = FakeDelay::default();
    let port = FakePort::new([Reply::Bytes(stray), Reply::Bytes(reply())]).timed(&delay, BYTE_TIME_US);
    let mut p = Pzem::new(port, delay, config(1));
    assert_eq!(p.read_measurement(), Ok(MANUAL_READING));
    let port = p.release().0;
    assert_eq!(port.requests.len(), 2);
    assert_eq!(port.pending_bytes(), 0);
}

#[test]
fn a_reply_slower_than_the_timeout_is_truncated() {
    // A line so slow (≈ 10 ms a byte) that 25 bytes need 250 ms: over the 200 ms budget.
    let delay = FakeDelay::default();
    let port = FakePort::new([Reply::Bytes(reply()), Reply::Bytes(reply())]).timed(&delay, 10_000);
    let mut p = Pzem::new(port, delay, Config { timeout_ms: 200, ..config(0) });
    assert!(matches!(p.read_measurement(), Err(Error::Truncated { expected: 25, .. })));
}
