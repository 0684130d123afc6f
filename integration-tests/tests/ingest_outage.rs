//! A 30-second broker outage loses nothing: ingest keeps polling on schedule,
//! buffers the events while the broker is frozen (SIGSTOP; the memory engine would
//! not survive a restart), and delivers every one of them after SIGCONT. `/metrics`
//! shows the queue depth and the poll outcomes. The test runs its own tansu so the
//! freeze touches no other test.

use integration_tests::fleet::{Behaviour, Fleet, FleetClock, Scenario};
use integration_tests::services::{eventually, fresh_database, register_machine};
use integration_tests::spawn::spawn_ingest_with_stats;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::Message;
use std::collections::HashSet;
use std::time::Duration;

struct OwnBroker {
    child: std::process::Child,
    addr: String,
}

impl OwnBroker {
    async fn start() -> anyhow::Result<Self> {
        let bin = std::env::var("TANSU_BIN").unwrap_or_else(|_| "/usr/local/bin/tansu".to_owned());
        // A port below 32768 (outside the ephemeral range), free right now.
        let port = (0..200)
            .map(|i| 20_000 + (std::process::id() as u16 % 5_000) + i * 7)
            .find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
            .ok_or_else(|| anyhow::anyhow!("no free port below 32768"))?;
        let url = format!("tcp://127.0.0.1:{port}");
        let child = std::process::Command::new(&bin)
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url, "--storage-engine", "memory://tansu/"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| anyhow::anyhow!("the tansu broker ({bin}) is required by this test and could not start: {e}. Run .ci/run, which installs it, or set TANSU_BIN."))?;
        let addr = format!("127.0.0.1:{port}");
        let probe = addr.clone();
        eventually(
            Duration::from_secs(20),
            "the test's own tansu to answer",
            || {
                let probe = probe.clone();
                async move {
                    Ok(tokio::net::TcpStream::connect(&probe)
                        .await
                        .ok()
                        .map(|_| ()))
                }
            },
        )
        .await?;
        Ok(OwnBroker { child, addr })
    }

    fn signal(&self, sig: &str) -> anyhow::Result<()> {
        let status = std::process::Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()?;
        anyhow::ensure!(status.success(), "kill {sig} failed");
        Ok(())
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        let _ = self.signal("-CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_30_second_broker_outage_loses_no_event() -> anyhow::Result<()> {
    let broker = OwnBroker::start().await?;
    let mut scenario = Scenario::new();
    for i in 0..10 {
        scenario = scenario.machine(
            format!("m{i}"),
            Behaviour::Steady {
                cpu: 20.0,
                mem: 30.0,
                disk: 40.0,
            },
        );
    }
    scenario = scenario.machine("broken", Behaviour::HttpError { status: 503 });
    let fleet = Fleet::start_local(scenario, FleetClock::real(1.0)).await?;
    let db = fresh_database().await?;
    for name in fleet.names() {
        register_machine(&db.pool, &name, &fleet.url_of(&name), Some(250)).await?;
    }
    let topic = format!("outage-{}", uuid::Uuid::new_v4().simple());
    let (ingest, stats) = spawn_ingest_with_stats(
        &db.url,
        &topic,
        &[
            ("KAFKA_BROKERS", broker.addr.as_str()),
            ("MACHINES_REFRESH", "200ms"),
        ],
    )
    .await?;
    eventually(
        Duration::from_secs(30),
        "first events delivered",
        || async { Ok((stats.publisher.delivered.get() > 20).then_some(())) },
    )
    .await?;

    broker.signal("-STOP")?;
    let polls_before = stats.scheduler.polls.get();
    tokio::time::sleep(Duration::from_secs(30)).await;
    let polled_during = stats.scheduler.polls.get() - polls_before;
    assert!(
        polled_during >= 11 * 100,
        "polling went on during the outage: only {polled_during} polls in 30 s"
    );
    assert!(
        stats.publisher.buffered.get() > 100,
        "events wait in the buffer: depth {}",
        stats.publisher.buffered.get()
    );

    // /metrics tells the story while the broker is down.
    let addr = stats
        .metrics_addr
        .get()
        .copied()
        .ok_or_else(|| anyhow::anyhow!("metrics not bound"))?;
    let metrics = reqwest::get(format!("http://{addr}/metrics"))
        .await?
        .text()
        .await?;
    for needle in [
        "ingest_producer_queue_depth",
        "ingest_events_dropped_total 0",
        "ingest_polls_by_outcome_total{outcome=\"sampled\",reason=\"\"}",
        "ingest_polls_by_outcome_total{outcome=\"failed\",reason=\"http_status\"}",
        "ingest_poll_latency_seconds_bucket",
        "ingest_schedule_lag_seconds_count",
    ] {
        assert!(
            metrics.contains(needle),
            "/metrics lacks {needle}:\n{metrics}"
        );
    }

    broker.signal("-CONT")?;
    ingest.stop().await?; // stops polling, flushes the buffer
    let polls = stats.scheduler.polls.get();
    assert_eq!(stats.publisher.dropped.get(), 0);
    assert_eq!(stats.publisher.failed.get(), 0);

    // Every poll is in the log exactly once (by event id).
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .set("group.id", format!("{topic}-check"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "10")
        .create()?;
    consumer.subscribe(&[&topic])?;
    let mut ids = HashSet::new();
    let mut poll_events = 0u64;
    while poll_events < polls {
        let m = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
            .await
            .map_err(|_| {
                anyhow::anyhow!("only {poll_events} of {polls} poll events are in the log")
            })??;
        let env = proto_events::Envelope::decode(m.payload().unwrap_or_default())?;
        if matches!(
            env.event,
            proto_events::Event::MetricSampled(_) | proto_events::Event::PollFailed(_)
        ) {
            assert!(ids.insert(env.event_id), "event {} twice", env.event_id);
            poll_events += 1;
        }
    }
    fleet.shutdown().await;
    Ok(())
}
