//! Ingest: polls every machine of the registry on its grid and publishes one event
//! per poll (`MetricSampled` or `PollFailed`) to the machine-event log.
//!
//! Modules:
//! - [`config`]: settings from the environment.
//! - [`schedule`]: the pure grid arithmetic (phases, instants).
//! - [`poller`]: one HTTP poll → one outcome, SPEC §1.
//! - [`scheduler`]: one task per machine, exactly on the grid.
//! - [`registry`]: follows the MySQL registry, publishes `Machine*` events.
//! - [`publisher`]: the bounded channel into an idempotent Kafka producer.
//! - [`metrics`]: `/metrics` in the Prometheus text format.
//! - [`app`]: wires them together.

pub mod app;
pub mod config;
pub mod metrics;
pub mod poller;
pub mod publisher;
pub mod registry;
pub mod schedule;
pub mod scheduler;
