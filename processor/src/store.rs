//! The database side of the processor: projections (incidents, latest state per
//! machine, sample history), fold state, log positions and the incident outbox, all
//! written in one transaction per batch. That transaction is the exactly-once point.
//! The same code runs on MySQL and on the embedded SQLite file ([`storage::on!`]);
//! only the upsert clauses and the multi-row incident update differ.

use crate::fold::{MachineState, RulesTimeline};
use chrono::{DateTime, Utc};
use proto_events::{Envelope, Event};
use sqlx::QueryBuilder;
use std::collections::{BTreeMap, HashMap};
use storage::{on, Db};

/// Where a partition stands in MySQL.
#[derive(Debug)]
pub struct PartitionPosition {
    /// Next offset to process; `None` when the partition was never committed.
    pub next_offset: Option<i64>,
    /// The rules timeline committed with it.
    pub rules: Option<RulesTimeline>,
    /// Fold state of every machine of the partition.
    pub machines: Vec<(String, MachineState)>,
}

/// Another instance committed this partition since we loaded it: our batch is stale.
#[derive(Debug, thiserror::Error)]
#[error("partition {partition} moved on (expected offset {expected:?}); batch dropped")]
pub struct Fenced {
    /// The partition.
    pub partition: i32,
    /// The offset we expected to find.
    pub expected: Option<i64>,
}

/// Errors of a batch commit.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// Lost ownership of a partition; reload and continue.
    #[error(transparent)]
    Fenced(#[from] Fenced),
    /// The database failed; retry with backoff.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
}

/// Everything one batch writes, per partition.
#[derive(Debug, Default)]
pub struct PartitionBatch {
    /// Offset the partition was at when the batch began (for fencing).
    pub expected_offset: Option<i64>,
    /// Offset after the last message of the batch.
    pub next_offset: i64,
    /// Rules timeline after the batch.
    pub rules: Option<RulesTimeline>,
    /// Machines whose fold state changed, with their new state (filled at flush).
    pub machine_states: HashMap<String, MachineState>,
    /// Machines touched by the batch.
    pub touched: std::collections::HashSet<String>,
    /// Hour of event time (ms since the epoch) -> first offset seen in this batch.
    pub time_index: std::collections::BTreeMap<i64, i64>,
}

/// One transaction's worth of work.
#[derive(Debug, Default)]
pub struct Batch {
    /// Per partition: positions and fold state.
    pub partitions: BTreeMap<i32, PartitionBatch>,
    /// Poll events, for `samples` and `machine_latest`.
    pub polls: Vec<Envelope>,
    /// Incident events the fold emitted, in order.
    pub incident_events: Vec<Envelope>,
}

impl Batch {
    /// Whether nothing was gathered.
    pub fn is_empty(&self) -> bool {
        self.partitions.is_empty()
    }
}

/// MySQL store of one consumer group.
#[derive(Clone)]
pub struct Store {
    db: Db,
    outbox: bool,
    group: String,
    topic: String,
}

fn ts(t: DateTime<Utc>) -> chrono::NaiveDateTime {
    t.naive_utc()
}

impl Store {
    /// The projection database.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Leaves incident events out of the outbox (one-process mode: there is no
    /// incident topic to publish them to).
    pub fn without_outbox(mut self) -> Self {
        self.outbox = false;
        self
    }

    /// A store for `group` consuming `topic`.
    pub fn new(db: impl Into<Db>, group: &str, topic: &str) -> Self {
        Store {
            db: db.into(),
            outbox: true,
            group: group.to_owned(),
            topic: topic.to_owned(),
        }
    }

    /// Every partition's committed next offset for this group and topic.
    pub async fn committed_offsets(&self) -> Result<HashMap<i32, i64>, sqlx::Error> {
        let rows: Vec<(i32, i64)> = on!(&self.db, |p| {
            sqlx::query_as("SELECT partition_id, next_offset FROM processor_offsets WHERE consumer_group = ? AND topic = ?")
            .bind(&self.group)
            .bind(&self.topic)
            .fetch_all(p)
            .await
        })?;
        Ok(rows.into_iter().collect())
    }

