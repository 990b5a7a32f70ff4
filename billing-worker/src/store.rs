//! The SQL of the billing worker (tables of `core/migrations/0004_billing.sql`). Every
//! write takes the caller's transaction, so a batch's tariffs, invoices, states,
//! outbox rows and offsets commit together.

use std::collections::{BTreeSet, HashMap, HashSet};

use deadpool_postgres::Transaction;
use jiff::civil::Date;
use jiff::Timestamp;
use rust_decimal::Decimal;
use smartmeter_core::billing::events::{
    InvoiceEvent, MeterRead, PeriodEvent, TariffAssigned, TariffVersionPublished,
};
use smartmeter_core::billing::{Phase, TariffDocument};
use smartmeter_core::service::outbox;
use smartmeter_core::DeviceId;
use tokio_postgres::GenericClient;

use crate::invoice::{envelope, BillingState, Decision, LatestInvoice, Status};
use crate::price::Assignment;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Db(#[from] tokio_postgres::Error),
    #[error("stored {what} is unreadable: {reason}")]
    Corrupt { what: &'static str, reason: String },
}

fn corrupt(what: &'static str) -> impl Fn(serde_json::Error) -> StoreError {
    move |error| StoreError::Corrupt { what, reason: error.to_string() }
}

/// Every stored tariff version and the `seq` they were read at.
pub async fn load_tariffs(client: &impl GenericClient) -> Result<(Vec<TariffDocument>, i64), StoreError> {
    let rows = client.query("SELECT document, seq FROM tariff_versions ORDER BY seq", &[]).await?;
    let mut seq = 0;
    let mut documents = Vec::with_capacity(rows.len());
    for row in rows {
        documents.push(serde_json::from_value(row.get(0)).map_err(corrupt("tariff version"))?);
        seq = seq.max(row.get(1));
    }
    Ok((documents, seq))
}

/// The highest `tariff_versions.seq`: it moves whenever any member stores a version.
pub async fn tariff_seq(client: &impl GenericClient) -> Result<i64, tokio_postgres::Error> {
    Ok(client.query_one("SELECT coalesce(max(seq), 0) FROM tariff_versions", &[]).await?.get(0))
}

/// Stores an admitted version; returns its `seq`.
pub async fn insert_tariff_version(
    tx: &Transaction<'_>,
    published: &TariffVersionPublished,
    event_id: &str,
    published_at: Timestamp,
) -> Result<i64, tokio_postgres::Error> {
    let document = &published.document;
    let json = serde_json::to_value(document).expect("a tariff document serializes");
    let row = tx
        .query_one(
            "INSERT INTO tariff_versions (tariff_id, version, effective_from, document, event_id, published_at)
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING seq",
            &[
                &document.tariff_id,
                &(document.version as i32),
                &document.effective_from,
                &json,
                &event_id,
                &published_at,
            ],
        )
        .await?;
    Ok(row.get(0))
}

pub async fn upsert_assignment(
    tx: &Transaction<'_>,
    assigned: &TariffAssigned,
    event_id: &str,
    assigned_at: Timestamp,
) -> Result<(), tokio_postgres::Error> {
    tx.execute(
        "INSERT INTO tariff_assignments
             (device_id, effective_from, tariff_id, sanctioned_load_kw, phase, event_id, assigned_at,
              connected_load_kw)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (device_id, effective_from) DO UPDATE SET
             tariff_id = EXCLUDED.tariff_id, sanctioned_load_kw = EXCLUDED.sanctioned_load_kw,
             phase = EXCLUDED.phase, connected_load_kw = EXCLUDED.connected_load_kw, event_id = EXCLUDED.event_id, assigned_at = EXCLUDED.assigned_at,
             stored_at = now()",
        &[
            &assigned.device_id.as_str(),
            &assigned.effective_from,
            &assigned.tariff_id,
            &assigned.sanctioned_load_kw,
            &assigned.phase.map(phase_text),
            &event_id,
            &assigned_at,
            &assigned.connected_load_kw,
        ],
    )
    .await?;
    Ok(())
}

fn phase_text(phase: Phase) -> &'static str {
    match phase {
        Phase::Single => "single",
        Phase::Three => "three",
    }
}

