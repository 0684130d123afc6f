//! Spawning the services in-process, configured exactly as their binaries are
//! (through `Settings`), each with a stop handle.

use crate::services::kafka_brokers;
use anyhow::Context;
use proto_events::settings::Settings;
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A service task with a graceful stop and a hard abort.
pub struct Spawned {
    stop: Option<oneshot::Sender<()>>,
    handle: JoinHandle<anyhow::Result<()>>,
}

impl Spawned {
    /// Spawns `f`, handing it the receiver that fires on [`Spawned::stop`].
    pub fn start<F>(f: impl FnOnce(oneshot::Receiver<()>) -> F) -> Self
    where
        F: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        Spawned {
            stop: Some(tx),
            handle: tokio::spawn(f(rx)),
        }
    }

    /// Asks the service to shut down gracefully and waits (at most 30 s).
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        tokio::time::timeout(Duration::from_secs(30), &mut self.handle)
            .await
            .context("service did not stop within 30s")??
    }

    /// Kills the service task where it stands (a crash, as far as its state goes).
    pub fn abort(self) {
        self.handle.abort();
    }
}

fn settings(db_url: &str, extra: &[(&str, &str)]) -> anyhow::Result<Settings> {
    let mut map: HashMap<String, String> = HashMap::new();
    map.insert("DATABASE_URL".into(), db_url.into());
    map.insert("KAFKA_BROKERS".into(), kafka_brokers()?);
    map.insert("KAFKA_FETCH_WAIT_MAX_MS".into(), "10".into());
    for (k, v) in extra {
        map.insert((*k).into(), (*v).into());
    }
    Ok(Settings::from_map(map))
}

/// Starts ingest on `topic` (metrics on a free port).
pub async fn spawn_ingest(
    db_url: &str,
    topic: &str,
    extra: &[(&str, &str)],
) -> anyhow::Result<Spawned> {
    Ok(spawn_ingest_with_stats(db_url, topic, extra).await?.0)
}

/// Starts ingest and returns its metrics too.
pub async fn spawn_ingest_with_stats(
    db_url: &str,
    topic: &str,
    extra: &[(&str, &str)],
) -> anyhow::Result<(Spawned, ingest::app::IngestStats)> {
    let mut pairs = vec![("INGEST_METRICS_ADDR", "127.0.0.1:0")];
    pairs.extend_from_slice(extra);
    let mut config = ingest::config::IngestConfig::from_settings(&settings(db_url, &pairs)?)?;
    config.topic = topic.to_owned();
    let pool = sqlx::MySqlPool::connect(db_url).await?;
    let stats = ingest::app::IngestStats::default();
    let run_stats = stats.clone();
    let spawned = Spawned::start(move |stop| async move {
        ingest::app::run(config, pool, run_stats, async {
            let _ = stop.await;
        })
        .await
    });
    Ok((spawned, stats))
}

/// Starts a processor instance in consumer group `group`.
pub async fn spawn_processor(
    db_url: &str,
    topic: &str,
    incident_topic: &str,
    group: &str,
    extra: &[(&str, &str)],
) -> anyhow::Result<Spawned> {
    Ok(
        spawn_processor_with_stats(db_url, topic, incident_topic, group, extra)
            .await?
            .0,
    )
}

/// Starts a processor instance and returns its counters too.
pub async fn spawn_processor_with_stats(
    db_url: &str,
    topic: &str,
    incident_topic: &str,
    group: &str,
    extra: &[(&str, &str)],
) -> anyhow::Result<(Spawned, std::sync::Arc<processor::service::ProcessorStats>)> {
    // Short group timeouts: a broker may wait up to the rebalance timeout
    // (max.poll.interval.ms) for members to rejoin.
    let mut pairs = vec![
        ("PROCESSOR_GROUP_ID", group),
        ("PROCESSOR_BATCH_LINGER", "20ms"),
        ("KAFKA_SESSION_TIMEOUT_MS", "6000"),
        ("KAFKA_MAX_POLL_INTERVAL_MS", "6000"),
    ];
    pairs.extend_from_slice(extra);
    let mut config = processor::config::ProcessorConfig::from_settings(&settings(db_url, &pairs)?)?;
    config.topic = topic.to_owned();
    config.incident_topic = incident_topic.to_owned();
    let pool = sqlx::MySqlPool::connect(db_url).await?;
    let service = processor::service::Processor::build(config, pool).await?;
    let stats = service.stats();
    let spawned = Spawned::start(move |stop| async move {
        service
            .run(async {
                let _ = stop.await;
            })
            .await
    });
    Ok((spawned, stats))
}

/// A running query-api and a client for it.
pub struct Api {
    /// The service.
    pub service: Spawned,
    /// `http://127.0.0.1:PORT`.
    pub base_url: String,
    /// A plain HTTP client (no cookie store: sessions are passed explicitly).
    pub client: reqwest::Client,
    /// The database it serves.
    pub pool: sqlx::MySqlPool,
    /// The same, behind the storage seam.
    pub db: storage::Db,
    /// The machine-event topic it publishes rule changes to (fresh per test).
    pub topic: String,
}

