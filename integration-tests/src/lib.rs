//! Test support shared by the integration tests: the fake fleet, service addresses,
//! fresh databases and topics, and helpers that spawn each service on port 0.

pub mod fleet;
