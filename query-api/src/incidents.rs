//! `/api/incidents`: the incident projection, read-only.

use chrono::{DateTime, NaiveDateTime, Utc};
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Enum, Object, OpenApi, Tags};
use sqlx::QueryBuilder;
use storage::{on, Db};

use crate::error::ErrorBody;

#[derive(Tags)]
enum ApiTags {
    /// Incidents opened and resolved by the rules.
    Incidents,
}

/// Which incidents to list.
#[derive(Debug, Clone, Copy, Enum, Default, PartialEq, Eq)]
#[oai(rename_all = "lowercase")]
pub enum StatusFilter {
    /// Open incidents only.
    Open,
    /// Resolved incidents only.
    Resolved,
    /// Both (default).
    #[default]
    All,
}

/// One incident.
#[derive(Debug, Clone, Object, PartialEq)]
pub struct Incident {
    /// Deterministic id (from machine, rule and run start).
    pub id: String,
    /// Machine name.
    pub machine: String,
    /// Rule: `cpu`, `mem`, `disk` or `unreachable`.
    pub rule: String,
    /// `open` or `resolved`.
    pub status: String,
    /// Threshold in force when it opened (percent).
    pub threshold: f64,
    /// `for` in force when it opened, in milliseconds.
    pub for_ms: i64,
    /// Start of the run that led to it.
    pub started_at: DateTime<Utc>,
    /// When it opened.
    pub opened_at: DateTime<Utc>,
    /// Highest breaching value; absent for `unreachable`.
    pub peak: Option<f64>,
    /// Latest breaching value.
    pub last_value: Option<f64>,
    /// Time of the latest breaching event.
    pub last_breach_at: DateTime<Utc>,
    /// When it resolved.
    pub resolved_at: Option<DateTime<Utc>>,
    /// `cleared` or `machine_removed`; empty while open.
    pub resolution: String,
}

/// A page of incidents.
#[derive(Debug, Object)]
pub struct IncidentPage {
    /// Open first, then newest first.
    pub incidents: Vec<Incident>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Position after an incident in list order: `(open, opened_at ms, id)`.
fn encode_cursor(i: &Incident) -> String {
    format!(
        "{}.{}.{}",
        u8::from(i.status == "open"),
        i.opened_at.timestamp_millis(),
        i.id
    )
}

fn decode_cursor(c: &str) -> Option<(bool, chrono::NaiveDateTime, String)> {
    let mut parts = c.splitn(3, '.');
    let open = match parts.next()? {
        "1" => true,
        "0" => false,
        _ => return None,
    };
    let at = DateTime::from_timestamp_millis(parts.next()?.parse().ok()?)?.naive_utc();
    let id = parts.next()?;
    (id.len() == 36).then(|| (open, at, id.to_owned()))
}

#[derive(ApiResponse)]
enum ListResponse {
    /// The incidents matching the filters.
    #[oai(status = 200)]
    Ok(Json<IncidentPage>),
    /// A filter was invalid.
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    /// The database is unavailable.
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody>),
}

#[derive(ApiResponse)]
enum GetResponse {
    /// The incident.
    #[oai(status = 200)]
    Ok(Json<Incident>),
    /// No incident has this id.
    #[oai(status = 404)]
    NotFound(Json<ErrorBody>),
    /// The database is unavailable.
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody>),
}

/// Incident changes after a cursor.
#[derive(Debug, Object)]
pub struct IncidentChanges {
    /// Resume from here (`after=`); unchanged when nothing changed.
    pub cursor: String,
    /// The changed incidents in their current state, each once.
    pub incidents: Vec<Incident>,
}

#[derive(ApiResponse)]
enum ChangesResponse {
    /// Changes after the cursor (possibly none, after the timeout).
    #[oai(status = 200)]
    Ok(Json<IncidentChanges>),
    /// The cursor is not one this API gave out.
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    /// The database is unavailable, or too many clients are waiting.
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody>),
}

/// The incidents endpoints.
pub struct IncidentsApi {
    /// The projection database.
    pub db: Db,
    /// Wakes long-polls when the change feed moves.
    pub watcher: crate::changes::ChangeWatcher,
}

