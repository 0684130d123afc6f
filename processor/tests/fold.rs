//! Given/when/then tests of the incident fold against shared/SPEC.md §4, and
//! property tests of its invariants. Pure: no runtime, no I/O.

use chrono::{TimeZone, Utc};
use processor::fold::{incident_id, Applied, Fold};
use processor::incidents::{IncidentBook, IncidentRecord};
use proto_events::*;
use uuid::Uuid;

const MIN: u64 = 60_000;

/// `"00:15"` → 2026-11-23T00:15:00Z; `"1d00:15"` adds days.
fn at(hhmm: &str) -> Timestamp {
    let (days, hm) = match hhmm.split_once('d') {
        Some((d, rest)) => (d.parse::<i64>().unwrap(), rest),
        None => (0, hhmm),
    };
    let (h, m) = hm.split_once(':').unwrap();
    Utc.with_ymd_and_hms(2026, 11, 23, 0, 0, 0)
        .single()
        .unwrap()
        + chrono::Duration::days(days)
        + chrono::Duration::hours(h.parse().unwrap())
        + chrono::Duration::minutes(m.parse().unwrap())
}

fn timing(t: Timestamp) -> PollTiming {
    PollTiming {
        interval_ms: 15 * MIN,
        started_at: t,
        latency_ms: 5,
    }
}

fn sample(
    machine: &str,
    t: &str,
    cpu: Option<f64>,
    mem: Option<f64>,
    disk: Option<f64>,
) -> Envelope {
    let at = at(t);
    Envelope {
        event_id: Uuid::new_v4(),
        machine: machine.into(),
        at,
        event: Event::MetricSampled(MetricSampled {
            timing: timing(at),
            cpu,
            mem,
            disk,
            uptime_s: None,
            issues: vec![],
            rebooted: false,
        }),
    }
}

fn cpu(t: &str, v: f64) -> Envelope {
    sample("web-1", t, Some(v), Some(10.0), Some(10.0))
}
fn mem(t: &str, v: f64) -> Envelope {
    sample("web-1", t, Some(10.0), Some(v), Some(10.0))
}
fn disk(t: &str, v: f64) -> Envelope {
    sample("web-1", t, Some(10.0), Some(10.0), Some(v))
}
fn failed(t: &str) -> Envelope {
    let at = at(t);
    Envelope {
        event_id: Uuid::new_v4(),
        machine: "web-1".into(),
        at,
        event: Event::PollFailed(PollFailed {
            timing: timing(at),
            reason: FailureReason::Timeout,
            detail: "timed out".into(),
        }),
    }
}
fn lifecycle(t: &str, event: Event) -> Envelope {
    Envelope {
        event_id: Uuid::new_v4(),
        machine: "web-1".into(),
        at: at(t),
        event,
    }
}
fn spec(enabled: bool) -> MachineSpec {
    MachineSpec {
        url: "http://127.0.0.1:1/status".into(),
        enabled,
        interval_ms: None,
        labels: Default::default(),
    }
}

/// Given these events folded under `rules`, the incidents that exist and the events emitted.
struct Run {
    fold: Fold,
    book: IncidentBook,
    emitted: Vec<Envelope>,
}

impl Run {
    fn new(rules: RuleSet) -> Self {
        Run {
            fold: Fold::new(rules),
            book: IncidentBook::new(),
            emitted: vec![],
        }
    }
    fn given(events: &[Envelope]) -> Self {
        let mut r = Run::new(RuleSet::default());
        r.when(events);
        r
    }
    fn when(&mut self, events: &[Envelope]) -> &mut Self {
        for e in events {
            let mut out = vec![];
            self.fold.apply(e, &mut out);
            for o in &out {
                self.book.apply(o);
            }
            self.emitted.extend(out);
        }
        self
    }
    fn incidents(&self) -> Vec<IncidentRecord> {
        self.book.records().cloned().collect()
    }
    fn only(&self, rule: RuleName) -> IncidentRecord {
        let mut of_rule: Vec<_> = self
            .incidents()
            .into_iter()
            .filter(|i| i.rule == rule)
            .collect();
        assert_eq!(
            of_rule.len(),
            1,
            "expected exactly one {rule} incident, got {of_rule:#?}"
        );
        of_rule.remove(0)
    }
    fn none_of(&self, rule: RuleName) {
        let of_rule: Vec<_> = self
            .incidents()
            .into_iter()
            .filter(|i| i.rule == rule)
            .collect();
        assert!(
            of_rule.is_empty(),
            "expected no {rule} incident, got {of_rule:#?}"
        );
    }
}

