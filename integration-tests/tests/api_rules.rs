//! `/api/rules`: anyone reads the rules in force; an admin's change is validated,
//! published as one `RulesChanged` per partition of the machine-event topic (the
//! same event id everywhere), and then read back.

use integration_tests::services::{create_topic, fresh_database, kafka_brokers};
use integration_tests::spawn::spawn_api;
use query_api::auth::Role;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::Message;
use reqwest::Method;
use std::collections::BTreeSet;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_changes_the_rules_and_every_partition_hears_it() -> anyhow::Result<()> {
    let db = fresh_database().await?;
    let api = spawn_api(&db.url).await?;
    create_topic(&api.topic, 3).await?;
    let admin = api.user_session("root", Role::Admin).await?;
    let viewer = api.user_session("eve", Role::Viewer).await?;

    let (status, rules) = api.get_as(&viewer, "/api/rules").await?;
    assert_eq!(status, 200, "{rules}");
    assert_eq!(
        (
            rules["mem"]["threshold"].as_f64(),
            rules["mem"]["for"].as_str()
        ),
        (Some(90.0), Some("30m"))
    );
    assert_eq!(rules["disk"]["for"], "2h");

    let mut changed = rules.clone();
    changed["mem"]["threshold"] = serde_json::json!(80.0);
    changed["mem"]["for"] = serde_json::json!("10m");
    assert_eq!(
        api.send_as(&viewer, Method::PUT, "/api/rules", changed.clone(), true)
            .await?
            .0,
        403
    );
    let mut bad = changed.clone();
    bad["cpu"]["for"] = serde_json::json!("soon");
    let (status, body) = api
        .send_as(&admin, Method::PUT, "/api/rules", bad, true)
        .await?;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("cpu.for"),
        "{body}"
    );
    let mut bad = changed.clone();
    bad["disk"]["threshold"] = serde_json::json!(150);
    assert_eq!(
        api.send_as(&admin, Method::PUT, "/api/rules", bad, true)
            .await?
            .0,
        400
    );

    let (status, body) = api
        .send_as(&admin, Method::PUT, "/api/rules", changed, true)
        .await?;
    assert_eq!(status, 200, "{body}");
    let (_, now) = api.get_as(&viewer, "/api/rules").await?;
    assert_eq!(
        (
            now["mem"]["threshold"].as_f64(),
            now["mem"]["for"].as_str(),
            now["changed_by"].as_str()
        ),
        (Some(80.0), Some("10m"), Some("root"))
    );

    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka_brokers()?)
        .set("group.id", format!("{}-check", api.topic))
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "10")
        .create()?;
    consumer.subscribe(&[&api.topic])?;
    let mut partitions = BTreeSet::new();
    let mut ids = BTreeSet::new();
    while partitions.len() < 3 {
        let m = tokio::time::timeout(Duration::from_secs(30), consumer.recv()).await??;
        let env = proto_events::Envelope::decode(m.payload().unwrap_or_default())?;
        let proto_events::Event::RulesChanged(rc) = &env.event else {
            anyhow::bail!("unexpected {env:?}")
        };
        assert_eq!(
            (
                rc.rules.mem.threshold,
                rc.rules.mem.for_ms,
                rc.changed_by.as_str()
            ),
            (80.0, 600_000, "root")
        );
        partitions.insert(m.partition());
        ids.insert(env.event_id);
    }
    assert_eq!(ids.len(), 1, "one event, copied to every partition");
    api.service.stop().await
}
