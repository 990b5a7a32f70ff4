//! Modbus-RTU framing as the PZEM-004T v3.0 speaks it: function codes, register
//! addresses, CRC-16/MODBUS (transmitted LOW byte first) and request frames.
//!
//! Pure functions over byte slices, no I/O; the driver in [`crate::pzem`] moves the
//! bytes.

use crc::{Crc, CRC_16_MODBUS};

/// Read holding registers (the parameters).
pub const FN_READ_HOLDING: u8 = 0x03;
/// Read input registers (the measurements).
pub const FN_READ_INPUT: u8 = 0x04;
/// Write one holding register; the device echoes the 8-byte request.
pub const FN_WRITE_SINGLE: u8 = 0x06;
/// Write several holding registers. Not in the PZEM manual; a vendor tool uses it.
pub const FN_WRITE_MULTIPLE: u8 = 0x10;
/// Calibration, general address only, factory use. Echoed after 3-4 s.
pub const FN_CALIBRATE: u8 = 0x41;
/// Reset the energy counter; 4-byte frame (address, 0x42, CRC), echoed.
pub const FN_RESET_ENERGY: u8 = 0x42;
/// Set in the function byte of an exception reply (`function | 0x80`).
pub const EXCEPTION_FLAG: u8 = 0x80;

/// Password the calibration command carries.
pub const CALIBRATION_PASSWORD: u16 = 0x3721;

/// Broadcast: every module obeys and none replies. Useless for a master that reads.
pub const BROADCAST_ADDRESS: u8 = 0x00;
/// Any module answers; only valid with a single module on the bus.
pub const GENERAL_ADDRESS: u8 = 0xF8;
/// Lowest and highest address a module can be given.
pub const MIN_SLAVE_ADDRESS: u8 = 0x01;
pub const MAX_SLAVE_ADDRESS: u8 = 0xF7;

/// Input registers (function 0x04). 32-bit values: LOW word at the lower address.
pub mod input {
    /// 0.1 V per LSB.
    pub const VOLTAGE: u16 = 0x0000;
    /// 0.001 A per LSB, low word; high word at `CURRENT_LOW + 1`.
    pub const CURRENT_LOW: u16 = 0x0001;
    pub const CURRENT_HIGH: u16 = 0x0002;
    /// 0.1 W per LSB, low word.
    pub const POWER_LOW: u16 = 0x0003;
    pub const POWER_HIGH: u16 = 0x0004;
    /// 1 Wh per LSB, low word.
    pub const ENERGY_LOW: u16 = 0x0005;
    pub const ENERGY_HIGH: u16 = 0x0006;
    /// 0.1 Hz per LSB.
    pub const FREQUENCY: u16 = 0x0007;
    /// 0.01 per LSB.
    pub const POWER_FACTOR: u16 = 0x0008;
    /// 0xFFFF alarm, 0x0000 no alarm.
    pub const ALARM: u16 = 0x0009;
    /// All measurements are read in one request of this many registers from `VOLTAGE`.
    pub const MEASUREMENT_COUNT: u16 = 10;
}

/// Holding registers (functions 0x03 / 0x06).
pub mod holding {
    /// Power alarm threshold, 1 W per LSB.
    pub const POWER_ALARM_THRESHOLD: u16 = 0x0001;
    /// Modbus slave address, 0x0001..=0x00F7.
    pub const MODBUS_ADDRESS: u16 = 0x0002;
}

/// The longest frame either side sends: a 0x03/0x04 reply of 125 registers.
pub const MAX_FRAME_LEN: usize = 3 + 2 * 125 + 2;
/// Most registers one read may name (Modbus limit).
pub const MAX_READ_REGISTERS: usize = 125;
/// Most registers one multiple write may carry (Modbus limit).
pub const MAX_WRITE_REGISTERS: usize = 123;

const MODBUS_CRC: Crc<u16> = Crc::<u16>::new(&CRC_16_MODBUS);

/// CRC-16/MODBUS (init 0xFFFF, reflected poly 0xA001, no final XOR).
pub fn crc16(bytes: &[u8]) -> u16 {
    MODBUS_CRC.checksum(bytes)
}

/// Whether the last two bytes of `frame` are the CRC of the rest, low byte first.
/// `Err((carried, computed))` when they are not.
pub fn check_crc(frame: &[u8]) -> Result<(), (u16, u16)> {
    let Some(split) = frame.len().checked_sub(2) else {
        return Err((0, 0));
    };
    let (body, tail) = frame.split_at(split);
    let carried = u16::from_le_bytes([tail[0], tail[1]]);
    let computed = crc16(body);
    if carried == computed {
        Ok(())
    } else {
        Err((carried, computed))
    }
}

/// A request frame in a fixed buffer, CRC appended.
#[derive(Clone, PartialEq, Eq)]
pub struct Request {
    bytes: [u8; MAX_FRAME_LEN],
    len: usize,
}

impl core::fmt::Debug for Request {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Request({:02X?})", self.as_bytes())
    }
}

