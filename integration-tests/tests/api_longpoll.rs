//! The incident long-poll through the real query-api: it waits, wakes on a change,
//! resumes from a cursor without missing anything, returns on timeout and on
//! shutdown. Changes are written the way the processor writes them (incident row
//! and change-feed row).

use integration_tests::services::fresh_database;
use integration_tests::spawn::{spawn_api, Api, Session};
use query_api::auth::Role;
use std::time::{Duration, Instant};

async fn record_change(api: &Api, id: &str, machine: &str) -> anyhow::Result<()> {
    integration_tests::services::record_incident_change(&api.pool, id, machine).await
}

async fn poll(
    api: &Api,
    s: &Session,
    after: &str,
    timeout_s: u32,
) -> anyhow::Result<(u16, serde_json::Value)> {
    api.get_as(
        s,
        &format!("/api/incidents/changes?after={after}&timeout_s={timeout_s}"),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_waits_wakes_on_a_change_and_resumes_from_its_cursor() -> anyhow::Result<()> {
    let db = fresh_database().await?;
    let api = spawn_api(&db.url).await?;
    let s = api.user_session("oncall", Role::Viewer).await?;

    let (status, head) = api.get_as(&s, "/api/incidents/changes").await?;
    assert_eq!(status, 200);
    let cursor = head["cursor"].as_str().unwrap_or_default().to_owned();
    assert_eq!(head["incidents"].as_array().map(Vec::len), Some(0));

    // Nothing happens: it waits for the timeout, then answers empty with the same cursor.
    let t = Instant::now();
    let (status, idle) = poll(&api, &s, &cursor, 1).await?;
    assert_eq!(status, 200);
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "returned after {:?}",
        t.elapsed()
    );
    assert_eq!(
        (
            idle["cursor"].as_str(),
            idle["incidents"].as_array().map(Vec::len)
        ),
        (Some(cursor.as_str()), Some(0))
    );

    // A change while it waits wakes it within a second.
    let waiter = {
        let (api_url, cookie, cursor) = (api.base_url.clone(), s.cookie.clone(), cursor.clone());
        tokio::spawn(async move {
            let t = Instant::now();
            let r = reqwest::Client::new()
                .get(format!(
                    "{api_url}/api/incidents/changes?after={cursor}&timeout_s=20"
                ))
                .header("cookie", cookie)
                .send()
                .await?;
            let body: serde_json::Value = serde_json::from_slice(&r.bytes().await?)?;
            anyhow::Ok((t.elapsed(), body))
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let changed_at = Instant::now();
    record_change(&api, "00000000-0000-0000-0000-000000000001", "web-1").await?;
    let (waited, woke) = waiter.await??;
    assert!(
        changed_at.elapsed() < Duration::from_secs(2) && waited < Duration::from_secs(5),
        "woke after {waited:?}"
    );
    assert_eq!(woke["incidents"][0]["machine"], "web-1");
    let next = woke["cursor"].as_str().unwrap_or_default().to_owned();
    assert_ne!(next, cursor);

    // Two changes while the client is away: resuming with its cursor gets both, at once.
    record_change(&api, "00000000-0000-0000-0000-000000000002", "web-2").await?;
    record_change(&api, "00000000-0000-0000-0000-000000000001", "web-1").await?;
    let t = Instant::now();
    let (_, resumed) = poll(&api, &s, &next, 20).await?;
    assert!(t.elapsed() < Duration::from_secs(2));
    let mut machines: Vec<_> = resumed["incidents"]
        .as_array()
        .unwrap_or(&vec![])
        .iter()
        .map(|i| i["machine"].as_str().unwrap_or("").to_owned())
        .collect();
    machines.sort();
    assert_eq!(machines, vec!["web-1", "web-2"]);
    assert_eq!(
        resumed["incidents"].as_array().map(Vec::len),
        Some(2),
        "each incident once"
    );

    assert_eq!(poll(&api, &s, "yesterday", 1).await?.0, 400);
    assert_eq!(
        api.get_as(&s, "/api/incidents/changes?after=0&timeout_s=3600")
            .await?
            .0,
        400,
        "the wait is bounded"
    );
    api.service.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_long_polls_return_when_the_server_shuts_down() -> anyhow::Result<()> {
    let db = fresh_database().await?;
    let api = spawn_api(&db.url).await?;
    let s = api.user_session("oncall", Role::Viewer).await?;
    let (_, head) = api.get_as(&s, "/api/incidents/changes").await?;
    let cursor = head["cursor"].as_str().unwrap_or_default().to_owned();
    let waiter = {
        let (api_url, cookie) = (api.base_url.clone(), s.cookie.clone());
        tokio::spawn(async move {
            let t = Instant::now();
            let r = reqwest::Client::new()
                .get(format!(
                    "{api_url}/api/incidents/changes?after={cursor}&timeout_s=60"
                ))
                .header("cookie", cookie)
                .send()
                .await;
            (t.elapsed(), r.map(|r| r.status().as_u16()).ok())
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    api.service.stop().await?;
    let (elapsed, status) = waiter.await?;
    assert!(
        elapsed < Duration::from_secs(10),
        "the long-poll held shutdown for {elapsed:?}"
    );
    assert_eq!(status, Some(200));
    Ok(())
}
