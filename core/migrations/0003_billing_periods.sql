-- Billing periods (local calendar months per device) as the processor tracks them:
-- opened when a reading or energy lands in the month, closed when event time (or,
-- for a silent meter, wall-clock time) passes the end plus the grace interval. Each
-- close or adjustment publishes a PeriodEvent through the outbox.
CREATE TABLE billing_periods (
    device_id       text        NOT NULL,
    -- First local day of the month.
    month           date        NOT NULL,
    time_zone       text        NOT NULL,
    starts_at       timestamptz NOT NULL,
    ends_at         timestamptz NOT NULL,
    status          text        NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'closed')),
    -- Of the last published event: 0 = PeriodClosed, n = n-th PeriodAdjusted.
    revision        integer     NOT NULL DEFAULT 0,
    closed_at       timestamptz,
    -- The data of the last published event.
    published       jsonb,
    PRIMARY KEY (device_id, month)
);
CREATE INDEX billing_periods_open ON billing_periods (ends_at) WHERE status = 'open';
