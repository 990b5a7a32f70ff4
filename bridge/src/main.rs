//! `bridge`: MQTT telemetry in, Kafka records out. See the crate documentation.

use clap::Parser as _;
use smartmeter_bridge::Config;
use smartmeter_core::service::{logging, shutdown};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    logging::init("bridge");
    let shutdown = shutdown::on_signal();
    smartmeter_bridge::run(config, shutdown).await
}
