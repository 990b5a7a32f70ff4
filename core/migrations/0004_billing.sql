-- The billing worker's projections: tariff versions and assignments (from
-- smartmeter.tariff-events.v1), invoices and their revisions, the worker's view of
-- each device-month, refused events, deduplication, and replay jobs.
-- Money is numeric (exact); amounts are never computed in SQL.

-- One row per published tariff version; a version is never changed once stored.
CREATE TABLE tariff_versions (
    tariff_id      text        NOT NULL,
    version        integer     NOT NULL CHECK (version >= 0),
    effective_from date        NOT NULL,
    -- The TariffDocument as published (validated by core's Tariff before it is stored).
    document       jsonb       NOT NULL,
    -- Id of the TariffVersionPublished event.
    event_id       text        NOT NULL,
    published_at   timestamptz NOT NULL,
    stored_at      timestamptz NOT NULL DEFAULT now(),
    -- Increases with every stored version: a worker re-reads its tariff cache when the
    -- maximum moves (another member may have stored it).
    seq            bigserial   NOT NULL UNIQUE,
    PRIMARY KEY (tariff_id, version),
    UNIQUE (tariff_id, effective_from)
);

-- Which tariff a device is billed on, from which local day. A period is priced on
-- the assignment in force on its first day.
CREATE TABLE tariff_assignments (
    device_id          text           NOT NULL,
    effective_from     date           NOT NULL,
    tariff_id          text           NOT NULL,
    sanctioned_load_kw numeric(10, 3),
    phase              text           CHECK (phase IN ('single', 'three')),
    event_id           text           NOT NULL,
    assigned_at        timestamptz    NOT NULL,
    stored_at          timestamptz    NOT NULL DEFAULT now(),
    PRIMARY KEY (device_id, effective_from)
);

-- Events the worker could not apply, kept with the reason: a tariff version refused
-- by validation (overlapping or unordered slabs, a negative rate, an unknown time
-- zone, out of order with the versions before it, a changed re-publication), or a
-- record that is not a readable event. Nothing of a refused event is applied.
CREATE TABLE billing_rejects (
    kafka_topic     text        NOT NULL,
    kafka_partition integer     NOT NULL,
    kafka_offset    bigint      NOT NULL,
    event_id        text,
    event_type      text,
    -- Bounded: unreadable, tariff_refused, tariff_conflict, assignment_refused.
    error_code      text        NOT NULL,
    reason          text        NOT NULL,
    subject         text,
    payload         bytea       NOT NULL,
    rejected_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kafka_topic, kafka_partition, kafka_offset)
);

-- Ids of events the live consumer has applied: a redelivered event (the producer's
-- outbox publishes at least once) changes nothing. Replays do not look here.
CREATE TABLE billing_processed_events (
    event_id     text PRIMARY KEY,
    processed_at timestamptz NOT NULL DEFAULT now()
);

-- Issued invoices. A row is never updated: a re-pricing that changes the total adds a
-- revision row (revision n, number INV-{device}-{YYYYMM}-R{n}) with the difference.
CREATE TABLE invoices (
    invoice_number   text          PRIMARY KEY,
    device_id        text          NOT NULL,
    -- First day of the local month.
    month            date          NOT NULL,
    -- 0 = the original invoice; n = its n-th revision.
    revision         integer       NOT NULL CHECK (revision >= 0),
    period_revision  integer       NOT NULL,
    period_event_id  text          NOT NULL,
    first_day        date          NOT NULL,
    last_day         date          NOT NULL,
    time_zone        text          NOT NULL,
    tariff_id        text          NOT NULL,
    -- Versions in force during the period, in date order.
    tariff_versions  integer[]     NOT NULL,
    currency         char(3)       NOT NULL,
    -- core's InvoiceLine list, PricedPart list and included taxes, as JSON.
    lines            jsonb         NOT NULL,
    parts            jsonb         NOT NULL,
    included_taxes   jsonb         NOT NULL DEFAULT '[]',
    total            numeric       NOT NULL,
    -- The period's energy exactly as the period event gave it.
    energy_kwh       numeric       NOT NULL,
    opening_read_at  timestamptz,
    opening_read_kwh numeric,
    closing_read_at  timestamptz,
    closing_read_kwh numeric,
    -- sha256 of what was priced: period data, assignment, tariff version documents.
    inputs_digest    text          NOT NULL,
    issued_at        timestamptz   NOT NULL,
    -- For a revision: the total of the invoice revised and total - previous_total.
    previous_total   numeric,
    difference       numeric,
    -- The replay job that issued it, if any.
    replay_job_id    bigint,
    UNIQUE (device_id, month, revision),
    CHECK ((revision = 0) = (previous_total IS NULL AND difference IS NULL))
);
CREATE INDEX invoices_month ON invoices (month);

