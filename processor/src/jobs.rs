//! Backtests requested through the API (`POST /api/backtests`): query-api records
//! the request in the `backtests` table; a processor claims it, replays the log
//! through the fold ([`crate::replay`]) and writes the outcome back as a
//! projection (per-rule counts, rule-quality figures, incidents, differences).
//!
//! Claiming is an `UPDATE ... WHERE status = 'queued'` that only one processor can
//! win; a running job keeps a heartbeat, and a job whose heartbeat stopped (its
//! processor died) is claimed again, at most [`MAX_ATTEMPTS`] times.

use crate::incidents::IncidentRecord;
use crate::replay::{
    replay_with_progress, Difference, LogSource, Progress, ReplayRequest, ReplayResult,
};
use chrono::{DateTime, SecondsFormat, Utc};
use proto_events::backtest::{
    JobRequest, JobResult, Quality, ResultDifference, ResultIncident, RuleSummary,
};
use proto_events::RuleName;
use std::sync::Arc;
use std::time::Duration;
use storage::{on, Db};

/// A job whose processor died is given up after this many claims.
pub const MAX_ATTEMPTS: i32 = 3;
/// A running job whose heartbeat is older than this is claimed again.
const STALE_AFTER: Duration = Duration::from_secs(30);
/// At most this many incidents of each list are kept in a result.
const MAX_LISTED: usize = 10_000;

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn incident(r: &IncidentRecord) -> ResultIncident {
    ResultIncident {
        id: r.id.to_string(),
        machine: r.machine.clone(),
        rule: r.rule,
        threshold: r.threshold,
        started_at: rfc3339(r.started_at),
        opened_at: rfc3339(r.opened_at),
        resolved_at: r.resolved_at.map(rfc3339),
        peak: r.peak,
    }
}

/// Quality figures of `incidents` (all of one rule) over `[from, to]`.
pub fn quality<'a>(
    incidents: impl Iterator<Item = &'a IncidentRecord>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Quality {
    let days = ((to - from).num_milliseconds() as f64 / 86_400_000.0).max(1e-9);
    let (mut opened, mut resolved, mut ms_open) = (0u64, 0u64, 0i64);
    for i in incidents {
        if i.opened_at >= from && i.opened_at <= to {
            opened += 1;
        }
        if i.resolved_at.is_some_and(|r| r >= from && r <= to) {
            resolved += 1;
        }
        let start = i.opened_at.max(from);
        let end = i.resolved_at.unwrap_or(to).min(to);
        ms_open += (end - start).num_milliseconds().max(0);
    }
    Quality {
        opened,
        incidents_per_day: opened as f64 / days,
        hours_in_incident: ms_open as f64 / 3_600_000.0,
        flips_per_day: (opened + resolved) as f64 / days,
    }
}

/// The result of a replay as a job writes it.
pub fn summarize(from: DateTime<Utc>, to: DateTime<Utc>, replayed: &ReplayResult) -> JobResult {
    let rules = RuleName::ALL
        .iter()
        .map(|&rule| {
            let count = |f: &dyn Fn(&Difference) -> bool| {
                replayed.differences.iter().filter(|d| f(d)).count() as u64
            };
            RuleSummary {
                rule,
                would_open: replayed.incidents.iter().filter(|i| i.rule == rule).count() as u64,
                actual: replayed.recorded.iter().filter(|i| i.rule == rule).count() as u64,
                added: count(&|d| matches!(d, Difference::Added(i) if i.rule == rule)),
                removed: count(&|d| matches!(d, Difference::Removed(i) if i.rule == rule)),
                changed: count(&|d| matches!(d, Difference::Changed(i, _) if i.rule == rule)),
                would_be_quality: quality(
                    replayed.incidents.iter().filter(|i| i.rule == rule),
                    from,
                    to,
                ),
                actual_quality: quality(
                    replayed.recorded.iter().filter(|i| i.rule == rule),
                    from,
                    to,
                ),
            }
        })
        .collect();
    let truncated = replayed.incidents.len() > MAX_LISTED
        || replayed.recorded.len() > MAX_LISTED
        || replayed.differences.len() > MAX_LISTED;
    JobResult {
        events_read: replayed.events_read,
        days: (to - from).num_milliseconds() as f64 / 86_400_000.0,
        rules,
        incidents: replayed
            .incidents
            .iter()
            .take(MAX_LISTED)
            .map(incident)
            .collect(),
        recorded: replayed
            .recorded
            .iter()
            .take(MAX_LISTED)
            .map(incident)
            .collect(),
        differences: replayed
            .differences
            .iter()
            .take(MAX_LISTED)
            .map(|d| match d {
                Difference::Added(w) => ResultDifference {
                    kind: "added".into(),
                    would_be: Some(incident(w)),
                    recorded: None,
                },
                Difference::Removed(r) => ResultDifference {
                    kind: "removed".into(),
                    would_be: None,
                    recorded: Some(incident(r)),
                },
                Difference::Changed(w, r) => ResultDifference {
                    kind: "changed".into(),
                    would_be: Some(incident(w)),
                    recorded: Some(incident(r)),
                },
            })
            .collect(),
        truncated,
    }
}

