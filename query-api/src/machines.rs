//! `/api/machines`: the machine registry (admins add machines; everyone reads
//! them with their latest state). Ingest picks changes up within seconds.

use crate::error::ErrorBody;
use crate::session::require_admin;
use chrono::{DateTime, NaiveDateTime, Utc};
use poem::Request;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi, Tags};
use std::collections::BTreeMap;
use storage::{on, Db, LastId};

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

/// Changes to a machine; absent fields stay as they are.
#[derive(Debug, Object)]
pub struct MachinePatch {
    /// New status URL, http or https.
    pub url: Option<String>,
    /// Poll or stop polling (disabling resolves its open incidents).
    pub enabled: Option<bool>,
    /// New own interval in milliseconds; 0 returns to the configured default.
    pub interval_ms: Option<u64>,
    /// Replaces the labels.
    pub labels: Option<BTreeMap<String, String>>,
}

/// One poll in a machine's history.
#[derive(Debug, Object)]
pub struct Sample {
    /// When the poll was due.
    pub observed_at: DateTime<Utc>,
    /// CPU percent.
    pub cpu: Option<f64>,
    /// Memory percent.
    pub mem: Option<f64>,
    /// Disk percent.
    pub disk: Option<f64>,
    /// Uptime, seconds.
    pub uptime_s: Option<i64>,
    /// Reason code when the poll failed.
    pub failure_reason: Option<String>,
}

/// A machine's samples in a time range, oldest first.
#[derive(Debug, Object)]
pub struct SampleList {
    /// The machine.
    pub machine: String,
    /// At most 5,000, oldest first.
    pub samples: Vec<Sample>,
}

#[derive(ApiResponse)]
enum OneResponse {
    /// The machine.
    #[oai(status = 200)]
    Ok(Json<Machine>),
    /// The request is invalid.
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    /// Only admins change machines.
    #[oai(status = 403)]
    Forbidden(Json<ErrorBody>),
    /// No machine has this id.
    #[oai(status = 404)]
    NotFound(Json<ErrorBody>),
    /// The database is unavailable.
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody>),
}

#[derive(ApiResponse)]
enum DeleteResponse {
    /// Removed; ingest stops polling it and its open incidents resolve.
    #[oai(status = 204)]
    Deleted,
    /// Only admins remove machines.
    #[oai(status = 403)]
    Forbidden(Json<ErrorBody>),
    /// No machine has this id.
    #[oai(status = 404)]
    NotFound(Json<ErrorBody>),
    /// The database is unavailable.
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody>),
}

#[derive(ApiResponse)]
enum SamplesResponse {
    /// The samples.
    #[oai(status = 200)]
    Ok(Json<SampleList>),
    /// The range is invalid.
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    /// No machine has this id.
    #[oai(status = 404)]
    NotFound(Json<ErrorBody>),
    /// The database is unavailable.
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody>),
}

fn unavailable() -> ErrorBody {
    ErrorBody::new("unavailable", "the database is unavailable")
}

fn not_found(id: i64) -> ErrorBody {
    ErrorBody::new("not_found", format!("no machine with id {id}"))
}

fn check_url(url: &str) -> Result<(), String> {
    let uri = poem::http::Uri::try_from(url).map_err(|e| format!("invalid url {url:?}: {e}"))?;
    match (uri.scheme_str(), uri.host()) {
        (Some("http" | "https"), Some(h)) if !h.is_empty() => Ok(()),
        (Some(s), _) if s != "http" && s != "https" => {
            Err(format!("url scheme {s:?} is not http or https"))
        }
        _ => Err(format!("url {url:?} must be an absolute http or https URL")),
    }
}

