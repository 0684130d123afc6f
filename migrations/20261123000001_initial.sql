-- Initial schema. Written for both MySQL 8 and MariaDB 10.11: no CHECK-only
-- semantics relied upon, generated columns declared STORED, times as DATETIME(3) UTC.

-- The machine registry, owned by query-api (the API changes it; ingest reads it).
-- `name` is the machine's key in every event and never changes.
CREATE TABLE machines (
    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    name VARCHAR(128) NOT NULL,
    url VARCHAR(2048) NOT NULL,
    enabled BOOLEAN NOT NULL DEFAULT TRUE,
    interval_ms BIGINT NULL,
    labels TEXT NOT NULL,
    created_at DATETIME(3) NOT NULL,
    updated_at DATETIME(3) NOT NULL,
    UNIQUE KEY machines_name (name)
);

-- Incident projection. `open_key` is set only while the incident is open, so the
-- unique index makes a second open incident per machine x rule impossible.
CREATE TABLE incidents (
    id CHAR(36) NOT NULL PRIMARY KEY,
    machine VARCHAR(128) NOT NULL,
    rule VARCHAR(16) NOT NULL,
    threshold DOUBLE NOT NULL,
    for_ms BIGINT NOT NULL,
    started_at DATETIME(3) NOT NULL,
    opened_at DATETIME(3) NOT NULL,
    peak DOUBLE NULL,
    last_value DOUBLE NULL,
    last_breach_at DATETIME(3) NOT NULL,
    resolved_at DATETIME(3) NULL,
    resolution VARCHAR(32) NOT NULL DEFAULT '',
    open_key VARCHAR(150) AS (IF(resolved_at IS NULL, CONCAT(machine, '/', rule), NULL)) STORED,
    UNIQUE KEY incidents_one_open (open_key),
    KEY incidents_machine (machine, opened_at),
    KEY incidents_opened (opened_at)
);

-- Latest state per machine (for the machines view).
CREATE TABLE machine_latest (
    machine VARCHAR(128) NOT NULL PRIMARY KEY,
    observed_at DATETIME(3) NOT NULL,
    status VARCHAR(16) NOT NULL,
    cpu DOUBLE NULL,
    mem DOUBLE NULL,
    disk DOUBLE NULL,
    uptime_s BIGINT NULL,
    failure_reason VARCHAR(32) NULL,
    failure_detail VARCHAR(600) NULL,
    last_success_at DATETIME(3) NULL
);

-- Sample history for charts: one row per poll.
CREATE TABLE samples (
    machine VARCHAR(128) NOT NULL,
    observed_at DATETIME(3) NOT NULL,
    cpu DOUBLE NULL,
    mem DOUBLE NULL,
    disk DOUBLE NULL,
    uptime_s BIGINT NULL,
    failure_reason VARCHAR(32) NULL,
    PRIMARY KEY (machine, observed_at)
);

-- The processor's log positions, committed in the same transaction as the
-- projections they produced (exactly-once without Kafka transactions), with the
-- rules timeline of that partition.
CREATE TABLE processor_offsets (
    consumer_group VARCHAR(128) NOT NULL,
    topic VARCHAR(249) NOT NULL,
    partition_id INT NOT NULL,
    next_offset BIGINT NOT NULL,
    rules_timeline MEDIUMTEXT NOT NULL,
    updated_at DATETIME(3) NOT NULL,
    PRIMARY KEY (consumer_group, topic, partition_id)
);

-- Fold state per machine, written with the offsets: a restarted processor resumes
-- mid-window exactly where it stopped.
CREATE TABLE fold_state (
    consumer_group VARCHAR(128) NOT NULL,
    machine VARCHAR(128) NOT NULL,
    partition_id INT NOT NULL,
    state TEXT NOT NULL,
    PRIMARY KEY (consumer_group, machine),
    KEY fold_state_partition (consumer_group, partition_id)
);

-- Incident events waiting to be published to the incident topic (transactional
-- outbox): written with the projection, deleted once the broker acknowledged them.
CREATE TABLE incident_outbox (
    seq BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    consumer_group VARCHAR(128) NOT NULL,
    machine VARCHAR(128) NOT NULL,
    payload MEDIUMTEXT NOT NULL
);
