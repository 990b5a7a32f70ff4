-- Replays requested through the API (query-api's startBillingReplay inserts a row with
-- status 'requested'; a billing worker claims it with FOR UPDATE SKIP LOCKED, runs it
-- and records its progress), and the connected load of a tariff assignment.

ALTER TABLE replay_jobs DROP CONSTRAINT replay_jobs_status_check;
ALTER TABLE replay_jobs ADD CONSTRAINT replay_jobs_status_check
    CHECK (status IN ('requested', 'running', 'succeeded', 'failed', 'cancelled'));
-- Who asked for it (the API's caller); NULL for a replay started on the command line.
ALTER TABLE replay_jobs ADD COLUMN requested_by text;
-- When the job was asked for; started_at is set again when a worker claims it.
ALTER TABLE replay_jobs ADD COLUMN requested_at timestamptz NOT NULL DEFAULT now();
CREATE INDEX replay_jobs_requested ON replay_jobs (job_id) WHERE status = 'requested';

-- For tariffs that charge by connected load (a monthly minimum per kW connected).
ALTER TABLE tariff_assignments ADD COLUMN connected_load_kw numeric(10, 3);
