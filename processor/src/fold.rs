//! The incident fold (SPEC §4): a pure, synchronous state machine from machine events
//! to incident events. No tokio, no Kafka, no SQL, no clock: time comes from events.
//!
//! The live processor and the backtest run this same code over the same log, which is
//! why a backtest with the live rules reproduces the live incidents exactly.
//!
//! Per machine and rule the fold keeps at most one *run* (consecutive breaching or
//! neutral events) and at most one *open incident*. Deciding and applying are one
//! step here because applying can never fail: [`Fold::apply`] mutates the state and
//! appends the incident events the input caused.

use proto_events::{
    Envelope, Event, IncidentOpened, IncidentResolved, IncidentUpdated, ResolutionReason, RuleName,
    RuleSet, RuleSpec,
};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Namespace of incident ids: `uuid5(NS, "{machine}\n{rule}\n{run_start_ms}")`.
pub const INCIDENT_ID_NAMESPACE: Uuid = Uuid::from_u128(0x5b1c_2f0e_8d4a_4e61_9a37_6f3c_0d2b_7e14);
/// Namespace of the ids of incident *events*, derived from the incident and its cause.
const INCIDENT_EVENT_NAMESPACE: Uuid = Uuid::from_u128(0x9e0f_41a2_37c5_4b8d_a16e_2c9d_58f3_0b72);

/// The deterministic id of the incident of `rule` on `machine` whose run started at `run_start_ms`.
pub fn incident_id(machine: &str, rule: RuleName, run_start_ms: i64) -> Uuid {
    Uuid::new_v5(
        &INCIDENT_ID_NAMESPACE,
        format!("{machine}\n{rule}\n{run_start_ms}").as_bytes(),
    )
}

fn incident_event_id(incident: Uuid, kind: u8, cause: Uuid) -> Uuid {
    // A cheap deterministic mix (SHA-1 per emitted event would double the fold's
    // cost): two rounds of multiply-xorshift over the 128-bit inputs, stamped as a
    // version-8 (custom) UUID. Same incident, kind and cause: same id, always.
    let mut x = incident.as_u128()
        ^ cause.as_u128().rotate_left(43)
        ^ (u128::from(kind) << 120)
        ^ INCIDENT_EVENT_NAMESPACE.as_u128();
    for _ in 0..2 {
        x = x.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835);
        x ^= x >> 67;
    }
    uuid::Builder::from_custom_bytes(x.to_be_bytes()).into_uuid()
}

/// What [`Fold::apply`] did with one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The event was folded.
    Folded,
    /// A poll whose `observed_at` is not later than the last poll folded for its machine.
    DiscardedOutOfOrder,
    /// A poll whose id was already folded.
    DiscardedDuplicate,
    /// A poll of a removed or disabled machine (it was in flight when the machine left).
    IgnoredInactiveMachine,
    /// An event the fold has no use for (incident events, a repeated rules change).
    Ignored,
}

/// Counters of what the fold did, for metrics and backtest summaries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FoldStats {
    /// Events folded.
    pub folded: u64,
    /// Polls discarded as out of order.
    pub out_of_order: u64,
    /// Polls discarded as already seen.
    pub duplicates: u64,
    /// Polls of inactive machines.
    pub inactive: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Run {
    start_ms: i64,
    last_breach_ms: i64,
    peak: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct OpenIncident {
    id: Uuid,
    peak: Option<f64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
struct Track {
    run: Option<Run>,
    open: Option<OpenIncident>,
}

/// Everything the fold remembers about one machine. Serializable, so the processor
/// can store it with its log position and restore it after a restart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MachineState {
    last_poll_ms: Option<i64>,
    last_poll_id: Option<Uuid>,
    /// Time of the last lifecycle event (registered/changed/removed) folded.
    #[serde(default)]
    last_lifecycle_ms: Option<i64>,
    active: bool,
    tracks: [Track; 4],
}

impl Default for MachineState {
    fn default() -> Self {
        MachineState {
            last_poll_ms: None,
            last_poll_id: None,
            last_lifecycle_ms: None,
            active: true,
            tracks: [Track::default(); 4],
        }
    }
}

impl MachineState {
    /// Whether any incident of this machine is open.
    pub fn has_open_incident(&self) -> bool {
        self.tracks.iter().any(|t| t.open.is_some())
    }
}

/// The rules in force over event time: a change applies from its event time on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RulesTimeline {
    initial: RuleSet,
    /// `(effective_at_ms, change event id, rules)`, sorted by time.
    changes: Vec<(i64, Uuid, RuleSet)>,
}

impl RulesTimeline {
    /// Rules `initial` in force from the beginning of time.
    pub fn new(initial: RuleSet) -> Self {
        RulesTimeline {
            initial,
            changes: Vec::new(),
        }
    }

    /// The rules in force at `t_ms`.
    pub fn at(&self, t_ms: i64) -> &RuleSet {
        match self.changes.iter().rposition(|(at, _, _)| *at <= t_ms) {
            Some(i) => &self.changes[i].2,
            None => &self.initial,
        }
    }

