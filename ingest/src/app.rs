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
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use storage::log::EventLog;
use storage::Db;
use tokio::sync::{mpsc, Semaphore};

/// Metrics of a running ingest.
#[derive(Debug, Default, Clone)]
pub struct IngestStats {
    /// Scheduler metrics.
    pub scheduler: Arc<SchedulerStats>,
    /// Publisher metrics.
    pub publisher: Arc<PublisherStats>,
    /// Where `/metrics` ended up listening (set once bound).
    pub metrics_addr: Arc<std::sync::OnceLock<std::net::SocketAddr>>,
}

#[poem::handler]
fn metrics_endpoint(stats: poem::web::Data<&IngestStats>) -> poem::Response {
    poem::Response::builder()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(crate::metrics::render(&stats))
}

#[poem::handler]
fn healthz() -> &'static str {
    "ok"
}

/// Serves `/metrics` and `/healthz` on `addr` until the task is aborted.
async fn serve_metrics(
    addr: std::net::SocketAddr,
    stats: IngestStats,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    use poem::EndpointExt;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding INGEST_METRICS_ADDR {addr}"))?;
    let bound = listener.local_addr()?;
    let _ = stats.metrics_addr.set(bound);
    tracing::info!(addr = %bound, "ingest metrics listening");
    let app = poem::Route::new()
        .at("/metrics", poem::get(metrics_endpoint))
        .at("/healthz", poem::get(healthz))
        .data(stats);
    let acceptor = poem::listener::TcpAcceptor::from_tokio(listener)?;
    Ok(tokio::spawn(async move {
        if let Err(e) = poem::Server::new_with_acceptor(acceptor).run(app).await {
            tracing::error!(error = %e, "metrics server stopped");
        }
    }))
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

/// Where ingest publishes its events.
#[derive(Debug, Clone)]
pub enum EventSink {
    /// The Kafka topic of the config (`KAFKA_BROKERS`).
    Kafka,
    /// The embedded log (one-process mode).
    Embedded(EventLog),
}

/// Runs ingest, publishing to Kafka, until `shutdown` resolves.
pub async fn run(
    config: IngestConfig,
    db: impl Into<Db>,
    stats: IngestStats,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    run_with(config, db.into(), EventSink::Kafka, stats, shutdown).await
}

/// Runs ingest, publishing to `sink`, until `shutdown` resolves.
pub async fn run_with(
    config: IngestConfig,
    db: Db,
    sink: EventSink,
    stats: IngestStats,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let metrics_server = serve_metrics(config.metrics_addr, stats.clone()).await?;
    let topic = config.topic.clone();
    let (tx, rx) = mpsc::channel(10_000);
    let publisher = match sink {
        EventSink::Kafka => {
            let brokers = config.kafka_brokers.clone().ok_or_else(|| {
                proto_events::settings::SettingError {
                    key: "KAFKA_BROKERS".into(),
                    message: "is required".into(),
                }
            })?;
            ensure_topic(&brokers, &topic, config.partitions)
                .await
                .context("creating the machine-event topic")?;
            let producer = build_producer(&brokers).context("creating the Kafka producer")?;
            tokio::spawn(run_publisher(
                producer,
                topic,
                rx,
                stats.publisher.clone(),
                config.buffer_events,
            ))
        }
        EventSink::Embedded(log) => tokio::spawn(crate::publisher::run_embedded_publisher(
            log,
            rx,
            stats.publisher.clone(),
        )),
    };
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
            _ = refresh.tick() => match load_machines(&db).await {
                Ok(rows) => { registry.sync(rows, &mut scheduler, &tx).await; }
                Err(e) => tracing::warn!(error = %e, "reading the machine registry failed; keeping the current set"),
            },
        }
    }
    tracing::info!("stopping polls and flushing events");
    metrics_server.abort();
    scheduler.stop_all();
    drop(scheduler);
    drop(tx);
    // Deliver what is buffered; a broker that stays down does not hold shutdown forever.
    match tokio::time::timeout(Duration::from_secs(30), publisher).await {
        Ok(joined) => joined.context("publisher task")?,
        Err(_) => tracing::error!(
            unpublished = stats.publisher.buffered.get(),
            "shutdown: the broker did not take the buffered events within 30s"
        ),
    }
    Ok(())
}
