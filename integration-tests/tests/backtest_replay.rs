//! Live == replay: the live pipeline runs a fake-fleet scenario; a backtest of the
//! same range with the same rules over the recorded log reproduces exactly the
//! incidents the processor recorded (empty diff). A what-if with a higher CPU
//! threshold shows the CPU incidents that would not have opened.

use integration_tests::fleet::{Behaviour, Scenario};
use integration_tests::live::{record_live_run, LiveRun};
use integration_tests::services::kafka_brokers;
use processor::replay::{replay, Difference, ReplayRequest};
use proto_events::RuleName;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_the_recorded_log_with_the_live_rules_gives_an_empty_diff() -> anyhow::Result<()>
{
    let rules = [("RULE_MEM_FOR", "2s"), ("RULE_UNREACHABLE_FOR", "1s")];
    let live = record_live_run(
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
        &rules,
        3,
    )
    .await?;
    let LiveRun {
        fleet,
        db,
        topic,
        processor,
        started,
    } = live;
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
