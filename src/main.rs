//! `resource-monitor`: the whole system in one process.
//!
//! With neither `KAFKA_BROKERS` nor `DATABASE_URL` set it runs on an embedded
//! store: one SQLite file in the data directory (`./data`, or `--data-dir` /
//! `DATA_DIR`) holds the event log, the projections, users and sessions. With both
//! set it runs the same services on Kafka and MySQL. `--demo` also starts a fake
//! fleet whose machines trip every rule within about a minute.

use anyhow::Context;
use clap::Parser;
use proto_events::settings::Settings;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use storage::log::EventLog;
use storage::{on, Db};
use tokio::sync::watch;

#[derive(Parser)]
#[command(
    name = "resource-monitor",
    about = "Polls machines, opens and resolves incidents by rules, serves the dashboard and the API: all in one process."
)]
struct Cli {
    /// Also start a fake fleet (`.env` is not read in this mode) (web-2, batch-1, cache-1, logs-1, db-1, web-1) whose
    /// scenarios trigger every rule within about a minute, with short rule
    /// durations (mem 30s, disk 45s, unreachable 20s) and polls every 2s, unless
    /// RULE_* / POLL_INTERVAL say otherwise.
    #[arg(long)]
    demo: bool,
    /// Directory of the embedded store (default `data`, or DATA_DIR).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Address of the dashboard and the API (default 127.0.0.1:8000, or API_LISTEN_ADDR).
    #[arg(long, value_name = "IP:PORT")]
    listen: Option<SocketAddr>,
}