/// Assignments of `devices`, ascending by `effective_from` per device.
pub async fn load_assignments(
    client: &impl GenericClient,
    devices: &[&str],
) -> Result<HashMap<String, Vec<Assignment>>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT device_id, tariff_id, effective_from, sanctioned_load_kw, phase, connected_load_kw
             FROM tariff_assignments WHERE device_id = ANY($1) ORDER BY device_id, effective_from",
            &[&devices],
        )
        .await?;
    let mut by_device: HashMap<String, Vec<Assignment>> = HashMap::new();
    for row in rows {
        let phase = match row.get::<_, Option<&str>>(4) {
            Some("three") => Some(Phase::Three),
            Some(_) => Some(Phase::Single),
            None => None,
        };
        by_device.entry(row.get(0)).or_default().push(Assignment {
            tariff_id: row.get(1),
            effective_from: row.get(2),
            sanctioned_load_kw: row.get(3),
            phase,
            connected_load_kw: row.get(5),
        });
    }
    Ok(by_device)
}

/// A record the worker could not apply.
#[derive(Debug)]
pub struct Reject<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub event_id: Option<&'a str>,
    pub event_type: Option<&'a str>,
    pub error_code: &'static str,
    pub reason: String,
    pub subject: Option<&'a str>,
    pub payload: &'a [u8],
}

pub async fn insert_reject(tx: &Transaction<'_>, reject: &Reject<'_>) -> Result<(), tokio_postgres::Error> {
    tx.execute(
        "INSERT INTO billing_rejects
             (kafka_topic, kafka_partition, kafka_offset, event_id, event_type, error_code, reason, subject, payload)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING",
        &[
            &reject.topic,
            &reject.partition,
            &reject.offset,
            &reject.event_id,
            &reject.event_type,
            &reject.error_code,
            &reject.reason,
            &reject.subject,
            &reject.payload,
        ],
    )
    .await?;
    Ok(())
}

/// Records `event_ids` as processed; returns those that were not processed before.
pub async fn mark_processed(
    tx: &Transaction<'_>,
    event_ids: &[&str],
) -> Result<HashSet<String>, tokio_postgres::Error> {
    if event_ids.is_empty() {
        return Ok(HashSet::new());
    }
    let rows = tx
        .query(
            "INSERT INTO billing_processed_events (event_id) SELECT unnest($1::text[])
             ON CONFLICT DO NOTHING RETURNING event_id",
            &[&event_ids],
        )
        .await?;
    Ok(rows.into_iter().map(|row| row.get(0)).collect())
}

/// Unbillable periods that a new version of `tariffs` or a new assignment of
/// `devices` may make billable.
pub async fn waiting_periods(
    tx: &Transaction<'_>,
    tariffs: &[&str],
    devices: &[&str],
) -> Result<Vec<PeriodEvent>, StoreError> {
    let rows = tx
        .query(
            "SELECT period FROM billing_states
             WHERE status = 'unbillable' AND period IS NOT NULL
               AND (tariff_id = ANY($1) OR device_id = ANY($2))
             ORDER BY device_id, month",
            &[&tariffs, &devices],
        )
        .await?;
    rows.into_iter()
        .map(|row| serde_json::from_value(row.get(0)).map_err(corrupt("unbillable period")))
        .collect()
}

