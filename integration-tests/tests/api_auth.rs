//! query-api's own session middleware through the real service on port 0 against
//! MariaDB: login, cookie attributes, rotation, logout, absolute and idle expiry,
//! CSRF, roles, bearer tokens, the login rate limit, and the machines endpoints.

use integration_tests::services::fresh_database;
use integration_tests::spawn::{spawn_api, spawn_api_with};
use query_api::auth::Role;
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn without_a_session_the_api_answers_401_json() -> anyhow::Result<()> {
    let db = fresh_database().await?;
    let api = spawn_api(&db.url).await?;
    for path in ["/api/incidents", "/api/machines", "/api/session"] {
        let (status, body) = api.get_json(path).await?;
        assert_eq!(status, 401, "{path}: {body}");
        assert_eq!(body["error"], "unauthenticated", "{path}");
    }
    // Public: the spec and the health checks.
    assert_eq!(api.get_json("/api/openapi.json").await?.0, 200);
    assert_eq!(api.get_json("/healthz").await?.0, 200);
    api.service.stop().await
}

#[tokio::test]
async fn unknown_user_and_wrong_password_look_the_same() -> anyhow::Result<()> {
    let db = fresh_database().await?;
    let api = spawn_api(&db.url).await?;
    query_api::auth::create_user(&api.db, "alice", "alice-long-password", Role::Admin).await?;
    let (wrong, s1) = api.login("alice", "not-her-password").await?;
    let (unknown, s2) = api.login("mallory", "whatever-password").await?;
    assert!(s1.is_none() && s2.is_none());
    assert_eq!(wrong, unknown);
    assert_eq!(wrong.0, 401);
    api.service.stop().await
}

#[tokio::test]
async fn login_sets_a_safe_cookie_rotates_it_and_logout_revokes_it() -> anyhow::Result<()> {
    let db = fresh_database().await?;
    let api = spawn_api(&db.url).await?;
    let first = api.user_session("alice", Role::Admin).await?;
    for attr in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(
            first.set_cookie.contains(attr),
            "cookie lacks {attr}: {}",
            first.set_cookie
        );
    }
    let value = first
        .cookie
        .split_once('=')
        .map(|(_, v)| v)
        .unwrap_or_default();
    assert_eq!(value.len(), 64, "a 256-bit id, hex");
    let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sessions WHERE id_sha256 = ?")
        .bind(value)
        .fetch_one(&api.pool)
        .await?;
    assert_eq!(stored, 0, "the session id itself is never stored");

    let (status, me) = api.get_as(&first, "/api/session").await?;
    assert_eq!(
        (status, me["username"].as_str(), me["role"].as_str()),
        (200, Some("alice"), Some("admin"))
    );
    assert_eq!(me["csrf_token"].as_str(), Some(first.csrf.as_str()));

    let (_, second) = api.login("alice", "alice-correct-horse-battery").await?;
    let second = second.ok_or_else(|| anyhow::anyhow!("second login failed"))?;
    assert_ne!(first.cookie, second.cookie, "the id rotates at login");

    let (status, _) = api
        .send_as(&second, Method::DELETE, "/api/session", json!({}), true)
        .await?;
    assert_eq!(status, 204);
    assert_eq!(
        api.get_as(&second, "/api/incidents").await?.0,
        401,
        "a revoked session is dead"
    );
    assert_eq!(
        api.get_as(&first, "/api/incidents").await?.0,
        200,
        "other sessions live on"
    );
    api.service.stop().await
}

#[tokio::test]
async fn expired_sessions_are_refused() -> anyhow::Result<()> {
    let db = fresh_database().await?;
    let api = spawn_api(&db.url).await?;
    let absolute = api.user_session("abs", Role::Viewer).await?;
    let idle = api.user_session("idle", Role::Viewer).await?;
    assert_eq!(api.get_as(&absolute, "/api/incidents").await?.0, 200);
    sqlx::query("UPDATE sessions s JOIN users u ON u.id = s.user_id SET s.expires_at = UTC_TIMESTAMP(3) - INTERVAL 1 SECOND WHERE u.username = 'abs'")
        .execute(&api.pool)
        .await?;
    sqlx::query("UPDATE sessions s JOIN users u ON u.id = s.user_id SET s.last_seen_at = UTC_TIMESTAMP(3) - INTERVAL 2 HOUR WHERE u.username = 'idle'")
        .execute(&api.pool)
        .await?;
    assert_eq!(
        api.get_as(&absolute, "/api/incidents").await?.0,
        401,
        "past the absolute expiry"
    );
    assert_eq!(
        api.get_as(&idle, "/api/incidents").await?.0,
        401,
        "idle longer than SESSION_IDLE"
    );
    api.service.stop().await
}

