//! The fake fleet: one process that pretends to be many monitored machines, each serving the
//! status payload of SPEC §1 with a scripted behaviour (steady, spikes, outages, garbage, ...).
//!
//! # Overview
//!
//! * A [`Scenario`] lists machines; each has a name, a [`Behaviour`] and optionally a dedicated
//!   port. Scenarios come from JSON ([`Scenario::from_json_str`], [`Scenario::from_file`]) or are
//!   built in code ([`Scenario::new`] + [`Scenario::machine`]).
//! * [`Fleet::start`] serves all machines from one HTTP server:
//!   `GET /machines` lists the names (a JSON array of strings) and
//!   `GET /machines/{name}/status` returns that machine's payload (unknown name → 404).
//!   A machine with `"port"` also gets its own listener serving `GET /status`.
//! * Time is *scenario time*, read from a [`FleetClock`]: either real seconds since the fleet
//!   started multiplied by a speed factor, or a manual clock that tests set explicitly.
//! * [`Behaviour::respond`] is the pure heart of it: scenario time + request index in,
//!   [`Response`] out, so behaviours are unit-testable without HTTP.
//!
//! # How failures are rendered
//!
//! * [`Response::Hang`]: the request never gets an answer; the connection stays open until the
//!   client gives up (or the fleet shuts down, or [`HANG_CAP`] elapses, after which the
//!   connection is dropped).
//! * [`Response::Drop`]: the connection is closed without a single response byte. This is done by
//!   answering with a body whose first read fails: hyper buffers the response head, hits the body
//!   error before flushing, and aborts the connection. Clients see "connection closed before
//!   message completed" (not a timeout, not an HTTP status).
//! * `down` with mode `refused`: on the shared port it is approximated by [`Response::Drop`]
//!   (a shared listener cannot refuse connections for one machine only). On a machine's dedicated
//!   port it is faithful: the listener is closed during the down window, so connections are
//!   refused by the kernel, and bound again on the same port once the window ends.

/// The `--demo` scenario: every rule fires within about a minute with the demo's
/// short rule durations (`scenarios/quickstart.json`).
pub const QUICKSTART: &str = include_str!("../scenarios/quickstart.json");

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use poem::http::StatusCode;
use poem::listener::TcpAcceptor;
use poem::{Body, Endpoint, Request, Route, Server};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// CPU percentage reported by behaviours that do not script the CPU.
pub const BASE_CPU: f64 = 20.0;
/// Memory percentage reported by behaviours that do not script memory ("fixed moderate").
pub const BASE_MEM: f64 = 40.0;
/// Disk percentage reported by behaviours that do not script the disk ("fixed moderate").
pub const BASE_DISK: f64 = 50.0;
/// Default size of a `huge` body: twice the poller's default 64 KiB limit.
pub const DEFAULT_HUGE_BYTES: usize = 128 * 1024;
/// Largest `huge` body a scenario may ask for.
pub const MAX_HUGE_BYTES: usize = 64 * 1024 * 1024;
/// Number of distinct payloads the `dialects` behaviour cycles through.
pub const DIALECT_COUNT: u64 = 18;
/// Longest a hanging request is held open before the connection is dropped.
pub const HANG_CAP: Duration = Duration::from_secs(3600);

/// How often dedicated-port supervisors re-check whether their machine is in a refused window.
const SUPERVISOR_TICK: Duration = Duration::from_millis(20);
/// How long graceful shutdown waits for in-flight (e.g. hanging) requests before cutting them.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(500);

// ---------------------------------------------------------------------------------------------
// Scenario
// ---------------------------------------------------------------------------------------------

/// A fleet description: the machines to fake and how each behaves.
///
/// JSON form: `{"machines": [{"name": "web-1", "port": 0, "behaviour": {"kind": "steady", ...}}]}`
/// (`port` and `description` are optional).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Free-form note about the scenario; ignored by the fleet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The machines, served in this order by `GET /machines`.
    pub machines: Vec<MachineSpec>,
}

/// One fake machine of a [`Scenario`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineSpec {
    /// Unique name, used in the URL: letters, digits, `-`, `_` and `.` only.
    pub name: String,
    /// Optional dedicated port (0 = ephemeral) on the fleet's IP, serving `GET /status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Free-form note about the machine; ignored by the fleet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// What the machine answers.
    pub behaviour: Behaviour,
}

/// Why a scenario could not be loaded or is not acceptable.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The scenario file could not be read.
    #[error("cannot read scenario file {path}: {source}")]
    Io {
        /// The file that was read.
        path: String,
        /// The underlying error.
        source: io::Error,
    },
    /// The scenario is not valid JSON or does not match the scenario format.
    #[error("invalid scenario JSON: {0}")]
    Parse(#[from] serde_json::Error),
    /// The scenario parsed but is inconsistent (duplicate names, bad parameters, ...).
    #[error("invalid scenario: {0}")]
    Invalid(String),
}

impl Scenario {
    /// An empty scenario, to be filled with [`Scenario::machine`] and friends.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a machine served only on the shared port.
    #[must_use]
    pub fn machine(mut self, name: impl Into<String>, behaviour: Behaviour) -> Self {
        self.machines.push(MachineSpec {
            name: name.into(),
            port: None,
            description: None,
            behaviour,
        });
        self
    }

    /// Adds a machine that also gets a dedicated listener on `port` (0 = ephemeral).
    #[must_use]
    pub fn machine_on_port(
        mut self,
        name: impl Into<String>,
        port: u16,
        behaviour: Behaviour,
    ) -> Self {
        self.machines.push(MachineSpec {
            name: name.into(),
            port: Some(port),
            description: None,
            behaviour,
        });
        self
    }

    /// Parses and validates a scenario from JSON text.
    pub fn from_json_str(text: &str) -> Result<Self, ScenarioError> {
        let scenario: Scenario = serde_json::from_str(text)?;
        scenario.validate()?;
        Ok(scenario)
    }

