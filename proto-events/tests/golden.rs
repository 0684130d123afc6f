//! Golden-file tests that pin the wire format: one file per event type in `golden/`.
//! A change to the encoding fails here; regenerate deliberately with
//! `UPDATE_GOLDEN=1 cargo test -p proto-events --test golden` and bump the schema
//! version if old readers would mis-read the new form.

use chrono::{TimeZone, Utc};
use proto_events::*;
use std::collections::BTreeMap;
use std::path::PathBuf;
use uuid::Uuid;

fn t(h: u32, m: u32) -> Timestamp {
    Utc.with_ymd_and_hms(2026, 11, 23, h, m, 0)
        .single()
        .unwrap()
}

fn id(n: u128) -> Uuid {
    Uuid::from_u128(n)
}

fn timing() -> PollTiming {
    PollTiming {
        interval_ms: 900_000,
        started_at: t(10, 0) + chrono::Duration::milliseconds(12),
        latency_ms: 34,
    }
}

fn samples() -> Vec<(&'static str, Envelope)> {
    let env = |n, machine: &str, event| Envelope {
        event_id: id(n),
        machine: machine.to_owned(),
        at: t(10, 0),
        event,
    };
    let incident = id(0xABC);
    vec![
        (
            "metric_sampled",
            env(
                1,
                "web-1",
                Event::MetricSampled(MetricSampled {
                    timing: timing(),
                    cpu: Some(60.0),
                    mem: Some(30.5),
                    disk: None,
                    uptime_s: Some(95_826),
                    issues: vec![MetricIssue {
                        field: "disk".into(),
                        reason: "value 101 is above 100".into(),
                    }],
                    rebooted: false,
                }),
            ),
        ),
        (
            "poll_failed",
            env(
                2,
                "web-1",
                Event::PollFailed(PollFailed {
                    timing: timing(),
                    reason: FailureReason::HttpStatus,
                    detail: "HTTP 500".into(),
                }),
            ),
        ),
        (
            "machine_registered",
            env(
                3,
                "web-1",
                Event::MachineRegistered(MachineSpec {
                    url: "http://10.0.0.1:8080/status".into(),
                    enabled: true,
                    interval_ms: Some(60_000),
                    labels: BTreeMap::from([("team".to_owned(), "web".to_owned())]),
                }),
            ),
        ),
        (
            "machine_changed",
            env(
                4,
                "web-1",
                Event::MachineChanged(MachineSpec {
                    url: "https://10.0.0.1/status".into(),
                    enabled: false,
                    interval_ms: None,
                    labels: BTreeMap::new(),
                }),
            ),
        ),
        (
            "machine_removed",
            env(5, "web-1", Event::MachineRemoved(MachineRemoved {})),
        ),
        (
            "rules_changed",
            env(
                6,
                "",
                Event::RulesChanged(RulesChanged {
                    rules: RuleSet::default(),
                    changed_by: "alice".into(),
                }),
            ),
        ),
        (
            "incident_opened",
            env(
                7,
                "web-1",
                Event::IncidentOpened(IncidentOpened {
                    incident_id: incident,
                    rule: RuleName::Mem,
                    threshold: 90.0,
                    for_ms: 1_800_000,
                    started_at: t(9, 30),
                    opened_at: t(10, 0),
                    peak: Some(93.5),
                    last_value: Some(91.0),
                }),
            ),
        ),
        (
            "incident_updated",
            env(
                8,
                "web-1",
                Event::IncidentUpdated(IncidentUpdated {
                    incident_id: incident,
                    rule: RuleName::Mem,
                    peak: Some(95.0),
                    last_value: Some(95.0),
                    last_breach_at: t(10, 15),
                }),
            ),
        ),
        (
            "incident_resolved",
            env(
                9,
                "web-1",
                Event::IncidentResolved(IncidentResolved {
                    incident_id: incident,
                    rule: RuleName::Unreachable,
                    resolved_at: t(11, 0),
                    reason: ResolutionReason::MachineRemoved,
                }),
            ),
        ),
    ]
}

fn golden_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format!("{name}.json"))
}

#[test]
fn every_event_type_encodes_exactly_as_its_golden_file() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    for (name, envelope) in samples() {
        let encoded = String::from_utf8(envelope.encode()).unwrap();
        let path = golden_path(name);
        if update {
            std::fs::write(&path, format!("{encoded}\n")).unwrap();
        }
        let golden =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(encoded, golden.trim_end(), "wire format of {name} changed");
    }
}

#[test]
fn every_golden_file_decodes_to_the_same_event() {
    for (name, envelope) in samples() {
        let golden = std::fs::read(golden_path(name)).unwrap();
        let decoded = Envelope::decode(&golden).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(decoded, envelope, "{name}");
    }
}

#[test]
fn an_unknown_version_is_reported_not_misread() {
    let golden = std::fs::read_to_string(golden_path("metric_sampled")).unwrap();
    let v2 = golden.replace("\"version\":1", "\"version\":2");
    match Envelope::decode(v2.as_bytes()) {
        Err(DecodeError::UnknownVersion {
            event_type,
            version,
        }) => {
            assert_eq!((event_type.as_str(), version), ("MetricSampled", 2));
        }
        other => panic!("expected UnknownVersion, got {other:?}"),
    }
}

#[test]
fn an_unknown_type_and_garbage_are_reported() {
    let golden = std::fs::read_to_string(golden_path("poll_failed")).unwrap();
    let renamed = golden.replace("\"PollFailed\"", "\"PollExploded\"");
    assert!(
        matches!(Envelope::decode(renamed.as_bytes()), Err(DecodeError::UnknownType(t)) if t == "PollExploded")
    );
    assert!(matches!(
        Envelope::decode(b"not json"),
        Err(DecodeError::Malformed(_))
    ));
    let bad_data = golden.replace("\"reason\":\"http_status\"", "\"reason\":\"gremlins\"");
    assert!(matches!(
        Envelope::decode(bad_data.as_bytes()),
        Err(DecodeError::MalformedData { .. })
    ));
}
