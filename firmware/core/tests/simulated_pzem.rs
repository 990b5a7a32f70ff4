//! The driver against the simulated module: every operation, round trips over arbitrary
//! register values, and recovery from a garbled line.

mod common;

use common::FakeDelay;
use meter_core::pzem::{Config, Error, ExceptionCode, Parameters};
use meter_core::sim::{Fault, SimulatedPzem};
use meter_core::{Measurement, Pzem};
use proptest::prelude::*;

fn reading() -> Measurement {
    Measurement {
        voltage_decivolts: 2_304,
        current_milliamps: 13_318,
        power_deciwatts: 30_188,
        energy_wh: 7_960,
        frequency_decihertz: 500,
        power_factor_hundredths: 93,
        alarm: false,
    }
}

fn driver(address: u8, retries: u8) -> Pzem<SimulatedPzem, FakeDelay> {
    let config = Config { address, retries, ..Config::default() };
    Pzem::new(SimulatedPzem::new(0x01, reading()), FakeDelay::default(), config)
}

#[test]
fn reads_what_the_module_measures() {
    let mut pzem = driver(0x01, 0);
    assert_eq!(pzem.read_measurement(), Ok(reading()));
}

#[test]
fn parameters_and_reset() {
    let mut pzem = driver(0x01, 0);
    assert_eq!(pzem.read_parameters(), Ok(Parameters { power_alarm_threshold_w: 23_000, address: 1 }));
    pzem.set_power_alarm_threshold_w(2_300).unwrap();
    pzem.reset_energy().unwrap();
    assert_eq!(pzem.read_parameters().unwrap().power_alarm_threshold_w, 2_300);
    assert_eq!(pzem.read_power_alarm_threshold_w(), Ok(2_300));
    assert_eq!(pzem.read_address(), Ok(0x01));
    assert_eq!(pzem.read_measurement().unwrap().energy_wh, 0);
    pzem.calibrate().unwrap();
}

#[test]
fn a_new_address_is_followed() {
    let mut pzem = driver(0x01, 0);
    pzem.set_address(0x2E).unwrap();
    assert_eq!(pzem.config().address, 0x2E);
    assert_eq!(pzem.read_parameters().unwrap().address, 0x2E);
    assert_eq!(pzem.read_address(), Ok(0x2E));
    let (module, _) = pzem.release();
    assert_eq!(module.address(), 0x2E);

    // Whoever still asks at the old address hears nothing.
    let mut stale =
        Pzem::new(module, FakeDelay::default(), Config { address: 0x01, retries: 1, ..Config::default() });
    assert_eq!(stale.read_measurement(), Err(Error::Timeout));
}

#[test]
fn refusals_are_exceptions() {
    let mut pzem = driver(0x01, 2);
    assert_eq!(
        pzem.write_single_register(0x0002, 0x00F8),
        Err(Error::Exception { function: 0x06, code: ExceptionCode::IllegalData })
    );
    let mut past_the_end = [0u16; 5];
    assert_eq!(
        pzem.read_input_registers(8, &mut past_the_end),
        Err(Error::Exception { function: 0x04, code: ExceptionCode::IllegalAddress })
    );
    assert_eq!(
        pzem.write_multiple_registers(0, &[1, 2]),
        Err(Error::Exception { function: 0x10, code: ExceptionCode::IllegalFunction })
    );
}

#[test]
fn one_garbled_reply_is_survived_by_a_retry() {
    for fault in [Fault::Silence, Fault::CorruptCrc, Fault::Truncate { keep: 7 }] {
        let mut pzem = driver(0x01, 1);
        let (mut module, delay) = pzem.release();
        module.inject(fault);
        pzem = Pzem::new(module, delay, Config { address: 0x01, retries: 1, ..Config::default() });
        assert_eq!(pzem.read_measurement(), Ok(reading()), "{fault:?}");
    }
}

#[test]
fn without_retries_the_fault_is_the_answer() {
    let cases = [
        (Fault::Silence, Error::Timeout),
        (Fault::Truncate { keep: 7 }, Error::Truncated { expected: 25, received: 7 }),
    ];
    for (fault, expected) in cases {
        let mut module = SimulatedPzem::new(0x01, reading());
        module.inject(fault);
        let mut pzem = Pzem::new(
            module,
            FakeDelay::default(),
            Config { address: 0x01, retries: 0, ..Config::default() },
        );
        assert_eq!(pzem.read_measurement(), Err(expected));
    }
}

proptest! {
    #[test]
    fn any_measurement_round_trips(
        voltage in any::<u16>(),
        current in any::<u32>(),
        power in any::<u32>(),
        energy in any::<u32>(),
        frequency in any::<u16>(),
        pf in any::<u16>(),
        alarm in any::<bool>(),
    ) {
        let m = Measurement {
            voltage_decivolts: voltage,
            current_milliamps: current,
            power_deciwatts: power,
            energy_wh: energy,
            frequency_decihertz: frequency,
            power_factor_hundredths: pf,
            alarm,
        };
        let mut pzem = Pzem::new(SimulatedPzem::new(0x01, m), FakeDelay::default(), Config::default());
        prop_assert_eq!(pzem.read_measurement(), Ok(m));
    }
}
