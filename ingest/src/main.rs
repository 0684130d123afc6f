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
    let db = storage::Db::connect(&config.database_url, 2)
        .await
        .context("connecting to DATABASE_URL")?;
    ingest::app::run(config, db, Default::default(), async {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutting down");
    })
    .await
}
