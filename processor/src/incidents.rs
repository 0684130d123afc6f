//! A pure projection of incident events into incident records (SPEC §4 "An incident
//! records"). The backtest and the tests use it directly; the MySQL projection
//! applies the same events as upserts.

use proto_events::{Envelope, Event, RuleName, Timestamp};
use serde::Serialize;
use std::collections::HashMap;
use uuid::Uuid;

/// One incident as a reader sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IncidentRecord {
    /// Deterministic id.
    pub id: Uuid,
    /// Machine name.
    pub machine: String,
    /// Rule that fired.
    pub rule: RuleName,
    /// Threshold in force when it opened.
    pub threshold: f64,
    /// `for` in force when it opened, in milliseconds.
    pub for_ms: u64,
    /// Run start.
    pub started_at: Timestamp,
    /// When it opened.
    pub opened_at: Timestamp,
    /// Highest breaching value; none for `unreachable`.
    pub peak: Option<f64>,
    /// Value of the latest breaching event.
    pub last_value: Option<f64>,
    /// Time of the latest breaching event.
    pub last_breach_at: Timestamp,
    /// When it resolved, if it did.
    pub resolved_at: Option<Timestamp>,
    /// Why it resolved (`cleared`, `machine_removed`); empty while open.
    pub resolution: String,
}

/// Incident records built from incident events, in opening order.
#[derive(Debug, Clone, Default)]
pub struct IncidentBook {
    order: Vec<Uuid>,
    by_id: HashMap<Uuid, IncidentRecord>,
}

impl IncidentBook {
    /// An empty book.
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies one incident event; other events are ignored. Re-applying an event
    /// that was already applied leaves the book unchanged (idempotent), which is what
    /// makes re-emitted events after a crash harmless.
    pub fn apply(&mut self, env: &Envelope) {
        match &env.event {
            Event::IncidentOpened(o) => {
                if self.by_id.contains_key(&o.incident_id) {
                    return;
                }
                self.order.push(o.incident_id);
                self.by_id.insert(
                    o.incident_id,
                    IncidentRecord {
                        id: o.incident_id,
                        machine: env.machine.clone(),
                        rule: o.rule,
                        threshold: o.threshold,
                        for_ms: o.for_ms,
                        started_at: o.started_at,
                        opened_at: o.opened_at,
                        peak: o.peak,
                        last_value: o.last_value,
                        last_breach_at: o.opened_at,
                        resolved_at: None,
                        resolution: String::new(),
                    },
                );
            }
            Event::IncidentUpdated(u) => {
                if let Some(r) = self.by_id.get_mut(&u.incident_id) {
                    if u.last_breach_at >= r.last_breach_at {
                        r.peak = u.peak;
                        r.last_value = u.last_value;
                        r.last_breach_at = u.last_breach_at;
                    }
                }
            }
            Event::IncidentResolved(x) => {
                if let Some(r) = self.by_id.get_mut(&x.incident_id) {
                    r.resolved_at = Some(x.resolved_at);
                    r.resolution = x.reason.as_str().to_owned();
                }
            }
            _ => {}
        }
    }

    /// All incidents in the order they opened.
    pub fn records(&self) -> impl Iterator<Item = &IncidentRecord> {
        self.order.iter().filter_map(|id| self.by_id.get(id))
    }

    /// Consumes the book into its incidents, in opening order.
    pub fn into_records(mut self) -> Vec<IncidentRecord> {
        self.order
            .iter()
            .filter_map(|id| self.by_id.remove(id))
            .collect()
    }

    /// Number of incidents.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}
