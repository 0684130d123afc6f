//! The embedded event log: an append-only `events` table in the SQLite file,
//! standing in for Kafka in one-process mode. One partition (0); an event's
//! `log_offset` is its position, which the processor commits in the same
//! transaction as the projections it produced (exactly once, as with Kafka).
//! Appends wake in-process readers at once; rows are never updated or deleted.

use proto_events::Envelope;
use sqlx::sqlite::SqlitePool;
use sqlx::QueryBuilder;
use std::sync::Arc;
use tokio::sync::watch;

/// The only partition of the embedded log.
pub const PARTITION: i32 = 0;
/// The embedded log's name where a topic is expected (offsets, time index).
pub const TOPIC: &str = "embedded.events";

/// Handle to the embedded log (cheap to clone).
#[derive(Debug, Clone)]
pub struct EventLog {
    pool: SqlitePool,
    appended: Arc<watch::Sender<i64>>,
}

impl EventLog {
    /// The log in `pool`'s database (migrated).
    pub fn new(pool: SqlitePool) -> Self {
        let (appended, _) = watch::channel(0);
        EventLog {
            pool,
            appended: Arc::new(appended),
        }
    }

    /// Appends events in one transaction, in order; returns the offset of the last.
    pub async fn append(&self, events: &[Envelope]) -> Result<Option<i64>, sqlx::Error> {
        if events.is_empty() {
            return Ok(None);
        }
        let mut tx = self.pool.begin().await?;
        let mut last = 0;
        // 3 binds per row, well under SQLite's 32,766 variables per statement.
        for chunk in events.chunks(2_000) {
            let mut q = QueryBuilder::new("INSERT INTO events (machine, at, payload) ");
            q.push_values(chunk, |mut b, env| {
                b.push_bind(env.machine.as_str())
                    .push_bind(env.at.naive_utc())
                    .push_bind(env.encode());
            });
            // The rowid of a multi-row insert's last row: the new end of the log.
            last = q.build().execute(&mut *tx).await?.last_insert_rowid();
        }
        tx.commit().await?;
        self.appended.send_replace(last);
        Ok(Some(last))
    }

    /// Up to `limit` events from `offset` on: `(offset, payload)`, in order.
    pub async fn read(&self, offset: i64, limit: u32) -> Result<Vec<(i64, Vec<u8>)>, sqlx::Error> {
        sqlx::query_as(
            "SELECT log_offset, payload FROM events WHERE log_offset >= ? ORDER BY log_offset LIMIT ?",
        )
        .bind(offset)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
    }

    /// The offset the next append will get (the high watermark).
    pub async fn end(&self) -> Result<i64, sqlx::Error> {
        let last: Option<i64> = sqlx::query_scalar("SELECT MAX(log_offset) FROM events")
            .fetch_one(&self.pool)
            .await?;
        Ok(last.unwrap_or(0) + 1)
    }

    /// Notified with the last offset after every append in this process.
    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.appended.subscribe()
    }
}