// ---- cpu: > 85 on any sample ------------------------------------------------------

#[test]
fn cpu_above_threshold_opens_at_the_first_breaching_sample() {
    let r = Run::given(&[cpu("00:00", 60.0), cpu("00:15", 97.0)]);
    let i = r.only(RuleName::Cpu);
    assert_eq!((i.started_at, i.opened_at), (at("00:15"), at("00:15")));
    assert_eq!(
        (i.peak, i.last_value, i.threshold, i.for_ms),
        (Some(97.0), Some(97.0), 85.0, 0)
    );
    assert_eq!(i.resolved_at, None);
}

#[test]
fn comparisons_are_strict() {
    Run::given(&[cpu("00:00", 85.0), mem("00:15", 90.0), disk("00:30", 95.0)])
        .none_of(RuleName::Cpu);
    let r = Run::given(&[cpu("00:00", 85.01)]);
    r.only(RuleName::Cpu);
}

// ---- mem: > 90 for 30m (the SPEC example) -----------------------------------------

#[test]
fn mem_opens_when_the_run_has_lasted_for_30m_spec_example() {
    let mut r = Run::given(&[mem("00:00", 91.0), mem("00:15", 91.0)]);
    r.none_of(RuleName::Mem);
    r.when(&[mem("00:30", 91.0)]);
    let i = r.only(RuleName::Mem);
    assert_eq!((i.started_at, i.opened_at), (at("00:00"), at("00:30")));
}

#[test]
fn mem_peak_covers_the_whole_run_before_opening() {
    let r = Run::given(&[mem("00:00", 99.0), mem("00:15", 91.0), mem("00:30", 92.0)]);
    let i = r.only(RuleName::Mem);
    assert_eq!((i.peak, i.last_value), (Some(99.0), Some(92.0)));
}

// ---- disk: > 95 for 2h ----------------------------------------------------------------

#[test]
fn disk_opens_after_two_hours() {
    let events: Vec<_> = (0..=8)
        .map(|k| disk(&format!("{:02}:{:02}", k * 15 / 60, k * 15 % 60), 96.0))
        .collect();
    let mut r = Run::given(&events[..8]);
    r.none_of(RuleName::Disk);
    r.when(&events[8..]);
    let i = r.only(RuleName::Disk);
    assert_eq!((i.started_at, i.opened_at), (at("00:00"), at("02:00")));
}

// ---- unreachable: failed polls for 30m --------------------------------------------

#[test]
fn unreachable_opens_after_30m_of_failures_and_resolves_on_success() {
    let mut r = Run::given(&[failed("00:00"), failed("00:15")]);
    r.none_of(RuleName::Unreachable);
    r.when(&[failed("00:30"), failed("00:45")]);
    let i = r.only(RuleName::Unreachable);
    assert_eq!(
        (i.started_at, i.opened_at, i.peak),
        (at("00:00"), at("00:30"), None)
    );
    r.when(&[cpu("01:00", 10.0)]);
    let i = r.only(RuleName::Unreachable);
    assert_eq!(
        (i.resolved_at, i.resolution.as_str()),
        (Some(at("01:00")), "cleared")
    );
}

#[test]
fn a_poll_failure_is_neutral_for_metric_rules() {
    let r = Run::given(&[mem("00:00", 95.0), failed("00:15"), mem("00:30", 95.0)]);
    let i = r.only(RuleName::Mem);
    assert_eq!((i.started_at, i.opened_at), (at("00:00"), at("00:30")));
}

// ---- no duplicates ----------------------------------------------------------------