/// Locks these device-months (also those without a state yet) and reads their states.
/// Absent keys have no state yet.
pub async fn lock_states(
    tx: &Transaction<'_>,
    keys: &BTreeSet<(String, Date)>,
) -> Result<HashMap<(String, Date), BillingState>, tokio_postgres::Error> {
    let devices: Vec<&str> = keys.iter().map(|(device, _)| device.as_str()).collect();
    let months: Vec<Date> = keys.iter().map(|(_, month)| *month).collect();
    // A device-month without a state row has nothing to lock yet: two transactions
    // (the live consumer and a replay, or two replays) would both issue its first
    // invoice. A transaction-level advisory lock per device-month, taken in hash order
    // (so two batches never wait for each other in a circle), serialises them.
    tx.execute(
        "SELECT pg_advisory_xact_lock(h) FROM (
             SELECT DISTINCT hashtextextended(k.device_id || '/' || k.month::text, 0) AS h
             FROM unnest($1::text[], $2::date[]) AS k(device_id, month)
             ORDER BY h) AS locks",
        &[&devices, &months],
    )
    .await?;
    let rows = tx
        .query(
            "SELECT s.device_id, s.month, s.period_revision, s.period_event_id, s.status, s.reason,
                    s.tariff_id, s.inputs_digest, s.invoice_number, s.invoice_revision, s.invoice_total
             FROM billing_states s
             JOIN unnest($1::text[], $2::date[]) AS k(device_id, month)
               ON s.device_id = k.device_id AND s.month = k.month
             ORDER BY s.device_id, s.month
             FOR UPDATE OF s",
            &[&devices, &months],
        )
        .await?;
    let mut states = HashMap::with_capacity(rows.len());
    for row in rows {
        let device_id: String = row.get(0);
        let month: Date = row.get(1);
        let latest = row.get::<_, Option<String>>(8).map(|number| LatestInvoice {
            number,
            revision: row.get::<_, i32>(9) as u32,
            total: row.get(10),
        });
        let state = BillingState {
            device_id: device_id.clone(),
            month,
            period_revision: row.get::<_, i32>(2) as u32,
            period_event_id: row.get(3),
            status: if row.get::<_, &str>(4) == "unbillable" { Status::Unbillable } else { Status::Invoiced },
            reason: row.get(5),
            tariff_id: row.get(6),
            inputs_digest: row.get(7),
            period: None,
            latest,
        };
        states.insert((device_id, month), state);
    }
    Ok(states)
}

/// Writes decisions: new invoice rows, the outbox events that announce them, and the
/// device-months' new states.
pub async fn write_decisions(
    tx: &Transaction<'_>,
    decisions: &[Decision],
    invoices_topic: &str,
    replay_job: Option<i64>,
) -> Result<(), tokio_postgres::Error> {
    let invoices: Vec<&InvoiceEvent> = decisions.iter().filter_map(|d| d.invoice.as_ref()).collect();
    insert_invoices(tx, &invoices, replay_job).await?;
    let envelopes: Vec<_> = invoices.iter().map(|invoice| envelope(invoice)).collect();
    let events: Vec<_> =
        envelopes.iter().map(|envelope| (invoices_topic, envelope.subject.as_str(), envelope)).collect();
    outbox::enqueue_many(tx, &events).await?;

    // One state per device-month: the last decision's.
    let mut last: HashMap<(&str, Date), &BillingState> = HashMap::new();
    for state in decisions.iter().filter_map(|d| d.state.as_ref()) {
        last.insert((state.device_id.as_str(), state.month), state);
    }
    upsert_states(tx, last.into_values()).await
}