    /// Reads, parses and validates a scenario file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ScenarioError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_json_str(&text)
    }

    /// The scenario as pretty JSON (the format [`Scenario::from_json_str`] reads).
    pub fn to_json_string(&self) -> Result<String, ScenarioError> {
        Ok(serde_json::to_string_pretty(self)?)
    }

    /// Checks names (non-empty, URL-safe, unique), explicit ports (unique) and behaviour
    /// parameters.
    pub fn validate(&self) -> Result<(), ScenarioError> {
        let mut names = std::collections::HashSet::new();
        let mut ports = std::collections::HashSet::new();
        for m in &self.machines {
            if m.name.is_empty()
                || !m
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            {
                return Err(ScenarioError::Invalid(format!(
                    "machine name {:?} must be non-empty and use only letters, digits, '-', '_' or '.'",
                    m.name
                )));
            }
            if !names.insert(m.name.as_str()) {
                return Err(ScenarioError::Invalid(format!(
                    "duplicate machine name {:?}",
                    m.name
                )));
            }
            if let Some(port) = m.port {
                if port != 0 && !ports.insert(port) {
                    return Err(ScenarioError::Invalid(format!(
                        "machine {:?}: port {port} is used by another machine",
                        m.name
                    )));
                }
            }
            m.behaviour
                .validate()
                .map_err(|e| ScenarioError::Invalid(format!("machine {:?}: {e}", m.name)))?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Behaviours
// ---------------------------------------------------------------------------------------------

/// How a `down` machine fails during its down window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DownMode {
    /// Connections are refused (dedicated port) or dropped without a response (shared port).
    Refused,
    /// Requests are accepted but never answered.
    Hang,
}

/// What a machine answers, as a function of scenario time and request index.
///
/// JSON form: an object tagged by `"kind"`, e.g. `{"kind": "cpu_spike", "base": 20, "peak": 95,
/// "after_s": 60, "duration_s": 300}`. Metrics not scripted by a behaviour are
/// [`BASE_CPU`], [`BASE_MEM`], [`BASE_DISK`]. Every successful payload carries `uptime` derived
/// from scenario time (see [`format_uptime`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Behaviour {
    /// Constant values.
    Steady {
        /// CPU percentage.
        cpu: f64,
        /// Memory percentage.
        mem: f64,
        /// Disk percentage.
        disk: f64,
    },
    /// CPU at `peak` for `after_s <= t < after_s + duration_s`, else `base`.
    CpuSpike {
        /// CPU outside the spike.
        base: f64,
        /// CPU during the spike.
        peak: f64,
        /// Scenario second the spike starts.
        after_s: f64,
        /// Length of the spike in scenario seconds.
        duration_s: f64,
    },
    /// Memory at `value` from `after_s` on (before: [`BASE_MEM`]).
    MemHigh {
        /// Memory percentage once high.
        value: f64,
        /// Scenario second memory goes high.
        after_s: f64,
    },
    /// Disk grows linearly: `min(start + per_hour * t / 3600, 100)`.
    DiskFill {
        /// Disk percentage at scenario time 0.
        start: f64,
        /// Growth in percentage points per scenario hour.
        per_hour: f64,
    },
    /// CPU alternates: `low` during even periods (`floor(t / period_s)` even), `high` during odd.
    Flapping {
        /// CPU in even periods.
        low: f64,
        /// CPU in odd periods.
        high: f64,
        /// Length of one period in scenario seconds.
        period_s: f64,
    },
    /// Unreachable for `after_s <= t < until_s` (no `until_s`: for ever); healthy otherwise.
    Down {
        /// How the machine fails.
        mode: DownMode,
        /// Scenario second the outage starts (default 0).
        #[serde(default)]
        after_s: f64,
        /// Scenario second the outage ends (absent: never).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        until_s: Option<f64>,
    },
    /// Answers after `delay_ms` real milliseconds with constant values.
    Slow {
        /// Delay before answering, in real milliseconds (not scaled by the clock speed).
        delay_ms: u64,
        /// CPU percentage.
        cpu: f64,
        /// Memory percentage.
        mem: f64,
        /// Disk percentage.
        disk: f64,
    },
    /// Answers with this HTTP status (200..=599) and a short text body.
    HttpError {
        /// The HTTP status code.
        status: u16,
    },
    /// Answers 200 with `body` verbatim as `application/json` (it need not be JSON).
    Garbage {
        /// The body to send.
        body: String,
    },
    /// Cycles, one per request, through [`DIALECT_COUNT`] payloads covering every value dialect
    /// of SPEC §1 (see [`dialect_payload`]).
    Dialects,
    /// A valid JSON payload padded to at least `bytes` bytes (default [`DEFAULT_HUGE_BYTES`]).
    Huge {
        /// Minimum body size in bytes.
        #[serde(default = "default_huge_bytes")]
        bytes: usize,
    },
    /// The i-th request gets the i-th step; the last step repeats.
    Sequence {
        /// The scripted answers (at least one).
        steps: Vec<Step>,
    },
}

fn default_huge_bytes() -> usize {
    DEFAULT_HUGE_BYTES
}

/// What the fleet does for one request, independent of HTTP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    /// HTTP 200, `content-type: application/json`, this body verbatim.
    Json(String),
    /// This HTTP status with a short text body.
    Status(u16),
    /// Never answer.
    Hang,
    /// Close the connection without a response.
    Drop,
    /// Wait this many real milliseconds, then do the inner response.
    Delay(u64, Box<Response>),
}

impl Behaviour {
    /// The answer to the request number `request_index` (0-based, per machine) arriving at
    /// `scenario_time_s`. Pure: same inputs, same answer.
    pub fn respond(&self, scenario_time_s: f64, request_index: u64) -> Response {
        let t = scenario_time_s;
        match self {
            Behaviour::Steady { cpu, mem, disk } => Response::Json(payload(*cpu, *mem, *disk, t)),
            Behaviour::CpuSpike {
                base,
                peak,
                after_s,
                duration_s,
            } => {
                let cpu = if t >= *after_s && t < after_s + duration_s {
                    *peak
                } else {
                    *base
                };
                Response::Json(payload(cpu, BASE_MEM, BASE_DISK, t))
            }
            Behaviour::MemHigh { value, after_s } => {
                let mem = if t >= *after_s { *value } else { BASE_MEM };
                Response::Json(payload(BASE_CPU, mem, BASE_DISK, t))
            }
            Behaviour::DiskFill { start, per_hour } => {
                let disk = (start + per_hour * t / 3600.0).min(100.0);
                Response::Json(payload(BASE_CPU, BASE_MEM, disk, t))
            }
            Behaviour::Flapping {
                low,
                high,
                period_s,
            } => {
                let period = (t / period_s).floor();
                let cpu = if period.rem_euclid(2.0) < 1.0 {
                    *low
                } else {
                    *high
                };
                Response::Json(payload(cpu, BASE_MEM, BASE_DISK, t))
            }
            Behaviour::Down { mode, .. } => {
                if self.is_down_at(t) {
                    match mode {
                        DownMode::Refused => Response::Drop,
                        DownMode::Hang => Response::Hang,
                    }
                } else {
                    Response::Json(payload(BASE_CPU, BASE_MEM, BASE_DISK, t))
                }
            }
            Behaviour::Slow {
                delay_ms,
                cpu,
                mem,
                disk,
            } => Response::Delay(
                *delay_ms,
                Box::new(Response::Json(payload(*cpu, *mem, *disk, t))),
            ),
            Behaviour::HttpError { status } => Response::Status(*status),
            Behaviour::Garbage { body } => Response::Json(body.clone()),
            Behaviour::Dialects => Response::Json(dialect_payload(request_index, t)),
            Behaviour::Huge { bytes } => Response::Json(huge_payload(*bytes, t)),
            Behaviour::Sequence { steps } => {
                let last = steps.len().saturating_sub(1);
                let i = usize::try_from(request_index)
                    .unwrap_or(usize::MAX)
                    .min(last);
                match steps.get(i) {
                    Some(step) => step.respond(t),
                    None => Response::Status(500),
                }
            }
        }
    }

    /// Whether a `down` behaviour is inside its down window at `scenario_time_s` (any mode).
    /// Always false for other behaviours.
    pub fn is_down_at(&self, scenario_time_s: f64) -> bool {
        match self {
            Behaviour::Down {
                after_s, until_s, ..
            } => scenario_time_s >= *after_s && until_s.is_none_or(|u| scenario_time_s < u),
            _ => false,
        }
    }

    /// Whether connections should be refused at `scenario_time_s`: a `down` behaviour in mode
    /// `refused`, inside its window. Dedicated listeners are closed exactly while this holds.
    pub fn is_refused_at(&self, scenario_time_s: f64) -> bool {
        matches!(
            self,
            Behaviour::Down {
                mode: DownMode::Refused,
                ..
            }
        ) && self.is_down_at(scenario_time_s)
    }

