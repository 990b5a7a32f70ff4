-- Records on the telemetry topic that the processor could not read (the bridge
-- validates, so this stays empty unless something else writes to the topic). Kept so
-- that nothing consumed is lost silently.
CREATE TABLE telemetry_rejects (
    kafka_partition integer     NOT NULL,
    kafka_offset    bigint      NOT NULL,
    payload         bytea       NOT NULL,
    reason          text        NOT NULL,
    rejected_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kafka_partition, kafka_offset)
);
