//! The scheduler under a paused tokio clock: polls land exactly on the grid, a
//! machine never has two polls in flight, overruns skip grid instants instead of
//! queueing, a hanging machine does not delay the others, and registry changes
//! start and stop polling and publish the matching events.

use ingest::config::Shard;
use ingest::poller::PollOutcome;
use ingest::registry::{MachineRow, Registry};
use ingest::schedule::Grid;
use ingest::scheduler::{Anchor, PollContext, Prober, Scheduler, SchedulerStats, Target};
use proto_events::payload::StatusSample;
use proto_events::{Envelope, Event, MachineSpec};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, Semaphore};

/// A prober whose machines answer after a scripted delay (in tokio time), and that
/// records how many polls of each URL were in flight at once.
#[derive(Default)]
struct ScriptedProber {
    delay_ms: HashMap<String, u64>,
    in_flight: Mutex<HashMap<String, usize>>,
    max_in_flight: Mutex<HashMap<String, usize>>,
    calls: AtomicUsize,
}

impl Prober for ScriptedProber {
    fn poll<'a>(&'a self, url: &'a str) -> Pin<Box<dyn Future<Output = PollOutcome> + Send + 'a>> {
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            {
                let mut f = self.in_flight.lock().unwrap();
                let n = f.entry(url.to_owned()).or_default();
                *n += 1;
                let mut m = self.max_in_flight.lock().unwrap();
                let max = m.entry(url.to_owned()).or_default();
                *max = (*max).max(*n);
            }
            let delay = self.delay_ms.get(url).copied().unwrap_or(5);
            tokio::time::sleep(Duration::from_millis(delay)).await;
            *self.in_flight.lock().unwrap().get_mut(url).unwrap() -= 1;
            PollOutcome::Sampled(StatusSample {
                cpu: Some(10.0),
                mem: Some(20.0),
                disk: Some(30.0),
                uptime_s: Some(5),
                issues: vec![],
            })
        })
    }
}

const T0: i64 = 1_795_000_000_000; // a fixed wall-clock start, in ms

fn scheduler(
    prober: Arc<ScriptedProber>,
    permits: usize,
) -> (
    Scheduler,
    mpsc::Receiver<Envelope>,
    Arc<SchedulerStats>,
    Anchor,
) {
    let (tx, rx) = mpsc::channel(10_000);
    let stats = Arc::new(SchedulerStats::default());
    let anchor = Anchor::new(T0);
    let s = Scheduler::new(PollContext {
        prober,
        events: tx,
        permits: Arc::new(Semaphore::new(permits)),
        anchor,
        stats: stats.clone(),
    });
    (s, rx, stats, anchor)
}

fn target(name: &str, interval_ms: u64) -> Target {
    Target {
        name: name.into(),
        url: format!("http://{name}/status"),
        interval_ms,
    }
}

fn drain(rx: &mut mpsc::Receiver<Envelope>) -> Vec<Envelope> {
    let mut out = vec![];
    while let Ok(e) = rx.try_recv() {
        out.push(e);
    }
    out
}

fn times_of(events: &[Envelope], machine: &str) -> Vec<i64> {
    events
        .iter()
        .filter(|e| e.machine == machine)
        .map(|e| e.at.timestamp_millis())
        .collect()
}

