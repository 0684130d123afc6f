//! The processor service: a consumer-group member that folds the machine-event log
//! into incidents and commits projections, fold state and log positions to MySQL in
//! one transaction per batch.
//!
//! Exactly once without Kafka transactions: MySQL is the source of truth for where
//! each partition stands. When a partition's first message arrives, the processor
//! loads its committed offset and fold state; if the broker handed it a different
//! offset, it seeks. Every commit is fenced on the offset it expects to replace, so
//! an instance that lost a partition in a rebalance cannot commit stale work.
//! Incident events go to an outbox in the same transaction and are published after
//! it, with deterministic ids, so a crash re-emits the same events rather than
//! losing them.

use crate::config::ProcessorConfig;
use crate::folder::Folder;
use crate::store::{Batch, Store};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{
    BaseConsumer, Consumer, ConsumerContext, RebalanceProtocol, StreamConsumer,
};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use storage::Db;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Counters the service exposes.
#[derive(Debug, Default)]
pub struct ProcessorStats {
    /// Messages consumed and folded.
    pub events_folded: AtomicU64,
    /// Messages that could not be decoded (skipped, logged with their offset).
    pub undecodable: AtomicU64,
    /// Polls discarded as out of order or duplicate.
    pub discarded: AtomicU64,
    /// Batches committed.
    pub batches: AtomicU64,
    /// Incident events emitted.
    pub incident_events: AtomicU64,
    /// Commits refused because another instance owned the partition.
    pub fenced: AtomicU64,
    /// Partitions currently assigned to this instance.
    pub partitions_assigned: AtomicU64,
}

/// The consumer's context: positions assigned partitions from MySQL (the broker's
/// committed offsets are never trusted), and flags every rebalance so the loop
/// drops uncommitted work.
struct GroupContext {
    changed: AtomicBool,
    stats: Arc<ProcessorStats>,
    store: Store,
    runtime: tokio::runtime::Handle,
}

impl GroupContext {
    /// MySQL's committed positions, read from inside the rebalance callback. The
    /// callback runs on the thread that polls the consumer, inside the runtime, so
    /// the read is wrapped in `block_in_place` (multi-threaded runtime only). If it
    /// cannot be done here, `None`: the loop then corrects positions lazily.
    fn committed_positions(&self) -> Option<HashMap<i32, i64>> {
        let read = || self.runtime.block_on(self.store.committed_offsets());
        let result = match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(read)
            }
            Ok(_) => return None,
            Err(_) => read(),
        };
        match result {
            Ok(p) => Some(p),
            Err(e) => {
                tracing::warn!(error = %e, "reading committed offsets during rebalance failed; positions corrected lazily");
                None
            }
        }
    }
}

impl ClientContext for GroupContext {
    /// librdkafka's own log lines, through tracing (target `librdkafka`; set
    /// `KAFKA_DEBUG=cgrp,fetch` for its debug contexts).
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        use rdkafka::config::RDKafkaLogLevel::*;
        match level {
            Emerg | Alert | Critical | Error => {
                tracing::error!(target: "librdkafka", fac, "{log_message}")
            }
            Warning => tracing::warn!(target: "librdkafka", fac, "{log_message}"),
            Notice | Info => tracing::info!(target: "librdkafka", fac, "{log_message}"),
            Debug => tracing::debug!(target: "librdkafka", fac, "{log_message}"),
        }
    }
}

impl ConsumerContext for GroupContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        let result = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                if let Some(positions) = self.committed_positions() {
                    for (topic, partition) in tpl
                        .elements()
                        .iter()
                        .map(|e| (e.topic().to_owned(), e.partition()))
                        .collect::<Vec<_>>()
                    {
                        let offset = positions
                            .get(&partition)
                            .map_or(Offset::Beginning, |o| Offset::Offset(*o));
                        let _ = tpl.set_partition_offset(&topic, partition, offset);
                    }
                }
                tracing::info!(partitions = ?partition_ids(tpl), "partitions assigned");
                if cooperative {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                tracing::info!(partitions = ?partition_ids(tpl), "partitions revoked");
                if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                }
            }
            other => {
                tracing::warn!(error = ?other, "rebalance error; unassigning");
                consumer.unassign()
            }
        };
        if let Err(e) = result {
            tracing::error!(error = %e, "applying the rebalance failed");
        }
        let owned = consumer.assignment().map(|a| a.count()).unwrap_or(0);
        self.stats
            .partitions_assigned
            .store(owned as u64, Ordering::Relaxed);
        self.changed.store(true, Ordering::SeqCst);
    }
}

