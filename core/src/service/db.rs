//! PostgreSQL pool and the versioned migrations in `core/migrations/`.
//!
//! Every service that uses the database calls [`migrate`] at start: it applies what is
//! missing under an advisory lock (so services racing at start apply each file once)
//! and fails if the database is newer than this binary knows.

use std::time::Duration;

use anyhow::Context as _;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;

/// (version, name, SQL), in order. Applied files are never edited; add a new one.
pub const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "pipeline", include_str!("../../migrations/0001_pipeline.sql")),
    (2, "telemetry_rejects", include_str!("../../migrations/0002_telemetry_rejects.sql")),
    (3, "billing_periods", include_str!("../../migrations/0003_billing_periods.sql")),
    (4, "billing", include_str!("../../migrations/0004_billing.sql")),
    (5, "device_registry", include_str!("../../migrations/0005_device_registry.sql")),
    (6, "api_access", include_str!("../../migrations/0006_api_access.sql")),
    (7, "billing_replay_requests", include_str!("../../migrations/0007_billing_replay_requests.sql")),
    (9, "device_search", include_str!("../../migrations/0009_device_search.sql")),
];

/// (version, name, SQL) applied only where the TimescaleDB extension is installed:
/// compression and continuous aggregates. Each statement runs on its own, outside a
/// transaction (a continuous aggregate cannot be created inside one), so every
/// statement must be idempotent. Without the extension they are not applied and not
/// recorded: installing it later and restarting applies them.
pub const TIMESCALE_MIGRATIONS: &[(i32, &str, &str)] = &[(
    8,
    "timescale_compression_and_gauges",
    include_str!("../../migrations/timescale/0008_compression_and_gauges.sql"),
)];

/// The highest migration number this binary knows.
pub const SCHEMA_VERSION: i32 = {
    let mut newest = 0;
    let mut index = 0;
    while index < MIGRATIONS.len() {
        if MIGRATIONS[index].0 > newest {
            newest = MIGRATIONS[index].0;
        }
        index += 1;
    }
    let mut index = 0;
    while index < TIMESCALE_MIGRATIONS.len() {
        if TIMESCALE_MIGRATIONS[index].0 > newest {
            newest = TIMESCALE_MIGRATIONS[index].0;
        }
        index += 1;
    }
    newest
};

/// Arbitrary constant shared by every smartmeter service for the migration lock.
const MIGRATION_LOCK_KEY: i64 = 0x736d_6d74_7200;

/// A pool whose connections name `service` in `pg_stat_activity`.
pub fn pool(database_url: &str, max_size: usize, service: &str) -> anyhow::Result<Pool> {
    let mut config: tokio_postgres::Config = database_url.parse().context("parse database URL")?;
    if config.get_application_name().is_none() {
        config.application_name(service);
    }
    let manager =
        Manager::from_config(config, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
    Pool::builder(manager)
        .max_size(max_size)
        .wait_timeout(Some(Duration::from_secs(30)))
        .create_timeout(Some(Duration::from_secs(5)))
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()
        .context("build PostgreSQL pool")
}

/// Applies missing migrations; returns the schema version now in force.
pub async fn migrate(pool: &Pool) -> anyhow::Result<i32> {
    let mut client = pool.get().await.context("connect to PostgreSQL")?;
    client.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK_KEY]).await?;
    let result = apply_missing(&mut client).await;
    client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK_KEY]).await?;
    result
}

async fn apply_missing(client: &mut deadpool_postgres::Object) -> anyhow::Result<i32> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 version    integer PRIMARY KEY,
                 name       text NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await?;
    let applied: Vec<i32> = client
        .query("SELECT version FROM schema_migrations", &[])
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let newest = applied.iter().copied().max().unwrap_or(0);
    anyhow::ensure!(
        newest <= SCHEMA_VERSION,
        "database schema is version {newest}, newer than this binary's {SCHEMA_VERSION}; upgrade the binary"
    );
    // Every file not applied yet, also one numbered below the newest applied (numbers
    // are handed out to parts developed side by side and may land out of order).
    for (version, name, sql) in MIGRATIONS.iter().filter(|(v, _, _)| !applied.contains(v)) {
        let tx = client.transaction().await?;
        tx.batch_execute(sql).await.with_context(|| format!("apply migration {version} {name}"))?;
        tx.execute("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", &[version, name]).await?;
        tx.commit().await?;
        tracing::info!(version, name, "Applied migration.");
    }
    let timescale =
        client.query_opt("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'", &[]).await?.is_some();
    if timescale {
        for (version, name, sql) in TIMESCALE_MIGRATIONS.iter().filter(|(v, _, _)| !applied.contains(v)) {
            for statement in sql_statements(sql) {
                client
                    .batch_execute(&statement)
                    .await
                    .with_context(|| format!("apply TimescaleDB migration {version} {name}: {statement}"))?;
            }
            client
                .execute("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", &[version, name])
                .await?;
            tracing::info!(version, name, "Applied TimescaleDB migration.");
        }
    }
    Ok(SCHEMA_VERSION)
}

/// The statements of a migration file without comments: each ends with a `;` at the
/// end of a line (the files of TIMESCALE_MIGRATIONS hold no function bodies).
fn sql_statements(sql: &str) -> Vec<String> {
    let mut statements = Vec::new();
    let mut current = String::new();
    for line in sql.lines() {
        let code = line.split("--").next().unwrap_or_default().trim_end();
        if code.trim().is_empty() {
            continue;
        }
        current.push_str(code);
        current.push('\n');
        if code.ends_with(';') {
            statements.push(std::mem::take(&mut current));
        }
    }
    if !current.trim().is_empty() {
        statements.push(current);
    }
    statements
}

/// [`migrate`], retried with back-off until it succeeds (the database may still be
/// starting); `/health` shows `postgres` down meanwhile. Fails only on shutdown.
pub async fn migrate_when_ready(
    pool: &Pool,
    health: &super::health::Health,
    shutdown: &tokio_util::sync::CancellationToken,
) -> anyhow::Result<i32> {
    let mut delay = Duration::from_millis(200);
    loop {
        match migrate(pool).await {
            Ok(version) => {
                health.up("postgres");
                tracing::info!(version, "Schema ready.");
                return Ok(version);
            }
            Err(error) => {
                health.down("postgres", error.to_string());
                tracing::warn!(error = format!("{error:#}"), "Database not ready; retrying.");
                tokio::select! {
                    _ = shutdown.cancelled() => anyhow::bail!("shut down before the database was ready"),
                    _ = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Whether the TimescaleDB extension is installed in this database.
pub async fn has_timescale(pool: &Pool) -> anyhow::Result<bool> {
    let client = pool.get().await?;
    let row = client
        .query_one("SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')", &[])
        .await?;
    Ok(row.get(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timescale_files_split_into_whole_statements() {
        for (_, name, sql) in TIMESCALE_MIGRATIONS {
            let statements = sql_statements(sql);
            assert!(statements.len() >= 4, "{name}");
            for statement in &statements {
                assert!(statement.trim_end().ends_with(';'), "{name}: {statement}");
                assert!(!statement.contains("--"), "{name}: comments are dropped");
            }
        }
        assert_eq!(
            sql_statements("SELECT 1; -- one\n-- two\nSELECT\n  2;\n"),
            ["SELECT 1;\n", "SELECT\n  2;\n"]
        );
    }

    #[test]
    fn schema_version_covers_both_lists() {
        let newest = MIGRATIONS.iter().chain(TIMESCALE_MIGRATIONS).map(|(v, _, _)| *v).max().unwrap();
        assert_eq!(SCHEMA_VERSION, newest);
    }
}
