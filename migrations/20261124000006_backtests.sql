-- Backtest runs requested through the API. query-api inserts the request
-- (status `queued`); a processor claims it (`running`, with a heartbeat so a run
-- whose processor died is claimed again), replays the log and writes the result
-- here (`done` or `failed`). Backtests never touch the live projections.
CREATE TABLE backtests (
    id CHAR(36) NOT NULL PRIMARY KEY,
    requested_by VARCHAR(64) NOT NULL,
    requested_at DATETIME(3) NOT NULL,
    request MEDIUMTEXT NOT NULL,
    status VARCHAR(16) NOT NULL,
    progress DOUBLE NOT NULL DEFAULT 0,
    events_read BIGINT NOT NULL DEFAULT 0,
    attempts INT NOT NULL DEFAULT 0,
    worker VARCHAR(128) NULL,
    started_at DATETIME(3) NULL,
    heartbeat_at DATETIME(3) NULL,
    finished_at DATETIME(3) NULL,
    error TEXT NULL,
    result MEDIUMTEXT NULL,
    KEY backtests_status (status, requested_at),
    KEY backtests_requested (requested_at)
);
