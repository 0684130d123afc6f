//! Test support shared by the integration tests: the fake fleet, the real
//! services (MariaDB, a Kafka-protocol broker) with per-test isolation, and
//! helpers that spawn each service in-process on port 0.

pub use fake_fleet as fleet;
pub mod live;
pub mod services;
pub mod spawn;
pub mod streams;