/// Settings `--demo` applies unless the environment sets them.
const DEMO_DEFAULTS: [(&str, &str); 7] = [
    ("POLL_INTERVAL", "2s"),
    ("POLL_TIMEOUT", "1500ms"),
    ("MACHINES_REFRESH", "1s"),
    ("RULE_MEM_FOR", "30s"),
    ("RULE_DISK_FOR", "45s"),
    ("RULE_UNREACHABLE_FOR", "20s"),
    ("PROCESSOR_BATCH_LINGER", "20ms"),
];

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // `--demo` is self-contained: a `.env` written for a Kafka + MySQL deployment
    // (example.env) must not turn the demo into something else.
    if !cli.demo {
        let _ = dotenvy::dotenv();
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sqlx=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut env: HashMap<String, String> = std::env::vars().collect();
    let brokers = env.get("KAFKA_BROKERS").cloned();
    let scaled = match (brokers.is_some(), env.get("DATABASE_URL")) {
        (true, Some(_)) => true,
        (true, None) => anyhow::bail!(
            "KAFKA_BROKERS is set but DATABASE_URL is not: set both to run on Kafka and MySQL, or neither for the embedded store"
        ),
        (false, Some(url)) if !url.starts_with("sqlite:") => anyhow::bail!(
            "DATABASE_URL is a MySQL URL but KAFKA_BROKERS is not set: set both to run on Kafka and MySQL, or neither for the embedded store"
        ),
        (false, _) => false,
    };
    let mut embedded_file = None;
    if !scaled {
        let dir = cli
            .data_dir
            .clone()
            .or_else(|| env.get("DATA_DIR").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("data"));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("creating the data directory {} (DATA_DIR)", dir.display()))?;
        if !env.contains_key("DATABASE_URL") {
            embedded_file = Some(dir.join("monitor.db"));
            env.insert(
                "DATABASE_URL".into(),
                format!("sqlite://{}", dir.join("monitor.db").display()),
            );
        }
    }
    if let Some(listen) = cli.listen {
        env.insert("API_LISTEN_ADDR".into(), listen.to_string());
    }
    // One process: ingest's own metrics endpoint takes any free port unless set.
    env.entry("INGEST_METRICS_ADDR".into())
        .or_insert_with(|| "127.0.0.1:0".into());
    if cli.demo {
        for (key, value) in DEMO_DEFAULTS {
            env.entry(key.into()).or_insert_with(|| value.into());
        }
    }
    let settings = Settings::from_map(env);
    let api_config = query_api::config::ApiConfig::from_settings(&settings)?;
    let ingest_config = ingest::config::IngestConfig::from_settings(&settings)?;
    let rules = settings.rules()?;
    let batch_max = settings.parse_or("PROCESSOR_BATCH_MAX", 1000u32)?;
    if !(1..=20_000).contains(&batch_max) {
        return Err(proto_events::settings::SettingError {
            key: "PROCESSOR_BATCH_MAX".into(),
            message: "must be from 1 to 20000".into(),
        }
        .into());
    }

    let db = match &embedded_file {
        // A path is opened as a path (no URL parsing of `?`, `%` or `#` in it).
        Some(file) => Db::open_sqlite_file(file, 8)
            .await
            .with_context(|| format!("opening {}", file.display()))?,
        None => Db::connect(&api_config.database_url, 8)
            .await
            .context("connecting to DATABASE_URL")?,
    };
    db.migrate().await.context("applying migrations")?;
    tracing::info!(
        backend = db.backend(),
        log = if scaled { "kafka" } else { "embedded" },
        "store ready"
    );
    first_run_admin(&db, &api_config.database_url).await?;

    // Bind first: a second instance on the same address stops here, before it
    // touches the registry.
    let app = query_api::app::Application::build(&api_config, db.clone())
        .await
        .with_context(|| format!("binding API_LISTEN_ADDR {}", api_config.listen_addr))?;
    let fleet = if cli.demo {
        Some(start_demo_fleet(&db).await?)
    } else {
        disable_demo_machines(&db).await?;
        None
    };

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };
    let mut tasks = tokio::task::JoinSet::new();
    let addr = app.addr();
    if scaled {
        let processor_config = processor::config::ProcessorConfig::from_settings(&settings)?;
        let processor = processor::service::Processor::build(processor_config, db.clone()).await?;
        tasks.spawn(processor.run(stopped()));
        tasks.spawn(ingest::app::run(
            ingest_config,
            db.clone(),
            Default::default(),
            stopped(),
        ));
        tasks.spawn(async move { Ok(app.run(stopped()).await?) });
    } else {
        let Db::Sqlite(pool) = &db else {
            anyhow::bail!("the embedded mode needs a sqlite:// DATABASE_URL");
        };
        let log = EventLog::new(pool.clone());
        let lookback = settings.duration_or(
            "PROCESSOR_BACKTEST_LOOKBACK",
            std::time::Duration::from_secs(6 * 3600),
        )?;
        let processor =
            processor::embedded::EmbeddedProcessor::new(rules, db.clone(), log.clone(), batch_max)
                .with_backtest_lookback(lookback);
        tasks.spawn(processor.run(stopped()));
        tasks.spawn(ingest::app::run_with(
            ingest_config,
            db.clone(),
            ingest::app::EventSink::Embedded(log.clone()),
            Default::default(),
            stopped(),
        ));
        let app = app.with_embedded_log(log);
        tasks.spawn(async move { Ok(app.run(stopped()).await?) });
    }
    println!("Resource monitor is running: open http://{addr}/ (Ctrl-C stops it)");
    if fleet.is_some() {
        println!(
            "Demo fleet: 6 machines; CPU, memory, disk and unreachable incidents open (and some resolve) within two minutes."
        );
    }

    let mut failure = None;
    tokio::select! {
        _ = shutdown_signal() => tracing::info!("shutting down"),
        Some(ended) = tasks.join_next() => {
            failure = Some(match ended {
                Ok(Ok(())) => anyhow::anyhow!("a service stopped unexpectedly"),
                Ok(Err(e)) => e,
                Err(e) => anyhow::anyhow!("a service panicked: {e}"),
            });
        }
    }
    let _ = stop_tx.send(true);
    // Services finish their work in hand (a commit, buffered events); one that is
    // stuck (say, retrying a store that is gone) does not hold the exit forever.
    let drained = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while let Some(ended) = tasks.join_next().await {
            if let Ok(Err(e)) = ended {
                tracing::warn!(error = %e, "a service stopped with an error");
            }
        }
    })
    .await;
    if drained.is_err() {
        tracing::error!(
            "services did not stop within 30s; exiting anyway (committed work is safe)"
        );
        tasks.abort_all();
    }
    if let Some(fleet) = fleet {
        fleet.shutdown().await;
    }
    db.close().await;
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// With no user at all, creates `admin` with a random password and prints it once.
async fn first_run_admin(db: &Db, database_url: &str) -> anyhow::Result<()> {
    let users: i64 = on!(db, |p| sqlx::query_scalar("SELECT COUNT(*) FROM users")
        .fetch_one(p)
        .await)?;
    if users > 0 {
        return Ok(());
    }
    let password = query_api::auth::new_secret();
    query_api::auth::create_user(db, "admin", &password, query_api::auth::Role::Admin)
        .await
        .context("creating the first user")?;
    println!();
    println!("================================================================");
    println!("  First run: created the user \"admin\".");
    println!("  username: admin");
    println!("  password: {password}");
    println!("  It is shown only this once. Change it with:");
    // A MySQL URL may carry a password: only the embedded store's path is shown.
    let shown = if database_url.starts_with("sqlite:") {
        database_url
    } else {
        "<your DATABASE_URL>"
    };
    println!("  DATABASE_URL={shown} cargo run -p query-api -- user set-password --username admin");
    println!("================================================================");
    println!();
    Ok(())
}

