//! Output types of tariffs, billing periods, invoices, replay jobs and the receipts of
//! published commands. Money is `Decimal` (a string), never a float.

use std::sync::Arc;

use async_graphql::{Context, Enum, Json, Object, SimpleObject};
use rust_decimal::Decimal;
use smartmeter_core::billing::events::{InvoiceEvent, MeterRead as CoreMeterRead};
use smartmeter_core::billing::{
    IncludedTax as CoreIncludedTax, InvoiceLine as CoreLine, PricedPart as CorePart,
};

use super::api;
use super::scalars::{Date, DateTime, Month};
use super::types::milli_wh_to_kwh;
use crate::publish::Receipt;
use crate::store::{AssignmentRow, BillingPeriodRow, ReplayJobRow, TariffVersionRow};

#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum SupplyPhase {
    Single,
    Three,
}

impl SupplyPhase {
    pub fn from_db(text: &str) -> Option<Self> {
        match text {
            "single" => Some(Self::Single),
            "three" => Some(Self::Three),
            _ => None,
        }
    }

    pub fn core(self) -> smartmeter_core::billing::Phase {
        match self {
            Self::Single => smartmeter_core::billing::Phase::Single,
            Self::Three => smartmeter_core::billing::Phase::Three,
        }
    }
}

pub struct TariffAssignment(pub AssignmentRow);

/// From `effectiveFrom` on, the device is billed on `tariffId` (a period is priced on
/// the assignment in force on its first day).
#[Object]
impl TariffAssignment {
    async fn device_id(&self) -> &str {
        &self.0.device_id
    }

    async fn tariff_id(&self) -> &str {
        &self.0.tariff_id
    }

    async fn effective_from(&self) -> Date {
        Date(self.0.effective_from)
    }

    async fn sanctioned_load_kw(&self) -> Option<Decimal> {
        self.0.sanctioned_load_kw
    }

    async fn connected_load_kw(&self) -> Option<Decimal> {
        self.0.connected_load_kw
    }

    async fn phase(&self) -> Option<SupplyPhase> {
        self.0.phase.as_deref().and_then(SupplyPhase::from_db)
    }

    async fn assigned_at(&self) -> DateTime {
        DateTime(self.0.assigned_at)
    }
}

/// A tariff: its published versions (as the billing worker stored them).
pub struct Tariff {
    pub versions: Vec<TariffVersionRow>,
}

#[Object]
impl Tariff {
    async fn tariff_id(&self) -> &str {
        self.latest().map_or("", |v| v.document.tariff_id.as_str())
    }

    /// The title of the newest version.
    async fn title(&self) -> Option<&str> {
        self.latest().and_then(|v| v.document.title.as_deref())
    }

    async fn currency(&self) -> String {
        self.latest().map(|v| v.document.currency.to_string()).unwrap_or_default()
    }

    async fn time_zone(&self) -> &str {
        self.latest().map_or("", |v| v.document.time_zone.as_str())
    }

    async fn latest_version(&self) -> Option<TariffVersion> {
        self.latest().cloned().map(TariffVersion)
    }

    /// Oldest first.
    async fn versions(&self) -> Vec<TariffVersion> {
        self.versions.iter().cloned().map(TariffVersion).collect()
    }
}

impl Tariff {
    fn latest(&self) -> Option<&TariffVersionRow> {
        self.versions.last()
    }
}

pub struct TariffVersion(pub TariffVersionRow);

#[Object]
impl TariffVersion {
    async fn tariff_id(&self) -> &str {
        &self.0.document.tariff_id
    }

    async fn version(&self) -> i64 {
        i64::from(self.0.document.version)
    }

    /// First local day the version applies.
    async fn effective_from(&self) -> Date {
        Date(self.0.document.effective_from)
    }

    async fn title(&self) -> Option<&str> {
        self.0.document.title.as_deref()
    }

    async fn currency(&self) -> String {
        self.0.document.currency.to_string()
    }

    async fn time_zone(&self) -> &str {
        &self.0.document.time_zone
    }

    /// Id of its TariffVersionPublished event.
    async fn event_id(&self) -> &str {
        &self.0.event_id
    }

    async fn published_at(&self) -> DateTime {
        DateTime(self.0.published_at)
    }

    /// The tariff document as published (`core/tariffs/*.json` shape): slabs, fixed
    /// charges, taxes, time-of-use bands, rounding; decimals are strings.
    async fn document(&self) -> Json<serde_json::Value> {
        Json(serde_json::to_value(&self.0.document).unwrap_or_default())
    }
}