/// A logged-in session: the cookie to send and the CSRF token.
#[derive(Debug, Clone)]
pub struct Session {
    /// `monitor_session=…`.
    pub cookie: String,
    /// For `X-CSRF-Token`.
    pub csrf: String,
    /// The raw `Set-Cookie` header of the login.
    pub set_cookie: String,
}

/// An HTTP answer: status and JSON body (or the body as a JSON string).
pub type Answer = (u16, serde_json::Value);

impl Api {
    async fn answer(r: reqwest::Response) -> anyhow::Result<Answer> {
        let status = r.status().as_u16();
        let body = r.bytes().await?;
        let json = serde_json::from_slice(&body)
            .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&body).into()));
        Ok((status, json))
    }

    /// `GET {base}{path}` without credentials.
    pub async fn get_json(&self, path: &str) -> anyhow::Result<Answer> {
        Self::answer(
            self.client
                .get(format!("{}{path}", self.base_url))
                .send()
                .await?,
        )
        .await
    }

    /// `GET` with a session.
    pub async fn get_as(&self, s: &Session, path: &str) -> anyhow::Result<Answer> {
        Self::answer(
            self.client
                .get(format!("{}{path}", self.base_url))
                .header("cookie", &s.cookie)
                .send()
                .await?,
        )
        .await
    }

    /// A state-changing request with a session; `csrf` false leaves the token out.
    pub async fn send_as(
        &self,
        s: &Session,
        method: reqwest::Method,
        path: &str,
        body: serde_json::Value,
        csrf: bool,
    ) -> anyhow::Result<Answer> {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.base_url))
            .header("cookie", &s.cookie)
            .header("content-type", "application/json")
            .body(body.to_string());
        if csrf {
            req = req.header("x-csrf-token", &s.csrf);
        }
        Self::answer(req.send().await?).await
    }

    /// `POST /api/session`; the answer and, on success, the session.
    pub async fn login(
        &self,
        username: &str,
        password: &str,
    ) -> anyhow::Result<(Answer, Option<Session>)> {
        let r = self
            .client
            .post(format!("{}/api/session", self.base_url))
            .header("content-type", "application/json")
            .body(serde_json::json!({"username": username, "password": password}).to_string())
            .send()
            .await?;
        let set_cookie = r
            .headers()
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let answer = Self::answer(r).await?;
        let session = (answer.0 == 200).then(|| Session {
            cookie: set_cookie.split(';').next().unwrap_or_default().to_owned(),
            csrf: answer.1["csrf_token"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            set_cookie: set_cookie.clone(),
        });
        Ok((answer, session))
    }

    /// Creates a user and logs in as them.
    pub async fn user_session(
        &self,
        username: &str,
        role: query_api::auth::Role,
    ) -> anyhow::Result<Session> {
        let password = format!("{username}-correct-horse-battery");
        query_api::auth::create_user(&self.db, username, &password, role).await?;
        let (answer, session) = self.login(username, &password).await?;
        session.ok_or_else(|| anyhow::anyhow!("login as {username} failed: {answer:?}"))
    }
}

/// Starts query-api on a free port.
pub async fn spawn_api(db_url: &str) -> anyhow::Result<Api> {
    spawn_api_with(db_url, &[]).await
}

/// Starts query-api on a free port with extra settings.
pub async fn spawn_api_with(db_url: &str, extra: &[(&str, &str)]) -> anyhow::Result<Api> {
    let mut pairs = vec![("API_LISTEN_ADDR", "127.0.0.1:0")];
    pairs.extend_from_slice(extra);
    let mut config = query_api::config::ApiConfig::from_settings(&settings(db_url, &pairs)?)?;
    let topic = crate::services::fresh_topics().0;
    config.machine_events_topic = topic.clone();
    let pool = sqlx::MySqlPool::connect(db_url).await?;
    let (service, base_url) = spawn_api_on(&config, storage::Db::MySql(pool.clone()), None).await?;
    Ok(Api {
        service,
        base_url,
        client: reqwest::Client::new(),
        db: storage::Db::MySql(pool.clone()),
        pool,
        topic,
    })
}

/// Starts query-api with `config` on `db` (either backend); with `embedded_log`,
/// rule changes go to the embedded log. Returns the service and its base URL.
pub async fn spawn_api_on(
    config: &query_api::config::ApiConfig,
    db: storage::Db,
    embedded_log: Option<storage::log::EventLog>,
) -> anyhow::Result<(Spawned, String)> {
    let mut app = query_api::app::Application::build(config, db).await?;
    if let Some(log) = embedded_log {
        app = app.with_embedded_log(log);
    }
    let base_url = format!("http://{}", app.addr());
    let service = Spawned::start(move |stop| async move {
        app.run(async {
            let _ = stop.await;
        })
        .await?;
        Ok(())
    });
    Ok((service, base_url))
}