    /// Checks the behaviour's parameters (finite numbers, positive periods, valid statuses, ...).
    pub fn validate(&self) -> Result<(), String> {
        let finite = |what: &str, v: f64| {
            if v.is_finite() {
                Ok(())
            } else {
                Err(format!("{what} must be a finite number"))
            }
        };
        match self {
            Behaviour::Steady { cpu, mem, disk } | Behaviour::Slow { cpu, mem, disk, .. } => {
                finite("cpu", *cpu)?;
                finite("mem", *mem)?;
                finite("disk", *disk)?;
            }
            Behaviour::CpuSpike {
                base,
                peak,
                after_s,
                duration_s,
            } => {
                finite("base", *base)?;
                finite("peak", *peak)?;
                finite("after_s", *after_s)?;
                finite("duration_s", *duration_s)?;
                if *duration_s < 0.0 {
                    return Err("duration_s must not be negative".into());
                }
            }
            Behaviour::MemHigh { value, after_s } => {
                finite("value", *value)?;
                finite("after_s", *after_s)?;
            }
            Behaviour::DiskFill { start, per_hour } => {
                finite("start", *start)?;
                finite("per_hour", *per_hour)?;
            }
            Behaviour::Flapping {
                low,
                high,
                period_s,
            } => {
                finite("low", *low)?;
                finite("high", *high)?;
                finite("period_s", *period_s)?;
                if *period_s <= 0.0 {
                    return Err("period_s must be positive".into());
                }
            }
            Behaviour::Down {
                after_s, until_s, ..
            } => {
                finite("after_s", *after_s)?;
                if let Some(until) = until_s {
                    finite("until_s", *until)?;
                    if until <= after_s {
                        return Err("until_s must be after after_s".into());
                    }
                }
            }
            Behaviour::HttpError { status } => check_status(*status)?,
            Behaviour::Garbage { .. } | Behaviour::Dialects => {}
            Behaviour::Huge { bytes } => {
                if *bytes > MAX_HUGE_BYTES {
                    return Err(format!("bytes must be at most {MAX_HUGE_BYTES}"));
                }
            }
            Behaviour::Sequence { steps } => {
                if steps.is_empty() {
                    return Err("a sequence needs at least one step".into());
                }
                for step in steps {
                    step.validate()?;
                }
            }
        }
        Ok(())
    }
}

fn check_status(status: u16) -> Result<(), String> {
    if (200..=599).contains(&status) {
        Ok(())
    } else {
        Err(format!("HTTP status {status} must be within 200..=599"))
    }
}

// ---------------------------------------------------------------------------------------------
// Sequence steps
// ---------------------------------------------------------------------------------------------

/// One scripted answer of a `sequence` behaviour.
///
/// JSON forms:
/// * `"hang"` / `"drop"` → [`Step::Hang`] / [`Step::Drop`];
/// * `{"error": 500}` (the only key) → [`Step::Error`];
/// * `{"body": "not json{"}` (the only key) → [`Step::Body`];
/// * `{"delay_ms": 2000, "then": STEP}` (exactly these keys) → [`Step::Delayed`];
/// * any other object → [`Step::Sample`], sent verbatim (values may be any dialect, e.g.
///   `{"cpu": "91%", "mem": 40, "disk": 50}`); `uptime` is added from scenario time if absent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "Value", into = "Value")]
pub enum Step {
    /// A payload object sent as JSON (plus `uptime` if it has none).
    Sample(Map<String, Value>),
    /// Answer with this HTTP status.
    Error(u16),
    /// Answer 200 with this body verbatim as `application/json`.
    Body(String),
    /// Never answer.
    Hang,
    /// Close the connection without a response.
    Drop,
    /// Wait this many real milliseconds, then do the inner step.
    Delayed(u64, Box<Step>),
}

impl Step {
    /// A sample with numeric cpu/mem/disk (uptime from scenario time).
    pub fn sample(cpu: f64, mem: f64, disk: f64) -> Self {
        let mut map = Map::new();
        map.insert("cpu".into(), json!(cpu));
        map.insert("mem".into(), json!(mem));
        map.insert("disk".into(), json!(disk));
        Step::Sample(map)
    }

    /// A sample with numeric cpu/mem/disk and an explicit uptime (any dialect).
    pub fn sample_with_uptime(cpu: f64, mem: f64, disk: f64, uptime: impl Into<Value>) -> Self {
        let mut step = Self::sample(cpu, mem, disk);
        if let Step::Sample(map) = &mut step {
            map.insert("uptime".into(), uptime.into());
        }
        step
    }

    /// The answer this step gives at `scenario_time_s`.
    pub fn respond(&self, scenario_time_s: f64) -> Response {
        match self {
            Step::Sample(map) => {
                let mut map = map.clone();
                if !map.contains_key("uptime") {
                    map.insert("uptime".into(), json!(format_uptime(scenario_time_s)));
                }
                Response::Json(Value::Object(map).to_string())
            }
            Step::Error(status) => Response::Status(*status),
            Step::Body(body) => Response::Json(body.clone()),
            Step::Hang => Response::Hang,
            Step::Drop => Response::Drop,
            Step::Delayed(ms, inner) => {
                Response::Delay(*ms, Box::new(inner.respond(scenario_time_s)))
            }
        }
    }

    fn validate(&self) -> Result<(), String> {
        match self {
            Step::Error(status) => check_status(*status),
            Step::Delayed(_, inner) => inner.validate(),
            _ => Ok(()),
        }
    }
}

impl TryFrom<Value> for Step {
    type Error = String;

    fn try_from(value: Value) -> Result<Self, String> {
        match value {
            Value::String(s) => match s.as_str() {
                "hang" => Ok(Step::Hang),
                "drop" => Ok(Step::Drop),
                other => Err(format!(
                    "unknown sequence step {other:?} (expected \"hang\", \"drop\" or an object)"
                )),
            },
            Value::Object(map) => {
                let only = |key: &str| map.len() == 1 && map.contains_key(key);
                if only("error") {
                    let status = map
                        .get("error")
                        .and_then(Value::as_u64)
                        .and_then(|s| u16::try_from(s).ok())
                        .ok_or_else(|| {
                            "step \"error\" must be an HTTP status number".to_string()
                        })?;
                    Ok(Step::Error(status))
                } else if only("body") {
                    match map.get("body") {
                        Some(Value::String(body)) => Ok(Step::Body(body.clone())),
                        _ => Err("step \"body\" must be a string".into()),
                    }
                } else if map.len() == 2 && map.contains_key("delay_ms") && map.contains_key("then")
                {
                    let ms = map.get("delay_ms").and_then(Value::as_u64).ok_or_else(|| {
                        "step \"delay_ms\" must be a non-negative integer".to_string()
                    })?;
                    let then = map.get("then").cloned().unwrap_or(Value::Null);
                    Ok(Step::Delayed(ms, Box::new(Step::try_from(then)?)))
                } else {
                    Ok(Step::Sample(map))
                }
            }
            other => Err(format!(
                "a sequence step must be \"hang\", \"drop\" or an object, not {other}"
            )),
        }
    }
}

