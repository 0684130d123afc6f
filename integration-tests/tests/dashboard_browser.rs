//! The real dashboard in headless Chromium (Debian's `chromium`, driven by
//! playwright-core from `integration-tests/browser/`): log in, see a new incident
//! appear without a reload (its machine name, an XSS payload, shown as text), add a
//! machine, log out. `.ci/run` installs Chromium and the node package.

use integration_tests::services::fresh_database;
use integration_tests::spawn::spawn_api;
use query_api::auth::Role;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_in_see_an_incident_appear_add_a_machine_log_out() -> anyhow::Result<()> {
    let browser_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("browser");
    anyhow::ensure!(
        browser_dir.join("node_modules/playwright-core").exists(),
        "playwright-core is not installed: run `npm ci` in {} (.ci/run does)",
        browser_dir.display()
    );
    anyhow::ensure!(
        std::path::Path::new("/usr/bin/chromium").exists(),
        "Chromium is required: apt-get install -y chromium (.ci/run does)"
    );
    let db = fresh_database().await?;
    let api = spawn_api(&db.url).await?;
    query_api::auth::create_user(&api.db, "oncall", "oncall-long-password", Role::Admin).await?;

    let mut child = Command::new("node")
        .arg("dashboard.mjs")
        .current_dir(&browser_dir)
        .env("BASE_URL", &api.base_url)
        .env("USERNAME", "oncall")
        .env("PASSWORD", "oncall-long-password")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            println!("browser: {line}");
            let _ = tx.send(line);
        }
    });
    loop {
        let line = tokio::time::timeout(Duration::from_secs(60), rx.recv())
            .await?
            .ok_or_else(|| anyhow::anyhow!("the browser script ended before READY"))?;
        if line == "READY" {
            break;
        }
    }
    // Recorded as the processor records it: incident row and change-feed row.
    integration_tests::services::record_incident_change(
        &api.pool,
        "00000000-0000-0000-0000-00000000beef",
        "<img src=x onerror=alert(1)>",
    )
    .await?;

    let status = tokio::task::spawn_blocking(move || child.wait()).await??;
    assert!(
        status.success(),
        "the browser checks failed (see its output above)"
    );
    let (url, interval): (String, Option<i64>) =
        sqlx::query_as("SELECT url, interval_ms FROM machines WHERE name = 'added-from-browser'")
            .fetch_one(&api.pool)
            .await?;
    assert_eq!(
        (url.as_str(), interval),
        ("http://127.0.0.1:10/status", Some(120_000)),
        "added, then edited, from the page"
    );
    api.service.stop().await
}
