//! The processor: consumes the machine-event log, folds events per machine into
//! incident events by the rules, and writes projections exactly once.
//!
//! Modules:
//! - [`fold`]: the pure incident fold (SPEC §4). No I/O, no clock.
//! - [`incidents`]: a pure projection of incident events into incident records,
//!   shared by the backtest and the tests.
//! - [`backtest`]: backtests over an offline history file (SPEC §5).
//! - [`replay`]: backtests over the recorded log, with the diff against recorded incidents.
//! - [`config`]: settings from the environment.
//! - [`store`]: the projections, fold state, offsets and outbox (one transaction
//!   per batch), on MySQL or the embedded SQLite file.
//! - [`folder`]: partition state, folding into a batch, committing it (log-independent).
//! - [`service`]: the Kafka consumer-group member that drives the folder.
//! - [`embedded`]: the embedded-log reader that drives it in one-process mode.
//! - [`jobs`]: backtests requested through the API.

pub mod backtest;
pub mod config;
pub mod embedded;
pub mod fold;
pub mod folder;
pub mod incidents;
pub mod jobs;
pub mod replay;
pub mod service;
pub mod store;