#[test]
fn breaching_events_update_the_open_incident_instead_of_opening_another() {
    let r = Run::given(&[cpu("00:00", 90.0), cpu("00:15", 99.0), cpu("00:30", 92.0)]);
    let i = r.only(RuleName::Cpu);
    assert_eq!(
        (i.peak, i.last_value, i.last_breach_at),
        (Some(99.0), Some(92.0), at("00:30"))
    );
    let updates = r
        .emitted
        .iter()
        .filter(|e| matches!(e.event, Event::IncidentUpdated(_)))
        .count();
    assert_eq!(updates, 2);
}

// ---- resolution -------------------------------------------------------------------

#[test]
fn resolves_at_the_first_clearing_event_and_neutral_events_never_resolve() {
    let unknown_mem = sample("web-1", "00:45", Some(10.0), None, Some(10.0));
    let mut r = Run::given(&[
        mem("00:00", 95.0),
        mem("00:15", 95.0),
        mem("00:30", 95.0),
        unknown_mem,
        failed("01:00"),
    ]);
    assert_eq!(r.only(RuleName::Mem).resolved_at, None);
    r.when(&[mem("01:15", 50.0), mem("01:30", 40.0)]);
    let i = r.only(RuleName::Mem);
    assert_eq!(
        (i.resolved_at, i.resolution.as_str()),
        (Some(at("01:15")), "cleared")
    );
}

#[test]
fn gaps_never_resolve_a_metric_incident() {
    let r = Run::given(&[cpu("00:00", 95.0), cpu("05:00", 95.0)]);
    let i = r.only(RuleName::Cpu);
    assert_eq!((i.resolved_at, i.last_breach_at), (None, at("05:00")));
}

#[test]
fn after_resolution_a_new_run_must_satisfy_for_again() {
    let mut r = Run::given(&[
        mem("00:00", 95.0),
        mem("00:15", 95.0),
        mem("00:30", 95.0),
        mem("00:45", 10.0),
    ]);
    r.when(&[mem("01:00", 95.0), mem("01:15", 95.0)]);
    assert_eq!(
        r.incidents().len(),
        1,
        "no second incident before 30 minutes"
    );
    r.when(&[mem("01:30", 95.0)]);
    let all = r.incidents();
    assert_eq!(all.len(), 2);
    assert_eq!(
        (all[1].started_at, all[1].opened_at),
        (at("01:00"), at("01:30"))
    );
    assert_ne!(all[0].id, all[1].id);
}

// ---- hysteresis -------------------------------------------------------------------

#[test]
fn hysteresis_clears_only_at_or_below_threshold_minus_hysteresis() {
    let mut rules = RuleSet::default();
    rules.cpu.hysteresis = 5.0;
    let mut r = Run::new(rules);
    r.when(&[cpu("00:00", 86.0), cpu("00:15", 83.0), cpu("00:30", 80.01)]);
    assert_eq!(
        r.only(RuleName::Cpu).resolved_at,
        None,
        "between 80 and 85 is neutral"
    );
    r.when(&[cpu("00:45", 80.0)]);
    assert_eq!(r.only(RuleName::Cpu).resolved_at, Some(at("00:45")));
}

#[test]
fn with_hysteresis_values_in_the_band_do_not_end_a_run() {
    let mut rules = RuleSet::default();
    rules.mem.hysteresis = 5.0;
    let mut r = Run::new(rules);
    r.when(&[mem("00:00", 91.0), mem("00:15", 88.0), mem("00:30", 91.0)]);
    let i = r.only(RuleName::Mem);
    assert_eq!((i.started_at, i.opened_at), (at("00:00"), at("00:30")));
}

// ---- staleness --------------------------------------------------------------------

#[test]
fn a_gap_longer_than_three_intervals_between_breaches_starts_a_new_run() {
    // 00:00 breach, then nothing until 01:00: 60m > 3 × 15m, so 01:00 starts a new run.
    let mut r = Run::given(&[mem("00:00", 95.0), mem("01:00", 95.0), mem("01:15", 95.0)]);
    r.none_of(RuleName::Mem);
    r.when(&[mem("01:30", 95.0)]);
    let i = r.only(RuleName::Mem);
    assert_eq!((i.started_at, i.opened_at), (at("01:00"), at("01:30")));
}

#[test]
fn neutral_events_do_not_bridge_a_stale_gap() {
    let r = Run::given(&[
        mem("00:00", 95.0),
        failed("00:15"),
        failed("00:30"),
        failed("00:45"),
        mem("01:00", 95.0),
    ]);
    r.none_of(RuleName::Mem);
}