impl From<Step> for Value {
    fn from(step: Step) -> Value {
        match step {
            Step::Sample(map) => Value::Object(map),
            Step::Error(status) => json!({ "error": status }),
            Step::Body(body) => json!({ "body": body }),
            Step::Hang => json!("hang"),
            Step::Drop => json!("drop"),
            Step::Delayed(ms, inner) => json!({ "delay_ms": ms, "then": Value::from(*inner) }),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Payload helpers
// ---------------------------------------------------------------------------------------------

/// Whole seconds of uptime at `scenario_time_s` (negative times count as 0).
fn uptime_secs(scenario_time_s: f64) -> u64 {
    if scenario_time_s.is_finite() && scenario_time_s > 0.0 {
        // Truncation is intended: uptime is reported in whole seconds.
        scenario_time_s.floor() as u64
    } else {
        0
    }
}

/// Formats scenario time as an uptime like `"1d 2h 37m 6s"`, starting at the largest non-zero
/// unit (`"5m 3s"`, `"2h 0m 0s"`, `"0s"`). Negative times count as 0.
pub fn format_uptime(scenario_time_s: f64) -> String {
    let total = uptime_secs(scenario_time_s);
    let (d, h, m, s) = (
        total / 86_400,
        (total % 86_400) / 3600,
        (total % 3600) / 60,
        total % 60,
    );
    if d > 0 {
        format!("{d}d {h}h {m}m {s}s")
    } else if h > 0 {
        format!("{h}h {m}m {s}s")
    } else if m > 0 {
        format!("{m}m {s}s")
    } else {
        format!("{s}s")
    }
}

/// The standard payload: numeric metrics and the scenario-time uptime.
fn payload(cpu: f64, mem: f64, disk: f64, t: f64) -> String {
    json!({ "cpu": cpu, "mem": mem, "disk": disk, "uptime": format_uptime(t) }).to_string()
}

/// A valid payload padded with a `"padding"` string field to at least `bytes` bytes.
fn huge_payload(bytes: usize, t: f64) -> String {
    let base = payload(BASE_CPU, BASE_MEM, BASE_DISK, t);
    let head = base.strip_suffix('}').unwrap_or("{");
    // head + `,"padding":"` (12) + padding + `"}` (2)
    let pad = bytes.saturating_sub(head.len() + 14);
    let mut out = String::with_capacity(head.len() + 14 + pad);
    out.push_str(head);
    out.push_str(",\"padding\":\"");
    out.extend(std::iter::repeat_n('x', pad));
    out.push_str("\"}");
    out
}

/// The `dialects` payload for request `request_index` (cycling every [`DIALECT_COUNT`]).
///
/// | index | content |
/// |---|---|
/// | 0 | numbers (`30`, `40.5`), uptime as a number of seconds (scenario time) |
/// | 1 | strings `"30%"`, `" 30.5 % "`, `"30"`, uptime as a numeric string (scenario time) |
/// | 2 | uptime `"1d 2h 37m 6s"` |
/// | 3 | uptime `"2h"` |
/// | 4 | uptime `"5m 3s"` |
/// | 5 | uptime `"01:02:03"` |
/// | 6 | uptime `"3 days, 04:05:06"` |
/// | 7 | uptime `"1 day, 00:00:01"` |
/// | 8 | uptime `"1d2h37m6s"` (spaces optional) |
/// | 9 | unparseable uptime `"since tuesday"` (metrics valid) |
/// | 10 | cpu `-5` (invalid), disk `null` (invalid), mem valid |
/// | 11 | mem `101` (invalid), disk `"abc"` (invalid), cpu valid |
/// | 12 | cpu `"Infinity"`, mem `"NaN"` (invalid), disk valid |
/// | 13 | cpu `true`, mem `"101%"`, disk `"-1"`: none usable (an `invalid_payload`) |
/// | 14 | valid, plus unknown extra fields (string, array, object) |
/// | 15 | only cpu present (mem and disk missing), uptime absent |
/// | 16 | decimals as numbers and strings (`60.5`, `"60.5"`, `"99.9 %"`), uptime a float |
/// | 17 | boundaries `0`, `"100%"`, `"0 %"`: valid, uptime `"0s"` |
pub fn dialect_payload(request_index: u64, scenario_time_s: f64) -> String {
    let up = uptime_secs(scenario_time_s);
    let v = match request_index % DIALECT_COUNT {
        0 => json!({"cpu": 30, "mem": 40.5, "disk": 50, "uptime": up}),
        1 => json!({"cpu": "30%", "mem": " 30.5 % ", "disk": "30", "uptime": up.to_string()}),
        2 => json!({"cpu": 31, "mem": "41%", "disk": 51, "uptime": "1d 2h 37m 6s"}),
        3 => json!({"cpu": 32, "mem": 42, "disk": "52%", "uptime": "2h"}),
        4 => json!({"cpu": 33, "mem": 43, "disk": 53, "uptime": "5m 3s"}),
        5 => json!({"cpu": 34, "mem": 44, "disk": 54, "uptime": "01:02:03"}),
        6 => json!({"cpu": 35, "mem": 45, "disk": 55, "uptime": "3 days, 04:05:06"}),
        7 => json!({"cpu": 36, "mem": 46, "disk": 56, "uptime": "1 day, 00:00:01"}),
        8 => json!({"cpu": 37, "mem": 47, "disk": 57, "uptime": "1d2h37m6s"}),
        9 => json!({"cpu": 38, "mem": 48, "disk": 58, "uptime": "since tuesday"}),
        10 => json!({"cpu": -5, "mem": 40, "disk": null, "uptime": up}),
        11 => json!({"cpu": 50, "mem": 101, "disk": "abc", "uptime": up}),
        12 => json!({"cpu": "Infinity", "mem": "NaN", "disk": 60, "uptime": up}),
        13 => json!({"cpu": true, "mem": "101%", "disk": "-1", "uptime": up}),
        14 => json!({
            "cpu": 20, "mem": 30, "disk": 40, "uptime": up,
            "hostname": "fake", "load": [0.5, 0.4, 0.3], "meta": {"os": "linux", "cores": 2}
        }),
        15 => json!({"cpu": 25}),
        16 => json!({"cpu": 60.5, "mem": "60.5", "disk": "99.9 %", "uptime": up as f64 + 0.5}),
        _ => json!({"cpu": 0, "mem": "100%", "disk": "0 %", "uptime": "0s"}),
    };
    v.to_string()
}

// ---------------------------------------------------------------------------------------------
// Clock
// ---------------------------------------------------------------------------------------------

/// Source of scenario time, shared (cheaply cloned) between the fleet and a test.
///
/// * [`FleetClock::real`]: scenario seconds = real seconds since the fleet started × speed
///   (plus any offset set with [`FleetClock::set`]).
/// * [`FleetClock::manual`]: time moves only through [`FleetClock::set`] / [`FleetClock::advance`].
#[derive(Clone)]
pub struct FleetClock {
    inner: Arc<Mutex<ClockState>>,
}

#[derive(Debug)]
struct ClockState {
    /// `Some(speed)` for a real clock, `None` for a manual one.
    speed: Option<f64>,
    /// Real instant at which scenario time was `base_s`.
    origin: Instant,
    /// Scenario time at `origin`.
    base_s: f64,
}

impl fmt::Debug for FleetClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock();
        f.debug_struct("FleetClock")
            .field("speed", &state.speed)
            .field("now_s", &now_of(&state))
            .finish()
    }
}

fn now_of(state: &ClockState) -> f64 {
    match state.speed {
        Some(speed) => state.base_s + state.origin.elapsed().as_secs_f64() * speed,
        None => state.base_s,
    }
}

impl FleetClock {
    /// A real clock running `speed` times faster than wall time (a non-finite or non-positive
    /// speed is treated as 1.0). Starts at 0 when the fleet starts.
    pub fn real(speed: f64) -> Self {
        let speed = if speed.is_finite() && speed > 0.0 {
            speed
        } else {
            1.0
        };
        Self::with_state(Some(speed), 0.0)
    }

    /// A manual clock at `start_s` scenario seconds; it moves only when told to.
    pub fn manual(start_s: f64) -> Self {
        Self::with_state(None, start_s)
    }

