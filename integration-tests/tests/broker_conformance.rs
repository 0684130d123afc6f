//! Broker conformance: the Kafka behaviour this project relies on, checked against
//! the broker the tests run with (tansu here, Apache Kafka in production). A broker
//! that breaks any of it fails here, loudly, instead of corrupting results:
//! idempotent produce with `acks=all`, per-key order, consumer-group commit and
//! resume, a rebalance that splits partitions, and replay from the start.

use integration_tests::services::{create_topic, kafka_brokers};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

fn topic_name(what: &str) -> String {
    format!("conformance-{what}-{}", uuid::Uuid::new_v4().simple())
}

fn producer() -> anyhow::Result<FutureProducer> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", kafka_brokers()?)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "1")
        .create()?)
}

fn consumer(group: &str) -> anyhow::Result<StreamConsumer> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", kafka_brokers()?)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "10")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500")
        .create()?)
}

async fn produce(topic: &str, n: usize, keys: usize) -> anyhow::Result<()> {
    let p = producer()?;
    let sends = (0..n).map(|i| {
        let key = format!("k{}", i % keys);
        let payload = format!("{}:{i}", i % keys);
        let p = p.clone();
        let topic = topic.to_owned();
        async move {
            p.send(
                FutureRecord::to(&topic).key(&key).payload(&payload),
                Duration::from_secs(20),
            )
            .await
            .map_err(|(e, _)| anyhow::anyhow!("produce failed: {e}"))
        }
    });
    for r in futures::future::join_all(sends).await {
        r?;
    }
    Ok(())
}

/// Reads `n` messages, returning (partition, offset, payload).
async fn read(c: &StreamConsumer, n: usize) -> anyhow::Result<Vec<(i32, i64, String)>> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let m = tokio::time::timeout(Duration::from_secs(30), c.recv())
            .await
            .map_err(|_| {
                anyhow::anyhow!("only {} of {n} messages arrived within 30s", out.len())
            })??;
        out.push((
            m.partition(),
            m.offset(),
            String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
        ));
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_produce_keeps_per_key_order_and_replays_from_the_start() -> anyhow::Result<()> {
    let topic = topic_name("order");
    create_topic(&topic, 3).await?;
    produce(&topic, 300, 7).await?;
    for round in 0..2 {
        // A brand-new group reads everything from the beginning: a replay.
        let c = consumer(&format!("{topic}-replay-{round}"))?;
        c.subscribe(&[&topic])?;
        let got = read(&c, 300).await?;
        let mut last_seq: HashMap<String, i64> = HashMap::new();
        for (_, _, payload) in &got {
            let (key, seq) = payload.split_once(':').unwrap_or_default();
            let seq: i64 = seq.parse()?;
            let prev = last_seq.insert(key.to_owned(), seq);
            assert!(
                prev.is_none_or(|p| p < seq),
                "key {key}: {seq} after {prev:?}: order broken"
            );
        }
        let distinct: BTreeSet<_> = got.iter().map(|(_, _, p)| p.clone()).collect();
        assert_eq!(
            distinct.len(),
            300,
            "duplicates or losses in replay {round}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_resumes_from_its_committed_offsets() -> anyhow::Result<()> {
    let topic = topic_name("resume");
    create_topic(&topic, 1).await?;
    produce(&topic, 100, 1).await?;
    let group = format!("{topic}-g");
    {
        let c = consumer(&group)?;
        c.subscribe(&[&topic])?;
        let got = read(&c, 40).await?;
        let (p, last, _) = got[39].clone();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&topic, p, Offset::Offset(last + 1))?;
        c.commit(&tpl, CommitMode::Sync)?;
        c.unsubscribe();
    }
    let c = consumer(&group)?;
    c.subscribe(&[&topic])?;
    let got = read(&c, 60).await?;
    assert_eq!(
        got[0].1, 40,
        "resumed at offset {} instead of the committed 40",
        got[0].1
    );
    assert_eq!(got[59].2, "0:99");
    // Positioning partitions at offsets kept in MySQL (the processor's exactly-once
    // mechanism) is exercised end to end by tests/processor_exactly_once.rs.
    Ok(())
}

fn assigned(c: &BaseConsumer) -> BTreeSet<i32> {
    c.assignment()
        .map(|tpl| tpl.elements().iter().map(|e| e.partition()).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_member_triggers_a_rebalance_that_splits_the_partitions() -> anyhow::Result<()> {
    let topic = topic_name("rebalance");
    create_topic(&topic, 4).await?;
    let group = format!("{topic}-g");
    let make = || -> anyhow::Result<BaseConsumer> {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", kafka_brokers()?)
            .set("group.id", &group)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "500")
            .create()?;
        c.subscribe(&[&topic])?;
        Ok(c)
    };
    let a = make()?;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while assigned(&a).len() != 4 {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "first member never got all 4 partitions: {:?}",
            assigned(&a)
        );
        a.poll(Duration::from_millis(100));
    }
    let b = make()?;
    let deadline = std::time::Instant::now() + Duration::from_secs(45);
    loop {
        a.poll(Duration::from_millis(50));
        b.poll(Duration::from_millis(50));
        let (pa, pb) = (assigned(&a), assigned(&b));
        if !pa.is_empty() && !pb.is_empty() && pa.len() + pb.len() == 4 {
            assert!(
                pa.is_disjoint(&pb),
                "both members own a partition: {pa:?} {pb:?}"
            );
            break;
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "no rebalance within 45s: a={pa:?} b={pb:?}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_consumers_in_tasks_rebalance_too() -> anyhow::Result<()> {
    let topic = topic_name("stream-rebalance");
    create_topic(&topic, 4).await?;
    produce(&topic, 40, 8).await?;
    let group = format!("{topic}-g");
    // A custom context, as the processor has one.
    struct Ctx;
    impl rdkafka::ClientContext for Ctx {}
    impl rdkafka::consumer::ConsumerContext for Ctx {}
    let spawn = |name: &'static str| -> anyhow::Result<(
        std::sync::Arc<StreamConsumer<Ctx>>,
        tokio::task::JoinHandle<()>,
    )> {
        let c: StreamConsumer<Ctx> = ClientConfig::new()
            .set("bootstrap.servers", kafka_brokers()?)
            .set("group.id", &group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", "10")
            .set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "1000")
            .set("max.poll.interval.ms", "20000")
            .create_with_context(Ctx)?;
        let c = std::sync::Arc::new(c);
        c.subscribe(&[&topic])?;
        let c2 = c.clone();
        let h = tokio::spawn(async move {
            loop {
                tokio::select! {
                    m = c2.recv() => match m {
                        Ok(m) => tracing::debug!(name, partition = m.partition(), "message"),
                        Err(e) => tracing::warn!(name, error = %e, "recv error"),
                    },
                    _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                }
            }
        });
        Ok((c, h))
    };
    let parts = |c: &StreamConsumer<Ctx>| -> BTreeSet<i32> {
        c.assignment()
            .map(|tpl| tpl.elements().iter().map(|e| e.partition()).collect())
            .unwrap_or_default()
    };
    let (a, ha) = spawn("a")?;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while parts(&a).len() != 4 {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "a never got 4 partitions"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (b, hb) = spawn("b")?;
    let deadline = std::time::Instant::now() + Duration::from_secs(45);
    loop {
        let (pa, pb) = (parts(&a), parts(&b));
        if !pa.is_empty() && !pb.is_empty() && pa.len() + pb.len() == 4 {
            assert!(pa.is_disjoint(&pb));
            break;
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "no rebalance within 45s: a={pa:?} b={pb:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ha.abort();
    hb.abort();
    Ok(())
}
