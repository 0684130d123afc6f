//! `ingest`: polls the fleet and publishes one event per poll.

use anyhow::Context;
use ingest::config::IngestConfig;
use proto_events::settings::Settings;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = dotenvy::dotenv();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let config = IngestConfig::from_settings(&Settings::from_env())?;
    let pool = sqlx::mysql::MySqlPoolOptions::new()
        .max_connections(2)
        .connect(&config.database_url)
        .await
        .context("connecting to DATABASE_URL")?;
    ingest::app::run(config, pool, Default::default(), async {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutting down");
    })
    .await
}