#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeriodStatus {
    Open,
    Closed,
}

#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum BillingStatus {
    /// The last pricing matches the latest invoice.
    Invoiced,
    /// The last pricing failed; `billingReason` says why.
    Unbillable,
}

pub struct BillingPeriod(pub BillingPeriodRow);

/// A device's local calendar month as the processor tracks it, with the billing
/// worker's view of it.
#[Object]
impl BillingPeriod {
    async fn device_id(&self) -> &str {
        &self.0.device_id
    }

    async fn month(&self) -> Month {
        Month(self.0.month)
    }

    async fn time_zone(&self) -> &str {
        &self.0.time_zone
    }

    async fn starts_at(&self) -> DateTime {
        DateTime(self.0.starts_at)
    }

    async fn ends_at(&self) -> DateTime {
        DateTime(self.0.ends_at)
    }

    async fn status(&self) -> PeriodStatus {
        if self.0.status == "closed" {
            PeriodStatus::Closed
        } else {
            PeriodStatus::Open
        }
    }

    /// 0 = as closed; n = after the n-th adjustment by late data.
    async fn revision(&self) -> i32 {
        self.0.revision
    }

    async fn closed_at(&self) -> Option<DateTime> {
        self.0.closed_at.map(DateTime)
    }

    /// Closed: the energy billed (as published); open: the month's energy so far.
    async fn energy_kwh(&self) -> Decimal {
        milli_wh_to_kwh(self.0.energy_milli_wh)
    }

    async fn reading_count(&self) -> Option<i64> {
        self.published("reading_count").and_then(serde_json::Value::as_i64)
    }

    /// Share of the period's local hours holding a reading (0..1).
    async fn coverage(&self) -> Option<Decimal> {
        self.published("coverage").and_then(|v| v.as_str()).and_then(|s| s.parse().ok())
    }

    /// gaps, counter_reset, rollover, meter_replaced, quarantined, clock_unsynced,
    /// no_opening_read, decommissioned.
    async fn quality_flags(&self) -> Vec<String> {
        self.published("quality_flags")
            .and_then(serde_json::Value::as_array)
            .map(|flags| flags.iter().filter_map(|f| f.as_str().map(str::to_owned)).collect())
            .unwrap_or_default()
    }

    async fn opening_read(&self) -> Option<MeterRead> {
        self.published("opening_read").and_then(|v| serde_json::from_value(v.clone()).ok()).map(MeterRead)
    }

    async fn closing_read(&self) -> Option<MeterRead> {
        self.published("closing_read").and_then(|v| serde_json::from_value(v.clone()).ok()).map(MeterRead)
    }

    async fn billing_status(&self) -> Option<BillingStatus> {
        match self.0.billing_status.as_deref() {
            Some("invoiced") => Some(BillingStatus::Invoiced),
            Some("unbillable") => Some(BillingStatus::Unbillable),
            _ => None,
        }
    }

    /// Why the period is not billable (no tariff, no version in force, ...).
    async fn billing_reason(&self) -> Option<&str> {
        self.0.billing_reason.as_deref()
    }

    /// The tariff the billing worker priced (or tried to price) it with.
    async fn billing_tariff_id(&self) -> Option<&str> {
        self.0.billing_tariff_id.as_deref()
    }

    /// The latest invoice of the month, if any.
    async fn invoice(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Invoice>> {
        match &self.0.invoice_number {
            Some(number) => Ok(api(ctx).store.invoice(number).await?.map(|i| Invoice(Arc::new(i)))),
            None => Ok(None),
        }
    }
}

impl BillingPeriod {
    fn published(&self, key: &str) -> Option<&serde_json::Value> {
        self.0.published.as_ref().and_then(|p| p.get(key))
    }
}

pub struct MeterRead(pub CoreMeterRead);

/// A meter reading as printed on a bill.
#[Object]
impl MeterRead {
    async fn at(&self) -> DateTime {
        DateTime(self.0.at)
    }

    async fn counter_kwh(&self) -> Decimal {
        self.0.counter_kwh
    }
}

pub struct InvoiceLine(pub CoreLine);

/// One line: `amount` is rounded by the tariff's rule; quantity × rate is the
/// unrounded amount (for a percentage: base × rate / 100).
#[Object]
impl InvoiceLine {
    async fn name(&self) -> &str {
        &self.0.name
    }

    async fn quantity(&self) -> Option<Decimal> {
        self.0.quantity
    }

    /// kWh, month, day, bill, kW-month, or `<currency> base` for a percentage.
    async fn unit(&self) -> Option<String> {
        self.0.unit.map(|unit| unit.to_string())
    }

