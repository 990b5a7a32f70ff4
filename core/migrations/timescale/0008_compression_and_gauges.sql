-- Applied only where the TimescaleDB extension is installed (core/src/service/db.rs,
-- TIMESCALE_MIGRATIONS), one statement at a time outside a transaction, because a
-- continuous aggregate cannot be created inside one. Every statement is idempotent,
-- so a start interrupted half-way finishes on the next start. Plain PostgreSQL never
-- sees this file and gives the same results with plain SQL over `readings`.

-- Raw readings compress once older than twice the allowed lateness (7 days): late
-- readings still land in uncompressed chunks; a replay of older history writes into
-- compressed chunks, which TimescaleDB supports (slower, same result).
ALTER TABLE readings SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'device_id',
    timescaledb.compress_orderby = 'ts DESC'
);

SELECT add_compression_policy('readings', compress_after => INTERVAL '14 days', if_not_exists => true);

-- Gauges (and the energy counted) per device and 15 minutes for charts over long
-- ranges; query-api's readingSeries reads it when its range and bucket width lie on
-- the 15-minute grid. Sums and counts, not
-- averages, so that any multiple of 15 minutes is re-aggregated exactly
-- (avg = sum / count). Real-time (materialized_only = false): rows not materialized
-- yet are computed from `readings` at query time, so it always equals the plain query.
CREATE MATERIALIZED VIEW IF NOT EXISTS readings_gauges_15m
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT device_id,
       time_bucket(INTERVAL '15 minutes', ts) AS bucket,
       count(*)        AS readings,
       sum(power_w)    AS power_w_sum,
       min(power_w)    AS power_w_min,
       max(power_w)    AS power_w_max,
       sum(voltage_v)  AS voltage_v_sum,
       min(voltage_v)  AS voltage_v_min,
       max(voltage_v)  AS voltage_v_max,
       sum(current_a)  AS current_a_sum,
       max(current_a)  AS current_a_max,
       sum(counted_milli_wh) AS counted_milli_wh
FROM readings
WHERE NOT too_late
GROUP BY device_id, bucket
WITH NO DATA;

-- Refresh everything up to 15 minutes ago every 5 minutes (start_offset NULL: a
-- replay of years-old data is materialized too).
SELECT add_continuous_aggregate_policy('readings_gauges_15m',
    start_offset => NULL,
    end_offset => INTERVAL '15 minutes',
    schedule_interval => INTERVAL '5 minutes',
    if_not_exists => true);