    /// Loads a partition's committed position and fold state.
    pub async fn load_partition(&self, partition: i32) -> Result<PartitionPosition, sqlx::Error> {
        let row: Option<(i64, String)> = on!(&self.db, |p| {
            sqlx::query_as(
            "SELECT next_offset, rules_timeline FROM processor_offsets WHERE consumer_group = ? AND topic = ? AND partition_id = ?",
        )
        .bind(&self.group)
        .bind(&self.topic)
        .bind(partition)
        .fetch_optional(p)
        .await
        })?;
        let (next_offset, rules) = match row {
            Some((next_offset, rules)) => (Some(next_offset), serde_json::from_str(&rules).ok()),
            None => (None, None),
        };
        let rows: Vec<(String, String)> = on!(&self.db, |p| {
            sqlx::query_as(
            "SELECT machine, state FROM fold_state WHERE consumer_group = ? AND partition_id = ?",
        )
        .bind(&self.group)
        .bind(partition)
        .fetch_all(p)
        .await
        })?;
        let mut machines = Vec::with_capacity(rows.len());
        for (machine, state) in rows {
            match serde_json::from_str(&state) {
                Ok(state) => machines.push((machine, state)),
                Err(e) => {
                    tracing::error!(%machine, error = %e, "unreadable fold state; machine starts fresh")
                }
            }
        }
        Ok(PartitionPosition {
            next_offset,
            rules,
            machines,
        })
    }

