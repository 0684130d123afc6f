//! Ingest throughput: 10,000 fake machines served by a separate `fake-fleet`
//! process on loopback, polled by the real scheduler, HTTP client, parser and
//! Kafka publisher (to the test broker). Reports polls/s and this process's CPU
//! seconds per 10,000 polls (targets: ≥ 7,000 polls/s, ≤ 1 CPU-s per 10,000).
//!
//! `TEST_KAFKA_BROKERS=127.0.0.1:19092 cargo bench -p integration-tests --bench ingest_throughput`
//! (`BENCH_MACHINES`, `BENCH_SECONDS` to change the size; traffic stays on 127.0.0.1).

use ingest::poller::{build_client, PollLimits};
use ingest::publisher::{build_producer, run_publisher, PublisherStats};
use ingest::scheduler::{Anchor, HttpProber, PollContext, Scheduler, SchedulerStats, Target};
use integration_tests::fleet::{Behaviour, Scenario};
use integration_tests::services::{create_topic, fresh_topics, kafka_brokers};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// CPU seconds (user + system) this process has used, from /proc/self/stat.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(") ").map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0 // utime, stime (fields 14 and 15 of stat), 100 Hz
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    let machines: usize = std::env::var("BENCH_MACHINES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let seconds: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let mut scenario = Scenario::new();
    for i in 0..machines {
        scenario = scenario.machine(
            format!("m{i}"),
            Behaviour::Steady {
                cpu: 20.0 + (i % 50) as f64,
                mem: 40.0,
                disk: 50.0,
            },
        );
    }
    let dir = std::env::temp_dir().join(format!("ingest-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let scenario_file = dir.join("fleet.json");
    std::fs::write(&scenario_file, scenario.to_json_string()?)?;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.port()
    };
    let fleet_bin = std::env::var("FAKE_FLEET_BIN").unwrap_or_else(|_| {
        let exe = std::env::current_exe().unwrap_or_default();
        exe.parent()
            .and_then(|p| p.parent())
            .map(|p| p.join("fake-fleet").display().to_string())
            .unwrap_or_default()
    });
    let mut fleet = std::process::Command::new(&fleet_bin)
        .args(["--scenario", &scenario_file.display().to_string(), "--listen", &format!("127.0.0.1:{port}")])
        .stdout(std::process::Stdio::null())
        .spawn()
        .map_err(|e| anyhow::anyhow!("starting {fleet_bin} (build it with `cargo build --release -p fake-fleet --bin fake-fleet`): {e}"))?;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let (topic, _) = fresh_topics();
    create_topic(&topic, 6).await?;
    let producer = build_producer(&kafka_brokers()?)?;
    let (tx, rx) = tokio::sync::mpsc::channel(10_000);
    let pstats = Arc::new(PublisherStats::default());
    let publisher = tokio::spawn(run_publisher(producer, topic, rx, pstats.clone(), 200_000));
    let limits = PollLimits {
        connect_timeout: Duration::from_secs(2),
        total_timeout: Duration::from_secs(5),
        body_limit_bytes: 64 * 1024,
    };
    let stats = Arc::new(SchedulerStats::default());
    let mut scheduler = Scheduler::new(PollContext {
        prober: Arc::new(HttpProber {
            client: build_client(&limits)?,
            limits,
        }),
        events: tx,
        permits: Arc::new(tokio::sync::Semaphore::new(512)),
        anchor: Anchor::system(),
        stats: stats.clone(),
    });
    // Every machine polled once a second: 10,000 polls/s of demand.
    for i in 0..machines {
        scheduler.upsert(Target {
            name: format!("m{i}"),
            url: format!("http://127.0.0.1:{port}/machines/m{i}/status"),
            interval_ms: 1_000,
        });
    }
    // Warm up (connections, phases), then measure.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (p0, f0, d0, c0, t0) = (
        stats.polls.get(),
        stats.failures.get(),
        pstats.delivered.get(),
        cpu_seconds(),
        Instant::now(),
    );
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let (p1, f1, d1, c1, secs) = (
        stats.polls.get(),
        stats.failures.get(),
        pstats.delivered.get(),
        cpu_seconds(),
        t0.elapsed().as_secs_f64(),
    );
    let polls = (p1 - p0) as f64;
    println!(
        "ingest: {machines} machines, {secs:.1} s: {:.0} polls/s, {:.0} events delivered/s, {} failed polls, {:.2} CPU-s per 10,000 polls (ingest process; the fleet runs in its own process), skipped {}",
        polls / secs,
        (d1 - d0) as f64 / secs,
        f1 - f0,
        (c1 - c0) / polls * 10_000.0,
        stats.skipped.get()
    );
    scheduler.stop_all();
    drop(scheduler);
    let _ = tokio::time::timeout(Duration::from_secs(15), publisher).await;
    let _ = fleet.kill();
    Ok(())
}
