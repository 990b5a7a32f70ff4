//! PZEM-004T v3.0 driver: Modbus-RTU master over any blocking serial port that
//! implements [`embedded_io::Read`], [`Write`] and
//! [`ReadReady`], with an [`embedded_hal::delay::DelayNs`] to
//! time replies out.
//!
//! Every exchange: discard stale input, send the request, flush, then read the reply
//! polling `read_ready` so that silence ends in [`Error::Timeout`] instead of blocking
//! forever. A reply is accepted only whole: right length, right CRC (low byte first),
//! right address and function. Anything else is a typed [`Error`]; transient ones are
//! retried [`Config::retries`] times. The driver never returns a value the device did
//! not send.

use embedded_hal::delay::DelayNs;
use embedded_io::{Read, ReadReady, Write};

use crate::modbus::{
    check_crc, holding, input, ReplyShape, Request, EXCEPTION_FLAG, EXCEPTION_FRAME_LEN, FN_READ_HOLDING,
    FN_READ_INPUT, GENERAL_ADDRESS, MAX_FRAME_LEN, MAX_READ_REGISTERS, MAX_SLAVE_ADDRESS,
    MAX_WRITE_REGISTERS, MIN_SLAVE_ADDRESS,
};

/// Modbus-RTU wants 3.5 character times of silence between frames: 3.65 ms at 9600 baud.
pub const INTER_FRAME_GAP_US: u32 = 4_000;
/// The device answers a calibration after 3-4 s.
pub const CALIBRATION_TIMEOUT_MS: u32 = 6_000;
/// The energy counter's range ends here: 9999.99 kWh, in Wh. The manual gives the
/// range (0-9999.99 kWh); DESIGN.md takes the counter to wrap to 0 after it, and the
/// processor's rollover rule uses the same top.
pub const ENERGY_REGISTER_TOP_WH: u32 = 9_999_990;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Slave address the requests go to. The default, [`GENERAL_ADDRESS`] (0xF8), reaches
    /// the one module on a single-module bus whatever its own address is.
    pub address: u8,
    /// Waiting budget for one reply, counted from when the request has left: a reply not
    /// complete by then is a timeout (nothing came) or truncated (part came). A 25-byte
    /// reply takes 26 ms at 9600 baud; the module answers within a few ms of that.
    pub timeout_ms: u32,
    /// Extra attempts after the first for transient failures (timeout, truncation, CRC,
    /// a reply that does not fit the request, port errors). Exceptions are not retried:
    /// the device understood and said no.
    pub retries: u8,
    /// How long to sleep between `read_ready` polls while waiting.
    pub poll_interval_us: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self { address: GENERAL_ADDRESS, timeout_ms: 200, retries: 2, poll_interval_us: 1_000 }
    }
}

/// One read of the measurement registers, in the device's own fixed-point units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Measurement {
    /// 0.1 V per unit.
    pub voltage_decivolts: u16,
    /// 0.001 A per unit.
    pub current_milliamps: u32,
    /// 0.1 W per unit.
    pub power_deciwatts: u32,
    /// The cumulative energy counter, 1 Wh per unit.
    pub energy_wh: u32,
    /// 0.1 Hz per unit.
    pub frequency_decihertz: u16,
    /// 0.01 per unit.
    pub power_factor_hundredths: u16,
    /// The power alarm register is set (power above the alarm threshold).
    pub alarm: bool,
}

impl Measurement {
    /// Decodes the ten input registers from [`input::VOLTAGE`]. 32-bit values are LOW
    /// word first: `value = reg[n] | reg[n + 1] << 16`.
    pub fn from_registers(registers: &[u16; input::MEASUREMENT_COUNT as usize]) -> Self {
        let reg = |address: u16| registers[usize::from(address)];
        let pair = |low: u16, high: u16| u32::from(reg(low)) | (u32::from(reg(high)) << 16);
        Self {
            voltage_decivolts: reg(input::VOLTAGE),
            current_milliamps: pair(input::CURRENT_LOW, input::CURRENT_HIGH),
            power_deciwatts: pair(input::POWER_LOW, input::POWER_HIGH),
            energy_wh: pair(input::ENERGY_LOW, input::ENERGY_HIGH),
            frequency_decihertz: reg(input::FREQUENCY),
            power_factor_hundredths: reg(input::POWER_FACTOR),
            alarm: reg(input::ALARM) != 0,
        }
    }

