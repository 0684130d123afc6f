//! The ingest application: wires the registry, the scheduler and the publisher,
//! and runs until shutdown (stop polling, publish what is buffered, flush).

use crate::config::IngestConfig;
use crate::poller::{build_client, PollLimits};
use crate::publisher::{build_producer, run_publisher, PublisherStats};
use crate::registry::{load_machines, Registry};
use crate::scheduler::{Anchor, HttpProber, PollContext, Scheduler, SchedulerStats};
use anyhow::Context;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use sqlx::MySqlPool;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Semaphore};

/// Counters of a running ingest.
#[derive(Debug, Default, Clone)]
pub struct IngestStats {
    /// Scheduler counters.
    pub scheduler: Arc<SchedulerStats>,
    /// Publisher counters.
    pub publisher: Arc<PublisherStats>,
}

/// Creates the machine-event topic if it does not exist.
pub async fn ensure_topic(brokers: &str, topic: &str, partitions: i32) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    // Only create it when missing: asking a broker to create an existing topic is
    // not always harmless (with tansu it disturbs the consumer groups on it).
    if let Ok(md) = admin
        .inner()
        .fetch_metadata(Some(topic), Duration::from_secs(10))
    {
        if md
            .topics()
            .iter()
            .any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
        {
            return Ok(());
        }
    }
    let results = admin
        .create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await?;
    for r in results {
        match r {
            Ok(_) | Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => anyhow::bail!("creating topic {topic}: {code}"),
        }
    }
    Ok(())
}

/// Runs ingest until `shutdown` resolves.
pub async fn run(
    config: IngestConfig,
    pool: MySqlPool,
    stats: IngestStats,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let topic = config.topic.clone();
    ensure_topic(&config.kafka_brokers, &topic, config.partitions)
        .await
        .context("creating the machine-event topic")?;
    let producer = build_producer(&config.kafka_brokers).context("creating the Kafka producer")?;
    let (tx, rx) = mpsc::channel(10_000);
    let publisher = tokio::spawn(run_publisher(producer, topic, rx, stats.publisher.clone()));
    let limits = PollLimits {
        connect_timeout: config.connect_timeout,
        total_timeout: config.poll_timeout,
        body_limit_bytes: config.body_limit_bytes,
    };
    let anchor = Anchor::system();
    let mut scheduler = Scheduler::new(PollContext {
        prober: Arc::new(HttpProber {
            client: build_client(&limits).context("building the HTTP client")?,
            limits,
        }),
        events: tx.clone(),
        permits: Arc::new(Semaphore::new(config.concurrency)),
        anchor,
        stats: stats.scheduler.clone(),
    });
    let mut registry = Registry::new(
        config.shard,
        config.poll_interval.as_millis() as u64,
        anchor,
    );
    let mut refresh = tokio::time::interval(config.machines_refresh);
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = refresh.tick() => match load_machines(&pool).await {
                Ok(rows) => { registry.sync(rows, &mut scheduler, &tx).await; }
                Err(e) => tracing::warn!(error = %e, "reading the machine registry failed; keeping the current set"),
            },
        }
    }
    tracing::info!("stopping polls and flushing events");
    scheduler.stop_all();
    drop(scheduler);
    drop(tx);
    publisher.await.context("publisher task")?;
    Ok(())
}
