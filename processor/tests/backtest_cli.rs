//! The backtest CLI exactly as an operator runs it:
//! `processor backtest --history FILE.jsonl [--interval 15m] [--rule NAME.FIELD=VALUE ...]`,
//! over the SPEC §4 examples that a history file can express (machine removal and
//! rule changes are not part of the SPEC §5 file format).

use std::process::Command;

struct Output {
    incidents: Vec<serde_json::Value>,
    stderr: String,
    ok: bool,
}

fn backtest(history: &str, args: &[&str]) -> Output {
    let dir = std::env::temp_dir().join(format!("backtest-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("history.jsonl");
    std::fs::write(&file, history).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_processor"))
        .arg("backtest")
        .arg("--history")
        .arg(&file)
        .args(args)
        .env_remove("RULE_MEM_FOR")
        .env_remove("POLL_INTERVAL")
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    Output {
        incidents: stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect(),
        stderr: String::from_utf8(out.stderr).unwrap(),
        ok: out.status.success(),
    }
}

/// `(minute, cpu, mem, disk)` samples of web-1 starting 2026-11-23T00:00Z; `None` cpu = failed poll.
fn history(rows: &[(u32, Option<f64>, f64, f64)]) -> String {
    rows.iter()
        .map(|(m, cpu, mem, disk)| {
            let at = format!("2026-11-23T{:02}:{:02}:00Z", m / 60, m % 60);
            match cpu {
                Some(cpu) => format!(r#"{{"machine":"web-1","at":"{at}","cpu":{cpu},"mem":"{mem}%","disk":"{disk}%","uptime":"1d 2h"}}"#),
                None => format!(r#"{{"machine":"web-1","at":"{at}","error":"timeout"}}"#),
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn t(m: u32) -> String {
    format!("2026-11-23T{:02}:{:02}:00Z", m / 60, m % 60)
}

#[test]
fn mem_opens_after_30_minutes_as_in_the_spec_example() {
    let o = backtest(
        &history(&[
            (0, Some(10.0), 91.0, 10.0),
            (15, Some(10.0), 91.0, 10.0),
            (30, Some(10.0), 91.0, 10.0),
        ]),
        &[],
    );
    assert!(o.ok, "{}", o.stderr);
    assert_eq!(
        o.incidents,
        vec![
            serde_json::json!({"machine":"web-1","rule":"mem","started_at":t(0),"opened_at":t(30),"resolved_at":null,"peak":91.0})
        ]
    );
}

#[test]
fn cpu_opens_on_any_sample_above_85_strictly_and_resolves_when_it_clears() {
    let o = backtest(
        &history(&[
            (0, Some(85.0), 10.0, 10.0),
            (15, Some(90.0), 10.0, 10.0),
            (30, Some(97.0), 10.0, 10.0),
            (45, Some(40.0), 10.0, 10.0),
        ]),
        &[],
    );
    assert_eq!(
        o.incidents,
        vec![
            serde_json::json!({"machine":"web-1","rule":"cpu","started_at":t(15),"opened_at":t(15),"resolved_at":t(45),"peak":97.0})
        ]
    );
}

#[test]
fn disk_needs_two_hours() {
    let rows: Vec<_> = (0..=8).map(|k| (k * 15, Some(10.0), 10.0, 96.0)).collect();
    let o = backtest(&history(&rows[..8]), &[]);
    assert!(o.incidents.is_empty(), "{:?}", o.incidents);
    let o = backtest(&history(&rows), &[]);
    assert_eq!(o.incidents[0]["opened_at"], t(120));
    assert_eq!(o.incidents[0]["rule"], "disk");
}

#[test]
fn unreachable_for_30_minutes_then_back() {
    let o = backtest(
        &history(&[
            (0, None, 0.0, 0.0),
            (15, None, 0.0, 0.0),
            (30, None, 0.0, 0.0),
            (45, Some(10.0), 10.0, 10.0),
        ]),
        &[],
    );
    assert_eq!(
        o.incidents,
        vec![
            serde_json::json!({"machine":"web-1","rule":"unreachable","started_at":t(0),"opened_at":t(30),"resolved_at":t(45),"peak":null})
        ]
    );
}

#[test]
fn neutral_events_do_not_resolve_and_a_new_run_must_last_for_again() {
    let rows = [
        (0, Some(10.0), 95.0, 10.0),
        (15, Some(10.0), 95.0, 10.0),
        (30, Some(10.0), 95.0, 10.0), // opens
        (45, None, 0.0, 0.0),         // neutral for mem
        (60, Some(10.0), 50.0, 10.0), // clears
        (75, Some(10.0), 95.0, 10.0),
        (90, Some(10.0), 95.0, 10.0), // not yet 30 minutes
    ];
    let o = backtest(&history(&rows), &[]);
    let mem: Vec<_> = o.incidents.iter().filter(|i| i["rule"] == "mem").collect();
    assert_eq!(mem.len(), 1);
    assert_eq!(
        (&mem[0]["opened_at"], &mem[0]["resolved_at"]),
        (&serde_json::json!(t(30)), &serde_json::json!(t(60)))
    );
}

#[test]
fn a_gap_beyond_the_staleness_bound_starts_a_new_run_and_interval_sets_the_bound() {
    let rows = [(0, Some(10.0), 95.0, 10.0), (40, Some(10.0), 95.0, 10.0)];
    // 40 minutes between breaches: within 3 × 15m, one run lasting 40m ≥ 30m.
    assert_eq!(backtest(&history(&rows), &[]).incidents.len(), 1);
    // With a 5-minute interval the bound is 15m: 00:40 starts a new run, nothing opens.
    assert!(backtest(&history(&rows), &["--interval", "5m"])
        .incidents
        .is_empty());
}

#[test]
fn rule_overrides_change_what_would_have_fired() {
    let rows = [
        (0, Some(10.0), 82.0, 10.0),
        (15, Some(10.0), 82.0, 10.0),
        (30, Some(83.0), 82.0, 10.0),
        (45, Some(81.0), 82.0, 10.0),
    ];
    assert!(backtest(&history(&rows), &[]).incidents.is_empty());
    let o = backtest(
        &history(&rows),
        &[
            "--rule",
            "mem.threshold=80",
            "--rule",
            "mem.for=10m",
            "--rule",
            "cpu.threshold=82",
            "--rule",
            "cpu.hysteresis=5",
        ],
    );
    let rules: Vec<_> = o
        .incidents
        .iter()
        .map(|i| {
            (
                i["rule"].as_str().unwrap().to_owned(),
                i["opened_at"].clone(),
                i["resolved_at"].clone(),
            )
        })
        .collect();
    assert_eq!(
        rules,
        vec![
            (
                "mem".to_owned(),
                serde_json::json!(t(15)),
                serde_json::Value::Null
            ),
            // 81 is inside the hysteresis band (77..82]: the cpu incident stays open.
            (
                "cpu".to_owned(),
                serde_json::json!(t(30)),
                serde_json::Value::Null
            ),
        ]
    );
    let o = backtest(
        &history(&[
            (0, None, 0.0, 0.0),
            (15, None, 0.0, 0.0),
            (30, None, 0.0, 0.0),
        ]),
        &["--rule", "unreachable.for=45m"],
    );
    assert!(o.incidents.is_empty());
}

#[test]
fn malformed_lines_are_reported_with_their_numbers_and_skipped() {
    let good = history(&[(0, Some(99.0), 10.0, 10.0)]);
    let input = format!("{good}\nnot json\n{{\"machine\":\"web-1\",\"cpu\":1}}\n\n{{\"machine\":\"web-1\",\"at\":\"2026-11-23T00:15:00Z\",\"error\":\"gremlins\"}}\n");
    let o = backtest(&input, &[]);
    assert!(o.ok);
    assert_eq!(o.incidents.len(), 1);
    for n in [2, 3, 5] {
        assert!(
            o.stderr.contains(&format!("line {n}:")),
            "line {n} not reported: {}",
            o.stderr
        );
    }
    assert!(
        o.stderr.contains("3 malformed lines skipped"),
        "{}",
        o.stderr
    );
}

#[test]
fn out_of_order_lines_are_discarded_and_counted() {
    let input = history(&[(30, Some(10.0), 10.0, 10.0), (15, Some(99.0), 10.0, 10.0)]);
    let o = backtest(&input, &[]);
    assert!(o.incidents.is_empty());
    assert!(o.stderr.contains("1 discarded"), "{}", o.stderr);
}

#[test]
fn a_bad_rule_or_interval_stops_with_a_clear_message() {
    for (args, needle) in [
        (vec!["--rule", "gpu.threshold=5"], "gpu"),
        (vec!["--rule", "mem.threshold=abc"], "abc"),
        (vec!["--rule", "mem.for=30 minutes"], "mem.for"),
        (vec!["--rule", "unreachable.threshold=5"], "unreachable"),
        (vec!["--interval", "soon"], "--interval"),
    ] {
        let o = backtest("", &args);
        assert!(!o.ok, "{args:?} was accepted");
        assert!(o.stderr.contains(needle), "{args:?}: {}", o.stderr);
    }
}