/// Runs requested backtests until `shutdown` turns true.
pub struct JobRunner {
    /// The projection database (holds `backtests`).
    pub db: Db,
    /// The machine-event log.
    pub log: LogSource,
    /// This runner's name in `backtests.worker`.
    pub worker: String,
    /// How far before `from` a replay reads.
    pub lookback: Duration,
}

impl JobRunner {
    /// Claims and runs jobs, one at a time, polling every second when idle.
    pub async fn run(self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        loop {
            if *shutdown.borrow() {
                return;
            }
            match self.claim().await {
                Ok(Some((id, request))) => {
                    tokio::select! {
                        _ = self.run_one(&id, &request) => {}
                        _ = shutdown.changed() => {
                            // Left `running`: its heartbeat stops and another
                            // processor (or this one, restarted) claims it again.
                            return;
                        }
                    }
                }
                Ok(None) => {
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = shutdown.changed() => {}
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "claiming a backtest failed");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                        _ = shutdown.changed() => {}
                    }
                }
            }
        }
    }

    /// Claims the oldest queued (or abandoned) job.
    async fn claim(&self) -> Result<Option<(String, String)>, sqlx::Error> {
        let now = Utc::now();
        let stale = (now - chrono::Duration::from_std(STALE_AFTER).unwrap_or_default()).naive_utc();
        let candidates: Vec<(String, String, i32)> = on!(&self.db, |p| sqlx::query_as(
            "SELECT id, request, attempts FROM backtests \
             WHERE status = 'queued' OR (status = 'running' AND heartbeat_at < ?) \
             ORDER BY requested_at LIMIT 5",
        )
        .bind(stale)
        .fetch_all(p)
        .await)?;
        for (id, request, attempts) in candidates {
            if attempts >= MAX_ATTEMPTS {
                on!(&self.db, |p| sqlx::query(
                    "UPDATE backtests SET status = 'failed', finished_at = ?, \
                     error = 'abandoned: its processor stopped during every attempt' \
                     WHERE id = ? AND attempts = ?",
                )
                .bind(now.naive_utc())
                .bind(&id)
                .bind(attempts)
                .execute(p)
                .await
                .map(|_| ()))?;
                continue;
            }
            let won = on!(&self.db, |p| {
                sqlx::query(
                "UPDATE backtests SET status = 'running', worker = ?, attempts = attempts + 1, \
                 started_at = ?, heartbeat_at = ?, progress = 0, events_read = 0 \
                 WHERE id = ? AND attempts = ? AND (status = 'queued' OR (status = 'running' AND heartbeat_at < ?))",
            )
            .bind(&self.worker)
            .bind(now.naive_utc())
            .bind(now.naive_utc())
            .bind(&id)
            .bind(attempts)
            .bind(stale)
            .execute(p)
            .await
            .map(|d| d.rows_affected())
            })? == 1;
            if won {
                return Ok(Some((id, request)));
            }
        }
        Ok(None)
    }

    async fn run_one(&self, id: &str, request: &str) {
        tracing::info!(backtest = id, "backtest started");
        let outcome = match serde_json::from_str::<JobRequest>(request) {
            Err(e) => Err(format!("the recorded request is unreadable: {e}")),
            Ok(job) => self.replay(id, &job).await.map_err(|e| format!("{e:#}")),
        };
        let now = Utc::now().naive_utc();
        let written = match &outcome {
            Ok(result) => on!(&self.db, |p| sqlx::query(
                "UPDATE backtests SET status = 'done', progress = 1, events_read = ?, \
                     finished_at = ?, heartbeat_at = ?, result = ? WHERE id = ? AND worker = ?",
            )
            .bind(result.events_read as i64)
            .bind(now)
            .bind(now)
            .bind(serde_json::to_string(result).unwrap_or_default())
            .bind(id)
            .bind(&self.worker)
            .execute(p)
            .await
            .map(|_| ())),
            Err(why) => {
                tracing::warn!(backtest = id, error = %why, "backtest failed");
                on!(&self.db, |p| sqlx::query(
                    "UPDATE backtests SET status = 'failed', finished_at = ?, error = ? \
                     WHERE id = ? AND worker = ?",
                )
                .bind(now)
                .bind(why)
                .bind(id)
                .bind(&self.worker)
                .execute(p)
                .await
                .map(|_| ()))
            }
        };
        if let Err(e) = written {
            tracing::error!(backtest = id, error = %e, "recording a backtest's outcome failed");
        } else {
            tracing::info!(backtest = id, ok = outcome.is_ok(), "backtest finished");
        }
    }

    async fn replay(&self, id: &str, job: &JobRequest) -> anyhow::Result<JobResult> {
        let req = ReplayRequest {
            from: job.from,
            to: job.to,
            machines: job.machines.clone(),
            rules: job.rules,
            lookback: self.lookback,
            follow_rule_changes: false,
        };
        let progress = Arc::new(Progress::default());
        let beat = {
            let (db, id, worker, progress) = (
                self.db.clone(),
                id.to_owned(),
                self.worker.clone(),
                progress.clone(),
            );
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    let _ = on!(&db, |p| sqlx::query(
                        "UPDATE backtests SET progress = ?, events_read = ?, heartbeat_at = ? \
                         WHERE id = ? AND worker = ? AND status = 'running'",
                    )
                    .bind(progress.fraction())
                    .bind(progress.read.load(std::sync::atomic::Ordering::Relaxed) as i64)
                    .bind(Utc::now().naive_utc())
                    .bind(&id)
                    .bind(&worker)
                    .execute(p)
                    .await
                    .map(|_| ()));
                }
            })
        };
        let replayed = replay_with_progress(&self.db, &self.log, &req, &progress).await;
        beat.abort();
        Ok(summarize(job.from, job.to, &replayed?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn t(min: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + min * 60, 0).unwrap_or_default()
    }

    fn rec(rule: RuleName, opened: i64, resolved: Option<i64>) -> IncidentRecord {
        IncidentRecord {
            id: Uuid::new_v4(),
            machine: "m".into(),
            rule,
            threshold: 85.0,
            for_ms: 0,
            started_at: t(opened),
            opened_at: t(opened),
            peak: Some(90.0),
            last_value: Some(90.0),
            last_breach_at: t(opened),
            resolved_at: resolved.map(t),
            resolution: String::new(),
        }
    }

    #[test]
    fn quality_clips_time_in_incident_to_the_range_and_counts_flips_per_day() {
        // Range: 2 days. One incident from before the range, resolved 60 min in;
        // one opened and resolved inside (30 min); one still open at the end (90 min).
        let (from, to) = (t(0), t(2 * 24 * 60));
        let list = [
            rec(RuleName::Cpu, -100, Some(60)),
            rec(RuleName::Cpu, 600, Some(630)),
            rec(RuleName::Cpu, 2 * 24 * 60 - 90, None),
        ];
        let q = quality(list.iter(), from, to);
        assert_eq!(q.opened, 2);
        assert!((q.incidents_per_day - 1.0).abs() < 1e-9, "{q:?}");
        assert!((q.hours_in_incident - 3.0).abs() < 1e-9, "{q:?}");
        // 2 openings + 2 resolutions in the range, over 2 days.
        assert!((q.flips_per_day - 2.0).abs() < 1e-9, "{q:?}");
    }

    #[test]
    fn summary_counts_per_rule_follow_the_differences() {
        let (from, to) = (t(0), t(24 * 60));
        let kept = rec(RuleName::Mem, 10, Some(50));
        let gone = rec(RuleName::Cpu, 20, Some(21));
        let new = rec(RuleName::Mem, 100, None);
        let replayed = ReplayResult {
            incidents: vec![kept.clone(), new.clone()],
            recorded: vec![kept.clone(), gone.clone()],
            differences: vec![Difference::Added(new), Difference::Removed(gone)],
            events_read: 7,
            read_time: Duration::ZERO,
        };
        let s = summarize(from, to, &replayed);
        let cpu = &s.rules[RuleName::ALL
            .iter()
            .position(|r| *r == RuleName::Cpu)
            .unwrap_or(0)];
        let mem = &s.rules[RuleName::ALL
            .iter()
            .position(|r| *r == RuleName::Mem)
            .unwrap_or(0)];
        assert_eq!(
            (cpu.would_open, cpu.actual, cpu.added, cpu.removed),
            (0, 1, 0, 1)
        );
        assert_eq!(
            (mem.would_open, mem.actual, mem.added, mem.removed),
            (2, 1, 1, 0)
        );
        assert_eq!(s.differences.len(), 2);
        assert_eq!(s.events_read, 7);
        assert!((s.days - 1.0).abs() < 1e-9);
        // Round-trips through the stored form.
        let text = serde_json::to_string(&s).unwrap_or_default();
        assert_eq!(serde_json::from_str::<JobResult>(&text).ok(), Some(s));
    }
}