    /// Currency per unit, or percent; negative for a credit.
    async fn rate(&self) -> Option<Decimal> {
        self.0.rate
    }

    async fn amount(&self) -> Decimal {
        self.0.amount
    }
}

pub struct PricedPart(pub CorePart);

/// The stretch of the period one tariff version priced.
#[Object]
impl PricedPart {
    async fn version(&self) -> i64 {
        i64::from(self.0.version)
    }

    async fn effective_from(&self) -> Date {
        Date(self.0.effective_from)
    }

    async fn first_day(&self) -> Date {
        Date(self.0.first_day)
    }

    async fn last_day(&self) -> Date {
        Date(self.0.last_day)
    }

    async fn energy_kwh(&self) -> Decimal {
        self.0.energy_kwh
    }

    /// The month factor per-month charges and slab limits were scaled by.
    async fn months(&self) -> Decimal {
        self.0.months
    }

    /// Indices of the part's lines in `Invoice.lines`, `[first, end)`.
    async fn first_line(&self) -> i32 {
        i32::try_from(self.0.lines.start).unwrap_or(i32::MAX)
    }

    async fn end_line(&self) -> i32 {
        i32::try_from(self.0.lines.end).unwrap_or(i32::MAX)
    }
}

pub struct IncludedTax(pub CoreIncludedTax);

/// A tax already inside the rates: reported, not added.
#[Object]
impl IncludedTax {
    async fn name(&self) -> &str {
        &self.0.name
    }

    async fn percent(&self) -> Decimal {
        self.0.percent
    }

    async fn base(&self) -> Decimal {
        self.0.base
    }

    async fn amount(&self) -> Decimal {
        self.0.amount
    }
}

pub struct Invoice(pub Arc<InvoiceEvent>);

/// An issued invoice (revision 0) or a revision of it. Issued invoices never change:
/// a re-pricing that changes the total is a new revision carrying the difference.
#[Object]
impl Invoice {
    async fn invoice_number(&self) -> &str {
        &self.0.invoice_number
    }

    async fn device_id(&self) -> &str {
        self.0.device_id.as_str()
    }

    async fn month(&self) -> Month {
        Month(self.0.month)
    }

    async fn revision(&self) -> i64 {
        i64::from(self.0.revision)
    }

    /// The revision of the billing period priced.
    async fn period_revision(&self) -> i64 {
        i64::from(self.0.period_revision)
    }

    async fn tariff_id(&self) -> &str {
        &self.0.tariff_id
    }

    async fn tariff_versions(&self) -> Vec<i64> {
        self.0.tariff_versions.iter().map(|v| i64::from(*v)).collect()
    }

    async fn currency(&self) -> String {
        self.0.currency.to_string()
    }

    async fn time_zone(&self) -> &str {
        &self.0.time_zone
    }

    async fn first_day(&self) -> Date {
        Date(self.0.first_day)
    }

    async fn last_day(&self) -> Date {
        Date(self.0.last_day)
    }

    async fn energy_kwh(&self) -> Decimal {
        self.0.energy_kwh
    }

    async fn opening_read(&self) -> Option<MeterRead> {
        self.0.opening_read.clone().map(MeterRead)
    }

    async fn closing_read(&self) -> Option<MeterRead> {
        self.0.closing_read.clone().map(MeterRead)
    }

    async fn lines(&self) -> Vec<InvoiceLine> {
        self.0.lines.iter().cloned().map(InvoiceLine).collect()
    }

    async fn parts(&self) -> Vec<PricedPart> {
        self.0.parts.iter().cloned().map(PricedPart).collect()
    }

    async fn included_taxes(&self) -> Vec<IncludedTax> {
        self.0.included_taxes.iter().cloned().map(IncludedTax).collect()
    }

    async fn total(&self) -> Decimal {
        self.0.total
    }

    /// For a revision: the invoice it revises, its total and `total - previousTotal`.
    async fn revises(&self) -> Option<&str> {
        self.0.revises.as_deref()
    }

    async fn previous_total(&self) -> Option<Decimal> {
        self.0.previous_total
    }

    async fn difference(&self) -> Option<Decimal> {
        self.0.difference
    }

    /// Hash of what was priced: equal digests mean an equal invoice.
    async fn inputs_digest(&self) -> &str {
        &self.0.inputs_digest
    }

    async fn issued_at(&self) -> DateTime {
        DateTime(self.0.issued_at)
    }

