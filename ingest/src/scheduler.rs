//! The poll scheduler: one task per machine that sleeps until the machine's next
//! grid instant, polls, and hands exactly one event to the publisher channel.
//!
//! - The event time is the grid instant, not the moment the request started.
//! - A machine never has two polls in flight: its task polls inline.
//! - A poll that cannot start within one interval (no concurrency permit) is
//!   skipped and counted, not queued up; so are grid instants missed while a slow
//!   poll was running.
//! - Wall time is derived from tokio's clock through an [`Anchor`], so tests can
//!   drive the schedule with a paused clock.

use crate::poller::{poll, PollLimits, PollOutcome};
use crate::schedule::Grid;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use proto_events::{Envelope, Event, MetricSampled, PollFailed, PollTiming};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use uuid::Uuid;

/// Maps tokio instants to wall-clock milliseconds: fixed at start, so the grid
/// never drifts relative to the monotonic clock.
#[derive(Debug, Clone, Copy)]
pub struct Anchor {
    instant: Instant,
    wall_ms: i64,
}

impl Anchor {
    /// Anchors `wall_ms` (milliseconds since the epoch) at tokio's now.
    pub fn new(wall_ms: i64) -> Self {
        Anchor {
            instant: Instant::now(),
            wall_ms,
        }
    }

    /// Anchors the system clock at tokio's now.
    pub fn system() -> Self {
        Anchor::new(chrono::Utc::now().timestamp_millis())
    }

    /// Wall-clock now, in milliseconds.
    pub fn now_ms(&self) -> i64 {
        self.wall_ms
            + Instant::now()
                .saturating_duration_since(self.instant)
                .as_millis() as i64
    }

    /// The tokio instant of wall time `t_ms`.
    pub fn instant_of(&self, t_ms: i64) -> Instant {
        let delta = t_ms - self.wall_ms;
        if delta >= 0 {
            self.instant + Duration::from_millis(delta as u64)
        } else {
            self.instant
        }
    }
}

/// Labels of the polls-by-outcome counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PollLabels {
    /// `sampled` or `failed`.
    pub outcome: String,
    /// The SPEC §1 reason code; empty for a sample.
    pub reason: String,
}

/// Scheduler metrics (Prometheus types; cheap to clone, shared inside).
#[derive(Debug, Clone)]
pub struct SchedulerStats {
    /// Polls started.
    pub polls: Counter,
    /// Polls that failed (any reason).
    pub failures: Counter,
    /// Grid instants skipped (no permit within one interval, or missed behind a slow poll).
    pub skipped: Counter,
    /// Polls by outcome and reason.
    pub polls_by_outcome: Family<PollLabels, Counter>,
    /// Poll latency, seconds.
    pub latency_seconds: Histogram,
    /// Schedule lag (start minus due), seconds.
    pub lag_seconds: Histogram,
}

impl Default for SchedulerStats {
    fn default() -> Self {
        SchedulerStats {
            polls: Counter::default(),
            failures: Counter::default(),
            skipped: Counter::default(),
            polls_by_outcome: Family::default(),
            latency_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
            lag_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
        }
    }
}

/// Polls one URL. The HTTP implementation is [`HttpProber`]; tests substitute
/// probes that answer in tokio time, so scheduling is tested with a paused clock.
pub trait Prober: Send + Sync + 'static {
    /// Polls `url` once.
    fn poll<'a>(&'a self, url: &'a str) -> Pin<Box<dyn Future<Output = PollOutcome> + Send + 'a>>;
}

/// The real prober: the shared pooled client and its limits.
pub struct HttpProber {
    /// The shared HTTP client.
    pub client: reqwest::Client,
    /// Its limits.
    pub limits: PollLimits,
}

impl Prober for HttpProber {
    fn poll<'a>(&'a self, url: &'a str) -> Pin<Box<dyn Future<Output = PollOutcome> + Send + 'a>> {
        Box::pin(poll(&self.client, url, &self.limits))
    }
}

/// What a machine task needs.
pub struct PollContext {
    /// Polls a URL.
    pub prober: Arc<dyn Prober>,
    /// Where events go.
    pub events: mpsc::Sender<Envelope>,
    /// Bounds polls in flight.
    pub permits: Arc<Semaphore>,
    /// Wall clock.
    pub anchor: Anchor,
    /// Counters.
    pub stats: Arc<SchedulerStats>,
}

/// A machine as the scheduler sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Name (the event key).
    pub name: String,
    /// Status URL.
    pub url: String,
    /// Poll interval.
    pub interval_ms: u64,
}

/// The running set of machine tasks.
pub struct Scheduler {
    ctx: Arc<PollContext>,
    tasks: HashMap<String, (Target, JoinHandle<()>)>,
}

