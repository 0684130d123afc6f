//! Machine administration and API tokens through the real query-api on port 0.

use integration_tests::services::fresh_database;
use integration_tests::spawn::spawn_api;
use query_api::auth::Role;
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn machines_are_read_edited_disabled_and_deleted() -> anyhow::Result<()> {
    let db = fresh_database().await?;
    let api = spawn_api(&db.url).await?;
    let admin = api.user_session("root", Role::Admin).await?;
    let viewer = api.user_session("eve", Role::Viewer).await?;
    let (_, created) = api
        .send_as(
            &admin,
            Method::POST,
            "/api/machines",
            json!({"name": "web-1", "url": "http://h/status"}),
            true,
        )
        .await?;
    let id = created["id"].as_i64().unwrap_or_default();

    // Samples the processor recorded show up for charts, oldest first.
    for (at, cpu) in [
        ("2026-11-23 10:15:00", Some(50.0)),
        ("2026-11-23 10:00:00", Some(40.0)),
        ("2026-11-23 10:30:00", None),
    ] {
        sqlx::query("INSERT INTO samples (machine, observed_at, cpu, mem, disk, uptime_s, failure_reason) VALUES ('web-1', ?, ?, 10, 10, 5, ?)")
            .bind(at)
            .bind(cpu)
            .bind(cpu.is_none().then_some("timeout"))
            .execute(&api.pool)
            .await?;
    }
    let (status, s) = api
        .get_as(
            &viewer,
            &format!(
                "/api/machines/{id}/samples?from=2026-11-23T09:00:00Z&to=2026-11-23T11:00:00Z"
            ),
        )
        .await?;
    assert_eq!(status, 200, "{s}");
    let cpus: Vec<_> = s["samples"]
        .as_array()
        .unwrap_or(&vec![])
        .iter()
        .map(|x| x["cpu"].clone())
        .collect();
    assert_eq!(
        cpus,
        vec![json!(40.0), json!(50.0), serde_json::Value::Null]
    );
    assert_eq!(s["samples"][2]["failure_reason"], "timeout");
    let (status, _) = api
        .get_as(
            &viewer,
            &format!(
                "/api/machines/{id}/samples?from=2026-11-23T12:00:00Z&to=2026-11-23T11:00:00Z"
            ),
        )
        .await?;
    assert_eq!(status, 400);

    let (status, m) = api.get_as(&viewer, &format!("/api/machines/{id}")).await?;
    assert_eq!((status, m["name"].as_str()), (200, Some("web-1")));
    let (status, _) = api
        .send_as(
            &viewer,
            Method::PATCH,
            &format!("/api/machines/{id}"),
            json!({"enabled": false}),
            true,
        )
        .await?;
    assert_eq!(status, 403);
    let (status, m) = api
        .send_as(
            &admin,
            Method::PATCH,
            &format!("/api/machines/{id}"),
            json!({"enabled": false, "url": "https://h2/status", "interval_ms": 60000}),
            true,
        )
        .await?;
    assert_eq!(status, 200, "{m}");
    assert_eq!(
        (
            m["enabled"].as_bool(),
            m["url"].as_str(),
            m["interval_ms"].as_i64()
        ),
        (Some(false), Some("https://h2/status"), Some(60000))
    );
    let (status, m) = api
        .send_as(
            &admin,
            Method::PATCH,
            &format!("/api/machines/{id}"),
            json!({"interval_ms": 0}),
            true,
        )
        .await?;
    assert_eq!(
        (status, m["interval_ms"].clone()),
        (200, serde_json::Value::Null),
        "0 returns to the default interval"
    );
    let (status, _) = api
        .send_as(
            &admin,
            Method::PATCH,
            &format!("/api/machines/{id}"),
            json!({"url": "gopher://h"}),
            true,
        )
        .await?;
    assert_eq!(status, 400);
    assert_eq!(
        api.send_as(
            &admin,
            Method::PATCH,
            "/api/machines/999999",
            json!({"enabled": true}),
            true
        )
        .await?
        .0,
        404
    );

    assert_eq!(
        api.send_as(
            &viewer,
            Method::DELETE,
            &format!("/api/machines/{id}"),
            json!({}),
            true
        )
        .await?
        .0,
        403
    );
    assert_eq!(
        api.send_as(
            &admin,
            Method::DELETE,
            &format!("/api/machines/{id}"),
            json!({}),
            true
        )
        .await?
        .0,
        204
    );
    assert_eq!(
        api.get_as(&viewer, &format!("/api/machines/{id}")).await?.0,
        404
    );
    assert_eq!(
        api.send_as(
            &admin,
            Method::DELETE,
            &format!("/api/machines/{id}"),
            json!({}),
            true
        )
        .await?
        .0,
        404
    );
    api.service.stop().await
}

#[tokio::test]
async fn tokens_are_created_once_used_and_revoked() -> anyhow::Result<()> {
    let db = fresh_database().await?;
    let api = spawn_api(&db.url).await?;
    let admin = api.user_session("root", Role::Admin).await?;
    let viewer = api.user_session("eve", Role::Viewer).await?;
    assert_eq!(
        api.send_as(
            &viewer,
            Method::POST,
            "/api/tokens",
            json!({"name": "x"}),
            true
        )
        .await?
        .0,
        403
    );
    let (status, t) = api
        .send_as(
            &admin,
            Method::POST,
            "/api/tokens",
            json!({"name": "ci"}),
            true,
        )
        .await?;
    assert_eq!(status, 201, "{t}");
    let token = t["token"].as_str().unwrap_or_default().to_owned();
    let bearer = |path: &str| {
        api.client
            .get(format!("{}{path}", api.base_url))
            .header("authorization", format!("Bearer {token}"))
            .send()
    };
    assert_eq!(bearer("/api/machines").await?.status().as_u16(), 200);
    let id = t["id"].as_i64().unwrap_or_default();
    assert_eq!(
        api.send_as(
            &admin,
            Method::DELETE,
            &format!("/api/tokens/{id}"),
            json!({}),
            true
        )
        .await?
        .0,
        204
    );
    assert_eq!(
        bearer("/api/machines").await?.status().as_u16(),
        401,
        "a revoked token is dead"
    );
    assert_eq!(
        api.send_as(
            &admin,
            Method::DELETE,
            &format!("/api/tokens/{id}"),
            json!({}),
            true
        )
        .await?
        .0,
        404
    );
    api.service.stop().await
}
