//! The billing worker's and the processor's billing tables: tariff versions and
//! assignments, billing periods with their billing state, invoices with their
//! revisions, and replay jobs (the one row query-api inserts there: a requested replay).

use jiff::civil::Date;
use jiff::Timestamp;
use rust_decimal::Decimal;
use smartmeter_core::billing::events::{InvoiceEvent, MeterRead};
use smartmeter_core::billing::TariffDocument;
use smartmeter_core::DeviceId;

use super::{Store, StoreError};

#[derive(Debug, Clone, PartialEq)]
pub struct TariffVersionRow {
    pub document: TariffDocument,
    pub event_id: String,
    pub published_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AssignmentRow {
    pub device_id: String,
    pub effective_from: Date,
    pub tariff_id: String,
    pub sanctioned_load_kw: Option<Decimal>,
    pub connected_load_kw: Option<Decimal>,
    /// `single` or `three`.
    pub phase: Option<String>,
    pub assigned_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BillingPeriodRow {
    pub device_id: String,
    pub month: Date,
    pub time_zone: String,
    pub starts_at: Timestamp,
    pub ends_at: Timestamp,
    /// `open` or `closed`.
    pub status: String,
    pub revision: i32,
    pub closed_at: Option<Timestamp>,
    /// The published period (PeriodEvent JSON) once closed.
    pub published: Option<serde_json::Value>,
    /// Closed: the published energy; open: the month's daily energy so far.
    pub energy_milli_wh: i64,
    /// The billing worker's view: `invoiced` or `unbillable`, with why.
    pub billing_status: Option<String>,
    pub billing_reason: Option<String>,
    pub billing_tariff_id: Option<String>,
    pub invoice_number: Option<String>,
}

/// Position in the invoice list: ordered by month, device and revision, all descending.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InvoiceCursor {
    pub month: Date,
    pub device_id: String,
    pub revision: i32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayJobRow {
    pub job_id: i64,
    pub from_month: Date,
    pub to_month: Option<Date>,
    pub device_id: Option<String>,
    pub status: String,
    pub requested_by: Option<String>,
    pub requested_at: Timestamp,
    pub started_at: Timestamp,
    pub updated_at: Timestamp,
    pub finished_at: Option<Timestamp>,
    pub records_total: i64,
    pub records_read: i64,
    pub periods_matched: i64,
    pub invoices_issued: i64,
    pub invoices_revised: i64,
    pub unchanged: i64,
    pub unbillable: i64,
    pub stale: i64,
    pub error: Option<String>,
}

const INVOICE_COLUMNS: &str = "invoice_number, device_id, month, revision, period_revision, tariff_id, \
     tariff_versions, currency, first_day, last_day, energy_kwh, opening_read_at, opening_read_kwh, \
     closing_read_at, closing_read_kwh, parts, lines, included_taxes, total, previous_total, difference, \
     inputs_digest, issued_at, time_zone, \
     (SELECT r.invoice_number FROM invoices r \
      WHERE r.device_id = i.device_id AND r.month = i.month AND r.revision = i.revision - 1) AS revises";

fn corrupt(what: &'static str) -> impl Fn(serde_json::Error) -> StoreError {
    move |error| StoreError::Corrupt { what, reason: error.to_string() }
}

fn invoice_row(row: &tokio_postgres::Row) -> Result<InvoiceEvent, StoreError> {
    let read = |at: &str, kwh: &str| -> Result<Option<MeterRead>, StoreError> {
        let at: Option<Timestamp> = row.try_get(at)?;
        let counter_kwh: Option<Decimal> = row.try_get(kwh)?;
        Ok(at.zip(counter_kwh).map(|(at, counter_kwh)| MeterRead { at, counter_kwh }))
    };
    let device_id: String = row.try_get("device_id")?;
    let currency: String = row.try_get("currency")?;
    let versions: Vec<i32> = row.try_get("tariff_versions")?;
    Ok(InvoiceEvent {
        invoice_number: row.try_get("invoice_number")?,
        device_id: DeviceId::parse(&device_id)
            .map_err(|error| StoreError::Corrupt { what: "invoice device id", reason: error.to_string() })?,
        month: row.try_get("month")?,
        revision: row.try_get::<_, i32>("revision")?.max(0) as u32,
        period_revision: row.try_get::<_, i32>("period_revision")?.max(0) as u32,
        tariff_id: row.try_get("tariff_id")?,
        tariff_versions: versions.into_iter().map(|v| v.max(0) as u32).collect(),
        currency: currency.trim().parse().map_err(|error: smartmeter_core::billing::TariffError| {
            StoreError::Corrupt { what: "invoice currency", reason: error.to_string() }
        })?,
        time_zone: row.try_get("time_zone")?,
        first_day: row.try_get("first_day")?,
        last_day: row.try_get("last_day")?,
        energy_kwh: row.try_get("energy_kwh")?,
        opening_read: read("opening_read_at", "opening_read_kwh")?,
        closing_read: read("closing_read_at", "closing_read_kwh")?,
        parts: serde_json::from_value(row.try_get("parts")?).map_err(corrupt("invoice parts"))?,
        lines: serde_json::from_value(row.try_get("lines")?).map_err(corrupt("invoice lines"))?,
        included_taxes: serde_json::from_value(row.try_get("included_taxes")?)
            .map_err(corrupt("invoice included taxes"))?,
        total: row.try_get("total")?,
        revises: row.try_get("revises")?,
        previous_total: row.try_get("previous_total")?,
        difference: row.try_get("difference")?,
        inputs_digest: row.try_get("inputs_digest")?,
        issued_at: row.try_get("issued_at")?,
    })
}

fn version_row(row: &tokio_postgres::Row) -> Result<TariffVersionRow, StoreError> {
    Ok(TariffVersionRow {
        document: serde_json::from_value(row.try_get("document")?).map_err(corrupt("tariff document"))?,
        event_id: row.try_get("event_id")?,
        published_at: row.try_get("published_at")?,
    })
}

const REPLAY_COLUMNS: &str = "job_id, from_month, to_month, device_id, status, requested_by, requested_at, \
     started_at, updated_at, finished_at, records_total, records_read, periods_matched, invoices_issued, \
     invoices_revised, unchanged, unbillable, stale, error";

fn replay_row(row: &tokio_postgres::Row) -> Result<ReplayJobRow, tokio_postgres::Error> {
    Ok(ReplayJobRow {
        job_id: row.try_get("job_id")?,
        from_month: row.try_get("from_month")?,
        to_month: row.try_get("to_month")?,
        device_id: row.try_get("device_id")?,
        status: row.try_get("status")?,
        requested_by: row.try_get("requested_by")?,
        requested_at: row.try_get("requested_at")?,
        started_at: row.try_get("started_at")?,
        updated_at: row.try_get("updated_at")?,
        finished_at: row.try_get("finished_at")?,
        records_total: row.try_get("records_total")?,
        records_read: row.try_get("records_read")?,
        periods_matched: row.try_get("periods_matched")?,
        invoices_issued: row.try_get("invoices_issued")?,
        invoices_revised: row.try_get("invoices_revised")?,
        unchanged: row.try_get("unchanged")?,
        unbillable: row.try_get("unbillable")?,
        stale: row.try_get("stale")?,
        error: row.try_get("error")?,
    })
}

impl Store {
    /// Every stored version of every tariff, by tariff id then version.
    pub async fn tariff_versions_all(&self) -> Result<Vec<TariffVersionRow>, StoreError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT document, event_id, published_at FROM tariff_versions ORDER BY tariff_id, version",
                &[],
            )
            .await?;
        rows.iter().map(version_row).collect()
    }