fn partition_ids(tpl: &TopicPartitionList) -> Vec<i32> {
    tpl.elements().iter().map(|e| e.partition()).collect()
}

/// Creates the topics if they do not exist (idempotent).
pub async fn ensure_topics(brokers: &str, topics: &[&str], partitions: i32) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    // Only create what is missing: asking a broker to create an existing topic is
    // not always harmless (with tansu it disturbs the consumer groups on it).
    let missing: Vec<&str> = topics
        .iter()
        .copied()
        .filter(|t| !topic_exists(&admin, t))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let new: Vec<NewTopic<'_>> = missing
        .iter()
        .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1)))
        .collect();
    let results = admin
        .create_topics(
            &new,
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

/// Whether the broker knows `topic` and it has partitions.
fn topic_exists(admin: &AdminClient<DefaultClientContext>, topic: &str) -> bool {
    match admin
        .inner()
        .fetch_metadata(Some(topic), Duration::from_secs(10))
    {
        Ok(md) => md
            .topics()
            .iter()
            .any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty()),
        Err(_) => false,
    }
}

/// The running processor.
pub struct Processor {
    config: ProcessorConfig,
    folder: Folder,
    consumer: Option<StreamConsumer<GroupContext>>,
    producer: FutureProducer,
}

impl Processor {
    /// Connects to the broker and subscribes; call [`Processor::run`] next.
    pub async fn build(config: ProcessorConfig, db: impl Into<Db>) -> anyhow::Result<Self> {
        let db: Db = db.into();
        ensure_topics(
            &config.kafka_brokers,
            &[&config.topic, &config.incident_topic],
            config.partitions,
        )
        .await?;
        let stats = Arc::new(ProcessorStats::default());
        let mut client_config = ClientConfig::new();
        if let Ok(debug) = std::env::var("KAFKA_DEBUG") {
            // librdkafka debug contexts (e.g. `cgrp,fetch`), logged through tracing.
            client_config
                .set("debug", debug)
                .set_log_level(rdkafka::config::RDKafkaLogLevel::Debug);
        }
        let consumer: StreamConsumer<GroupContext> = client_config
            .set("bootstrap.servers", &config.kafka_brokers)
            .set("group.id", &config.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", config.fetch_wait_max_ms.to_string())
            .set("session.timeout.ms", config.session_timeout_ms.to_string())
            .set(
                "heartbeat.interval.ms",
                (config.session_timeout_ms / 6).max(100).to_string(),
            )
            .set(
                "max.poll.interval.ms",
                config.max_poll_interval_ms.to_string(),
            )
            .create_with_context(GroupContext {
                changed: AtomicBool::new(false),
                stats: stats.clone(),
                store: Store::new(db.clone(), &config.group_id, &config.topic),
                runtime: tokio::runtime::Handle::current(),
            })?;
        consumer.subscribe(&[&config.topic])?;
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &config.kafka_brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("message.timeout.ms", "0")
            .create()?;
        let store = Store::new(db, &config.group_id, &config.topic);
        Ok(Processor {
            folder: Folder::new(config.rules, store, stats),
            config,
            consumer: Some(consumer),
            producer,
        })
    }

    /// The service's counters.
    pub fn stats(&self) -> Arc<ProcessorStats> {
        self.folder.stats.clone()
    }

    /// Consumes until `shutdown` resolves, then commits what it has and returns.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let outbox_task = tokio::spawn(publish_outbox(
            self.folder.store.clone(),
            self.producer.clone(),
            self.config.incident_topic.clone(),
            self.folder.committed_incidents.clone(),
        ));
        self.folder.committed_incidents.notify_one();
        let (stop_jobs, jobs_stopped) = tokio::sync::watch::channel(false);
        let jobs_task = tokio::spawn(
            crate::jobs::JobRunner {
                db: self.folder.store.db().clone(),
                log: crate::replay::LogSource::Kafka {
                    brokers: self.config.kafka_brokers.clone(),
                    topic: self.config.topic.clone(),
                },
                worker: format!("{}/{}", self.config.group_id, uuid::Uuid::new_v4().simple()),
                lookback: self.config.backtest_lookback,
            }
            .run(jobs_stopped),
        );
        tokio::pin!(shutdown);
        let Some(consumer) = self.consumer.take() else {
            anyhow::bail!("processor already ran")
        };
        let mut batch = Batch::default();
        let mut batch_len = 0usize;
        let mut batch_deadline: Option<Instant> = None;
        loop {
            let linger = async {
                match batch_deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = &mut shutdown => break,
                _ = linger => {
                    self.flush(&mut batch).await;
                    batch_len = 0;
                    batch_deadline = None;
                }
                msg = consumer.recv() => {
                    if consumer.context().changed.swap(false, Ordering::SeqCst) {
                        // Ownership may have changed: drop uncommitted work and reload
                        // every partition from MySQL when its next message arrives.
                        self.folder.parts.clear();
                        batch = Batch::default();
                        batch_len = 0;
                        batch_deadline = None;
                    }
                    let msg = match msg {
                        Ok(m) => m,
                        Err(e) => {
                            tracing::warn!(error = %e, "consumer error");
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            continue;
                        }
                    };
                    let (partition, offset) = (msg.partition(), msg.offset());
                    if self.handle(&consumer, partition, offset, msg.payload().unwrap_or_default(), &mut batch).await {
                        batch_len += 1;
                        batch_deadline.get_or_insert_with(|| Instant::now() + self.config.batch_linger);
                        if batch_len >= self.config.batch_max {
                            self.flush(&mut batch).await;
                            batch_len = 0;
                            batch_deadline = None;
                        }
                    }
                }
            }
        }
        self.flush(&mut batch).await;
        // Give the outbox a moment to publish what the last commit produced.
        self.folder.committed_incidents.notify_one();
        tokio::time::sleep(Duration::from_millis(50)).await;
        outbox_task.abort();
        let _ = stop_jobs.send(true);
        let _ = jobs_task.await;
        Ok(())
    }

    /// Folds one message into the batch. `false` when the message was skipped
    /// because it is not where the partition stands (before or after a seek).
    async fn handle(
        &mut self,
        consumer: &StreamConsumer<GroupContext>,
        partition: i32,
        offset: i64,
        payload: &[u8],
        batch: &mut Batch,
    ) -> bool {
        let next = self.folder.load(partition, offset).await.next_offset;
        if offset != next {
            if offset > next {
                // The broker is ahead of our committed position: rewind.
                let target = Offset::Offset(next);
                // Timeout zero: librdkafka starts the seek and returns at once (a
                // blocking seek would stall this worker thread and, with it, the
                // polling that drives rebalances).
                if let Err(e) = consumer.seek(&self.config.topic, partition, target, Duration::ZERO)
                {
                    tracing::warn!(partition, error = %e, "seek failed; reloading partition");
                    self.folder.parts.remove(&partition);
                }
            }
            // offset < next: already folded (delivered again after a seek); skip.
            return false;
        }
        self.folder.fold(partition, offset, payload, batch);
        true
    }

    async fn flush(&mut self, batch: &mut Batch) {
        self.folder.flush(batch).await;
    }
}

/// Publishes outbox entries in order, deleting them once the broker acknowledged them.
async fn publish_outbox(store: Store, producer: FutureProducer, topic: String, ready: Arc<Notify>) {
    loop {
        ready.notified().await;
        loop {
            let rows = match store.outbox(500).await {
                Ok(rows) => rows,
                Err(e) => {
                    tracing::warn!(error = %e, "reading outbox failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let Some(last) = rows.last().map(|r| r.0) else {
                break;
            };
            let sends = rows.iter().map(|(_, machine, payload)| {
                producer.send(
                    FutureRecord::to(&topic)
                        .key(machine.as_str())
                        .payload(payload.as_str()),
                    Duration::from_secs(30),
                )
            });
            let results = futures::future::join_all(sends).await;
            if let Some(Err((e, _))) = results.into_iter().find(|r| r.is_err()) {
                tracing::warn!(error = %e, "publishing incident events failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            if let Err(e) = store.outbox_done(last).await {
                tracing::warn!(error = %e, "clearing outbox failed");
            }
        }
    }
}
