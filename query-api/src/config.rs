//! How the process runs: listen address, database, pool size, drain timeout.

use std::net::SocketAddr;
use std::time::Duration;

pub const DEFAULT_DATABASE_URL: &str = "postgres://smartmeter:smartmeter@127.0.0.1:55432/smartmeter";

#[derive(Clone, clap::Parser)]
#[command(name = "query-api", version, about = "smartmeter GraphQL API, GraphiQL, /health and /metrics.")]
pub struct Config {
    /// Address of the HTTP server (GraphQL, GraphiQL, /health, /metrics).
    #[arg(long, env = "SMARTMETER_QUERY_API_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// PostgreSQL / TimescaleDB connection URL. Never logged: it may carry a password.
    #[arg(long, env = "SMARTMETER_DATABASE_URL", default_value = DEFAULT_DATABASE_URL, hide_env_values = true)]
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
        ])
        .unwrap();
        assert_eq!(config.listen.port(), 9000);
        assert_eq!(config.database_url, "postgres://u:p@db/x");
    }
}
