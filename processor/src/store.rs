//! The MySQL side of the processor: projections (incidents, latest state per
//! machine, sample history), fold state, log positions and the incident outbox, all
//! written in one transaction per batch. That transaction is the exactly-once point.

use crate::fold::{MachineState, RulesTimeline};
use chrono::{DateTime, Utc};
use proto_events::{Envelope, Event};
use sqlx::{MySqlPool, QueryBuilder, Row};
use std::collections::{BTreeMap, HashMap};

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
    pool: MySqlPool,
    group: String,
    topic: String,
}

fn ts(t: DateTime<Utc>) -> chrono::NaiveDateTime {
    t.naive_utc()
}

impl Store {
    /// The projection database.
    pub fn pool(&self) -> &MySqlPool {
        &self.pool
    }

    /// A store for `group` consuming `topic`.
    pub fn new(pool: MySqlPool, group: &str, topic: &str) -> Self {
        Store {
            pool,
            group: group.to_owned(),
            topic: topic.to_owned(),
        }
    }

    /// Every partition's committed next offset for this group and topic.
    pub async fn committed_offsets(&self) -> Result<HashMap<i32, i64>, sqlx::Error> {
        let rows = sqlx::query("SELECT partition_id, next_offset FROM processor_offsets WHERE consumer_group = ? AND topic = ?")
            .bind(&self.group)
            .bind(&self.topic)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("partition_id")?, r.try_get("next_offset")?)))
            .collect()
    }

    /// Loads a partition's committed position and fold state.
    pub async fn load_partition(&self, partition: i32) -> Result<PartitionPosition, sqlx::Error> {
        let row = sqlx::query(
            "SELECT next_offset, rules_timeline FROM processor_offsets WHERE consumer_group = ? AND topic = ? AND partition_id = ?",
        )
        .bind(&self.group)
        .bind(&self.topic)
        .bind(partition)
        .fetch_optional(&self.pool)
        .await?;
        let (next_offset, rules) = match row {
            Some(row) => {
                let rules: String = row.try_get("rules_timeline")?;
                (
                    Some(row.try_get::<i64, _>("next_offset")?),
                    serde_json::from_str(&rules).ok(),
                )
            }
            None => (None, None),
        };
        let rows = sqlx::query(
            "SELECT machine, state FROM fold_state WHERE consumer_group = ? AND partition_id = ?",
        )
        .bind(&self.group)
        .bind(partition)
        .fetch_all(&self.pool)
        .await?;
        let mut machines = Vec::with_capacity(rows.len());
        for row in rows {
            let machine: String = row.try_get("machine")?;
            let state: String = row.try_get("state")?;
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
        let mut tx = self.pool.begin().await?;
        let now = Utc::now().naive_utc();
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
            if !p.machine_states.is_empty() {
                let mut q = QueryBuilder::new(
                    "INSERT INTO fold_state (consumer_group, machine, partition_id, state) ",
                );
                q.push_values(&p.machine_states, |mut b, (machine, state)| {
                    b.push_bind(&self.group)
                        .push_bind(machine)
                        .push_bind(partition)
                        .push_bind(serde_json::to_string(state).unwrap_or_default());
                });
                q.push(" ON DUPLICATE KEY UPDATE partition_id = VALUES(partition_id), state = VALUES(state)");
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
            q.push(
                " ON DUPLICATE KEY UPDATE first_offset = LEAST(first_offset, VALUES(first_offset))",
            );
            q.build().execute(&mut *tx).await?;
        }
        self.write_polls(&mut tx, &batch.polls).await?;
        self.write_incidents(&mut tx, &batch.incident_events)
            .await?;
        // The outbox carries every opening and resolution, and only the last update
        // of each incident in the batch (an update carries the full peak/last state,
        // so earlier ones in the same batch add nothing for a reader).
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
        tx.commit().await?;
        Ok(())
    }

    async fn write_polls(
        &self,
        tx: &mut sqlx::MySqlConnection,
        polls: &[Envelope],
    ) -> Result<(), sqlx::Error> {
        if polls.is_empty() {
            return Ok(());
        }
        let mut q = QueryBuilder::new("INSERT IGNORE INTO samples (machine, observed_at, cpu, mem, disk, uptime_s, failure_reason) ");
        q.push_values(polls, |mut b, env| {
            b.push_bind(&env.machine).push_bind(ts(env.at));
            match &env.event {
                Event::MetricSampled(s) => {
                    b.push_bind(s.cpu)
                        .push_bind(s.mem)
                        .push_bind(s.disk)
                        .push_bind(s.uptime_s)
                        .push_bind(None::<&str>);
                }
                Event::PollFailed(f) => {
                    b.push_bind(None::<f64>)
                        .push_bind(None::<f64>)
                        .push_bind(None::<f64>)
                        .push_bind(None::<u64>)
                        .push_bind(Some(f.reason.as_str()));
                }
                _ => {
                    b.push_bind(None::<f64>)
                        .push_bind(None::<f64>)
                        .push_bind(None::<f64>)
                        .push_bind(None::<u64>)
                        .push_bind(None::<&str>);
                }
            }
        });
        q.build().execute(&mut *tx).await?;

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
        let mut q = QueryBuilder::new(
            "INSERT INTO machine_latest (machine, observed_at, status, cpu, mem, disk, uptime_s, failure_reason, failure_detail, last_success_at) ",
        );
        q.push_values(latest.values(), |mut b, env| {
            b.push_bind(&env.machine).push_bind(ts(env.at));
            match &env.event {
                Event::MetricSampled(s) => {
                    b.push_bind("up")
                        .push_bind(s.cpu)
                        .push_bind(s.mem)
                        .push_bind(s.disk)
                        .push_bind(s.uptime_s)
                        .push_bind(None::<&str>)
                        .push_bind(None::<&str>)
                        .push_bind(Some(ts(env.at)));
                }
                Event::PollFailed(f) => {
                    let detail: String = f.detail.chars().take(600).collect();
                    b.push_bind("unreachable")
                        .push_bind(None::<f64>)
                        .push_bind(None::<f64>)
                        .push_bind(None::<f64>)
                        .push_bind(None::<u64>)
                        .push_bind(Some(f.reason.as_str()))
                        .push_bind(Some(detail))
                        .push_bind(None::<chrono::NaiveDateTime>);
                }
                _ => {}
            }
        });
        // Only move forward in event time; keep the last success when a poll fails.
        q.push(
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
        );
        q.build().execute(&mut *tx).await?;
        Ok(())
    }

    /// Writes a batch's incident events as at most two statements: one multi-row
    /// insert for incidents opened in this batch (with their state at the end of
    /// the batch), one multi-row update (a join on a derived table) for incidents
    /// opened earlier. Events are coalesced per incident first; the fold emits them
    /// in order, so the last one wins.
    async fn write_incidents(
        &self,
        tx: &mut sqlx::MySqlConnection,
        events: &[Envelope],
    ) -> Result<(), sqlx::Error> {
        if events.is_empty() {
            return Ok(());
        }
        #[derive(Default)]
        struct Change<'a> {
            opened: Option<(&'a str, &'a proto_events::IncidentOpened)>,
            peak: Option<Option<f64>>,
            last_value: Option<Option<f64>>,
            last_breach_at: Option<chrono::DateTime<Utc>>,
            resolved: Option<(chrono::DateTime<Utc>, &'static str)>,
        }
        let mut order: Vec<uuid::Uuid> = Vec::new();
        let mut changes: HashMap<uuid::Uuid, Change<'_>> = HashMap::new();
        for env in events {
            let id = match &env.event {
                Event::IncidentOpened(o) => o.incident_id,
                Event::IncidentUpdated(u) => u.incident_id,
                Event::IncidentResolved(r) => r.incident_id,
                _ => continue,
            };
            let change = changes.entry(id).or_insert_with(|| {
                order.push(id);
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
        // The change feed the API long-polls: one row per incident touched.
        let mut feed = QueryBuilder::new("INSERT INTO incident_changes (incident_id, changed_at) ");
        let now = Utc::now().naive_utc();
        feed.push_values(&order, |mut b, id| {
            b.push_bind(id.to_string()).push_bind(now);
        });
        if !order.is_empty() {
            feed.build().execute(&mut *tx).await?;
        }
        let (new, existing): (Vec<uuid::Uuid>, Vec<uuid::Uuid>) = order
            .into_iter()
            .partition(|id| changes[id].opened.is_some());
        // Updates and resolutions of earlier incidents first: an incident resolved
        // and a new one opened for the same machine x rule can share a batch, and the
        // new row must not meet the old one still open.
        if !existing.is_empty() {
            let mut q = QueryBuilder::new("UPDATE incidents i JOIN (");
            for (n, id) in existing.iter().enumerate() {
                let c = &changes[id];
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
                 i.resolution = IF(i.resolved_at IS NULL AND u.resolved_at IS NOT NULL, u.resolution, i.resolution), \
                 i.resolved_at = COALESCE(i.resolved_at, u.resolved_at)",
            );
            q.build().execute(&mut *tx).await?;
        }
        if !new.is_empty() {
            let mut q = QueryBuilder::new(
                "INSERT INTO incidents (id, machine, rule, threshold, for_ms, started_at, opened_at, peak, last_value, last_breach_at, resolved_at, resolution) ",
            );
            q.push_values(&new, |mut b, id| {
                let c = &changes[id];
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
            // Re-applying a batch after a crash (same id) changes nothing. A clash on
            // `open_key` (a second open incident of a machine x rule, with another
            // id) sets the key to NULL, which fails the statement loudly instead of
            // being swallowed.
            q.push(" ON DUPLICATE KEY UPDATE id = IF(id = VALUES(id), id, NULL)");
            q.build().execute(&mut *tx).await?;
        }
        Ok(())
    }

    /// The oldest outbox entries of this group, up to `limit`: `(seq, machine, payload)`.
    pub async fn outbox(&self, limit: u32) -> Result<Vec<(i64, String, String)>, sqlx::Error> {
        let rows = sqlx::query("SELECT seq, machine, payload FROM incident_outbox WHERE consumer_group = ? ORDER BY seq LIMIT ?")
            .bind(&self.group)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter()
            .map(|r| {
                Ok((
                    r.try_get("seq")?,
                    r.try_get("machine")?,
                    r.try_get("payload")?,
                ))
            })
            .collect()
    }

    /// Deletes published outbox entries up to and including `seq`.
    pub async fn outbox_done(&self, seq: i64) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM incident_outbox WHERE consumer_group = ? AND seq <= ?")
            .bind(&self.group)
            .bind(seq)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

/// Applies the schema migrations in `migrations/` (idempotent).
pub async fn migrate(pool: &MySqlPool) -> Result<(), sqlx::migrate::MigrateError> {
    sqlx::migrate!("../migrations").run(pool).await
}
