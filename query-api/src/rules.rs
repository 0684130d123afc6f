//! `/api/rules`: read the rules in force; admins change them. A change is
//! published as a `RulesChanged` event to every partition of the machine-event
//! topic (each processor applies it at its event time), then recorded here.
//! This is the only thing query-api ever sends to Kafka.

use crate::error::ErrorBody;
use crate::session::require_admin;
use chrono::{DateTime, Utc};
use poem::Request;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi, Tags};
use proto_events::{Envelope, Event, RuleName, RuleSet, RulesChanged};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use std::time::Duration;
use storage::{on, Db};

#[derive(Tags)]
enum ApiTags {
    /// Incident rules.
    Rules,
}

/// One rule.
#[derive(Debug, Clone, Object)]
pub struct RuleDto {
    /// A sample breaches above this percent (unused for `unreachable`).
    #[oai(validator(minimum(value = "0"), maximum(value = "100")))]
    pub threshold: f64,
    /// How long a run must last, e.g. `0`, `30m`, `2h`.
    pub r#for: String,
    /// Clears at or below `threshold - hysteresis`.
    #[oai(validator(minimum(value = "0"), maximum(value = "100")))]
    pub hysteresis: f64,
}

/// The rule set.
#[derive(Debug, Clone, Object)]
pub struct RulesDto {
    /// CPU rule.
    pub cpu: RuleDto,
    /// Memory rule.
    pub mem: RuleDto,
    /// Disk rule.
    pub disk: RuleDto,
    /// Unreachable rule (only `for` matters).
    pub unreachable: RuleDto,
    /// A run ends when breaches are more than this many poll intervals apart.
    #[oai(validator(minimum(value = "1"), maximum(value = "1000")))]
    pub staleness_intervals: u32,
    /// Who changed them last (absent: the configured defaults). Ignored on input.
    pub changed_by: Option<String>,
    /// When (absent: the configured defaults). Ignored on input.
    pub changed_at: Option<DateTime<Utc>>,
}

pub(crate) fn to_dto(
    rules: &RuleSet,
    changed_by: Option<String>,
    changed_at: Option<DateTime<Utc>>,
) -> RulesDto {
    let one = |r: RuleName| {
        let s = rules.get(r);
        RuleDto {
            threshold: s.threshold,
            r#for: proto_events::duration::format_duration(Duration::from_millis(s.for_ms)),
            hysteresis: s.hysteresis,
        }
    };
    RulesDto {
        cpu: one(RuleName::Cpu),
        mem: one(RuleName::Mem),
        disk: one(RuleName::Disk),
        unreachable: one(RuleName::Unreachable),
        staleness_intervals: rules.staleness_intervals,
        changed_by,
        changed_at,
    }
}

pub(crate) fn from_dto(dto: &RulesDto) -> Result<RuleSet, String> {
    let mut rules = RuleSet::default();
    for (name, d) in [
        (RuleName::Cpu, &dto.cpu),
        (RuleName::Mem, &dto.mem),
        (RuleName::Disk, &dto.disk),
        (RuleName::Unreachable, &dto.unreachable),
    ] {
        let spec = rules.get_mut(name);
        spec.threshold = d.threshold;
        spec.hysteresis = d.hysteresis;
        spec.for_ms = proto_events::duration::parse_duration(&d.r#for)
            .map_err(|e| format!("{name}.for: {e}"))?
            .as_millis() as u64;
    }
    rules.staleness_intervals = dto.staleness_intervals;
    rules.validate()?;
    Ok(rules)
}

/// The rules in force: as last set through the API, else the configured defaults.
pub(crate) async fn rules_in_force(db: &Db, defaults: RuleSet) -> Result<RuleSet, sqlx::Error> {
    let stored: Option<String> = on!(db, |p| sqlx::query_scalar(
        "SELECT rules FROM rules_current WHERE id = 1"
    )
    .fetch_optional(p)
    .await)?;
    Ok(stored
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or(defaults))
}

#[derive(ApiResponse)]
enum GetResponse {
    /// The rules in force.
    #[oai(status = 200)]
    Ok(Json<RulesDto>),
    /// The database is unavailable.
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody>),
}

#[derive(ApiResponse)]
enum PutResponse {
    /// Published and in force from now on.
    #[oai(status = 200)]
    Ok(Json<RulesDto>),
    /// Invalid rules (reason says which field).
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    /// Only admins change rules.
    #[oai(status = 403)]
    Forbidden(Json<ErrorBody>),
    /// The broker or the database is unavailable; nothing changed.
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody>),
}

/// Where `RulesChanged` goes: the machine-event log of either mode.
pub enum EventLogWriter {
    /// Kafka: one copy per partition of the machine-event topic.
    Kafka(FutureProducer),
    /// The embedded log (one partition).
    Embedded(storage::log::EventLog),
    /// Neither is configured: rule changes are refused.
    None,
}