async fn insert_invoices(
    tx: &Transaction<'_>,
    invoices: &[&InvoiceEvent],
    replay_job: Option<i64>,
) -> Result<(), tokio_postgres::Error> {
    if invoices.is_empty() {
        return Ok(());
    }
    let n = invoices.len();
    let mut numbers = Vec::with_capacity(n);
    let mut devices = Vec::with_capacity(n);
    let mut months = Vec::with_capacity(n);
    let mut revisions = Vec::with_capacity(n);
    let mut period_revisions = Vec::with_capacity(n);
    let mut period_event_ids = Vec::with_capacity(n);
    let mut first_days = Vec::with_capacity(n);
    let mut last_days = Vec::with_capacity(n);
    let mut zones = Vec::with_capacity(n);
    let mut tariff_ids = Vec::with_capacity(n);
    let mut tariff_versions = Vec::with_capacity(n);
    let mut currencies = Vec::with_capacity(n);
    let mut lines = Vec::with_capacity(n);
    let mut parts = Vec::with_capacity(n);
    let mut taxes = Vec::with_capacity(n);
    let mut totals = Vec::with_capacity(n);
    let mut energies = Vec::with_capacity(n);
    let mut opening_at = Vec::with_capacity(n);
    let mut opening_kwh = Vec::with_capacity(n);
    let mut closing_at = Vec::with_capacity(n);
    let mut closing_kwh = Vec::with_capacity(n);
    let mut digests = Vec::with_capacity(n);
    let mut issued_at = Vec::with_capacity(n);
    let mut previous_totals = Vec::with_capacity(n);
    let mut differences = Vec::with_capacity(n);
    for invoice in invoices {
        numbers.push(invoice.invoice_number.as_str());
        devices.push(invoice.device_id.as_str());
        months.push(invoice.month);
        revisions.push(invoice.revision as i32);
        period_revisions.push(invoice.period_revision as i32);
        period_event_ids.push(period_event_id(invoice));
        first_days.push(invoice.first_day);
        last_days.push(invoice.last_day);
        zones.push(invoice.time_zone.as_str());
        tariff_ids.push(invoice.tariff_id.as_str());
        tariff_versions
            .push(invoice.tariff_versions.iter().map(u32::to_string).collect::<Vec<_>>().join(","));
        currencies.push(invoice.currency.as_str());
        lines.push(serde_json::to_value(&invoice.lines).expect("lines serialize"));
        parts.push(serde_json::to_value(&invoice.parts).expect("parts serialize"));
        taxes.push(serde_json::to_value(&invoice.included_taxes).expect("taxes serialize"));
        totals.push(invoice.total);
        energies.push(invoice.energy_kwh);
        opening_at.push(invoice.opening_read.as_ref().map(|read| read.at));
        opening_kwh.push(invoice.opening_read.as_ref().map(|read| read.counter_kwh));
        closing_at.push(invoice.closing_read.as_ref().map(|read| read.at));
        closing_kwh.push(invoice.closing_read.as_ref().map(|read| read.counter_kwh));
        digests.push(invoice.inputs_digest.as_str());
        issued_at.push(invoice.issued_at);
        previous_totals.push(invoice.previous_total);
        differences.push(invoice.difference);
    }
    tx.execute(
        "INSERT INTO invoices
             (invoice_number, device_id, month, revision, period_revision, period_event_id, first_day,
              last_day, time_zone, tariff_id, tariff_versions, currency, lines, parts, included_taxes,
              total, energy_kwh, opening_read_at, opening_read_kwh, closing_read_at, closing_read_kwh,
              inputs_digest, issued_at, previous_total, difference, replay_job_id)
         SELECT i.invoice_number, i.device_id, i.month, i.revision, i.period_revision, i.period_event_id,
                i.first_day, i.last_day, i.time_zone, i.tariff_id,
                string_to_array(i.tariff_versions, ',')::integer[], i.currency, i.lines, i.parts,
                i.included_taxes, i.total, i.energy_kwh, i.opening_at, i.opening_kwh, i.closing_at,
                i.closing_kwh, i.inputs_digest, i.issued_at, i.previous_total, i.difference, $26
         FROM unnest($1::text[], $2::text[], $3::date[], $4::integer[], $5::integer[], $6::text[],
                     $7::date[], $8::date[], $9::text[], $10::text[], $11::text[], $12::text[],
                     $13::jsonb[], $14::jsonb[], $15::jsonb[], $16::numeric[], $17::numeric[],
                     $18::timestamptz[], $19::numeric[], $20::timestamptz[], $21::numeric[], $22::text[],
                     $23::timestamptz[], $24::numeric[], $25::numeric[])
              WITH ORDINALITY AS i(invoice_number, device_id, month, revision, period_revision,
                                   period_event_id, first_day, last_day, time_zone, tariff_id,
                                   tariff_versions, currency, lines, parts, included_taxes, total,
                                   energy_kwh, opening_at, opening_kwh, closing_at, closing_kwh,
                                   inputs_digest, issued_at, previous_total, difference, ord)
         ORDER BY i.ord",
        &[
            &numbers,
            &devices,
            &months,
            &revisions,
            &period_revisions,
            &period_event_ids,
            &first_days,
            &last_days,
            &zones,
            &tariff_ids,
            &tariff_versions,
            &currencies,
            &lines,
            &parts,
            &taxes,
            &totals,
            &energies,
            &opening_at,
            &opening_kwh,
            &closing_at,
            &closing_kwh,
            &digests,
            &issued_at,
            &previous_totals,
            &differences,
            &replay_job,
        ],
    )
    .await?;
    Ok(())
}