/// Starts the quickstart fleet on a free local port and registers its machines
/// (their URLs are updated on every start, as the port changes).
async fn start_demo_fleet(db: &Db) -> anyhow::Result<fake_fleet::FleetHandle> {
    let scenario = fake_fleet::Scenario::from_json_str(fake_fleet::QUICKSTART)
        .context("the built-in demo scenario")?;
    let fleet = fake_fleet::Fleet::start_local(scenario, fake_fleet::FleetClock::real(1.0)).await?;
    let now = chrono::Utc::now().naive_utc();
    let sql = db.pick(
        "INSERT INTO machines (name, url, enabled, interval_ms, labels, created_at, updated_at) \
         VALUES (?, ?, TRUE, NULL, '{\"demo\":\"true\"}', ?, ?) \
         ON DUPLICATE KEY UPDATE url = VALUES(url), enabled = TRUE, updated_at = VALUES(updated_at)",
        "INSERT INTO machines (name, url, enabled, interval_ms, labels, created_at, updated_at) \
         VALUES (?, ?, TRUE, NULL, '{\"demo\":\"true\"}', ?, ?) \
         ON CONFLICT (name) DO UPDATE SET url = excluded.url, enabled = TRUE, updated_at = excluded.updated_at",
    );
    for name in fleet.names() {
        let url = fleet.url_of(&name);
        on!(db, |p| sqlx::query(sql)
            .bind(&name)
            .bind(&url)
            .bind(now)
            .bind(now)
            .execute(p)
            .await
            .map(|_| ()))
        .with_context(|| format!("registering demo machine {name}"))?;
    }
    tracing::info!(addr = %fleet.addr(), "demo fleet started");
    Ok(fleet)
}

/// The label `--demo` registers its machines with.
const DEMO_LABELS: &str = "{\"demo\":\"true\"}";

/// Without `--demo`, the demo's machines (whose fleet is not running) are
/// disabled rather than reported unreachable; `--demo` enables them again.
async fn disable_demo_machines(db: &Db) -> anyhow::Result<()> {
    let disabled = on!(db, |p| {
        sqlx::query(
        "UPDATE machines SET enabled = FALSE, updated_at = ? WHERE labels = ? AND enabled = TRUE"
    )
    .bind(chrono::Utc::now().naive_utc())
    .bind(DEMO_LABELS)
    .execute(p)
    .await
    .map(|d| d.rows_affected())
    })?;
    if disabled > 0 {
        tracing::info!(
            disabled,
            "demo machines disabled (their fleet runs only with --demo)"
        );
    }
    Ok(())
}
