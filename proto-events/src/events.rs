//! The events: immutable, past-tense facts that carry their data (SPEC §2).
//!
//! Times are UTC with millisecond precision and are written as RFC 3339
//! (`2026-11-23T10:00:00.000Z`). Percentages are `f64` in `0..=100`.

use crate::rules::{RuleName, RuleSet};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use uuid::Uuid;

/// A UTC instant with millisecond precision.
pub type Timestamp = DateTime<Utc>;

/// Serde for [`Timestamp`] as RFC 3339 with exactly three fractional digits.
pub mod time_ms {
    use super::Timestamp;
    use chrono::SecondsFormat;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serializes as `2026-11-23T10:00:00.000Z`.
    pub fn serialize<S: Serializer>(t: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Millis, true))
    }

    /// Accepts any RFC 3339 time and converts it to UTC.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        let s = <&str>::deserialize(d)?;
        chrono::DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&chrono::Utc))
            .map_err(serde::de::Error::custom)
    }

    /// The same for `Option<Timestamp>` (`null` for none).
    pub mod option {
        use super::super::Timestamp;
        use serde::{Deserialize, Deserializer, Serializer};

        /// Serializes `Some` like [`super::serialize`], `None` as `null`.
        pub fn serialize<S: Serializer>(t: &Option<Timestamp>, s: S) -> Result<S::Ok, S::Error> {
            match t {
                Some(t) => super::serialize(t, s),
                None => s.serialize_none(),
            }
        }

        /// Accepts `null` or an RFC 3339 time.
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Timestamp>, D::Error> {
            let s = Option::<&str>::deserialize(d)?;
            s.map(|s| {
                chrono::DateTime::parse_from_rfc3339(s)
                    .map(|t| t.with_timezone(&chrono::Utc))
                    .map_err(serde::de::Error::custom)
            })
            .transpose()
        }
    }
}

/// Every event the system records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[allow(clippy::large_enum_variant)]
pub enum Event {
    /// A poll succeeded and the payload had at least one usable metric.
    MetricSampled(MetricSampled),
    /// A poll failed (SPEC §1 reason codes).
    PollFailed(PollFailed),
    /// A machine was added to the registry.
    MachineRegistered(MachineSpec),
    /// A machine's settings changed (URL, interval, enabled, labels).
    MachineChanged(MachineSpec),
    /// A machine was removed from the registry.
    MachineRemoved(MachineRemoved),
    /// The rules in force changed; effective from the envelope's event time.
    RulesChanged(RulesChanged),
    /// An incident opened.
    IncidentOpened(IncidentOpened),
    /// A breaching event updated an open incident.
    IncidentUpdated(IncidentUpdated),
    /// An incident resolved.
    IncidentResolved(IncidentResolved),
}

impl Event {
    /// The type name written in the envelope.
    pub fn type_name(&self) -> &'static str {
        match self {
            Event::MetricSampled(_) => "MetricSampled",
            Event::PollFailed(_) => "PollFailed",
            Event::MachineRegistered(_) => "MachineRegistered",
            Event::MachineChanged(_) => "MachineChanged",
            Event::MachineRemoved(_) => "MachineRemoved",
            Event::RulesChanged(_) => "RulesChanged",
            Event::IncidentOpened(_) => "IncidentOpened",
            Event::IncidentUpdated(_) => "IncidentUpdated",
            Event::IncidentResolved(_) => "IncidentResolved",
        }
    }
}

/// Facts every poll event carries besides its outcome (SPEC §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PollTiming {
    /// The machine's poll interval in force, in milliseconds.
    pub interval_ms: u64,
    /// When the HTTP request actually started (the event time is the grid instant).
    #[serde(with = "time_ms")]
    pub started_at: Timestamp,
    /// How long the request took, in milliseconds.
    pub latency_ms: u32,
}

/// Why one metric of a sample is unknown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetricIssue {
    /// The payload field (`cpu`, `mem`, `disk`, `uptime`).
    pub field: String,
    /// A short human-readable reason, e.g. `value 101 is above 100`.
    pub reason: String,
}

/// A successful poll.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricSampled {
    /// Interval, start time and latency of the poll.
    #[serde(flatten)]
    pub timing: PollTiming,
    /// CPU percent, if the payload had a valid one.
    pub cpu: Option<f64>,
    /// Memory percent, if valid.
    pub mem: Option<f64>,
    /// Disk percent, if valid.
    pub disk: Option<f64>,
    /// Uptime in seconds, if parseable.
    pub uptime_s: Option<u64>,
    /// Why any metric above is unknown; empty when all were valid.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub issues: Vec<MetricIssue>,
    /// The machine rebooted since the previous sample (its uptime went down).
    #[serde(default)]
    pub rebooted: bool,
}

