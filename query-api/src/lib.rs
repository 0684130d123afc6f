//! query-api: the read side. Serves the projections through an OpenAPI service
//! (poem-openapi) behind our own session middleware, and the health endpoints. It reads MySQL projections
//! only; it never consumes Kafka.
//!
//! Modules:
//! - [`config`]: settings from the environment.
//! - [`incidents`]: `/api/incidents`, including the long-poll of changes.
//! - [`changes`]: the change-feed watcher that wakes long-polls.
//! - [`machines`]: `/api/machines`.
//! - [`rules`]: `/api/rules` (publishes `RulesChanged`).
//! - [`backtests`]: `/api/backtests` (records requests; processors run them).
//! - [`auth`]: passwords, sessions, tokens, roles, login rate limit.
//! - [`session`]: `/api/session` and the authentication middleware.
//! - [`tokens`]: `/api/tokens`.
//! - [`error`]: the JSON error body.
//! - [`metrics`]: `/metrics` (Prometheus text).
//! - [`pages`]: the dashboard (vanilla JS) and login form.
//! - [`app`]: builds the routes and binds the listener ([`app::Application`]).

pub mod app;
pub mod auth;
pub mod backtests;
pub mod changes;
pub mod config;
pub mod error;
pub mod incidents;
pub mod machines;
pub mod metrics;
pub mod pages;
pub mod rules;
pub mod session;
pub mod tokens;
