//! `/api/incidents` filters and cursor paging, `/api/docs`, `/api/openapi.json`
//! and `/metrics` through the real query-api.

use integration_tests::services::fresh_database;
use integration_tests::spawn::spawn_api;
use query_api::auth::Role;
use std::collections::HashSet;

#[tokio::test]
async fn filters_and_cursor_paging_visit_every_incident_once_open_first() -> anyhow::Result<()> {
    let db = fresh_database().await?;
    let api = spawn_api(&db.url).await?;
    let s = api.user_session("oncall", Role::Viewer).await?;
    // 25 incidents (one open per machine and rule); every third resolved; pairs share an opened_at.
    for n in 0..25 {
        sqlx::query(
            "INSERT INTO incidents (id, machine, rule, threshold, for_ms, started_at, opened_at, peak, last_value, last_breach_at, resolved_at, resolution) \
             VALUES (?, ?, ?, 85, 0, ?, ?, 90, 90, ?, ?, ?)",
        )
        .bind(format!("00000000-0000-0000-0000-{n:012}"))
        .bind(format!("m{n}"))
        .bind(if n % 2 == 0 { "cpu" } else { "mem" })
        .bind(format!("2026-11-23 10:{:02}:00", n / 2))
        .bind(format!("2026-11-23 10:{:02}:00", n / 2))
        .bind(format!("2026-11-23 10:{:02}:00", n / 2))
        .bind((n % 3 == 0).then(|| "2026-11-23 11:00:00".to_owned()))
        .bind(if n % 3 == 0 { "cleared" } else { "" })
        .execute(&api.pool)
        .await?;
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/incidents?limit=4&cursor={c}"),
            None => "/api/incidents?limit=4".to_owned(),
        };
        let (status, page) = api.get_as(&s, &path).await?;
        assert_eq!(status, 200, "{page}");
        for i in page["incidents"].as_array().cloned().unwrap_or_default() {
            seen.push((
                i["id"].as_str().unwrap_or("").to_owned(),
                i["status"].as_str().unwrap_or("").to_owned(),
                i["opened_at"].as_str().unwrap_or("").to_owned(),
            ));
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 25);
    assert_eq!(
        seen.iter().map(|s| &s.0).collect::<HashSet<_>>().len(),
        25,
        "no incident twice"
    );
    let first_resolved = seen.iter().position(|s| s.1 == "resolved").unwrap_or(25);
    assert!(
        seen[..first_resolved].iter().all(|s| s.1 == "open")
            && seen[first_resolved..].iter().all(|s| s.1 == "resolved"),
        "open first"
    );
    for group in [&seen[..first_resolved], &seen[first_resolved..]] {
        assert!(
            group.windows(2).all(|w| w[0].2 >= w[1].2),
            "newest first within a group"
        );
    }

    let (_, open_cpu_m0) = api
        .get_as(&s, "/api/incidents?status=open&rule=cpu&machine=m0")
        .await?;
    for i in open_cpu_m0["incidents"]
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        assert_eq!(
            (
                i["status"].as_str(),
                i["rule"].as_str(),
                i["machine"].as_str()
            ),
            (Some("open"), Some("cpu"), Some("m0"))
        );
    }
    let (_, ranged) = api
        .get_as(
            &s,
            "/api/incidents?since=2026-11-23T10:05:00Z&until=2026-11-23T10:07:00Z",
        )
        .await?;
    assert_eq!(
        ranged["incidents"].as_array().map(Vec::len),
        Some(4),
        "opened 10:05 and 10:06, two each"
    );
    assert_eq!(
        api.get_as(&s, "/api/incidents?cursor=garbage").await?.0,
        400
    );
    assert_eq!(api.get_as(&s, "/api/incidents?limit=0").await?.0, 400);
    api.service.stop().await
}

#[tokio::test]
async fn docs_spec_and_metrics_are_served() -> anyhow::Result<()> {
    let db = fresh_database().await?;
    let api = spawn_api(&db.url).await?;
    assert_eq!(
        api.get_json("/readyz").await?.0,
        200,
        "ready: the database answers"
    );
    let (status, docs) = api.get_json("/api/docs").await?;
    assert_eq!(status, 200);
    assert!(
        docs.as_str().unwrap_or_default().contains("swagger"),
        "Swagger UI page expected"
    );
    let (_, spec) = api.get_json("/api/openapi.json").await?;
    for path in [
        "/session",
        "/incidents",
        "/incidents/changes",
        "/machines",
        "/machines/{id}",
        "/machines/{id}/samples",
        "/rules",
        "/tokens",
        "/tokens/{id}",
    ] {
        assert!(spec["paths"][path].is_object(), "the spec lacks {path}");
    }
    let _ = api.get_json("/api/incidents").await?; // a 401, counted
    let (status, metrics) = api.get_json("/metrics").await?;
    assert_eq!(status, 200);
    let text = metrics.as_str().unwrap_or_default();
    for needle in [
        "query_api_requests_total{route=\"api\",status=\"401\"}",
        "query_api_request_latency_seconds_bucket",
        "query_api_waiting_longpolls",
    ] {
        assert!(text.contains(needle), "/metrics lacks {needle}:\n{text}");
    }
    api.service.stop().await
}
