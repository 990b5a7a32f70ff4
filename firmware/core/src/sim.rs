//! A simulated PZEM-004T v3.0 on the other end of a serial port, for host tools (the
//! meter simulator) and tests: it takes request frames through `embedded_io::Write` and
//! answers through `Read` / `ReadReady`, as the module's manual says it does.
//!
//! Modelled: the ten measurement registers (whatever [`SimulatedPzem::measurement`]
//! holds), the power alarm threshold and slave address (0x03 / 0x06, a bad address is
//! refused with exception 0x03 as real modules do), reset energy (0x42), calibration
//! (0x41, echoed), the general address 0xF8 and broadcast 0x00 (obeyed, no reply),
//! exceptions for unknown functions (0x01) and registers (0x02). Frames with a bad CRC
//! or for another address get no reply. The energy counter wraps to 0 at
//! [`ENERGY_REGISTER_TOP_WH`] (9999.99 kWh), as DESIGN.md assumes; the manual gives the
//! range but not what happens at its end, so this is a model, not a recording. Not
//! modelled: the undocumented holding registers and 0x10 writes (refused with 0x01).
//! [`Fault`]s garble the next reply for tests of the line.

use core::convert::Infallible;

use embedded_io::{ErrorType, Read, ReadReady, Write};
use heapless::{Deque, Vec};

use crate::modbus::{
    check_crc, crc16, holding, BROADCAST_ADDRESS, CALIBRATION_PASSWORD, EXCEPTION_FLAG, FN_CALIBRATE,
    FN_READ_HOLDING, FN_READ_INPUT, FN_RESET_ENERGY, FN_WRITE_MULTIPLE, FN_WRITE_SINGLE, GENERAL_ADDRESS,
    MAX_FRAME_LEN, MAX_READ_REGISTERS, MAX_SLAVE_ADDRESS, MIN_SLAVE_ADDRESS,
};
use crate::pzem::{ExceptionCode, Measurement, ENERGY_REGISTER_TOP_WH};

/// What goes wrong with the next reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// No reply at all.
    Silence,
    /// The reply's last byte is flipped, so its CRC does not match.
    CorruptCrc,
    /// Only the first `keep` bytes of the reply arrive.
    Truncate { keep: usize },
}

pub struct SimulatedPzem {
    /// What the module measures now. Energy also grows through [`SimulatedPzem::advance`].
    pub measurement: Measurement,
    pub power_alarm_threshold_w: u16,
    address: u8,
    request: Vec<u8, MAX_FRAME_LEN>,
    reply: Deque<u8, MAX_FRAME_LEN>,
    fault: Option<Fault>,
    /// Energy below 1 Wh not yet counted, in deciwatt-milliseconds.
    energy_remainder: u64,
}

type Reply = Vec<u8, MAX_FRAME_LEN>;

impl SimulatedPzem {
    /// A module at `address` (0x01..=0xF7; the factory default is 0x01).
    pub fn new(address: u8, measurement: Measurement) -> Self {
        Self {
            measurement,
            power_alarm_threshold_w: 23_000,
            address,
            request: Vec::new(),
            reply: Deque::new(),
            fault: None,
            energy_remainder: 0,
        }
    }

    pub fn address(&self) -> u8 {
        self.address
    }

    /// Garbles the next reply.
    pub fn inject(&mut self, fault: Fault) {
        self.fault = Some(fault);
    }

    /// Lets `elapsed_ms` pass at the present power: the energy counter grows by the
    /// whole Wh, the fraction is carried (so a run of steps counts exactly what one long
    /// step would), and it wraps to 0 at [`ENERGY_REGISTER_TOP_WH`].
    pub fn advance(&mut self, elapsed_ms: u64) {
        const DECIWATT_MS_PER_WH: u64 = 10 * 3_600_000;
        let total = self.energy_remainder + u64::from(self.measurement.power_deciwatts) * elapsed_ms;
        let whole_wh = total / DECIWATT_MS_PER_WH;
        self.energy_remainder = total % DECIWATT_MS_PER_WH;
        let top = u64::from(ENERGY_REGISTER_TOP_WH);
        let counter = (u64::from(self.measurement.energy_wh) % top + whole_wh % top) % top;
        self.measurement.energy_wh = counter as u32;
    }

    /// The module loses power and comes back with its energy counter at 0: the
    /// "reboot reporting 0" of a meter whose PZEM shares its supply and does not keep
    /// the count. The energy of the current Wh in progress is lost with it.
    pub fn power_cycle(&mut self) {
        self.measurement.energy_wh = 0;
        self.energy_remainder = 0;
        self.request.clear();
        self.reply.clear();
    }

