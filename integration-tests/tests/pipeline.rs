//! End to end over the real broker and real MariaDB: a fake machine at 97% CPU →
//! ingest → broker → processor → MariaDB → `GET /api/incidents`. Fails if any hop
//! is broken.

use integration_tests::fleet::{Behaviour, Fleet, FleetClock, Scenario};
use integration_tests::services::{
    create_topic, eventually, fresh_database, fresh_topics, register_machine,
};
use integration_tests::spawn::{spawn_api, spawn_ingest, spawn_processor};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_machine_becomes_an_incident_in_the_api() -> anyhow::Result<()> {
    let fleet = Fleet::start_local(
        Scenario::new()
            .machine(
                "hot-1",
                Behaviour::Steady {
                    cpu: 97.0,
                    mem: 40.0,
                    disk: 50.0,
                },
            )
            .machine(
                "calm-1",
                Behaviour::Steady {
                    cpu: 20.0,
                    mem: 40.0,
                    disk: 50.0,
                },
            )
            .machine("broken-1", Behaviour::HttpError { status: 500 }),
        FleetClock::real(1.0),
    )
    .await?;
    let db = fresh_database().await?;
    let (topic, incident_topic) = fresh_topics();
    create_topic(&topic, 2).await?;
    create_topic(&incident_topic, 2).await?;
    for name in ["hot-1", "calm-1", "broken-1"] {
        register_machine(&db.pool, name, &fleet.url_of(name), Some(500)).await?;
    }

    let api = spawn_api(&db.url).await?;
    let viewer = api
        .user_session("oncall", query_api::auth::Role::Viewer)
        .await?;
    let processor = spawn_processor(
        &db.url,
        &topic,
        &incident_topic,
        &format!("g-{}", db.name),
        &[],
    )
    .await?;
    let ingest = spawn_ingest(&db.url, &topic, &[("MACHINES_REFRESH", "200ms")]).await?;

    let incidents = eventually(
        Duration::from_secs(60),
        "a cpu incident for hot-1 in the API",
        || async {
            let (status, body) = api.get_as(&viewer, "/api/incidents?status=open").await?;
            anyhow::ensure!(
                status == 200,
                "GET /api/incidents answered {status}: {body}"
            );
            let list = body["incidents"].as_array().cloned().unwrap_or_default();
            Ok(list
                .iter()
                .any(|i| i["machine"] == "hot-1" && i["rule"] == "cpu")
                .then_some(list))
        },
    )
    .await?;

    let hot: Vec<_> = incidents
        .iter()
        .filter(|i| i["machine"] == "hot-1")
        .collect();
    assert_eq!(
        hot.len(),
        1,
        "exactly one open incident for hot-1: {hot:#?}"
    );
    let i = hot[0];
    assert_eq!(
        (i["rule"].as_str(), i["status"].as_str(), i["peak"].as_f64()),
        (Some("cpu"), Some("open"), Some(97.0))
    );
    assert_eq!(i["threshold"].as_f64(), Some(85.0));
    assert!(
        !incidents.iter().any(|i| i["machine"] == "calm-1"),
        "calm-1 must not have an incident: {incidents:#?}"
    );

    // The single incident is also reachable by id, and an unknown id is a JSON 404.
    let (status, one) = api
        .get_as(
            &viewer,
            &format!("/api/incidents/{}", i["id"].as_str().unwrap_or_default()),
        )
        .await?;
    assert_eq!(
        (status, &one["machine"]),
        (200, &serde_json::json!("hot-1"))
    );
    let (status, missing) = api.get_as(&viewer, "/api/incidents/nope").await?;
    assert_eq!(status, 404);
    assert_eq!(missing["error"], "not_found");

    // Later polls of hot-1 keep updating the same incident: still exactly one.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_, body) = api.get_as(&viewer, "/api/incidents?machine=hot-1").await?;
    assert_eq!(
        body["incidents"].as_array().map(Vec::len),
        Some(1),
        "{body}"
    );

    // The processor fed the change feed the dashboard long-polls.
    let (status, changes) = api
        .get_as(&viewer, "/api/incidents/changes?after=0&timeout_s=1")
        .await?;
    assert_eq!(status, 200);
    let changed = changes["incidents"].as_array().cloned().unwrap_or_default();
    assert!(changed.iter().any(|i| i["machine"] == "hot-1"), "{changes}");

    // The failing machine is polled and recorded as unreachable, not silently dropped.
    let failures: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM samples WHERE machine = 'broken-1' AND failure_reason = 'http_status'")
        .fetch_one(&db.pool)
        .await?;
    assert!(failures > 0, "the HTTP 500 machine left no failure samples");

    ingest.stop().await?;
    processor.stop().await?;
    api.service.stop().await?;
    fleet.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn the_openapi_document_describes_the_incident_endpoints() -> anyhow::Result<()> {
    let db = fresh_database().await?;
    let api = spawn_api(&db.url).await?;
    let (status, spec) = api.get_json("/api/openapi.json").await?;
    assert_eq!(status, 200);
    assert!(
        spec["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.")),
        "{spec}"
    );
    assert!(spec["paths"]["/incidents"]["get"].is_object(), "{spec}");
    assert!(
        spec["paths"]["/incidents/{id}"]["get"]["responses"]["404"].is_object(),
        "{spec}"
    );
    let viewer = api
        .user_session("reader", query_api::auth::Role::Viewer)
        .await?;
    let (status, body) = api.get_as(&viewer, "/api/incidents?status=bogus").await?;
    assert_eq!(status, 400, "{body}");
    let (status, body) = api.get_as(&viewer, "/api/incidents?rule=gpu").await?;
    assert_eq!((status, body["error"].as_str()), (400, Some("bad_request")));
    api.service.stop().await?;
    Ok(())
}