impl IncidentsApi {
    /// Changes after `after`: `(cursor, incidents)`.
    async fn changes_after(&self, after: i64) -> Result<(i64, Vec<Incident>), sqlx::Error> {
        let rows: Vec<(i64, String)> = on!(&self.db, |p| {
            sqlx::query_as(
            "SELECT seq, incident_id FROM incident_changes WHERE seq > ? ORDER BY seq LIMIT 1000",
        )
        .bind(after)
        .fetch_all(p)
        .await
        })?;
        let Some(&(cursor, _)) = rows.last() else {
            return Ok((after, vec![]));
        };
        let mut ids: Vec<String> = Vec::with_capacity(rows.len());
        for (_, id) in rows {
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        let incidents: Vec<IncidentRow> = on!(&self.db, |p| {
            let mut q = QueryBuilder::new(format!("SELECT {COLUMNS} FROM incidents WHERE id IN ("));
            let mut sep = q.separated(", ");
            for id in &ids {
                sep.push_bind(id);
            }
            q.push(") ORDER BY (resolved_at IS NULL) DESC, opened_at DESC, id");
            q.build_query_as().fetch_all(p).await
        })?;
        Ok((cursor, incidents.into_iter().map(Incident::from).collect()))
    }
}

const COLUMNS: &str = "id, machine, rule, threshold, for_ms, started_at, opened_at, peak, last_value, last_breach_at, resolved_at, resolution";

fn utc(t: NaiveDateTime) -> DateTime<Utc> {
    t.and_utc()
}

/// An `incidents` row as stored (either backend).
#[derive(sqlx::FromRow)]
pub(crate) struct IncidentRow {
    id: String,
    machine: String,
    rule: String,
    threshold: f64,
    for_ms: i64,
    started_at: NaiveDateTime,
    opened_at: NaiveDateTime,
    peak: Option<f64>,
    last_value: Option<f64>,
    last_breach_at: NaiveDateTime,
    resolved_at: Option<NaiveDateTime>,
    resolution: String,
}

impl From<IncidentRow> for Incident {
    fn from(r: IncidentRow) -> Self {
        Incident {
            id: r.id,
            machine: r.machine,
            rule: r.rule,
            status: if r.resolved_at.is_some() {
                "resolved"
            } else {
                "open"
            }
            .to_owned(),
            threshold: r.threshold,
            for_ms: r.for_ms,
            started_at: utc(r.started_at),
            opened_at: utc(r.opened_at),
            peak: r.peak,
            last_value: r.last_value,
            last_breach_at: utc(r.last_breach_at),
            resolved_at: r.resolved_at.map(utc),
            resolution: r.resolution,
        }
    }
}

#[OpenApi(tag = "ApiTags::Incidents")]
impl IncidentsApi {
    /// List incidents, open first, then newest first.
    #[oai(path = "/incidents", method = "get", operation_id = "list_incidents")]
    async fn list(
        &self,
        /// `open`, `resolved` or `all` (default).
        status: Query<Option<StatusFilter>>,
        /// Only this machine.
        machine: Query<Option<String>>,
        /// Only this rule.
        rule: Query<Option<String>>,
        /// Only incidents opened at or after this time (RFC 3339).
        since: Query<Option<DateTime<Utc>>>,
        /// Only incidents opened before this time (RFC 3339).
        until: Query<Option<DateTime<Utc>>>,
        /// At most this many (1..=1000, default 200).
        #[oai(validator(minimum(value = "1"), maximum(value = "1000")))]
        limit: Query<Option<u32>>,
        /// `next_cursor` of the previous page.
        cursor: Query<Option<String>>,
    ) -> ListResponse {
        let after = match cursor.0.as_deref() {
            None => None,
            Some(c) => match decode_cursor(c) {
                Some(p) => Some(p),
                None => {
                    return ListResponse::BadRequest(Json(ErrorBody::new(
                        "bad_request",
                        format!("invalid cursor {c:?}"),
                    )))
                }
            },
        };
        let limit = limit.0.unwrap_or(200);
        if let Some(rule) = rule.0.as_deref() {
            if rule.parse::<proto_events::RuleName>().is_err() {
                return ListResponse::BadRequest(Json(ErrorBody::new(
                    "bad_request",
                    format!("unknown rule {rule:?}"),
                )));
            }
        }
        let rows: Result<Vec<IncidentRow>, sqlx::Error> = on!(&self.db, |p| {
            let mut q = QueryBuilder::new(format!("SELECT {COLUMNS} FROM incidents WHERE 1=1"));
            match status.0.unwrap_or_default() {
                StatusFilter::Open => {
                    q.push(" AND resolved_at IS NULL");
                }
                StatusFilter::Resolved => {
                    q.push(" AND resolved_at IS NOT NULL");
                }
                StatusFilter::All => {}
            }
            if let Some(m) = machine.0 {
                q.push(" AND machine = ").push_bind(m);
            }
            if let Some(r) = rule.0 {
                q.push(" AND rule = ").push_bind(r);
            }
            if let Some(t) = since.0 {
                q.push(" AND opened_at >= ").push_bind(t.naive_utc());
            }
            if let Some(t) = until.0 {
                q.push(" AND opened_at < ").push_bind(t.naive_utc());
            }
            if let Some((open, at, id)) = after {
                let flag = i32::from(open);
                q.push(" AND ((resolved_at IS NULL) < ").push_bind(flag);
                q.push(" OR ((resolved_at IS NULL) = ")
                    .push_bind(flag)
                    .push(" AND opened_at < ")
                    .push_bind(at);
                q.push(") OR ((resolved_at IS NULL) = ")
                    .push_bind(flag)
                    .push(" AND opened_at = ")
                    .push_bind(at);
                q.push(" AND id > ").push_bind(id).push("))");
            }
            q.push(" ORDER BY (resolved_at IS NULL) DESC, opened_at DESC, id LIMIT ")
                .push_bind(limit + 1);
            q.build_query_as().fetch_all(p).await
        });
        match rows.map(|rows| rows.into_iter().map(Incident::from).collect::<Vec<_>>()) {
            Ok(mut incidents) => {
                let next_cursor = if incidents.len() > limit as usize {
                    incidents.truncate(limit as usize);
                    incidents.last().map(encode_cursor)
                } else {
                    None
                };
                ListResponse::Ok(Json(IncidentPage {
                    incidents,
                    next_cursor,
                }))
            }
            Err(e) => {
                tracing::error!(error = %e, "listing incidents failed");
                ListResponse::Unavailable(Json(ErrorBody::new(
                    "unavailable",
                    "the database is unavailable",
                )))
            }
        }
    }

