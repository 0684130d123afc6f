//! Deterministic machine-event streams for processor tests, their expected
//! incidents (computed by the pure fold), and helpers to produce them and to read
//! the processor's results back from MySQL.

use chrono::{TimeZone, Utc};
use processor::fold::Fold;
use processor::incidents::IncidentBook;
use proto_events::{
    Envelope, Event, FailureReason, MetricSampled, PollFailed, PollTiming, RuleSet,
};
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use sqlx::{MySqlPool, Row};
use std::time::Duration;
use uuid::Uuid;

/// One machine's polls over `polls` intervals of 15 minutes, mixing every rule:
/// memory held high, CPU spikes, disk creeping up, outages. Deterministic in
/// `(machine, polls)`; event ids too.
pub fn machine_stream(machine: usize, polls: usize) -> Vec<Envelope> {
    let base = Utc
        .with_ymd_and_hms(2026, 11, 1, 0, 0, 0)
        .single()
        .unwrap_or_default();
    let name = format!("m-{machine:03}");
    let mut out = Vec::with_capacity(polls);
    for k in 0..polls {
        let at = base + chrono::Duration::minutes(15 * k as i64);
        let timing = PollTiming {
            interval_ms: 900_000,
            started_at: at,
            latency_ms: 3,
        };
        let phase = (k + machine * 7) % 24;
        let event_id = Uuid::from_u128(((machine as u128) << 64) | k as u128);
        let event = if (machine + k) % 11 == 0 || (phase >= 20 && machine % 3 == 0) {
            Event::PollFailed(PollFailed {
                timing,
                reason: FailureReason::Timeout,
                detail: "timeout".into(),
            })
        } else {
            let cpu = if (k * 13 + machine) % 9 == 0 {
                92.0 + (k % 5) as f64
            } else {
                30.0 + (k % 20) as f64
            };
            let mem = if (4..12).contains(&phase) {
                91.0 + (k % 4) as f64
            } else {
                50.0
            };
            let disk = if machine % 4 == 0 {
                (80.0 + k as f64 * 0.5).min(99.0)
            } else {
                40.0
            };
            Event::MetricSampled(MetricSampled {
                timing,
                cpu: Some(cpu),
                mem: Some(mem),
                disk: Some(disk),
                uptime_s: Some(k as u64 * 900),
                issues: vec![],
                rebooted: false,
            })
        };
        out.push(Envelope {
            event_id,
            machine: name.clone(),
            at,
            event,
        });
    }
    out
}

/// Streams of `machines` machines, interleaved poll by poll (the order a live
/// fleet produces them in).
pub fn fleet_stream(machines: usize, polls: usize) -> Vec<Envelope> {
    let per: Vec<Vec<Envelope>> = (0..machines).map(|m| machine_stream(m, polls)).collect();
    let mut out = Vec::with_capacity(machines * polls);
    for k in 0..polls {
        for s in &per {
            out.push(s[k].clone());
        }
    }
    out
}

/// The incidents the fold produces for `events` under the default rules, as
/// comparable rows.
pub fn expected_incidents(events: &[Envelope]) -> Vec<IncidentRow> {
    let mut fold = Fold::new(RuleSet::default());
    let mut book = IncidentBook::new();
    let mut out = vec![];
    for e in events {
        out.clear();
        fold.apply(e, &mut out);
        for o in &out {
            book.apply(o);
        }
    }
    let mut rows: Vec<IncidentRow> = book
        .records()
        .map(|r| IncidentRow {
            id: r.id.to_string(),
            machine: r.machine.clone(),
            rule: r.rule.as_str().to_owned(),
            started_at: r.started_at.timestamp_millis(),
            opened_at: r.opened_at.timestamp_millis(),
            resolved_at: r.resolved_at.map(|t| t.timestamp_millis()),
            peak: r.peak,
            last_value: r.last_value,
        })
        .collect();
    rows.sort_by(|a, b| a.id.cmp(&b.id));
    rows
}

/// An incident as compared by the tests.
#[derive(Debug, Clone, PartialEq)]
pub struct IncidentRow {
    /// Id.
    pub id: String,
    /// Machine.
    pub machine: String,
    /// Rule.
    pub rule: String,
    /// Run start, ms.
    pub started_at: i64,
    /// Opened, ms.
    pub opened_at: i64,
    /// Resolved, ms.
    pub resolved_at: Option<i64>,
    /// Peak.
    pub peak: Option<f64>,
    /// Last value.
    pub last_value: Option<f64>,
}

/// The incidents table, sorted by id.
pub async fn incident_rows(pool: &MySqlPool) -> anyhow::Result<Vec<IncidentRow>> {
    let rows = sqlx::query("SELECT id, machine, rule, started_at, opened_at, resolved_at, peak, last_value FROM incidents ORDER BY id")
        .fetch_all(pool)
        .await?;
    rows.iter()
        .map(|r| {
            let ms = |t: chrono::NaiveDateTime| t.and_utc().timestamp_millis();
            Ok(IncidentRow {
                id: r.try_get("id")?,
                machine: r.try_get("machine")?,
                rule: r.try_get("rule")?,
                started_at: ms(r.try_get("started_at")?),
                opened_at: ms(r.try_get("opened_at")?),
                resolved_at: r
                    .try_get::<Option<chrono::NaiveDateTime>, _>("resolved_at")?
                    .map(ms),
                peak: r.try_get("peak")?,
                last_value: r.try_get("last_value")?,
            })
        })
        .collect()
}

/// Total of committed offsets over all partitions of `group` (= messages processed).
pub async fn committed_total(pool: &MySqlPool, group: &str) -> anyhow::Result<i64> {
    let v: Option<i64> = sqlx::query_scalar("SELECT CAST(COALESCE(SUM(next_offset), 0) AS SIGNED) FROM processor_offsets WHERE consumer_group = ?")
        .bind(group)
        .fetch_one(pool)
        .await?;
    Ok(v.unwrap_or(0))
}

/// Produces `events` keyed by machine, in order, waiting for every delivery.
pub async fn produce(brokers: &str, topic: &str, events: &[Envelope]) -> anyhow::Result<()> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "2")
        .create()?;
    let payloads: Vec<(String, Vec<u8>)> = events
        .iter()
        .map(|e| (e.machine.clone(), e.encode()))
        .collect();
    let sends = payloads.iter().map(|(key, payload)| {
        producer.send(
            FutureRecord::to(topic)
                .key(key.as_str())
                .payload(payload.as_slice()),
            Duration::from_secs(30),
        )
    });
    for r in futures::future::join_all(sends).await {
        r.map_err(|(e, _)| anyhow::anyhow!("produce failed: {e}"))?;
    }
    Ok(())
}