    fn with_state(speed: Option<f64>, base_s: f64) -> Self {
        Self {
            inner: Arc::new(Mutex::new(ClockState {
                speed,
                origin: Instant::now(),
                base_s,
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ClockState> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Current scenario time in seconds.
    pub fn now_s(&self) -> f64 {
        now_of(&self.lock())
    }

    /// The speed factor (`None` for a manual clock).
    pub fn speed(&self) -> Option<f64> {
        self.lock().speed
    }

    /// Jumps to `scenario_time_s` (a real clock keeps running from there).
    pub fn set(&self, scenario_time_s: f64) {
        let mut state = self.lock();
        state.base_s = scenario_time_s;
        state.origin = Instant::now();
    }

    /// Moves scenario time forward (or back, if negative) by `delta_s`.
    pub fn advance(&self, delta_s: f64) {
        let mut state = self.lock();
        let now = now_of(&state);
        state.base_s = now + delta_s;
        state.origin = Instant::now();
    }

    /// Real clocks count from the fleet start: re-anchor the origin without changing `base_s`.
    fn mark_fleet_start(&self) {
        let mut state = self.lock();
        if state.speed.is_some() {
            state.origin = Instant::now();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Fleet
// ---------------------------------------------------------------------------------------------

/// Entry point: starts the fake fleet (see the module docs).
#[derive(Debug)]
pub struct Fleet;

/// Per-machine runtime state.
struct MachineState {
    spec: MachineSpec,
    requests: AtomicU64,
    /// Address of the dedicated listener, if the machine has one.
    dedicated: Option<SocketAddr>,
    /// Whether the dedicated listener is currently bound.
    listening: AtomicBool,
}

/// State shared by every endpoint and supervisor.
struct Shared {
    machines: Vec<Arc<MachineState>>,
    by_name: HashMap<String, Arc<MachineState>>,
    clock: FleetClock,
    shutdown: watch::Receiver<bool>,
}

impl Shared {
    /// Counts the request and renders the machine's answer.
    async fn serve(&self, machine: &MachineState) -> poem::Response {
        let index = machine.requests.fetch_add(1, Ordering::SeqCst);
        let response = machine.spec.behaviour.respond(self.clock.now_s(), index);
        render(response, self.shutdown.clone()).await
    }
}

/// Resolves once the fleet is shutting down (or its handle is gone).
async fn shutdown_signal(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// A body whose first read fails, making hyper abort the connection before any byte is sent.
struct AbortingBody;

impl AsyncRead for AbortingBody {
    fn poll_read(
        self: Pin<&mut Self>,
        _cx: &mut TaskContext<'_>,
        _buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::ConnectionAborted,
            "fake-fleet: dropping the connection on purpose",
        )))
    }
}

fn drop_response() -> poem::Response {
    poem::Response::builder()
        .status(StatusCode::OK)
        .content_type("application/json")
        // A declared length the body never delivers: if poem ends the failing body
        // cleanly, hyper still has to cut the connection mid-response.
        .header("content-length", "1024")
        .body(Body::from_async_read(AbortingBody))
}

/// Turns a [`Response`] into an HTTP response, sleeping/hanging as needed.
async fn render(response: Response, shutdown: watch::Receiver<bool>) -> poem::Response {
    let mut response = response;
    let mut delay_ms: u64 = 0;
    while let Response::Delay(ms, inner) = response {
        delay_ms = delay_ms.saturating_add(ms);
        response = *inner;
    }
    if delay_ms > 0 {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(delay_ms)) => {}
            _ = shutdown_signal(shutdown.clone()) => return drop_response(),
        }
    }
    match response {
        Response::Json(body) => poem::Response::builder()
            .status(StatusCode::OK)
            .content_type("application/json")
            .body(body),
        Response::Status(code) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            poem::Response::builder()
                .status(status)
                .content_type("text/plain")
                .body(format!("fake-fleet: scripted HTTP {}", status.as_u16()))
        }
        Response::Hang => {
            tokio::select! {
                _ = tokio::time::sleep(HANG_CAP) => {}
                _ = shutdown_signal(shutdown) => {}
            }
            drop_response()
        }
        Response::Drop | Response::Delay(..) => drop_response(),
    }
}

fn not_found(what: &str) -> poem::Response {
    poem::Response::builder()
        .status(StatusCode::NOT_FOUND)
        .content_type("text/plain")
        .body(format!("fake-fleet: no such machine {what:?}"))
}

/// `GET /machines`: the machine names as a JSON array.
struct ListEndpoint {
    shared: Arc<Shared>,
}

impl Endpoint for ListEndpoint {
    type Output = poem::Response;

    async fn call(&self, _req: Request) -> poem::Result<Self::Output> {
        let names: Vec<&str> = self
            .shared
            .machines
            .iter()
            .map(|m| m.spec.name.as_str())
            .collect();
        Ok(poem::Response::builder()
            .status(StatusCode::OK)
            .content_type("application/json")
            .body(json!(names).to_string()))
    }
}

/// `GET /machines/:name/status` (shared port) or `GET /status` (dedicated port, `fixed` set).
struct StatusEndpoint {
    shared: Arc<Shared>,
    fixed: Option<Arc<MachineState>>,
}

impl Endpoint for StatusEndpoint {
    type Output = poem::Response;

    async fn call(&self, req: Request) -> poem::Result<Self::Output> {
        let machine = match &self.fixed {
            Some(m) => m.clone(),
            None => {
                let name = req.raw_path_param("name").unwrap_or_default();
                match self.shared.by_name.get(name) {
                    Some(m) => m.clone(),
                    None => return Ok(not_found(name)),
                }
            }
        };
        Ok(self.shared.serve(&machine).await)
    }
}

/// Serves one dedicated port, closing it during refused windows and re-binding afterwards.
async fn run_dedicated(
    shared: Arc<Shared>,
    machine: Arc<MachineState>,
    addr: SocketAddr,
    mut listener: Option<tokio::net::TcpListener>,
) {
    let name = machine.spec.name.clone();
    loop {
        if *shared.shutdown.borrow() {
            break;
        }
        if machine.spec.behaviour.is_refused_at(shared.clock.now_s()) {
            drop(listener.take());
            machine.listening.store(false, Ordering::SeqCst);
            tokio::select! {
                _ = tokio::time::sleep(SUPERVISOR_TICK) => continue,
                _ = shutdown_signal(shared.shutdown.clone()) => break,
            }
        }
        let tcp = match listener.take() {
            Some(l) => l,
            None => match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(machine = %name, %addr, error = %e, "cannot re-bind dedicated port; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(SUPERVISOR_TICK) => continue,
                        _ = shutdown_signal(shared.shutdown.clone()) => break,
                    }
                }
            },
        };
        let acceptor = match TcpAcceptor::from_tokio(tcp) {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(machine = %name, %addr, error = %e, "cannot use dedicated listener");
                continue;
            }
        };
        machine.listening.store(true, Ordering::SeqCst);
        let app = Route::new().at(
            "/status",
            poem::get(StatusEndpoint {
                shared: shared.clone(),
                fixed: Some(machine.clone()),
            }),
        );
        let stop = {
            let shared = shared.clone();
            let machine = machine.clone();
            async move {
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(SUPERVISOR_TICK) => {
                            if machine.spec.behaviour.is_refused_at(shared.clock.now_s()) {
                                break;
                            }
                        }
                        _ = shutdown_signal(shared.shutdown.clone()) => break,
                    }
                }
            }
        };
        let result = Server::new_with_acceptor(acceptor)
            .name(format!("fake-fleet/{name}"))
            .run_with_graceful_shutdown(app, stop, Some(SHUTDOWN_GRACE))
            .await;
        // The acceptor is dropped by now: new connections are refused.
        machine.listening.store(false, Ordering::SeqCst);
        if let Err(e) = result {
            tracing::warn!(machine = %name, %addr, error = %e, "dedicated server failed");
        }
    }
    machine.listening.store(false, Ordering::SeqCst);
}