#[tokio::test(start_paused = true)]
async fn polls_land_exactly_on_each_machines_grid() {
    let prober = Arc::new(ScriptedProber::default());
    let (mut s, mut rx, _stats, _) = scheduler(prober, 100);
    for name in ["web-1", "web-2", "db-1"] {
        s.upsert(target(name, 1_000));
    }
    tokio::time::sleep(Duration::from_millis(10_500)).await;
    let events = drain(&mut rx);
    for name in ["web-1", "web-2", "db-1"] {
        let grid = Grid::for_machine(name, 1_000);
        let times = times_of(&events, name);
        assert!(
            times.len() >= 10,
            "{name}: only {} polls in 10.5 s",
            times.len()
        );
        let first = grid.first_at_or_after(T0);
        for (k, t) in times.iter().enumerate() {
            assert_eq!(
                *t,
                first + k as i64 * 1_000,
                "{name}: poll {k} off the grid"
            );
        }
        // The event records when the request really started: on time here.
        for e in events.iter().filter(|e| e.machine == name) {
            let Event::MetricSampled(m) = &e.event else {
                panic!("unexpected {e:?}")
            };
            assert_eq!(m.timing.started_at, e.at, "{name}: started late");
            assert_eq!(m.timing.interval_ms, 1_000);
        }
    }
    // Different machines have different phases.
    let firsts: Vec<i64> = ["web-1", "web-2", "db-1"]
        .iter()
        .map(|n| times_of(&events, n)[0])
        .collect();
    assert!(
        firsts[0] != firsts[1] || firsts[1] != firsts[2],
        "all machines share one phase: {firsts:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn no_drift_over_a_simulated_day() {
    let prober = Arc::new(ScriptedProber::default());
    let (mut s, mut rx, _stats, _) = scheduler(prober, 10);
    s.upsert(target("web-1", 15 * 60_000));
    tokio::time::sleep(Duration::from_secs(24 * 3600)).await;
    let times = times_of(&drain(&mut rx), "web-1");
    assert_eq!(times.len(), 96, "a day of 15-minute polls");
    for pair in times.windows(2) {
        assert_eq!(pair[1] - pair[0], 15 * 60_000);
    }
}

#[tokio::test(start_paused = true)]
async fn a_slow_machine_never_has_two_polls_in_flight_and_skips_instead_of_queueing() {
    let mut prober = ScriptedProber::default();
    prober.delay_ms.insert("http://slow/status".into(), 2_500); // 2.5 intervals
    let prober = Arc::new(prober);
    let (mut s, mut rx, stats, _) = scheduler(prober.clone(), 10);
    s.upsert(target("slow", 1_000));
    s.upsert(target("fast", 1_000));
    tokio::time::sleep(Duration::from_millis(12_000)).await;
    let events = drain(&mut rx);
    assert_eq!(
        prober
            .max_in_flight
            .lock()
            .unwrap()
            .get("http://slow/status"),
        Some(&1)
    );
    let slow = times_of(&events, "slow");
    let grid = Grid::for_machine("slow", 1_000);
    assert!(
        slow.len() >= 3 && slow.len() <= 5,
        "slow polled {} times",
        slow.len()
    );
    for pair in slow.windows(2) {
        // Still on its grid, every third instant (two skipped behind each 2.5 s poll).
        assert_eq!((pair[1] - grid.phase_ms).rem_euclid(1_000), 0);
        assert_eq!(pair[1] - pair[0], 3_000);
    }
    assert!(stats.skipped.get() >= 6, "skipped instants are counted");
    // The slow machine did not hold the fast one back.
    assert!(times_of(&events, "fast").len() >= 11);
}

#[tokio::test(start_paused = true)]
async fn a_hanging_machine_does_not_delay_the_others() {
    let mut prober = ScriptedProber::default();
    prober
        .delay_ms
        .insert("http://stuck/status".into(), 3_600_000);
    let prober = Arc::new(prober);
    let (mut s, mut rx, _stats, _) = scheduler(prober, 10);
    s.upsert(target("stuck", 1_000));
    for i in 0..5 {
        s.upsert(target(&format!("ok-{i}"), 1_000));
    }
    tokio::time::sleep(Duration::from_millis(5_500)).await;
    let events = drain(&mut rx);
    assert!(times_of(&events, "stuck").is_empty());
    for i in 0..5 {
        let name = format!("ok-{i}");
        let mine: Vec<_> = events.iter().filter(|e| e.machine == name).collect();
        assert!(mine.len() >= 5, "{name}: {} polls", mine.len());
        for e in mine {
            let Event::MetricSampled(m) = &e.event else {
                panic!()
            };
            assert_eq!(
                m.timing.started_at, e.at,
                "{name} started late behind the stuck machine"
            );
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_poll_that_cannot_start_within_one_interval_is_skipped_and_counted() {
    let mut prober = ScriptedProber::default();
    prober
        .delay_ms
        .insert("http://hog/status".into(), 3_600_000);
    let prober = Arc::new(prober);
    // One permit, taken forever by the hog: the other machine can never start.
    let (mut s, mut rx, stats, _) = scheduler(prober, 1);
    s.upsert(target("hog", 1_000));
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    s.upsert(target("starved", 1_000));
    tokio::time::sleep(Duration::from_millis(5_000)).await;
    assert!(
        times_of(&drain(&mut rx), "starved").is_empty(),
        "no queued-up burst of polls"
    );
    assert!(stats.skipped.get() >= 3);
}

fn row(name: &str, url: &str, enabled: bool) -> MachineRow {
    MachineRow {
        name: name.into(),
        spec: MachineSpec {
            url: url.into(),
            enabled,
            interval_ms: Some(1_000),
            labels: Default::default(),
        },
    }
}

fn kinds(rx: &mut mpsc::Receiver<Envelope>) -> Vec<(String, &'static str)> {
    let mut k: Vec<_> = drain(rx)
        .into_iter()
        .map(|e| (e.machine.clone(), e.event.type_name()))
        .collect();
    k.sort();
    k
}

#[tokio::test(start_paused = true)]
async fn registry_changes_start_and_stop_polling_and_are_published() {
    let prober = Arc::new(ScriptedProber::default());
    let (mut s, mut rx, _stats, anchor) = scheduler(prober, 10);
    let (reg_tx, mut reg_rx) = mpsc::channel(100);
    let mut registry = Registry::new(Shard::ALL, 900_000, anchor);

    registry
        .sync(
            vec![
                row("a", "http://a/status", true),
                row("b", "http://b/status", true),
            ],
            &mut s,
            &reg_tx,
        )
        .await;
    assert_eq!(
        kinds(&mut reg_rx),
        vec![
            ("a".into(), "MachineRegistered"),
            ("b".into(), "MachineRegistered")
        ]
    );
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    let polled = drain(&mut rx);
    assert!(!times_of(&polled, "a").is_empty() && !times_of(&polled, "b").is_empty());

    // a moves, b is disabled, c arrives.
    let rows = || {
        vec![
            row("a", "http://a2/status", true),
            row("b", "http://b/status", false),
            row("c", "http://c/status", true),
        ]
    };
    registry.sync(rows(), &mut s, &reg_tx).await;
    assert_eq!(
        kinds(&mut reg_rx),
        vec![
            ("a".into(), "MachineChanged"),
            ("b".into(), "MachineChanged"),
            ("c".into(), "MachineRegistered")
        ]
    );
    // Nothing changed: nothing published.
    registry.sync(rows(), &mut s, &reg_tx).await;
    assert!(kinds(&mut reg_rx).is_empty());
    tokio::time::sleep(Duration::from_millis(3_000)).await;
    let polled = drain(&mut rx);
    assert!(
        times_of(&polled, "b").is_empty(),
        "a disabled machine is not polled"
    );
    assert!(!times_of(&polled, "c").is_empty());

    // c is deleted from the registry.
    registry
        .sync(
            vec![
                row("a", "http://a2/status", true),
                row("b", "http://b/status", false),
            ],
            &mut s,
            &reg_tx,
        )
        .await;
    assert_eq!(kinds(&mut reg_rx), vec![("c".into(), "MachineRemoved")]);
    let mut names: Vec<_> = s.names().map(str::to_owned).collect();
    names.sort();
    assert_eq!(names, vec!["a".to_owned()]);
}

#[test]
fn shards_split_the_fleet_with_no_machine_twice_and_none_forgotten() {
    let shards: Vec<Shard> = (0..3)
        .map(|i| Shard::parse(&format!("{i}/3")).unwrap())
        .collect();
    for i in 0..3000 {
        let name = format!("web-{i}");
        assert_eq!(shards.iter().filter(|s| s.owns(&name)).count(), 1, "{name}");
    }
    assert!(
        Shard::parse("3/3").is_err() && Shard::parse("x").is_err() && Shard::parse("0/0").is_err()
    );
}

#[tokio::test(start_paused = true)]
async fn a_machine_with_a_non_http_url_is_not_polled_and_not_announced() {
    let prober = Arc::new(ScriptedProber::default());
    let (mut s, mut rx, _stats, anchor) = scheduler(prober, 10);
    let (reg_tx, mut reg_rx) = mpsc::channel(100);
    let mut registry = Registry::new(Shard::ALL, 1_000, anchor);
    registry
        .sync(
            vec![
                row("ftp", "ftp://host/status", true),
                row("nohost", "http://", true),
                row("ok", "https://ok/status", true),
            ],
            &mut s,
            &reg_tx,
        )
        .await;
    assert_eq!(kinds(&mut reg_rx), vec![("ok".into(), "MachineRegistered")]);
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    let polled = drain(&mut rx);
    assert!(times_of(&polled, "ftp").is_empty() && times_of(&polled, "nohost").is_empty());
    assert!(ingest::registry::check_url("file:///etc/passwd").is_err());
    assert!(ingest::registry::check_url("http://10.0.0.1:8080/status").is_ok());
}

/// Answers with the uptimes it is given, in order.
struct UptimeProber(Mutex<Vec<u64>>);

impl Prober for UptimeProber {
    fn poll<'a>(&'a self, _url: &'a str) -> Pin<Box<dyn Future<Output = PollOutcome> + Send + 'a>> {
        let uptime = {
            let mut v = self.0.lock().unwrap();
            if v.len() > 1 {
                v.remove(0)
            } else {
                v[0]
            }
        };
        Box::pin(async move {
            PollOutcome::Sampled(StatusSample {
                cpu: Some(1.0),
                mem: None,
                disk: None,
                uptime_s: Some(uptime),
                issues: vec![],
            })
        })
    }
}

#[tokio::test(start_paused = true)]
async fn a_reboot_is_flagged_when_uptime_goes_down() {
    let (tx, mut rx) = mpsc::channel(100);
    let mut s = Scheduler::new(PollContext {
        prober: Arc::new(UptimeProber(Mutex::new(vec![100, 200, 50, 60]))),
        events: tx,
        permits: Arc::new(Semaphore::new(1)),
        anchor: Anchor::new(T0),
        stats: Arc::new(SchedulerStats::default()),
    });
    s.upsert(target("r", 1_000));
    tokio::time::sleep(Duration::from_millis(4_100)).await;
    let flags: Vec<bool> = drain(&mut rx)
        .iter()
        .map(|e| match &e.event {
            Event::MetricSampled(m) => m.rebooted,
            _ => panic!("unexpected {e:?}"),
        })
        .collect();
    assert_eq!(&flags[..4], &[false, false, true, false]);
}