    /// The same changes over a different initial rule set (the configured defaults
    /// win over those stored with a snapshot; the changes themselves are kept).
    pub fn with_initial(mut self, initial: RuleSet) -> Self {
        self.initial = initial;
        self
    }

    /// Adds a change; `false` if a change with this id is already known.
    fn insert(&mut self, at_ms: i64, id: Uuid, rules: RuleSet) -> bool {
        if self.changes.iter().any(|(_, known, _)| *known == id) {
            return false;
        }
        let pos = self.changes.partition_point(|(t, _, _)| *t <= at_ms);
        self.changes.insert(pos, (at_ms, id, rules));
        true
    }
}

/// The `IncidentResolved` event `cause` produces for incident `id`.
fn resolution(cause: &Envelope, id: Uuid, rule: RuleName, reason: ResolutionReason) -> Envelope {
    let kind = match reason {
        ResolutionReason::Cleared => 2,
        ResolutionReason::MachineRemoved => 3,
    };
    Envelope {
        event_id: incident_event_id(id, kind, cause.event_id),
        machine: cause.machine.clone(),
        at: cause.at,
        event: Event::IncidentResolved(IncidentResolved {
            incident_id: id,
            rule,
            resolved_at: cause.at,
            reason,
        }),
    }
}

/// How one event counts for one rule.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Verdict {
    Breach(Option<f64>),
    Clear,
    Neutral,
}

fn verdict(rule: RuleName, spec: &RuleSpec, event: &Event) -> Verdict {
    match (rule, event) {
        (RuleName::Unreachable, Event::PollFailed(_)) => Verdict::Breach(None),
        (RuleName::Unreachable, Event::MetricSampled(_)) => Verdict::Clear,
        (_, Event::MetricSampled(s)) => match s.value_of(rule) {
            Some(v) if v > spec.threshold => Verdict::Breach(Some(v)),
            Some(v) if v <= spec.threshold - spec.hysteresis => Verdict::Clear,
            _ => Verdict::Neutral,
        },
        _ => Verdict::Neutral,
    }
}

fn max_opt(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

/// The fold over all machines of one partition (or of a whole backtest).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fold {
    /// Fx hashing: machine names are not attacker-chosen keys, and the map lookup is
    /// most of the fold's cost per event.
    machines: FxHashMap<String, MachineState>,
    rules: RulesTimeline,
    stats: FoldStats,
}