impl Fleet {
    /// Validates `scenario`, binds the shared listener on `addr` (port 0 = ephemeral) and every
    /// dedicated port (on the same IP), and starts serving. Scenario time comes from `clock`;
    /// a real clock starts counting now.
    pub async fn start(
        scenario: Scenario,
        addr: SocketAddr,
        clock: FleetClock,
    ) -> anyhow::Result<FleetHandle> {
        scenario.validate()?;
        clock.mark_fleet_start();

        let shared_listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot bind the fleet listener on {addr}"))?;
        let local = shared_listener.local_addr()?;

        let mut machines = Vec::with_capacity(scenario.machines.len());
        let mut dedicated_listeners = Vec::new();
        for spec in scenario.machines {
            let dedicated = match spec.port {
                Some(port) => {
                    let want = SocketAddr::new(local.ip(), port);
                    let l = tokio::net::TcpListener::bind(want).await.with_context(|| {
                        format!(
                            "cannot bind the dedicated port of {:?} on {want}",
                            spec.name
                        )
                    })?;
                    let bound = l.local_addr()?;
                    dedicated_listeners.push((machines.len(), bound, l));
                    Some(bound)
                }
                None => None,
            };
            machines.push(Arc::new(MachineState {
                spec,
                requests: AtomicU64::new(0),
                dedicated,
                listening: AtomicBool::new(dedicated.is_some()),
            }));
        }

        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let by_name = machines
            .iter()
            .map(|m| (m.spec.name.clone(), m.clone()))
            .collect();
        let shared = Arc::new(Shared {
            machines,
            by_name,
            clock,
            shutdown: shutdown_rx,
        });

        let mut tasks = Vec::new();
        let app = Route::new()
            .at(
                "/machines",
                poem::get(ListEndpoint {
                    shared: shared.clone(),
                }),
            )
            .at(
                "/machines/:name/status",
                poem::get(StatusEndpoint {
                    shared: shared.clone(),
                    fixed: None,
                }),
            );
        let acceptor = TcpAcceptor::from_tokio(shared_listener)?;
        let signal = shutdown_signal(shared.shutdown.clone());
        tasks.push(tokio::spawn(async move {
            if let Err(e) = Server::new_with_acceptor(acceptor)
                .name("fake-fleet")
                .run_with_graceful_shutdown(app, signal, Some(SHUTDOWN_GRACE))
                .await
            {
                tracing::warn!(error = %e, "fake fleet server failed");
            }
        }));

        for (index, bound, listener) in dedicated_listeners {
            if let Some(machine) = shared.machines.get(index) {
                tasks.push(tokio::spawn(run_dedicated(
                    shared.clone(),
                    machine.clone(),
                    bound,
                    Some(listener),
                )));
            }
        }

        tracing::info!(addr = %local, machines = shared.machines.len(), "fake fleet started");
        Ok(FleetHandle {
            addr: local,
            shared,
            shutdown_tx,
            tasks,
        })
    }

    /// [`Fleet::start`] on `127.0.0.1:0` (an ephemeral port), for tests.
    pub async fn start_local(scenario: Scenario, clock: FleetClock) -> anyhow::Result<FleetHandle> {
        Fleet::start(scenario, SocketAddr::from(([127, 0, 0, 1], 0)), clock).await
    }
}

/// A running fleet. Dropping it stops the fleet in the background; [`FleetHandle::shutdown`]
/// stops it and waits until every listener is closed.
pub struct FleetHandle {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown_tx: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl fmt::Debug for FleetHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FleetHandle")
            .field("addr", &self.addr)
            .field("machines", &self.names())
            .finish()
    }
}

impl FleetHandle {
    /// The shared listener's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The fleet's clock (same instance the fleet reads).
    pub fn clock(&self) -> &FleetClock {
        &self.shared.clock
    }

    /// Machine names in scenario order.
    pub fn names(&self) -> Vec<String> {
        self.shared
            .machines
            .iter()
            .map(|m| m.spec.name.clone())
            .collect()
    }

    /// The URL to poll for `name`: `http://IP:PORT/status` on its dedicated port if it has one,
    /// else [`FleetHandle::shared_url_of`].
    pub fn url_of(&self, name: &str) -> String {
        match self.dedicated_addr(name) {
            Some(addr) => format!("http://{addr}/status"),
            None => self.shared_url_of(name),
        }
    }

    /// `http://ADDR/machines/{name}/status` on the shared port (404 if unknown).
    pub fn shared_url_of(&self, name: &str) -> String {
        format!("http://{}/machines/{name}/status", self.addr)
    }

    /// The dedicated listener's address of `name`, if it has one.
    pub fn dedicated_addr(&self, name: &str) -> Option<SocketAddr> {
        self.shared.by_name.get(name).and_then(|m| m.dedicated)
    }

    /// Whether the dedicated listener of `name` is bound right now (`None`: no such machine or
    /// no dedicated port).
    pub fn is_listening(&self, name: &str) -> Option<bool> {
        let m = self.shared.by_name.get(name)?;
        m.dedicated?;
        Some(m.listening.load(Ordering::SeqCst))
    }

    /// Waits until the dedicated listener of `name` is bound (`listening = true`) or closed
    /// (`false`), polling every few milliseconds; returns whether it got there within `timeout`.
    /// Useful with a manual clock: after [`FleetClock::set`] the supervisor reacts within ~20 ms.
    pub async fn wait_listening(&self, name: &str, listening: bool, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.is_listening(name) == Some(listening) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Requests received so far for `name`, on either port (0 if unknown).
    pub fn request_count(&self, name: &str) -> u64 {
        self.shared
            .by_name
            .get(name)
            .map_or(0, |m| m.requests.load(Ordering::SeqCst))
    }

    /// Stops accepting, cuts in-flight requests after a short grace period and waits until every
    /// listener is closed.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown_tx.send(true);
        for task in std::mem::take(&mut self.tasks) {
            if let Err(e) = task.await {
                tracing::warn!(error = %e, "fake fleet task failed");
            }
        }
    }
}

