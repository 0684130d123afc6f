//! The incident change feed behind `GET /api/incidents/changes`: one watcher per
//! API instance polls the feed's head (`MAX(seq)`, every 200 ms, only while
//! someone waits) and wakes every waiting long-poll through a `watch` channel, so
//! 5,000 waiters cost one query per tick, not 5,000. Waiters are bounded.

use prometheus_client::metrics::gauge::Gauge;
use std::sync::Arc;
use std::time::Duration;
use storage::{on, Db};
use tokio::sync::{watch, Notify};

/// Shared by all long-polls of one instance.
#[derive(Clone)]
pub struct ChangeWatcher {
    head: watch::Receiver<i64>,
    /// Long-polls waiting now: the bound's counter and the exported metric at once.
    waiters: Gauge,
    wake_poller: Arc<Notify>,
    /// Most long-polls waiting at once; more get 503.
    pub max_waiters: usize,
    shutdown: watch::Receiver<bool>,
}

/// A slot among the bounded waiters, released on drop.
pub struct WaiterSlot(Gauge);

impl Drop for WaiterSlot {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl ChangeWatcher {
    /// Starts the polling task; it ends when `shutdown` turns true. `waiters` is
    /// the gauge exported as the number of waiting long-polls.
    pub fn start(
        db: Db,
        max_waiters: usize,
        shutdown: watch::Receiver<bool>,
        waiters: Gauge,
    ) -> Self {
        let (tx, head) = watch::channel(0i64);
        let wake_poller = Arc::new(Notify::new());
        let (w, n, mut stop) = (waiters.clone(), wake_poller.clone(), shutdown.clone());
        tokio::spawn(async move {
            loop {
                if *stop.borrow() {
                    return;
                }
                if w.get() <= 0 {
                    tokio::select! {
                        _ = n.notified() => {}
                        _ = stop.changed() => return,
                    }
                }
                match on!(&db, |p| sqlx::query_scalar::<_, Option<i64>>(
                    "SELECT MAX(seq) FROM incident_changes"
                )
                .fetch_one(p)
                .await)
                {
                    Ok(v) => {
                        let v = v.unwrap_or(0);
                        tx.send_if_modified(|cur| {
                            let changed = *cur != v;
                            *cur = v;
                            changed
                        });
                    }
                    Err(e) => tracing::warn!(error = %e, "polling the change feed failed"),
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                    _ = stop.changed() => return,
                }
            }
        });
        ChangeWatcher {
            head,
            waiters,
            wake_poller,
            max_waiters,
            shutdown,
        }
    }

    /// Takes a waiter slot, or `None` when `max_waiters` are already waiting.
    pub fn enter(&self) -> Option<WaiterSlot> {
        let n = self.waiters.inc(); // the count before this waiter
        let slot = WaiterSlot(self.waiters.clone());
        if n >= self.max_waiters as i64 {
            return None;
        }
        if n == 0 {
            self.wake_poller.notify_one();
        }
        Some(slot)
    }

    /// Waits until the feed's head passes `after`, `timeout` elapses, or the
    /// server shuts down. Returns whether the head passed `after`.
    pub async fn wait_past(&self, after: i64, timeout: Duration) -> bool {
        let mut head = self.head.clone();
        let mut shutdown = self.shutdown.clone();
        let wait = async {
            loop {
                if *head.borrow_and_update() > after {
                    return true;
                }
                if head.changed().await.is_err() {
                    return false;
                }
            }
        };
        tokio::select! {
            passed = wait => passed,
            _ = tokio::time::sleep(timeout) => false,
            _ = shutdown.wait_for(|s| *s) => false,
        }
    }
}
