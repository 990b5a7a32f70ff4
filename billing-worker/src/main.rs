use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args as ClapArgs, Parser, Subcommand};
use smartmeter_billing_worker::email::{self, SmtpConfig};
use smartmeter_billing_worker::replay::{self, ReplayRequest};
use smartmeter_billing_worker::{pdf, store, Config, MailConfig};
use smartmeter_core::service::{db, health::Health, logging, metrics, ops_http, shutdown};

/// Prices closed billing periods into invoices; replays, renders and mails them.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[arg(long, global = true, env = "SMARTMETER_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    brokers: String,
    #[arg(
        long,
        global = true,
        env = "SMARTMETER_DATABASE_URL",
        default_value = "postgres://smartmeter:smartmeter@127.0.0.1:55432/smartmeter",
        hide_env_values = true
    )]
    database_url: String,
    #[arg(
        long,
        global = true,
        env = "SMARTMETER_BILLING_PERIODS_TOPIC",
        default_value = "smartmeter.billing-periods.v1"
    )]
    periods_topic: String,
    #[arg(
        long,
        global = true,
        env = "SMARTMETER_TARIFF_EVENTS_TOPIC",
        default_value = "smartmeter.tariff-events.v1"
    )]
    tariffs_topic: String,
    #[arg(long, global = true, env = "SMARTMETER_INVOICES_TOPIC", default_value = "smartmeter.invoices.v1")]
    invoices_topic: String,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Consume periods and tariff events and issue invoices (the default).
    Run(RunArgs),
    /// Re-price months of history read again from Kafka with the tariffs in force now.
    Replay(ReplayArgs),
    /// Render an invoice to a PDF file.
    Pdf {
        invoice_number: String,
        #[arg(long, short)]
        out: PathBuf,
    },
    /// Mail an invoice with its PDF attached.
    Email {
        invoice_number: String,
        #[arg(long)]
        to: String,
        #[command(flatten)]
        smtp: SmtpArgs,
    },
}

#[derive(Debug, ClapArgs)]
struct RunArgs {
    #[arg(long, env = "SMARTMETER_BILLING_GROUP", default_value = "smartmeter-billing-worker")]
    group_id: String,
    #[arg(long, env = "SMARTMETER_BILLING_MAX_BATCH", default_value_t = 1000)]
    max_batch: usize,
    #[arg(long, env = "SMARTMETER_BILLING_LINGER_MS", default_value_t = 50)]
    linger_ms: u64,
    #[arg(long, env = "SMARTMETER_BILLING_METRICS_ADDR", default_value = "127.0.0.1:9104")]
    metrics_addr: SocketAddr,
    /// Mail every new invoice to this address (needs the SMTP settings).
    #[arg(long, env = "SMARTMETER_BILLING_EMAIL_TO")]
    email_to: Option<String>,
    /// Invoices issued longer ago are not mailed automatically.
    #[arg(long, env = "SMARTMETER_BILLING_EMAIL_LOOKBACK", default_value = "7d")]
    email_lookback: jiff::Span,
    /// Threads that decode and price a replay requested through the API.
    #[arg(long, env = "SMARTMETER_BILLING_REPLAY_THREADS", default_value_t = default_threads())]
    replay_threads: usize,
    /// How often to look for replays requested through the API.
    #[arg(long, env = "SMARTMETER_BILLING_REPLAY_POLL_MS", default_value_t = 2000)]
    replay_poll_ms: u64,
    /// How long to wait for the batch in hand on shutdown.
    #[arg(long, env = "SMARTMETER_BILLING_DRAIN_TIMEOUT_S", default_value_t = 10)]
    drain_timeout_s: u64,
    #[command(flatten)]
    smtp: SmtpArgs,
}

