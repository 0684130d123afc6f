//! Publishing events to the log. The scheduler hands envelopes to a bounded
//! channel (the seam: tests read the channel, production drains it into Kafka);
//! the publisher keeps many deliveries in flight and waits when librdkafka's queue
//! is full, which pushes back on the channel and so on the pollers.

use futures::stream::{FuturesUnordered, StreamExt};
use proto_events::{Envelope, Event};
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Publisher counters.
#[derive(Debug, Default)]
pub struct PublisherStats {
    /// Events the broker acknowledged.
    pub delivered: AtomicU64,
    /// Events that failed permanently (logged).
    pub failed: AtomicU64,
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
        .set("queue.buffering.max.messages", "200000")
        .create()
}

/// The partition key of an event: its machine. `RulesChanged` (no machine) is not
/// published by ingest.
fn key(env: &Envelope) -> &str {
    match &env.event {
        Event::RulesChanged(_) => "",
        _ => &env.machine,
    }
}

/// Drains `rx` into `topic` until the channel closes, then waits for every
/// outstanding delivery and flushes.
pub async fn run_publisher(
    producer: FutureProducer,
    topic: String,
    mut rx: mpsc::Receiver<Envelope>,
    stats: Arc<PublisherStats>,
) {
    const MAX_IN_FLIGHT: usize = 50_000;
    let mut in_flight = FuturesUnordered::new();
    let mut open = true;
    while open || !in_flight.is_empty() {
        tokio::select! {
            next = rx.recv(), if open && in_flight.len() < MAX_IN_FLIGHT => {
                let Some(env) = next else { open = false; continue };
                let payload = env.encode();
                loop {
                    let record = FutureRecord::to(&topic).key(key(&env)).payload(&payload);
                    match producer.send_result(record) {
                        Ok(delivery) => {
                            in_flight.push(delivery);
                            break;
                        }
                        Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                        Err((e, _)) => {
                            stats.failed.fetch_add(1, Ordering::Relaxed);
                            tracing::error!(error = %e, machine = %env.machine, event_id = %env.event_id, "event could not be queued");
                            break;
                        }
                    }
                }
            }
            Some(result) = in_flight.next(), if !in_flight.is_empty() => {
                match result {
                    Ok(Ok(_)) => { stats.delivered.fetch_add(1, Ordering::Relaxed); }
                    Ok(Err((e, _))) => {
                        stats.failed.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(error = %e, "event delivery failed");
                    }
                    Err(_canceled) => {
                        stats.failed.fetch_add(1, Ordering::Relaxed);
                        tracing::error!("event delivery canceled (producer shut down)");
                    }
                }
            }
        }
    }
    if let Err(e) = producer.flush(Duration::from_secs(10)) {
        tracing::warn!(error = %e, "producer flush incomplete");
    }
}