    /// Commits a batch: projections, fold state, outbox and offsets in one
    /// transaction, fenced on the offsets we expected to find.
    pub async fn commit(&self, batch: &Batch) -> Result<(), CommitError> {
        let db = &self.db;
        let now = Utc::now().naive_utc();
        let incidents = coalesce_incidents(&batch.incident_events);
        on!(db, |pool| {
            let mut tx = pool.begin().await?;
            for (&partition, p) in &batch.partitions {
                let rules = serde_json::to_string(&p.rules).unwrap_or_else(|_| "null".to_owned());
                let fenced = || Fenced {
                    partition,
                    expected: p.expected_offset,
                };
                match p.expected_offset {
                    Some(expected) => {
                        let done = sqlx::query(
                            "UPDATE processor_offsets SET next_offset = ?, rules_timeline = ?, updated_at = ? \
                             WHERE consumer_group = ? AND topic = ? AND partition_id = ? AND next_offset = ?",
                        )
                        .bind(p.next_offset)
                        .bind(&rules)
                        .bind(now)
                        .bind(&self.group)
                        .bind(&self.topic)
                        .bind(partition)
                        .bind(expected)
                        .execute(&mut *tx)
                        .await?;
                        if done.rows_affected() != 1 {
                            return Err(fenced().into());
                        }
                    }
                    None => {
                        let inserted = sqlx::query(
                            "INSERT INTO processor_offsets (consumer_group, topic, partition_id, next_offset, rules_timeline, updated_at) \
                             VALUES (?, ?, ?, ?, ?, ?)",
                        )
                        .bind(&self.group)
                        .bind(&self.topic)
                        .bind(partition)
                        .bind(p.next_offset)
                        .bind(&rules)
                        .bind(now)
                        .execute(&mut *tx)
                        .await;
                        match inserted {
                            Ok(_) => {}
                            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                                return Err(fenced().into())
                            }
                            Err(e) => return Err(e.into()),
                        }
                    }
                }
                let states: Vec<_> = p.machine_states.iter().collect();
                for chunk in states.chunks(CHUNK) {
                    let mut q = QueryBuilder::new(
                        "INSERT INTO fold_state (consumer_group, machine, partition_id, state) ",
                    );
                    q.push_values(chunk, |mut b, (machine, state)| {
                        b.push_bind(&self.group)
                            .push_bind(machine)
                            .push_bind(partition)
                            .push_bind(serde_json::to_string(state).unwrap_or_default());
                    });
                    q.push(db.pick(
                        " ON DUPLICATE KEY UPDATE partition_id = VALUES(partition_id), state = VALUES(state)",
                        " ON CONFLICT (consumer_group, machine) DO UPDATE SET partition_id = excluded.partition_id, state = excluded.state",
                    ));
                    q.build().execute(&mut *tx).await?;
                }
            }
            let index: Vec<(i32, i64, i64)> = batch
                .partitions
                .iter()
                .flat_map(|(p, b)| {
                    b.time_index
                        .iter()
                        .map(move |(bucket, offset)| (*p, *bucket, *offset))
                })
                .collect();
            if !index.is_empty() {
                let mut q = QueryBuilder::new(
                    "INSERT INTO event_time_index (topic, partition_id, bucket_start, first_offset) ",
                );
                q.push_values(&index, |mut b, (p, bucket, offset)| {
                    let start = DateTime::from_timestamp_millis(*bucket)
                        .unwrap_or_default()
                        .naive_utc();
                    b.push_bind(&self.topic)
                        .push_bind(*p)
                        .push_bind(start)
                        .push_bind(*offset);
                });
                q.push(db.pick(
                    " ON DUPLICATE KEY UPDATE first_offset = LEAST(first_offset, VALUES(first_offset))",
                    " ON CONFLICT (topic, partition_id, bucket_start) DO UPDATE SET first_offset = MIN(first_offset, excluded.first_offset)",
                ));
                q.build().execute(&mut *tx).await?;
            }

            // Samples and the latest state per machine.
            let polls = &batch.polls;
            if !polls.is_empty() {
                for chunk in polls.chunks(CHUNK) {
                    let mut q = QueryBuilder::new(db.pick(
                        "INSERT IGNORE INTO samples (machine, observed_at, cpu, mem, disk, uptime_s, failure_reason) ",
                        "INSERT OR IGNORE INTO samples (machine, observed_at, cpu, mem, disk, uptime_s, failure_reason) ",
                    ));
                    q.push_values(chunk, |mut b, env| {
                        let (cpu, mem, disk, uptime, reason) = sample_values(env);
                        b.push_bind(&env.machine)
                            .push_bind(ts(env.at))
                            .push_bind(cpu)
                            .push_bind(mem)
                            .push_bind(disk)
                            .push_bind(uptime)
                            .push_bind(reason);
                    });
                    q.build().execute(&mut *tx).await?;
                }
                // Latest state: the newest poll of each machine in this batch.
                let mut latest: HashMap<&str, &Envelope> = HashMap::new();
                for env in polls {
                    let newer = latest
                        .get(env.machine.as_str())
                        .is_none_or(|prev| env.at > prev.at);
                    if newer {
                        latest.insert(&env.machine, env);
                    }
                }
                let latest: Vec<&Envelope> = latest.into_values().collect();
                for chunk in latest.chunks(CHUNK) {
                    let mut q = QueryBuilder::new(
                        "INSERT INTO machine_latest (machine, observed_at, status, cpu, mem, disk, uptime_s, failure_reason, failure_detail, last_success_at) ",
                    );
                    q.push_values(chunk, |mut b, env| {
                        let (cpu, mem, disk, uptime, reason) = sample_values(env);
                        let (status, detail, success) = match &env.event {
                            Event::PollFailed(f) => (
                                "unreachable",
                                Some(f.detail.chars().take(600).collect::<String>()),
                                None,
                            ),
                            _ => ("up", None, Some(ts(env.at))),
                        };
                        b.push_bind(&env.machine)
                            .push_bind(ts(env.at))
                            .push_bind(status)
                            .push_bind(cpu)
                            .push_bind(mem)
                            .push_bind(disk)
                            .push_bind(uptime)
                            .push_bind(reason)
                            .push_bind(detail)
                            .push_bind(success);
                    });
                    // Only move forward in event time; keep the last success when a poll fails.
                    q.push(db.pick(
                        " ON DUPLICATE KEY UPDATE \
                         status = IF(VALUES(observed_at) > observed_at, VALUES(status), status), \
                         cpu = IF(VALUES(observed_at) > observed_at, VALUES(cpu), cpu), \
                         mem = IF(VALUES(observed_at) > observed_at, VALUES(mem), mem), \
                         disk = IF(VALUES(observed_at) > observed_at, VALUES(disk), disk), \
                         uptime_s = IF(VALUES(observed_at) > observed_at, VALUES(uptime_s), uptime_s), \
                         failure_reason = IF(VALUES(observed_at) > observed_at, VALUES(failure_reason), failure_reason), \
                         failure_detail = IF(VALUES(observed_at) > observed_at, VALUES(failure_detail), failure_detail), \
                         last_success_at = IF(VALUES(observed_at) > observed_at, COALESCE(VALUES(last_success_at), last_success_at), last_success_at), \
                         observed_at = GREATEST(observed_at, VALUES(observed_at))",
                        // SQLite evaluates every SET expression against the old row.
                        " ON CONFLICT (machine) DO UPDATE SET \
                         status = CASE WHEN excluded.observed_at > observed_at THEN excluded.status ELSE status END, \
                         cpu = CASE WHEN excluded.observed_at > observed_at THEN excluded.cpu ELSE cpu END, \
                         mem = CASE WHEN excluded.observed_at > observed_at THEN excluded.mem ELSE mem END, \
                         disk = CASE WHEN excluded.observed_at > observed_at THEN excluded.disk ELSE disk END, \
                         uptime_s = CASE WHEN excluded.observed_at > observed_at THEN excluded.uptime_s ELSE uptime_s END, \
                         failure_reason = CASE WHEN excluded.observed_at > observed_at THEN excluded.failure_reason ELSE failure_reason END, \
                         failure_detail = CASE WHEN excluded.observed_at > observed_at THEN excluded.failure_detail ELSE failure_detail END, \
                         last_success_at = CASE WHEN excluded.observed_at > observed_at THEN COALESCE(excluded.last_success_at, last_success_at) ELSE last_success_at END, \
                         observed_at = MAX(observed_at, excluded.observed_at)",
                    ));
                    q.build().execute(&mut *tx).await?;
                }
            }

            // Incidents: the change feed, updates and resolutions of earlier
            // incidents, then new incidents.
            for chunk in incidents.order.chunks(CHUNK) {
                let mut feed =
                    QueryBuilder::new("INSERT INTO incident_changes (incident_id, changed_at) ");
                feed.push_values(chunk, |mut b, id| {
                    b.push_bind(id.to_string()).push_bind(now);
                });
                feed.build().execute(&mut *tx).await?;
            }
            // Updates and resolutions of earlier incidents first: an incident resolved
            // and a new one opened for the same machine x rule can share a batch, and
            // the new row must not meet the old one still open.
            let mysql_updates = if db.is_sqlite() {
                &[][..]
            } else {
                &incidents.existing[..]
            };
            for chunk in mysql_updates.chunks(CHUNK) {
                // MySQL: one multi-row update per chunk, a join on a derived table.
                let mut q = QueryBuilder::new("UPDATE incidents i JOIN (");
                for (n, id) in chunk.iter().enumerate() {
                    let c = &incidents.changes[id];
                    q.push(if n == 0 {
                        "SELECT "
                    } else {
                        " UNION ALL SELECT "
                    });
                    let mut sep = q.separated(", ");
                    sep.push_bind(id.to_string());
                    sep.push_unseparated(" AS id");
                    sep.push_bind(c.last_breach_at.is_some());
                    sep.push_unseparated(" AS updated");
                    sep.push_bind(c.peak.flatten());
                    sep.push_unseparated(" AS peak");
                    sep.push_bind(c.last_value.flatten());
                    sep.push_unseparated(" AS last_value");
                    sep.push_bind(c.last_breach_at.map(ts));
                    sep.push_unseparated(" AS last_breach_at");
                    sep.push_bind(c.resolved.map(|(t, _)| ts(t)));
                    sep.push_unseparated(" AS resolved_at");
                    sep.push_bind(c.resolved.map_or("", |(_, r)| r));
                    sep.push_unseparated(" AS resolution");
                }
                q.push(
                    ") u ON i.id = u.id SET \
                     i.peak = IF(u.updated AND u.last_breach_at >= i.last_breach_at, u.peak, i.peak), \
                     i.last_value = IF(u.updated AND u.last_breach_at >= i.last_breach_at, u.last_value, i.last_value), \
                     i.last_breach_at = IF(u.updated AND u.last_breach_at >= i.last_breach_at, u.last_breach_at, i.last_breach_at), \
                     i.resolution = IF(i.resolution = '' AND u.resolved_at IS NOT NULL, u.resolution, i.resolution), \
                     i.resolved_at = COALESCE(i.resolved_at, u.resolved_at)",
                );
                q.build().execute(&mut *tx).await?;
            }
            if db.is_sqlite() {
                // SQLite: one statement per incident (in-process, so cheap); every
                // SET expression sees the old row, as the MySQL IF()s are written to.
                for id in &incidents.existing {
                    let c = &incidents.changes[id];
                    sqlx::query(
                        "UPDATE incidents SET \
                         peak = CASE WHEN ? AND ? >= last_breach_at THEN ? ELSE peak END, \
                         last_value = CASE WHEN ? AND ? >= last_breach_at THEN ? ELSE last_value END, \
                         last_breach_at = CASE WHEN ? AND ? >= last_breach_at THEN ? ELSE last_breach_at END, \
                         resolution = CASE WHEN resolution = '' AND ? IS NOT NULL THEN ? ELSE resolution END, \
                         resolved_at = COALESCE(resolved_at, ?) \
                         WHERE id = ?",
                    )
                    .bind(c.last_breach_at.is_some())
                    .bind(c.last_breach_at.map(ts))
                    .bind(c.peak.flatten())
                    .bind(c.last_breach_at.is_some())
                    .bind(c.last_breach_at.map(ts))
                    .bind(c.last_value.flatten())
                    .bind(c.last_breach_at.is_some())
                    .bind(c.last_breach_at.map(ts))
                    .bind(c.last_breach_at.map(ts))
                    .bind(c.resolved.map(|(t, _)| ts(t)))
                    .bind(c.resolved.map_or("", |(_, r)| r))
                    .bind(c.resolved.map(|(t, _)| ts(t)))
                    .bind(id.to_string())
                    .execute(&mut *tx)
                    .await?;
                }
            }
            for chunk in incidents.new.chunks(CHUNK) {
                let mut q = QueryBuilder::new(
                    "INSERT INTO incidents (id, machine, rule, threshold, for_ms, started_at, opened_at, peak, last_value, last_breach_at, resolved_at, resolution) ",
                );
                q.push_values(chunk, |mut b, id| {
                    let c = &incidents.changes[id];
                    if let Some((machine, o)) = c.opened {
                        b.push_bind(id.to_string())
                            .push_bind(machine)
                            .push_bind(o.rule.as_str())
                            .push_bind(o.threshold)
                            .push_bind(o.for_ms as i64)
                            .push_bind(ts(o.started_at))
                            .push_bind(ts(o.opened_at))
                            .push_bind(c.peak.unwrap_or(o.peak))
                            .push_bind(c.last_value.unwrap_or(o.last_value))
                            .push_bind(ts(c.last_breach_at.unwrap_or(o.opened_at)))
                            .push_bind(c.resolved.map(|(t, _)| ts(t)))
                            .push_bind(c.resolved.map_or("", |(_, r)| r));
                    }
                });
                // Re-applying a batch after a crash (same id) changes nothing. A
                // clash on the one-open-incident key (a second open incident of a
                // machine x rule, with another id) fails the statement loudly: on
                // MySQL by setting the key to NULL, on SQLite because only the id
                // conflict is handled.
                q.push(db.pick(
                    " ON DUPLICATE KEY UPDATE id = IF(id = VALUES(id), id, NULL)",
                    " ON CONFLICT (id) DO NOTHING",
                ));
                q.build().execute(&mut *tx).await?;
            }

            // The outbox carries every opening and resolution, and only the last update
            // of each incident in the batch (an update carries the full peak/last state,
            // so earlier ones in the same batch add nothing for a reader).
            if self.outbox {
                let mut later_update = std::collections::HashSet::new();
                let mut outbox: Vec<&Envelope> = batch
                    .incident_events
                    .iter()
                    .rev()
                    .filter(|env| match &env.event {
                        Event::IncidentUpdated(u) => later_update.insert(u.incident_id),
                        _ => true,
                    })
                    .collect();
                outbox.reverse();
                if !outbox.is_empty() {
                    let mut q = QueryBuilder::new(
                        "INSERT INTO incident_outbox (consumer_group, machine, payload) ",
                    );
                    q.push_values(&outbox, |mut b, env| {
                        b.push_bind(&self.group)
                            .push_bind(&env.machine)
                            .push_bind(String::from_utf8_lossy(&env.encode()).into_owned());
                    });
                    q.build().execute(&mut *tx).await?;
                }
            }
            tx.commit().await?;
            Ok(())
        })
    }

    /// The oldest outbox entries of this group, up to `limit`: `(seq, machine, payload)`.
    pub async fn outbox(&self, limit: u32) -> Result<Vec<(i64, String, String)>, sqlx::Error> {
        on!(&self.db, |p| {
            sqlx::query_as("SELECT seq, machine, payload FROM incident_outbox WHERE consumer_group = ? ORDER BY seq LIMIT ?")
            .bind(&self.group)
            .bind(limit)
            .fetch_all(p)
            .await
        })
    }

    /// Deletes published outbox entries up to and including `seq`.
    pub async fn outbox_done(&self, seq: i64) -> Result<(), sqlx::Error> {
        on!(&self.db, |p| sqlx::query(
            "DELETE FROM incident_outbox WHERE consumer_group = ? AND seq <= ?"
        )
        .bind(&self.group)
        .bind(seq)
        .execute(p)
        .await
        .map(|_| ()))
    }
}

