//! `processor`: folds the machine-event log into incidents (default), or runs a
//! backtest over a history file (`processor backtest --history FILE.jsonl`).
//! Service configuration comes from the environment (see `example.env`).

use anyhow::Context;
use clap::{Parser, Subcommand};
use processor::config::ProcessorConfig;
use proto_events::settings::Settings;
use std::io::{BufReader, IsTerminal, Write};
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(
    name = "processor",
    about = "Folds machine events into incidents; backtests rules over history."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Replay a history file (SPEC §5) through the fold with other rules and print
    /// the incidents that would have existed, one JSON object per line.
    Backtest {
        /// JSON Lines: the status payload plus `machine` and `at`, or `error`.
        #[arg(long, value_name = "FILE.jsonl")]
        history: std::path::PathBuf,
        /// Poll interval used for the staleness bound (default: POLL_INTERVAL or 15m).
        #[arg(long, value_name = "DURATION")]
        interval: Option<String>,
        /// Override a rule: `mem.threshold=80`, `mem.for=10m`, `cpu.hysteresis=5`.
        #[arg(long = "rule", value_name = "NAME.FIELD=VALUE")]
        rules: Vec<String>,
    },
}

fn main() -> anyhow::Result<()> {
    let _ = dotenvy::dotenv();
    let cli = Cli::parse();
    match cli.command {
        None => serve(),
        Some(Command::Backtest {
            history,
            interval,
            rules,
        }) => backtest(&history, interval.as_deref(), &rules),
    }
}

fn serve() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let config = ProcessorConfig::from_settings(&Settings::from_env())?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async move {
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
        })
}

fn backtest(
    history: &std::path::Path,
    interval: Option<&str>,
    overrides: &[String],
) -> anyhow::Result<()> {
    let settings = Settings::from_env();
    let mut rules = settings.rules()?;
    for o in overrides {
        processor::backtest::apply_rule_override(&mut rules, o)
            .map_err(|e| anyhow::anyhow!("--rule {e}"))?;
    }
    let interval = match interval {
        Some(v) => proto_events::duration::parse_duration(v)
            .map_err(|e| anyhow::anyhow!("--interval: {e}"))?,
        None => settings.duration_or("POLL_INTERVAL", Duration::from_secs(15 * 60))?,
    };
    let file =
        std::fs::File::open(history).with_context(|| format!("opening {}", history.display()))?;
    let total = file.metadata().map(|m| m.len()).unwrap_or(0);
    let started = Instant::now();
    let bar = indicatif::ProgressBar::hidden();
    let show_progress = std::io::stderr().is_terminal();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut errors = std::io::stderr();
    let summary = processor::backtest::run_history(
        BufReader::with_capacity(1 << 20, file),
        rules,
        interval.as_millis() as u64,
        &mut out,
        &mut errors,
        |bytes| {
            if show_progress && bar.is_hidden() && started.elapsed() > Duration::from_secs(1) {
                bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
                bar.set_length(total);
            }
            bar.set_position(bytes);
        },
    )?;
    bar.finish_and_clear();
    out.flush()?;
    eprintln!(
        "backtest: {} lines read, {} malformed lines skipped, {} discarded as out of order or duplicate, {} incidents, in {:.2?}",
        summary.lines,
        summary.skipped,
        summary.discarded,
        summary.incidents,
        started.elapsed()
    );
    Ok(())
}
