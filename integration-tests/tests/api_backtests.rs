//! Backtests through the API, end to end: the live pipeline (fake fleet, ingest,
//! processor) records incidents; `POST /api/backtests` records a request, the
//! running processor claims and replays it, and `GET /api/backtests/{id}` serves
//! progress and the result. Same rules: an empty diff. A higher CPU threshold: the
//! recorded CPU incidents come back as removed, and the live incidents are left
//! untouched. Then the dashboard's backtest page is checked in headless Chromium.

use integration_tests::fleet::{Behaviour, Scenario};
use integration_tests::live::{record_live_run, LiveRun};
use integration_tests::services::eventually;
use integration_tests::spawn::{spawn_api_with, Api, Session};
use query_api::auth::Role;
use reqwest::Method;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The live rules of this test, for the processor and the API alike.
const RULES: [(&str, &str); 2] = [("RULE_MEM_FOR", "2s"), ("RULE_UNREACHABLE_FOR", "1s")];

fn rules_body(cpu_threshold: f64) -> Value {
    json!({
        "cpu": {"threshold": cpu_threshold, "for": "0", "hysteresis": 0},
        "mem": {"threshold": 90, "for": "2s", "hysteresis": 0},
        "disk": {"threshold": 95, "for": "2h", "hysteresis": 0},
        "unreachable": {"threshold": 0, "for": "1s", "hysteresis": 0},
        "staleness_intervals": 3
    })
}

