//! query-api configuration, read once at start-up from the environment.

use proto_events::settings::{SettingError, Settings};
use std::net::SocketAddr;

/// Validated query-api settings.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// `DATABASE_URL`: MySQL URL of the projections.
    pub database_url: String,
    /// `API_LISTEN_ADDR`: where to listen (default `127.0.0.1:8000`; port 0 picks one).
    pub listen_addr: SocketAddr,
    /// `SESSION_ABSOLUTE` (12h), `SESSION_IDLE` (1h), `SESSION_COOKIE_SECURE` (false).
    pub session: crate::auth::SessionPolicy,
    /// `LOGIN_MAX_ATTEMPTS` per user and per address within `LOGIN_WINDOW` (10 in 5m).
    pub login_max_attempts: usize,
    /// See `login_max_attempts`.
    pub login_window: std::time::Duration,
    /// `LONGPOLL_MAX_WAITERS`: long-polls waiting at once, at most (default 10000).
    pub max_waiters: usize,
    /// `KAFKA_BROKERS`, optional here: needed only to publish rule changes.
    pub kafka_brokers: Option<String>,
    /// The machine-event topic rule changes go to.
    pub machine_events_topic: String,
    /// The default rules (`RULE_*` keys), in force until changed through the API.
    pub rules: proto_events::RuleSet,
}

impl ApiConfig {
    /// Reads and validates every key.
    pub fn from_settings(s: &Settings) -> Result<Self, SettingError> {
        Ok(ApiConfig {
            database_url: s.required("DATABASE_URL")?,
            listen_addr: s.parse_or("API_LISTEN_ADDR", SocketAddr::from(([127, 0, 0, 1], 8000)))?,
            session: crate::auth::SessionPolicy {
                absolute: s.duration_or(
                    "SESSION_ABSOLUTE",
                    std::time::Duration::from_secs(12 * 3600),
                )?,
                idle: s.duration_or("SESSION_IDLE", std::time::Duration::from_secs(3600))?,
                secure_cookie: s.parse_or("SESSION_COOKIE_SECURE", false)?,
            },
            login_max_attempts: s.parse_or("LOGIN_MAX_ATTEMPTS", 10usize)?,
            login_window: s.duration_or("LOGIN_WINDOW", std::time::Duration::from_secs(300))?,
            max_waiters: s.parse_or("LONGPOLL_MAX_WAITERS", 10_000usize)?,
            kafka_brokers: s.raw("KAFKA_BROKERS"),
            machine_events_topic: proto_events::topics::MACHINE_EVENTS.to_owned(),
            rules: s.rules()?,
        })
    }
}
