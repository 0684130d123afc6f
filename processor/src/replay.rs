//! Backtests over the recorded log: replay `[from, to]` of the machine-event topic
//! through the same fold with other rules, and compare with the incidents the live
//! processor recorded in MySQL.
//!
//! The broker here cannot look offsets up by time, so each partition starts at
//! the offset the processor's time -> offset index (`event_time_index`) gives for
//! `from - lookback` (the lookback lets runs that began earlier be rebuilt), and is
//! read up to its high watermark; events after `to` are not folded. Partitions are
//! positioned inside the consumer-group rebalance callback, as the processor does.

use crate::fold::Fold;
use crate::incidents::{IncidentBook, IncidentRecord};
use chrono::{DateTime, Utc};
use proto_events::{Envelope, Event, RuleSet};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};
use sqlx::{MySqlPool, Row};
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How far a replay has come: events read so far out of those it expects to read
/// (the log between each partition's start and its high watermark at the start).
#[derive(Debug, Default)]
pub struct Progress {
    /// Events read.
    pub read: AtomicU64,
    /// Events expected (known once the partitions are positioned).
    pub expected: AtomicU64,
}

impl Progress {
    /// Fraction done, 0..=1.
    pub fn fraction(&self) -> f64 {
        let expected = self.expected.load(Ordering::Relaxed);
        if expected == 0 {
            return 0.0;
        }
        (self.read.load(Ordering::Relaxed) as f64 / expected as f64).min(1.0)
    }
}

/// What to replay.
#[derive(Debug, Clone)]
pub struct ReplayRequest {
    /// Start of the range.
    pub from: DateTime<Utc>,
    /// End of the range.
    pub to: DateTime<Utc>,
    /// Only these machines (empty: all).
    pub machines: Vec<String>,
    /// The rules to judge by.
    pub rules: RuleSet,
    /// How far before `from` to start reading, so runs in progress at `from` are rebuilt.
    pub lookback: Duration,
    /// Apply the rule changes recorded in the log (a replay of what happened)
    /// instead of holding `rules` fixed (a what-if).
    pub follow_rule_changes: bool,
}

/// One difference between the replay and what was recorded.
#[derive(Debug, Clone, PartialEq)]
pub enum Difference {
    /// Would have existed, was not recorded.
    Added(IncidentRecord),
    /// Was recorded, would not have existed.
    Removed(IncidentRecord),
    /// Both, with different times or peak: `(would-be, recorded)`.
    Changed(IncidentRecord, IncidentRecord),
}

/// The outcome of a replay.
#[derive(Debug, Clone, Default)]
pub struct ReplayResult {
    /// Incidents that would have existed in the range, in opening order.
    pub incidents: Vec<IncidentRecord>,
    /// The incidents recorded in the range, as seen at its end.
    pub recorded: Vec<IncidentRecord>,
    /// Differences against the recorded incidents of the range.
    pub differences: Vec<Difference>,
    /// Events read from the log.
    pub events_read: u64,
}

struct PositionAt(HashMap<i32, i64>);

impl ClientContext for PositionAt {}

impl ConsumerContext for PositionAt {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        if err == RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS {
            for (topic, p) in tpl
                .elements()
                .iter()
                .map(|e| (e.topic().to_owned(), e.partition()))
                .collect::<Vec<_>>()
            {
                let offset = self.0.get(&p).map_or(Offset::End, |o| Offset::Offset(*o));
                let _ = tpl.set_partition_offset(&topic, p, offset);
            }
            let _ = consumer.assign(tpl);
        } else {
            let _ = consumer.unassign();
        }
    }
}

fn overlaps(i: &IncidentRecord, from: DateTime<Utc>, to: DateTime<Utc>) -> bool {
    i.opened_at <= to && i.resolved_at.is_none_or(|r| r >= from)
}

/// Recorded incidents of the range, as seen at `to` (a resolution after `to` does
/// not count yet).
async fn recorded(
    pool: &MySqlPool,
    req: &ReplayRequest,
) -> Result<Vec<IncidentRecord>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, machine, rule, threshold, for_ms, started_at, opened_at, peak, last_value, last_breach_at, resolved_at, resolution \
         FROM incidents WHERE opened_at <= ? AND (resolved_at IS NULL OR resolved_at >= ?)",
    )
    .bind(req.to.naive_utc())
    .bind(req.from.naive_utc())
    .fetch_all(pool)
    .await?;
    let mut out = Vec::new();
    for r in rows {
        let machine: String = r.try_get("machine")?;
        if !req.machines.is_empty() && !req.machines.contains(&machine) {
            continue;
        }
        let resolved_at = r
            .try_get::<Option<chrono::NaiveDateTime>, _>("resolved_at")?
            .map(|t| t.and_utc())
            .filter(|t| *t <= req.to);
        out.push(IncidentRecord {
            id: r.try_get::<String, _>("id")?.parse().unwrap_or_default(),
            machine,
            rule: r
                .try_get::<String, _>("rule")?
                .parse()
                .unwrap_or(proto_events::RuleName::Cpu),
            threshold: r.try_get("threshold")?,
            for_ms: r.try_get::<i64, _>("for_ms")? as u64,
            started_at: r
                .try_get::<chrono::NaiveDateTime, _>("started_at")?
                .and_utc(),
            opened_at: r
                .try_get::<chrono::NaiveDateTime, _>("opened_at")?
                .and_utc(),
            peak: r.try_get("peak")?,
            last_value: r.try_get("last_value")?,
            last_breach_at: r
                .try_get::<chrono::NaiveDateTime, _>("last_breach_at")?
                .and_utc(),
            resolution: if resolved_at.is_some() {
                r.try_get("resolution")?
            } else {
                String::new()
            },
            resolved_at,
        });
    }
    Ok(out)
}

