//! Kafka topic names. Every event about a machine is keyed by the machine's name so
//! that one machine's events stay in order within one partition.

/// Polls (`MetricSampled`, `PollFailed`), machine lifecycle events and rule changes.
///
/// `RulesChanged` is global: the publisher writes one copy to every partition (same
/// event id), so each processor instance sees it in order with its own machines' polls.
pub const MACHINE_EVENTS: &str = "monitor.machine-events.v1";

/// Incident events (`IncidentOpened`, `IncidentUpdated`, `IncidentResolved`), keyed by machine.
pub const INCIDENT_EVENTS: &str = "monitor.incidents.v1";

/// The partition key of an event about a machine: its name.
pub fn machine_key(machine: &str) -> &[u8] {
    machine.as_bytes()
}
