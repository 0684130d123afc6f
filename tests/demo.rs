//! `resource-monitor --demo`, run as a process on an embedded store: the printed
//! first-run credentials log in, incidents of every rule appear through the API
//! within two minutes, and after the process is killed (SIGKILL) and started again
//! on the same data directory, machines, incidents and the session are still there,
//! no password is printed again, and no incident is duplicated.

use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

struct Monitor {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Monitor {
    /// `--demo` on the embedded store in `data_dir`.
    fn start(data_dir: &std::path::Path, listen: &str) -> anyhow::Result<Self> {
        let mut command = Command::new(env!("CARGO_BIN_EXE_resource-monitor"));
        command
            .args(["--demo", "--listen", listen, "--data-dir"])
            .arg(data_dir)
            .env_remove("DATABASE_URL")
            .env_remove("KAFKA_BROKERS");
        Self::spawn(command)
    }

    /// Runs `command` (the binary, with its arguments and settings), quiet logs,
    /// stdout read line by line.
    fn spawn(mut command: Command) -> anyhow::Result<Self> {
        let mut child = command
            .current_dir(std::env::temp_dir())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                println!("monitor: {line}");
                let _ = tx.send(line);
            }
        });
        Ok(Monitor { child, lines })
    }

    /// Stdout lines up to the "running" line.
    fn until_running(&self) -> anyhow::Result<Vec<String>> {
        let mut seen = Vec::new();
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(60))
                .map_err(|_| anyhow::anyhow!("no 'running' line; stdout so far: {seen:?}"))?;
            let running = line.contains("is running");
            seen.push(line);
            if running {
                return Ok(seen);
            }
        }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_addr() -> anyhow::Result<String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.to_string())
}

async fn get(client: &reqwest::Client, url: &str, cookie: &str) -> anyhow::Result<(u16, Value)> {
    let r = client.get(url).header("cookie", cookie).send().await?;
    let status = r.status().as_u16();
    let body = serde_json::from_slice(&r.bytes().await?).unwrap_or(Value::Null);
    Ok((status, body))
}