/// Compares would-be and recorded incidents by id (ids derive from machine, rule
/// and run start, so the same run has the same id in both).
pub fn diff(would_be: &[IncidentRecord], recorded: &[IncidentRecord]) -> Vec<Difference> {
    let rec: HashMap<_, _> = recorded.iter().map(|i| (i.id, i)).collect();
    let wb: HashMap<_, _> = would_be.iter().map(|i| (i.id, i)).collect();
    let mut out = Vec::new();
    for i in would_be {
        match rec.get(&i.id) {
            None => out.push(Difference::Added(i.clone())),
            Some(r) => {
                let same = r.opened_at == i.opened_at
                    && r.resolved_at == i.resolved_at
                    && (i.resolved_at.is_none() || r.peak == i.peak);
                if !same {
                    out.push(Difference::Changed(i.clone(), (*r).clone()));
                }
            }
        }
    }
    for r in recorded {
        if !wb.contains_key(&r.id) {
            out.push(Difference::Removed(r.clone()));
        }
    }
    out
}

/// Replays `[from, to]` of `topic`.
pub async fn replay(
    pool: &MySqlPool,
    brokers: &str,
    topic: &str,
    req: &ReplayRequest,
) -> anyhow::Result<ReplayResult> {
    replay_with_progress(pool, brokers, topic, req, &Progress::default()).await
}

/// Replays `[from, to]` of `topic`, counting into `progress` as it reads.
pub async fn replay_with_progress(
    pool: &MySqlPool,
    brokers: &str,
    topic: &str,
    req: &ReplayRequest,
    progress: &Progress,
) -> anyhow::Result<ReplayResult> {
    let start_bucket = (req.from - chrono::Duration::from_std(req.lookback)?)
        .timestamp_millis()
        .div_euclid(3_600_000)
        * 3_600_000;
    let start_bucket = DateTime::from_timestamp_millis(start_bucket)
        .unwrap_or_default()
        .naive_utc();
    let rows = sqlx::query("SELECT partition_id, MIN(first_offset) AS start FROM event_time_index WHERE topic = ? AND bucket_start >= ? GROUP BY partition_id")
        .bind(topic)
        .bind(start_bucket)
        .fetch_all(pool)
        .await?;
    let mut starts = HashMap::new();
    for r in rows {
        starts.insert(
            r.try_get::<i32, _>("partition_id")?,
            r.try_get::<i64, _>("start")?,
        );
    }
    let consumer: StreamConsumer<PositionAt> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set(
            "group.id",
            format!("replay-{}", uuid::Uuid::new_v4().simple()),
        )
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "50")
        .set("session.timeout.ms", "6000")
        .set("max.poll.interval.ms", "6000")
        .create_with_context(PositionAt(starts.clone()))?;
    // Where each partition ends now: read up to there.
    let mut remaining: HashMap<i32, i64> = HashMap::new();
    for (&p, &start) in &starts {
        let (_, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(10))?;
        if high > start {
            remaining.insert(p, high);
            progress
                .expected
                .fetch_add((high - start) as u64, Ordering::Relaxed);
        }
    }
    let mut fold = Fold::new(req.rules);
    let mut book = IncidentBook::new();
    let mut out = Vec::new();
    let mut events_read = 0u64;
    let wanted: BTreeSet<&str> = req.machines.iter().map(String::as_str).collect();
    let reading = !remaining.is_empty();
    if reading {
        consumer.subscribe(&[topic])?;
    }
    let mut seen: HashMap<i32, (i64, i64, u64)> = HashMap::new();
    // Watermarks are a lower bound only (tansu has reported the start of the last
    // record batch as the high watermark): once every partition has passed its
    // watermark, keep draining until the log stays quiet for a moment.
    while reading {
        let quiet = remaining.is_empty() && !seen.is_empty();
        let wait = if quiet {
            Duration::from_millis(1500)
        } else {
            Duration::from_secs(60)
        };
        let m = match tokio::time::timeout(wait, consumer.recv()).await {
            Ok(m) => m?,
            Err(_) if quiet => break,
            Err(_) => anyhow::bail!(
                "the log stopped delivering (partitions left: {:?})",
                remaining.keys().collect::<Vec<_>>()
            ),
        };
        let (p, offset) = (m.partition(), m.offset());
        let e = seen.entry(p).or_insert((offset, offset, 0));
        e.1 = offset;
        e.2 += 1;
        if remaining.get(&p).is_some_and(|high| offset + 1 >= *high) {
            remaining.remove(&p);
        }
        events_read += 1;
        progress.read.fetch_add(1, Ordering::Relaxed);
        let Ok(env) = Envelope::decode(m.payload().unwrap_or_default()) else {
            continue;
        };
        if env.at > req.to
            || (!wanted.is_empty()
                && !env.machine.is_empty()
                && !wanted.contains(env.machine.as_str()))
        {
            continue;
        }
        if matches!(env.event, Event::RulesChanged(_)) && !req.follow_rule_changes {
            continue; // a what-if: the rules under test replace the recorded ones
        }
        out.clear();
        fold.apply(&env, &mut out);
        for o in &out {
            book.apply(o);
        }
    }
    tracing::debug!(
        ?starts,
        ?seen,
        "replay read (first offset, last offset, count) per partition"
    );
    let incidents: Vec<IncidentRecord> = book
        .into_records()
        .into_iter()
        .filter(|i| overlaps(i, req.from, req.to))
        .collect();
    let recorded = recorded(pool, req).await?;
    Ok(ReplayResult {
        differences: diff(&incidents, &recorded),
        recorded,
        incidents,
        events_read,
    })
}
