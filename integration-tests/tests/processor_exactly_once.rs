//! The processor against the real broker and MariaDB: killed at several points
//! while events stream, restarted, it ends with exactly the incidents of an
//! uninterrupted fold; two instances in one group split the partitions and a
//! rebalance neither loses nor duplicates an incident; bad messages are skipped.

use integration_tests::services::{
    create_topic, eventually, fresh_database, fresh_topics, kafka_brokers,
};
use integration_tests::spawn::{spawn_processor, spawn_processor_with_stats};
use integration_tests::streams::{
    committed_total, expected_incidents, fleet_stream, incident_rows, produce,
};
use std::sync::atomic::Ordering;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_and_restarted_mid_stream_it_ends_with_exactly_the_uninterrupted_incidents(
) -> anyhow::Result<()> {
    let db = fresh_database().await?;
    let (topic, incidents_topic) = fresh_topics();
    create_topic(&topic, 2).await?;
    create_topic(&incidents_topic, 2).await?;
    let group = format!("g-{}", db.name);
    let brokers = kafka_brokers()?;
    let events = fleet_stream(12, 60); // 720 events, 15-minute polls: every rule fires
    let expected = expected_incidents(&events);
    assert!(
        expected.iter().any(|i| i.rule == "mem")
            && expected.iter().any(|i| i.rule == "unreachable")
    );
    assert!(
        expected.iter().any(|i| i.resolved_at.is_none())
            && expected.iter().any(|i| i.resolved_at.is_some())
    );

    // Small batches: many commits, so the kills land between and inside them.
    let extra = [("PROCESSOR_BATCH_MAX", "7")];
    let chunks: Vec<&[proto_events::Envelope]> = events.chunks(events.len() / 4 + 1).collect();
    let mut processed_before = 0;
    for (round, chunk) in chunks.iter().enumerate() {
        produce(&brokers, &topic, chunk).await?;
        let p = spawn_processor(&db.url, &topic, &incidents_topic, &group, &extra).await?;
        // Let it get somewhere (beyond where the last instance stopped), then crash it.
        let target = processed_before + 30;
        eventually(
            Duration::from_secs(60),
            "progress before the kill",
            || async { Ok((committed_total(&db.pool, &group).await? >= target).then_some(())) },
        )
        .await?;
        tokio::time::sleep(Duration::from_millis(15 * round as u64)).await;
        p.abort();
        processed_before = committed_total(&db.pool, &group).await?;
    }
    // A last, uninterrupted instance finishes the log.
    let p = spawn_processor(&db.url, &topic, &incidents_topic, &group, &extra).await?;
    let total = events.len() as i64;
    eventually(Duration::from_secs(90), "all events processed", || async {
        Ok((committed_total(&db.pool, &group).await? == total).then_some(()))
    })
    .await?;
    p.stop().await?;

    let actual = incident_rows(&db.pool).await?;
    assert_eq!(
        actual.len(),
        expected.len(),
        "incident count differs from the uninterrupted fold"
    );
    for (a, e) in actual.iter().zip(&expected) {
        assert_eq!(a, e);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_split_partitions_and_a_rebalance_neither_loses_nor_duplicates(
) -> anyhow::Result<()> {
    let db = fresh_database().await?;
    let (topic, incidents_topic) = fresh_topics();
    create_topic(&topic, 4).await?;
    create_topic(&incidents_topic, 4).await?;
    let group = format!("g-{}", db.name);
    let brokers = kafka_brokers()?;
    let events = fleet_stream(16, 48);
    let expected = expected_incidents(&events);
    let (first, rest) = events.split_at(events.len() / 3);
    let (second, third) = rest.split_at(rest.len() / 2);
    let extra = [("PROCESSOR_BATCH_MAX", "11")];

    produce(&brokers, &topic, first).await?;
    let (a, a_stats) =
        spawn_processor_with_stats(&db.url, &topic, &incidents_topic, &group, &extra).await?;
    eventually(Duration::from_secs(60), "instance A processing", || async {
        Ok((committed_total(&db.pool, &group).await? > 0).then_some(()))
    })
    .await?;
    // B joins: the group rebalances and the partitions are split.
    let (b, b_stats) =
        spawn_processor_with_stats(&db.url, &topic, &incidents_topic, &group, &extra).await?;
    eventually(
        Duration::from_secs(60),
        "the partitions split between A and B",
        || async {
            let (pa, pb) = (
                a_stats.partitions_assigned.load(Ordering::Relaxed),
                b_stats.partitions_assigned.load(Ordering::Relaxed),
            );
            Ok((pa > 0 && pb > 0 && pa + pb == 4).then_some(()))
        },
    )
    .await?;
    produce(&brokers, &topic, second).await?;
    eventually(
        Duration::from_secs(60),
        "instance B folding events of its own partitions",
        || async { Ok((b_stats.events_folded.load(Ordering::Relaxed) > 0).then_some(())) },
    )
    .await?;
    // A leaves: a second rebalance hands everything to B, mid-stream.
    produce(&brokers, &topic, third).await?;
    let folded_by_a = a_stats.events_folded.load(Ordering::Relaxed);
    a.stop().await?;
    assert!(folded_by_a > 0, "A folded nothing");
    let total = events.len() as i64;
    eventually(
        Duration::from_secs(90),
        "all events processed after the rebalance",
        || async { Ok((committed_total(&db.pool, &group).await? == total).then_some(())) },
    )
    .await?;
    b.stop().await?;
    let folded = folded_by_a + b_stats.events_folded.load(Ordering::Relaxed);
    assert!(
        folded >= total as u64,
        "every event folded at least once ({folded} of {total})"
    );
    assert_eq!(incident_rows(&db.pool).await?, expected);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_message_is_skipped_not_a_crashed_consumer() -> anyhow::Result<()> {
    let db = fresh_database().await?;
    let (topic, incidents_topic) = fresh_topics();
    create_topic(&topic, 1).await?;
    create_topic(&incidents_topic, 1).await?;
    let group = format!("g-{}", db.name);
    let brokers = kafka_brokers()?;
    let events = fleet_stream(1, 10);
    produce(&brokers, &topic, &events[..5]).await?;
    // Garbage and a future schema version in the middle of the stream.
    let producer: rdkafka::producer::FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()?;
    let v9 = String::from_utf8(events[5].encode())?.replace("\"version\":1", "\"version\":9");
    for payload in ["not json at all", v9.as_str()] {
        producer
            .send(
                rdkafka::producer::FutureRecord::to(&topic)
                    .key("m-000")
                    .payload(payload),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| anyhow::anyhow!("{e}"))?;
    }
    produce(&brokers, &topic, &events[5..]).await?;
    let p = spawn_processor(&db.url, &topic, &incidents_topic, &group, &[]).await?;
    eventually(
        Duration::from_secs(60),
        "every message consumed, bad ones included",
        || async { Ok((committed_total(&db.pool, &group).await? == 12).then_some(())) },
    )
    .await?;
    p.stop().await?;
    let samples: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM samples")
        .fetch_one(&db.pool)
        .await?;
    assert_eq!(
        samples, 10,
        "the good events around the bad ones were all folded"
    );
    assert_eq!(incident_rows(&db.pool).await?, expected_incidents(&events));
    // The time -> offset index: first offset of each hour of event time (polls every
    // 15 minutes from 00:00; the two bad messages sit at offsets 5 and 6).
    let index: Vec<(String, i64)> =
        sqlx::query_as("SELECT DATE_FORMAT(bucket_start, '%H:%i'), first_offset FROM event_time_index WHERE topic = ? ORDER BY bucket_start")
            .bind(&topic)
            .fetch_all(&db.pool)
            .await?;
    assert_eq!(
        index,
        vec![
            ("00:00".to_owned(), 0),
            ("01:00".to_owned(), 4),
            ("02:00".to_owned(), 10)
        ]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resolution_and_a_new_opening_in_one_batch_both_land() -> anyhow::Result<()> {
    use proto_events::{Envelope, Event, MetricSampled, PollTiming};
    let db = fresh_database().await?;
    let (topic, incidents_topic) = fresh_topics();
    create_topic(&topic, 1).await?;
    create_topic(&incidents_topic, 1).await?;
    let group = format!("g-{}", db.name);
    let base =
        chrono::DateTime::parse_from_rfc3339("2026-11-23T00:00:00Z")?.with_timezone(&chrono::Utc);
    // cpu breaches, clears, breaches again: two incidents, the second opened in the
    // same batch (and transaction) that resolves the first.
    let events: Vec<Envelope> = [99.0, 10.0, 99.0, 10.0, 99.0]
        .iter()
        .enumerate()
        .map(|(k, cpu)| {
            let at = base + chrono::Duration::minutes(15 * k as i64);
            Envelope {
                event_id: uuid::Uuid::from_u128(k as u128 + 1),
                machine: "flappy".into(),
                at,
                event: Event::MetricSampled(MetricSampled {
                    timing: PollTiming {
                        interval_ms: 900_000,
                        started_at: at,
                        latency_ms: 1,
                    },
                    cpu: Some(*cpu),
                    mem: Some(10.0),
                    disk: Some(10.0),
                    uptime_s: None,
                    issues: vec![],
                    rebooted: false,
                }),
            }
        })
        .collect();
    let brokers = kafka_brokers()?;
    produce(&brokers, &topic, &events[..1]).await?;
    let p = spawn_processor(&db.url, &topic, &incidents_topic, &group, &[]).await?;
    eventually(
        Duration::from_secs(60),
        "the first event committed",
        || async { Ok((committed_total(&db.pool, &group).await? == 1).then_some(())) },
    )
    .await?;
    produce(&brokers, &topic, &events[1..]).await?; // one batch: clear, breach, clear, breach
    eventually(Duration::from_secs(60), "every event committed", || async {
        Ok((committed_total(&db.pool, &group).await? == 5).then_some(()))
    })
    .await?;
    p.stop().await?;
    let rows = incident_rows(&db.pool).await?;
    assert_eq!(rows.len(), 3, "{rows:#?}");
    assert_eq!(rows, expected_incidents(&events));
    Ok(())
}