/// The rules endpoints.
pub struct RulesApi {
    /// Where the current rules are recorded.
    pub db: Db,
    /// The configured defaults.
    pub defaults: RuleSet,
    /// Publishes `RulesChanged`.
    pub log: EventLogWriter,
    /// The machine-event topic.
    pub topic: String,
}

impl RulesApi {
    async fn current(&self) -> Result<RulesDto, sqlx::Error> {
        let row: Option<(String, String, chrono::NaiveDateTime)> = on!(&self.db, |p| {
            sqlx::query_as("SELECT rules, changed_by, changed_at FROM rules_current WHERE id = 1")
                .fetch_optional(p)
                .await
        })?;
        Ok(match row {
            Some((rules, changed_by, changed_at)) => {
                let rules: RuleSet = serde_json::from_str(&rules).unwrap_or(self.defaults);
                to_dto(&rules, Some(changed_by), Some(changed_at.and_utc()))
            }
            None => to_dto(&self.defaults, None, None),
        })
    }

    async fn publish(&self, producer: &FutureProducer, env: &Envelope) -> Result<(), String> {
        let md = producer
            .client()
            .fetch_metadata(Some(&self.topic), Duration::from_secs(5))
            .map_err(|e| e.to_string())?;
        let partitions = md
            .topics()
            .iter()
            .find(|t| t.name() == self.topic)
            .map(|t| t.partitions().len())
            .unwrap_or(0);
        if partitions == 0 {
            return Err(format!("topic {} has no partitions yet", self.topic));
        }
        let payload = env.encode();
        for p in 0..partitions as i32 {
            producer
                .send(
                    FutureRecord::<str, [u8]>::to(&self.topic)
                        .partition(p)
                        .payload(&payload),
                    Duration::from_secs(10),
                )
                .await
                .map_err(|(e, _)| e.to_string())?;
        }
        Ok(())
    }
}

#[OpenApi(tag = "ApiTags::Rules")]
impl RulesApi {
    /// The rules in force.
    #[oai(path = "/rules", method = "get", operation_id = "get_rules")]
    async fn get(&self) -> GetResponse {
        match self.current().await {
            Ok(r) => GetResponse::Ok(Json(r)),
            Err(_) => GetResponse::Unavailable(Json(ErrorBody::new(
                "unavailable",
                "the database is unavailable",
            ))),
        }
    }

    /// Replace the rules (admin). They apply to events from now on; running runs
    /// keep their start and open incidents stay open until cleared under the new rules.
    #[oai(path = "/rules", method = "put", operation_id = "put_rules")]
    async fn put(&self, req: &Request, body: Json<RulesDto>) -> PutResponse {
        let user = match require_admin(req) {
            Ok(u) => u.clone(),
            Err(e) => return PutResponse::Forbidden(Json(e)),
        };
        let rules = match from_dto(&body) {
            Ok(r) => r,
            Err(why) => return PutResponse::BadRequest(Json(ErrorBody::new("bad_request", why))),
        };
        if matches!(self.log, EventLogWriter::None) {
            return PutResponse::Unavailable(Json(ErrorBody::new(
                "unavailable",
                "rule changes need the event log (KAFKA_BROKERS is not set)",
            )));
        }
        let now = Utc::now();
        let env = Envelope {
            event_id: uuid::Uuid::new_v4(),
            machine: String::new(),
            at: now,
            event: Event::RulesChanged(RulesChanged {
                rules,
                changed_by: user.username.clone(),
            }),
        };
        let published = match &self.log {
            EventLogWriter::Kafka(producer) => self.publish(producer, &env).await,
            EventLogWriter::Embedded(log) => log
                .append(std::slice::from_ref(&env))
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            EventLogWriter::None => Err("no event log".to_owned()),
        };
        if let Err(e) = published {
            tracing::error!(error = %e, "publishing RulesChanged failed");
            return PutResponse::Unavailable(Json(ErrorBody::new(
                "unavailable",
                format!("the event log is unavailable: {e}"),
            )));
        }
        let sql = self.db.pick(
            "INSERT INTO rules_current (id, rules, changed_by, changed_at) VALUES (1, ?, ?, ?) \
             ON DUPLICATE KEY UPDATE rules = VALUES(rules), changed_by = VALUES(changed_by), changed_at = VALUES(changed_at)",
            "INSERT INTO rules_current (id, rules, changed_by, changed_at) VALUES (1, ?, ?, ?) \
             ON CONFLICT (id) DO UPDATE SET rules = excluded.rules, changed_by = excluded.changed_by, changed_at = excluded.changed_at",
        );
        let stored = on!(&self.db, |p| sqlx::query(sql)
            .bind(serde_json::to_string(&rules).unwrap_or_default())
            .bind(&user.username)
            .bind(now.naive_utc())
            .execute(p)
            .await
            .map(|_| ()));
        if let Err(e) = stored {
            tracing::error!(error = %e, "recording the rules failed after publishing them");
        }
        PutResponse::Ok(Json(to_dto(&rules, Some(user.username), Some(now))))
    }
}
