//! A running ingest follows the registry in MariaDB without a restart: a machine
//! added is polled within seconds (`MachineRegistered` first), one removed stops
//! being polled (`MachineRemoved`), over the fake fleet and the real broker.

use integration_tests::fleet::{Behaviour, Fleet, FleetClock, Scenario};
use integration_tests::services::{
    create_topic, eventually, fresh_database, fresh_topics, kafka_brokers, register_machine,
};
use integration_tests::spawn::spawn_ingest;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::Message;
use std::time::Duration;

/// Reads the whole topic: waits up to 30 s for the first message, then stops after
/// 3 s without one.
async fn all_events(consumer: &StreamConsumer) -> Vec<proto_events::Envelope> {
    let mut out = vec![];
    let mut wait = Duration::from_secs(30);
    while let Ok(Ok(m)) = tokio::time::timeout(wait, consumer.recv()).await {
        if let Ok(env) = proto_events::Envelope::decode(m.payload().unwrap_or_default()) {
            out.push(env);
        }
        wait = Duration::from_secs(3);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn machines_added_and_removed_while_running() -> anyhow::Result<()> {
    let fleet = Fleet::start_local(
        Scenario::new()
            .machine(
                "first",
                Behaviour::Steady {
                    cpu: 10.0,
                    mem: 10.0,
                    disk: 10.0,
                },
            )
            .machine(
                "late",
                Behaviour::Steady {
                    cpu: 20.0,
                    mem: 20.0,
                    disk: 20.0,
                },
            ),
        FleetClock::real(1.0),
    )
    .await?;
    let db = fresh_database().await?;
    let (topic, _) = fresh_topics();
    create_topic(&topic, 2).await?;
    register_machine(&db.pool, "first", &fleet.url_of("first"), Some(300)).await?;
    let ingest = spawn_ingest(&db.url, &topic, &[("MACHINES_REFRESH", "200ms")]).await?;
    eventually(
        Duration::from_secs(30),
        "ingest polling the first machine",
        || async { Ok((fleet.request_count("first") > 2).then_some(())) },
    )
    .await?;

    // Added at run time: registered, then polled, within seconds.
    register_machine(&db.pool, "late", &fleet.url_of("late"), Some(300)).await?;
    eventually(
        Duration::from_secs(10),
        "the late machine being polled",
        || async { Ok((fleet.request_count("late") > 2).then_some(())) },
    )
    .await?;

    // Removed at run time: announced, and polling stops.
    sqlx::query("DELETE FROM machines WHERE name = 'late'")
        .execute(&db.pool)
        .await?;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let after_removal = fleet.request_count("late");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        fleet.request_count("late") <= after_removal + 1,
        "the removed machine is still being polled"
    );
    ingest.stop().await?;

    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka_brokers()?)
        .set("group.id", format!("{topic}-check"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "10")
        .create()?;
    consumer.subscribe(&[&topic])?;
    let events = all_events(&consumer).await;
    let late: Vec<&str> = events
        .iter()
        .filter(|e| e.machine == "late")
        .map(|e| e.event.type_name())
        .collect();
    assert_eq!(late.first(), Some(&"MachineRegistered"), "{late:?}");
    assert_eq!(late.last(), Some(&"MachineRemoved"), "{late:?}");
    assert!(
        late.iter().filter(|t| **t == "MetricSampled").count() >= 2,
        "{late:?}"
    );
    let first: Vec<&str> = events
        .iter()
        .filter(|e| e.machine == "first")
        .map(|e| e.event.type_name())
        .collect();
    assert_eq!(first.first(), Some(&"MachineRegistered"));
    assert!(!first.contains(&"MachineRemoved"));
    fleet.shutdown().await;
    Ok(())
}
