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
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use storage::log::EventLog;
use storage::{on, Db};

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
    /// From the first event read to the last (without the group join before it
    /// or the quiet wait after it).
    pub read_time: Duration,
}

/// Where a replay reads the machine-event log from.
#[derive(Debug, Clone)]
pub enum LogSource {
    /// A Kafka topic.
    Kafka {
        /// Bootstrap servers.
        brokers: String,
        /// The machine-event topic.
        topic: String,
    },
    /// The embedded log (one-process mode).
    Embedded(EventLog),
}

impl LogSource {
    /// The topic name the time index is kept under.
    pub fn topic(&self) -> &str {
        match self {
            LogSource::Kafka { topic, .. } => topic,
            LogSource::Embedded(_) => storage::log::TOPIC,
        }
    }
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

/// An `incidents` row as stored.
#[derive(sqlx::FromRow)]
struct RecordedRow {
    id: String,
    machine: String,
    rule: String,
    threshold: f64,
    for_ms: i64,
    started_at: chrono::NaiveDateTime,
    opened_at: chrono::NaiveDateTime,
    peak: Option<f64>,
    last_value: Option<f64>,
    last_breach_at: chrono::NaiveDateTime,
    resolved_at: Option<chrono::NaiveDateTime>,
    resolution: String,
}

/// Recorded incidents of the range, as seen at `to` (a resolution after `to` does
/// not count yet).
async fn recorded(db: &Db, req: &ReplayRequest) -> Result<Vec<IncidentRecord>, sqlx::Error> {
    let rows: Vec<RecordedRow> = on!(db, |p| {
        sqlx::query_as(
        "SELECT id, machine, rule, threshold, for_ms, started_at, opened_at, peak, last_value, last_breach_at, resolved_at, resolution \
         FROM incidents WHERE opened_at <= ? AND (resolved_at IS NULL OR resolved_at >= ?)",
    )
    .bind(req.to.naive_utc())
    .bind(req.from.naive_utc())
    .fetch_all(p)
    .await
    })?;
    let mut out = Vec::new();
    for r in rows {
        if !req.machines.is_empty() && !req.machines.contains(&r.machine) {
            continue;
        }
        let resolved_at = r.resolved_at.map(|t| t.and_utc()).filter(|t| *t <= req.to);
        out.push(IncidentRecord {
            id: r.id.parse().unwrap_or_default(),
            machine: r.machine,
            rule: r.rule.parse().unwrap_or(proto_events::RuleName::Cpu),
            threshold: r.threshold,
            for_ms: r.for_ms as u64,
            started_at: r.started_at.and_utc(),
            opened_at: r.opened_at.and_utc(),
            peak: r.peak,
            last_value: r.last_value,
            last_breach_at: r.last_breach_at.and_utc(),
            resolution: if resolved_at.is_some() {
                r.resolution
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

/// Replays `[from, to]` of a Kafka topic.
pub async fn replay(
    db: &Db,
    brokers: &str,
    topic: &str,
    req: &ReplayRequest,
) -> anyhow::Result<ReplayResult> {
    let log = LogSource::Kafka {
        brokers: brokers.to_owned(),
        topic: topic.to_owned(),
    };
    replay_with_progress(db, &log, req, &Progress::default()).await
}

/// The folding side of a replay: events in, would-be incidents out.
struct Replayer {
    req: ReplayRequest,
    wanted: BTreeSet<String>,
    fold: Fold,
    book: IncidentBook,
    out: Vec<Envelope>,
}

impl Replayer {
    fn new(req: &ReplayRequest) -> Self {
        Replayer {
            req: req.clone(),
            wanted: req.machines.iter().cloned().collect(),
            fold: Fold::new(req.rules),
            book: IncidentBook::new(),
            out: Vec::new(),
        }
    }

    fn apply(&mut self, payload: &[u8]) {
        let Ok(env) = Envelope::decode(payload) else {
            return;
        };
        if env.at > self.req.to
            || (!self.wanted.is_empty()
                && !env.machine.is_empty()
                && !self.wanted.contains(&env.machine))
        {
            return;
        }
        if matches!(env.event, Event::RulesChanged(_)) && !self.req.follow_rule_changes {
            return; // a what-if: the rules under test replace the recorded ones
        }
        self.out.clear();
        self.fold.apply(&env, &mut self.out);
        for o in &self.out {
            self.book.apply(o);
        }
    }

    async fn finish(
        self,
        db: &Db,
        events_read: u64,
        read_time: Duration,
    ) -> anyhow::Result<ReplayResult> {
        let (from, to) = (self.req.from, self.req.to);
        let incidents: Vec<IncidentRecord> = self
            .book
            .into_records()
            .into_iter()
            .filter(|i| overlaps(i, from, to))
            .collect();
        let recorded = recorded(db, &self.req).await?;
        Ok(ReplayResult {
            differences: diff(&incidents, &recorded),
            recorded,
            incidents,
            events_read,
            read_time,
        })
    }
}

/// Payloads copied into one buffer (one allocation per batch, not per event).
#[derive(Default)]
struct PayloadBatch {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl PayloadBatch {
    fn push(&mut self, payload: &[u8]) {
        self.bytes.extend_from_slice(payload);
        self.ends.push(self.bytes.len());
    }

    fn len(&self) -> usize {
        self.ends.len()
    }

    fn payloads(&self) -> impl Iterator<Item = &[u8]> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts
            .zip(self.ends.iter().copied())
            .map(|(a, b)| &self.bytes[a..b])
    }
}

/// Where each partition's replay starts: the time index's first offset at or
/// after `from - lookback`.
async fn start_offsets(
    db: &Db,
    topic: &str,
    req: &ReplayRequest,
) -> anyhow::Result<HashMap<i32, i64>> {
    let start_bucket = (req.from - chrono::Duration::from_std(req.lookback)?)
        .timestamp_millis()
        .div_euclid(3_600_000)
        * 3_600_000;
    let start_bucket = DateTime::from_timestamp_millis(start_bucket)
        .unwrap_or_default()
        .naive_utc();
    let rows: Vec<(i32, i64)> = on!(db, |p| sqlx::query_as(
        "SELECT partition_id, MIN(first_offset) AS start FROM event_time_index \
         WHERE topic = ? AND bucket_start >= ? GROUP BY partition_id"
    )
    .bind(topic)
    .bind(start_bucket)
    .fetch_all(p)
    .await)?;
    Ok(rows.into_iter().collect())
}

/// Replays `[from, to]` of the machine-event log, counting into `progress`.
pub async fn replay_with_progress(
    db: &Db,
    log: &LogSource,
    req: &ReplayRequest,
    progress: &Progress,
) -> anyhow::Result<ReplayResult> {
    let starts = start_offsets(db, log.topic(), req).await?;
    match log {
        LogSource::Kafka { brokers, topic } => {
            replay_kafka(db, brokers, topic, starts, req, progress).await
        }
        LogSource::Embedded(events) => replay_embedded(db, events, starts, req, progress).await,
    }
}

/// Reads the embedded log from the indexed start to where it ends now.
async fn replay_embedded(
    db: &Db,
    events: &EventLog,
    starts: HashMap<i32, i64>,
    req: &ReplayRequest,
    progress: &Progress,
) -> anyhow::Result<ReplayResult> {
    let mut replayer = Replayer::new(req);
    let Some(&start) = starts.get(&storage::log::PARTITION) else {
        return replayer.finish(db, 0, Duration::ZERO).await;
    };
    let end = events.end().await?;
    progress
        .expected
        .fetch_add(end.saturating_sub(start) as u64, Ordering::Relaxed);
    let started = std::time::Instant::now();
    let (mut next, mut read) = (start, 0u64);
    while next < end {
        let page = events.read(next, 10_000).await?;
        let Some(&(last, _)) = page.last() else {
            break;
        };
        for (offset, payload) in &page {
            if *offset >= end {
                break;
            }
            read += 1;
            replayer.apply(payload);
        }
        progress.read.store(read, Ordering::Relaxed);
        next = last + 1;
    }
    replayer.finish(db, read, started.elapsed()).await
}

/// Reads each Kafka partition from its indexed start to its high watermark.
async fn replay_kafka(
    db: &Db,
    brokers: &str,
    topic: &str,
    starts: HashMap<i32, i64>,
    req: &ReplayRequest,
    progress: &Progress,
) -> anyhow::Result<ReplayResult> {
    let consumer: StreamConsumer<PositionAt> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set(
            "group.id",
            format!("replay-{}", uuid::Uuid::new_v4().simple()),
        )
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "10")
        // A replay folds more slowly than the broker sends: without this, a
        // partition whose local queue passed `queued.min.messages` stops being
        // fetched for a whole second (the default backoff).
        .set("fetch.queue.backoff.ms", "5")
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
    // Decoding and folding (about 1 µs an event) run on their own thread, fed
    // batches of payloads, so they overlap with receiving from the broker.
    let (batches, to_fold) = std::sync::mpsc::sync_channel::<PayloadBatch>(16);
    let folding = tokio::task::spawn_blocking({
        let mut replayer = Replayer::new(req);
        move || {
            let mut last_applied = None;
            for batch in to_fold {
                for payload in batch.payloads() {
                    replayer.apply(payload);
                }
                last_applied = Some(std::time::Instant::now());
            }
            (replayer, last_applied)
        }
    });
    let mut batch = PayloadBatch::default();
    let mut events_read = 0u64;
    let reading = !remaining.is_empty();
    if reading {
        consumer.subscribe(&[topic])?;
    }
    let mut seen: HashMap<i32, (i64, i64, u64)> = HashMap::new();
    let mut first_read: Option<std::time::Instant> = None;
    let mut last_read: Option<std::time::Instant> = None;
    // Watermarks are a lower bound only (tansu has reported the start of the last
    // record batch as the high watermark): once every partition has passed its
    // watermark, keep draining until the log stays quiet for a moment.
    loop {
        if !reading {
            break;
        }
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
        let now = std::time::Instant::now();
        first_read.get_or_insert(now);
        last_read = Some(now);
        batch.push(m.payload().unwrap_or_default());
        // Full, or every partition has reached its watermark (the rest of the
        // read is the quiet wait for stragglers): hand the batch over now.
        if batch.len() >= 1024 || remaining.is_empty() {
            let full = std::mem::take(&mut batch);
            let sent = tokio::task::block_in_place(|| batches.send(full));
            anyhow::ensure!(sent.is_ok(), "the folding thread stopped");
        }
    }
    if batch.len() > 0 {
        let sent = tokio::task::block_in_place(|| batches.send(batch));
        anyhow::ensure!(sent.is_ok(), "the folding thread stopped");
    }
    drop(batches);
    let (replayer, last_applied) = folding.await?;
    // The read ends when the last event is folded, not just received.
    let last_read = last_read.max(last_applied);
    tracing::debug!(
        ?starts,
        ?seen,
        "replay read (first offset, last offset, count) per partition"
    );
    let read_time = match (first_read, last_read) {
        (Some(a), Some(b)) => b - a,
        _ => Duration::ZERO,
    };
    replayer.finish(db, events_read, read_time).await
}
