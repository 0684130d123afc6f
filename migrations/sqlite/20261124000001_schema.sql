-- The embedded (SQLite) backend's schema: the same tables and columns as the
-- MySQL migrations in `migrations/` (times as text 'YYYY-MM-DD HH:MM:SS.fff' UTC),
-- plus `events`, the embedded event log that stands in for Kafka. Machine and
-- user names compare case-insensitively, as under MySQL's default collation.

-- The embedded, durable event log: one row per event, `log_offset` is the
-- position the processor commits with its projections (one partition, 0).
CREATE TABLE events (
    log_offset INTEGER PRIMARY KEY AUTOINCREMENT,
    machine TEXT NOT NULL,
    at TEXT NOT NULL,
    payload BLOB NOT NULL
);

CREATE TABLE machines (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL COLLATE NOCASE UNIQUE,
    url TEXT NOT NULL,
    enabled BOOLEAN NOT NULL DEFAULT TRUE,
    interval_ms BIGINT NULL,
    labels TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE TABLE incidents (
    id TEXT NOT NULL PRIMARY KEY,
    machine TEXT NOT NULL,
    rule TEXT NOT NULL,
    threshold DOUBLE NOT NULL,
    for_ms BIGINT NOT NULL,
    started_at TEXT NOT NULL,
    opened_at TEXT NOT NULL,
    peak DOUBLE NULL,
    last_value DOUBLE NULL,
    last_breach_at TEXT NOT NULL,
    resolved_at TEXT NULL,
    resolution TEXT NOT NULL DEFAULT ''
);
-- At most one open incident per machine x rule.
CREATE UNIQUE INDEX incidents_one_open ON incidents (machine, rule) WHERE resolved_at IS NULL;
CREATE INDEX incidents_machine ON incidents (machine, opened_at);
CREATE INDEX incidents_opened ON incidents (opened_at);

CREATE TABLE machine_latest (
    machine TEXT NOT NULL PRIMARY KEY,
    observed_at TEXT NOT NULL,
    status TEXT NOT NULL,
    cpu DOUBLE NULL,
    mem DOUBLE NULL,
    disk DOUBLE NULL,
    uptime_s BIGINT NULL,
    failure_reason TEXT NULL,
    failure_detail TEXT NULL,
    last_success_at TEXT NULL
);

CREATE TABLE samples (
    machine TEXT NOT NULL,
    observed_at TEXT NOT NULL,
    cpu DOUBLE NULL,
    mem DOUBLE NULL,
    disk DOUBLE NULL,
    uptime_s BIGINT NULL,
    failure_reason TEXT NULL,
    PRIMARY KEY (machine, observed_at)
);

CREATE TABLE processor_offsets (
    consumer_group TEXT NOT NULL,
    topic TEXT NOT NULL,
    partition_id INTEGER NOT NULL,
    next_offset BIGINT NOT NULL,
    rules_timeline TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (consumer_group, topic, partition_id)
);

CREATE TABLE fold_state (
    consumer_group TEXT NOT NULL,
    machine TEXT NOT NULL,
    partition_id INTEGER NOT NULL,
    state TEXT NOT NULL,
    PRIMARY KEY (consumer_group, machine)
);
CREATE INDEX fold_state_partition ON fold_state (consumer_group, partition_id);

CREATE TABLE incident_outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    consumer_group TEXT NOT NULL,
    machine TEXT NOT NULL,
    payload TEXT NOT NULL
);

CREATE TABLE users (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    username TEXT NOT NULL COLLATE NOCASE UNIQUE,
    password_hash TEXT NOT NULL,
    role TEXT NOT NULL,
    created_at TEXT NOT NULL
);

CREATE TABLE sessions (
    id_sha256 TEXT NOT NULL PRIMARY KEY,
    user_id BIGINT NOT NULL,
    csrf_token TEXT NOT NULL,
    created_at TEXT NOT NULL,
    last_seen_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    revoked_at TEXT NULL
);
CREATE INDEX sessions_user ON sessions (user_id);

CREATE TABLE api_tokens (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id BIGINT NOT NULL,
    name TEXT NOT NULL,
    token_sha256 TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    revoked_at TEXT NULL
);

CREATE TABLE incident_changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    incident_id TEXT NOT NULL,
    changed_at TEXT NOT NULL
);
CREATE INDEX incident_changes_incident ON incident_changes (incident_id);

CREATE TABLE rules_current (
    id INTEGER NOT NULL PRIMARY KEY,
    rules TEXT NOT NULL,
    changed_by TEXT NOT NULL,
    changed_at TEXT NOT NULL
);

CREATE TABLE event_time_index (
    topic TEXT NOT NULL,
    partition_id INTEGER NOT NULL,
    bucket_start TEXT NOT NULL,
    first_offset BIGINT NOT NULL,
    PRIMARY KEY (topic, partition_id, bucket_start)
);

CREATE TABLE backtests (
    id TEXT NOT NULL PRIMARY KEY,
    requested_by TEXT NOT NULL,
    requested_at TEXT NOT NULL,
    request TEXT NOT NULL,
    status TEXT NOT NULL,
    progress DOUBLE NOT NULL DEFAULT 0,
    events_read BIGINT NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    worker TEXT NULL,
    started_at TEXT NULL,
    heartbeat_at TEXT NULL,
    finished_at TEXT NULL,
    error TEXT NULL,
    result TEXT NULL
);
CREATE INDEX backtests_status ON backtests (status, requested_at);
CREATE INDEX backtests_requested ON backtests (requested_at);
