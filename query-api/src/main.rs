//! `query-api`: serves the API. `query-api migrate` applies the schema and exits.

use anyhow::Context;
use proto_events::settings::Settings;
use query_api::config::ApiConfig;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = dotenvy::dotenv();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let config = ApiConfig::from_settings(&Settings::from_env())?;
    let pool = sqlx::mysql::MySqlPoolOptions::new()
        .max_connections(16)
        .connect(&config.database_url)
        .await
        .context("connecting to DATABASE_URL")?;
    query_api::app::migrate(&pool)
        .await
        .context("applying migrations")?;
    match std::env::args().nth(1).as_deref() {
        Some("migrate") => {
            tracing::info!("migrations applied");
            return Ok(());
        }
        Some(other) => {
            anyhow::bail!("unknown command {other:?} (expected no argument, or `migrate`)")
        }
        None => {}
    }
    let app = query_api::app::Application::build(&config, pool)
        .await
        .context("binding API_LISTEN_ADDR")?;
    tracing::info!(addr = %app.addr(), "query-api listening");
    app.run(async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}
