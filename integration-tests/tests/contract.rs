//! The backend contract: the same events in give the same incidents, projections
//! and API answers out, on both backends — Kafka + MySQL (scaled-out mode) and the
//! embedded event log + SQLite (one-process mode). Each test body runs once per
//! backend through one `Backend` seam: append events to the log, run the processor,
//! ask the API.
//!
//! Checked on each: every incident the pure fold expects (no more, no fewer, same
//! times and peaks) through `/api/incidents`; a processor stopped half-way and
//! started again neither loses nor duplicates anything (exactly once); latest state
//! and samples through `/api/machines`; a backtest through `/api/backtests`
//! reproduces the recorded incidents (empty diff); a rule change through
//! `/api/rules` reaches every partition's fold through the log.

use integration_tests::services::{create_topic, fresh_database, fresh_topics, TestDatabase};
use integration_tests::spawn::{spawn_api_on, spawn_processor, Spawned};
use integration_tests::streams::{expected_incidents, fleet_stream, produce, IncidentRow};
use proto_events::settings::Settings;
use proto_events::{Envelope, Event, RuleSet};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;
use storage::log::EventLog;
use storage::{on, Db};

/// One backend under test.
enum Backend {
    Kafka {
        test_db: TestDatabase,
        topic: String,
        incidents_topic: String,
    },
    Embedded {
        _dir: TempDir,
        db: Db,
        log: EventLog,
    },
}

/// A directory removed when dropped.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Backend {
    async fn kafka() -> anyhow::Result<Self> {
        let test_db = fresh_database().await?;
        let (topic, incidents_topic) = fresh_topics();
        create_topic(&topic, 3).await?;
        create_topic(&incidents_topic, 3).await?;
        Ok(Backend::Kafka {
            test_db,
            topic,
            incidents_topic,
        })
    }

    async fn embedded() -> anyhow::Result<Self> {
        integration_tests::services::init_tracing();
        let dir = std::env::temp_dir().join(format!("contract-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir)?;
        let db = Db::connect(&format!("sqlite://{}", dir.join("monitor.db").display()), 8).await?;
        db.migrate().await?;
        let Db::Sqlite(pool) = &db else {
            anyhow::bail!("expected SQLite")
        };
        let log = EventLog::new(pool.clone());
        Ok(Backend::Embedded {
            _dir: TempDir(dir),
            db,
            log,
        })
    }

    fn name(&self) -> &'static str {
        match self {
            Backend::Kafka { .. } => "kafka+mysql",
            Backend::Embedded { .. } => "embedded+sqlite",
        }
    }

    fn db(&self) -> &Db {
        match self {
            Backend::Kafka { test_db, .. } => &test_db.db,
            Backend::Embedded { db, .. } => db,
        }
    }

    async fn append(&self, events: &[Envelope]) -> anyhow::Result<()> {
        match self {
            Backend::Kafka { topic, .. } => {
                produce(
                    &integration_tests::services::kafka_brokers()?,
                    topic,
                    events,
                )
                .await
            }
            Backend::Embedded { log, .. } => {
                log.append(events).await?;
                Ok(())
            }
        }
    }

    async fn start_processor(&self) -> anyhow::Result<Spawned> {
        match self {
            Backend::Kafka {
                test_db,
                topic,
                incidents_topic,
            } => {
                spawn_processor(
                    &test_db.url,
                    topic,
                    incidents_topic,
                    &format!("g-{}", test_db.name),
                    &[],
                )
                .await
            }
            Backend::Embedded { db, log, .. } => {
                let p = processor::embedded::EmbeddedProcessor::new(
                    RuleSet::default(),
                    db.clone(),
                    log.clone(),
                    500,
                );
                Ok(Spawned::start(move |stop| async move {
                    p.run(async {
                        let _ = stop.await;
                    })
                    .await
                }))
            }
        }
    }

    async fn start_api(&self) -> anyhow::Result<(Spawned, Client)> {
        let mut map = HashMap::new();
        map.insert("DATABASE_URL".to_owned(), "unused://".to_owned());
        map.insert("API_LISTEN_ADDR".to_owned(), "127.0.0.1:0".to_owned());
        let mut config = query_api::config::ApiConfig::from_settings(&Settings::from_map(map))?;
        if let Backend::Kafka { topic, .. } = self {
            config.kafka_brokers = Some(integration_tests::services::kafka_brokers()?);
            config.machine_events_topic = topic.clone();
        }
        let log = match self {
            Backend::Embedded { log, .. } => Some(log.clone()),
            Backend::Kafka { .. } => None,
        };
        let (service, base_url) = spawn_api_on(&config, self.db().clone(), log).await?;
        query_api::auth::create_user(
            self.db(),
            "contract",
            "contract-long-password",
            query_api::auth::Role::Admin,
        )
        .await?;
        let http = reqwest::Client::new();
        let r = http
            .post(format!("{base_url}/api/session"))
            .header("content-type", "application/json")
            .body(json!({"username": "contract", "password": "contract-long-password"}).to_string())
            .send()
            .await?;
        anyhow::ensure!(r.status() == 200, "login: {}", r.status());
        let cookie = r
            .headers()
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .unwrap_or_default()
            .to_owned();
        let csrf = serde_json::from_slice::<Value>(&r.bytes().await?)?["csrf_token"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        Ok((
            service,
            Client {
                http,
                base_url,
                cookie,
                csrf,
            },
        ))
    }
}

/// An API client with a session.
struct Client {
    http: reqwest::Client,
    base_url: String,
    cookie: String,
    csrf: String,
}

impl Client {
    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let r = self
            .http
            .get(format!("{}{path}", self.base_url))
            .header("cookie", &self.cookie)
            .send()
            .await?;
        anyhow::ensure!(r.status() == 200, "GET {path}: {}", r.status());
        Ok(serde_json::from_slice(&r.bytes().await?)?)
    }

    async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        let r = self
            .http
            .post(format!("{}{path}", self.base_url))
            .header("cookie", &self.cookie)
            .header("x-csrf-token", &self.csrf)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await?;
        anyhow::ensure!(r.status().is_success(), "POST {path}: {}", r.status());
        Ok(serde_json::from_slice(&r.bytes().await?)?)
    }

    /// Every incident, through the paged list, as comparable rows sorted by id.
    async fn incidents(&self) -> anyhow::Result<Vec<IncidentRow>> {
        let mut rows = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                None => "/api/incidents?status=all&limit=500".to_owned(),
                Some(c) => format!("/api/incidents?status=all&limit=500&cursor={c}"),
            };
            let page = self.get(&path).await?;
            let ms = |v: &Value| {
                v.as_str()
                    .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
                    .map(|t| t.timestamp_millis())
            };
            for i in page["incidents"].as_array().into_iter().flatten() {
                rows.push(IncidentRow {
                    id: i["id"].as_str().unwrap_or_default().to_owned(),
                    machine: i["machine"].as_str().unwrap_or_default().to_owned(),
                    rule: i["rule"].as_str().unwrap_or_default().to_owned(),
                    started_at: ms(&i["started_at"]).unwrap_or_default(),
                    opened_at: ms(&i["opened_at"]).unwrap_or_default(),
                    resolved_at: ms(&i["resolved_at"]),
                    peak: i["peak"].as_f64(),
                    last_value: i["last_value"].as_f64(),
                });
            }
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => break,
            }
        }
        rows.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(rows)
    }
}

