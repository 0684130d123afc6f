//! The log-independent core of the processor: per-partition fold state loaded from
//! the store, messages folded into a batch, and the batch committed with its log
//! positions. The Kafka consumer ([`crate::service`]) and the embedded-log reader
//! ([`crate::embedded`]) both drive it, so the fold, the projections and the
//! exactly-once commit are the same code in both modes.

use crate::fold::{Applied, Fold};
use crate::service::ProcessorStats;
use crate::store::{Batch, CommitError, PartitionBatch, Store};
use proto_events::{Envelope, Event, RuleSet};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// Where one partition stands in this process.
pub struct PartitionState {
    /// The fold of the partition's machines.
    pub fold: Fold,
    /// Next offset to fold.
    pub next_offset: i64,
    /// Offset committed in the store (what the next commit is fenced on).
    pub committed: Option<i64>,
}

/// Folds messages of the partitions this process owns and commits them.
pub struct Folder {
    /// Default rules (before any `RulesChanged`).
    pub rules: RuleSet,
    /// The projection store.
    pub store: Store,
    /// Counters.
    pub stats: Arc<ProcessorStats>,
    /// Loaded partitions.
    pub parts: HashMap<i32, PartitionState>,
    /// Notified after a commit that produced incident events.
    pub committed_incidents: Arc<Notify>,
}

impl Folder {
    /// A folder with nothing loaded.
    pub fn new(rules: RuleSet, store: Store, stats: Arc<ProcessorStats>) -> Self {
        Folder {
            rules,
            store,
            stats,
            parts: HashMap::new(),
            committed_incidents: Arc::new(Notify::new()),
        }
    }

    /// Loads a partition's committed position and fold state (retrying while the
    /// store is down); `first_offset` is used when nothing was ever committed.
    pub async fn load(&mut self, partition: i32, first_offset: i64) -> &mut PartitionState {
        if !self.parts.contains_key(&partition) {
            let pos = loop {
                match self.store.load_partition(partition).await {
                    Ok(pos) => break pos,
                    Err(e) => {
                        tracing::warn!(partition, error = %e, "loading partition state failed; retrying");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            };
            let mut fold = Fold::new(self.rules);
            if let Some(rules) = pos.rules {
                fold.restore_rules_timeline(rules.with_initial(self.rules));
            }
            for (machine, state) in pos.machines {
                fold.restore_machine_state(machine, state);
            }
            tracing::info!(partition, committed = ?pos.next_offset, "partition loaded");
            self.parts.insert(
                partition,
                PartitionState {
                    fold,
                    next_offset: pos.next_offset.unwrap_or(first_offset),
                    committed: pos.next_offset,
                },
            );
        }
        self.parts
            .get_mut(&partition)
            .unwrap_or_else(|| unreachable!("inserted above"))
    }

    /// Folds the message at `offset`, which must be the partition's next offset
    /// (the caller checked), into `batch`.
    pub fn fold(&mut self, partition: i32, offset: i64, payload: &[u8], batch: &mut Batch) {
        let Some(state) = self.parts.get_mut(&partition) else {
            return;
        };
        state.next_offset = offset + 1;
        let entry = batch
            .partitions
            .entry(partition)
            .or_insert_with(|| PartitionBatch {
                expected_offset: state.committed,
                ..PartitionBatch::default()
            });
        entry.next_offset = offset + 1;
        match Envelope::decode(payload) {
            Err(e) => {
                self.stats.undecodable.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(partition, offset, error = %e, "undecodable message skipped");
            }
            Ok(env) => {
                let hour = env.at.timestamp_millis().div_euclid(3_600_000) * 3_600_000;
                entry.time_index.entry(hour).or_insert(offset);
                let before = batch.incident_events.len();
                match state.fold.apply(&env, &mut batch.incident_events) {
                    Applied::Folded => {
                        self.stats.events_folded.fetch_add(1, Ordering::Relaxed);
                        if !env.machine.is_empty() {
                            entry.touched.insert(env.machine.clone());
                        }
                        if matches!(env.event, Event::MetricSampled(_) | Event::PollFailed(_)) {
                            batch.polls.push(env);
                        }
                    }
                    Applied::DiscardedDuplicate | Applied::DiscardedOutOfOrder => {
                        self.stats.discarded.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(partition, offset, machine = %env.machine, "poll discarded (order/duplicate)");
                    }
                    Applied::IgnoredInactiveMachine | Applied::Ignored => {}
                }
                let emitted = batch.incident_events.len() - before;
                self.stats
                    .incident_events
                    .fetch_add(emitted as u64, Ordering::Relaxed);
            }
        }
    }

    /// Commits the batch, retrying store failures with backoff. A fenced commit
    /// drops the batch and every partition's state: they reload from the store.
    pub async fn flush(&mut self, batch: &mut Batch) {
        if batch.is_empty() {
            return;
        }
        for (partition, p) in batch.partitions.iter_mut() {
            if let Some(state) = self.parts.get(partition) {
                p.rules = Some(state.fold.rules_timeline().clone());
                for machine in p.touched.drain() {
                    if let Some(s) = state.fold.machine_state(&machine) {
                        p.machine_states.insert(machine, s.clone());
                    }
                }
            }
        }
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.store.commit(batch).await {
                Ok(()) => {
                    self.stats.batches.fetch_add(1, Ordering::Relaxed);
                    for (partition, p) in &batch.partitions {
                        if let Some(state) = self.parts.get_mut(partition) {
                            state.committed = Some(p.next_offset);
                        }
                    }
                    if !batch.incident_events.is_empty() {
                        self.committed_incidents.notify_one();
                    }
                    break;
                }
                Err(CommitError::Fenced(f)) => {
                    self.stats.fenced.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%f, "commit fenced; reloading partitions from the store");
                    self.parts.clear();
                    break;
                }
                Err(CommitError::Db(e)) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "commit failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        *batch = Batch::default();
    }
}