#[test]
fn a_gap_of_exactly_the_bound_keeps_the_run() {
    let r = Run::given(&[mem("00:00", 95.0), mem("00:45", 95.0)]);
    let i = r.only(RuleName::Mem);
    assert_eq!((i.started_at, i.opened_at), (at("00:00"), at("00:45")));
}

// ---- order and duplicates ---------------------------------------------------------

#[test]
fn out_of_order_and_already_seen_events_are_discarded_and_counted() {
    let first = cpu("00:30", 10.0);
    let mut fold = Fold::new(RuleSet::default());
    let mut out = vec![];
    assert_eq!(fold.apply(&first, &mut out), Applied::Folded);
    assert_eq!(fold.apply(&first, &mut out), Applied::DiscardedDuplicate);
    assert_eq!(
        fold.apply(&cpu("00:15", 99.0), &mut out),
        Applied::DiscardedOutOfOrder
    );
    assert_eq!(
        fold.apply(&cpu("00:30", 99.0), &mut out),
        Applied::DiscardedOutOfOrder,
        "same time is not later"
    );
    assert!(out.is_empty(), "discarded events are never applied");
    let s = fold.stats();
    assert_eq!((s.folded, s.duplicates, s.out_of_order), (1, 1, 2));
}

#[test]
fn machines_are_independent() {
    let r = Run::given(&[
        sample("a", "00:00", Some(99.0), None, None),
        sample("b", "00:00", Some(10.0), None, None),
        sample("b", "00:15", Some(99.0), None, None),
    ]);
    let all = r.incidents();
    assert_eq!(all.len(), 2);
    assert_eq!(
        (all[0].machine.as_str(), all[1].machine.as_str()),
        ("a", "b")
    );
}

// ---- machine removal --------------------------------------------------------------

#[test]
fn removing_a_machine_resolves_its_open_incidents_as_machine_removed() {
    let mut r = Run::given(&[
        cpu("00:00", 99.0),
        failed("00:15"),
        failed("00:30"),
        failed("00:45"),
    ]);
    assert_eq!(r.incidents().len(), 2);
    r.when(&[lifecycle("00:50", Event::MachineRemoved(MachineRemoved {}))]);
    for i in r.incidents() {
        assert_eq!(
            (i.resolved_at, i.resolution.as_str()),
            (Some(at("00:50")), "machine_removed"),
            "{i:?}"
        );
    }
    // A poll that was in flight when the machine left changes nothing.
    r.when(&[cpu("01:00", 99.0)]);
    assert_eq!(r.incidents().len(), 2);
}

#[test]
fn disabling_resolves_and_re_enabling_starts_fresh() {
    let mut r = Run::given(&[mem("00:00", 95.0), mem("00:15", 95.0), mem("00:30", 95.0)]);
    r.when(&[lifecycle("00:40", Event::MachineChanged(spec(false)))]);
    assert_eq!(r.only(RuleName::Mem).resolution, "machine_removed");
    r.when(&[
        mem("00:45", 95.0),
        lifecycle("00:50", Event::MachineChanged(spec(true))),
    ]);
    r.when(&[mem("01:00", 95.0), mem("01:15", 95.0)]);
    assert_eq!(
        r.incidents().len(),
        1,
        "the new run started at 01:00, not before the disable"
    );
    r.when(&[mem("01:30", 95.0)]);
    assert_eq!(r.incidents()[1].started_at, at("01:00"));
}

// ---- rule changes -----------------------------------------------------------------

fn rules_change(t: &str, rules: RuleSet) -> Envelope {
    Envelope {
        event_id: Uuid::new_v4(),
        machine: String::new(),
        at: at(t),
        event: Event::RulesChanged(RulesChanged {
            rules,
            changed_by: "test".into(),
        }),
    }
}