    /// The ten input registers that decode to `self` (what a PZEM would hold).
    pub fn to_registers(&self) -> [u16; input::MEASUREMENT_COUNT as usize] {
        let mut registers = [0; input::MEASUREMENT_COUNT as usize];
        let mut set = |address: u16, value: u16| registers[usize::from(address)] = value;
        let low = |value: u32| value as u16;
        let high = |value: u32| (value >> 16) as u16;
        set(input::VOLTAGE, self.voltage_decivolts);
        set(input::CURRENT_LOW, low(self.current_milliamps));
        set(input::CURRENT_HIGH, high(self.current_milliamps));
        set(input::POWER_LOW, low(self.power_deciwatts));
        set(input::POWER_HIGH, high(self.power_deciwatts));
        set(input::ENERGY_LOW, low(self.energy_wh));
        set(input::ENERGY_HIGH, high(self.energy_wh));
        set(input::FREQUENCY, self.frequency_decihertz);
        set(input::POWER_FACTOR, self.power_factor_hundredths);
        set(input::ALARM, if self.alarm { 0xFFFF } else { 0 });
        registers
    }
}

/// The documented holding registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parameters {
    pub power_alarm_threshold_w: u16,
    pub address: u8,
}

/// The abnormal code of an exception reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExceptionCode {
    IllegalFunction,
    IllegalAddress,
    IllegalData,
    SlaveError,
    Other(u8),
}

impl From<u8> for ExceptionCode {
    fn from(code: u8) -> Self {
        match code {
            0x01 => Self::IllegalFunction,
            0x02 => Self::IllegalAddress,
            0x03 => Self::IllegalData,
            0x04 => Self::SlaveError,
            other => Self::Other(other),
        }
    }
}

impl ExceptionCode {
    pub fn code(self) -> u8 {
        match self {
            Self::IllegalFunction => 0x01,
            Self::IllegalAddress => 0x02,
            Self::IllegalData => 0x03,
            Self::SlaveError => 0x04,
            Self::Other(code) => code,
        }
    }
}

impl core::fmt::Display for ExceptionCode {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let text = match self {
            Self::IllegalFunction => "illegal function",
            Self::IllegalAddress => "illegal address",
            Self::IllegalData => "illegal data",
            Self::SlaveError => "slave error",
            Self::Other(_) => "unknown abnormal code",
        };
        write!(f, "{text} ({:#04x})", self.code())
    }
}

/// A whole, CRC-valid reply that does not answer the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unexpected {
    #[error("reply from address {got:#04x} to a request for {expected:#04x}")]
    Address { expected: u8, got: u8 },
    #[error("reply with function {got:#04x} to a request with {expected:#04x}")]
    Function { expected: u8, got: u8 },
    #[error("reply carries {got} data bytes, {expected} expected")]
    ByteCount { expected: usize, got: usize },
    #[error("reply does not echo the request")]
    Echo,
    #[error("register {register:#06x} holds {value}, outside its range")]
    Value { register: u16, value: u16 },
}

/// Why an exchange failed. `E` is the serial port's error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error<E> {
    #[error("serial port: {0:?}")]
    Io(E),
    /// Nothing at all came back.
    #[error("no reply")]
    Timeout,
    /// Part of a reply came, then silence.
    #[error("reply truncated: {received} bytes, at least {expected} expected")]
    Truncated { expected: usize, received: usize },
    #[error("bad CRC: reply carries {carried:#06x}, its bytes give {computed:#06x}")]
    Crc { carried: u16, computed: u16 },
    /// The device answered `function | 0x80` with an abnormal code.
    #[error("device refused function {function:#04x}: {code}")]
    Exception { function: u8, code: ExceptionCode },
    #[error(transparent)]
    Unexpected(Unexpected),
    /// Refused before anything was sent.
    #[error("invalid argument: {0}")]
    InvalidArgument(&'static str),
}

impl<E> Error<E> {
    /// Whether another attempt may succeed.
    pub fn is_transient(&self) -> bool {
        !matches!(self, Error::Exception { .. } | Error::InvalidArgument(_))
    }
}

impl<E> From<Unexpected> for Error<E> {
    fn from(unexpected: Unexpected) -> Self {
        Error::Unexpected(unexpected)
    }
}

pub struct Pzem<P, D> {
    port: P,
    delay: D,
    config: Config,
    frame: [u8; MAX_FRAME_LEN],
}

