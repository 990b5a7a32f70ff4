//! The PZEM's serial port: ESP-IDF's UART driver with the `embedded_io::ReadReady` the
//! meter-core driver polls, so a silent PZEM ends in a timeout instead of a read that
//! blocks forever.

use embedded_io::{ErrorType, Read, ReadReady, Write};
use esp_idf_svc::hal::delay::NON_BLOCK;
use esp_idf_svc::hal::uart::UartDriver;
use esp_idf_svc::io::EspIOError;

pub struct PzemPort<'d>(pub UartDriver<'d>);

impl ErrorType for PzemPort<'_> {
    type Error = EspIOError;
}

impl Read for PzemPort<'_> {
    /// Returns at once with what is buffered (the driver polls `read_ready` first and
    /// does its own waiting, so a silent PZEM is a timeout, never a hang).
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        UartDriver::read(&self.0, buf, NON_BLOCK).map_err(EspIOError)
    }
}

impl ReadReady for PzemPort<'_> {
    fn read_ready(&mut self) -> Result<bool, Self::Error> {
        Ok(self.0.remaining_read().map_err(EspIOError)? > 0)
    }
}

impl Write for PzemPort<'_> {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        Write::write(&mut self.0, buf)
    }

    /// Waits until the request has left the wire, so the reply timeout starts after it.
    fn flush(&mut self) -> Result<(), Self::Error> {
        Write::flush(&mut self.0)
    }
}
