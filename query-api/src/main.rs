use clap::Parser as _;
use smartmeter_core::service::{logging, shutdown};
use smartmeter_query_api::{run, Config, SERVICE};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    logging::init(SERVICE);
    run(config, shutdown::on_signal()).await
}