impl Request {
    fn start(address: u8, function: u8) -> Self {
        let mut bytes = [0; MAX_FRAME_LEN];
        bytes[0] = address;
        bytes[1] = function;
        Self { bytes, len: 2 }
    }

    fn push(&mut self, byte: u8) {
        self.bytes[self.len] = byte;
        self.len += 1;
    }

    fn push_u16(&mut self, word: u16) {
        for byte in word.to_be_bytes() {
            self.push(byte);
        }
    }

    fn finish(mut self) -> Self {
        let crc = crc16(self.as_bytes());
        for byte in crc.to_le_bytes() {
            self.push(byte);
        }
        self
    }

    /// `address 0x03|0x04 start count CRC`.
    pub fn read_registers(address: u8, function: u8, start: u16, count: u16) -> Self {
        let mut request = Self::start(address, function);
        request.push_u16(start);
        request.push_u16(count);
        request.finish()
    }

    /// `address 0x06 register value CRC`.
    pub fn write_single(address: u8, register: u16, value: u16) -> Self {
        let mut request = Self::start(address, FN_WRITE_SINGLE);
        request.push_u16(register);
        request.push_u16(value);
        request.finish()
    }

    /// `address 0x10 start count byte_count values… CRC`; at most [`MAX_WRITE_REGISTERS`] values.
    pub fn write_multiple(address: u8, start: u16, values: &[u16]) -> Self {
        assert!(values.len() <= MAX_WRITE_REGISTERS, "too many registers for one frame");
        let mut request = Self::start(address, FN_WRITE_MULTIPLE);
        request.push_u16(start);
        request.push_u16(values.len() as u16);
        request.push((values.len() * 2) as u8);
        for value in values {
            request.push_u16(*value);
        }
        request.finish()
    }

    /// `address 0x42 CRC`.
    pub fn reset_energy(address: u8) -> Self {
        Self::start(address, FN_RESET_ENERGY).finish()
    }

    /// `0xF8 0x41 0x37 0x21 CRC`.
    pub fn calibrate() -> Self {
        let mut request = Self::start(GENERAL_ADDRESS, FN_CALIBRATE);
        request.push_u16(CALIBRATION_PASSWORD);
        request.finish()
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    pub fn address(&self) -> u8 {
        self.bytes[0]
    }

    pub fn function(&self) -> u8 {
        self.bytes[1]
    }
}

/// The reply a request expects, by its length rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyShape {
    /// `address function byte_count data… CRC` with `byte_count` = 2 × registers.
    Registers { count: u16 },
    /// The request itself, echoed byte for byte (0x06, 0x41, 0x42).
    Echo { len: usize },
    /// `address 0x10 start count CRC`: the first 6 bytes of the request.
    WriteMultipleAck,
}

impl ReplyShape {
    /// Total frame length once the first three bytes are known.
    pub fn frame_len(self, third_byte: u8) -> usize {
        match self {
            ReplyShape::Registers { .. } => 3 + usize::from(third_byte) + 2,
            ReplyShape::Echo { len } => len,
            ReplyShape::WriteMultipleAck => 8,
        }
    }
}

/// Length of an exception reply: address, function | 0x80, code, CRC.
pub const EXCEPTION_FRAME_LEN: usize = 5;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_of_the_manual_request_is_0x0d70_sent_low_byte_first() {
        assert_eq!(crc16(&[0x01, 0x04, 0x00, 0x00, 0x00, 0x0A]), 0x0D70);
        let request = Request::read_registers(0x01, FN_READ_INPUT, 0, 10);
        assert_eq!(request.as_bytes(), &[0x01, 0x04, 0x00, 0x00, 0x00, 0x0A, 0x70, 0x0D]);
    }

    #[test]
    fn check_crc_accepts_low_byte_first_and_rejects_swapped() {
        assert_eq!(check_crc(&[0x01, 0x42, 0x80, 0x11]), Ok(()));
        assert_eq!(check_crc(&[0x01, 0x42, 0x11, 0x80]), Err((0x8011, 0x1180)));
        assert!(check_crc(&[0x01]).is_err());
    }

    #[test]
    fn fixed_frames() {
        assert_eq!(Request::reset_energy(0x01).as_bytes(), &[0x01, 0x42, 0x80, 0x11]);
        assert_eq!(Request::calibrate().as_bytes(), &[0xF8, 0x41, 0x37, 0x21, 0xB7, 0x78]);
        assert_eq!(
            Request::write_single(0x01, holding::POWER_ALARM_THRESHOLD, 2300).as_bytes(),
            &[0x01, 0x06, 0x00, 0x01, 0x08, 0xFC, 0xDF, 0x8B]
        );
    }

    #[test]
    fn reply_lengths() {
        assert_eq!(ReplyShape::Registers { count: 10 }.frame_len(20), 25);
        assert_eq!(ReplyShape::Echo { len: 4 }.frame_len(0x80), 4);
        assert_eq!(ReplyShape::WriteMultipleAck.frame_len(0), 8);
    }
}
