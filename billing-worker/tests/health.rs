//! `/health` on a fresh system: the worker's topics are empty, so it receives nothing,
//! yet it is connected and must say so (the one-command demo waits for it).

mod common;

use std::time::Duration;

use common::{worker_config, Topics};
use smartmeter_core::service::health::Health;
use smartmeter_core::service::testkit::{self, Spawned, TestDatabase};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_ok_with_empty_topics() {
    let brokers = testkit::kafka_brokers();
    let db = TestDatabase::create("billing_health").await.unwrap();
    let topics = Topics::create(&brokers).await;
    let health = Health::new("billing-worker", smartmeter_billing_worker::HEALTH_COMPONENTS);
    let worker = Spawned::start({
        let health = health.clone();
        let config = worker_config(&db.url, &topics);
        |shutdown| async move {
            smartmeter_billing_worker::run(config, &prometheus::Registry::new(), health, shutdown).await
        }
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while health.report().status != "ok" {
        assert!(!worker.is_finished(), "the worker stopped");
        assert!(
            tokio::time::Instant::now() < deadline,
            "not healthy after 30 s with empty topics: {:?}",
            health.report()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    worker.stop().await;
    topics.delete(&brokers).await;
    db.drop_database().await.unwrap();
}