/// Rows per multi-row statement: at 12 binds a row, well under SQLite's 32,766
/// variables and MySQL's 65,535 placeholders per statement.
const CHUNK: usize = 2_000;

/// `(cpu, mem, disk, uptime_s, failure_reason)` of a poll event.
#[allow(clippy::type_complexity)]
fn sample_values(
    env: &Envelope,
) -> (
    Option<f64>,
    Option<f64>,
    Option<f64>,
    Option<i64>,
    Option<&str>,
) {
    match &env.event {
        Event::MetricSampled(s) => (
            s.cpu,
            s.mem,
            s.disk,
            s.uptime_s.map(|u| u.min(i64::MAX as u64) as i64),
            None,
        ),
        Event::PollFailed(f) => (None, None, None, None, Some(f.reason.as_str())),
        _ => (None, None, None, None, None),
    }
}

/// A batch's incident events coalesced per incident (the fold emits them in
/// order, so the last one wins).
#[derive(Default)]
struct Coalesced<'a> {
    order: Vec<uuid::Uuid>,
    changes: HashMap<uuid::Uuid, Change<'a>>,
    /// Opened in this batch.
    new: Vec<uuid::Uuid>,
    /// Opened earlier.
    existing: Vec<uuid::Uuid>,
}

#[derive(Default)]
struct Change<'a> {
    opened: Option<(&'a str, &'a proto_events::IncidentOpened)>,
    peak: Option<Option<f64>>,
    last_value: Option<Option<f64>>,
    last_breach_at: Option<chrono::DateTime<Utc>>,
    resolved: Option<(chrono::DateTime<Utc>, &'static str)>,
}

fn coalesce_incidents(events: &[Envelope]) -> Coalesced<'_> {
    let mut c = Coalesced::default();
    for env in events {
        let id = match &env.event {
            Event::IncidentOpened(o) => o.incident_id,
            Event::IncidentUpdated(u) => u.incident_id,
            Event::IncidentResolved(r) => r.incident_id,
            _ => continue,
        };
        let change = c.changes.entry(id).or_insert_with(|| {
            c.order.push(id);
            Change::default()
        });
        match &env.event {
            Event::IncidentOpened(o) => change.opened = Some((env.machine.as_str(), o)),
            Event::IncidentUpdated(u) => {
                change.peak = Some(u.peak);
                change.last_value = Some(u.last_value);
                change.last_breach_at = Some(u.last_breach_at);
            }
            Event::IncidentResolved(r) => {
                change.resolved = Some((r.resolved_at, r.reason.as_str()))
            }
            _ => {}
        }
    }
    let (new, existing) = c
        .order
        .iter()
        .partition(|id| c.changes[id].opened.is_some());
    c.new = new;
    c.existing = existing;
    c
}
