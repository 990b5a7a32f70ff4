use clap::Parser as _;
use smartmeter_core::service::{logging, shutdown};
use smartmeter_query_api::{run, Config, SERVICE};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    // A command prints its result on stdout, where the server's logs would go.
    if config.command.is_none() {
        logging::init(SERVICE);
    }
    run(config, shutdown::on_signal()).await
}