impl<P, D> Pzem<P, D>
where
    P: Read + Write + ReadReady,
    D: DelayNs,
{
    pub fn new(port: P, delay: D, config: Config) -> Self {
        Self { port, delay, config, frame: [0; MAX_FRAME_LEN] }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The serial port, e.g. to change its settings between exchanges.
    pub fn port_mut(&mut self) -> &mut P {
        &mut self.port
    }

    /// Gives the port and the delay back.
    pub fn release(self) -> (P, D) {
        (self.port, self.delay)
    }

    /// Reads all ten measurement registers in one request.
    pub fn read_measurement(&mut self) -> Result<Measurement, Error<P::Error>> {
        let mut registers = [0; input::MEASUREMENT_COUNT as usize];
        self.read_input_registers(input::VOLTAGE, &mut registers)?;
        Ok(Measurement::from_registers(&registers))
    }

    /// Reads the power alarm threshold and the slave address in one request.
    pub fn read_parameters(&mut self) -> Result<Parameters, Error<P::Error>> {
        let mut registers = [0; 2];
        self.read_holding_registers(holding::POWER_ALARM_THRESHOLD, &mut registers)?;
        let [threshold, address] = registers;
        let address = u8::try_from(address)
            .ok()
            .filter(|a| (MIN_SLAVE_ADDRESS..=MAX_SLAVE_ADDRESS).contains(a))
            .ok_or(Unexpected::Value { register: holding::MODBUS_ADDRESS, value: address })?;
        Ok(Parameters { power_alarm_threshold_w: threshold, address })
    }

    /// Reads the slave address register alone (0x0002).
    pub fn read_address(&mut self) -> Result<u8, Error<P::Error>> {
        let mut register = [0; 1];
        self.read_holding_registers(holding::MODBUS_ADDRESS, &mut register)?;
        let [value] = register;
        u8::try_from(value)
            .ok()
            .filter(|a| (MIN_SLAVE_ADDRESS..=MAX_SLAVE_ADDRESS).contains(a))
            .ok_or(Error::Unexpected(Unexpected::Value { register: holding::MODBUS_ADDRESS, value }))
    }

    /// Reads the power alarm threshold register alone (0x0001), in W.
    pub fn read_power_alarm_threshold_w(&mut self) -> Result<u16, Error<P::Error>> {
        let mut register = [0; 1];
        self.read_holding_registers(holding::POWER_ALARM_THRESHOLD, &mut register)?;
        Ok(register[0])
    }

    pub fn set_power_alarm_threshold_w(&mut self, watts: u16) -> Result<(), Error<P::Error>> {
        self.write_single_register(holding::POWER_ALARM_THRESHOLD, watts)
    }

    /// Gives the module a new slave address (0x01..=0xF7). Later requests go to the new
    /// address, unless they go to the general address.
    pub fn set_address(&mut self, new_address: u8) -> Result<(), Error<P::Error>> {
        if !(MIN_SLAVE_ADDRESS..=MAX_SLAVE_ADDRESS).contains(&new_address) {
            return Err(Error::InvalidArgument("slave address must be 0x01..=0xF7"));
        }
        self.write_single_register(holding::MODBUS_ADDRESS, u16::from(new_address))?;
        if self.config.address != GENERAL_ADDRESS {
            self.config.address = new_address;
        }
        Ok(())
    }

    /// Sets the energy counter to 0.
    pub fn reset_energy(&mut self) -> Result<(), Error<P::Error>> {
        let request = Request::reset_energy(self.config.address);
        self.transact(&request, ReplyShape::Echo { len: request.as_bytes().len() }).map(drop)
    }

    /// Factory calibration (function 0x41 at the general address). Only on a bench with
    /// a reference load: it changes what the meter measures. Not retried.
    pub fn calibrate(&mut self) -> Result<(), Error<P::Error>> {
        let request = Request::calibrate();
        let shape = ReplyShape::Echo { len: request.as_bytes().len() };
        self.exchange(&request, shape, CALIBRATION_TIMEOUT_MS).map(drop)
    }

    pub fn read_input_registers(&mut self, start: u16, out: &mut [u16]) -> Result<(), Error<P::Error>> {
        self.read_registers(FN_READ_INPUT, start, out)
    }

    /// Registers other than 0x0001/0x0002 answer but are undocumented.
    pub fn read_holding_registers(&mut self, start: u16, out: &mut [u16]) -> Result<(), Error<P::Error>> {
        self.read_registers(FN_READ_HOLDING, start, out)
    }

    /// Function 0x06 without range checks on `value`; the device refuses what it does
    /// not accept with an [`ExceptionCode::IllegalData`] exception.
    pub fn write_single_register(&mut self, register: u16, value: u16) -> Result<(), Error<P::Error>> {
        let request = Request::write_single(self.config.address, register, value);
        self.transact(&request, ReplyShape::Echo { len: request.as_bytes().len() }).map(drop)
    }

    /// Function 0x10. Undocumented for the PZEM-004T; a vendor tool uses it.
    pub fn write_multiple_registers(&mut self, start: u16, values: &[u16]) -> Result<(), Error<P::Error>> {
        if values.is_empty() || values.len() > MAX_WRITE_REGISTERS {
            return Err(Error::InvalidArgument("write 1..=123 registers"));
        }
        let request = Request::write_multiple(self.config.address, start, values);
        self.transact(&request, ReplyShape::WriteMultipleAck).map(drop)
    }

    fn read_registers(&mut self, function: u8, start: u16, out: &mut [u16]) -> Result<(), Error<P::Error>> {
        if out.is_empty() || out.len() > MAX_READ_REGISTERS {
            return Err(Error::InvalidArgument("read 1..=125 registers"));
        }
        let count = out.len() as u16;
        let request = Request::read_registers(self.config.address, function, start, count);
        let len = self.transact(&request, ReplyShape::Registers { count })?;
        let data = &self.frame[3..len - 2];
        for (value, bytes) in out.iter_mut().zip(data.chunks_exact(2)) {
            *value = u16::from_be_bytes([bytes[0], bytes[1]]);
        }
        Ok(())
    }

    /// Sends `request` up to `1 + retries` times; the reply is `self.frame[..len]`.
    fn transact(&mut self, request: &Request, shape: ReplyShape) -> Result<usize, Error<P::Error>> {
        let mut attempt = 0;
        loop {
            match self.exchange(request, shape, self.config.timeout_ms) {
                Ok(len) => return Ok(len),
                Err(e) if e.is_transient() && attempt < self.config.retries => {
                    attempt += 1;
                    self.wait_for_silence();
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// One request, one reply.
    fn exchange(
        &mut self,
        request: &Request,
        shape: ReplyShape,
        timeout_ms: u32,
    ) -> Result<usize, Error<P::Error>> {
        self.discard_stale_input()?;
        self.port.write_all(request.as_bytes()).map_err(Error::Io)?;
        self.port.flush().map_err(Error::Io)?;

        let mut wait = Wait { waited_us: 0, limit_us: timeout_ms.saturating_mul(1_000) };
        let mut filled = 0;
        // Every reply (4-byte echo, 5-byte exception, others) has at least 3 bytes, and
        // the first 3 tell its length.
        self.fill(&mut filled, 3, &mut wait)?;
        let function = self.frame[1];
        let is_exception = function == request.function() | EXCEPTION_FLAG;
        let len = if is_exception {
            EXCEPTION_FRAME_LEN
        } else if function == request.function() {
            if let ReplyShape::Registers { count } = shape {
                let expected = 2 * usize::from(count);
                let got = usize::from(self.frame[2]);
                if got != expected {
                    return Err(Unexpected::ByteCount { expected, got }.into());
                }
            }
            shape.frame_len(self.frame[2])
        } else {
            return Err(Unexpected::Function { expected: request.function(), got: function }.into());
        };
        self.fill(&mut filled, len, &mut wait)?;

        let reply = &self.frame[..len];
        check_crc(reply).map_err(|(carried, computed)| Error::Crc { carried, computed })?;
        if request.address() != GENERAL_ADDRESS && reply[0] != request.address() {
            return Err(Unexpected::Address { expected: request.address(), got: reply[0] }.into());
        }
        if is_exception {
            return Err(Error::Exception { function: request.function(), code: reply[2].into() });
        }
        let echoed = match shape {
            ReplyShape::Registers { .. } => true,
            ReplyShape::Echo { .. } => reply == request.as_bytes(),
            ReplyShape::WriteMultipleAck => reply[..6] == request.as_bytes()[..6],
        };
        if !echoed {
            return Err(Unexpected::Echo.into());
        }
        Ok(len)
    }

    /// Reads into `self.frame[*filled..target]` until full or the line stays silent too long.
    fn fill(&mut self, filled: &mut usize, target: usize, wait: &mut Wait) -> Result<(), Error<P::Error>> {
        while *filled < target {
            if self.port.read_ready().map_err(Error::Io)? {
                let n = self.port.read(&mut self.frame[*filled..target]).map_err(Error::Io)?;
                if n > 0 {
                    *filled += n;
                    continue;
                }
            }
            if wait.waited_us >= wait.limit_us {
                return Err(if *filled == 0 {
                    Error::Timeout
                } else {
                    Error::Truncated { expected: target, received: *filled }
                });
            }
            self.delay.delay_us(self.config.poll_interval_us);
            wait.waited_us = wait.waited_us.saturating_add(self.config.poll_interval_us.max(1));
        }
        Ok(())
    }

    /// Before a retry: lets the rest of a garbled or unexpected reply arrive and drops
    /// it, until the line has been quiet for an inter-frame gap (at most the timeout).
    /// Best effort: port errors here only end the wait.
    fn wait_for_silence(&mut self) {
        let step = self.config.poll_interval_us.max(1);
        let limit = self.config.timeout_ms.saturating_mul(1_000);
        let (mut quiet, mut waited) = (0u32, 0u32);
        let mut scratch = [0; 32];
        loop {
            match self.port.read_ready() {
                Ok(true) => {
                    if self.port.read(&mut scratch).is_err() {
                        return;
                    }
                    quiet = 0;
                }
                Ok(false) => quiet = quiet.saturating_add(step),
                Err(_) => return,
            }
            if quiet >= INTER_FRAME_GAP_US || waited >= limit {
                return;
            }
            self.delay.delay_us(step);
            waited = waited.saturating_add(step);
        }
    }

    /// Drops whatever is left of an earlier, late or garbled reply, so it cannot be taken
    /// for the answer to the next request.
    fn discard_stale_input(&mut self) -> Result<(), Error<P::Error>> {
        let mut budget = 2 * MAX_FRAME_LEN;
        let mut scratch = [0; 32];
        while budget > 0 && self.port.read_ready().map_err(Error::Io)? {
            let n = self.port.read(&mut scratch).map_err(Error::Io)?;
            if n == 0 {
                break;
            }
            budget = budget.saturating_sub(n);
        }
        Ok(())
    }
}

/// Line silence spent waiting for one reply.
struct Wait {
    waited_us: u32,
    limit_us: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_32_bit_values_low_word_first() {
        // current 0x0001_0002 mA, power 0x0003_0004 dW, energy 0x0005_0006 Wh
        let m = Measurement::from_registers(&[2304, 2, 1, 4, 3, 6, 5, 500, 93, 0xFFFF]);
        assert_eq!(m.voltage_decivolts, 2304);
        assert_eq!(m.current_milliamps, 0x0001_0002);
        assert_eq!(m.power_deciwatts, 0x0003_0004);
        assert_eq!(m.energy_wh, 0x0005_0006);
        assert_eq!(m.frequency_decihertz, 500);
        assert_eq!(m.power_factor_hundredths, 93);
        assert!(m.alarm);
    }

    proptest::proptest! {
        #[test]
        fn registers_round_trip(
            voltage in proptest::prelude::any::<u16>(),
            current in proptest::prelude::any::<u32>(),
            power in proptest::prelude::any::<u32>(),
            energy in proptest::prelude::any::<u32>(),
            frequency in proptest::prelude::any::<u16>(),
            pf in proptest::prelude::any::<u16>(),
            alarm in proptest::prelude::any::<bool>(),
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
            proptest::prop_assert_eq!(Measurement::from_registers(&m.to_registers()), m);
        }
    }

    #[test]
    fn exception_codes_round_trip() {
        for code in 0..=255u8 {
            assert_eq!(ExceptionCode::from(code).code(), code);
        }
        assert_eq!(ExceptionCode::from(2), ExceptionCode::IllegalAddress);
    }

    #[test]
    fn only_exceptions_and_bad_arguments_are_final() {
        assert!(Error::<()>::Timeout.is_transient());
        assert!(Error::<()>::Crc { carried: 0, computed: 1 }.is_transient());
        assert!(Error::<()>::Io(()).is_transient());
        assert!(!Error::<()>::Exception { function: 4, code: ExceptionCode::IllegalAddress }.is_transient());
        assert!(!Error::<()>::InvalidArgument("x").is_transient());
    }
}