fn check_interval(i: Option<u64>) -> Result<(), String> {
    match i {
        Some(i) if !(100..=86_400_000).contains(&i) => {
            Err("interval_ms must be from 100 to 86400000".to_owned())
        }
        _ => Ok(()),
    }
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
    pub db: Db,
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

/// A machine with its latest state, as stored (either backend).
#[derive(sqlx::FromRow)]
struct MachineRow {
    id: i64,
    name: String,
    url: String,
    enabled: bool,
    interval_ms: Option<i64>,
    status: Option<String>,
    cpu: Option<f64>,
    mem: Option<f64>,
    disk: Option<f64>,
    uptime_s: Option<i64>,
    observed_at: Option<NaiveDateTime>,
}

impl From<MachineRow> for Machine {
    fn from(r: MachineRow) -> Self {
        Machine {
            id: r.id,
            name: r.name,
            url: r.url,
            enabled: r.enabled,
            interval_ms: r.interval_ms,
            status: r.status.unwrap_or_else(|| "unknown".to_owned()),
            cpu: r.cpu,
            mem: r.mem,
            disk: r.disk,
            uptime_s: r.uptime_s,
            observed_at: r.observed_at.map(|t| t.and_utc()),
        }
    }
}

/// A sample as stored.
#[derive(sqlx::FromRow)]
struct SampleRow {
    observed_at: NaiveDateTime,
    cpu: Option<f64>,
    mem: Option<f64>,
    disk: Option<f64>,
    uptime_s: Option<i64>,
    failure_reason: Option<String>,
}

#[OpenApi(tag = "ApiTags::Machines")]
impl MachinesApi {
    /// Every machine with its latest metrics and status.
    #[oai(path = "/machines", method = "get", operation_id = "list_machines")]
    async fn list(&self) -> ListResponse {
        let rows: Result<Vec<MachineRow>, sqlx::Error> = on!(&self.db, |p| sqlx::query_as(
            &format!("{SELECT} ORDER BY m.name")
        )
        .fetch_all(p)
        .await);
        match rows {
            Ok(rows) => ListResponse::Ok(Json(MachineList {
                machines: rows.into_iter().map(Machine::from).collect(),
            })),
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
        let inserted = on!(&self.db, |p| {
            sqlx::query("INSERT INTO machines (name, url, enabled, interval_ms, labels, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)")
            .bind(&body.name)
            .bind(&body.url)
            .bind(body.enabled.unwrap_or(true))
            .bind(body.interval_ms.map(|v| v as i64))
            .bind(&labels)
            .bind(now)
            .bind(now)
            .execute(p)
            .await
            .map(|done| done.last_id())
        });
        match inserted {
            Ok(id) => match self.fetch(id).await {
                Ok(Some(m)) => CreateResponse::Created(Json(m)),
                _ => CreateResponse::Unavailable(Json(ErrorBody::new(
                    "unavailable",
                    "the database is unavailable",
                ))),
            },
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

    async fn fetch(&self, id: i64) -> Result<Option<Machine>, sqlx::Error> {
        let row: Option<MachineRow> = on!(&self.db, |p| sqlx::query_as(&format!(
            "{SELECT} WHERE m.id = ?"
        ))
        .bind(id)
        .fetch_optional(p)
        .await)?;
        Ok(row.map(Machine::from))
    }

    /// One machine with its latest metrics and status.
    #[oai(path = "/machines/:id", method = "get", operation_id = "get_machine")]
    async fn get(&self, id: Path<i64>) -> OneResponse {
        match self.fetch(id.0).await {
            Ok(Some(m)) => OneResponse::Ok(Json(m)),
            Ok(None) => OneResponse::NotFound(Json(not_found(id.0))),
            Err(_) => OneResponse::Unavailable(Json(unavailable())),
        }
    }

    /// Change a machine's URL, interval, labels or enabled flag (admin). Its name,
    /// the key of its history, never changes.
    #[oai(
        path = "/machines/:id",
        method = "patch",
        operation_id = "update_machine"
    )]
    async fn update(&self, req: &Request, id: Path<i64>, body: Json<MachinePatch>) -> OneResponse {
        if let Err(e) = require_admin(req) {
            return OneResponse::Forbidden(Json(e));
        }
        if let Some(url) = &body.url {
            if let Err(why) = check_url(url) {
                return OneResponse::BadRequest(Json(ErrorBody::new("bad_request", why)));
            }
        }
        if let Err(why) = check_interval(body.interval_ms.filter(|i| *i != 0)) {
            return OneResponse::BadRequest(Json(ErrorBody::new("bad_request", why)));
        }
        let labels = body
            .labels
            .as_ref()
            .map(|l| serde_json::to_string(l).unwrap_or_else(|_| "{}".to_owned()));
        let done = on!(&self.db, |p| sqlx::query(
            "UPDATE machines SET url = COALESCE(?, url), enabled = COALESCE(?, enabled), \
             interval_ms = CASE WHEN ? IS NULL THEN interval_ms ELSE NULLIF(?, 0) END, \
             labels = COALESCE(?, labels), updated_at = ? WHERE id = ?",
        )
        .bind(&body.url)
        .bind(body.enabled)
        .bind(body.interval_ms.map(|v| v as i64))
        .bind(body.interval_ms.map(|v| v as i64))
        .bind(&labels)
        .bind(Utc::now().naive_utc())
        .bind(id.0)
        .execute(p)
        .await
        .map(|_| ()));
        if done.is_err() {
            return OneResponse::Unavailable(Json(unavailable()));
        }
        match self.fetch(id.0).await {
            Ok(Some(m)) => OneResponse::Ok(Json(m)),
            Ok(None) => OneResponse::NotFound(Json(not_found(id.0))),
            Err(_) => OneResponse::Unavailable(Json(unavailable())),
        }
    }

    /// Remove a machine (admin). Its history stays; ingest announces the removal
    /// and its open incidents resolve as `machine_removed`.
    #[oai(
        path = "/machines/:id",
        method = "delete",
        operation_id = "delete_machine"
    )]
    async fn delete(&self, req: &Request, id: Path<i64>) -> DeleteResponse {
        if let Err(e) = require_admin(req) {
            return DeleteResponse::Forbidden(Json(e));
        }
        match on!(&self.db, |p| sqlx::query(
            "DELETE FROM machines WHERE id = ?"
        )
        .bind(id.0)
        .execute(p)
        .await
        .map(|d| d.rows_affected()))
        {
            Ok(1) => DeleteResponse::Deleted,
            Ok(_) => DeleteResponse::NotFound(Json(not_found(id.0))),
            Err(_) => DeleteResponse::Unavailable(Json(unavailable())),
        }
    }

    /// A machine's samples between `from` and `to` (default: the last 24 hours),
    /// oldest first, at most 5,000 (for charts).
    #[oai(
        path = "/machines/:id/samples",
        method = "get",
        operation_id = "machine_samples"
    )]
    async fn samples(
        &self,
        id: Path<i64>,
        from: Query<Option<DateTime<Utc>>>,
        to: Query<Option<DateTime<Utc>>>,
    ) -> SamplesResponse {
        let to = to.0.unwrap_or_else(Utc::now);
        let from = from.0.unwrap_or(to - chrono::Duration::hours(24));
        if from > to {
            return SamplesResponse::BadRequest(Json(ErrorBody::new(
                "bad_request",
                "from is after to",
            )));
        }
        let name: Option<String> = match on!(&self.db, |p| sqlx::query_scalar(
            "SELECT name FROM machines WHERE id = ?"
        )
        .bind(id.0)
        .fetch_optional(p)
        .await)
        {
            Ok(n) => n,
            Err(_) => return SamplesResponse::Unavailable(Json(unavailable())),
        };
        let Some(name) = name else {
            return SamplesResponse::NotFound(Json(not_found(id.0)));
        };
        let rows: Result<Vec<SampleRow>, sqlx::Error> = on!(&self.db, |p| {
            sqlx::query_as(
            "SELECT observed_at, cpu, mem, disk, uptime_s, failure_reason FROM samples \
             WHERE machine = ? AND observed_at >= ? AND observed_at <= ? ORDER BY observed_at DESC LIMIT 5000",
        )
        .bind(&name)
        .bind(from.naive_utc())
        .bind(to.naive_utc())
        .fetch_all(p)
        .await
        });
        let Ok(rows) = rows else {
            return SamplesResponse::Unavailable(Json(unavailable()));
        };
        let mut samples: Vec<Sample> = rows
            .into_iter()
            .map(|r| Sample {
                observed_at: r.observed_at.and_utc(),
                cpu: r.cpu,
                mem: r.mem,
                disk: r.disk,
                uptime_s: r.uptime_s,
                failure_reason: r.failure_reason,
            })
            .collect();
        samples.reverse();
        SamplesResponse::Ok(Json(SampleList {
            machine: name,
            samples,
        }))
    }
}