async fn run_backtest(api: &Api, s: &Session, body: Value) -> anyhow::Result<Value> {
    let (status, created) = api
        .send_as(s, Method::POST, "/api/backtests", body, true)
        .await?;
    anyhow::ensure!(status == 202, "POST /api/backtests: {status} {created}");
    assert_eq!(created["status"], "queued");
    let id = created["id"].as_str().unwrap_or_default().to_owned();
    let saw_progress = std::sync::atomic::AtomicBool::new(false);
    let done = eventually(Duration::from_secs(90), "the backtest finished", || async {
        let (status, bt) = api.get_as(s, &format!("/api/backtests/{id}")).await?;
        anyhow::ensure!(status == 200, "GET: {status} {bt}");
        if bt["status"] == "running" || bt["status"] == "done" {
            saw_progress.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        match bt["status"].as_str() {
            Some("done") => Ok(Some(bt)),
            Some("failed") => Err(anyhow::anyhow!("backtest failed: {}", bt["error"])),
            _ => Ok(None),
        }
    })
    .await?;
    assert!(saw_progress.load(std::sync::atomic::Ordering::Relaxed));
    assert_eq!(done["progress"], 1.0);
    Ok(done)
}

fn rule_counts<'a>(bt: &'a Value, rule: &str) -> &'a Value {
    bt["result"]["rules"]
        .as_array()
        .and_then(|rules| rules.iter().find(|r| r["rule"] == rule))
        .unwrap_or(&Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backtests_run_through_the_api_and_the_page_shows_them() -> anyhow::Result<()> {
    let LiveRun {
        fleet,
        db,
        processor,
        started,
        ..
    } = record_live_run(
        Scenario::new()
            .machine(
                "hot",
                Behaviour::Steady {
                    cpu: 97.0,
                    mem: 40.0,
                    disk: 50.0,
                },
            )
            .machine(
                "full",
                Behaviour::Steady {
                    cpu: 10.0,
                    mem: 95.0,
                    disk: 50.0,
                },
            )
            .machine("down", Behaviour::HttpError { status: 503 }),
        &RULES,
        3,
    )
    .await?;
    let live_before: Vec<(String, Option<chrono::NaiveDateTime>)> =
        sqlx::query_as("SELECT id, resolved_at FROM incidents ORDER BY id")
            .fetch_all(&db.pool)
            .await?;

    let api = spawn_api_with(&db.url, &RULES).await?;
    let analyst = api.user_session("analyst", Role::Viewer).await?;
    let from = (started - chrono::Duration::minutes(1)).to_rfc3339();
    let to = (chrono::Utc::now() + chrono::Duration::minutes(1)).to_rfc3339();

    // Bad requests say why.
    for (body, why) in [
        (
            json!({"from": to, "to": from, "rules": rules_body(85.0)}),
            "from must be before to",
        ),
        (
            json!({"from": from, "to": to, "rules": rules_body(150.0)}),
            "threshold",
        ),
    ] {
        let (status, answer) = api
            .send_as(&analyst, Method::POST, "/api/backtests", body, true)
            .await?;
        assert_eq!(status, 400, "{answer}");
        assert!(
            answer.to_string().contains(why),
            "{answer} should mention {why:?}"
        );
    }
    let (status, _) = api
        .get_as(&analyst, "/api/backtests/no-such-backtest")
        .await?;
    assert_eq!(status, 404);

    // The live rules again: nothing differs.
    let same = run_backtest(
        &api,
        &analyst,
        json!({"from": from, "to": to, "rules": rules_body(85.0)}),
    )
    .await?;
    let result = &same["result"];
    assert!(result["events_read"].as_u64().unwrap_or(0) > 10, "{result}");
    assert_eq!(
        result["differences"].as_array().map(Vec::len),
        Some(0),
        "live and replay differ: {:#}",
        result["differences"]
    );
    for rule in ["cpu", "mem", "unreachable"] {
        let c = rule_counts(&same, rule);
        assert!(c["actual"].as_u64().unwrap_or(0) >= 1, "{rule}: {c}");
        assert_eq!(c["would_open"], c["actual"], "{rule}: {c}");
        assert!(
            c["actual_quality"]["incidents_per_day"]
                .as_f64()
                .unwrap_or(0.0)
                > 0.0,
            "{rule}: {c}"
        );
    }

    // What if CPU had to pass 99.5%? Only the "hot" machine is asked about.
    let what_if = run_backtest(
        &api,
        &analyst,
        json!({"from": from, "to": to, "machines": ["hot"], "rules": rules_body(99.5)}),
    )
    .await?;
    let cpu = rule_counts(&what_if, "cpu");
    assert_eq!(cpu["would_open"], 0, "{cpu}");
    assert!(cpu["removed"].as_u64().unwrap_or(0) >= 1, "{cpu}");
    assert_eq!(cpu["removed"], cpu["actual"], "{cpu}");
    assert!(
        what_if["result"]["recorded"]
            .as_array()
            .is_some_and(|l| l.iter().all(|i| i["machine"] == "hot")),
        "only the machine asked about: {}",
        what_if["result"]["recorded"]
    );
    assert_eq!(what_if["baseline"]["cpu"]["threshold"], 85.0);
    assert_eq!(what_if["rules"]["cpu"]["threshold"], 99.5);
    let (_, list) = api.get_as(&analyst, "/api/backtests").await?;
    assert_eq!(
        list["backtests"].as_array().map(Vec::len),
        Some(2),
        "{list}"
    );

    // Backtests never change live incidents.
    let live_after: Vec<(String, Option<chrono::NaiveDateTime>)> =
        sqlx::query_as("SELECT id, resolved_at FROM incidents ORDER BY id")
            .fetch_all(&db.pool)
            .await?;
    assert_eq!(live_before, live_after);

    // The page, in headless Chromium.
    let browser_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("browser");
    anyhow::ensure!(
        browser_dir.join("node_modules/playwright-core").exists()
            && std::path::Path::new("/usr/bin/chromium").exists(),
        "Chromium and playwright-core are required (.ci/run installs them)"
    );
    query_api::auth::create_user(&api.db, "oncall", "oncall-long-password", Role::Viewer).await?;
    let mut child = Command::new("node")
        .arg("backtest.mjs")
        .current_dir(&browser_dir)
        .env("BASE_URL", &api.base_url)
        .env("USERNAME", "oncall")
        .env("PASSWORD", "oncall-long-password")
        .env("HOT_MACHINE", "hot")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let status = tokio::task::spawn_blocking(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            println!("browser: {line}");
        }
        child.wait()
    })
    .await??;
    assert!(
        status.success(),
        "the backtest page checks failed (see above)"
    );

    api.service.stop().await?;
    processor.stop().await?;
    fleet.shutdown().await;
    Ok(())
}
