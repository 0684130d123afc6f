-- The rules in force as last set through the API (one row). Absent: the
-- configured defaults (RULE_* keys) are in force. The processor learns of a change
-- through the RulesChanged event the API publishes, not from this table.
CREATE TABLE rules_current (
    id TINYINT NOT NULL PRIMARY KEY,
    rules TEXT NOT NULL,
    changed_by VARCHAR(64) NOT NULL,
    changed_at DATETIME(3) NOT NULL
);