impl Fold {
    /// An empty fold with `rules` in force from the beginning of time.
    pub fn new(rules: RuleSet) -> Self {
        Fold {
            machines: FxHashMap::default(),
            rules: RulesTimeline::new(rules),
            stats: FoldStats::default(),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> FoldStats {
        self.stats
    }

    /// The rules in force at `t_ms` (milliseconds since the epoch).
    pub fn rules_at(&self, t_ms: i64) -> &RuleSet {
        self.rules.at(t_ms)
    }

    /// The rules timeline, to be stored with the machine states.
    pub fn rules_timeline(&self) -> &RulesTimeline {
        &self.rules
    }

    /// Replaces the rules timeline (restoring a snapshot).
    pub fn restore_rules_timeline(&mut self, timeline: RulesTimeline) {
        self.rules = timeline;
    }

    /// The state of one machine, for snapshotting.
    pub fn machine_state(&self, machine: &str) -> Option<&MachineState> {
        self.machines.get(machine)
    }

    /// Restores the state of one machine from a snapshot.
    pub fn restore_machine_state(&mut self, machine: String, state: MachineState) {
        self.machines.insert(machine, state);
    }

    /// Forgets a machine entirely (its partition moved to another instance).
    pub fn forget_machine(&mut self, machine: &str) {
        self.machines.remove(machine);
    }

    /// Names of all machines with state.
    pub fn machines(&self) -> impl Iterator<Item = &str> {
        self.machines.keys().map(String::as_str)
    }

    /// Folds one event, appending the incident events it causes to `out`.
    pub fn apply(&mut self, env: &Envelope, out: &mut Vec<Envelope>) -> Applied {
        let t_ms = env.at.timestamp_millis();
        let applied = match &env.event {
            Event::MetricSampled(_) | Event::PollFailed(_) => self.apply_poll(env, t_ms, out),
            Event::MachineRegistered(_) | Event::MachineChanged(_) | Event::MachineRemoved(_) => {
                self.apply_lifecycle(env, t_ms, out)
            }
            Event::RulesChanged(change) => {
                if self.rules.insert(t_ms, env.event_id, change.rules) {
                    Applied::Folded
                } else {
                    Applied::Ignored
                }
            }
            Event::IncidentOpened(_) | Event::IncidentUpdated(_) | Event::IncidentResolved(_) => {
                Applied::Ignored
            }
        };
        match applied {
            Applied::Folded => self.stats.folded += 1,
            Applied::DiscardedOutOfOrder => self.stats.out_of_order += 1,
            Applied::DiscardedDuplicate => self.stats.duplicates += 1,
            Applied::IgnoredInactiveMachine => self.stats.inactive += 1,
            Applied::Ignored => {}
        }
        applied
    }

    fn apply_poll(&mut self, env: &Envelope, t_ms: i64, out: &mut Vec<Envelope>) -> Applied {
        let interval_ms = match &env.event {
            Event::MetricSampled(s) => s.timing.interval_ms,
            Event::PollFailed(f) => f.timing.interval_ms,
            _ => return Applied::Ignored,
        };
        let state = match self.machines.get_mut(env.machine.as_str()) {
            Some(state) => state,
            None => self.machines.entry(env.machine.clone()).or_default(),
        };
        if state.last_poll_id == Some(env.event_id) {
            return Applied::DiscardedDuplicate;
        }
        if state.last_poll_ms.is_some_and(|last| t_ms <= last) {
            return Applied::DiscardedOutOfOrder;
        }
        state.last_poll_ms = Some(t_ms);
        state.last_poll_id = Some(env.event_id);
        if !state.active {
            return Applied::IgnoredInactiveMachine;
        }
        let rules = self.rules.at(t_ms);
        let stale_ms =
            i64::try_from(interval_ms.saturating_mul(u64::from(rules.staleness_intervals)))
                .unwrap_or(i64::MAX);
        for rule in RuleName::ALL {
            let spec = rules.get(rule);
            let track = &mut state.tracks[rule.index()];
            match verdict(rule, spec, &env.event) {
                Verdict::Neutral => {}
                Verdict::Clear => {
                    track.run = None;
                    if let Some(open) = track.open.take() {
                        out.push(resolution(env, open.id, rule, ResolutionReason::Cleared));
                    }
                }
                Verdict::Breach(value) => {
                    let run = match &mut track.run {
                        Some(run) if t_ms - run.last_breach_ms <= stale_ms => {
                            run.last_breach_ms = t_ms;
                            run.peak = max_opt(run.peak, value);
                            *run
                        }
                        run => *run.insert(Run {
                            start_ms: t_ms,
                            last_breach_ms: t_ms,
                            peak: value,
                        }),
                    };
                    if let Some(open) = &mut track.open {
                        open.peak = max_opt(open.peak, value);
                        out.push(Envelope {
                            event_id: incident_event_id(open.id, 1, env.event_id),
                            machine: env.machine.clone(),
                            at: env.at,
                            event: Event::IncidentUpdated(IncidentUpdated {
                                incident_id: open.id,
                                rule,
                                peak: open.peak,
                                last_value: value,
                                last_breach_at: env.at,
                            }),
                        });
                    } else if u64::try_from(t_ms - run.start_ms).unwrap_or(0) >= spec.for_ms {
                        let id = incident_id(&env.machine, rule, run.start_ms);
                        track.open = Some(OpenIncident { id, peak: run.peak });
                        out.push(Envelope {
                            event_id: incident_event_id(id, 0, env.event_id),
                            machine: env.machine.clone(),
                            at: env.at,
                            event: Event::IncidentOpened(IncidentOpened {
                                incident_id: id,
                                rule,
                                threshold: spec.threshold,
                                for_ms: spec.for_ms,
                                started_at: chrono::DateTime::from_timestamp_millis(run.start_ms)
                                    .unwrap_or(env.at),
                                opened_at: env.at,
                                peak: run.peak,
                                last_value: value,
                            }),
                        });
                    }
                }
            }
        }
        Applied::Folded
    }

    fn apply_lifecycle(&mut self, env: &Envelope, t_ms: i64, out: &mut Vec<Envelope>) -> Applied {
        let state = self.machines.entry(env.machine.clone()).or_default();
        // Registry changes of one machine are ordered in time like its polls; an
        // older or equal one is a re-delivery and must not resolve anything twice.
        if state.last_lifecycle_ms.is_some_and(|last| t_ms <= last) {
            return Applied::DiscardedDuplicate;
        }
        state.last_lifecycle_ms = Some(t_ms);
        match &env.event {
            Event::MachineRegistered(_) => state.active = true,
            Event::MachineChanged(spec) if spec.enabled => state.active = true,
            _ => self.deactivate(env, out),
        }
        Applied::Folded
    }

    /// Resolves every open incident of the machine (`machine_removed`) and forgets its runs.
    fn deactivate(&mut self, env: &Envelope, out: &mut Vec<Envelope>) {
        let state = self.machines.entry(env.machine.clone()).or_default();
        state.active = false;
        for rule in RuleName::ALL {
            let track = &mut state.tracks[rule.index()];
            track.run = None;
            if let Some(open) = track.open.take() {
                out.push(resolution(
                    env,
                    open.id,
                    rule,
                    ResolutionReason::MachineRemoved,
                ));
            }
        }
    }
}
