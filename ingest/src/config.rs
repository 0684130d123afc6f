//! Ingest configuration, read once at start-up from the environment (keys and
//! defaults listed in `example.env`). A bad value stops start-up naming the key.

use proto_events::settings::{SettingError, Settings};
use std::time::Duration;

/// Which slice of the fleet this instance polls (`INGEST_SHARD=i/n`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// This instance's index, `0..count`.
    pub index: u32,
    /// Number of instances.
    pub count: u32,
}

impl Shard {
    /// The whole fleet.
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    /// Parses `i/n` with `i < n`.
    pub fn parse(s: &str) -> Result<Shard, String> {
        let (i, n) = s.split_once('/').ok_or("expected i/n, e.g. 0/2")?;
        let index: u32 = i.trim().parse().map_err(|_| "i is not a number")?;
        let count: u32 = n.trim().parse().map_err(|_| "n is not a number")?;
        if count == 0 || index >= count {
            return Err("need 0 <= i < n".to_owned());
        }
        Ok(Shard { index, count })
    }

    /// Whether `machine` belongs to this shard (stable hash of its name).
    pub fn owns(&self, machine: &str) -> bool {
        crate::schedule::stable_hash(machine) % u64::from(self.count) == u64::from(self.index)
    }
}

/// Validated ingest settings.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// `DATABASE_URL`: where the machine registry lives.
    pub database_url: String,
    /// `KAFKA_BROKERS`: bootstrap servers (required to publish to Kafka; unused
    /// when publishing to the embedded log).
    pub kafka_brokers: Option<String>,
    /// Topic the events go to (fixed: `monitor.machine-events.v1`; tests use their own).
    pub topic: String,
    /// `KAFKA_PARTITIONS`: partitions to create the topic with if missing (default 6).
    pub partitions: i32,
    /// `POLL_INTERVAL`: default poll interval (default 15m).
    pub poll_interval: Duration,
    /// `POLL_TIMEOUT`: total time allowed for one poll (default 10s).
    pub poll_timeout: Duration,
    /// `POLL_CONNECT_TIMEOUT`: time allowed to connect (default 3s).
    pub connect_timeout: Duration,
    /// `POLL_BODY_LIMIT_BYTES`: largest accepted body (default 65536).
    pub body_limit_bytes: usize,
    /// `POLL_CONCURRENCY`: polls in flight at most (default 512).
    pub concurrency: usize,
    /// `MACHINES_REFRESH`: how often the registry is re-read (default 2s).
    pub machines_refresh: Duration,
    /// `INGEST_SHARD`: `i/n` (default `0/1`).
    pub shard: Shard,
    /// `INGEST_BUFFER_EVENTS`: events held while the broker is slow or down, beyond
    /// librdkafka's own queue of 100,000 (default 200000); the oldest go first.
    pub buffer_events: usize,
    /// `INGEST_METRICS_ADDR`: where `/metrics` is served (default `127.0.0.1:9101`).
    pub metrics_addr: std::net::SocketAddr,
}

impl IngestConfig {
    /// Reads and validates every key.
    pub fn from_settings(s: &Settings) -> Result<Self, SettingError> {
        let bad = |key: &str, message: &str| SettingError {
            key: key.to_owned(),
            message: message.to_owned(),
        };
        let poll_interval = s.duration_or("POLL_INTERVAL", Duration::from_secs(15 * 60))?;
        if poll_interval < Duration::from_millis(100) {
            return Err(bad("POLL_INTERVAL", "must be at least 100ms"));
        }
        let concurrency = s.parse_or("POLL_CONCURRENCY", 512usize)?;
        if concurrency == 0 {
            return Err(bad("POLL_CONCURRENCY", "must be at least 1"));
        }
        let shard = match s.raw("INGEST_SHARD") {
            None => Shard::ALL,
            Some(v) => Shard::parse(&v).map_err(|m| bad("INGEST_SHARD", &m))?,
        };
        Ok(IngestConfig {
            database_url: s.required("DATABASE_URL")?,
            kafka_brokers: s.raw("KAFKA_BROKERS"),
            topic: proto_events::topics::MACHINE_EVENTS.to_owned(),
            partitions: s.parse_or("KAFKA_PARTITIONS", 6i32)?,
            poll_interval,
            poll_timeout: s.duration_or("POLL_TIMEOUT", Duration::from_secs(10))?,
            connect_timeout: s.duration_or("POLL_CONNECT_TIMEOUT", Duration::from_secs(3))?,
            body_limit_bytes: s.parse_or("POLL_BODY_LIMIT_BYTES", 64 * 1024usize)?,
            concurrency,
            machines_refresh: s.duration_or("MACHINES_REFRESH", Duration::from_secs(2))?,
            shard,
            buffer_events: s.parse_or("INGEST_BUFFER_EVENTS", 200_000usize)?,
            metrics_addr: s.parse_or(
                "INGEST_METRICS_ADDR",
                std::net::SocketAddr::from(([127, 0, 0, 1], 9101)),
            )?,
        })
    }
}