    /// The stored versions of one tariff, oldest first (empty for an unknown tariff).
    pub async fn tariff_versions(&self, tariff_id: &str) -> Result<Vec<TariffVersionRow>, StoreError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT document, event_id, published_at FROM tariff_versions
                 WHERE tariff_id = $1 ORDER BY version",
                &[&tariff_id],
            )
            .await?;
        rows.iter().map(version_row).collect()
    }

    /// A device's tariff assignments, oldest first.
    pub async fn assignments(&self, device_id: &DeviceId) -> Result<Vec<AssignmentRow>, StoreError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT device_id, effective_from, tariff_id, sanctioned_load_kw, connected_load_kw, phase,
                        assigned_at
                 FROM tariff_assignments WHERE device_id = $1 ORDER BY effective_from",
                &[&device_id.as_str()],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|row| {
                Ok(AssignmentRow {
                    device_id: row.try_get("device_id")?,
                    effective_from: row.try_get("effective_from")?,
                    tariff_id: row.try_get("tariff_id")?,
                    sanctioned_load_kw: row.try_get("sanctioned_load_kw")?,
                    connected_load_kw: row.try_get("connected_load_kw")?,
                    phase: row.try_get("phase")?,
                    assigned_at: row.try_get("assigned_at")?,
                })
            })
            .collect::<Result<_, tokio_postgres::Error>>()?)
    }

    /// Billing periods of `from_month..=to_month`, oldest first, with the worker's state.
    pub async fn billing_periods(
        &self,
        device_id: &DeviceId,
        from_month: Date,
        to_month: Date,
    ) -> Result<Vec<BillingPeriodRow>, StoreError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT p.device_id, p.month, p.time_zone, p.starts_at, p.ends_at, p.status, p.revision,
                        p.closed_at, p.published,
                        COALESCE((p.published->>'energy_milli_wh')::bigint,
                                 (SELECT sum(d.energy_milli_wh) FROM energy_daily d
                                  WHERE d.device_id = p.device_id AND d.local_date >= p.month
                                    AND d.local_date < (p.month + interval '1 month')::date),
                                 0)::bigint AS energy_milli_wh,
                        s.status AS billing_status, s.reason AS billing_reason,
                        s.tariff_id AS billing_tariff_id, s.invoice_number
                 FROM billing_periods p
                 LEFT JOIN billing_states s ON s.device_id = p.device_id AND s.month = p.month
                 WHERE p.device_id = $1 AND p.month BETWEEN $2 AND $3
                 ORDER BY p.month",
                &[&device_id.as_str(), &from_month, &to_month],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|row| {
                Ok(BillingPeriodRow {
                    device_id: row.try_get("device_id")?,
                    month: row.try_get("month")?,
                    time_zone: row.try_get("time_zone")?,
                    starts_at: row.try_get("starts_at")?,
                    ends_at: row.try_get("ends_at")?,
                    status: row.try_get("status")?,
                    revision: row.try_get("revision")?,
                    closed_at: row.try_get("closed_at")?,
                    published: row.try_get("published")?,
                    energy_milli_wh: row.try_get("energy_milli_wh")?,
                    billing_status: row.try_get("billing_status")?,
                    billing_reason: row.try_get("billing_reason")?,
                    billing_tariff_id: row.try_get("billing_tariff_id")?,
                    invoice_number: row.try_get("invoice_number")?,
                })
            })
            .collect::<Result<_, tokio_postgres::Error>>()?)
    }

    pub async fn invoice(&self, invoice_number: &str) -> Result<Option<InvoiceEvent>, StoreError> {
        let client = self.pool.get().await?;
        let sql = format!("SELECT {INVOICE_COLUMNS} FROM invoices i WHERE invoice_number = $1");
        client.query_opt(&sql, &[&invoice_number]).await?.as_ref().map(invoice_row).transpose()
    }

    /// Every revision of a device-month, the original first.
    pub async fn invoice_revisions(
        &self,
        device_id: &DeviceId,
        month: Date,
    ) -> Result<Vec<InvoiceEvent>, StoreError> {
        let client = self.pool.get().await?;
        let sql = format!(
            "SELECT {INVOICE_COLUMNS} FROM invoices i WHERE device_id = $1 AND month = $2 ORDER BY revision"
        );
        client.query(&sql, &[&device_id.as_str(), &month]).await?.iter().map(invoice_row).collect()
    }

    /// Up to `limit` invoices after `after` in (month, device, revision) descending order,
    /// limited to a device, a month and a customer's devices when given.
    pub async fn invoices(
        &self,
        device_id: Option<&str>,
        month: Option<Date>,
        customer_id: Option<&str>,
        after: Option<&InvoiceCursor>,
        limit: i64,
    ) -> Result<Vec<InvoiceEvent>, StoreError> {
        let client = self.pool.get().await?;
        let sql = format!(
            "SELECT {INVOICE_COLUMNS} FROM invoices i
             WHERE ($1::text IS NULL OR i.device_id = $1)
               AND ($2::date IS NULL OR i.month = $2)
               AND ($3::text IS NULL OR i.device_id IN (SELECT device_id FROM devices WHERE customer_id = $3))
               AND ($4::date IS NULL OR (i.month, i.device_id, i.revision) < ($4, $5::text, $6::integer))
             ORDER BY i.month DESC, i.device_id DESC, i.revision DESC
             LIMIT $7"
        );
        let (after_month, after_device, after_revision) = match after {
            Some(cursor) => (Some(cursor.month), Some(cursor.device_id.as_str()), Some(cursor.revision)),
            None => (None, None, None),
        };
        client
            .query(
                &sql,
                &[&device_id, &month, &customer_id, &after_month, &after_device, &after_revision, &limit],
            )
            .await?
            .iter()
            .map(invoice_row)
            .collect()
    }

    /// A replay for the billing worker to claim (`status = 'requested'`).
    pub async fn request_replay(
        &self,
        from_month: Date,
        to_month: Option<Date>,
        device_id: Option<&str>,
        requested_by: &str,
    ) -> Result<ReplayJobRow, StoreError> {
        let client = self.pool.get().await?;
        let sql = format!(
            "INSERT INTO replay_jobs (from_month, to_month, device_id, status, requested_by)
             VALUES ($1, $2, $3, 'requested', $4)
             RETURNING {REPLAY_COLUMNS}"
        );
        let row = client.query_one(&sql, &[&from_month, &to_month, &device_id, &requested_by]).await?;
        Ok(replay_row(&row)?)
    }

    pub async fn replay_job(&self, job_id: i64) -> Result<Option<ReplayJobRow>, StoreError> {
        let client = self.pool.get().await?;
        let sql = format!("SELECT {REPLAY_COLUMNS} FROM replay_jobs WHERE job_id = $1");
        Ok(client.query_opt(&sql, &[&job_id]).await?.as_ref().map(replay_row).transpose()?)
    }

    /// The newest replay jobs first.
    pub async fn replay_jobs(&self, limit: i64) -> Result<Vec<ReplayJobRow>, StoreError> {
        let client = self.pool.get().await?;
        let sql = format!("SELECT {REPLAY_COLUMNS} FROM replay_jobs ORDER BY job_id DESC LIMIT $1");
        Ok(client.query(&sql, &[&limit]).await?.iter().map(replay_row).collect::<Result<_, _>>()?)
    }
}
