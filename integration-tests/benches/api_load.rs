//! query-api under load, the server as its own process (release build):
//! - 5,000 concurrent long-poll waiters: time for one change to reach all of them
//!   (target ≤ 1 s) and server memory per waiter;
//! - `GET /api/incidents` p50/p99 latency at 1,000 requests/s (target p99 ≤ 20 ms).
//!
//! Loopback only, bounded in count and time. Run:
//! `cargo build --release -p query-api && ulimit -n 20000 && TEST_MYSQL_URL=mysql://root@127.0.0.1:3306 cargo bench -p integration-tests --bench api_load`
//! (`BENCH_WAITERS`, `BENCH_RPS`, `BENCH_SECONDS` change the sizes).

use integration_tests::services::fresh_database;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("VmRSS:")
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    let waiters: usize = std::env::var("BENCH_WAITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000);
    let rps: u64 = std::env::var("BENCH_RPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000);
    let seconds: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let db = fresh_database().await?;
    let bin = std::env::current_exe()?
        .parent()
        .and_then(|p| p.parent())
        .map(|p| p.join("query-api"))
        .unwrap_or_default();
    anyhow::ensure!(
        bin.exists(),
        "build the server first: cargo build --release -p query-api ({} missing)",
        bin.display()
    );
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.port()
    };
    let mut create = Command::new(&bin)
        .args(["user", "create", "--username", "bench", "--role", "viewer"])
        .env("DATABASE_URL", &db.url)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .spawn()?;
    use std::io::Write;
    create
        .stdin
        .take()
        .map(|mut s| s.write_all(b"bench-long-password\n"));
    anyhow::ensure!(create.wait()?.success(), "creating the bench user failed");
    for n in 0..200 {
        sqlx::query(
            "INSERT INTO incidents (id, machine, rule, threshold, for_ms, started_at, opened_at, peak, last_value, last_breach_at) \
             VALUES (?, ?, 'cpu', 85, 0, UTC_TIMESTAMP(3), UTC_TIMESTAMP(3), 90, 90, UTC_TIMESTAMP(3))",
        )
        .bind(format!("00000000-0000-0000-0000-{n:012}"))
        .bind(format!("m{n}"))
        .execute(&db.pool)
        .await?;
    }
    let mut server = Command::new(&bin)
        .env("DATABASE_URL", &db.url)
        .env("API_LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env("LONGPOLL_MAX_WAITERS", (waiters * 2).to_string())
        .env("RUST_LOG", "warn")
        .spawn()?;
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(waiters + 100)
        .build()?;
    let mut cookie = String::new();
    for _ in 0..100 {
        if let Ok(r) = client
            .post(format!("{base}/api/session"))
            .header("content-type", "application/json")
            .body(r#"{"username":"bench","password":"bench-long-password"}"#)
            .send()
            .await
        {
            cookie = r
                .headers()
                .get("set-cookie")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .split(';')
                .next()
                .unwrap_or("")
                .to_owned();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::ensure!(!cookie.is_empty(), "could not log in");
    let head: serde_json::Value = serde_json::from_slice(
        &client
            .get(format!("{base}/api/incidents/changes"))
            .header("cookie", &cookie)
            .send()
            .await?
            .bytes()
            .await?,
    )?;
    let cursor = head["cursor"].as_str().unwrap_or("0").to_owned();
    let rss_before = rss_kib(server.id());

    // --- 1. waiters ------------------------------------------------------------
    let arrived = Arc::new(std::sync::Mutex::new(Vec::with_capacity(waiters)));
    let mut tasks = Vec::with_capacity(waiters);
    for _ in 0..waiters {
        let (client, url, cookie, arrived) = (
            client.clone(),
            format!("{base}/api/incidents/changes?after={cursor}&timeout_s=60"),
            cookie.clone(),
            arrived.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let r = client.get(url).header("cookie", cookie).send().await;
            let ok = match r {
                Ok(r) => r
                    .bytes()
                    .await
                    .ok()
                    .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                    .is_some_and(|v| v["incidents"].as_array().is_some_and(|a| !a.is_empty())),
                Err(_) => false,
            };
            arrived
                .lock()
                .map(|mut v| v.push((Instant::now(), ok)))
                .ok();
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let m = client
            .get(format!("{base}/metrics"))
            .send()
            .await?
            .text()
            .await?;
        let waiting: usize = m
            .lines()
            .find_map(|l| l.strip_prefix("query_api_waiting_longpolls "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        if waiting >= waiters {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {waiting} of {waiters} long-polls waiting after 60 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let rss_waiting = rss_kib(server.id());
    let changed_at = Instant::now();
    sqlx::query("INSERT INTO incident_changes (incident_id, changed_at) VALUES ('00000000-0000-0000-0000-000000000001', UTC_TIMESTAMP(3))")
        .execute(&db.pool)
        .await?;
    for t in tasks {
        let _ = t.await;
    }
    let arrivals = arrived.lock().map(|v| v.clone()).unwrap_or_default();
    let delivered = arrivals.iter().filter(|(_, ok)| *ok).count();
    let last = arrivals
        .iter()
        .map(|(t, _)| t.duration_since(changed_at))
        .max()
        .unwrap_or_default();
    println!(
        "long-poll: {waiters} waiters; a change reached {delivered} of them, the last after {:.0} ms; server RSS {} KiB idle -> {} KiB waiting = {:.1} KiB per waiter",
        last.as_secs_f64() * 1000.0,
        rss_before,
        rss_waiting,
        (rss_waiting.saturating_sub(rss_before)) as f64 / waiters as f64
    );

    // --- 2. GET /api/incidents at a fixed rate ------------------------------------
    let total = rps * seconds;
    let latencies = Arc::new(std::sync::Mutex::new(Vec::with_capacity(total as usize)));
    let mut ticker = tokio::time::interval(Duration::from_nanos(1_000_000_000 / rps));
    let mut tasks = Vec::with_capacity(total as usize);
    for _ in 0..total {
        ticker.tick().await;
        let (client, url, cookie, latencies) = (
            client.clone(),
            format!("{base}/api/incidents?limit=50"),
            cookie.clone(),
            latencies.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let ok = client
                .get(url)
                .header("cookie", cookie)
                .send()
                .await
                .map(|r| r.status().is_success())
                .unwrap_or(false);
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            latencies.lock().map(|mut v| v.push((ms, ok))).ok();
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let mut ms: Vec<f64> = latencies
        .lock()
        .map(|v| v.iter().filter(|(_, ok)| *ok).map(|(m, _)| *m).collect())
        .unwrap_or_default();
    ms.sort_by(|a, b| a.total_cmp(b));
    println!(
        "GET /api/incidents?limit=50 at {rps} req/s for {seconds} s: {} ok of {total}, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        ms.len(),
        percentile(&ms, 0.50),
        percentile(&ms, 0.99),
        ms.last().copied().unwrap_or(f64::NAN)
    );
    let _ = server.kill();
    Ok(())
}
