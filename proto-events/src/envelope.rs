//! The versioned envelope and its JSON codec.
//!
//! Wire format (one JSON object per Kafka message, pinned by golden files in
//! `proto-events/tests/golden/`):
//!
//! ```json
//! {"event_id":"…","type":"MetricSampled","version":1,"machine":"web-1",
//!  "at":"2026-11-23T10:00:00.000Z","data":{…}}
//! ```
//!
//! `at` is the event time (for polls, `observed_at`: the grid instant the poll was due).
//! A reader decodes only the `(type, version)` pairs it knows; anything else is a
//! [`DecodeError`] that names what it saw, never a silent mis-read.

use crate::events::{time_ms, Event, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::borrow::Cow;
use uuid::Uuid;

/// The schema version this build writes (and the only one it reads, so far).
pub const SCHEMA_VERSION: u16 = 1;

/// An event with its identity, machine key and event time.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// Unique id of this event.
    pub event_id: Uuid,
    /// The machine the event is about; empty for global events (`RulesChanged`).
    pub machine: String,
    /// Event time: for polls `observed_at`, the grid instant the poll was due.
    pub at: Timestamp,
    /// The event itself.
    pub event: Event,
}

/// Why a message could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Not JSON, or the envelope fields are missing or malformed.
    #[error("malformed envelope: {0}")]
    Malformed(serde_json::Error),
    /// A known type at a version this build does not read.
    #[error("unknown schema version {version} of event type {event_type}")]
    UnknownVersion {
        /// The type name.
        event_type: String,
        /// The version seen.
        version: u16,
    },
    /// A type this build does not know.
    #[error("unknown event type {0:?}")]
    UnknownType(String),
    /// The envelope is fine but `data` does not match the type.
    #[error("malformed data of {event_type} v{version}: {source}")]
    MalformedData {
        /// The type name.
        event_type: String,
        /// Its version.
        version: u16,
        /// The serde error.
        source: serde_json::Error,
    },
}

#[derive(Serialize)]
struct WireOut<'a, T: Serialize> {
    event_id: Uuid,
    #[serde(rename = "type")]
    event_type: &'static str,
    version: u16,
    machine: &'a str,
    #[serde(with = "time_ms")]
    at: Timestamp,
    data: &'a T,
}

#[derive(Deserialize)]
struct WireIn<'a> {
    event_id: Uuid,
    #[serde(rename = "type", borrow)]
    event_type: Cow<'a, str>,
    version: u16,
    #[serde(borrow)]
    machine: Cow<'a, str>,
    #[serde(with = "time_ms")]
    at: Timestamp,
    #[serde(borrow)]
    data: &'a RawValue,
}

const KNOWN_TYPES: [&str; 9] = [
    "MetricSampled",
    "PollFailed",
    "MachineRegistered",
    "MachineChanged",
    "MachineRemoved",
    "RulesChanged",
    "IncidentOpened",
    "IncidentUpdated",
    "IncidentResolved",
];

impl Envelope {
    /// Encodes to the wire format (compact JSON).
    pub fn encode(&self) -> Vec<u8> {
        fn out<T: Serialize>(env: &Envelope, data: &T) -> Vec<u8> {
            let wire = WireOut {
                event_id: env.event_id,
                event_type: env.event.type_name(),
                version: SCHEMA_VERSION,
                machine: &env.machine,
                at: env.at,
                data,
            };
            // Serializing these plain structs to a Vec cannot fail (no maps with
            // non-string keys, no failing Serialize impls).
            serde_json::to_vec(&wire).unwrap_or_default()
        }
        match &self.event {
            Event::MetricSampled(e) => out(self, e),
            Event::PollFailed(e) => out(self, e),
            Event::MachineRegistered(e) => out(self, e),
            Event::MachineChanged(e) => out(self, e),
            Event::MachineRemoved(e) => out(self, e),
            Event::RulesChanged(e) => out(self, e),
            Event::IncidentOpened(e) => out(self, e),
            Event::IncidentUpdated(e) => out(self, e),
            Event::IncidentResolved(e) => out(self, e),
        }
    }

    /// Decodes one message. Unknown types and versions are errors that say what was seen.
    pub fn decode(bytes: &[u8]) -> Result<Envelope, DecodeError> {
        let wire: WireIn<'_> = serde_json::from_slice(bytes).map_err(DecodeError::Malformed)?;
        let ty = wire.event_type.as_ref();
        if !KNOWN_TYPES.contains(&ty) {
            return Err(DecodeError::UnknownType(ty.to_owned()));
        }
        if wire.version != SCHEMA_VERSION {
            return Err(DecodeError::UnknownVersion {
                event_type: ty.to_owned(),
                version: wire.version,
            });
        }
        let raw = wire.data.get();
        let data_err = |source| DecodeError::MalformedData {
            event_type: ty.to_owned(),
            version: wire.version,
            source,
        };
        let event = match ty {
            "MetricSampled" => Event::MetricSampled(serde_json::from_str(raw).map_err(data_err)?),
            "PollFailed" => Event::PollFailed(serde_json::from_str(raw).map_err(data_err)?),
            "MachineRegistered" => {
                Event::MachineRegistered(serde_json::from_str(raw).map_err(data_err)?)
            }
            "MachineChanged" => Event::MachineChanged(serde_json::from_str(raw).map_err(data_err)?),
            "MachineRemoved" => Event::MachineRemoved(serde_json::from_str(raw).map_err(data_err)?),
            "RulesChanged" => Event::RulesChanged(serde_json::from_str(raw).map_err(data_err)?),
            "IncidentOpened" => Event::IncidentOpened(serde_json::from_str(raw).map_err(data_err)?),
            "IncidentUpdated" => {
                Event::IncidentUpdated(serde_json::from_str(raw).map_err(data_err)?)
            }
            _ => Event::IncidentResolved(serde_json::from_str(raw).map_err(data_err)?),
        };
        Ok(Envelope {
            event_id: wire.event_id,
            machine: wire.machine.into_owned(),
            at: wire.at,
            event,
        })
    }
}