#[test]
fn a_rule_change_judges_later_events_by_the_new_rule() {
    let mut lower = RuleSet::default();
    lower.cpu.threshold = 70.0;
    let mut r = Run::given(&[
        cpu("00:00", 75.0),
        rules_change("00:10", lower),
        cpu("00:15", 75.0),
    ]);
    let i = r.only(RuleName::Cpu);
    assert_eq!((i.opened_at, i.threshold), (at("00:15"), 70.0));
    // Under the new rule 72 still breaches; 70 clears.
    r.when(&[cpu("00:30", 72.0), cpu("00:45", 70.0)]);
    assert_eq!(r.only(RuleName::Cpu).resolved_at, Some(at("00:45")));
}

#[test]
fn a_running_run_keeps_its_start_when_for_changes() {
    let mut shorter = RuleSet::default();
    shorter.mem.for_ms = 15 * MIN;
    let r = Run::given(&[
        mem("00:00", 95.0),
        rules_change("00:05", shorter),
        mem("00:15", 95.0),
    ]);
    let i = r.only(RuleName::Mem);
    assert_eq!(
        (i.started_at, i.opened_at, i.for_ms),
        (at("00:00"), at("00:15"), 15 * MIN)
    );
}

#[test]
fn an_open_incident_stays_open_until_cleared_under_the_new_rule() {
    let mut higher = RuleSet::default();
    higher.cpu.threshold = 95.0;
    let mut r = Run::given(&[
        cpu("00:00", 90.0),
        rules_change("00:05", higher),
        cpu("00:15", 90.0),
    ]);
    // 90 no longer breaches (<= 95) and clears under the new rule: resolved.
    assert_eq!(r.only(RuleName::Cpu).resolved_at, Some(at("00:15")));
    let mut hyst = RuleSet::default();
    hyst.cpu.hysteresis = 10.0;
    r.when(&[
        cpu("00:30", 99.0),
        rules_change("00:35", hyst),
        cpu("00:45", 80.0),
    ]);
    assert_eq!(
        r.incidents()[1].resolved_at,
        None,
        "80 is in the new hysteresis band: neutral"
    );
}

#[test]
fn a_rule_change_applies_from_its_event_time_even_if_logged_later() {
    let mut lower = RuleSet::default();
    lower.cpu.threshold = 50.0;
    let r = Run::given(&[rules_change("00:10", lower), cpu("00:15", 60.0)]);
    r.only(RuleName::Cpu);
    let r = Run::given(&[rules_change("00:20", lower), cpu("00:15", 60.0)]);
    r.none_of(RuleName::Cpu);
}

// ---- determinism ------------------------------------------------------------------

#[test]
fn incident_ids_are_derived_from_machine_rule_and_run_start() {
    let events = [
        mem("00:00", 95.0),
        mem("00:15", 95.0),
        mem("00:30", 95.0),
        cpu("00:45", 99.0),
    ];
    let a = Run::given(&events);
    let b = Run::given(&events);
    let ids_a: Vec<_> = a.incidents().iter().map(|i| i.id).collect();
    let ids_b: Vec<_> = b.incidents().iter().map(|i| i.id).collect();
    assert_eq!(ids_a, ids_b);
    assert_eq!(
        a.only(RuleName::Mem).id,
        incident_id("web-1", RuleName::Mem, at("00:00").timestamp_millis())
    );
    let event_ids_a: Vec<_> = a.emitted.iter().map(|e| e.event_id).collect();
    let event_ids_b: Vec<_> = b.emitted.iter().map(|e| e.event_id).collect();
    assert_eq!(
        event_ids_a, event_ids_b,
        "re-emitted incident events carry the same ids"
    );
}

// ---- properties -------------------------------------------------------------------

mod properties {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    #[derive(Debug, Clone)]
    enum Step {
        Sample {
            machine: u8,
            gap_polls: u8,
            cpu: Option<u8>,
            mem: Option<u8>,
            disk: Option<u8>,
        },
        Failed {
            machine: u8,
            gap_polls: u8,
        },
        Remove {
            machine: u8,
        },
        Register {
            machine: u8,
        },
        Rules {
            mem_threshold: u8,
            mem_for_polls: u8,
            hysteresis: u8,
        },
    }