    /// A link to the PDF, signed for 15 minutes (works without a token, e.g. as a
    /// plain `<a href>`); relative to this API's address.
    async fn pdf_url(&self, ctx: &Context<'_>) -> String {
        api(ctx).links.invoice_pdf_path(&self.0.invoice_number, jiff::Timestamp::now())
    }

    /// Every revision of this device-month, the original first.
    async fn revisions(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Invoice>> {
        let revisions = api(ctx).store.invoice_revisions(&self.0.device_id, self.0.month).await?;
        Ok(revisions.into_iter().map(|i| Invoice(Arc::new(i))).collect())
    }
}

#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayStatus {
    /// Waiting for a billing worker to claim it.
    Requested,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

pub struct ReplayJob(pub ReplayJobRow);

/// A billing replay: re-reading billing periods from Kafka and re-pricing them; the
/// billing worker updates the counts as it goes.
#[Object]
impl ReplayJob {
    async fn job_id(&self) -> i64 {
        self.0.job_id
    }

    async fn from_month(&self) -> Month {
        Month(self.0.from_month)
    }

    async fn to_month(&self) -> Option<Month> {
        self.0.to_month.map(Month)
    }

    async fn device_id(&self) -> Option<&str> {
        self.0.device_id.as_deref()
    }

    async fn status(&self) -> async_graphql::Result<ReplayStatus> {
        Ok(match self.0.status.as_str() {
            "requested" => ReplayStatus::Requested,
            "running" => ReplayStatus::Running,
            "succeeded" => ReplayStatus::Succeeded,
            "failed" => ReplayStatus::Failed,
            "cancelled" => ReplayStatus::Cancelled,
            other => {
                tracing::error!(job_id = self.0.job_id, status = other, "Unknown replay status.");
                return Err(super::error::ApiError::Internal.into());
            }
        })
    }

    async fn requested_by(&self) -> Option<&str> {
        self.0.requested_by.as_deref()
    }

    async fn requested_at(&self) -> DateTime {
        DateTime(self.0.requested_at)
    }

    async fn started_at(&self) -> DateTime {
        DateTime(self.0.started_at)
    }

    async fn updated_at(&self) -> DateTime {
        DateTime(self.0.updated_at)
    }

    async fn finished_at(&self) -> Option<DateTime> {
        self.0.finished_at.map(DateTime)
    }

    /// Records to read (between the start and end offsets taken at the start).
    async fn records_total(&self) -> i64 {
        self.0.records_total
    }

    async fn records_read(&self) -> i64 {
        self.0.records_read
    }

    /// `recordsRead / recordsTotal`, 0..1 (1 when there is nothing to read and it finished).
    async fn progress(&self) -> f64 {
        if self.0.records_total > 0 {
            (self.0.records_read as f64 / self.0.records_total as f64).min(1.0)
        } else if self.0.finished_at.is_some() {
            1.0
        } else {
            0.0
        }
    }

    async fn periods_matched(&self) -> i64 {
        self.0.periods_matched
    }

    async fn invoices_issued(&self) -> i64 {
        self.0.invoices_issued
    }

    async fn invoices_revised(&self) -> i64 {
        self.0.invoices_revised
    }

    async fn unchanged(&self) -> i64 {
        self.0.unchanged
    }

    async fn unbillable(&self) -> i64 {
        self.0.unbillable
    }

    /// Period revisions older than the one already priced.
    async fn stale(&self) -> i64 {
        self.0.stale
    }

    async fn error(&self) -> Option<&str> {
        self.0.error.as_deref()
    }
}

/// An event a command published: the projections apply it shortly after.
#[derive(SimpleObject, Debug, Clone)]
pub struct EventReceipt {
    pub event_id: String,
    /// CloudEvents `type`.
    pub event_type: String,
    pub topic: String,
    pub key: String,
    pub partition: i32,
    pub offset: i64,
}

impl From<Receipt> for EventReceipt {
    fn from(receipt: Receipt) -> Self {
        Self {
            event_id: receipt.event_id,
            event_type: receipt.event_type,
            topic: receipt.topic,
            key: receipt.key,
            partition: receipt.partition,
            offset: receipt.offset,
        }
    }
}

/// The outcome of `publishTariffVersion`.
#[derive(SimpleObject, Debug, Clone)]
pub struct TariffVersionReceipt {
    pub tariff_id: String,
    pub version: i64,
    /// The deterministic id of the TariffVersionPublished event.
    pub event_id: String,
    /// True when the same document was published before: nothing was sent again.
    pub already_published: bool,
    pub event: Option<EventReceipt>,
}
