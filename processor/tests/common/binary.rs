//! A service binary of the package under test, started, SIGKILLed and restarted by the
//! test, and a seeded random source for the moments. Also used by the bridge's tests
//! (`#[path]`).

#![allow(dead_code)]

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// xorshift64*: enough randomness for kill moments, reproducible from its seed.
pub struct Rng(u64);

impl Rng {
    /// From `SMARTMETER_TEST_SEED`, else the clock; the seed is printed so a failing
    /// run can be repeated.
    pub fn from_env(label: &str) -> Self {
        let seed = std::env::var("SMARTMETER_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| jiff::Timestamp::now().as_nanosecond() as u64 | 1);
        eprintln!("{label}: SMARTMETER_TEST_SEED={seed}");
        Self(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `low..high` milliseconds.
    pub fn millis(&mut self, low: u64, high: u64) -> Duration {
        Duration::from_millis(low + self.next() % (high - low))
    }
}

/// A service binary with fixed arguments, (re)started and killed on demand. Its
/// output goes to `CARGO_TARGET_TMPDIR/<name>.log`.
pub struct Binary {
    pub name: String,
    exe: &'static str,
    args: Vec<String>,
    child: Option<Child>,
    pub starts: u32,
    pub kills: u32,
    log: PathBuf,
}

impl Binary {
    /// `exe`: `env!("CARGO_BIN_EXE_<name>")` of the package under test.
    pub fn new(name: &str, exe: &'static str, args: Vec<String>) -> Self {
        let log = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}.log"));
        let _ = std::fs::remove_file(&log);
        Self { name: name.to_owned(), exe, args, child: None, starts: 0, kills: 0, log }
    }

    pub fn add_args(&mut self, args: &[&str]) {
        self.args.extend(args.iter().map(|arg| (*arg).to_owned()));
    }

    pub fn log_path(&self) -> &PathBuf {
        &self.log
    }

    pub fn start(&mut self) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        let log = File::options().create(true).append(true).open(&self.log).unwrap();
        let child = Command::new(self.exe)
            .args(&self.args)
            .env("RUST_LOG", std::env::var("SMARTMETER_TEST_RUST_LOG").unwrap_or_else(|_| "info".into()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start the processor binary");
        self.child = Some(child);
        self.starts += 1;
    }

    /// SIGKILL: no shutdown code runs, whatever the process was doing.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().expect("SIGKILL");
        child.wait().unwrap();
        self.kills += 1;
    }

    /// SIGTERM and wait (30 s at most) for a clean exit.
    pub fn terminate(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
        assert!(status.success());
        for _ in 0..300 {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(status.success(), "{} exited with {status}; log: {}", self.name, self.log.display());
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        panic!("{} did not stop within 30 s of SIGTERM", self.name);
    }

    /// Fails the test when the process exited on its own.
    pub fn check_alive(&mut self) {
        if let Some(child) = &mut self.child {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("{} exited by itself with {status}; log: {}", self.name, self.log.display());
            }
        }
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
