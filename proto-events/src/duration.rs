//! The duration syntax of SPEC §3: `0`, `45s`, `30m`, `2h`, `1h30m`, `1d`, `250ms`.
//!
//! Parsing is delegated to `humantime`-like rules written out here because the
//! grammar is tiny and must reject things humantime accepts (`1 week`, `3 fortnights`).

use std::time::Duration;

/// Why a duration string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {input:?}: {reason} (examples: 0, 45s, 30m, 2h, 1h30m)")]
pub struct DurationError {
    input: String,
    reason: &'static str,
}

/// Parses `0`, or one or more `<integer><unit>` parts with units `d`, `h`, `m`, `s`, `ms`
/// in decreasing order, optionally separated by spaces.
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    let err = |reason| DurationError {
        input: input.to_owned(),
        reason,
    };
    let s = input.trim();
    if s.is_empty() {
        return Err(err("empty"));
    }
    if s.bytes().all(|b| b == b'0') {
        return Ok(Duration::ZERO);
    }
    let bytes = s.as_bytes();
    let mut i = 0;
    let mut total_ms: u64 = 0;
    let mut last_rank = usize::MAX;
    while i < bytes.len() {
        while i < bytes.len() && bytes[i] == b' ' {
            i += 1;
        }
        if i == bytes.len() {
            break;
        }
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if start == i {
            return Err(err("expected a number"));
        }
        let n: u64 = s[start..i].parse().map_err(|_| err("number too large"))?;
        let unit_start = i;
        while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
            i += 1;
        }
        let (rank, ms_per_unit) = match &s[unit_start..i] {
            "d" => (0, 86_400_000),
            "h" => (1, 3_600_000),
            "m" => (2, 60_000),
            "s" => (3, 1_000),
            "ms" => (4, 1),
            "" => return Err(err("missing unit")),
            _ => return Err(err("unknown unit")),
        };
        if last_rank != usize::MAX && rank <= last_rank {
            return Err(err("units must be in decreasing order, each at most once"));
        }
        last_rank = rank;
        total_ms = n
            .checked_mul(ms_per_unit)
            .and_then(|v| total_ms.checked_add(v))
            .ok_or_else(|| err("duration too large"))?;
    }
    Ok(Duration::from_millis(total_ms))
}

/// Formats a duration in the same syntax (`1h30m`, `0`), the inverse of [`parse_duration`].
pub fn format_duration(d: Duration) -> String {
    let mut ms = d.as_millis() as u64;
    if ms == 0 {
        return "0".to_owned();
    }
    let mut out = String::new();
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
        ("ms", 1),
    ] {
        if ms >= size {
            out.push_str(&format!("{}{}", ms / size, unit));
            ms %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_spec_examples() {
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("45s"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "m", "30", "30x", "-5m", "30m1h", "1h1h", "1.5h", "abc"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn format_round_trips() {
        for s in ["0", "45s", "30m", "2h", "1h30m", "1d2h3m4s5ms"] {
            let d = parse_duration(s).unwrap();
            assert_eq!(format_duration(d), s);
        }
    }
}