#[tokio::test]
async fn state_changes_need_the_csrf_token_and_the_admin_role() -> anyhow::Result<()> {
    let db = fresh_database().await?;
    let api = spawn_api(&db.url).await?;
    let admin = api.user_session("root", Role::Admin).await?;
    let viewer = api.user_session("eve", Role::Viewer).await?;
    let machine =
        json!({"name": "web-1", "url": "http://10.0.0.1:8080/status", "interval_ms": 60000});

    let (status, body) = api
        .send_as(
            &admin,
            Method::POST,
            "/api/machines",
            machine.clone(),
            false,
        )
        .await?;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("csrf")),
        "{body}"
    );
    let (status, body) = api
        .send_as(
            &viewer,
            Method::POST,
            "/api/machines",
            machine.clone(),
            true,
        )
        .await?;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("forbidden")),
        "{body}"
    );
    let (status, body) = api
        .send_as(&admin, Method::POST, "/api/machines", machine.clone(), true)
        .await?;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        (body["name"].as_str(), body["status"].as_str()),
        (Some("web-1"), Some("unknown"))
    );
    let (status, _) = api
        .send_as(&admin, Method::POST, "/api/machines", machine, true)
        .await?;
    assert_eq!(status, 409);
    for (bad, why) in [
        (
            json!({"name": "ftp-1", "url": "ftp://10.0.0.1/status"}),
            "scheme",
        ),
        (json!({"name": "rel", "url": "/status"}), "absolute"),
        (
            json!({"name": "<img src=x>", "url": "http://a/status"}),
            "name",
        ),
        (
            json!({"name": "fast", "url": "http://a/status", "interval_ms": 5}),
            "interval_ms",
        ),
    ] {
        let (status, body) = api
            .send_as(&admin, Method::POST, "/api/machines", bad, true)
            .await?;
        assert_eq!(status, 400, "{body}");
        assert!(
            body["reason"].as_str().unwrap_or_default().contains(why),
            "{body}"
        );
    }
    let (status, list) = api.get_as(&viewer, "/api/machines").await?;
    assert_eq!(status, 200);
    assert_eq!(list["machines"].as_array().map(Vec::len), Some(1));
    api.service.stop().await
}

#[tokio::test]
async fn bearer_tokens_work_for_scripts_without_csrf() -> anyhow::Result<()> {
    let db = fresh_database().await?;
    let api = spawn_api(&db.url).await?;
    let id =
        query_api::auth::create_user(&api.db, "robot", "robot-long-password", Role::Admin).await?;
    let token = "tok_0123456789abcdef0123456789abcdef";
    sqlx::query("INSERT INTO api_tokens (user_id, name, token_sha256, created_at) VALUES (?, 'ci', ?, UTC_TIMESTAMP(3))")
        .bind(id)
        .bind(query_api::auth::digest(token))
        .execute(&api.pool)
        .await?;
    let r = api
        .client
        .post(format!("{}/api/machines", api.base_url))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(json!({"name": "db-1", "url": "https://db-1/status"}).to_string())
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 201);
    let r = api
        .client
        .get(format!("{}/api/machines", api.base_url))
        .header("authorization", "Bearer wrong")
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 401);
    api.service.stop().await
}

#[tokio::test]
async fn login_attempts_are_rate_limited() -> anyhow::Result<()> {
    let db = fresh_database().await?;
    let api = spawn_api_with(
        &db.url,
        &[("LOGIN_MAX_ATTEMPTS", "3"), ("LOGIN_WINDOW", "10m")],
    )
    .await?;
    query_api::auth::create_user(&api.db, "bob", "bob-long-password", Role::Viewer).await?;
    for _ in 0..3 {
        assert_eq!(api.login("bob", "guess-guess-guess").await?.0 .0, 401);
    }
    let ((status, body), _) = api.login("bob", "bob-long-password").await?;
    assert_eq!(
        (status, body["error"].as_str()),
        (429, Some("rate_limited")),
        "even the right password waits"
    );
    api.service.stop().await
}
