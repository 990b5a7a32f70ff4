-- The device registry as the processor projects it from smartmeter.device-events.v1,
-- and the device state it keeps (online/offline, newest wins by time).
--
-- Lifecycle: a meter that sends telemetry (or a status message) before any
-- registration is 'discovered' in the default time zone; DeviceRegistered makes it
-- 'registered'; DeviceDecommissioned makes it 'decommissioned' for good (its history
-- stays; readings stamped after decommissioned_at are stored but never counted).

ALTER TABLE devices
    ADD COLUMN customer_id          text,
    -- Event time of the newest DeviceRegistered applied.
    ADD COLUMN registered_at        timestamptz,
    -- Event time of the DeviceDecommissioned: readings after it count for nothing.
    ADD COLUMN decommissioned_at    timestamptz,
    ADD COLUMN decommission_reason  text,
    -- Why `online` is what it is: the reason of the status event applied
    -- (birth, last_will, disconnect, inactivity, telemetry).
    ADD COLUMN status_reason        text,
    -- Kafka partition of the device's newest telemetry record: the processor judges a
    -- meter silent only while it has read that partition to its end.
    ADD COLUMN telemetry_partition  integer;

COMMENT ON COLUMN devices.status_changed_at IS
    'Time (at) of the status event applied to online/status_reason: the newest by (at, offline before online, reason) wins, so applying events in any order, or again, gives the same state.';
COMMENT ON COLUMN devices.last_seen_at IS
    'Receive time (bridge) of the newest telemetry from the meter, duplicates excluded.';

CREATE INDEX devices_customer ON devices (customer_id) WHERE customer_id IS NOT NULL;
CREATE INDEX devices_online ON devices (online) WHERE online;

-- Readings stamped after their device's decommissioning: kept, never counted.
ALTER TABLE readings ADD COLUMN after_decommission boolean NOT NULL DEFAULT false;

-- Records on the device-events topic that the processor could not read or that fail
-- validation: kept so that nothing consumed is lost silently.
CREATE TABLE device_event_rejects (
    topic           text        NOT NULL,
    kafka_partition integer     NOT NULL,
    kafka_offset    bigint      NOT NULL,
    payload         bytea       NOT NULL,
    reason          text        NOT NULL,
    rejected_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, kafka_partition, kafka_offset)
);
