//! `/api/backtests`: ask what other rules would have done over recorded history.
//! The API stays a read side: `POST` records the request (`queued`); a processor,
//! which owns the fold and the log, claims it, replays the range and writes the
//! result back; `GET` reads status, progress and, when done, the result.

use crate::auth::CurrentUser;
use crate::error::ErrorBody;
use crate::rules::{from_dto, rules_in_force, to_dto, RulesDto};
use chrono::{DateTime, NaiveDateTime, Utc};
use poem::Request;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi, Tags};
use proto_events::backtest::{JobRequest, JobResult, Quality, ResultIncident};
use proto_events::RuleSet;
use storage::{on, Db};

#[derive(Tags)]
enum ApiTags {
    /// Backtests: replay recorded history with other rules.
    Backtests,
}

/// The longest range one backtest may cover.
const MAX_RANGE_DAYS: i64 = 92;
/// The most machines one backtest may name.
const MAX_MACHINES: usize = 1_000;

/// A backtest to run.
#[derive(Debug, Clone, Object)]
pub struct NewBacktest {
    /// Start of the range (RFC 3339).
    pub from: DateTime<Utc>,
    /// End of the range (RFC 3339), after `from`, at most 92 days later.
    pub to: DateTime<Utc>,
    /// Only these machines (absent or empty: all).
    pub machines: Option<Vec<String>>,
    /// The rules to test (the same shape as `/api/rules`).
    pub rules: RulesDto,
}

/// The id of a requested backtest.
#[derive(Debug, Clone, Object)]
pub struct Created {
    /// Poll `GET /api/backtests/{id}`.
    pub id: String,
    /// `queued`.
    pub status: String,
}

/// Rule-quality figures over the range.
#[derive(Debug, Clone, Object)]
pub struct QualityDto {
    /// Incidents that opened in the range.
    pub opened: u64,
    /// Openings per day.
    pub incidents_per_day: f64,
    /// Hours in an open incident within the range, summed over machines.
    pub hours_in_incident: f64,
    /// Openings plus resolutions per day.
    pub flips_per_day: f64,
}

/// Counts of one rule.
#[derive(Debug, Clone, Object)]
pub struct RuleCounts {
    /// `cpu`, `mem`, `disk` or `unreachable`.
    pub rule: String,
    /// Incidents the tested rules would have had in the range.
    pub would_open: u64,
    /// Incidents recorded in the range.
    pub actual: u64,
    /// Would have existed, were not recorded.
    pub added: u64,
    /// Were recorded, would not have existed.
    pub removed: u64,
    /// Both, with other times or peak.
    pub changed: u64,
    /// Quality of the tested rules.
    pub would_be_quality: QualityDto,
    /// Quality of what was recorded.
    pub actual_quality: QualityDto,
}

/// An incident in a backtest result.
#[derive(Debug, Clone, Object)]
pub struct BacktestIncident {
    /// Deterministic id: the same run has the same id live and in a replay.
    pub id: String,
    /// Machine.
    pub machine: String,
    /// Rule.
    pub rule: String,
    /// Threshold it opened under.
    pub threshold: f64,
    /// Run start.
    pub started_at: String,
    /// Opened.
    pub opened_at: String,
    /// Resolved, if by the end of the range.
    pub resolved_at: Option<String>,
    /// Highest breaching value.
    pub peak: Option<f64>,
}

/// One difference between would-be and recorded incidents.
#[derive(Debug, Clone, Object)]
pub struct BacktestDifference {
    /// `added`, `removed` or `changed`.
    pub kind: String,
    /// The would-be incident (absent for `removed`).
    pub would_be: Option<BacktestIncident>,
    /// The recorded incident (absent for `added`).
    pub recorded: Option<BacktestIncident>,
}

/// The outcome of a finished backtest.
#[derive(Debug, Clone, Object)]
pub struct BacktestResult {
    /// Events replayed from the log.
    pub events_read: u64,
    /// Length of the range in days.
    pub days: f64,
    /// Per rule.
    pub rules: Vec<RuleCounts>,
    /// Incidents the tested rules would have had.
    pub incidents: Vec<BacktestIncident>,
    /// Incidents recorded in the range.
    pub recorded: Vec<BacktestIncident>,
    /// Differences.
    pub differences: Vec<BacktestDifference>,
    /// A list was cut at 10,000 entries.
    pub truncated: bool,
}

