//! The processor: consumes the machine-event log, folds events per machine into
//! incident events by the rules, and writes projections exactly once.
//!
//! Modules:
//! - [`fold`]: the pure incident fold (SPEC §4). No I/O, no clock.
//! - [`incidents`]: a pure projection of incident events into incident records,
//!   shared by the live projection writer and the backtest.

pub mod fold;
pub mod incidents;
