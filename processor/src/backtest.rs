//! Backtests over an offline history file (SPEC §5): the same fold the live
//! processor runs, over polls read from JSON Lines, with the default rules
//! overridden by `--rule NAME.FIELD=VALUE`. Output: one JSON object per incident.

use crate::fold::Fold;
use crate::incidents::IncidentBook;
use chrono::SecondsFormat;
use proto_events::payload::parse_history_line;
use proto_events::{
    Envelope, Event, MetricSampled, PollFailed, PollTiming, RuleName, RuleSet, Timestamp,
};
use std::io::{BufRead, Write};
use uuid::Uuid;

/// Applies one `NAME.FIELD=VALUE` override (`mem.threshold=80`, `mem.for=10m`,
/// `cpu.hysteresis=5`, `unreachable.for=45m`).
pub fn apply_rule_override(rules: &mut RuleSet, spec: &str) -> Result<(), String> {
    let (lhs, value) = spec
        .split_once('=')
        .ok_or_else(|| format!("{spec:?}: expected NAME.FIELD=VALUE"))?;
    let (name, field) = lhs
        .split_once('.')
        .ok_or_else(|| format!("{spec:?}: expected NAME.FIELD=VALUE"))?;
    let rule: RuleName = name.trim().parse().map_err(|e| format!("{spec:?}: {e}"))?;
    let value = value.trim();
    let target = rules.get_mut(rule);
    match field.trim() {
        "threshold" | "hysteresis" if rule == RuleName::Unreachable => {
            return Err(format!("{spec:?}: the unreachable rule has only `for`"));
        }
        "threshold" => {
            target.threshold = value
                .parse()
                .map_err(|_| format!("{spec:?}: {value:?} is not a number"))?
        }
        "hysteresis" => {
            target.hysteresis = value
                .parse()
                .map_err(|_| format!("{spec:?}: {value:?} is not a number"))?
        }
        "for" => {
            target.for_ms = proto_events::duration::parse_duration(value)
                .map_err(|e| format!("{spec:?}: {e}"))?
                .as_millis() as u64
        }
        other => {
            return Err(format!(
                "{spec:?}: unknown field {other:?} (threshold, for, hysteresis)"
            ))
        }
    }
    rules.validate().map_err(|e| format!("{spec:?}: {e}"))
}

/// What a run did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Summary {
    /// Lines read (blank lines excluded).
    pub lines: u64,
    /// Malformed lines skipped.
    pub skipped: u64,
    /// Lines the fold discarded (out of order or duplicate per machine).
    pub discarded: u64,
    /// Incidents written.
    pub incidents: u64,
}

fn rfc3339(t: Timestamp) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// The output form of one incident:
/// `{"machine","rule","started_at","opened_at","resolved_at"|null,"peak"|null}`.
pub fn incident_json(r: &crate::incidents::IncidentRecord) -> serde_json::Value {
    serde_json::json!({
        "machine": r.machine,
        "rule": r.rule.as_str(),
        "started_at": rfc3339(r.started_at),
        "opened_at": rfc3339(r.opened_at),
        "resolved_at": r.resolved_at.map(rfc3339),
        "peak": r.peak,
    })
}

/// The configured rules with each `NAME.FIELD=VALUE` override applied.
pub fn rules_with_overrides(mut rules: RuleSet, overrides: &[String]) -> Result<RuleSet, String> {
    for o in overrides {
        apply_rule_override(&mut rules, o)?;
    }
    Ok(rules)
}

/// Runs a backtest: reads `input`, writes incidents to `out` and one line per
/// malformed input line to `errors`. `progress` is called with bytes read so far.
pub fn run_history(
    input: impl BufRead,
    rules: RuleSet,
    interval_ms: u64,
    out: &mut impl Write,
    errors: &mut impl Write,
    mut progress: impl FnMut(u64),
) -> std::io::Result<Summary> {
    let mut fold = Fold::new(rules);
    let mut book = IncidentBook::new();
    let mut emitted = Vec::new();
    let mut summary = Summary::default();
    let mut bytes = 0u64;
    for (index, line) in input.split(b'\n').enumerate() {
        let line = line?;
        bytes += line.len() as u64 + 1;
        if index % 65_536 == 0 {
            progress(bytes);
        }
        let trimmed = line.trim_ascii();
        if trimmed.is_empty() {
            continue;
        }
        summary.lines += 1;
        let parsed = match parse_history_line(trimmed) {
            Ok(p) => p,
            Err(why) => {
                summary.skipped += 1;
                writeln!(errors, "line {}: {why}", index + 1)?;
                continue;
            }
        };
        let timing = PollTiming {
            interval_ms,
            started_at: parsed.at,
            latency_ms: 0,
        };
        let event = match parsed.outcome {
            Ok(s) => Event::MetricSampled(MetricSampled {
                timing,
                cpu: s.cpu,
                mem: s.mem,
                disk: s.disk,
                uptime_s: s.uptime_s,
                issues: Vec::new(),
                rebooted: false,
            }),
            Err((reason, detail)) => Event::PollFailed(PollFailed {
                timing,
                reason,
                detail,
            }),
        };
        let env = Envelope {
            event_id: Uuid::from_u128(index as u128 + 1),
            machine: parsed.machine,
            at: parsed.at,
            event,
        };
        emitted.clear();
        if fold.apply(&env, &mut emitted) != crate::fold::Applied::Folded {
            summary.discarded += 1;
        }
        for e in &emitted {
            book.apply(e);
        }
    }
    progress(bytes);
    for r in book.records() {
        writeln!(out, "{}", incident_json(r))?;
        summary.incidents += 1;
    }
    Ok(summary)
}
