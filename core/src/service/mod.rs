//! Runtime plumbing every service shares (feature `service`): graceful shutdown,
//! structured logging, the `/metrics` + `/health` endpoints, the PostgreSQL pool
//! and migrations, Kafka client settings, the batch loop of a consumer whose offsets
//! live in PostgreSQL. No domain logic lives here.

pub mod consumer;
pub mod db;
pub mod health;
pub mod kafka;
pub mod logging;
pub mod metrics;
pub mod offsets;
pub mod ops_http;
pub mod outbox;
pub mod shutdown;
pub mod testkit;