CREATE FUNCTION invoices_are_never_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'invoice % is issued and cannot be changed; issue a revision', OLD.invoice_number;
END
$$;
CREATE TRIGGER invoices_never_updated BEFORE UPDATE ON invoices
    FOR EACH ROW EXECUTE FUNCTION invoices_are_never_updated();

-- The worker's view of each device-month: the last period revision priced, what its
-- inputs were and what came of it. Rows are locked while a device-month is priced,
-- so the live consumer and a replay never issue the same revision twice.
CREATE TABLE billing_states (
    device_id        text        NOT NULL,
    month            date        NOT NULL,
    -- Highest period revision seen; an older one arriving later is stale and ignored.
    period_revision  integer     NOT NULL,
    period_event_id  text        NOT NULL,
    -- invoiced: the last pricing matches the latest invoice (total unchanged or issued).
    -- unbillable: the last pricing failed; `reason` says why (no tariff, no version in
    -- force, missing phase or load, ...). It is priced again when a tariff version or
    -- an assignment arrives that may make it billable.
    status           text        NOT NULL CHECK (status IN ('invoiced', 'unbillable')),
    reason           text,
    -- The tariff the period resolved to (assignment, else the period's own), if any.
    tariff_id        text,
    inputs_digest    text,
    -- The PeriodEvent, kept while the period is unbillable so it can be priced later.
    period           jsonb,
    -- The latest invoice issued for the device-month, if any.
    invoice_number   text        REFERENCES invoices (invoice_number),
    invoice_revision integer,
    invoice_total    numeric,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (device_id, month)
);
CREATE INDEX billing_states_unbillable ON billing_states (tariff_id) WHERE status = 'unbillable';

-- `billing-worker replay` runs: what was asked and how far it got, updated in the
-- same transaction as the invoices it issued (the API shows them).
CREATE TABLE replay_jobs (
    job_id           bigserial   PRIMARY KEY,
    from_month       date        NOT NULL,
    to_month         date,
    device_id        text,
    status           text        NOT NULL DEFAULT 'running'
                     CHECK (status IN ('running', 'succeeded', 'failed', 'cancelled')),
    -- Records between the start offsets and the end offsets taken at the start.
    records_total    bigint      NOT NULL DEFAULT 0,
    records_read     bigint      NOT NULL DEFAULT 0,
    -- Period events of the months (and device) asked for.
    periods_matched  bigint      NOT NULL DEFAULT 0,
    invoices_issued  bigint      NOT NULL DEFAULT 0,
    invoices_revised bigint      NOT NULL DEFAULT 0,
    unchanged        bigint      NOT NULL DEFAULT 0,
    unbillable       bigint      NOT NULL DEFAULT 0,
    -- Older period revisions than the one already priced.
    stale            bigint      NOT NULL DEFAULT 0,
    error            text,
    started_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz
);

-- Invoices mailed (the `email` command, or automatic mailing when configured): one
-- row per invoice and recipient, with the attempts and the last error.
CREATE TABLE invoice_mailings (
    invoice_number text        NOT NULL REFERENCES invoices (invoice_number),
    recipient      text        NOT NULL,
    attempts       integer     NOT NULL DEFAULT 0,
    sent_at        timestamptz,
    last_error     text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (invoice_number, recipient)
);