fn period_event_id(invoice: &InvoiceEvent) -> String {
    smartmeter_core::event::derived_event_id(&[
        "billing-period",
        invoice.device_id.as_str(),
        &invoice.month.to_string(),
        &invoice.period_revision.to_string(),
    ])
}

async fn upsert_states<'a>(
    tx: &Transaction<'_>,
    states: impl Iterator<Item = &'a BillingState>,
) -> Result<(), tokio_postgres::Error> {
    let mut devices = Vec::new();
    let mut months = Vec::new();
    let mut revisions = Vec::new();
    let mut event_ids = Vec::new();
    let mut statuses = Vec::new();
    let mut reasons = Vec::new();
    let mut tariff_ids = Vec::new();
    let mut digests = Vec::new();
    let mut periods = Vec::new();
    let mut numbers = Vec::new();
    let mut invoice_revisions = Vec::new();
    let mut totals = Vec::new();
    for state in states {
        devices.push(state.device_id.as_str());
        months.push(state.month);
        revisions.push(state.period_revision as i32);
        event_ids.push(state.period_event_id.as_str());
        statuses.push(state.status.as_str());
        reasons.push(state.reason.as_deref());
        tariff_ids.push(state.tariff_id.as_deref());
        digests.push(state.inputs_digest.as_deref());
        periods.push(state.period.as_ref());
        numbers.push(state.latest.as_ref().map(|latest| latest.number.as_str()));
        invoice_revisions.push(state.latest.as_ref().map(|latest| latest.revision as i32));
        totals.push(state.latest.as_ref().map(|latest| latest.total));
    }
    if devices.is_empty() {
        return Ok(());
    }
    tx.execute(
        "INSERT INTO billing_states
             (device_id, month, period_revision, period_event_id, status, reason, tariff_id,
              inputs_digest, period, invoice_number, invoice_revision, invoice_total)
         SELECT * FROM unnest($1::text[], $2::date[], $3::integer[], $4::text[], $5::text[], $6::text[],
                              $7::text[], $8::text[], $9::jsonb[], $10::text[], $11::integer[],
                              $12::numeric[])
         ON CONFLICT (device_id, month) DO UPDATE SET
             period_revision = EXCLUDED.period_revision, period_event_id = EXCLUDED.period_event_id,
             status = EXCLUDED.status, reason = EXCLUDED.reason, tariff_id = EXCLUDED.tariff_id,
             inputs_digest = EXCLUDED.inputs_digest, period = EXCLUDED.period,
             invoice_number = EXCLUDED.invoice_number, invoice_revision = EXCLUDED.invoice_revision,
             invoice_total = EXCLUDED.invoice_total, updated_at = now()",
        &[
            &devices,
            &months,
            &revisions,
            &event_ids,
            &statuses,
            &reasons,
            &tariff_ids,
            &digests,
            &periods,
            &numbers,
            &invoice_revisions,
            &totals,
        ],
    )
    .await?;
    Ok(())
}

