-- Time -> offset index of the machine-event log, kept by the processor in its
-- batch transaction (the broker here has no offset lookup by timestamp): for each
-- partition and hour of event time, the first offset holding an event of that
-- hour. A replay of [from, to] starts each partition at
-- MIN(first_offset) over the buckets at or after `from` minus the lookback.
CREATE TABLE event_time_index (
    topic VARCHAR(249) NOT NULL,
    partition_id INT NOT NULL,
    bucket_start DATETIME(3) NOT NULL,
    first_offset BIGINT NOT NULL,
    PRIMARY KEY (topic, partition_id, bucket_start)
);
