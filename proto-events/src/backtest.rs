//! The backtest job schema shared by query-api (which records requests and serves
//! results) and the processor (which runs them): the `request` and `result`
//! columns of the `backtests` table, as JSON.

use crate::{RuleName, RuleSet};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What query-api records as the `request` column.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct JobRequest {
    /// Start of the range.
    pub from: DateTime<Utc>,
    /// End of the range.
    pub to: DateTime<Utc>,
    /// Only these machines (empty: all).
    #[serde(default)]
    pub machines: Vec<String>,
    /// The rules to test.
    pub rules: RuleSet,
    /// The rules in force when the run was requested (drawn for comparison).
    pub baseline: RuleSet,
}

/// Rule-quality figures of one rule over the range.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Default)]
pub struct Quality {
    /// Incidents that opened in the range.
    pub opened: u64,
    /// Opened per day of range.
    pub incidents_per_day: f64,
    /// Hours spent in an open incident within the range, summed over machines.
    pub hours_in_incident: f64,
    /// Openings plus resolutions in the range, per day.
    pub flips_per_day: f64,
}

/// Counts of one rule.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RuleSummary {
    /// The rule.
    pub rule: RuleName,
    /// Incidents that would have existed in the range.
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
    pub would_be_quality: Quality,
    /// Quality of what was recorded.
    pub actual_quality: Quality,
}

/// One incident in a result.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ResultIncident {
    /// Deterministic id (the same run has the same id live and in a replay).
    pub id: String,
    /// Machine.
    pub machine: String,
    /// Rule.
    pub rule: RuleName,
    /// Threshold it opened under.
    pub threshold: f64,
    /// Run start.
    pub started_at: String,
    /// Opened.
    pub opened_at: String,
    /// Resolved, if within the range.
    pub resolved_at: Option<String>,
    /// Highest breaching value.
    pub peak: Option<f64>,
}

/// One difference in a result.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ResultDifference {
    /// `added`, `removed` or `changed`.
    pub kind: String,
    /// The would-be incident (absent for `removed`).
    pub would_be: Option<ResultIncident>,
    /// The recorded incident (absent for `added`).
    pub recorded: Option<ResultIncident>,
}

/// What a finished job writes as its `result`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct JobResult {
    /// Events read from the log.
    pub events_read: u64,
    /// Length of the range in days.
    pub days: f64,
    /// Per rule, in rule order.
    pub rules: Vec<RuleSummary>,
    /// Would-be incidents (at most 10,000).
    pub incidents: Vec<ResultIncident>,
    /// Recorded incidents (at most 10,000).
    pub recorded: Vec<ResultIncident>,
    /// Differences (at most 10,000).
    pub differences: Vec<ResultDifference>,
    /// Whether a list was cut at 10,000.
    pub truncated: bool,
}