#[derive(Debug, ClapArgs)]
struct ReplayArgs {
    /// First month to re-price (YYYY-MM).
    #[arg(long, env = "SMARTMETER_REPLAY_FROM", value_parser = month)]
    from: jiff::civil::Date,
    /// Last month to re-price (YYYY-MM); all later months when absent.
    #[arg(long, env = "SMARTMETER_REPLAY_TO", value_parser = month)]
    to: Option<jiff::civil::Date>,
    /// Only this device.
    #[arg(long, env = "SMARTMETER_REPLAY_DEVICE")]
    device: Option<String>,
    /// Records read per chunk, each priced and committed in one transaction.
    #[arg(long, env = "SMARTMETER_REPLAY_BATCH", default_value_t = 1000)]
    batch_size: usize,
    /// Threads that decode and price (at most the cores there are).
    #[arg(long, env = "SMARTMETER_REPLAY_THREADS", default_value_t = default_threads())]
    pricing_threads: usize,
    /// No progress bar.
    #[arg(long, env = "SMARTMETER_REPLAY_QUIET")]
    quiet: bool,
}

#[derive(Debug, ClapArgs, Default)]
struct SmtpArgs {
    #[arg(long, env = "SMARTMETER_SMTP_HOST")]
    smtp_host: Option<String>,
    #[arg(long, env = "SMARTMETER_SMTP_PORT", default_value_t = 25)]
    smtp_port: u16,
    #[arg(long, env = "SMARTMETER_SMTP_USER")]
    smtp_user: Option<String>,
    #[arg(long, env = "SMARTMETER_SMTP_PASSWORD", hide_env_values = true)]
    smtp_password: Option<String>,
    #[arg(long, env = "SMARTMETER_SMTP_FROM", default_value = "smartmeter billing <billing@localhost>")]
    smtp_from: String,
    /// none, starttls or tls; none for a relay on this machine, starttls otherwise.
    #[arg(long, env = "SMARTMETER_SMTP_TLS")]
    smtp_tls: Option<String>,
}

impl SmtpArgs {
    fn config(&self) -> anyhow::Result<Option<SmtpConfig>> {
        let Some(host) = &self.smtp_host else { return Ok(None) };
        let tls = match &self.smtp_tls {
            Some(mode) => mode.parse()?,
            None => SmtpConfig::default_tls(host),
        };
        Ok(Some(SmtpConfig {
            host: host.clone(),
            port: self.smtp_port,
            user: self.smtp_user.clone(),
            password: self.smtp_password.clone(),
            from: self.smtp_from.clone(),
            tls,
        }))
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    logging::init("billing-worker");
    let mut args = Args::parse();
    let command = args.command.take().unwrap_or_else(|| Command::Run(RunArgs::parse_defaults()));
    match command {
        Command::Run(run) => serve(args, run).await,
        Command::Replay(replay) => replay_months(args, replay).await,
        Command::Pdf { invoice_number, out } => {
            let invoice = fetch(&args.database_url, &invoice_number).await?;
            let bytes = pdf::render(&invoice)?;
            std::fs::write(&out, &bytes).with_context(|| format!("write {}", out.display()))?;
            println!("{} ({} bytes) written to {}", invoice_number, bytes.len(), out.display());
            Ok(())
        }
        Command::Email { invoice_number, to, smtp } => {
            let config = smtp.config()?.context("set SMARTMETER_SMTP_HOST (or --smtp-host)")?;
            let pool = db::pool(&args.database_url, 1, "billing-worker")?;
            let client = pool.get().await?;
            let invoice = store::fetch_invoice(&**client, &invoice_number)
                .await?
                .with_context(|| format!("no invoice {invoice_number}"))?;
            let result = email::send(&config, &to, &invoice).await;
            let error = result.as_ref().err().map(ToString::to_string);
            store::record_mailing(&**client, &invoice_number, &to, error.as_deref()).await?;
            result?;
            println!("{invoice_number} mailed to {to}");
            Ok(())
        }
    }
}

/// `YYYY-MM` as the month's first day.
fn month(text: &str) -> Result<jiff::civil::Date, String> {
    replay::parse_month(text).map_err(|error| format!("{error:#}"))
}

fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |cores| cores.get())
}

