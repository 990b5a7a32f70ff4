//! A scripted serial port and a counting delay: the PZEM as seen from the driver.

#![allow(dead_code)]

use std::cell::Cell;
use std::collections::VecDeque;
use std::rc::Rc;

use embedded_hal::delay::DelayNs;
use embedded_io::{ErrorKind, ErrorType, Read, ReadReady, Write};

/// What the fake device does with one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Bytes(Vec<u8>),
    Silence,
    /// The port itself fails on the next read.
    PortError,
}

/// Replays one scripted reply per request (per `flush`). Reads never block: reading
/// with nothing buffered panics, so a driver that skips `read_ready` is caught.
///
/// Untimed, a reply is there at once. [`FakePort::timed`] makes its bytes arrive one by
/// one as the driver's [`FakeDelay`] lets time pass, like a real line.
#[derive(Debug, Default)]
pub struct FakePort {
    script: VecDeque<Reply>,
    /// Bytes on the line, each with the time (ns) it has fully arrived.
    rx: VecDeque<(u64, u8)>,
    timing: Option<(Rc<Cell<u64>>, u64)>,
    tx: Vec<u8>,
    fail_next_read: bool,
    /// Every request the driver sent, one entry per flush.
    pub requests: Vec<Vec<u8>>,
    /// At most this many bytes per `read` call (0 = no limit), to exercise partial reads.
    pub chunk: usize,
}

impl FakePort {
    pub fn new(script: impl IntoIterator<Item = Reply>) -> Self {
        Self { script: script.into_iter().collect(), ..Default::default() }
    }

    /// Bytes arrive every `byte_time_us` of the time `delay` counts (1042 µs at 9600 8N1).
    pub fn timed(mut self, delay: &FakeDelay, byte_time_us: u64) -> Self {
        self.timing = Some((delay.slept_ns.clone(), byte_time_us * 1_000));
        self
    }

    /// Bytes left over on the line before the first request (a late reply, noise).
    pub fn with_stale_input(mut self, bytes: &[u8]) -> Self {
        self.rx.extend(bytes.iter().map(|b| (0, *b)));
        self
    }

    fn now_ns(&self) -> u64 {
        self.timing.as_ref().map_or(0, |(clock, _)| clock.get())
    }

    fn available(&self) -> usize {
        let now = self.now_ns();
        self.rx.iter().take_while(|(at, _)| *at <= now).count()
    }

    fn transmit(&mut self, bytes: Vec<u8>) {
        let (start, byte_ns) = match &self.timing {
            Some((clock, byte_ns)) => {
                let line_free = self.rx.back().map_or(0, |(at, _)| *at);
                (clock.get().max(line_free), *byte_ns)
            }
            None => (0, 0),
        };
        for (i, byte) in bytes.into_iter().enumerate() {
            self.rx.push_back((start + byte_ns * (i as u64 + 1), byte));
        }
    }

    pub fn unused_replies(&self) -> usize {
        self.script.len()
    }

    /// Bytes still on the line or on their way.
    pub fn pending_bytes(&self) -> usize {
        self.rx.len()
    }
}

impl ErrorType for FakePort {
    type Error = ErrorKind;
}

impl Write for FakePort {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        self.tx.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> Result<(), Self::Error> {
        self.requests.push(std::mem::take(&mut self.tx));
        match self.script.pop_front().expect("the driver sent more requests than scripted") {
            Reply::Bytes(bytes) => self.transmit(bytes),
            Reply::Silence => {}
            Reply::PortError => self.fail_next_read = true,
        }
        Ok(())
    }
}

impl ReadReady for FakePort {
    fn read_ready(&mut self) -> Result<bool, Self::Error> {
        Ok(self.fail_next_read || self.available() > 0)
    }
}

impl Read for FakePort {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        if std::mem::take(&mut self.fail_next_read) {
            return Err(ErrorKind::Other);
        }
        let available = self.available();
        assert!(available > 0, "blocking read on an empty line: poll read_ready first");
        let limit = if self.chunk == 0 { usize::MAX } else { self.chunk };
        let n = buf.len().min(available).min(limit);
        for slot in &mut buf[..n] {
            *slot = self.rx.pop_front().unwrap().1;
        }
        Ok(n)
    }
}

/// Adds up the time the driver sleeps.
#[derive(Debug, Clone, Default)]
pub struct FakeDelay {
    pub slept_ns: Rc<Cell<u64>>,
}

impl DelayNs for FakeDelay {
    fn delay_ns(&mut self, ns: u32) {
        self.slept_ns.set(self.slept_ns.get() + u64::from(ns));
    }
}

pub fn hex(text: &str) -> Vec<u8> {
    text.split_whitespace().map(|b| u8::from_str_radix(b, 16).unwrap()).collect()
}

pub fn hex_u16(text: &str) -> u16 {
    u16::from_str_radix(text.trim_start_matches("0x").trim_start_matches("0X"), 16).unwrap()
}
