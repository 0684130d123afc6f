//! query-api: the read side. Serves the incident projection through an OpenAPI
//! service (poem-openapi) and the health endpoints. It reads MySQL projections
//! only; it never consumes Kafka.
//!
//! Modules:
//! - [`config`]: settings from the environment.
//! - [`incidents`]: `/api/incidents`.
//! - [`error`]: the JSON error body.
//! - [`app`]: builds the routes and binds the listener ([`app::Application`]).

pub mod app;
pub mod config;
pub mod error;
pub mod incidents;
