-- A feed of incident changes for the API's long-poll: the processor appends one
-- row per incident it opened, updated or resolved, in the same transaction as the
-- incident rows; `seq` is the cursor clients resume from.
CREATE TABLE incident_changes (
    seq BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    incident_id CHAR(36) NOT NULL,
    changed_at DATETIME(3) NOT NULL,
    KEY incident_changes_incident (incident_id)
);