pub async fn fetch_invoice(
    client: &impl GenericClient,
    number: &str,
) -> Result<Option<InvoiceEvent>, StoreError> {
    let Some(row) = client
        .query_opt(
            "SELECT invoice_number, device_id, month, revision, period_revision, tariff_id, tariff_versions,
                    currency, first_day, last_day, energy_kwh, opening_read_at, opening_read_kwh,
                    closing_read_at, closing_read_kwh, parts, lines, included_taxes, total,
                    previous_total, difference, inputs_digest, issued_at, time_zone,
                    (SELECT invoice_number FROM invoices r
                     WHERE r.device_id = i.device_id AND r.month = i.month AND r.revision = i.revision - 1)
             FROM invoices i WHERE invoice_number = $1",
            &[&number],
        )
        .await?
    else {
        return Ok(None);
    };
    let read = |at: usize, kwh: usize| {
        row.get::<_, Option<Timestamp>>(at)
            .zip(row.get::<_, Option<Decimal>>(kwh))
            .map(|(at, counter_kwh)| MeterRead { at, counter_kwh })
    };
    let device_id: String = row.get(1);
    let invoice = InvoiceEvent {
        invoice_number: row.get(0),
        device_id: DeviceId::parse(&device_id)
            .map_err(|error| StoreError::Corrupt { what: "device id", reason: error.to_string() })?,
        month: row.get(2),
        revision: row.get::<_, i32>(3) as u32,
        period_revision: row.get::<_, i32>(4) as u32,
        tariff_id: row.get(5),
        tariff_versions: row.get::<_, Vec<i32>>(6).into_iter().map(|v| v as u32).collect(),
        time_zone: row.get(23),
        currency: row.get::<_, &str>(7).parse().map_err(|error: smartmeter_core::billing::TariffError| {
            StoreError::Corrupt { what: "currency", reason: error.to_string() }
        })?,
        first_day: row.get(8),
        last_day: row.get(9),
        energy_kwh: row.get(10),
        opening_read: read(11, 12),
        closing_read: read(13, 14),
        parts: serde_json::from_value(row.get(15)).map_err(corrupt("invoice parts"))?,
        lines: serde_json::from_value(row.get(16)).map_err(corrupt("invoice lines"))?,
        included_taxes: serde_json::from_value(row.get(17)).map_err(corrupt("included taxes"))?,
        total: row.get(18),
        previous_total: row.get(19),
        difference: row.get(20),
        inputs_digest: row.get(21),
        issued_at: row.get(22),
        revises: row.get(24),
    };
    Ok(Some(invoice))
}

/// Counts a replay batch adds to its job.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    pub records_read: i64,
    pub periods_matched: i64,
    pub issued: i64,
    pub revised: i64,
    pub unchanged: i64,
    pub unbillable: i64,
    pub stale: i64,
}

impl std::ops::AddAssign for Progress {
    fn add_assign(&mut self, other: Self) {
        self.records_read += other.records_read;
        self.periods_matched += other.periods_matched;
        self.issued += other.issued;
        self.revised += other.revised;
        self.unchanged += other.unchanged;
        self.unbillable += other.unbillable;
        self.stale += other.stale;
    }
}

pub async fn create_replay_job(
    client: &impl GenericClient,
    from_month: Date,
    to_month: Option<Date>,
    device_id: Option<&str>,
) -> Result<i64, tokio_postgres::Error> {
    let row = client
        .query_one(
            "INSERT INTO replay_jobs (from_month, to_month, device_id) VALUES ($1, $2, $3) RETURNING job_id",
            &[&from_month, &to_month, &device_id],
        )
        .await?;
    Ok(row.get(0))
}

/// A `requested` replay job claimed by this worker (now `running`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedJob {
    pub job_id: i64,
    pub from_month: Date,
    pub to_month: Option<Date>,
    pub device_id: Option<String>,
    pub requested_by: Option<String>,
}

/// A `running` job whose progress has not moved for this long belongs to a process that
/// died (a running replay updates its row with every chunk, within seconds).
pub const ABANDONED_AFTER_SECONDS: i64 = 600;

