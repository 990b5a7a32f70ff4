//! How the process runs: listen address, database, pool size, drain timeout, Kafka and
//! its topics, access keys; and the `create-api-key` command.

use std::net::SocketAddr;
use std::time::Duration;

use smartmeter_core::topics;

pub const DEFAULT_DATABASE_URL: &str = "postgres://smartmeter:smartmeter@127.0.0.1:55432/smartmeter";

#[derive(Clone, clap::Parser)]
#[command(
    name = "query-api",
    version,
    about = "smartmeter GraphQL API (queries, mutations, subscriptions), the seed's REST API, GraphiQL, /health and /metrics."
)]
pub struct Config {
    /// Address of the HTTP server (GraphQL, GraphiQL, /health, /metrics).
    #[arg(long, env = "SMARTMETER_QUERY_API_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// PostgreSQL / TimescaleDB connection URL. Never logged: it may carry a password.
    #[arg(long, global = true, env = "SMARTMETER_DATABASE_URL", default_value = DEFAULT_DATABASE_URL, hide_env_values = true)]
    pub database_url: String,

    /// Most connections the pool keeps open.
    #[arg(long, env = "SMARTMETER_QUERY_API_DB_POOL_SIZE", default_value_t = 16)]
    pub db_pool_size: usize,

    /// Seconds in-flight requests get to finish after SIGTERM before the process exits.
    #[arg(long, env = "SMARTMETER_QUERY_API_DRAIN_TIMEOUT_SECONDS", default_value_t = 10)]
    pub drain_timeout_seconds: u64,

    /// The built web dashboard (`npm run build` in query-api/dashboard), served at `/`.
    #[arg(long, env = "SMARTMETER_QUERY_API_DASHBOARD_DIR", default_value = crate::dashboard::DEFAULT_DIR)]
    pub dashboard_dir: std::path::PathBuf,

    /// Kafka bootstrap servers: mutations publish there, subscriptions read from there.
    #[arg(long, env = "SMARTMETER_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub brokers: String,

    /// Telemetry topic read for live readings and the live bill projection.
    #[arg(long, env = "SMARTMETER_QUERY_API_TELEMETRY_TOPIC", default_value = topics::TELEMETRY.name)]
    pub telemetry_topic: String,

    /// Device events: published by device mutations, read for status changes.
    #[arg(long, env = "SMARTMETER_QUERY_API_DEVICE_EVENTS_TOPIC", default_value = topics::DEVICE_EVENTS.name)]
    pub device_events_topic: String,

    /// Tariff events: published by publishTariffVersion, assignTariff, registerDevice.
    #[arg(long, env = "SMARTMETER_TARIFF_EVENTS_TOPIC", default_value = topics::TARIFF_EVENTS.name)]
    pub tariff_events_topic: String,

    /// Invoice events, read for the invoicesIssued subscription.
    #[arg(long, env = "SMARTMETER_INVOICES_TOPIC", default_value = topics::INVOICES.name)]
    pub invoices_topic: String,

    /// The bridge's dead-letter topic, browsed by deadLetters.
    #[arg(long, env = "SMARTMETER_QUERY_API_DLQ_TOPIC", default_value = topics::TELEMETRY_DLQ.name)]
    pub dlq_topic: String,

    /// Seconds Kafka has to confirm an event a mutation publishes; after that the
    /// mutation fails with UNAVAILABLE and nothing is published.
    #[arg(long, env = "SMARTMETER_QUERY_API_PUBLISH_TIMEOUT_SECONDS", default_value_t = 10)]
    pub publish_timeout_seconds: u64,

    /// Most subscriptions this instance holds at once; more are refused (UNAVAILABLE).
    #[arg(long, env = "SMARTMETER_QUERY_API_MAX_SUBSCRIPTIONS", default_value_t = 50_000)]
    pub max_subscriptions: usize,

    /// Time zone of a device registered through `POST /api/devices` without one (the
    /// processor's default for discovered meters reads the same variable).
    #[arg(long, env = "SMARTMETER_DEFAULT_TIME_ZONE", default_value = "UTC")]
    pub default_time_zone: String,