    /// Length of the request being received, once its first bytes tell it.
    fn expected_len(&self) -> Option<usize> {
        let function = *self.request.get(1)?;
        Some(match function {
            FN_RESET_ENERGY => 4,
            FN_CALIBRATE => 6,
            FN_WRITE_MULTIPLE => 9 + usize::from(*self.request.get(6)?),
            _ => 8,
        })
    }

    fn answer(&mut self) {
        let request: Vec<u8, MAX_FRAME_LEN> = core::mem::take(&mut self.request);
        if check_crc(&request).is_err() {
            return;
        }
        let address = request[0];
        let broadcast = address == BROADCAST_ADDRESS;
        if !(broadcast || address == GENERAL_ADDRESS || address == self.address) {
            return;
        }
        let function = request[1];
        let mut reply = Reply::new();
        let _ = reply.extend_from_slice(&[address, function]);
        let outcome = match function {
            FN_READ_INPUT => self.read_input(&request, &mut reply),
            FN_READ_HOLDING => self.read_holding(&request, &mut reply),
            FN_WRITE_SINGLE => self.write_single(&request, &mut reply),
            FN_RESET_ENERGY => {
                self.measurement.energy_wh = 0;
                self.energy_remainder = 0;
                echo(&request, &mut reply)
            }
            FN_CALIBRATE if address == GENERAL_ADDRESS && word(&request, 2) == CALIBRATION_PASSWORD => {
                echo(&request, &mut reply)
            }
            FN_CALIBRATE => Err(ExceptionCode::IllegalData),
            _ => Err(ExceptionCode::IllegalFunction),
        };
        if broadcast {
            return;
        }
        if let Err(code) = outcome {
            reply.clear();
            let _ = reply.extend_from_slice(&[address, function | EXCEPTION_FLAG, code.code()]);
        }
        let _ = reply.extend_from_slice(&crc16(&reply).to_le_bytes());
        let keep = match self.fault.take() {
            None => reply.len(),
            Some(Fault::Silence) => 0,
            Some(Fault::Truncate { keep }) => keep.min(reply.len()),
            Some(Fault::CorruptCrc) => {
                let last = reply.len() - 1;
                reply[last] ^= 0xFF;
                reply.len()
            }
        };
        for byte in &reply[..keep] {
            let _ = self.reply.push_back(*byte);
        }
    }

    fn read_input(&self, request: &[u8], reply: &mut Reply) -> Result<(), ExceptionCode> {
        let registers = self.measurement.to_registers();
        read_registers(request, reply, &registers, 0)
    }

    fn read_holding(&self, request: &[u8], reply: &mut Reply) -> Result<(), ExceptionCode> {
        let registers = [self.power_alarm_threshold_w, u16::from(self.address)];
        read_registers(request, reply, &registers, holding::POWER_ALARM_THRESHOLD)
    }

    fn write_single(&mut self, request: &[u8], reply: &mut Reply) -> Result<(), ExceptionCode> {
        let value = word(request, 4);
        match word(request, 2) {
            holding::POWER_ALARM_THRESHOLD => self.power_alarm_threshold_w = value,
            holding::MODBUS_ADDRESS => {
                self.address = u8::try_from(value)
                    .ok()
                    .filter(|a| (MIN_SLAVE_ADDRESS..=MAX_SLAVE_ADDRESS).contains(a))
                    .ok_or(ExceptionCode::IllegalData)?;
            }
            _ => return Err(ExceptionCode::IllegalAddress),
        }
        echo(request, reply)
    }
}

fn word(frame: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([frame[at], frame[at + 1]])
}

/// The whole request without its CRC (which is added to every reply).
fn echo(request: &[u8], reply: &mut Reply) -> Result<(), ExceptionCode> {
    reply.clear();
    let _ = reply.extend_from_slice(&request[..request.len() - 2]);
    Ok(())
}

/// `registers` are at addresses `first..`; the request names `start` and `count`.
fn read_registers(
    request: &[u8],
    reply: &mut Reply,
    registers: &[u16],
    first: u16,
) -> Result<(), ExceptionCode> {
    let (start, count) = (word(request, 2), usize::from(word(request, 4)));
    if count == 0 || count > MAX_READ_REGISTERS {
        return Err(ExceptionCode::IllegalData);
    }
    let offset = start.checked_sub(first).map(usize::from).ok_or(ExceptionCode::IllegalAddress)?;
    let wanted = registers.get(offset..offset + count).ok_or(ExceptionCode::IllegalAddress)?;
    let _ = reply.push((2 * count) as u8);
    for register in wanted {
        let _ = reply.extend_from_slice(&register.to_be_bytes());
    }
    Ok(())
}

impl ErrorType for SimulatedPzem {
    type Error = Infallible;
}