impl MetricSampled {
    /// The value of a metric rule's signal; `None` for `unreachable` or an unknown metric.
    pub fn value_of(&self, rule: RuleName) -> Option<f64> {
        match rule {
            RuleName::Cpu => self.cpu,
            RuleName::Mem => self.mem,
            RuleName::Disk => self.disk,
            RuleName::Unreachable => None,
        }
    }
}

/// The reason code of a failed poll (SPEC §1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureReason {
    /// The request did not complete within the timeout.
    Timeout,
    /// The connection could not be made (refused, DNS, TLS, reset).
    Connect,
    /// The machine answered with a non-2xx status.
    HttpStatus,
    /// The body exceeded the size limit.
    BodyTooLarge,
    /// The body was not JSON.
    InvalidJson,
    /// The JSON had none of cpu/mem/disk usable.
    InvalidPayload,
}

impl FailureReason {
    /// All reason codes.
    pub const ALL: [FailureReason; 6] = [
        FailureReason::Timeout,
        FailureReason::Connect,
        FailureReason::HttpStatus,
        FailureReason::BodyTooLarge,
        FailureReason::InvalidJson,
        FailureReason::InvalidPayload,
    ];

    /// The reason code as written on the wire and in history files.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::Timeout => "timeout",
            FailureReason::Connect => "connect",
            FailureReason::HttpStatus => "http_status",
            FailureReason::BodyTooLarge => "body_too_large",
            FailureReason::InvalidJson => "invalid_json",
            FailureReason::InvalidPayload => "invalid_payload",
        }
    }

    /// Parses a reason code.
    pub fn parse(s: &str) -> Option<Self> {
        FailureReason::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// A failed poll.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PollFailed {
    /// Interval, start time and latency of the poll.
    #[serde(flatten)]
    pub timing: PollTiming,
    /// The reason code.
    pub reason: FailureReason,
    /// A short detail: the HTTP status, the error, or the first 512 bytes of an invalid body.
    pub detail: String,
}

/// A machine's registry entry, as carried by `MachineRegistered` and `MachineChanged`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineSpec {
    /// The status URL (http or https).
    pub url: String,
    /// Whether the machine is polled. Disabling resolves its open incidents.
    pub enabled: bool,
    /// Its own poll interval, if not the default, in milliseconds.
    pub interval_ms: Option<u64>,
    /// Free-form labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// A machine left the registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineRemoved {}

/// The rules in force changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RulesChanged {
    /// The complete new rule set.
    pub rules: RuleSet,
    /// Who changed them (user name), for the audit trail.
    #[serde(default)]
    pub changed_by: String,
}

/// Why an incident resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResolutionReason {
    /// A clearing event arrived.
    Cleared,
    /// The machine was removed or disabled.
    MachineRemoved,
}

impl ResolutionReason {
    /// As stored in projections.
    pub fn as_str(self) -> &'static str {
        match self {
            ResolutionReason::Cleared => "cleared",
            ResolutionReason::MachineRemoved => "machine_removed",
        }
    }
}

/// An incident opened (SPEC §4 "Opening").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncidentOpened {
    /// Deterministic id from (machine, rule, run start).
    pub incident_id: Uuid,
    /// The rule that fired.
    pub rule: RuleName,
    /// Threshold in force when it opened.
    pub threshold: f64,
    /// `for` in force when it opened, in milliseconds.
    pub for_ms: u64,
    /// The start of the run (first breaching event).
    #[serde(with = "time_ms")]
    pub started_at: Timestamp,
    /// The event that opened it.
    #[serde(with = "time_ms")]
    pub opened_at: Timestamp,
    /// Highest breaching value since `started_at`; none for `unreachable`.
    pub peak: Option<f64>,
    /// Value of the opening event; none for `unreachable`.
    pub last_value: Option<f64>,
}

/// A breaching event updated an open incident.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncidentUpdated {
    /// The incident.
    pub incident_id: Uuid,
    /// Its rule.
    pub rule: RuleName,
    /// Highest breaching value so far.
    pub peak: Option<f64>,
    /// Value of this breaching event.
    pub last_value: Option<f64>,
    /// Time of this breaching event.
    #[serde(with = "time_ms")]
    pub last_breach_at: Timestamp,
}

/// An incident resolved (SPEC §4 "Resolution").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncidentResolved {
    /// The incident.
    pub incident_id: Uuid,
    /// Its rule.
    pub rule: RuleName,
    /// Time of the clearing (or removal) event.
    #[serde(with = "time_ms")]
    pub resolved_at: Timestamp,
    /// Why it resolved.
    pub reason: ResolutionReason,
}
