//! A private stack of the real services (PostgreSQL, Mosquitto, Kafka) on ports of its
//! own, started by `infra/up.sh` with a state directory of its own, for tests that stop
//! and restart services: the shared ones other tests (and people) use are never
//! touched. Also used by the bridge's tests (`#[path]`).

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

/// One of `infra/up.sh`'s services.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Postgres,
    Mosquitto,
    Kafka,
}

impl Service {
    fn name(self) -> &'static str {
        match self {
            Service::Postgres => "postgres",
            Service::Mosquitto => "mosquitto",
            Service::Kafka => "kafka",
        }
    }
}

pub struct Stack {
    pub state_dir: PathBuf,
    pub pg_port: u16,
    pub mqtt_port: u16,
    pub kafka_port: u16,
    controller_port: u16,
    services: Vec<Service>,
    repo: PathBuf,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Stack {
    /// Starts `services` (in that order) and waits until each is ready.
    pub fn start(name: &str, services: &[Service]) -> Self {
        let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let state_dir = std::env::temp_dir().join(format!("smartmeter-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&state_dir);
        let stack = Self {
            state_dir,
            pg_port: free_port(),
            mqtt_port: free_port(),
            kafka_port: free_port(),
            controller_port: free_port(),
            services: services.to_vec(),
            repo,
        };
        for service in services {
            stack.script("up.sh", *service);
        }
        stack
    }

    fn script(&self, script: &str, service: Service) {
        let started = Instant::now();
        let output = self.run_script(script, service);
        assert!(
            output.status.success(),
            "infra/{script} {}: {}\n{}",
            service.name(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        eprintln!("  private {} {script}: {:.1} s", service.name(), started.elapsed().as_secs_f64());
    }

    fn run_script(&self, script: &str, service: Service) -> std::process::Output {
        // Kafka's jars: those the shared stack copied (no Maven run for a test).
        let shared_state = std::env::var("SMARTMETER_STATE_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|_| self.repo.join(".state"));
        Command::new(self.repo.join("infra").join(script))
            .arg(service.name())
            .env("SMARTMETER_STATE_DIR", &self.state_dir)
            .env("SMARTMETER_PG_PORT", self.pg_port.to_string())
            .env("SMARTMETER_DATABASE_URL", self.database_url())
            .env("SMARTMETER_TEST_DATABASE_URL", self.database_url())
            .env("SMARTMETER_MQTT_PORT", self.mqtt_port.to_string())
            .env("SMARTMETER_KAFKA_PORT", self.kafka_port.to_string())
            .env("SMARTMETER_KAFKA_CONTROLLER_PORT", self.controller_port.to_string())
            .env("SMARTMETER_KAFKA_BROKERS", self.kafka_brokers())
            .env("SMARTMETER_KAFKA_LIBS", shared_state.join("kafka").join("libs"))
            .output()
            .expect("run infra script")
    }

    /// Stops `service` (`infra/down.sh`: a clean stop) and starts it again, after
    /// `outage` without it.
    pub async fn restart(&self, service: Service, outage: std::time::Duration) {
        let this = self.handle();
        tokio::task::spawn_blocking(move || this.script("down.sh", service)).await.unwrap();
        tokio::time::sleep(outage).await;
        let this = self.handle();
        tokio::task::spawn_blocking(move || this.script("up.sh", service)).await.unwrap();
    }

    fn handle(&self) -> Self {
        Self {
            state_dir: self.state_dir.clone(),
            pg_port: self.pg_port,
            mqtt_port: self.mqtt_port,
            kafka_port: self.kafka_port,
            controller_port: self.controller_port,
            services: Vec::new(),
            repo: self.repo.clone(),
        }
    }

    pub fn database_url(&self) -> String {
        format!("postgres://smartmeter:smartmeter@127.0.0.1:{}/smartmeter", self.pg_port)
    }

    pub fn kafka_brokers(&self) -> String {
        format!("127.0.0.1:{}", self.kafka_port)
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        for service in self.services.iter().rev() {
            let output = self.run_script("down.sh", *service);
            if !output.status.success() {
                eprintln!("infra/down.sh {}: {}", service.name(), String::from_utf8_lossy(&output.stderr));
            }
        }
        if !self.services.is_empty() {
            let _ = std::fs::remove_dir_all(&self.state_dir);
        }
    }
}