/// Waits until the API lists exactly `expected`.
async fn until_incidents(
    api: &Client,
    expected: &[IncidentRow],
    backend: &str,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let got = api.incidents().await?;
        if got == expected {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            let missing = expected.iter().filter(|e| !got.contains(e)).count();
            let extra = got.iter().filter(|g| !expected.contains(g)).count();
            anyhow::bail!(
                "{backend}: API incidents differ from the fold's: {} listed, {} expected, {missing} missing, {extra} unexpected; first unexpected: {:?}",
                got.len(),
                expected.len(),
                got.iter().find(|g| !expected.contains(g))
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The contract, run against one backend.
async fn contract(backend: Backend) -> anyhow::Result<()> {
    let name = backend.name();
    // 12 machines x 160 polls of 15 minutes (40 hours): every rule opens and resolves.
    let events = fleet_stream(12, 160);
    let half = events.len() / 2;
    let expected_half = expected_incidents(&events[..half]);
    let expected_all = expected_incidents(&events);
    let rules: std::collections::BTreeSet<&str> =
        expected_all.iter().map(|i| i.rule.as_str()).collect();
    assert_eq!(rules.len(), 4, "the stream exercises every rule: {rules:?}");

    // Two machines are registered, so the machines view shows their latest state.
    for machine in ["m-000", "m-003"] {
        on!(backend.db(), |p| {
            sqlx::query(
            "INSERT INTO machines (name, url, enabled, interval_ms, labels, created_at, updated_at) \
             VALUES (?, 'http://127.0.0.1:9/status', TRUE, NULL, '{}', ?, ?)"
        )
        .bind(machine)
        .bind(chrono::Utc::now().naive_utc())
        .bind(chrono::Utc::now().naive_utc())
        .execute(p)
        .await
        .map(|_| ())
        })?;
    }

    let (api_service, api) = backend.start_api().await?;
    // First half, then the processor stops; the second half is appended while it
    // is down and folded by a new instance that resumes from the committed position.
    backend.append(&events[..half]).await?;
    let processor = backend.start_processor().await?;
    until_incidents(&api, &expected_half, name).await?;
    processor.stop().await?;
    backend.append(&events[half..]).await?;
    let processor = backend.start_processor().await?;
    until_incidents(&api, &expected_all, name).await?;

    // Latest state per machine: the last poll of each registered machine.
    let machines = api.get("/api/machines").await?;
    for m in machines["machines"].as_array().into_iter().flatten() {
        let machine = m["name"].as_str().unwrap_or_default();
        let last = events
            .iter()
            .rev()
            .find(|e| e.machine == machine)
            .ok_or_else(|| anyhow::anyhow!("no events of {machine}"))?;
        let observed = m["observed_at"]
            .as_str()
            .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
            .map(|t| t.timestamp_millis());
        assert_eq!(observed, Some(last.at.timestamp_millis()), "{name}: {m}");
        let status = match last.event {
            Event::PollFailed(_) => "unreachable",
            _ => "up",
        };
        assert_eq!(m["status"], status, "{name}: {m}");
        // Every poll of the machine is a sample (the whole range fits one page).
        let id = m["id"].as_i64().unwrap_or_default();
        let from = events[0].at.to_rfc3339();
        let to = last.at.to_rfc3339();
        let samples = api
            .get(&format!(
                "/api/machines/{id}/samples?from={}&to={}",
                urlencode(&from),
                urlencode(&to)
            ))
            .await?;
        let polls = events.iter().filter(|e| e.machine == machine).count();
        assert_eq!(
            samples["samples"].as_array().map(Vec::len),
            Some(polls),
            "{name}: samples of {machine}"
        );
    }

    // A backtest of the whole range with the rules in force reproduces what was
    // recorded.
    let from = events[0].at - chrono::Duration::minutes(1);
    let to = events[events.len() - 1].at + chrono::Duration::minutes(1);
    let created = api
        .post(
            "/api/backtests",
            json!({
                "from": from.to_rfc3339(),
                "to": to.to_rfc3339(),
                "rules": {
                    "cpu": {"threshold": 85, "for": "0", "hysteresis": 0},
                    "mem": {"threshold": 90, "for": "30m", "hysteresis": 0},
                    "disk": {"threshold": 95, "for": "2h", "hysteresis": 0},
                    "unreachable": {"threshold": 0, "for": "30m", "hysteresis": 0},
                    "staleness_intervals": RuleSet::default().staleness_intervals
                }
            }),
        )
        .await?;
    let id = created["id"].as_str().unwrap_or_default().to_owned();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let done = loop {
        let bt = api.get(&format!("/api/backtests/{id}")).await?;
        match bt["status"].as_str() {
            Some("done") => break bt,
            Some("failed") => anyhow::bail!("{name}: backtest failed: {}", bt["error"]),
            _ if tokio::time::Instant::now() > deadline => {
                anyhow::bail!("{name}: backtest did not finish: {bt}")
            }
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    let result = &done["result"];
    assert_eq!(
        result["events_read"].as_u64(),
        Some(events.len() as u64),
        "{name}"
    );
    assert_eq!(
        result["differences"].as_array().map(Vec::len),
        Some(0),
        "{name}: {:#}",
        result["differences"]
    );
    let would_open: u64 = result["rules"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| r["would_open"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(would_open, expected_all.len() as u64, "{name}");

    // A rule change through the API reaches the processor through the log.
    let mut rules = done["rules"].clone();
    rules["cpu"]["threshold"] = json!(97.5);
    let r = api
        .http
        .put(format!("{}/api/rules", api.base_url))
        .header("cookie", &api.cookie)
        .header("x-csrf-token", &api.csrf)
        .header("content-type", "application/json")
        .body(rules.to_string())
        .send()
        .await?;
    assert_eq!(r.status(), 200, "{name}: PUT /api/rules");
    assert_eq!(
        api.get("/api/rules").await?["cpu"]["threshold"],
        97.5,
        "{name}"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let timelines: Vec<String> = on!(backend.db(), |p| sqlx::query_scalar(
            "SELECT rules_timeline FROM processor_offsets"
        )
        .fetch_all(p)
        .await)?;
        if !timelines.is_empty() && timelines.iter().all(|t| t.contains("97.5")) {
            break;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "{name}: the rule change did not reach every partition's fold: {timelines:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    processor.stop().await?;
    api_service.stop().await?;
    Ok(())
}

fn urlencode(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contract_on_kafka_and_mysql() -> anyhow::Result<()> {
    contract(Backend::kafka().await?).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contract_on_the_embedded_log_and_sqlite() -> anyhow::Result<()> {
    contract(Backend::embedded().await?).await
}
