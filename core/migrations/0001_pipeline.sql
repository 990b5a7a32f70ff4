-- The pipeline's projections: device registry and state, raw readings, energy per
-- local hour and local day, counter events, consumed offsets and the event outbox.
-- Energy is stored in integer milliwatt-hours (1e-6 kWh) so rollups add exactly.

CREATE TABLE devices (
    device_id          text PRIMARY KEY,
    name               text,
    location           text,
    -- IANA zone; hours, days and months of this device are local to it.
    time_zone          text        NOT NULL,
    lifecycle          text        NOT NULL DEFAULT 'discovered'
                       CHECK (lifecycle IN ('discovered', 'registered', 'decommissioned')),
    tariff_id          text,
    sanctioned_load_kw numeric(10, 3),
    firmware_version   text,
    online             boolean,
    status_changed_at  timestamptz,
    first_seen_at      timestamptz,
    -- Receive time of the newest message from the meter.
    last_seen_at       timestamptz,
    -- Event time of the newest accepted reading; lateness is measured from it.
    newest_reading_at  timestamptz,
    readings_total     bigint      NOT NULL DEFAULT 0,
    duplicates_total   bigint      NOT NULL DEFAULT 0,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE readings (
    device_id        text             NOT NULL,
    -- Event time used for accounting (receive time when the meter clock was unsynced).
    ts               timestamptz      NOT NULL,
    meter_ts         timestamptz      NOT NULL,
    received_at      timestamptz      NOT NULL,
    voltage_v        double precision NOT NULL,
    current_a        double precision NOT NULL,
    power_w          double precision NOT NULL,
    energy_kwh       double precision NOT NULL,
    counter_milli_wh bigint           NOT NULL,
    power_factor     double precision NOT NULL,
    frequency_hz     double precision,
    rssi             integer,
    seq              bigint,
    boot_id          text,
    fw               text,
    clock_unsynced   boolean          NOT NULL DEFAULT false,
    -- Arrived after a newer reading of the same device, inside the allowed lateness.
    late             boolean          NOT NULL DEFAULT false,
    -- Older than the allowed lateness when it arrived: stored, never counted.
    too_late         boolean          NOT NULL DEFAULT false,
    -- How the counter step ending at this reading was judged (energy::StepKind).
    counter_class    text             NOT NULL,
    counted_milli_wh bigint           NOT NULL DEFAULT 0,
    kafka_partition  integer          NOT NULL,
    kafka_offset     bigint           NOT NULL,
    PRIMARY KEY (device_id, ts)
);

-- A second reading with the same device and timestamp but a different counter.
CREATE TABLE reading_conflicts (
    device_id        text        NOT NULL,
    ts               timestamptz NOT NULL,
    counter_milli_wh bigint      NOT NULL,
    payload          jsonb       NOT NULL,
    kafka_partition  integer     NOT NULL,
    kafka_offset     bigint      NOT NULL,
    PRIMARY KEY (kafka_partition, kafka_offset)
);

CREATE TABLE energy_hourly (
    device_id          text        NOT NULL,
    -- UTC instant the local hour starts (a local hour may start at :30 or :45 UTC).
    bucket_start       timestamptz NOT NULL,
    bucket_end         timestamptz NOT NULL,
    local_date         date        NOT NULL,
    local_hour         smallint    NOT NULL CHECK (local_hour BETWEEN 0 AND 23),
    utc_offset_seconds integer     NOT NULL,
    energy_milli_wh    bigint      NOT NULL,
    PRIMARY KEY (device_id, bucket_start)
);
CREATE INDEX energy_hourly_local_date ON energy_hourly (device_id, local_date);

CREATE TABLE energy_daily (
    device_id       text   NOT NULL,
    local_date      date   NOT NULL,
    energy_milli_wh bigint NOT NULL,
    PRIMARY KEY (device_id, local_date)
);

-- Monthly energy is derived from daily, never counted separately.
CREATE VIEW energy_monthly AS
SELECT device_id,
       date_trunc('month', local_date)::date AS local_month,
       sum(energy_milli_wh)::bigint           AS energy_milli_wh,
       count(*)::integer                      AS days_with_data
FROM energy_daily
GROUP BY device_id, date_trunc('month', local_date);

CREATE TABLE counter_events (
    device_id             text        NOT NULL,
    -- The reading that ended the step.
    ts                    timestamptz NOT NULL,
    kind                  text        NOT NULL,
    previous_ts           timestamptz NOT NULL,
    previous_milli_wh     bigint      NOT NULL,
    current_milli_wh      bigint      NOT NULL,
    counted_milli_wh      bigint      NOT NULL,
    quarantined_milli_wh  bigint      NOT NULL,
    PRIMARY KEY (device_id, ts)
);

CREATE TABLE consumer_offsets (
    consumer_group text        NOT NULL,
    topic          text        NOT NULL,
    partition      integer     NOT NULL,
    -- The offset of the next record to process.
    next_offset    bigint      NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, topic, partition)
);

-- Events written in the same transaction as the state they describe, then published.
CREATE TABLE outbox (
    seq          bigserial PRIMARY KEY,
    event_id     text        NOT NULL UNIQUE,
    topic        text        NOT NULL,
    event_key    text        NOT NULL,
    payload      jsonb       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
CREATE INDEX outbox_unpublished ON outbox (seq) WHERE published_at IS NULL;

-- TimescaleDB, when the extension is installed in this database (infra/up.sh creates
-- it as superuser where the server has it): readings become a hypertable.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        PERFORM create_hypertable('readings', 'ts',
                                  chunk_time_interval => interval '7 days',
                                  migrate_data => true);
    END IF;
END
$$;
