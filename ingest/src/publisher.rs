//! Publishing events to the log. The scheduler hands envelopes to a bounded
//! channel (the seam: tests read the channel, production drains it into Kafka);
//! the publisher keeps many deliveries in flight and waits when librdkafka's queue
//! is full, which pushes back on the channel and so on the pollers.

use futures::stream::{FuturesUnordered, StreamExt};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use proto_events::Envelope;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Publisher metrics (Prometheus types; cheap to clone, shared inside).
#[derive(Debug, Default, Clone)]
pub struct PublisherStats {
    /// Events the broker acknowledged.
    pub delivered: Counter,
    /// Events that failed permanently (logged).
    pub failed: Counter,
    /// Events dropped because the buffer was full (oldest first, logged).
    pub dropped: Counter,
    /// Events buffered or in flight right now (the producer queue depth).
    pub buffered: Gauge,
}

/// An idempotent producer with `acks=all` that never gives up on a message by
/// itself (`message.timeout.ms=0`): a broker outage delays events, it does not drop them.
pub fn build_producer(brokers: &str) -> Result<FutureProducer, KafkaError> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "0")
        .set("queue.buffering.max.messages", "100000")
        .create()
}

/// Drains `rx` into `topic` until the channel closes and everything is delivered.
///
/// Events wait in a bounded buffer (`buffer_events`) while librdkafka's own queue
/// is full, e.g. during a broker outage; the channel is always drained, so pollers
/// never block on a slow broker. When the buffer is full the *oldest* event is
/// dropped, counted in `dropped` and logged.
pub async fn run_publisher(
    producer: FutureProducer,
    topic: String,
    mut rx: mpsc::Receiver<Envelope>,
    stats: Arc<PublisherStats>,
    buffer_events: usize,
) {
    const MAX_IN_FLIGHT: usize = 50_000;
    let mut in_flight = FuturesUnordered::new();
    let mut buffer: VecDeque<Envelope> = VecDeque::new();
    let mut open = true;
    let mut queue_full = false;
    while open || !buffer.is_empty() || !in_flight.is_empty() {
        // Hand buffered events to librdkafka while it takes them.
        while !queue_full && in_flight.len() < MAX_IN_FLIGHT {
            let Some(env) = buffer.front() else { break };
            let payload = env.encode();
            let record = FutureRecord::to(&topic)
                .key(proto_events::topics::machine_key(&env.machine))
                .payload(&payload);
            match producer.send_result(record) {
                Ok(delivery) => {
                    in_flight.push(delivery);
                    buffer.pop_front();
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    queue_full = true
                }
                Err((e, _)) => {
                    stats.failed.inc();
                    tracing::error!(error = %e, machine = %env.machine, event_id = %env.event_id, "event could not be queued");
                    buffer.pop_front();
                }
            }
        }
        stats.buffered.set((buffer.len() + in_flight.len()) as i64);
        tokio::select! {
            next = rx.recv(), if open => match next {
                Some(env) => {
                    buffer.push_back(env);
                    if buffer.len() > buffer_events {
                        if let Some(old) = buffer.pop_front() {
                            let dropped = stats.dropped.inc() + 1;
                            if dropped.is_power_of_two() || dropped % 10_000 == 0 {
                                tracing::warn!(dropped, machine = %old.machine, at = %old.at, "publish buffer full: oldest events dropped");
                            }
                        }
                    }
                }
                None => open = false,
            },
            _ = tokio::time::sleep(Duration::from_millis(10)), if queue_full => queue_full = false,
            Some(result) = in_flight.next(), if !in_flight.is_empty() => {
                queue_full = false;
                match result {
                    Ok(Ok(_)) => { stats.delivered.inc(); }
                    Ok(Err((e, _))) => {
                        stats.failed.inc();
                        tracing::error!(error = %e, "event delivery failed");
                    }
                    Err(_canceled) => {
                        stats.failed.inc();
                        tracing::error!("event delivery canceled (producer shut down)");
                    }
                }
            }
        }
    }
    stats.buffered.set(0);
    if let Err(e) = producer.flush(Duration::from_secs(10)) {
        tracing::warn!(error = %e, "producer flush incomplete");
    }
}

/// Drains the scheduler's channel into the embedded event log, in batches of
/// whatever has arrived (up to 1,000). A failed append is retried with backoff,
/// holding the batch; meanwhile the bounded channel pushes back on the pollers.
pub async fn run_embedded_publisher(
    log: storage::log::EventLog,
    mut rx: mpsc::Receiver<Envelope>,
    stats: Arc<PublisherStats>,
) {
    let mut batch: Vec<Envelope> = Vec::with_capacity(1_000);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < 1_000 {
            match rx.try_recv() {
                Ok(env) => batch.push(env),
                Err(_) => break,
            }
        }
        stats.buffered.set(batch.len() as i64);
        let mut backoff = Duration::from_millis(50);
        loop {
            match log.append(&batch).await {
                Ok(_) => {
                    stats.delivered.inc_by(batch.len() as u64);
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, events = batch.len(), retry_in = ?backoff, "appending to the event log failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
        batch.clear();
        stats.buffered.set(0);
    }
}
