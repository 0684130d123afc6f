//! The processor in one-process mode: reads the embedded event log (an append-only
//! SQLite table, one partition) instead of Kafka and commits through the same
//! [`Folder`] and store, so the log position is committed in the same SQLite
//! transaction as the projections it produced (exactly once, restart-safe).
//! Incident events are not put in an outbox: there is no incident topic.

use crate::folder::Folder;
use crate::jobs::JobRunner;
use crate::replay::LogSource;
use crate::service::ProcessorStats;
use crate::store::{Batch, Store};
use proto_events::RuleSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use storage::log::{EventLog, PARTITION, TOPIC};
use storage::Db;

/// The embedded processor's consumer-group name in `processor_offsets`.
pub const GROUP: &str = "embedded-processor";

/// Folds the embedded log into the projections.
pub struct EmbeddedProcessor {
    folder: Folder,
    log: EventLog,
    batch_max: u32,
    backtest_lookback: Duration,
}

impl EmbeddedProcessor {
    /// A processor over `log`, writing to `db` (the same SQLite file).
    pub fn new(rules: RuleSet, db: Db, log: EventLog, batch_max: u32) -> Self {
        let store = Store::new(db, GROUP, TOPIC).without_outbox();
        EmbeddedProcessor {
            folder: Folder::new(rules, store, Arc::new(ProcessorStats::default())),
            log,
            batch_max: batch_max.max(1),
            backtest_lookback: Duration::from_secs(6 * 3600),
        }
    }

    /// How far before a requested backtest's range replays start reading.
    pub fn with_backtest_lookback(mut self, lookback: Duration) -> Self {
        self.backtest_lookback = lookback;
        self
    }

    /// The counters.
    pub fn stats(&self) -> Arc<ProcessorStats> {
        self.folder.stats.clone()
    }

    /// Folds until `shutdown` resolves; also runs requested backtests.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let (stop_jobs, jobs_stopped) = tokio::sync::watch::channel(false);
        let jobs = tokio::spawn(
            JobRunner {
                db: self.folder.store.db().clone(),
                log: LogSource::Embedded(self.log.clone()),
                worker: format!("{GROUP}/{}", uuid::Uuid::new_v4().simple()),
                lookback: self.backtest_lookback,
            }
            .run(jobs_stopped),
        );
        let mut appended = self.log.subscribe();
        tokio::pin!(shutdown);
        loop {
            let next = self.folder.load(PARTITION, 0).await.next_offset;
            let page = tokio::select! {
                _ = &mut shutdown => break,
                page = self.log.read(next, self.batch_max) => page,
            };
            let page = match page {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(error = %e, "reading the event log failed; retrying");
                    tokio::select! {
                        _ = &mut shutdown => break,
                        _ = tokio::time::sleep(Duration::from_millis(500)) => continue,
                    }
                }
            };
            if page.is_empty() {
                // Appends in this process wake us at once; the timeout covers any other.
                tokio::select! {
                    _ = &mut shutdown => break,
                    _ = appended.changed() => {}
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
                continue;
            }
            let mut batch = Batch::default();
            for (offset, payload) in &page {
                self.folder.fold(PARTITION, *offset, payload, &mut batch);
            }
            self.folder.flush(&mut batch).await;
        }
        let _ = stop_jobs.send(true);
        let _ = jobs.await;
        Ok(())
    }
}
