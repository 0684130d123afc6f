//! The real services the integration tests talk to, and per-test isolation:
//! a fresh MariaDB/MySQL database and fresh Kafka topic names for every test.
//!
//! Addresses come from `TEST_MYSQL_URL` (server URL without a database, e.g.
//! `mysql://root@127.0.0.1:3306`) and `TEST_KAFKA_BROKERS` (e.g. `127.0.0.1:19092`);
//! `.ci/run` starts both and exports them. A missing or unreachable service is a
//! loud failure naming it, never a silent skip.

use anyhow::{bail, Context};
use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};
use sqlx::{ConnectOptions, Executor, MySqlPool};
use std::str::FromStr;
use std::time::Duration;

fn required_env(key: &str, service: &str) -> anyhow::Result<String> {
    match std::env::var(key) {
        Ok(v) if !v.trim().is_empty() => Ok(v.trim().to_owned()),
        _ => bail!(
            "{service} is required by this test but {key} is not set. Run the tests through `.ci/run` \
             (it starts MariaDB and the tansu broker and exports {key}), or start {service} yourself and export {key}."
        ),
    }
}

/// The MySQL server URL (no database).
pub fn mysql_server_url() -> anyhow::Result<String> {
    required_env("TEST_MYSQL_URL", "MariaDB/MySQL")
}

/// The Kafka bootstrap servers.
pub fn kafka_brokers() -> anyhow::Result<String> {
    required_env("TEST_KAFKA_BROKERS", "a Kafka-protocol broker (tansu)")
}

/// A database created for one test, migrated, with its URL.
pub struct TestDatabase {
    /// `mysql://…/<name>`.
    pub url: String,
    /// Its name.
    pub name: String,
    /// A pool on it.
    pub pool: MySqlPool,
    /// The same pool behind the storage seam.
    pub db: storage::Db,
}

/// Installs a test log subscriber once (`RUST_LOG` filters; default `warn`).
pub fn init_tracing() {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// Creates a fresh, migrated database with a unique name.
pub async fn fresh_database() -> anyhow::Result<TestDatabase> {
    init_tracing();
    let server = mysql_server_url()?;
    let name = format!("it_{}", uuid::Uuid::new_v4().simple());
    let admin = MySqlConnectOptions::from_str(&server)?.disable_statement_logging();
    let mut conn = tokio::time::timeout(Duration::from_secs(10), admin.connect())
        .await
        .with_context(|| format!("MariaDB/MySQL at {server} did not answer within 10s"))?
        .with_context(|| format!("cannot connect to MariaDB/MySQL at {server} (TEST_MYSQL_URL)"))?;
    conn.execute(format!("CREATE DATABASE `{name}`").as_str())
        .await?;
    let url = format!("{}/{name}", server.trim_end_matches('/'));
    let pool = MySqlPoolOptions::new()
        .max_connections(8)
        .connect(&url)
        .await?;
    let db = storage::Db::MySql(pool.clone());
    db.migrate().await.context("migrating the test database")?;
    Ok(TestDatabase {
        url,
        name,
        pool,
        db,
    })
}

/// Unique topic names for one test: `(machine events, incidents)`.
pub fn fresh_topics() -> (String, String) {
    let id = uuid::Uuid::new_v4().simple().to_string();
    (
        format!("it-{id}-machine-events"),
        format!("it-{id}-incidents"),
    )
}

/// Creates `topic` with `partitions` partitions on the test broker.
pub async fn create_topic(topic: &str, partitions: i32) -> anyhow::Result<()> {
    let brokers = kafka_brokers()?;
    tokio::time::timeout(
        Duration::from_secs(20),
        ingest::app::ensure_topic(&brokers, topic, partitions),
    )
    .await
    .with_context(|| {
        format!("the broker at {brokers} (TEST_KAFKA_BROKERS) did not answer within 20s")
    })?
    .with_context(|| format!("creating topic {topic} on {brokers}"))
}

/// Registers a machine in the registry table.
pub async fn register_machine(
    pool: &MySqlPool,
    name: &str,
    url: &str,
    interval_ms: Option<u64>,
) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO machines (name, url, enabled, interval_ms, labels, created_at, updated_at) \
         VALUES (?, ?, TRUE, ?, '{}', UTC_TIMESTAMP(3), UTC_TIMESTAMP(3))",
    )
    .bind(name)
    .bind(url)
    .bind(interval_ms.map(|v| v as i64))
    .execute(pool)
    .await?;
    Ok(())
}

/// Polls `check` every 100 ms until it returns `Some`, or fails after `timeout` with `what`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last_err = None;
    loop {
        match check().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_err = Some(e),
        }
        if tokio::time::Instant::now() > deadline {
            match last_err {
                Some(e) => {
                    bail!("timed out after {timeout:?} waiting for {what}; last error: {e:#}")
                }
                None => bail!("timed out after {timeout:?} waiting for {what}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Records an open cpu incident of `machine` (or bumps its peak) and a change-feed
/// row for it, exactly as the processor writes them: what the API and the
/// dashboard then see.
pub async fn record_incident_change(
    pool: &MySqlPool,
    id: &str,
    machine: &str,
) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO incidents (id, machine, rule, threshold, for_ms, started_at, opened_at, peak, last_value, last_breach_at) \
         VALUES (?, ?, 'cpu', 85, 0, UTC_TIMESTAMP(3), UTC_TIMESTAMP(3), 97, 97, UTC_TIMESTAMP(3)) ON DUPLICATE KEY UPDATE peak = peak + 1",
    )
    .bind(id)
    .bind(machine)
    .execute(pool)
    .await?;
    sqlx::query(
        "INSERT INTO incident_changes (incident_id, changed_at) VALUES (?, UTC_TIMESTAMP(3))",
    )
    .bind(id)
    .execute(pool)
    .await?;
    Ok(())
}
