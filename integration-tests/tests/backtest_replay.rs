//! Live == replay: the live pipeline runs a fake-fleet scenario; a backtest of the
//! same range with the same rules over the recorded log reproduces exactly the
//! incidents the processor recorded (empty diff). A what-if with a higher CPU
//! threshold shows the CPU incidents that would not have opened.

use integration_tests::fleet::{Behaviour, Fleet, FleetClock, Scenario};
use integration_tests::services::{
    create_topic, eventually, fresh_database, fresh_topics, kafka_brokers, register_machine,
};
use integration_tests::spawn::{spawn_ingest, spawn_processor};
use processor::replay::{replay, Difference, ReplayRequest};
use proto_events::RuleName;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_the_recorded_log_with_the_live_rules_gives_an_empty_diff() -> anyhow::Result<()>
{
    let fleet = Fleet::start_local(
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
                "flappy",
                Behaviour::Flapping {
                    low: 20.0,
                    high: 95.0,
                    period_s: 1.0,
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
        FleetClock::real(1.0),
    )
    .await?;
    let db = fresh_database().await?;
    let (topic, incidents_topic) = fresh_topics();
    create_topic(&topic, 2).await?;
    create_topic(&incidents_topic, 2).await?;
    for name in fleet.names() {
        register_machine(&db.pool, &name, &fleet.url_of(&name), Some(400)).await?;
    }
    let rules = [("RULE_MEM_FOR", "2s"), ("RULE_UNREACHABLE_FOR", "1s")];
    let started = chrono::Utc::now();
    let processor = spawn_processor(
        &db.url,
        &topic,
        &incidents_topic,
        &format!("g-{}", db.name),
        &rules,
    )
    .await?;
    let ingest = spawn_ingest(&db.url, &topic, &[("MACHINES_REFRESH", "200ms")]).await?;
    eventually(
        Duration::from_secs(60),
        "incidents of cpu, mem and unreachable recorded",
        || async {
            let rules: Vec<String> = sqlx::query_scalar("SELECT DISTINCT rule FROM incidents")
                .fetch_all(&db.pool)
                .await?;
            anyhow::ensure!(rules.len() >= 3, "rules recorded so far: {rules:?}");
            Ok(Some(()))
        },
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    ingest.stop().await?;
    // Let the processor fold the tail of the log, then stop it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    processor.stop().await?;

    let mut live_rules = proto_events::RuleSet::default();
    live_rules.mem.for_ms = 2_000;
    live_rules.unreachable.for_ms = 1_000;
    let req = ReplayRequest {
        from: started - chrono::Duration::minutes(1),
        to: chrono::Utc::now() + chrono::Duration::minutes(1),
        machines: vec![],
        rules: live_rules,
        lookback: Duration::from_secs(3600),
        follow_rule_changes: true,
    };
    let same = replay(&db.db, &kafka_brokers()?, &topic, &req).await?;
    assert!(same.events_read > 20, "read {} events", same.events_read);
    let rules_seen: std::collections::BTreeSet<RuleName> =
        same.incidents.iter().map(|i| i.rule).collect();
    assert!(
        rules_seen.contains(&RuleName::Cpu)
            && rules_seen.contains(&RuleName::Mem)
            && rules_seen.contains(&RuleName::Unreachable),
        "{rules_seen:?}"
    );
    assert!(
        same.differences.is_empty(),
        "live and replay differ: {:#?}",
        same.differences
    );

    // What if the CPU threshold had been 99?
    let mut what_if = req.clone();
    what_if.rules.cpu.threshold = 99.0;
    what_if.follow_rule_changes = false;
    let fewer = replay(&db.db, &kafka_brokers()?, &topic, &what_if).await?;
    assert!(
        !fewer.incidents.iter().any(|i| i.rule == RuleName::Cpu),
        "no cpu incident above 99"
    );
    let removed_cpu = fewer
        .differences
        .iter()
        .filter(|d| matches!(d, Difference::Removed(i) if i.rule == RuleName::Cpu))
        .count();
    assert!(removed_cpu >= 1, "{:#?}", fewer.differences);
    assert!(
        fewer
            .differences
            .iter()
            .all(|d| matches!(d, Difference::Removed(i) if i.rule == RuleName::Cpu)),
        "only cpu changes: {:#?}",
        fewer.differences
    );
    fleet.shutdown().await;
    Ok(())
}
