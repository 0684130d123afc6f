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
    /// Replay a history file (SPEC §5), or the recorded log between `--from` and
    /// `--to`, through the fold with other rules and print the incidents that would
    /// have existed, one JSON object per line (with `--from/--to`, then the
    /// differences against the recorded incidents).
    Backtest {
        /// JSON Lines: the status payload plus `machine` and `at`, or `error`.
        #[arg(long, value_name = "FILE.jsonl", required_unless_present = "from", conflicts_with_all = ["from", "to"])]
        history: Option<std::path::PathBuf>,
        /// Start of the recorded range to replay (RFC 3339); needs DATABASE_URL (and KAFKA_BROKERS with MySQL).
        #[arg(long, value_name = "TIME", requires = "to")]
        from: Option<String>,
        /// End of the recorded range (RFC 3339).
        #[arg(long, value_name = "TIME", requires = "from")]
        to: Option<String>,
        /// Only these machines (repeatable).
        #[arg(long = "machine", value_name = "NAME")]
        machines: Vec<String>,
        /// How far before --from to read so runs in progress are rebuilt (default 6h).
        #[arg(long, value_name = "DURATION", default_value = "6h")]
        lookback: String,
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
            history: Some(history),
            interval,
            rules,
            ..
        }) => backtest(&history, interval.as_deref(), &rules),
        Some(Command::Backtest {
            history: None,
            from,
            to,
            machines,
            lookback,
            rules,
            ..
        }) => replay(
            from.as_deref().unwrap_or_default(),
            to.as_deref().unwrap_or_default(),
            machines,
            &lookback,
            &rules,
        ),
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
            let db = storage::Db::connect(&config.database_url, 4)
                .await
                .context("connecting to DATABASE_URL")?;
            db.migrate().await.context("applying migrations")?;
            let processor = processor::service::Processor::build(config, db).await?;
            processor
                .run(async {
                    let _ = tokio::signal::ctrl_c().await;
                    tracing::info!("shutting down");
                })
                .await
        })
}

fn parse_time(flag: &str, v: &str) -> anyhow::Result<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::parse_from_rfc3339(v)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|e| anyhow::anyhow!("{flag}: {v:?} is not an RFC 3339 time ({e})"))
}

fn replay(
    from: &str,
    to: &str,
    machines: Vec<String>,
    lookback: &str,
    overrides: &[String],
) -> anyhow::Result<()> {
    let settings = Settings::from_env();
    let rules = processor::backtest::rules_with_overrides(settings.rules()?, overrides)
        .map_err(|e| anyhow::anyhow!("--rule {e}"))?;
    let req = processor::replay::ReplayRequest {
        from: parse_time("--from", from)?,
        to: parse_time("--to", to)?,
        machines,
        rules,
        lookback: proto_events::duration::parse_duration(lookback)
            .map_err(|e| anyhow::anyhow!("--lookback: {e}"))?,
        follow_rule_changes: overrides.is_empty(),
    };
    anyhow::ensure!(req.from <= req.to, "--from is after --to");
    let database_url = settings.required("DATABASE_URL")?;
    // The embedded store (sqlite://) holds its own log; MySQL goes with Kafka.
    let brokers = if database_url.starts_with("sqlite:") {
        None
    } else {
        Some(settings.required("KAFKA_BROKERS")?)
    };
    let started = Instant::now();
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async {
            let db = storage::Db::connect(&database_url, 2)
                .await
                .context("connecting to DATABASE_URL")?;
            let log = match (&db, brokers) {
                (storage::Db::Sqlite(pool), _) => processor::replay::LogSource::Embedded(
                    storage::log::EventLog::new(pool.clone()),
                ),
                (_, Some(brokers)) => processor::replay::LogSource::Kafka {
                    brokers,
                    topic: proto_events::topics::MACHINE_EVENTS.to_owned(),
                },
                (_, None) => anyhow::bail!("KAFKA_BROKERS is required with a MySQL DATABASE_URL"),
            };
            processor::replay::replay_with_progress(
                &db,
                &log,
                &req,
                &processor::replay::Progress::default(),
            )
            .await
        })?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for i in &result.incidents {
        writeln!(out, "{}", processor::backtest::incident_json(i))?;
    }
    let (mut added, mut removed, mut changed) = (0, 0, 0);
    for d in &result.differences {
        let line = match d {
            processor::replay::Difference::Added(i) => {
                added += 1;
                serde_json::json!({"diff": "added", "would_be": processor::backtest::incident_json(i)})
            }
            processor::replay::Difference::Removed(i) => {
                removed += 1;
                serde_json::json!({"diff": "removed", "recorded": processor::backtest::incident_json(i)})
            }
            processor::replay::Difference::Changed(w, r) => {
                changed += 1;
                serde_json::json!({"diff": "changed", "would_be": processor::backtest::incident_json(w), "recorded": processor::backtest::incident_json(r)})
            }
        };
        writeln!(out, "{line}")?;
    }
    out.flush()?;
    eprintln!(
        "backtest {}..{}: {} events read, {} would-be incidents; against recorded: {added} added, {removed} removed, {changed} changed; in {:.2?}",
        req.from,
        req.to,
        result.events_read,
        result.incidents.len(),
        started.elapsed()
    );
    Ok(())
}

fn backtest(
    history: &std::path::Path,
    interval: Option<&str>,
    overrides: &[String],
) -> anyhow::Result<()> {
    let settings = Settings::from_env();
    let rules = processor::backtest::rules_with_overrides(settings.rules()?, overrides)
        .map_err(|e| anyhow::anyhow!("--rule {e}"))?;
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
