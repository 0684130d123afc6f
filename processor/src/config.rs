//! The processor's configuration, read once at start-up from the environment
//! (keys and defaults listed in `example.env`).

use proto_events::settings::{SettingError, Settings};
use proto_events::{topics, RuleSet};
use std::time::Duration;

/// Validated processor settings.
#[derive(Debug, Clone)]
pub struct ProcessorConfig {
    /// `DATABASE_URL`: MySQL URL of the projections.
    pub database_url: String,
    /// `KAFKA_BROKERS`: bootstrap servers.
    pub kafka_brokers: String,
    /// `PROCESSOR_GROUP_ID`: consumer group (default `monitor-processor`).
    pub group_id: String,
    /// Topic of machine events (fixed: [`topics::MACHINE_EVENTS`]).
    pub topic: String,
    /// Topic incident events are published to (fixed: [`topics::INCIDENT_EVENTS`]).
    pub incident_topic: String,
    /// Number of partitions to create topics with if they are missing (`KAFKA_PARTITIONS`, default 6).
    pub partitions: i32,
    /// Default rules (`RULE_*` keys).
    pub rules: RuleSet,
    /// `PROCESSOR_BATCH_MAX`: events per transaction (default 1000).
    pub batch_max: usize,
    /// `PROCESSOR_BATCH_LINGER`: longest wait before committing a partial batch (default 50ms).
    pub batch_linger: Duration,
    /// `KAFKA_FETCH_WAIT_MAX_MS`: broker fetch wait (default 100; tests use 10).
    pub fetch_wait_max_ms: u32,
    /// `KAFKA_SESSION_TIMEOUT_MS`: group session timeout (default 10000).
    pub session_timeout_ms: u32,
    /// `KAFKA_MAX_POLL_INTERVAL_MS`: also the rebalance timeout a broker may wait
    /// for members to rejoin (default 300000; at least the session timeout).
    pub max_poll_interval_ms: u32,
    /// `PROCESSOR_BACKTEST_LOOKBACK`: how far before a requested backtest's range
    /// the replay starts reading, so runs in progress are rebuilt (default 6h).
    pub backtest_lookback: Duration,
}

impl ProcessorConfig {
    /// Reads and validates every key; the error names the first bad key.
    pub fn from_settings(s: &Settings) -> Result<Self, SettingError> {
        let batch_max = s.parse_or("PROCESSOR_BATCH_MAX", 1000usize)?;
        if batch_max == 0 || batch_max > 20_000 {
            return Err(SettingError {
                key: "PROCESSOR_BATCH_MAX".into(),
                message: "must be from 1 to 20000".into(),
            });
        }
        let partitions = s.parse_or("KAFKA_PARTITIONS", 6i32)?;
        if !(1..=1000).contains(&partitions) {
            return Err(SettingError {
                key: "KAFKA_PARTITIONS".into(),
                message: "must be from 1 to 1000".into(),
            });
        }
        let session_timeout_ms = s.parse_or("KAFKA_SESSION_TIMEOUT_MS", 10_000u32)?;
        if !(1_000..=300_000).contains(&session_timeout_ms) {
            return Err(SettingError {
                key: "KAFKA_SESSION_TIMEOUT_MS".into(),
                message: "must be from 1000 to 300000".into(),
            });
        }
        let max_poll_interval_ms = s.parse_or("KAFKA_MAX_POLL_INTERVAL_MS", 300_000u32)?;
        if max_poll_interval_ms < session_timeout_ms {
            return Err(SettingError {
                key: "KAFKA_MAX_POLL_INTERVAL_MS".into(),
                message: "must be at least KAFKA_SESSION_TIMEOUT_MS".into(),
            });
        }
        Ok(ProcessorConfig {
            database_url: s.required("DATABASE_URL")?,
            kafka_brokers: s.required("KAFKA_BROKERS")?,
            group_id: s
                .raw("PROCESSOR_GROUP_ID")
                .unwrap_or_else(|| "monitor-processor".to_owned()),
            topic: topics::MACHINE_EVENTS.to_owned(),
            incident_topic: topics::INCIDENT_EVENTS.to_owned(),
            partitions,
            rules: s.rules()?,
            batch_max,
            batch_linger: s.duration_or("PROCESSOR_BATCH_LINGER", Duration::from_millis(50))?,
            fetch_wait_max_ms: s.parse_or("KAFKA_FETCH_WAIT_MAX_MS", 100u32)?,
            session_timeout_ms,
            max_poll_interval_ms,
            backtest_lookback: s
                .duration_or("PROCESSOR_BACKTEST_LOOKBACK", Duration::from_secs(6 * 3600))?,
        })
    }
}
