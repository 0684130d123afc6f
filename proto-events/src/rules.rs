//! Rules (SPEC §3): which signal a rule watches, its threshold, `for` duration and
//! hysteresis, and the default rule set.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The four rules of SPEC §3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleName {
    /// `sample.cpu > threshold`.
    Cpu,
    /// `sample.mem > threshold`.
    Mem,
    /// `sample.disk > threshold`.
    Disk,
    /// The poll failed, for any reason.
    Unreachable,
}

impl RuleName {
    /// All rules, in a fixed order (also the order of per-rule state in the fold).
    pub const ALL: [RuleName; 4] = [
        RuleName::Cpu,
        RuleName::Mem,
        RuleName::Disk,
        RuleName::Unreachable,
    ];

    /// The rule's name as written in configuration, the API and events.
    pub fn as_str(self) -> &'static str {
        match self {
            RuleName::Cpu => "cpu",
            RuleName::Mem => "mem",
            RuleName::Disk => "disk",
            RuleName::Unreachable => "unreachable",
        }
    }

    /// Position in [`RuleName::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for RuleName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown rule name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown rule {0:?} (expected cpu, mem, disk or unreachable)")]
pub struct UnknownRule(pub String);

impl FromStr for RuleName {
    type Err = UnknownRule;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "cpu" => Ok(RuleName::Cpu),
            "mem" => Ok(RuleName::Mem),
            "disk" => Ok(RuleName::Disk),
            "unreachable" => Ok(RuleName::Unreachable),
            other => Err(UnknownRule(other.to_owned())),
        }
    }
}

/// One rule's parameters. For `unreachable` the threshold and hysteresis are unused.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RuleSpec {
    /// A sample breaches when its value is strictly above this (percent).
    pub threshold: f64,
    /// How long a run must last before an incident opens, in milliseconds.
    pub for_ms: u64,
    /// A sample clears when its value is at or below `threshold - hysteresis`.
    pub hysteresis: f64,
}

impl RuleSpec {
    /// A rule with no hysteresis.
    pub const fn new(threshold: f64, for_ms: u64) -> Self {
        RuleSpec {
            threshold,
            for_ms,
            hysteresis: 0.0,
        }
    }
}

/// The full rule set in force at some instant.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RuleSet {
    /// `cpu` rule.
    pub cpu: RuleSpec,
    /// `mem` rule.
    pub mem: RuleSpec,
    /// `disk` rule.
    pub disk: RuleSpec,
    /// `unreachable` rule (threshold unused).
    pub unreachable: RuleSpec,
    /// A run ends when two consecutive breaching events are more than this many poll
    /// intervals apart (SPEC §4, default 3).
    pub staleness_intervals: u32,
}

const MINUTE_MS: u64 = 60_000;

impl Default for RuleSet {
    /// The defaults of SPEC §3.
    fn default() -> Self {
        RuleSet {
            cpu: RuleSpec::new(85.0, 0),
            mem: RuleSpec::new(90.0, 30 * MINUTE_MS),
            disk: RuleSpec::new(95.0, 120 * MINUTE_MS),
            unreachable: RuleSpec::new(0.0, 30 * MINUTE_MS),
            staleness_intervals: 3,
        }
    }
}

impl RuleSet {
    /// The spec of one rule.
    pub fn get(&self, rule: RuleName) -> &RuleSpec {
        match rule {
            RuleName::Cpu => &self.cpu,
            RuleName::Mem => &self.mem,
            RuleName::Disk => &self.disk,
            RuleName::Unreachable => &self.unreachable,
        }
    }

    /// The spec of one rule, mutably.
    pub fn get_mut(&mut self, rule: RuleName) -> &mut RuleSpec {
        match rule {
            RuleName::Cpu => &mut self.cpu,
            RuleName::Mem => &mut self.mem,
            RuleName::Disk => &mut self.disk,
            RuleName::Unreachable => &mut self.unreachable,
        }
    }

    /// Checks the invariants a rule set must hold (finite thresholds in 0..=100,
    /// non-negative hysteresis, staleness of at least one interval).
    pub fn validate(&self) -> Result<(), String> {
        for rule in RuleName::ALL {
            let spec = self.get(rule);
            if rule != RuleName::Unreachable
                && !(spec.threshold.is_finite() && (0.0..=100.0).contains(&spec.threshold))
            {
                return Err(format!(
                    "{rule}.threshold must be a number from 0 to 100, got {}",
                    spec.threshold
                ));
            }
            if !(spec.hysteresis.is_finite() && spec.hysteresis >= 0.0 && spec.hysteresis <= 100.0)
            {
                return Err(format!(
                    "{rule}.hysteresis must be a number from 0 to 100, got {}",
                    spec.hysteresis
                ));
            }
        }
        if self.staleness_intervals == 0 {
            return Err("staleness_intervals must be at least 1".to_owned());
        }
        Ok(())
    }
}