    /// An admin API key accepted from memory (never stored), for the one-command local
    /// run and tests. Leave unset in production and create keys with `create-api-key`.
    #[arg(long, env = "SMARTMETER_QUERY_API_DEV_ADMIN_KEY", hide_env_values = true)]
    pub dev_admin_key: Option<String>,

    /// Key of the signed invoice PDF links; give every instance behind one address the
    /// same. Random per process when unset.
    #[arg(long, env = "SMARTMETER_QUERY_API_LINK_SECRET", hide_env_values = true)]
    pub link_secret: Option<String>,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Clone, Debug, clap::Subcommand)]
pub enum Command {
    /// Creates an API key (and its user when new) in the database and prints the token
    /// once. The first admin key is made this way.
    CreateApiKey(CreateApiKey),
}

#[derive(Clone, Debug, clap::Args)]
pub struct CreateApiKey {
    /// admin, operator or customer.
    #[arg(long)]
    pub role: String,
    /// The person or machine the key is for (created with the role if new).
    #[arg(long, default_value = "admin")]
    pub user: String,
    /// The customer account, for the customer role (it must exist).
    #[arg(long)]
    pub customer: Option<String>,
    /// Creates the customer account first when it does not exist, with this name.
    #[arg(long, requires = "customer")]
    pub customer_name: Option<String>,
    /// A note shown in key lists.
    #[arg(long)]
    pub label: Option<String>,
}

impl Config {
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_secs(self.drain_timeout_seconds)
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("database_url", &"<redacted>")
            .field("db_pool_size", &self.db_pool_size)
            .field("drain_timeout_seconds", &self.drain_timeout_seconds)
            .field("dashboard_dir", &self.dashboard_dir)
            .field("brokers", &self.brokers)
            .field("telemetry_topic", &self.telemetry_topic)
            .field("device_events_topic", &self.device_events_topic)
            .field("tariff_events_topic", &self.tariff_events_topic)
            .field("invoices_topic", &self.invoices_topic)
            .field("dlq_topic", &self.dlq_topic)
            .field("publish_timeout_seconds", &self.publish_timeout_seconds)
            .field("max_subscriptions", &self.max_subscriptions)
            .field("default_time_zone", &self.default_time_zone)
            .field("dev_admin_key", &self.dev_admin_key.as_ref().map(|_| "<redacted>"))
            .field("link_secret", &self.link_secret.as_ref().map(|_| "<redacted>"))
            .field("command", &self.command)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[test]
    fn defaults_point_at_the_local_stack() {
        let config = Config::try_parse_from(["query-api"]).unwrap();
        assert_eq!(config.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(config.db_pool_size, 16);
        assert_eq!(config.telemetry_topic, "smartmeter.telemetry.v1");
        assert_eq!(config.tariff_events_topic, "smartmeter.tariff-events.v1");
        assert!(config.command.is_none());
        assert!(!format!("{config:?}").contains("smartmeter@"), "debug output hides the URL");
    }

    #[test]
    fn flags_override_defaults() {
        let config = Config::try_parse_from([
            "query-api",
            "--listen",
            "0.0.0.0:9000",
            "--database-url",
            "postgres://u:p@db/x",
            "--dev-admin-key",
            "secret-dev-key",
        ])
        .unwrap();
        assert_eq!(config.listen.port(), 9000);
        assert_eq!(config.database_url, "postgres://u:p@db/x");
        assert!(!format!("{config:?}").contains("secret-dev-key"));
    }

    #[test]
    fn create_api_key_is_a_subcommand() {
        let config =
            Config::try_parse_from(["query-api", "create-api-key", "--role", "admin", "--user", "alice"])
                .unwrap();
        let Some(Command::CreateApiKey(command)) = config.command else { panic!("no subcommand") };
        assert_eq!((command.role.as_str(), command.user.as_str()), ("admin", "alice"));
        assert!(Config::try_parse_from(["query-api", "create-api-key"]).is_err(), "--role is required");
    }
}
