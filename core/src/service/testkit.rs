//! Helpers for integration tests against the real services: a fresh PostgreSQL
//! database per test and Kafka topics of its own, so tests never see each other's data
//! or the demo's. Connection settings come from the environment (`infra/env.sh`).

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::ClientConfig;
use tokio_postgres::NoTls;
use tokio_util::sync::CancellationToken;

pub fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

pub fn database_url() -> String {
    env_or("SMARTMETER_DATABASE_URL", "postgres://smartmeter:smartmeter@127.0.0.1:55432/smartmeter")
}

pub fn kafka_brokers() -> String {
    env_or("SMARTMETER_KAFKA_BROKERS", "127.0.0.1:9092")
}

/// A file of the shared real data: in `SMARTMETER_DATA_DIR` when set, else in the
/// `shared/data` folder beside the workspace.
pub fn shared_data(name: &str) -> std::path::PathBuf {
    std::env::var_os("SMARTMETER_DATA_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data"))
        .join(name)
}

/// A name no other test run uses: `{prefix}_{pid}_{counter}_{millis}`.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let millis = jiff::Timestamp::now().as_millisecond();
    format!("{prefix}_{}_{}_{millis}", std::process::id(), COUNTER.fetch_add(1, Ordering::SeqCst))
}

/// A database created for one test and dropped by [`TestDatabase::drop_database`].
pub struct TestDatabase {
    pub name: String,
    pub url: String,
    admin_url: String,
}

impl TestDatabase {
    pub async fn create(prefix: &str) -> anyhow::Result<Self> {
        let admin_url = database_url();
        let name = unique_name(&format!("test_{prefix}")).to_lowercase();
        let (client, connection) = tokio_postgres::connect(&admin_url, NoTls)
            .await
            .context("connect to PostgreSQL (is infra/up.sh running?)")?;
        tokio::spawn(connection);
        client.batch_execute(&format!("CREATE DATABASE {name}")).await?;
        let url = url_with_database(&admin_url, &name);
        Ok(Self { name, url, admin_url })
    }

    pub async fn drop_database(self) -> anyhow::Result<()> {
        let (client, connection) = tokio_postgres::connect(&self.admin_url, NoTls).await?;
        tokio::spawn(connection);
        client.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)).await?;
        Ok(())
    }
}

fn url_with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    // postgres://user:pass@host:port/db: the database is after the third slash.
    let without_db = match base.match_indices('/').nth(2) {
        Some((slash, _)) => &base[..slash],
        None => base,
    };
    match query {
        Some(query) => format!("{without_db}/{database}?{query}"),
        None => format!("{without_db}/{database}"),
    }
}

/// Creates `name` with `partitions` partitions if it does not exist yet.
pub async fn create_topic(brokers: &str, name: &str, partitions: i32) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", brokers).create().context("Kafka admin client")?;
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for result in admin.create_topics([&topic], &options).await? {
        match result {
            Ok(_) => {}
            Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => anyhow::bail!("create topic {topic}: {code}"),
        }
    }
    Ok(())
}

/// A service running as a task on the test's runtime until [`Spawned::stop`].
pub struct Spawned {
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Spawned {
    /// Spawns `run` with the shutdown token [`Spawned::stop`] cancels.
    pub fn start<F, Fut>(run: F) -> Self
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run(shutdown.clone()));
        Self { shutdown, task }
    }

    /// Whether the service has ended (by itself: it failed, or was told to stop).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Asks the service to stop; panics unless it stops cleanly within 30 s.
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("the service stops within 30 s")
            .expect("the service task does not panic")
            .expect("the service stops cleanly");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_is_swapped_in_urls() {
        assert_eq!(
            url_with_database("postgres://u:p@127.0.0.1:55432/smartmeter", "t1"),
            "postgres://u:p@127.0.0.1:55432/t1"
        );
        assert_eq!(
            url_with_database("postgres://u:p@localhost/smartmeter?sslmode=disable", "t1"),
            "postgres://u:p@localhost/t1?sslmode=disable"
        );
    }
}