/// A backtest and, when done, its result.
#[derive(Debug, Clone, Object)]
pub struct Backtest {
    /// Id.
    pub id: String,
    /// `queued`, `running`, `done` or `failed`.
    pub status: String,
    /// 0 to 1.
    pub progress: f64,
    /// Events replayed so far.
    pub events_read: i64,
    /// Who asked.
    pub requested_by: String,
    /// When.
    pub requested_at: DateTime<Utc>,
    /// When a processor started it.
    pub started_at: Option<DateTime<Utc>>,
    /// When it finished.
    pub finished_at: Option<DateTime<Utc>>,
    /// Why it failed.
    pub error: Option<String>,
    /// Start of the range.
    pub from: DateTime<Utc>,
    /// End of the range.
    pub to: DateTime<Utc>,
    /// Machines (empty: all).
    pub machines: Vec<String>,
    /// The rules tested.
    pub rules: RulesDto,
    /// The rules in force when it was requested.
    pub baseline: RulesDto,
    /// Present when `status` is `done` (and not in lists).
    pub result: Option<BacktestResult>,
}

/// Recent backtests, newest first, without results.
#[derive(Debug, Clone, Object)]
pub struct BacktestList {
    /// At most 50.
    pub backtests: Vec<Backtest>,
}

#[derive(ApiResponse)]
enum CreateResponse {
    /// Recorded; a processor runs it.
    #[oai(status = 202)]
    Accepted(Json<Created>),
    /// Invalid request (reason says which field).
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    /// The database is unavailable.
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody>),
}

#[derive(ApiResponse)]
enum GetResponse {
    /// The backtest.
    #[oai(status = 200)]
    Ok(Json<Backtest>),
    /// No backtest has this id.
    #[oai(status = 404)]
    NotFound(Json<ErrorBody>),
    /// The database is unavailable.
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody>),
}

#[derive(ApiResponse)]
enum ListResponse {
    /// Recent backtests.
    #[oai(status = 200)]
    Ok(Json<BacktestList>),
    /// The database is unavailable.
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody>),
}

fn quality(q: &Quality) -> QualityDto {
    QualityDto {
        opened: q.opened,
        incidents_per_day: q.incidents_per_day,
        hours_in_incident: q.hours_in_incident,
        flips_per_day: q.flips_per_day,
    }
}

fn incident(i: &ResultIncident) -> BacktestIncident {
    BacktestIncident {
        id: i.id.clone(),
        machine: i.machine.clone(),
        rule: i.rule.as_str().to_owned(),
        threshold: i.threshold,
        started_at: i.started_at.clone(),
        opened_at: i.opened_at.clone(),
        resolved_at: i.resolved_at.clone(),
        peak: i.peak,
    }
}

fn result(r: &JobResult) -> BacktestResult {
    BacktestResult {
        events_read: r.events_read,
        days: r.days,
        rules: r
            .rules
            .iter()
            .map(|s| RuleCounts {
                rule: s.rule.as_str().to_owned(),
                would_open: s.would_open,
                actual: s.actual,
                added: s.added,
                removed: s.removed,
                changed: s.changed,
                would_be_quality: quality(&s.would_be_quality),
                actual_quality: quality(&s.actual_quality),
            })
            .collect(),
        incidents: r.incidents.iter().map(incident).collect(),
        recorded: r.recorded.iter().map(incident).collect(),
        differences: r
            .differences
            .iter()
            .map(|d| BacktestDifference {
                kind: d.kind.clone(),
                would_be: d.would_be.as_ref().map(incident),
                recorded: d.recorded.as_ref().map(incident),
            })
            .collect(),
        truncated: r.truncated,
    }
}

fn unavailable() -> ErrorBody {
    ErrorBody::new("unavailable", "the database is unavailable")
}

/// The backtest endpoints.
pub struct BacktestsApi {
    /// Where requests and results are recorded.
    pub db: Db,
    /// The configured default rules.
    pub defaults: RuleSet,
}

const COLUMNS: &str = "id, status, progress, events_read, requested_by, requested_at, started_at, \
                       finished_at, error, request";

/// A `backtests` row as stored (either backend).
#[derive(sqlx::FromRow)]
struct BacktestRow {
    id: String,
    status: String,
    progress: f64,
    events_read: i64,
    requested_by: String,
    requested_at: NaiveDateTime,
    started_at: Option<NaiveDateTime>,
    finished_at: Option<NaiveDateTime>,
    error: Option<String>,
    request: String,
    #[sqlx(default)]
    result: Option<String>,
}

impl BacktestsApi {
    fn from_row(row: BacktestRow) -> Result<Backtest, String> {
        let request: JobRequest =
            serde_json::from_str(&row.request).map_err(|e| format!("unreadable request: {e}"))?;
        let result = row
            .result
            .map(|text| serde_json::from_str::<JobResult>(&text))
            .transpose()
            .map_err(|e| format!("unreadable result: {e}"))?
            .as_ref()
            .map(result);
        Ok(Backtest {
            id: row.id,
            status: row.status,
            progress: row.progress,
            events_read: row.events_read,
            requested_by: row.requested_by,
            requested_at: row.requested_at.and_utc(),
            started_at: row.started_at.map(|t| t.and_utc()),
            finished_at: row.finished_at.map(|t| t.and_utc()),
            error: row.error,
            from: request.from,
            to: request.to,
            machines: request.machines,
            rules: to_dto(&request.rules, None, None),
            baseline: to_dto(&request.baseline, None, None),
            result,
        })
    }
}

