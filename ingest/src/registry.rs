//! The machine registry as ingest sees it: re-read from MySQL every few seconds,
//! diffed against what is being polled; additions, edits, disabling and removals
//! take effect without a restart and are published as `Machine*` events.

use crate::config::Shard;
use crate::scheduler::{Anchor, Scheduler, Target};
use proto_events::{Envelope, Event, MachineRemoved, MachineSpec};
use std::collections::{BTreeMap, HashMap};
use storage::{on, Db};
use tokio::sync::mpsc;
use uuid::Uuid;

/// A registry row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineRow {
    /// Name (immutable key).
    pub name: String,
    /// Its settings.
    pub spec: MachineSpec,
}

/// Reads every machine of the registry.
pub async fn load_machines(db: &Db) -> Result<Vec<MachineRow>, sqlx::Error> {
    let rows: Vec<(String, String, bool, Option<i64>, String)> = on!(db, |p| sqlx::query_as(
        "SELECT name, url, enabled, interval_ms, labels FROM machines"
    )
    .fetch_all(p)
    .await)?;
    Ok(rows
        .into_iter()
        .map(|(name, url, enabled, interval_ms, labels)| MachineRow {
            name,
            spec: MachineSpec {
                url,
                enabled,
                interval_ms: interval_ms.and_then(|v| u64::try_from(v).ok()),
                labels: serde_json::from_str::<BTreeMap<String, String>>(&labels)
                    .unwrap_or_default(),
            },
        })
        .collect())
}

/// A status URL must be absolute http or https with a host.
pub fn check_url(url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("not a URL: {e}"))?;
    match parsed.scheme() {
        "http" | "https" if parsed.host_str().is_some_and(|h| !h.is_empty()) => Ok(()),
        "http" | "https" => Err("no host".to_owned()),
        other => Err(format!("scheme {other:?} is not http or https")),
    }
}

/// Keeps the scheduler in line with the registry.
pub struct Registry {
    known: HashMap<String, MachineSpec>,
    rejected: std::collections::HashSet<String>,
    shard: Shard,
    default_interval_ms: u64,
    anchor: Anchor,
}

impl Registry {
    /// A registry that has seen nothing yet.
    pub fn new(shard: Shard, default_interval_ms: u64, anchor: Anchor) -> Self {
        Registry {
            known: HashMap::new(),
            rejected: Default::default(),
            shard,
            default_interval_ms,
            anchor,
        }
    }

    /// Applies the current registry rows: updates `scheduler` and publishes a
    /// `Machine*` event for every difference. Returns how many events it published.
    pub async fn sync(
        &mut self,
        rows: Vec<MachineRow>,
        scheduler: &mut Scheduler,
        events: &mpsc::Sender<Envelope>,
    ) -> usize {
        let now = chrono::DateTime::from_timestamp_millis(self.anchor.now_ms()).unwrap_or_default();
        let mut published = 0;
        let mut seen = HashMap::new();
        for row in rows.into_iter().filter(|r| self.shard.owns(&r.name)) {
            if let Err(why) = check_url(&row.spec.url) {
                // The API rejects such URLs; a row written around it is not polled.
                if self.rejected.insert(row.name.clone()) {
                    tracing::warn!(machine = %row.name, url = %row.spec.url, %why, "machine not polled: bad URL");
                }
                continue;
            }
            self.rejected.remove(&row.name);
            let event = match self.known.get(&row.name) {
                None => Some(Event::MachineRegistered(row.spec.clone())),
                Some(old) if *old != row.spec => Some(Event::MachineChanged(row.spec.clone())),
                Some(_) => None,
            };
            if row.spec.enabled {
                scheduler.upsert(Target {
                    name: row.name.clone(),
                    url: row.spec.url.clone(),
                    interval_ms: row.spec.interval_ms.unwrap_or(self.default_interval_ms),
                });
            } else {
                scheduler.remove(&row.name);
            }
            if let Some(event) = event {
                tracing::info!(machine = %row.name, event = event.type_name(), "registry change");
                let env = Envelope {
                    event_id: Uuid::new_v4(),
                    machine: row.name.clone(),
                    at: now,
                    event,
                };
                if events.send(env).await.is_ok() {
                    published += 1;
                }
            }
            seen.insert(row.name, row.spec);
        }
        for name in self.known.keys().filter(|n| !seen.contains_key(*n)) {
            scheduler.remove(name);
            tracing::info!(machine = %name, "machine removed from registry");
            let env = Envelope {
                event_id: Uuid::new_v4(),
                machine: name.clone(),
                at: now,
                event: Event::MachineRemoved(MachineRemoved {}),
            };
            if events.send(env).await.is_ok() {
                published += 1;
            }
        }
        self.known = seen;
        published
    }
}
