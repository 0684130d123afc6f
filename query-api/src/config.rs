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
}

impl ApiConfig {
    /// Reads and validates every key.
    pub fn from_settings(s: &Settings) -> Result<Self, SettingError> {
        Ok(ApiConfig {
            database_url: s.required("DATABASE_URL")?,
            listen_addr: s.parse_or("API_LISTEN_ADDR", SocketAddr::from(([127, 0, 0, 1], 8000)))?,
        })
    }
}
