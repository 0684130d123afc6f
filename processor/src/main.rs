//! `processor`: folds the machine-event log into incidents. Configuration comes
//! from the environment (see `example.env`).

use anyhow::Context;
use processor::config::ProcessorConfig;
use proto_events::settings::Settings;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = dotenvy::dotenv();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let config = ProcessorConfig::from_settings(&Settings::from_env())?;
    let pool = sqlx::mysql::MySqlPoolOptions::new()
        .max_connections(4)
        .connect(&config.database_url)
        .await
        .context("connecting to DATABASE_URL")?;
    processor::store::migrate(&pool)
        .await
        .context("applying migrations")?;
    let processor = processor::service::Processor::build(config, pool).await?;
    processor
        .run(async {
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("shutting down");
        })
        .await
}
