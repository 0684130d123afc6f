//! Reading configuration values by key, with errors that name the key. Pure: the
//! caller passes the lookup (the process environment in services, a map in tests),
//! so every service validates its keys the same way, once, at start-up.

use crate::duration::parse_duration;
use crate::rules::{RuleName, RuleSet};
use std::collections::HashMap;
use std::fmt::Display;
use std::str::FromStr;
use std::time::Duration;

/// A configuration value that could not be used; the message names the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("configuration key {key}: {message}")]
pub struct SettingError {
    /// The key, e.g. `RULE_MEM_FOR`.
    pub key: String,
    /// What is wrong with its value.
    pub message: String,
}

/// Typed access to key/value settings.
pub struct Settings {
    lookup: Box<dyn Fn(&str) -> Option<String> + Send + Sync>,
}

impl Settings {
    /// Settings read from the process environment.
    pub fn from_env() -> Self {
        Settings {
            lookup: Box::new(|k| std::env::var(k).ok()),
        }
    }

    /// Settings from a fixed map (tests).
    pub fn from_map(map: HashMap<String, String>) -> Self {
        Settings {
            lookup: Box::new(move |k| map.get(k).cloned()),
        }
    }

    /// The raw value of `key`, if set and not blank.
    pub fn raw(&self, key: &str) -> Option<String> {
        (self.lookup)(key)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    /// A required string value.
    pub fn required(&self, key: &str) -> Result<String, SettingError> {
        self.raw(key).ok_or_else(|| SettingError {
            key: key.to_owned(),
            message: "is required but not set".to_owned(),
        })
    }

    /// `key` parsed with `FromStr`, or `default` when unset.
    pub fn parse_or<T: FromStr>(&self, key: &str, default: T) -> Result<T, SettingError>
    where
        T::Err: Display,
    {
        match self.raw(key) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|e| SettingError {
                key: key.to_owned(),
                message: format!("{v:?} is invalid: {e}"),
            }),
        }
    }

    /// A duration (`0`, `45s`, `30m`, `1h30m`), or `default` when unset.
    pub fn duration_or(&self, key: &str, default: Duration) -> Result<Duration, SettingError> {
        match self.raw(key) {
            None => Ok(default),
            Some(v) => parse_duration(&v).map_err(|e| SettingError {
                key: key.to_owned(),
                message: e.to_string(),
            }),
        }
    }

    /// The rule set from `RULE_<NAME>_THRESHOLD`, `RULE_<NAME>_FOR`,
    /// `RULE_<NAME>_HYSTERESIS` and `RULE_STALENESS_INTERVALS`, defaults from SPEC §3.
    pub fn rules(&self) -> Result<RuleSet, SettingError> {
        let mut rules = RuleSet::default();
        for rule in RuleName::ALL {
            let upper = rule.as_str().to_ascii_uppercase();
            let spec = rules.get_mut(rule);
            if rule != RuleName::Unreachable {
                let key = format!("RULE_{upper}_THRESHOLD");
                spec.threshold = self.parse_or(&key, spec.threshold)?;
                if !(spec.threshold.is_finite() && (0.0..=100.0).contains(&spec.threshold)) {
                    return Err(SettingError {
                        key,
                        message: "must be a percentage from 0 to 100".to_owned(),
                    });
                }
                let key = format!("RULE_{upper}_HYSTERESIS");
                spec.hysteresis = self.parse_or(&key, spec.hysteresis)?;
                if !(spec.hysteresis.is_finite() && (0.0..=100.0).contains(&spec.hysteresis)) {
                    return Err(SettingError {
                        key,
                        message: "must be a number from 0 to 100".to_owned(),
                    });
                }
            }
            let key = format!("RULE_{upper}_FOR");
            let default = Duration::from_millis(spec.for_ms);
            spec.for_ms = self.duration_or(&key, default)?.as_millis() as u64;
        }
        rules.staleness_intervals =
            self.parse_or("RULE_STALENESS_INTERVALS", rules.staleness_intervals)?;
        if rules.staleness_intervals == 0 {
            return Err(SettingError {
                key: "RULE_STALENESS_INTERVALS".to_owned(),
                message: "must be at least 1".to_owned(),
            });
        }
        Ok(rules)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Settings {
        Settings::from_map(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn defaults_are_the_spec_rules() {
        assert_eq!(settings(&[]).rules().unwrap(), RuleSet::default());
    }

    #[test]
    fn overrides_apply() {
        let r = settings(&[
            ("RULE_MEM_THRESHOLD", "80"),
            ("RULE_MEM_FOR", "10m"),
            ("RULE_CPU_HYSTERESIS", "5"),
        ])
        .rules()
        .unwrap();
        assert_eq!(
            (r.mem.threshold, r.mem.for_ms, r.cpu.hysteresis),
            (80.0, 600_000, 5.0)
        );
    }

    #[test]
    fn a_bad_value_names_the_key() {
        for (k, v) in [
            ("RULE_MEM_FOR", "30 minutes"),
            ("RULE_CPU_THRESHOLD", "high"),
            ("RULE_DISK_THRESHOLD", "101"),
        ] {
            let err = settings(&[(k, v)]).rules().unwrap_err();
            assert_eq!(err.key, k);
            assert!(err.to_string().contains(k));
        }
    }
}
