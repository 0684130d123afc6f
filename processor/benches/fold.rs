//! Benchmarks of the pure parts, without a harness dependency (plain `main`):
//! - fold ns/event over 10,000 machines (target ≤ 50 ns/event), and the envelope
//!   decode a log replay adds per event;
//! - backtest history lines/s over a generated file of ≥ 5 million lines
//!   (target ≥ 1.5 M lines/s on one core).
//!
//! Run: `cargo bench -p processor --bench fold` (set `BENCH_LINES` to change the file size).

use chrono::{TimeZone, Utc};
use processor::fold::Fold;
use proto_events::{Envelope, Event, MetricSampled, PollTiming, RuleSet};
use std::io::Write;
use std::time::Instant;
use uuid::Uuid;

fn fold_bench(label: &str, mem_hot_every: usize, cpu_hot_every: usize) {
    let machines = 10_000usize;
    let rounds = 100usize;
    let base = Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).single().unwrap();
    let names: Vec<String> = (0..machines).map(|m| format!("web-{m:05}")).collect();
    let mut events = Vec::with_capacity(machines * rounds);
    for k in 0..rounds {
        let at = base + chrono::Duration::minutes(15 * k as i64);
        for (m, name) in names.iter().enumerate() {
            // Mostly calm, some machines hot: every rule does real work.
            let hot = (m + k) % cpu_hot_every == 0;
            events.push(Envelope {
                event_id: Uuid::from_u128(((m as u128) << 32) | k as u128),
                machine: name.clone(),
                at,
                event: Event::MetricSampled(MetricSampled {
                    timing: PollTiming {
                        interval_ms: 900_000,
                        started_at: at,
                        latency_ms: 3,
                    },
                    cpu: Some(if hot { 97.0 } else { 30.0 }),
                    mem: Some(if m % mem_hot_every == 0 { 93.0 } else { 40.0 }),
                    disk: Some(50.0),
                    uptime_s: Some(1000),
                    issues: vec![],
                    rebooted: false,
                }),
            });
        }
    }
    let mut best = f64::MAX;
    let mut emitted_total = 0;
    for _ in 0..5 {
        let mut fold = Fold::new(RuleSet::default());
        let mut out = Vec::with_capacity(1024);
        let t = Instant::now();
        for e in &events {
            fold.apply(e, &mut out);
            emitted_total += out.len();
            out.clear();
        }
        best = best.min(t.elapsed().as_nanos() as f64 / events.len() as f64);
    }
    println!("fold ({label}): {machines} machines x {rounds} polls = {} events; best of 5: {best:.1} ns/event ({emitted_total} incident events emitted over the runs)", events.len());
    // What a log replay adds per event: decoding the wire form.
    let wire: Vec<Vec<u8>> = events.iter().take(200_000).map(Envelope::encode).collect();
    let mut best = f64::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        let mut ok = 0usize;
        for w in &wire {
            ok += usize::from(Envelope::decode(w).is_ok());
        }
        assert_eq!(ok, wire.len());
        best = best.min(t.elapsed().as_nanos() as f64 / wire.len() as f64);
    }
    println!(
        "decode ({label}): {} envelopes of {} bytes; best of 3: {best:.1} ns/event",
        wire.len(),
        wire.first().map_or(0, Vec::len)
    );
}

fn history_bench() {
    let lines: usize = std::env::var("BENCH_LINES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000_000);
    let path = std::env::temp_dir().join(format!("bench-history-{lines}.jsonl"));
    if !path.exists() {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        let machines = 10_000;
        let base = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).single().unwrap();
        for i in 0..lines {
            let (k, m) = (i / machines, i % machines);
            let at = (base + chrono::Duration::minutes(15 * k as i64))
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            if (m + k) % 53 == 0 {
                writeln!(
                    f,
                    r#"{{"machine":"web-{m}","at":"{at}","error":"timeout"}}"#
                )
                .unwrap();
            } else {
                let cpu = if (m + k) % 19 == 0 { 97 } else { 20 + (m % 50) };
                writeln!(f, r#"{{"machine":"web-{m}","at":"{at}","cpu":{cpu},"mem":"{}%","disk":"43%","uptime":"1d 2h 37m 6s"}}"#, 40 + (k % 55)).unwrap();
            }
        }
        f.flush().unwrap();
    }
    let size = std::fs::metadata(&path).unwrap().len();
    let t = Instant::now();
    let file = std::fs::File::open(&path).unwrap();
    let mut sink = std::io::sink();
    let mut errors = std::io::sink();
    let summary = processor::backtest::run_history(
        std::io::BufReader::with_capacity(1 << 20, file),
        RuleSet::default(),
        900_000,
        &mut sink,
        &mut errors,
        |_| {},
    )
    .unwrap();
    let secs = t.elapsed().as_secs_f64();
    println!(
        "history: {} lines ({:.0} MB) in {secs:.2} s = {:.2} M lines/s, {} incidents, {} skipped",
        summary.lines,
        size as f64 / 1e6,
        summary.lines as f64 / secs / 1e6,
        summary.incidents,
        summary.skipped
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    fold_bench(
        "busy: 20% of machines over the mem threshold, cpu spikes on 1 poll in 17",
        5,
        17,
    );
    fold_bench(
        "calm: 1% over the mem threshold, cpu spikes on 1 poll in 500",
        100,
        500,
    );
    history_bench();
}
