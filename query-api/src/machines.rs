//! `/api/machines`: the machine registry (admins add machines; everyone reads
//! them with their latest state). Ingest picks changes up within seconds.

use crate::error::ErrorBody;
use crate::session::require_admin;
use chrono::{DateTime, NaiveDateTime, Utc};
use poem::Request;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi, Tags};
use sqlx::{MySqlPool, Row};
use std::collections::BTreeMap;

#[derive(Tags)]
enum ApiTags {
    /// The machines being watched.
    Machines,
}

/// A machine to add.
#[derive(Debug, Object)]
pub struct NewMachine {
    /// Unique, never changes: 1–128 of `[A-Za-z0-9._-]`.
    pub name: String,
    /// Status URL, http or https.
    pub url: String,
    /// Poll interval in milliseconds (default: the configured one).
    pub interval_ms: Option<u64>,
    /// Whether it is polled (default true).
    pub enabled: Option<bool>,
    /// Free-form labels.
    pub labels: Option<BTreeMap<String, String>>,
}

/// A machine with its latest state.
#[derive(Debug, Object)]
pub struct Machine {
    /// Registry id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// Status URL.
    pub url: String,
    /// Polled or not.
    pub enabled: bool,
    /// Own interval, if any.
    pub interval_ms: Option<i64>,
    /// `up`, `unreachable` or `unknown` (never polled).
    pub status: String,
    /// Latest CPU percent.
    pub cpu: Option<f64>,
    /// Latest memory percent.
    pub mem: Option<f64>,
    /// Latest disk percent.
    pub disk: Option<f64>,
    /// Latest uptime, seconds.
    pub uptime_s: Option<i64>,
    /// Time of the latest poll.
    pub observed_at: Option<DateTime<Utc>>,
}

/// All machines.
#[derive(Debug, Object)]
pub struct MachineList {
    /// By name.
    pub machines: Vec<Machine>,
}

#[derive(ApiResponse)]
enum ListResponse {
    /// The machines.
    #[oai(status = 200)]
    Ok(Json<MachineList>),
    /// The database is unavailable.
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody>),
}

#[derive(ApiResponse)]
enum CreateResponse {
    /// Added.
    #[oai(status = 201)]
    Created(Json<Machine>),
    /// The request is invalid (reason says why).
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    /// Only admins add machines.
    #[oai(status = 403)]
    Forbidden(Json<ErrorBody>),
    /// A machine with this name exists.
    #[oai(status = 409)]
    Conflict(Json<ErrorBody>),
    /// The database is unavailable.
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody>),
}

/// The machines endpoints.
pub struct MachinesApi {
    /// Registry and projections.
    pub pool: MySqlPool,
}

fn validate(m: &NewMachine) -> Result<(), String> {
    if m.name.is_empty()
        || m.name.len() > 128
        || !m
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        return Err(format!(
            "invalid name {:?}: use 1 to 128 letters, digits, '.', '_' or '-'",
            m.name
        ));
    }
    let url = poem::http::Uri::try_from(m.url.as_str())
        .map_err(|e| format!("invalid url {:?}: {e}", m.url))?;
    match (url.scheme_str(), url.host()) {
        (Some("http" | "https"), Some(h)) if !h.is_empty() => {}
        (Some(s), _) if s != "http" && s != "https" => {
            return Err(format!("url scheme {s:?} is not http or https"))
        }
        _ => {
            return Err(format!(
                "url {:?} must be an absolute http or https URL",
                m.url
            ))
        }
    }
    if let Some(i) = m.interval_ms {
        if !(100..=86_400_000).contains(&i) {
            return Err("interval_ms must be from 100 to 86400000".to_owned());
        }
    }
    Ok(())
}

const SELECT: &str = "SELECT m.id, m.name, m.url, m.enabled, m.interval_ms, l.status, l.cpu, l.mem, l.disk, l.uptime_s, l.observed_at \
                      FROM machines m LEFT JOIN machine_latest l ON l.machine = m.name";

fn row_to_machine(r: &sqlx::mysql::MySqlRow) -> Result<Machine, sqlx::Error> {
    Ok(Machine {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        url: r.try_get("url")?,
        enabled: r.try_get("enabled")?,
        interval_ms: r.try_get("interval_ms")?,
        status: r
            .try_get::<Option<String>, _>("status")?
            .unwrap_or_else(|| "unknown".to_owned()),
        cpu: r.try_get("cpu")?,
        mem: r.try_get("mem")?,
        disk: r.try_get("disk")?,
        uptime_s: r.try_get("uptime_s")?,
        observed_at: r
            .try_get::<Option<NaiveDateTime>, _>("observed_at")?
            .map(|t| t.and_utc()),
    })
}

#[OpenApi(tag = "ApiTags::Machines")]
impl MachinesApi {
    /// Every machine with its latest metrics and status.
    #[oai(path = "/machines", method = "get", operation_id = "list_machines")]
    async fn list(&self) -> ListResponse {
        match sqlx::query(&format!("{SELECT} ORDER BY m.name"))
            .fetch_all(&self.pool)
            .await
            .and_then(|rows| rows.iter().map(row_to_machine).collect())
        {
            Ok(machines) => ListResponse::Ok(Json(MachineList { machines })),
            Err(e) => {
                tracing::error!(error = %e, "listing machines failed");
                ListResponse::Unavailable(Json(ErrorBody::new(
                    "unavailable",
                    "the database is unavailable",
                )))
            }
        }
    }

    /// Add a machine (admin).
    #[oai(path = "/machines", method = "post", operation_id = "create_machine")]
    async fn create(&self, req: &Request, body: Json<NewMachine>) -> CreateResponse {
        if let Err(e) = require_admin(req) {
            return CreateResponse::Forbidden(Json(e));
        }
        if let Err(why) = validate(&body) {
            return CreateResponse::BadRequest(Json(ErrorBody::new("bad_request", why)));
        }
        let now = Utc::now().naive_utc();
        let labels = serde_json::to_string(&body.labels.clone().unwrap_or_default())
            .unwrap_or_else(|_| "{}".to_owned());
        let inserted = sqlx::query("INSERT INTO machines (name, url, enabled, interval_ms, labels, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)")
            .bind(&body.name)
            .bind(&body.url)
            .bind(body.enabled.unwrap_or(true))
            .bind(body.interval_ms.map(|v| v as i64))
            .bind(labels)
            .bind(now)
            .bind(now)
            .execute(&self.pool)
            .await;
        match inserted {
            Ok(done) => {
                let row = sqlx::query(&format!("{SELECT} WHERE m.id = ?"))
                    .bind(done.last_insert_id() as i64)
                    .fetch_one(&self.pool)
                    .await;
                match row.and_then(|r| row_to_machine(&r)) {
                    Ok(m) => CreateResponse::Created(Json(m)),
                    Err(_) => CreateResponse::Unavailable(Json(ErrorBody::new(
                        "unavailable",
                        "the database is unavailable",
                    ))),
                }
            }
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                CreateResponse::Conflict(Json(ErrorBody::new(
                    "conflict",
                    format!("a machine named {:?} exists", body.name),
                )))
            }
            Err(e) => {
                tracing::error!(error = %e, "adding a machine failed");
                CreateResponse::Unavailable(Json(ErrorBody::new(
                    "unavailable",
                    "the database is unavailable",
                )))
            }
        }
    }
}
