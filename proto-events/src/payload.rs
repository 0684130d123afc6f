//! Parsing a machine's status payload (SPEC §1), every value dialect.
//!
//! `{"cpu": 60, "mem": "30%", "disk": " 43.5 % ", "uptime": "1d 2h 37m 6s"}`
//!
//! The body is walked once with a serde visitor that looks only at `cpu`, `mem`,
//! `disk` and `uptime` and skips everything else without building a tree (about
//! three times faster than going through `serde_json::Value`).

use crate::events::MetricIssue;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use std::fmt;

/// The usable content of a status payload.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StatusSample {
    /// CPU percent.
    pub cpu: Option<f64>,
    /// Memory percent.
    pub mem: Option<f64>,
    /// Disk percent.
    pub disk: Option<f64>,
    /// Uptime in seconds.
    pub uptime_s: Option<u64>,
    /// Why any of the above is unknown.
    pub issues: Vec<MetricIssue>,
}

/// Why a payload is not a sample at all.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PayloadError {
    /// Not JSON (`invalid_json`).
    #[error("body is not JSON: {0}")]
    InvalidJson(String),
    /// JSON, but none of cpu/mem/disk usable (`invalid_payload`).
    #[error("no usable cpu, mem or disk: {0}")]
    InvalidPayload(String),
}