    /// Long-poll for incident changes: answers at once with every change after
    /// `after`, else waits up to `timeout_s` seconds (at most 60, default 30) and
    /// answers with no changes and the same cursor. Without `after`, answers at
    /// once with the current cursor. A client that resumes with its last cursor
    /// misses nothing.
    #[oai(
        path = "/incidents/changes",
        method = "get",
        operation_id = "incident_changes"
    )]
    async fn changes(
        &self,
        /// The cursor of the previous answer.
        after: Query<Option<String>>,
        /// Longest wait, seconds (0..=60, default 30).
        #[oai(validator(maximum(value = "60")))]
        timeout_s: Query<Option<u32>>,
    ) -> ChangesResponse {
        let unavailable = || {
            ChangesResponse::Unavailable(Json(ErrorBody::new(
                "unavailable",
                "the database is unavailable",
            )))
        };
        let after = match after.0.as_deref() {
            None => {
                return match on!(&self.db, |p| sqlx::query_scalar::<_, Option<i64>>(
                    "SELECT MAX(seq) FROM incident_changes",
                )
                .fetch_one(p)
                .await)
                {
                    Ok(head) => ChangesResponse::Ok(Json(IncidentChanges {
                        cursor: head.unwrap_or(0).to_string(),
                        incidents: vec![],
                    })),
                    Err(_) => unavailable(),
                };
            }
            Some(c) => match c.parse::<i64>() {
                Ok(v) if v >= 0 => v,
                _ => {
                    return ChangesResponse::BadRequest(Json(ErrorBody::new(
                        "bad_request",
                        format!("invalid cursor {c:?}"),
                    )))
                }
            },
        };
        match self.changes_after(after).await {
            Ok((cursor, incidents)) if !incidents.is_empty() => {
                return ChangesResponse::Ok(Json(IncidentChanges {
                    cursor: cursor.to_string(),
                    incidents,
                }));
            }
            Ok(_) => {}
            Err(_) => return unavailable(),
        }
        let Some(_slot) = self.watcher.enter() else {
            return ChangesResponse::Unavailable(Json(ErrorBody::new(
                "too_many_waiters",
                "too many clients are waiting; retry shortly",
            )));
        };
        let timeout = std::time::Duration::from_secs(u64::from(timeout_s.0.unwrap_or(30)));
        self.watcher.wait_past(after, timeout).await;
        match self.changes_after(after).await {
            Ok((cursor, incidents)) => ChangesResponse::Ok(Json(IncidentChanges {
                cursor: cursor.to_string(),
                incidents,
            })),
            Err(_) => unavailable(),
        }
    }

    /// One incident by id.
    #[oai(path = "/incidents/:id", method = "get", operation_id = "get_incident")]
    async fn get(&self, id: Path<String>) -> GetResponse {
        let row: Result<Option<IncidentRow>, sqlx::Error> = on!(&self.db, |p| sqlx::query_as(
            &format!("SELECT {COLUMNS} FROM incidents WHERE id = ?")
        )
        .bind(&id.0)
        .fetch_optional(p)
        .await);
        match row.map(|r| r.map(Incident::from)) {
            Ok(Some(i)) => GetResponse::Ok(Json(i)),
            Ok(None) => GetResponse::NotFound(Json(ErrorBody::new(
                "not_found",
                format!("no incident {:?}", id.0),
            ))),
            Err(e) => {
                tracing::error!(error = %e, "reading incident failed");
                GetResponse::Unavailable(Json(ErrorBody::new(
                    "unavailable",
                    "the database is unavailable",
                )))
            }
        }
    }
}