impl Drop for FleetHandle {
    fn drop(&mut self) {
        let _ = self.shutdown_tx.send(true);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn json_of(r: &Response) -> Value {
        match r {
            Response::Json(body) => serde_json::from_str(body).unwrap(),
            other => panic!("expected JSON, got {other:?}"),
        }
    }

    #[test]
    fn uptime_format() {
        assert_eq!(format_uptime(0.0), "0s");
        assert_eq!(format_uptime(-3.0), "0s");
        assert_eq!(format_uptime(59.9), "59s");
        assert_eq!(format_uptime(303.0), "5m 3s");
        assert_eq!(format_uptime(7200.0), "2h 0m 0s");
        assert_eq!(format_uptime(95_826.0), "1d 2h 37m 6s");
    }

    #[test]
    fn steady_is_constant_and_uptime_grows() {
        let b = Behaviour::Steady {
            cpu: 60.0,
            mem: 30.0,
            disk: 43.0,
        };
        let a = json_of(&b.respond(10.0, 0));
        let c = json_of(&b.respond(95_826.0, 7));
        assert_eq!(a["cpu"], json!(60.0));
        assert_eq!(c["mem"], json!(30.0));
        assert_eq!(c["disk"], json!(43.0));
        assert_eq!(a["uptime"], json!("10s"));
        assert_eq!(c["uptime"], json!("1d 2h 37m 6s"));
    }

    #[test]
    fn cpu_spike_window() {
        let b = Behaviour::CpuSpike {
            base: 20.0,
            peak: 95.0,
            after_s: 60.0,
            duration_s: 30.0,
        };
        assert_eq!(json_of(&b.respond(59.9, 0))["cpu"], json!(20.0));
        assert_eq!(json_of(&b.respond(60.0, 0))["cpu"], json!(95.0));
        assert_eq!(json_of(&b.respond(89.9, 0))["cpu"], json!(95.0));
        assert_eq!(json_of(&b.respond(90.0, 0))["cpu"], json!(20.0));
        assert_eq!(json_of(&b.respond(60.0, 0))["mem"], json!(BASE_MEM));
    }

    #[test]
    fn mem_high_from_after() {
        let b = Behaviour::MemHigh {
            value: 91.0,
            after_s: 100.0,
        };
        assert_eq!(json_of(&b.respond(99.0, 0))["mem"], json!(BASE_MEM));
        assert_eq!(json_of(&b.respond(100.0, 0))["mem"], json!(91.0));
        assert_eq!(json_of(&b.respond(1e6, 0))["mem"], json!(91.0));
    }

    #[test]
    fn disk_fill_is_linear_and_capped() {
        let b = Behaviour::DiskFill {
            start: 50.0,
            per_hour: 10.0,
        };
        assert_eq!(json_of(&b.respond(0.0, 0))["disk"], json!(50.0));
        assert_eq!(json_of(&b.respond(1800.0, 0))["disk"], json!(55.0));
        assert_eq!(json_of(&b.respond(36_000.0, 0))["disk"], json!(100.0));
        assert_eq!(json_of(&b.respond(72_000.0, 0))["disk"], json!(100.0));
    }

    #[test]
    fn flapping_alternates() {
        let b = Behaviour::Flapping {
            low: 10.0,
            high: 90.0,
            period_s: 60.0,
        };
        assert_eq!(json_of(&b.respond(0.0, 0))["cpu"], json!(10.0));
        assert_eq!(json_of(&b.respond(59.0, 0))["cpu"], json!(10.0));
        assert_eq!(json_of(&b.respond(60.0, 0))["cpu"], json!(90.0));
        assert_eq!(json_of(&b.respond(120.0, 0))["cpu"], json!(10.0));
        assert_eq!(json_of(&b.respond(-1.0, 0))["cpu"], json!(90.0));
    }

    #[test]
    fn down_windows() {
        let refused = Behaviour::Down {
            mode: DownMode::Refused,
            after_s: 10.0,
            until_s: Some(20.0),
        };
        assert!(matches!(refused.respond(9.0, 0), Response::Json(_)));
        assert_eq!(refused.respond(10.0, 0), Response::Drop);
        assert_eq!(refused.respond(19.9, 0), Response::Drop);
        assert!(matches!(refused.respond(20.0, 0), Response::Json(_)));
        assert!(refused.is_refused_at(15.0));
        assert!(!refused.is_refused_at(25.0));

        let hang = Behaviour::Down {
            mode: DownMode::Hang,
            after_s: 0.0,
            until_s: None,
        };
        assert_eq!(hang.respond(0.0, 0), Response::Hang);
        assert_eq!(hang.respond(1e9, 3), Response::Hang);
        assert!(hang.is_down_at(5.0));
        assert!(!hang.is_refused_at(5.0));
    }

    #[test]
    fn slow_error_garbage() {
        let slow = Behaviour::Slow {
            delay_ms: 1500,
            cpu: 1.0,
            mem: 2.0,
            disk: 3.0,
        };
        match slow.respond(0.0, 0) {
            Response::Delay(1500, inner) => assert_eq!(json_of(&inner)["disk"], json!(3.0)),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(
            Behaviour::HttpError { status: 500 }.respond(0.0, 0),
            Response::Status(500)
        );
        assert_eq!(
            Behaviour::Garbage {
                body: "not json{".into()
            }
            .respond(0.0, 0),
            Response::Json("not json{".into())
        );
    }

    #[test]
    fn dialects_cycle_and_are_json() {
        let b = Behaviour::Dialects;
        let mut seen = std::collections::HashSet::new();
        for i in 0..DIALECT_COUNT {
            let v = json_of(&b.respond(100.0, i));
            assert!(v.is_object());
            seen.insert(v.to_string());
        }
        assert_eq!(seen.len() as u64, DIALECT_COUNT);
        assert_eq!(b.respond(5.0, 3), b.respond(5.0, 3 + DIALECT_COUNT));
        assert_eq!(json_of(&b.respond(100.0, 0))["uptime"], json!(100));
        assert_eq!(json_of(&b.respond(100.0, 1))["uptime"], json!("100"));
        assert_eq!(json_of(&b.respond(0.0, 1))["mem"], json!(" 30.5 % "));
        assert_eq!(
            json_of(&b.respond(0.0, 6))["uptime"],
            json!("3 days, 04:05:06")
        );
    }

    #[test]
    fn huge_is_big_valid_json() {
        let b = Behaviour::Huge { bytes: 70_000 };
        match b.respond(3.0, 0) {
            Response::Json(body) => {
                assert!(body.len() >= 70_000);
                assert!(body.len() < 70_100);
                let v: Value = serde_json::from_str(&body).unwrap();
                assert_eq!(v["cpu"], json!(BASE_CPU));
            }
            other => panic!("unexpected {other:?}"),
        }
        // Tiny sizes still give valid JSON.
        let _: Value = serde_json::from_str(&huge_payload(1, 0.0)).unwrap();
    }

    #[test]
    fn sequence_steps_then_repeats_last() {
        let b = Behaviour::Sequence {
            steps: vec![
                Step::sample(10.0, 20.0, 30.0),
                Step::Error(503),
                Step::Hang,
                Step::sample_with_uptime(91.0, 20.0, 30.0, "2h"),
            ],
        };
        assert_eq!(json_of(&b.respond(7.0, 0))["uptime"], json!("7s"));
        assert_eq!(b.respond(0.0, 1), Response::Status(503));
        assert_eq!(b.respond(0.0, 2), Response::Hang);
        assert_eq!(json_of(&b.respond(0.0, 3))["uptime"], json!("2h"));
        assert_eq!(json_of(&b.respond(0.0, 99))["cpu"], json!(91.0));
    }

    #[test]
    fn steps_parse_from_json() {
        let steps: Vec<Step> = serde_json::from_str(
            r#"["hang", "drop", {"error": 500}, {"body": "x{"}, {"cpu": "91%", "mem": null},
                {"delay_ms": 200, "then": {"error": 502}}]"#,
        )
        .unwrap();
        assert_eq!(steps[0], Step::Hang);
        assert_eq!(steps[1], Step::Drop);
        assert_eq!(steps[2], Step::Error(500));
        assert_eq!(steps[3], Step::Body("x{".into()));
        let v = json_of(&steps[4].respond(61.0));
        assert_eq!(v["cpu"], json!("91%"));
        assert_eq!(v["mem"], Value::Null);
        assert_eq!(v["uptime"], json!("1m 1s"));
        assert_eq!(
            steps[5].respond(0.0),
            Response::Delay(200, Box::new(Response::Status(502)))
        );
        assert!(serde_json::from_str::<Step>(r#""sleep""#).is_err());
        // Round trip.
        let again: Vec<Step> =
            serde_json::from_str(&serde_json::to_string(&steps).unwrap()).unwrap();
        assert_eq!(again, steps);
    }

    #[test]
    fn scenario_parse_validate_and_builder() {
        let s = Scenario::from_json_str(
            r#"{"machines":[
                {"name":"web-1","behaviour":{"kind":"steady","cpu":1,"mem":2,"disk":3}},
                {"name":"db-1","port":0,"behaviour":{"kind":"down","mode":"refused","after_s":5}},
                {"name":"d","behaviour":{"kind":"dialects"}},
                {"name":"h","behaviour":{"kind":"huge"}}
            ]}"#,
        )
        .unwrap();
        assert_eq!(s.machines.len(), 4);
        assert_eq!(s.machines[1].port, Some(0));
        assert_eq!(
            s.machines[3].behaviour,
            Behaviour::Huge {
                bytes: DEFAULT_HUGE_BYTES
            }
        );
        let built = Scenario::new().machine(
            "web-1",
            Behaviour::Steady {
                cpu: 1.0,
                mem: 2.0,
                disk: 3.0,
            },
        );
        assert_eq!(built.machines[0], s.machines[0]);
        let round = Scenario::from_json_str(&s.to_json_string().unwrap()).unwrap();
        assert_eq!(round, s);

        let dup = Scenario::new()
            .machine("a", Behaviour::Dialects)
            .machine("a", Behaviour::Dialects);
        assert!(matches!(dup.validate(), Err(ScenarioError::Invalid(_))));
        let bad_name = Scenario::new().machine("a/b", Behaviour::Dialects);
        assert!(bad_name.validate().is_err());
        let bad_kind =
            Scenario::from_json_str(r#"{"machines":[{"name":"a","behaviour":{"kind":"nope"}}]}"#);
        assert!(matches!(bad_kind, Err(ScenarioError::Parse(_))));
        let typo = Scenario::from_json_str(
            r#"{"machines":[{"name":"a","behaviour":{"kind":"huge","byte":5}}]}"#,
        );
        assert!(typo.is_err());
        let empty_seq = Scenario::new().machine("a", Behaviour::Sequence { steps: vec![] });
        assert!(empty_seq.validate().is_err());
        let bad_status = Scenario::new().machine("a", Behaviour::HttpError { status: 42 });
        assert!(bad_status.validate().is_err());
    }

    #[test]
    fn demo_scenario_parses() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios/demo.json");
        let s = Scenario::from_file(path).unwrap();
        assert!(s.machines.len() >= 12);
    }

    #[test]
    fn quickstart_scenario_breaches_every_rule_within_a_minute() {
        let s = Scenario::from_json_str(QUICKSTART).unwrap();
        // Over the first minute: a CPU spike that ends, memory held high, the disk
        // past 95%, and an outage that ends.
        let at = |name: &str, t: f64| {
            s.machines
                .iter()
                .find(|m| m.name == name)
                .unwrap()
                .behaviour
                .clone()
                .respond(t, 0)
        };
        let field = |r: Response, key: &str| match r {
            Response::Json(body) => serde_json::from_str::<Value>(&body).unwrap()[key].to_string(),
            other => panic!("expected a payload, got {other:?}"),
        };
        assert!(field(at("web-2", 20.0), "cpu").contains("97"));
        assert!(field(at("web-2", 45.0), "cpu").contains("25"));
        assert!(field(at("cache-1", 20.0), "mem").contains("94"));
        assert!(field(at("logs-1", 30.0), "disk").contains("96"));
        assert!(matches!(at("db-1", 30.0), Response::Drop));
        assert!(!matches!(at("db-1", 75.0), Response::Drop));
    }

    #[test]
    fn clocks() {
        let manual = FleetClock::manual(10.0);
        assert_eq!(manual.now_s(), 10.0);
        manual.advance(5.0);
        assert_eq!(manual.now_s(), 15.0);
        manual.set(100.0);
        assert_eq!(manual.clone().now_s(), 100.0);
        assert_eq!(manual.speed(), None);

        let real = FleetClock::real(1000.0);
        std::thread::sleep(Duration::from_millis(20));
        assert!(real.now_s() >= 10.0);
        assert_eq!(FleetClock::real(-1.0).speed(), Some(1.0));
    }

    /// Sends one HTTP/1.1 request and returns everything the server sent before closing.
    async fn raw_get(addr: SocketAddr, path: &str) -> io::Result<String> {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream
            .write_all(
                format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
            )
            .await?;
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut buf)).await;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }

    #[tokio::test]
    async fn serves_over_http() {
        let scenario = Scenario::new()
            .machine(
                "web-1",
                Behaviour::Steady {
                    cpu: 60.0,
                    mem: 30.0,
                    disk: 43.0,
                },
            )
            .machine("boom", Behaviour::HttpError { status: 500 })
            .machine(
                "gone",
                Behaviour::Down {
                    mode: DownMode::Refused,
                    after_s: 0.0,
                    until_s: None,
                },
            );
        let fleet = Fleet::start_local(scenario, FleetClock::manual(3600.0))
            .await
            .unwrap();
        let addr = fleet.addr();

        let ok = raw_get(addr, "/machines/web-1/status").await.unwrap();
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        assert!(ok.contains("\"uptime\":\"1h 0m 0s\""), "{ok}");
        assert_eq!(fleet.request_count("web-1"), 1);

        let list = raw_get(addr, "/machines").await.unwrap();
        assert!(list.contains(r#"["web-1","boom","gone"]"#), "{list}");

        let missing = raw_get(addr, "/machines/nope/status").await.unwrap();
        assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");

        let boom = raw_get(addr, "/machines/boom/status").await.unwrap();
        assert!(boom.starts_with("HTTP/1.1 500"), "{boom}");

        // Dropped: no complete response ever arrives.
        let gone = raw_get(addr, "/machines/gone/status")
            .await
            .unwrap_or_default();
        assert!(!gone.contains("0\r\n\r\n"), "{gone}");
        assert!(!gone.contains("uptime"), "{gone}");
        assert_eq!(fleet.request_count("gone"), 1);

        assert_eq!(
            fleet.url_of("web-1"),
            format!("http://{addr}/machines/web-1/status")
        );
        fleet.shutdown().await;
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    }

    #[tokio::test]
    async fn dedicated_port_refuses_during_window() {
        let clock = FleetClock::manual(0.0);
        let scenario = Scenario::new().machine_on_port(
            "db-1",
            0,
            Behaviour::Down {
                mode: DownMode::Refused,
                after_s: 10.0,
                until_s: Some(20.0),
            },
        );
        let fleet = Fleet::start_local(scenario, clock.clone()).await.unwrap();
        let dedicated = fleet.dedicated_addr("db-1").unwrap();
        assert_eq!(fleet.url_of("db-1"), format!("http://{dedicated}/status"));

        let up = raw_get(dedicated, "/status").await.unwrap();
        assert!(up.starts_with("HTTP/1.1 200"), "{up}");

        clock.set(15.0);
        assert!(
            fleet
                .wait_listening("db-1", false, Duration::from_secs(5))
                .await
        );
        assert!(tokio::net::TcpStream::connect(dedicated).await.is_err());

        clock.set(20.0);
        assert!(
            fleet
                .wait_listening("db-1", true, Duration::from_secs(5))
                .await
        );
        let back = raw_get(dedicated, "/status").await.unwrap();
        assert!(back.starts_with("HTTP/1.1 200"), "{back}");
        assert_eq!(fleet.request_count("db-1"), 2);
        fleet.shutdown().await;
    }

    #[tokio::test]
    async fn hang_is_cut_by_shutdown() {
        let scenario = Scenario::new().machine(
            "stuck",
            Behaviour::Down {
                mode: DownMode::Hang,
                after_s: 0.0,
                until_s: None,
            },
        );
        let fleet = Fleet::start_local(scenario, FleetClock::real(1.0))
            .await
            .unwrap();
        let addr = fleet.addr();
        let client = tokio::spawn(async move { raw_get(addr, "/machines/stuck/status").await });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(fleet.request_count("stuck"), 1);
        tokio::time::timeout(Duration::from_secs(5), fleet.shutdown())
            .await
            .unwrap();
        let got = client.await.unwrap().unwrap_or_default();
        assert!(!got.contains("uptime"), "{got}");
    }
}