/// A JSON scalar as it appeared, before validation.
#[derive(Debug, Clone, PartialEq)]
enum Raw {
    Missing,
    Number(f64),
    Str(String),
    Other(&'static str),
}

impl<'de> Deserialize<'de> for Raw {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct RawVisitor;
        impl<'de> Visitor<'de> for RawVisitor {
            type Value = Raw;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_bool<E>(self, _: bool) -> Result<Raw, E> {
                Ok(Raw::Other("a boolean"))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Raw, E> {
                Ok(Raw::Number(v as f64))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Raw, E> {
                Ok(Raw::Number(v as f64))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Raw, E> {
                Ok(Raw::Number(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Raw, E> {
                Ok(Raw::Str(v.to_owned()))
            }
            fn visit_string<E>(self, v: String) -> Result<Raw, E> {
                Ok(Raw::Str(v))
            }
            fn visit_unit<E>(self) -> Result<Raw, E> {
                Ok(Raw::Other("null"))
            }
            fn visit_none<E>(self) -> Result<Raw, E> {
                Ok(Raw::Other("null"))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Raw, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Raw::Other("an array"))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Raw, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Raw::Other("an object"))
            }
        }
        d.deserialize_any(RawVisitor)
    }
}

struct RawPayload {
    cpu: Raw,
    mem: Raw,
    disk: Raw,
    uptime: Raw,
    // History-file fields (SPEC §5); ignored in a status payload.
    machine: Raw,
    at: Raw,
    error: Raw,
}

enum Top {
    Object(RawPayload),
    NotObject(&'static str),
}

impl<'de> Deserialize<'de> for Top {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct TopVisitor;
        impl<'de> Visitor<'de> for TopVisitor {
            type Value = Top;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Top, A::Error> {
                let mut p = RawPayload {
                    cpu: Raw::Missing,
                    mem: Raw::Missing,
                    disk: Raw::Missing,
                    uptime: Raw::Missing,
                    machine: Raw::Missing,
                    at: Raw::Missing,
                    error: Raw::Missing,
                };
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    match key.as_ref() {
                        "cpu" => p.cpu = map.next_value()?,
                        "mem" => p.mem = map.next_value()?,
                        "disk" => p.disk = map.next_value()?,
                        "uptime" => p.uptime = map.next_value()?,
                        "machine" => p.machine = map.next_value()?,
                        "at" => p.at = map.next_value()?,
                        "error" => p.error = map.next_value()?,
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(Top::Object(p))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Top, E> {
                Ok(Top::NotObject("a boolean"))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Top, E> {
                Ok(Top::NotObject("a number"))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Top, E> {
                Ok(Top::NotObject("a number"))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Top, E> {
                Ok(Top::NotObject("a number"))
            }
            fn visit_str<E>(self, _: &str) -> Result<Top, E> {
                Ok(Top::NotObject("a string"))
            }
            fn visit_unit<E>(self) -> Result<Top, E> {
                Ok(Top::NotObject("null"))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Top, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Top::NotObject("an array"))
            }
        }
        d.deserialize_any(TopVisitor)
    }
}

/// Parses a status body. `Err` is a poll failure (`invalid_json` / `invalid_payload`);
/// `Ok` has at least one of cpu/mem/disk, with an issue recorded for each unknown metric.
pub fn parse_status(body: &[u8]) -> Result<StatusSample, PayloadError> {
    let top: Top =
        serde_json::from_slice(body).map_err(|e| PayloadError::InvalidJson(e.to_string()))?;
    let raw = match top {
        Top::Object(raw) => raw,
        Top::NotObject(kind) => {
            return Err(PayloadError::InvalidPayload(format!(
                "payload is {kind}, not an object"
            )))
        }
    };
    from_raw(raw)
}

/// Parses a status payload already decoded into a JSON map (history files, SPEC §5).
pub fn parse_status_value(
    map: &serde_json::Map<String, serde_json::Value>,
) -> Result<StatusSample, PayloadError> {
    fn raw(v: Option<&serde_json::Value>) -> Raw {
        match v {
            None => Raw::Missing,
            Some(serde_json::Value::Number(n)) => n
                .as_f64()
                .map(Raw::Number)
                .unwrap_or(Raw::Other("a number out of range")),
            Some(serde_json::Value::String(s)) => Raw::Str(s.clone()),
            Some(serde_json::Value::Null) => Raw::Other("null"),
            Some(serde_json::Value::Bool(_)) => Raw::Other("a boolean"),
            Some(serde_json::Value::Array(_)) => Raw::Other("an array"),
            Some(serde_json::Value::Object(_)) => Raw::Other("an object"),
        }
    }
    from_raw(RawPayload {
        cpu: raw(map.get("cpu")),
        mem: raw(map.get("mem")),
        disk: raw(map.get("disk")),
        uptime: raw(map.get("uptime")),
        machine: Raw::Missing,
        at: Raw::Missing,
        error: Raw::Missing,
    })
}

/// One line of an offline history file (SPEC §5).
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryLine {
    /// Machine name.
    pub machine: String,
    /// When the poll was due.
    pub at: crate::events::Timestamp,
    /// The poll's outcome: a sample, or a failure with its reason (a payload with no
    /// usable metric is an `invalid_payload` failure, as it would be live).
    pub outcome: Result<StatusSample, (crate::events::FailureReason, String)>,
}

/// Parses one history line: the status payload plus `machine` and `at`, or `error`
/// (a reason code) instead of metrics. `Err` says why the line is malformed.
pub fn parse_history_line(line: &[u8]) -> Result<HistoryLine, String> {
    use crate::events::FailureReason;
    let top: Top = serde_json::from_slice(line).map_err(|e| format!("not JSON: {e}"))?;
    let mut raw = match top {
        Top::Object(raw) => raw,
        Top::NotObject(kind) => return Err(format!("the line is {kind}, not an object")),
    };
    let machine = match std::mem::replace(&mut raw.machine, Raw::Missing) {
        Raw::Str(m) if !m.trim().is_empty() => m,
        Raw::Missing => return Err("missing \"machine\"".to_owned()),
        _ => return Err("\"machine\" must be a non-empty string".to_owned()),
    };
    let at = match std::mem::replace(&mut raw.at, Raw::Missing) {
        Raw::Str(t) => chrono::DateTime::parse_from_rfc3339(&t)
            .map_err(|e| format!("\"at\" is not an RFC 3339 time ({t:?}: {e})"))?
            .with_timezone(&chrono::Utc),
        Raw::Missing => return Err("missing \"at\"".to_owned()),
        _ => return Err("\"at\" must be an RFC 3339 string".to_owned()),
    };
    let outcome = match std::mem::replace(&mut raw.error, Raw::Missing) {
        Raw::Missing => match from_raw(raw) {
            Ok(sample) => Ok(sample),
            Err(e) => Err((FailureReason::InvalidPayload, e.to_string())),
        },
        Raw::Str(code) => match FailureReason::parse(code.trim()) {
            Some(reason) => Err((reason, String::new())),
            None => return Err(format!("unknown error code {code:?}")),
        },
        _ => return Err("\"error\" must be a reason code string".to_owned()),
    };
    Ok(HistoryLine {
        machine,
        at,
        outcome,
    })
}

fn from_raw(raw: RawPayload) -> Result<StatusSample, PayloadError> {
    let mut issues = Vec::new();
    let mut metric = |field: &str, v: Raw| match percent(&v) {
        Ok(p) => Some(p),
        Err(reason) => {
            issues.push(MetricIssue {
                field: field.to_owned(),
                reason,
            });
            None
        }
    };
    let cpu = metric("cpu", raw.cpu);
    let mem = metric("mem", raw.mem);
    let disk = metric("disk", raw.disk);
    if cpu.is_none() && mem.is_none() && disk.is_none() {
        let why: Vec<String> = issues
            .iter()
            .map(|i| format!("{}: {}", i.field, i.reason))
            .collect();
        return Err(PayloadError::InvalidPayload(why.join("; ")));
    }
    let uptime_s = match uptime(&raw.uptime) {
        Ok(u) => Some(u),
        Err(reason) => {
            issues.push(MetricIssue {
                field: "uptime".to_owned(),
                reason,
            });
            None
        }
    };
    Ok(StatusSample {
        cpu,
        mem,
        disk,
        uptime_s,
        issues,
    })
}

/// A plain decimal number: optional sign, digits, optional fraction. No exponents,
/// no `inf`/`nan`, no hex: what a person would write in a status page.
fn decimal(s: &str) -> Option<f64> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    let mut parts = digits.splitn(2, '.');
    let int = parts.next().unwrap_or("");
    let frac = parts.next();
    let all_digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    let ok = all_digits(int)
        && frac.is_none_or(all_digits)
        && (!int.is_empty() || frac.is_some_and(|f| !f.is_empty()));
    if !ok {
        return None;
    }
    s.parse::<f64>().ok()
}

fn percent(v: &Raw) -> Result<f64, String> {
    let value = match v {
        Raw::Missing => return Err("missing".to_owned()),
        Raw::Other(kind) => return Err(format!("{kind} is not a percentage")),
        Raw::Number(n) => *n,
        Raw::Str(s) => {
            let t = s.trim();
            let t = t.strip_suffix('%').map(str::trim_end).unwrap_or(t);
            decimal(t).ok_or_else(|| format!("{s:?} is not a percentage"))?
        }
    };
    if !value.is_finite() {
        return Err(format!("{value} is not finite"));
    }
    if value < 0.0 {
        return Err(format!("value {value} is below 0"));
    }
    if value > 100.0 {
        return Err(format!("value {value} is above 100"));
    }
    Ok(value)
}

fn uptime(v: &Raw) -> Result<u64, String> {
    match v {
        Raw::Missing => Err("missing".to_owned()),
        Raw::Other(kind) => Err(format!("{kind} is not an uptime")),
        Raw::Number(n) => seconds(*n).ok_or_else(|| format!("{n} is not a number of seconds")),
        Raw::Str(s) => parse_uptime(s).ok_or_else(|| format!("{s:?} is not an uptime")),
    }
}

fn seconds(n: f64) -> Option<u64> {
    (n.is_finite() && n >= 0.0 && n < 1e15).then(|| n.floor() as u64)
}

/// Parses an uptime string: seconds (`"3600"`, `"3600.5"`), `"1d 2h 37m 6s"` (any
/// non-empty subset of d/h/m/s in that order, spaces optional), `"HH:MM:SS"`, or
/// `"N day(s), HH:MM:SS"`.
pub fn parse_uptime(s: &str) -> Option<u64> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    if let Some(n) = decimal(s) {
        return seconds(n);
    }
    if let Some((days, clock)) = s.split_once(',') {
        let days = days.trim();
        let n = days
            .strip_suffix("days")
            .or_else(|| days.strip_suffix("day"))?
            .trim_end();
        if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let d: u64 = n.parse().ok()?;
        return d.checked_mul(86_400)?.checked_add(hms(clock.trim())?);
    }
    if s.contains(':') {
        return hms(s);
    }
    dhms(s)
}

fn hms(s: &str) -> Option<u64> {
    let mut it = s.split(':');
    let (h, m, sec) = (it.next()?, it.next()?, it.next()?);
    if it.next().is_some() {
        return None;
    }
    let num = |p: &str| -> Option<u64> {
        (!p.is_empty() && p.len() <= 12 && p.bytes().all(|b| b.is_ascii_digit()))
            .then(|| p.parse().ok())
            .flatten()
    };
    let (h, m, sec) = (num(h)?, num(m)?, num(sec)?);
    if m >= 60 || sec >= 60 {
        return None;
    }
    h.checked_mul(3600)?.checked_add(m * 60 + sec)
}

fn dhms(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut total: u64 = 0;
    let mut next_rank = 0;
    let mut parts = 0;
    while i < b.len() {
        while i < b.len() && b[i] == b' ' {
            i += 1;
        }
        if i == b.len() {
            break;
        }
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if start == i || i - start > 12 {
            return None;
        }
        let n: u64 = s[start..i].parse().ok()?;
        while i < b.len() && b[i] == b' ' {
            i += 1;
        }
        let (rank, unit) = match b.get(i)? {
            b'd' => (0, 86_400),
            b'h' => (1, 3_600),
            b'm' => (2, 60),
            b's' => (3, 1),
            _ => return None,
        };
        if rank < next_rank {
            return None;
        }
        next_rank = rank + 1;
        i += 1;
        parts += 1;
        total = total.checked_add(n.checked_mul(unit)?)?;
    }
    (parts > 0).then_some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(body: &str) -> StatusSample {
        parse_status(body.as_bytes()).unwrap()
    }

    #[test]
    fn the_example_payload() {
        let s = ok(r#"{"cpu": 60, "mem": "30%", "disk": "43%", "uptime": "1d 2h 37m 6s"}"#);
        assert_eq!((s.cpu, s.mem, s.disk), (Some(60.0), Some(30.0), Some(43.0)));
        assert_eq!(s.uptime_s, Some(86_400 + 2 * 3600 + 37 * 60 + 6));
        assert!(s.issues.is_empty());
    }

    #[test]
    fn every_percentage_dialect() {
        for (raw, want) in [
            ("60", 60.0),
            ("60.5", 60.5),
            ("\"30%\"", 30.0),
            ("\" 30.5 % \"", 30.5),
            ("\"30\"", 30.0),
            ("0", 0.0),
            ("100", 100.0),
            ("\"100 %\"", 100.0),
            ("\".5\"", 0.5),
        ] {
            let s = ok(&format!(r#"{{"cpu": {raw}}}"#));
            assert_eq!(s.cpu, Some(want), "{raw}");
        }
    }

    #[test]
    fn invalid_percentages_are_unknown_with_a_reason() {
        for raw in [
            "-1", "100.01", "\"abc\"", "null", "true", "[1]", "{}", "\"NaN\"", "\"inf\"",
            "\"1e2\"", "\"%\"", "\"\"", "\"30%%\"",
        ] {
            let s = ok(&format!(r#"{{"cpu": {raw}, "mem": 10}}"#));
            assert_eq!(s.cpu, None, "{raw}");
            assert_eq!(s.mem, Some(10.0));
            assert_eq!(s.issues[0].field, "cpu", "{raw}");
        }
    }

    #[test]
    fn every_uptime_dialect() {
        for (raw, want) in [
            ("3600", 3600),
            ("\"3600\"", 3600),
            ("12.9", 12),
            ("\"1d 2h 37m 6s\"", 95_826),
            ("\"1d2h37m6s\"", 95_826),
            ("\"2h\"", 7_200),
            ("\"5m 3s\"", 303),
            ("\"1d 6s\"", 86_406),
            ("\"01:02:03\"", 3_723),
            ("\"100:00:00\"", 360_000),
            ("\"3 days, 04:05:06\"", 3 * 86_400 + 14_706),
            ("\"1 day, 00:00:01\"", 86_401),
        ] {
            let s = ok(&format!(r#"{{"cpu": 1, "uptime": {raw}}}"#));
            assert_eq!(s.uptime_s, Some(want), "{raw}");
        }
    }

    #[test]
    fn an_unparseable_uptime_does_not_void_the_sample() {
        for raw in [
            "\"soon\"",
            "\"2h 1d\"",
            "\"1:2\"",
            "\"01:61:00\"",
            "-5",
            "\"\"",
            "null",
            "\"d\"",
        ] {
            let s = ok(&format!(r#"{{"cpu": 1, "uptime": {raw}}}"#));
            assert_eq!(s.cpu, Some(1.0));
            assert_eq!(s.uptime_s, None, "{raw}");
            assert_eq!(
                s.issues.last().map(|i| i.field.as_str()),
                Some("uptime"),
                "{raw}"
            );
        }
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let s = ok(
            r#"{"host": {"name": "x"}, "cpu": 5, "extra": [1,2,3], "mem": 6, "disk": 7, "uptime": 1}"#,
        );
        assert_eq!(
            (s.cpu, s.mem, s.disk, s.uptime_s),
            (Some(5.0), Some(6.0), Some(7.0), Some(1))
        );
    }

    #[test]
    fn no_usable_metric_is_an_invalid_payload() {
        assert!(matches!(
            parse_status(br#"{"uptime": 5}"#),
            Err(PayloadError::InvalidPayload(_))
        ));
        assert!(matches!(
            parse_status(br#"{"cpu": "high", "mem": -3}"#),
            Err(PayloadError::InvalidPayload(_))
        ));
        assert!(matches!(
            parse_status(b"[1,2]"),
            Err(PayloadError::InvalidPayload(_))
        ));
        assert!(matches!(
            parse_status(b"42"),
            Err(PayloadError::InvalidPayload(_))
        ));
    }

    #[test]
    fn history_lines_of_spec_section_5() {
        let ok = parse_history_line(br#"{"machine":"web-1","at":"2026-11-23T10:00:00Z","cpu":60,"mem":"30%","disk":"43%","uptime":"1d 2h"}"#).unwrap();
        assert_eq!(ok.machine, "web-1");
        assert_eq!(ok.at.to_rfc3339(), "2026-11-23T10:00:00+00:00");
        assert_eq!(ok.outcome.unwrap().mem, Some(30.0));
        let failed = parse_history_line(
            br#"{"machine":"web-1","at":"2026-11-23T10:15:00Z","error":"timeout"}"#,
        )
        .unwrap();
        assert_eq!(
            failed.outcome.unwrap_err().0,
            crate::events::FailureReason::Timeout
        );
        let empty =
            parse_history_line(br#"{"machine":"web-1","at":"2026-11-23T10:30:00Z"}"#).unwrap();
        assert_eq!(
            empty.outcome.unwrap_err().0,
            crate::events::FailureReason::InvalidPayload
        );
        for bad in [
            &br#"{"at":"2026-11-23T10:00:00Z","cpu":1}"#[..],
            br#"{"machine":"m","cpu":1}"#,
            br#"{"machine":"m","at":"yesterday","cpu":1}"#,
            br#"{"machine":"m","at":"2026-11-23T10:00:00Z","error":"gremlins"}"#,
            br#"{"machine":"","at":"2026-11-23T10:00:00Z","cpu":1}"#,
            b"[1]",
            b"{",
        ] {
            assert!(
                parse_history_line(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn non_json_is_invalid_json() {
        for body in ["not json{", "", "{\"cpu\": 5", "<html>"] {
            assert!(
                matches!(
                    parse_status(body.as_bytes()),
                    Err(PayloadError::InvalidJson(_))
                ),
                "{body}"
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_any_bytes(body in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = parse_status(&body);
        }

        #[test]
        fn never_panics_on_any_uptime(s in ".{0,40}") {
            let _ = parse_uptime(&s);
        }

        #[test]
        fn valid_numbers_round_trip(v in 0.0f64..=100.0) {
            let s = ok(&format!(r#"{{"cpu": "{v}%"}}"#));
            proptest::prop_assert_eq!(s.cpu, Some(v));
        }
    }
}