    fn step() -> impl Strategy<Value = Step> {
        let value = proptest::option::weighted(0.9, 80u8..=100);
        prop_oneof![
            8 => (0u8..3, 1u8..5, value.clone(), value.clone(), value).prop_map(|(machine, gap_polls, cpu, mem, disk)| Step::Sample { machine, gap_polls, cpu, mem, disk }),
            3 => (0u8..3, 1u8..5).prop_map(|(machine, gap_polls)| Step::Failed { machine, gap_polls }),
            1 => (0u8..3).prop_map(|machine| Step::Remove { machine }),
            1 => (0u8..3).prop_map(|machine| Step::Register { machine }),
            1 => (85u8..95, 0u8..4, 0u8..5).prop_map(|(mem_threshold, mem_for_polls, hysteresis)| Step::Rules { mem_threshold, mem_for_polls, hysteresis }),
        ]
    }

    /// Turns steps into envelopes with strictly increasing times per machine.
    fn events(steps: &[Step]) -> Vec<Envelope> {
        let base = at("00:00");
        let mut clock: HashMap<u8, i64> = HashMap::new();
        let mut global = 0i64;
        let mut out = vec![];
        let mut id = 0u128;
        let mut next_id = || {
            id += 1;
            Uuid::from_u128(id)
        };
        let poll_at = |clock: &mut HashMap<u8, i64>, machine: u8, gap: u8| {
            let t = clock.entry(machine).or_insert(0);
            *t += i64::from(gap) * 15;
            base + chrono::Duration::minutes(*t)
        };
        for s in steps {
            global += 1;
            let env = match *s {
                Step::Sample {
                    machine,
                    gap_polls,
                    cpu,
                    mem,
                    disk,
                } => {
                    let t = poll_at(&mut clock, machine, gap_polls);
                    Envelope {
                        event_id: next_id(),
                        machine: format!("m{machine}"),
                        at: t,
                        event: Event::MetricSampled(MetricSampled {
                            timing: timing(t),
                            cpu: cpu.map(f64::from),
                            mem: mem.map(f64::from),
                            disk: disk.map(f64::from),
                            uptime_s: None,
                            issues: vec![],
                            rebooted: false,
                        }),
                    }
                }
                Step::Failed { machine, gap_polls } => {
                    let t = poll_at(&mut clock, machine, gap_polls);
                    Envelope {
                        event_id: next_id(),
                        machine: format!("m{machine}"),
                        at: t,
                        event: Event::PollFailed(PollFailed {
                            timing: timing(t),
                            reason: FailureReason::Connect,
                            detail: String::new(),
                        }),
                    }
                }
                Step::Remove { machine } | Step::Register { machine } => {
                    let t = *clock.get(&machine).unwrap_or(&0);
                    let event = if matches!(s, Step::Remove { .. }) {
                        Event::MachineRemoved(MachineRemoved {})
                    } else {
                        Event::MachineRegistered(spec(true))
                    };
                    Envelope {
                        event_id: next_id(),
                        machine: format!("m{machine}"),
                        at: base + chrono::Duration::minutes(t) + chrono::Duration::seconds(1),
                        event,
                    }
                }
                Step::Rules {
                    mem_threshold,
                    mem_for_polls,
                    hysteresis,
                } => {
                    let mut rules = RuleSet::default();
                    rules.mem.threshold = f64::from(mem_threshold);
                    rules.mem.for_ms = u64::from(mem_for_polls) * 15 * MIN;
                    rules.mem.hysteresis = f64::from(hysteresis);
                    Envelope {
                        event_id: next_id(),
                        machine: String::new(),
                        // Logged after everything before it, so it is later than all of it.
                        at: base
                            + chrono::Duration::minutes(clock.values().copied().max().unwrap_or(0))
                            + chrono::Duration::seconds(global),
                        event: Event::RulesChanged(RulesChanged {
                            rules,
                            changed_by: String::new(),
                        }),
                    }
                }
            };
            out.push(env);
        }
        out
    }