#[OpenApi(tag = "ApiTags::Backtests")]
impl BacktestsApi {
    /// Start a backtest: replay `[from, to]` of the recorded log with `rules` and
    /// compare with the incidents recorded. Live incidents are never changed.
    #[oai(path = "/backtests", method = "post", operation_id = "create_backtest")]
    async fn create(&self, req: &Request, body: Json<NewBacktest>) -> CreateResponse {
        let bad =
            |why: String| CreateResponse::BadRequest(Json(ErrorBody::new("bad_request", why)));
        let Some(user) = req.extensions().get::<CurrentUser>() else {
            return bad("no session".into());
        };
        let body = body.0;
        if body.from >= body.to {
            return bad("from must be before to".into());
        }
        if body.to - body.from > chrono::Duration::days(MAX_RANGE_DAYS) {
            return bad(format!("the range may be at most {MAX_RANGE_DAYS} days"));
        }
        let mut machines = body.machines.unwrap_or_default();
        machines.retain(|m| !m.trim().is_empty());
        if machines.len() > MAX_MACHINES {
            return bad(format!("at most {MAX_MACHINES} machines"));
        }
        if let Some(m) = machines.iter().find(|m| m.len() > 128) {
            return bad(format!("machine name too long: {:?}…", &m[..32]));
        }
        let rules = match from_dto(&body.rules) {
            Ok(r) => r,
            Err(why) => return bad(format!("rules: {why}")),
        };
        let Ok(baseline) = rules_in_force(&self.db, self.defaults).await else {
            return CreateResponse::Unavailable(Json(unavailable()));
        };
        let request = JobRequest {
            from: body.from,
            to: body.to,
            machines,
            rules,
            baseline,
        };
        let id = uuid::Uuid::new_v4().to_string();
        let inserted = on!(&self.db, |p| sqlx::query(
            "INSERT INTO backtests (id, requested_by, requested_at, request, status) \
             VALUES (?, ?, ?, ?, 'queued')",
        )
        .bind(&id)
        .bind(&user.username)
        .bind(Utc::now().naive_utc())
        .bind(serde_json::to_string(&request).unwrap_or_default())
        .execute(p)
        .await
        .map(|_| ()));
        match inserted {
            Ok(_) => CreateResponse::Accepted(Json(Created {
                id,
                status: "queued".into(),
            })),
            Err(e) => {
                tracing::error!(error = %e, "recording a backtest failed");
                CreateResponse::Unavailable(Json(unavailable()))
            }
        }
    }

    /// A backtest: status, progress and, when done, its result.
    #[oai(path = "/backtests/:id", method = "get", operation_id = "get_backtest")]
    async fn get(&self, id: Path<String>) -> GetResponse {
        let row: Result<Option<BacktestRow>, sqlx::Error> = on!(&self.db, |p| sqlx::query_as(
            &format!("SELECT {COLUMNS}, result FROM backtests WHERE id = ?")
        )
        .bind(&id.0)
        .fetch_optional(p)
        .await);
        match row {
            Err(_) => GetResponse::Unavailable(Json(unavailable())),
            Ok(None) => GetResponse::NotFound(Json(ErrorBody::new(
                "not_found",
                format!("no backtest {:?}", id.0),
            ))),
            Ok(Some(row)) => match Self::from_row(row) {
                Ok(b) => GetResponse::Ok(Json(b)),
                Err(why) => {
                    tracing::error!(backtest = id.0, error = why, "unreadable backtest row");
                    GetResponse::Unavailable(Json(ErrorBody::new("unavailable", why)))
                }
            },
        }
    }

    /// The 50 most recent backtests, newest first (without results).
    #[oai(path = "/backtests", method = "get", operation_id = "list_backtests")]
    async fn list(&self) -> ListResponse {
        let rows: Result<Vec<BacktestRow>, sqlx::Error> = on!(&self.db, |p| sqlx::query_as(
            &format!("SELECT {COLUMNS} FROM backtests ORDER BY requested_at DESC LIMIT 50")
        )
        .fetch_all(p)
        .await);
        match rows {
            Err(_) => ListResponse::Unavailable(Json(unavailable())),
            Ok(rows) => ListResponse::Ok(Json(BacktestList {
                backtests: rows
                    .into_iter()
                    .filter_map(|r| Self::from_row(r).ok())
                    .collect(),
            })),
        }
    }
}