impl RunArgs {
    /// The `run` arguments from the environment and defaults, for a bare invocation.
    fn parse_defaults() -> Self {
        #[derive(Parser)]
        struct Bare {
            #[command(flatten)]
            run: RunArgs,
        }
        Bare::parse_from(["billing-worker"]).run
    }
}

async fn serve(args: Args, run: RunArgs) -> anyhow::Result<()> {
    let mail = match (&run.email_to, run.smtp.config()?) {
        (Some(to), Some(smtp)) => Some(MailConfig {
            smtp,
            to: to.clone(),
            lookback: run
                .email_lookback
                .to_duration(jiff::SpanRelativeTo::days_are_24_hours())?
                .try_into()?,
        }),
        (Some(_), None) => anyhow::bail!("SMARTMETER_BILLING_EMAIL_TO needs SMARTMETER_SMTP_HOST"),
        _ => None,
    };
    let config = Config {
        brokers: args.brokers,
        database_url: args.database_url,
        group_id: run.group_id,
        periods_topic: args.periods_topic,
        tariffs_topic: args.tariffs_topic,
        invoices_topic: args.invoices_topic,
        max_batch: run.max_batch,
        linger: Duration::from_millis(run.linger_ms),
        mail,
        replay_threads: run.replay_threads.max(1),
        replay_poll_interval: Duration::from_millis(run.replay_poll_ms.max(10)),
        ..Config::local_defaults()
    };
    let shutdown = shutdown::on_signal();
    let registry = metrics::registry();
    let health = Health::new("billing-worker", smartmeter_billing_worker::HEALTH_COMPONENTS);
    let ops =
        tokio::spawn(ops_http::serve(run.metrics_addr, registry.clone(), health.clone(), shutdown.clone()));
    let worker = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { smartmeter_billing_worker::run(config, &registry, health, shutdown).await }
    });
    tokio::pin!(worker);
    let result = tokio::select! {
        result = &mut worker => result?,
        _ = shutdown.cancelled() => {
            match tokio::time::timeout(Duration::from_secs(run.drain_timeout_s), &mut worker).await {
                Ok(result) => result?,
                Err(_) => Err(anyhow::anyhow!("the batch in hand did not finish within the drain timeout")),
            }
        }
    };
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), ops).await;
    result
}

async fn replay_months(args: Args, replay: ReplayArgs) -> anyhow::Result<()> {
    if let Some(to) = replay.to.filter(|to| *to < replay.from) {
        anyhow::bail!("--to {} is before --from {}", to.strftime("%Y-%m"), replay.from.strftime("%Y-%m"));
    }
    let request = ReplayRequest {
        brokers: args.brokers,
        topic: args.periods_topic,
        invoices_topic: args.invoices_topic,
        from: replay.from,
        to: replay.to,
        device_id: replay.device,
        batch_size: replay.batch_size.max(1),
        pricing_threads: replay.pricing_threads.max(1),
        progress_bar: !replay.quiet,
    };
    let pool = db::pool(&args.database_url, 4, "billing-worker-replay")?;
    db::migrate(&pool).await?;
    let shutdown = shutdown::on_signal();
    let report = replay::replay(&pool, &request, None, &shutdown).await?;
    let p = report.progress;
    println!(
        "replay job {}: {} records read, {} periods of the months asked for: {} issued, {} revised, {} unchanged, \
         {} unbillable, {} stale; {:.1} s ({:.0} periods/s). Invoice events are published by the running worker.",
        report.job_id,
        p.records_read,
        p.periods_matched,
        p.issued,
        p.revised,
        p.unchanged,
        p.unbillable,
        p.stale,
        report.elapsed.as_secs_f64(),
        report.periods_per_second()
    );
    Ok(())
}

async fn fetch(
    database_url: &str,
    number: &str,
) -> anyhow::Result<smartmeter_core::billing::events::InvoiceEvent> {
    let pool = db::pool(database_url, 1, "billing-worker")?;
    let client = pool.get().await.context("connect to PostgreSQL")?;
    store::fetch_invoice(&**client, number).await?.with_context(|| format!("no invoice {number}"))
}