impl Write for SimulatedPzem {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Infallible> {
        for byte in buf {
            if self.request.push(*byte).is_err() {
                // Longer than any frame: noise. Start over.
                self.request.clear();
            }
            if self.expected_len() == Some(self.request.len()) {
                self.answer();
            }
        }
        Ok(buf.len())
    }

    /// The line goes quiet: an unfinished request is dropped, as the module would.
    fn flush(&mut self) -> Result<(), Infallible> {
        self.request.clear();
        Ok(())
    }
}

impl ReadReady for SimulatedPzem {
    fn read_ready(&mut self) -> Result<bool, Infallible> {
        Ok(!self.reply.is_empty())
    }
}

impl Read for SimulatedPzem {
    /// Never blocks: returns 0 when there is nothing to read (poll `read_ready` first).
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Infallible> {
        let mut n = 0;
        while n < buf.len() {
            let Some(byte) = self.reply.pop_front() else { break };
            buf[n] = byte;
            n += 1;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(hex: &str) -> std::vec::Vec<u8> {
        hex.split_whitespace().map(|b| u8::from_str_radix(b, 16).unwrap()).collect()
    }

    fn exchange(pzem: &mut SimulatedPzem, request: &[u8]) -> std::vec::Vec<u8> {
        pzem.write_all(request).unwrap();
        pzem.flush().unwrap();
        let mut buf = [0u8; MAX_FRAME_LEN];
        let n = pzem.read(&mut buf).unwrap();
        buf[..n].to_vec()
    }

    fn manual_reading() -> Measurement {
        Measurement::from_registers(&[0x0898, 0x03E8, 0, 0x0898, 0, 0, 0, 0x01F4, 0x0064, 0])
    }

    #[test]
    fn answers_the_manual_request_with_the_manual_reply() {
        let mut pzem = SimulatedPzem::new(0x01, manual_reading());
        assert_eq!(
            exchange(&mut pzem, &frame("01 04 00 00 00 0A 70 0D")),
            frame("01 04 14 08 98 03 E8 00 00 08 98 00 00 00 00 00 00 01 F4 00 64 00 00 63 CE"),
        );
    }

    #[test]
    fn refuses_what_real_modules_refuse() {
        let mut pzem = SimulatedPzem::new(0x01, manual_reading());
        // espurna's capture: a write of address 0 is refused with "illegal data".
        assert_eq!(exchange(&mut pzem, &frame("01 06 00 02 00 00 28 0A")), frame("01 86 03 02 61"));
        assert_eq!(pzem.address(), 0x01);
    }

    #[test]
    fn ignores_bad_crc_other_addresses_and_broadcast_replies() {
        let mut pzem = SimulatedPzem::new(0x01, manual_reading());
        assert!(exchange(&mut pzem, &frame("01 04 00 00 00 0A 0D 70")).is_empty());
        assert!(exchange(&mut pzem, &frame("2E 04 00 00 00 0A 77 92")).is_empty());
        pzem.measurement.energy_wh = 5;
        let broadcast_reset = [0x00, 0x42, 0x00, 0x00];
        let crc = crc16(&broadcast_reset[..2]).to_le_bytes();
        assert!(exchange(&mut pzem, &[0x00, 0x42, crc[0], crc[1]]).is_empty());
        assert_eq!(pzem.measurement.energy_wh, 0);
    }

    #[test]
    fn the_counter_wraps_at_the_register_top() {
        let mut pzem = SimulatedPzem::new(
            0x01,
            Measurement {
                power_deciwatts: 36_000,
                energy_wh: ENERGY_REGISTER_TOP_WH - 2,
                ..Default::default()
            },
        );
        // 3.6 kW for 1 s is 1 Wh.
        pzem.advance(1_000);
        assert_eq!(pzem.measurement.energy_wh, ENERGY_REGISTER_TOP_WH - 1);
        pzem.advance(3_000);
        assert_eq!(pzem.measurement.energy_wh, 2);
        pzem.power_cycle();
        assert_eq!(pzem.measurement.energy_wh, 0);
    }

    #[test]
    fn integrates_power_into_energy() {
        let mut pzem =
            SimulatedPzem::new(0x01, Measurement { power_deciwatts: 10_000, ..Default::default() });
        for _ in 0..3_600 {
            pzem.advance(1_000);
        }
        assert_eq!(pzem.measurement.energy_wh, 1_000);
        pzem.measurement.power_deciwatts = 1; // 0.1 W: 1 Wh every 10 h
        pzem.advance(36_000_000 - 1);
        assert_eq!(pzem.measurement.energy_wh, 1_000);
        pzem.advance(1);
        assert_eq!(pzem.measurement.energy_wh, 1_001);
    }
}
