//! The event schema every service shares: the events themselves, their versioned
//! envelope and JSON codec, topic names, rule definitions, and the parser of the
//! machines' status payload (shared/SPEC.md §1–3).
//!
//! This crate does no I/O and reads no clock: every time in here comes from a caller
//! or from an event. Modules:
//! - [`events`]: the past-tense facts (`MetricSampled`, `PollFailed`, `Incident*`, …).
//! - [`envelope`]: the versioned envelope and the codec that (de)serializes it.
//! - [`topics`]: Kafka topic names and partition keys.
//! - [`rules`]: rule names, rule specs and the default rule set.
//! - [`payload`]: parsing a machine's status payload, every value dialect of SPEC §1.
//! - [`settings`]: typed configuration lookup with errors that name the key.
//! - [`duration`]: the duration syntax of SPEC §3 (`0`, `45s`, `30m`, `1h30m`).

pub mod backtest;
pub mod duration;
pub mod envelope;
pub mod events;
pub mod payload;
pub mod rules;
pub mod settings;
pub mod topics;

pub use envelope::{DecodeError, Envelope, SCHEMA_VERSION};
pub use events::*;
pub use rules::{RuleName, RuleSet, RuleSpec};