async fn incidents(
    client: &reqwest::Client,
    base: &str,
    cookie: &str,
) -> anyhow::Result<Vec<Value>> {
    let (status, body) = get(
        client,
        &format!("{base}/api/incidents?status=all&limit=1000"),
        cookie,
    )
    .await?;
    anyhow::ensure!(status == 200, "GET /api/incidents: {status} {body}");
    Ok(body["incidents"].as_array().cloned().unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_shows_every_rule_and_survives_a_kill() -> anyhow::Result<()> {
    let data_dir = std::env::temp_dir().join(format!(
        "monitor-demo-{}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
    ));
    let addr = free_addr()?;
    let base = format!("http://{addr}");
    let client = reqwest::Client::new();

    let first = Monitor::start(&data_dir, &addr)?;
    let printed = first.until_running()?;
    let password = printed
        .iter()
        .find_map(|l| l.trim().strip_prefix("password: "))
        .ok_or_else(|| anyhow::anyhow!("no first-run password printed: {printed:?}"))?
        .to_owned();
    assert!(password.len() >= 16, "a long random password");
    assert!(printed.iter().any(|l| l.contains("username: admin")));

    let login = client
        .post(format!("{base}/api/session"))
        .header("content-type", "application/json")
        .body(serde_json::json!({"username": "admin", "password": password}).to_string())
        .send()
        .await?;
    assert_eq!(login.status(), 200, "the printed credentials log in");
    let cookie = login
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .unwrap_or_default()
        .to_owned();

    // Incidents of every rule, through the API, within two minutes of start.
    let started = Instant::now();
    let every_rule: BTreeSet<&str> = ["cpu", "mem", "disk", "unreachable"].into();
    let before_kill = loop {
        let list = incidents(&client, &base, &cookie).await?;
        let rules: BTreeSet<&str> = list.iter().filter_map(|i| i["rule"].as_str()).collect();
        let resolved = list.iter().any(|i| i["status"] == "resolved");
        if rules.is_superset(&every_rule) && resolved {
            println!("every rule seen after {:?}", started.elapsed());
            break list;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(120),
            "after two minutes the rules seen are {rules:?} (resolved: {resolved})"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let (_, machines) = get(&client, &format!("{base}/api/machines"), &cookie).await?;
    let machine_names: BTreeSet<String> = machines["machines"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["name"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(machine_names.len(), 6, "{machines}");

    // Kill it where it stands, and start it again on the same data.
    drop(first);
    let second = Monitor::start(&data_dir, &addr)?;
    let printed = second.until_running()?;
    assert!(
        !printed.iter().any(|l| l.contains("password:")),
        "no new password on a second run: {printed:?}"
    );
    let (status, me) = get(&client, &format!("{base}/api/session"), &cookie).await?;
    assert_eq!(status, 200, "the session survived the restart: {me}");
    assert_eq!(me["username"], "admin");
    let (_, machines) = get(&client, &format!("{base}/api/machines"), &cookie).await?;
    let after_names: BTreeSet<String> = machines["machines"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["name"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(after_names, machine_names, "the same machines, once each");

    // Let it run a little, then: every incident from before is still there, and
    // none is duplicated (one per id and per machine x rule x run start; at most
    // one open per machine x rule).
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = incidents(&client, &base, &cookie).await?;
    let ids: HashMap<&str, &Value> = after
        .iter()
        .filter_map(|i| i["id"].as_str().map(|id| (id, i)))
        .collect();
    assert_eq!(ids.len(), after.len(), "incident ids are unique");
    for i in &before_kill {
        let id = i["id"].as_str().unwrap_or_default();
        let kept = ids
            .get(id)
            .ok_or_else(|| anyhow::anyhow!("incident {i} is gone after the restart"))?;
        assert_eq!(kept["opened_at"], i["opened_at"], "{i}");
    }
    let runs: BTreeSet<(String, String, String)> = after
        .iter()
        .map(|i| {
            (
                i["machine"].to_string(),
                i["rule"].to_string(),
                i["started_at"].to_string(),
            )
        })
        .collect();
    assert_eq!(runs.len(), after.len(), "no run has two incidents");
    let mut open = BTreeSet::new();
    for i in after.iter().filter(|i| i["status"] == "open") {
        assert!(
            open.insert((i["machine"].to_string(), i["rule"].to_string())),
            "two open incidents for {i}"
        );
    }
    drop(second);
    let _ = std::fs::remove_dir_all(&data_dir);
    Ok(())
}

/// With `KAFKA_BROKERS` and `DATABASE_URL` set, the same binary runs on Kafka and
/// MySQL: the first user lands in MySQL, and a machine added through the API is
/// polled, its events go through Kafka, and its latest state shows in the API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_kafka_and_mysql_set_it_uses_them() -> anyhow::Result<()> {
    use sqlx::{Connection, Executor};
    let server = std::env::var("TEST_MYSQL_URL")
        .map_err(|_| anyhow::anyhow!("TEST_MYSQL_URL is required (MariaDB/MySQL)"))?;
    let brokers = std::env::var("TEST_KAFKA_BROKERS")
        .map_err(|_| anyhow::anyhow!("TEST_KAFKA_BROKERS is required (a Kafka-protocol broker)"))?;
    let name = format!("rm_{}", std::process::id());
    let mut admin = sqlx::MySqlConnection::connect(&server).await?;
    admin
        .execute(format!("DROP DATABASE IF EXISTS `{name}`").as_str())
        .await?;
    admin
        .execute(format!("CREATE DATABASE `{name}`").as_str())
        .await?;
    let url = format!("{}/{name}", server.trim_end_matches('/'));
    let addr = free_addr()?;
    let base = format!("http://{addr}");
    let mut command = Command::new(env!("CARGO_BIN_EXE_resource-monitor"));
    command
        .args(["--listen", &addr])
        .env("DATABASE_URL", &url)
        .env("KAFKA_BROKERS", &brokers)
        .env("PROCESSOR_GROUP_ID", &name)
        .env("KAFKA_FETCH_WAIT_MAX_MS", "10")
        .env("KAFKA_SESSION_TIMEOUT_MS", "6000")
        .env("KAFKA_MAX_POLL_INTERVAL_MS", "6000")
        .env("POLL_INTERVAL", "1s")
        .env("MACHINES_REFRESH", "500ms");
    let monitor = Monitor::spawn(command)?;
    let printed = monitor.until_running()?;
    let password = printed
        .iter()
        .find_map(|l| l.trim().strip_prefix("password: "))
        .ok_or_else(|| anyhow::anyhow!("no first-run password printed: {printed:?}"))?
        .to_owned();
    let users: i64 = sqlx::query_scalar(&format!(
        "SELECT COUNT(*) FROM `{name}`.users WHERE username = 'admin'"
    ))
    .fetch_one(&mut admin)
    .await?;
    assert_eq!(users, 1, "the first user is in MySQL");

    let client = reqwest::Client::new();
    let login = client
        .post(format!("{base}/api/session"))
        .header("content-type", "application/json")
        .body(serde_json::json!({"username": "admin", "password": password}).to_string())
        .send()
        .await?;
    assert_eq!(login.status(), 200);
    let cookie = login
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .unwrap_or_default()
        .to_owned();
    let csrf = serde_json::from_slice::<Value>(&login.bytes().await?)?["csrf_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    // The monitor's own /healthz stands in for a machine: it is not a status
    // payload, so polls fail and the machine shows as unreachable. Its name is
    // unique to this run, so only this run's events (on the fixed topic) count.
    let added = client
        .post(format!("{base}/api/machines"))
        .header("cookie", &cookie)
        .header("x-csrf-token", &csrf)
        .header("content-type", "application/json")
        .body(serde_json::json!({"name": name, "url": format!("{base}/healthz")}).to_string())
        .send()
        .await?;
    assert_eq!(added.status(), 201);
    let started = Instant::now();
    loop {
        let (_, machines) = get(&client, &format!("{base}/api/machines"), &cookie).await?;
        let status = machines["machines"][0]["status"].as_str().unwrap_or("");
        if status == "unreachable" {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(60),
            "no poll result through Kafka after a minute: {machines}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    drop(monitor);
    admin
        .execute(format!("DROP DATABASE IF EXISTS `{name}`").as_str())
        .await?;
    Ok(())
}
