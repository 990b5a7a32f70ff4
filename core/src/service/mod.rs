//! Runtime plumbing every service shares (feature `service`): graceful shutdown,
//! structured logging, the `/metrics` + `/health` endpoints, the PostgreSQL pool
//! and migrations, Kafka client settings. No domain logic lives here.

pub mod db;
pub mod health;
pub mod kafka;
pub mod logging;
pub mod metrics;
pub mod offsets;
pub mod outbox;
pub mod ops_http;
pub mod shutdown;
pub mod testkit;
