//! The storage seam shared by every service. A [`Db`] is either MySQL (scaled-out
//! mode, with Kafka as the log) or an embedded SQLite file (one-process mode, with
//! [`log::EventLog`] as the log). Code is written once and compiled for both with
//! [`on!`]: the body is type-checked against each pool type, so a query, its binds
//! and its row decoding are shared, and only SQL that differs between the dialects
//! is chosen with [`Db::pick`].
//!
//! - MySQL 8 / MariaDB: `migrations/*.sql`.
//! - SQLite: `migrations/sqlite/*.sql` (same tables and columns, plus `events`).

pub mod log;

use sqlx::mysql::{MySqlPool, MySqlPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use std::str::FromStr;
use std::time::Duration;

/// A connection pool to one of the two backends.
#[derive(Debug, Clone)]
pub enum Db {
    /// MySQL 8 or MariaDB (`mysql://…`).
    MySql(MySqlPool),
    /// An embedded SQLite file (`sqlite://path`).
    Sqlite(SqlitePool),
}

/// Runs `$body` with `$pool` bound to the backend's pool (`&MySqlPool` or
/// `&SqlitePool`); the body is compiled once per backend.
///
/// ```ignore
/// let n: i64 = storage::on!(&db, |p| sqlx::query_scalar("SELECT COUNT(*) FROM machines").fetch_one(p).await)?;
/// ```
#[macro_export]
macro_rules! on {
    ($db:expr, |$pool:ident| $body:expr) => {
        match $db {
            $crate::Db::MySql($pool) => $body,
            $crate::Db::Sqlite($pool) => $body,
        }
    };
}

/// The id the last `INSERT` generated, on either backend.
pub trait LastId {
    /// `LAST_INSERT_ID()` or `last_insert_rowid()`.
    fn last_id(&self) -> i64;
}

impl LastId for sqlx::mysql::MySqlQueryResult {
    fn last_id(&self) -> i64 {
        self.last_insert_id() as i64
    }
}

impl LastId for sqlx::sqlite::SqliteQueryResult {
    fn last_id(&self) -> i64 {
        self.last_insert_rowid()
    }
}

impl From<MySqlPool> for Db {
    fn from(pool: MySqlPool) -> Self {
        Db::MySql(pool)
    }
}

impl From<SqlitePool> for Db {
    fn from(pool: SqlitePool) -> Self {
        Db::Sqlite(pool)
    }
}

impl Db {
    /// Connects to `url`: `mysql://…` or `sqlite://path` (the file is created if
    /// missing; WAL journal, so readers never wait for the writer).
    pub async fn connect(url: &str, max_connections: u32) -> Result<Db, sqlx::Error> {
        if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(sqlx::sqlite::SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(30));
            let pool = SqlitePoolOptions::new()
                .max_connections(max_connections.max(2))
                .connect_with(options)
                .await?;
            Ok(Db::Sqlite(pool))
        } else {
            Ok(Db::MySql(
                MySqlPoolOptions::new()
                    .max_connections(max_connections)
                    .connect(url)
                    .await?,
            ))
        }
    }

    /// Opens (creating it if missing) the SQLite file at `path`, taken as a path,
    /// not parsed as a URL.
    pub async fn open_sqlite_file(
        path: &std::path::Path,
        max_connections: u32,
    ) -> Result<Db, sqlx::Error> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(sqlx::sqlite::SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(30));
        let pool = SqlitePoolOptions::new()
            .max_connections(max_connections.max(2))
            .connect_with(options)
            .await?;
        Ok(Db::Sqlite(pool))
    }

    /// Applies the backend's migrations (idempotent).
    pub async fn migrate(&self) -> Result<(), sqlx::migrate::MigrateError> {
        match self {
            Db::MySql(p) => sqlx::migrate!("../migrations").run(p).await,
            Db::Sqlite(p) => sqlx::migrate!("../migrations/sqlite").run(p).await,
        }
    }

    /// Whether this is the embedded backend.
    pub fn is_sqlite(&self) -> bool {
        matches!(self, Db::Sqlite(_))
    }

    /// The backend's name, for logs: `mysql` or `sqlite`.
    pub fn backend(&self) -> &'static str {
        match self {
            Db::MySql(_) => "mysql",
            Db::Sqlite(_) => "sqlite",
        }
    }

    /// `mysql` on MySQL, `sqlite` on SQLite: for the few statements whose SQL
    /// differs (upserts, multi-table updates).
    pub fn pick<'a>(&self, mysql: &'a str, sqlite: &'a str) -> &'a str {
        match self {
            Db::MySql(_) => mysql,
            Db::Sqlite(_) => sqlite,
        }
    }

    /// Closes the pool.
    pub async fn close(&self) {
        on!(self, |p| p.close().await)
    }
}