/// Claims the oldest `requested` replay job, or one `running` but abandoned (see
/// [`ABANDONED_AFTER_SECONDS`]): skips rows another worker holds, sets it `running` and
/// its counters to zero (a job run again starts afresh; a replay is idempotent).
pub async fn claim_replay_job(
    client: &mut deadpool_postgres::Object,
) -> Result<Option<ClaimedJob>, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    let Some(row) = tx
        .query_opt(
            "SELECT job_id, from_month, to_month, device_id, requested_by FROM replay_jobs
             WHERE status = 'requested'
                OR (status = 'running' AND updated_at < now() - make_interval(secs => $1::bigint))
             ORDER BY job_id LIMIT 1 FOR UPDATE SKIP LOCKED",
            &[&ABANDONED_AFTER_SECONDS],
        )
        .await?
    else {
        return Ok(None);
    };
    let job = ClaimedJob {
        job_id: row.get(0),
        from_month: row.get(1),
        to_month: row.get(2),
        device_id: row.get(3),
        requested_by: row.get(4),
    };
    tx.execute(
        "UPDATE replay_jobs SET status = 'running', started_at = now(), updated_at = now(), error = NULL,
             finished_at = NULL, records_total = 0, records_read = 0, periods_matched = 0,
             invoices_issued = 0, invoices_revised = 0, unchanged = 0, unbillable = 0, stale = 0
         WHERE job_id = $1",
        &[&job.job_id],
    )
    .await?;
    tx.commit().await?;
    Ok(Some(job))
}

pub async fn set_replay_total(
    client: &impl GenericClient,
    job_id: i64,
    records_total: i64,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "UPDATE replay_jobs SET records_total = $2, updated_at = now() WHERE job_id = $1",
            &[&job_id, &records_total],
        )
        .await?;
    Ok(())
}

pub async fn add_replay_progress(
    tx: &Transaction<'_>,
    job_id: i64,
    progress: &Progress,
) -> Result<(), tokio_postgres::Error> {
    tx.execute(
        "UPDATE replay_jobs SET records_read = records_read + $2, periods_matched = periods_matched + $3,
             invoices_issued = invoices_issued + $4, invoices_revised = invoices_revised + $5,
             unchanged = unchanged + $6, unbillable = unbillable + $7, stale = stale + $8,
             updated_at = now()
         WHERE job_id = $1",
        &[
            &job_id,
            &progress.records_read,
            &progress.periods_matched,
            &progress.issued,
            &progress.revised,
            &progress.unchanged,
            &progress.unbillable,
            &progress.stale,
        ],
    )
    .await?;
    Ok(())
}

pub async fn finish_replay_job(
    client: &impl GenericClient,
    job_id: i64,
    status: &str,
    error: Option<&str>,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "UPDATE replay_jobs SET status = $2, error = $3, updated_at = now(),
                 finished_at = CASE WHEN $2 = 'requested' THEN NULL ELSE now() END
             WHERE job_id = $1",
            &[&job_id, &status, &error],
        )
        .await?;
    Ok(())
}

/// Records a mailing of `invoice_number` to `recipient` (sent, or failed with `error`).
pub async fn record_mailing(
    client: &impl GenericClient,
    invoice_number: &str,
    recipient: &str,
    error: Option<&str>,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "INSERT INTO invoice_mailings (invoice_number, recipient, attempts, sent_at, last_error)
             VALUES ($1, $2, 1, CASE WHEN $3::text IS NULL THEN now() END, $3)
             ON CONFLICT (invoice_number, recipient) DO UPDATE SET
                 attempts = invoice_mailings.attempts + 1,
                 sent_at = coalesce(invoice_mailings.sent_at, EXCLUDED.sent_at),
                 last_error = EXCLUDED.last_error, updated_at = now()",
            &[&invoice_number, &recipient, &error],
        )
        .await?;
    Ok(())
}

/// Invoices issued since `since` not yet mailed to `recipient`, oldest first, with
/// fewer than `max_attempts` failed attempts.
pub async fn invoices_to_mail(
    client: &impl GenericClient,
    recipient: &str,
    since: Timestamp,
    max_attempts: i32,
    limit: i64,
) -> Result<Vec<String>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT i.invoice_number FROM invoices i
             LEFT JOIN invoice_mailings m ON m.invoice_number = i.invoice_number AND m.recipient = $1
             WHERE i.issued_at >= $2 AND m.sent_at IS NULL AND coalesce(m.attempts, 0) < $3
             ORDER BY i.issued_at, i.invoice_number LIMIT $4",
            &[&recipient, &since, &max_attempts, &limit],
        )
        .await?;
    Ok(rows.into_iter().map(|row| row.get(0)).collect())
}
