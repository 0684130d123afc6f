//! A live run for backtest tests: a fake-fleet scenario polled by ingest into a
//! fresh topic, folded by a processor into a fresh database, until incidents of
//! enough rules are recorded. Ingest is then stopped and the processor has folded
//! the tail of the log; it keeps running (backtest jobs need it).

use crate::fleet::{Fleet, FleetClock, FleetHandle, Scenario};
use crate::services::{
    create_topic, eventually, fresh_database, fresh_topics, register_machine, TestDatabase,
};
use crate::spawn::{spawn_ingest, spawn_processor, Spawned};
use chrono::{DateTime, Utc};
use std::time::Duration;

/// What a live run leaves behind.
pub struct LiveRun {
    /// The fake fleet (still serving).
    pub fleet: FleetHandle,
    /// The database the processor wrote.
    pub db: TestDatabase,
    /// The machine-event topic.
    pub topic: String,
    /// The processor, still running.
    pub processor: Spawned,
    /// When the processor started (before the first event).
    pub started: DateTime<Utc>,
}

/// Runs `scenario` (machines polled every 400 ms) with processor settings
/// `rules` until incidents of at least `min_rules` distinct rules are recorded.
pub async fn record_live_run(
    scenario: Scenario,
    rules: &[(&str, &str)],
    min_rules: usize,
) -> anyhow::Result<LiveRun> {
    let fleet = Fleet::start_local(scenario, FleetClock::real(1.0)).await?;
    let db = fresh_database().await?;
    let (topic, incidents_topic) = fresh_topics();
    create_topic(&topic, 2).await?;
    create_topic(&incidents_topic, 2).await?;
    for name in fleet.names() {
        register_machine(&db.pool, &name, &fleet.url_of(&name), Some(400)).await?;
    }
    let started = Utc::now();
    let processor = spawn_processor(
        &db.url,
        &topic,
        &incidents_topic,
        &format!("g-{}", db.name),
        rules,
    )
    .await?;
    let ingest = spawn_ingest(&db.url, &topic, &[("MACHINES_REFRESH", "200ms")]).await?;
    eventually(
        Duration::from_secs(60),
        &format!("incidents of {min_rules} rules recorded"),
        || async {
            let recorded: Vec<String> = sqlx::query_scalar("SELECT DISTINCT rule FROM incidents")
                .fetch_all(&db.pool)
                .await?;
            anyhow::ensure!(
                recorded.len() >= min_rules,
                "rules recorded so far: {recorded:?}"
            );
            Ok(Some(()))
        },
    )
    .await?;
    ingest.stop().await?;
    // Let the processor fold the tail of the log.
    tokio::time::sleep(Duration::from_secs(3)).await;
    Ok(LiveRun {
        fleet,
        db,
        topic,
        processor,
        started,
    })
}