impl Scheduler {
    /// An empty scheduler.
    pub fn new(ctx: PollContext) -> Self {
        Scheduler {
            ctx: Arc::new(ctx),
            tasks: HashMap::new(),
        }
    }

    /// Starts polling `target`, or restarts it if its URL or interval changed.
    pub fn upsert(&mut self, target: Target) {
        if let Some((current, _)) = self.tasks.get(&target.name) {
            if *current == target {
                return;
            }
        }
        self.remove(&target.name);
        let handle = tokio::spawn(machine_loop(target.clone(), self.ctx.clone()));
        self.tasks.insert(target.name.clone(), (target, handle));
    }

    /// Stops polling `name` (a poll in flight is abandoned).
    pub fn remove(&mut self, name: &str) {
        if let Some((_, handle)) = self.tasks.remove(name) {
            handle.abort();
        }
    }

    /// Names being polled.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tasks.keys().map(String::as_str)
    }

    /// Stops every task.
    pub fn stop_all(&mut self) {
        for (_, (_, handle)) in self.tasks.drain() {
            handle.abort();
        }
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        self.stop_all();
    }
}

async fn machine_loop(target: Target, ctx: Arc<PollContext>) {
    let grid = Grid::for_machine(&target.name, target.interval_ms);
    let interval = grid.interval_ms;
    let mut due = grid.first_at_or_after(ctx.anchor.now_ms());
    let mut last_uptime: Option<u64> = None;
    loop {
        tokio::time::sleep_until(ctx.anchor.instant_of(due)).await;
        let permit = tokio::time::timeout_at(
            ctx.anchor.instant_of(due + interval),
            ctx.permits.clone().acquire_owned(),
        )
        .await;
        let Ok(Ok(permit)) = permit else {
            ctx.stats.skipped.inc();
            tracing::warn!(machine = %target.name, "no poll slot within one interval; poll skipped");
            // The next grid instant is now (the wait ended one interval after `due`).
            due = grid.first_at_or_after(ctx.anchor.now_ms());
            continue;
        };
        let started_ms = ctx.anchor.now_ms();
        let t0 = Instant::now();
        ctx.stats.polls.inc();
        ctx.stats
            .lag_seconds
            .observe((started_ms - due).max(0) as f64 / 1000.0);
        let outcome = ctx.prober.poll(&target.url).await;
        drop(permit);
        ctx.stats
            .latency_seconds
            .observe(t0.elapsed().as_secs_f64());
        let labels = match &outcome {
            PollOutcome::Sampled(_) => PollLabels {
                outcome: "sampled".into(),
                reason: String::new(),
            },
            PollOutcome::Failed(reason, _) => PollLabels {
                outcome: "failed".into(),
                reason: reason.as_str().into(),
            },
        };
        ctx.stats.polls_by_outcome.get_or_create(&labels).inc();
        let timing = PollTiming {
            interval_ms: target.interval_ms,
            started_at: chrono::DateTime::from_timestamp_millis(started_ms).unwrap_or_default(),
            latency_ms: t0.elapsed().as_millis().min(u128::from(u32::MAX)) as u32,
        };
        let event = match outcome {
            PollOutcome::Sampled(s) => {
                let rebooted =
                    matches!((last_uptime, s.uptime_s), (Some(prev), Some(now)) if now < prev);
                if s.uptime_s.is_some() {
                    last_uptime = s.uptime_s;
                }
                if !s.issues.is_empty() {
                    tracing::info!(machine = %target.name, issues = ?s.issues, "sample has unknown metrics");
                }
                Event::MetricSampled(MetricSampled {
                    timing,
                    cpu: s.cpu,
                    mem: s.mem,
                    disk: s.disk,
                    uptime_s: s.uptime_s,
                    issues: s.issues,
                    rebooted,
                })
            }
            PollOutcome::Failed(reason, detail) => {
                ctx.stats.failures.inc();
                tracing::debug!(machine = %target.name, reason = reason.as_str(), %detail, "poll failed");
                Event::PollFailed(PollFailed {
                    timing,
                    reason,
                    detail,
                })
            }
        };
        let env = Envelope {
            event_id: Uuid::new_v4(),
            machine: target.name.clone(),
            at: chrono::DateTime::from_timestamp_millis(due).unwrap_or_default(),
            event,
        };
        if ctx.events.send(env).await.is_err() {
            return; // shutting down
        }
        let next = grid.first_after(due);
        let now = ctx.anchor.now_ms();
        if next < now {
            let resume = grid.first_at_or_after(now);
            let missed = (resume - next) / interval;
            ctx.stats.skipped.inc_by(missed as u64);
            tracing::warn!(machine = %target.name, missed, "poll overran its interval; grid instants skipped");
            due = resume;
        } else {
            due = next;
        }
    }
}