    fn fold_all(fold: &mut Fold, events: &[Envelope], emitted: &mut Vec<Envelope>) {
        for e in events {
            fold.apply(e, emitted);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn never_two_open_incidents_per_machine_and_rule(steps in proptest::collection::vec(step(), 0..120)) {
            let mut fold = Fold::new(RuleSet::default());
            let mut open: HashMap<(String, RuleName), Uuid> = HashMap::new();
            for e in events(&steps) {
                let mut out = vec![];
                fold.apply(&e, &mut out);
                for o in out {
                    match &o.event {
                        Event::IncidentOpened(x) => {
                            let prev = open.insert((o.machine.clone(), x.rule), x.incident_id);
                            prop_assert!(prev.is_none(), "second open incident for {} {}", o.machine, x.rule);
                        }
                        Event::IncidentResolved(x) => {
                            prop_assert_eq!(open.remove(&(o.machine.clone(), x.rule)), Some(x.incident_id));
                        }
                        Event::IncidentUpdated(x) => {
                            prop_assert_eq!(open.get(&(o.machine.clone(), x.rule)), Some(&x.incident_id));
                        }
                        _ => prop_assert!(false, "the fold emitted a non-incident event"),
                    }
                }
            }
        }

        #[test]
        fn an_incident_opens_exactly_when_its_run_has_lasted_for(steps in proptest::collection::vec(step(), 0..120)) {
            let evs = events(&steps);
            let mut fold = Fold::new(RuleSet::default());
            let mut out = vec![];
            let mut folded = std::collections::HashSet::new();
            for e in &evs {
                if fold.apply(e, &mut out) == Applied::Folded {
                    folded.insert(e.event_id);
                }
            }
            let mut book = IncidentBook::new();
            for o in &out { book.apply(o); }
            for i in book.records() {
                let waited = (i.opened_at - i.started_at).num_milliseconds();
                prop_assert!(waited >= i.for_ms as i64, "{i:?} opened early");
                // Not late: the previous poll of the machine was still short of `for`
                // (or belonged to an earlier run), otherwise the incident would have opened there.
                let prev = evs.iter()
                    .filter(|e| e.machine == i.machine && matches!(e.event, Event::MetricSampled(_) | Event::PollFailed(_)))
                    .filter(|e| folded.contains(&e.event_id) && e.at < i.opened_at && e.at >= i.started_at)
                    .filter(|e| match (&e.event, i.rule) {
                        (Event::PollFailed(_), RuleName::Unreachable) => true,
                        (Event::MetricSampled(s), r) => s.value_of(r).is_some_and(|v| v > fold.rules_at(e.at.timestamp_millis()).get(r).threshold),
                        _ => false,
                    })
                    .last();
                if let Some(p) = prev {
                    let rules = fold.rules_at(p.at.timestamp_millis());
                    prop_assert!(((p.at - i.started_at).num_milliseconds() as u64) < rules.get(i.rule).for_ms,
                        "{i:?} opened late: breaching event at {} already satisfied for", p.at);
                }
            }
        }

        #[test]
        fn snapshot_and_restore_at_any_point_gives_the_same_incidents(
            steps in proptest::collection::vec(step(), 0..120),
            split in 0usize..120,
        ) {
            let evs = events(&steps);
            let split = split.min(evs.len());
            let mut whole = Fold::new(RuleSet::default());
            let mut whole_out = vec![];
            fold_all(&mut whole, &evs, &mut whole_out);

            let mut first = Fold::new(RuleSet::default());
            let mut split_out = vec![];
            fold_all(&mut first, &evs[..split], &mut split_out);
            let snapshot = serde_json::to_string(&first).unwrap();
            drop(first);
            let mut second: Fold = serde_json::from_str(&snapshot).unwrap();
            fold_all(&mut second, &evs[split..], &mut split_out);
            prop_assert_eq!(whole_out, split_out);
        }

        #[test]
        fn replaying_the_same_log_gives_the_same_incident_events(steps in proptest::collection::vec(step(), 0..80)) {
            let evs = events(&steps);
            let mut a = Fold::new(RuleSet::default());
            let mut b = Fold::new(RuleSet::default());
            let (mut out_a, mut out_b) = (vec![], vec![]);
            fold_all(&mut a, &evs, &mut out_a);
            fold_all(&mut b, &evs, &mut out_b);
            // Re-delivering the whole log to the same fold changes nothing.
            let mut again = vec![];
            fold_all(&mut a, &evs, &mut again);
            prop_assert_eq!(out_a, out_b);
            prop_assert!(again.is_empty(), "re-delivered events emitted {again:?}");
        }
    }
}
