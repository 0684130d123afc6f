//! End-to-end processor throughput: events/s from a pre-filled topic into MySQL
//! (projections, fold state and offsets committed per batch), next to a bare
//! rdkafka consumer reading the same topic in the same run. Target: the processor
//! reaches ≥ 70% of the bare consumer's rate.
//!
//! Needs the services: `TEST_MYSQL_URL=mysql://root@127.0.0.1:3306
//! TEST_KAFKA_BROKERS=127.0.0.1:19092 cargo bench -p integration-tests --bench processor_throughput`
//! (`BENCH_EVENTS` sets the number of events, default 200,000).

use integration_tests::services::{create_topic, fresh_database, fresh_topics, kafka_brokers};
use integration_tests::spawn::spawn_processor;
use integration_tests::streams::{committed_total, fleet_stream, produce};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use std::time::{Duration, Instant};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    let events: usize = std::env::var("BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let machines = 2_000;
    let stream = fleet_stream(machines, events / machines);
    let n = stream.len();
    let db = fresh_database().await?;
    let (topic, incidents) = fresh_topics();
    create_topic(&topic, 6).await?;
    create_topic(&incidents, 6).await?;
    let brokers = kafka_brokers()?;
    let t = Instant::now();
    for chunk in stream.chunks(20_000) {
        produce(&brokers, &topic, chunk).await?;
    }
    println!("produced {n} events in {:.2?}", t.elapsed());

    // Bare consumer: decode nothing, write nothing.
    let bare: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", format!("bare-{}", db.name))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "10")
        .create()?;
    bare.subscribe(&[&topic])?;
    let first = tokio::time::timeout(Duration::from_secs(30), bare.recv()).await??;
    drop(first);
    let t = Instant::now();
    for _ in 1..n {
        tokio::time::timeout(Duration::from_secs(30), bare.recv()).await??;
    }
    let bare_secs = t.elapsed().as_secs_f64();
    let bare_rate = (n - 1) as f64 / bare_secs;
    println!(
        "bare consumer: {} events in {bare_secs:.2} s = {bare_rate:.0} events/s",
        n - 1
    );
    drop(bare);

    let group = format!("bench-{}", db.name);
    let t = Instant::now();
    let p = spawn_processor(
        &db.url,
        &topic,
        &incidents,
        &group,
        &[
            ("PROCESSOR_BATCH_MAX", "2000"),
            ("PROCESSOR_BATCH_LINGER", "50ms"),
        ],
    )
    .await?;
    // Time from the first committed batch, so group join time counts for neither side.
    let mut started: Option<Instant> = None;
    let mut first_committed = 0;
    loop {
        let done = committed_total(&db.pool, &group).await?;
        if started.is_none() && done > 0 {
            started = Some(Instant::now());
            first_committed = done;
        }
        if done as usize >= n {
            break;
        }
        anyhow::ensure!(
            t.elapsed() < Duration::from_secs(600),
            "processor did not finish in 10 minutes ({done} of {n})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let secs = started
        .map(|s| s.elapsed().as_secs_f64())
        .unwrap_or(f64::NAN);
    let rate = (n as i64 - first_committed) as f64 / secs;
    p.stop().await?;
    let incidents_count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM incidents")
        .fetch_one(&db.pool)
        .await?;
    println!("processor: {} events into MySQL in {secs:.2} s = {rate:.0} events/s ({incidents_count} incidents)", n as i64 - first_committed);
    println!(
        "processor / bare consumer = {:.0}%",
        100.0 * rate / bare_rate
    );

    // Backtest replay of the whole log (index seek, fold, no writes) next to the bare rate.
    let req = processor::replay::ReplayRequest {
        from: chrono::DateTime::from_timestamp(0, 0).unwrap_or_default(),
        to: chrono::Utc::now() + chrono::Duration::days(3650),
        machines: vec![],
        rules: proto_events::RuleSet::default(),
        lookback: Duration::from_secs(0),
        follow_rule_changes: true,
    };
    let t = Instant::now();
    let replayed = processor::replay::replay(&db.db, &brokers, &topic, &req).await?;
    let total_secs = t.elapsed().as_secs_f64();
    // Timed like the bare consumer: from the first event read to the last.
    let replay_secs = replayed.read_time.as_secs_f64();
    let replay_rate = (replayed.events_read.saturating_sub(1)) as f64 / replay_secs;
    println!(
        "log replay: {} events in {replay_secs:.2} s = {replay_rate:.0} events/s (decode + fold; {total_secs:.2} s in all with the group join, the index lookup and the final quiet wait; {} incidents, {} differences) = {:.0}% of the bare consumer",
        replayed.events_read,
        replayed.incidents.len(),
        replayed.differences.len(),
        100.0 * replay_rate / bare_rate
    );
    for d in replayed.differences.iter().take(3) {
        println!("difference: {d:?}");
    }
    Ok(())
}
