// Billing: a meter and a month; the invoice with its slab breakdown, charges, taxes
// and total, the PDF, and the invoice history with revisions. The month's kWh from the
// daily rollups is shown beside the invoice's: they are the same figure.

import { useNavigate, useParams, useSearchParams } from "react-router";
import { useQuery } from "urql";
import { BILLING_PERIODS, DAILY_ENERGY, DEVICE, INVOICES } from "../api/queries";
import type { BillingPeriod, DailyEnergy, Device, Invoice } from "../api/types";
import { ErrorList } from "../components/ErrorList";
import { InvoiceView } from "../components/InvoiceView";
import { MeterPicker } from "../components/MeterPicker";
import { groupThousands, roundDecimal, sumDecimals } from "../lib/decimal";
import { addDays, formatDateTime, formatMonth, localDate } from "../lib/time";

export function BillingPage() {
  const { deviceId } = useParams();
  const [search, setSearch] = useSearchParams();
  const navigate = useNavigate();
  const month = search.get("month") ?? "";
  return (
    <section className="page">
      <div className="toolbar">
        <MeterPicker
          value={deviceId}
          onChange={(id) => navigate(`/billing/${encodeURIComponent(id)}${month ? `?month=${month}` : ""}`)}
        />
        {deviceId ? (
          <label className="field">
            <span>Month</span>
            <input
              type="month"
              data-testid="month-picker"
              value={month}
              onChange={(e) => setSearch(e.target.value ? { month: e.target.value } : {})}
            />
          </label>
        ) : null}
      </div>
      {deviceId ? <MeterBilling key={deviceId} deviceId={deviceId} month={month} onMonth={(m) => setSearch({ month: m })} /> : <p className="hint">Pick a meter.</p>}
    </section>
  );
}

function MeterBilling({ deviceId, month, onMonth }: { deviceId: string; month: string; onMonth(month: string): void }) {
  const [deviceResult] = useQuery<{ device: Device | null }>({ query: DEVICE, variables: { deviceId } });
  const [history] = useQuery<{ invoices: { nodes: Invoice[] } }>({
    query: INVOICES,
    variables: { deviceId, first: 500 },
  });
  const device = deviceResult.data?.device;
  const invoices = history.data?.invoices.nodes ?? [];
  const months = [...new Set(invoices.map((i) => i.month))].sort().reverse();
  // Without a month chosen: the newest invoiced one.
  const shownMonth = month || months[0] || "";
  const ofMonth = invoices.filter((i) => i.month === shownMonth).sort((a, b) => b.revision - a.revision);
  const current = ofMonth[0];

  return (
    <>
      <ErrorList error={deviceResult.error ?? history.error} />
      {shownMonth && device ? <MonthEnergy device={device} month={shownMonth} invoice={current} /> : null}
      {history.fetching && !history.data ? <p className="hint">Loading invoices…</p> : null}
      {shownMonth && history.data && !current ? <NoInvoice deviceId={deviceId} month={shownMonth} /> : null}
      {current ? <InvoiceView invoice={current} /> : null}
      <section className="panel">
        <h3>Invoice history</h3>
        {invoices.length === 0 && history.data ? <p className="hint">No invoices yet.</p> : null}
        <div className="table-wrap">
          <table className="table" data-testid="invoice-history">
            <thead>
              <tr>
                <th>Month</th>
                <th>Invoice</th>
                <th>Revision</th>
                <th className="num">kWh</th>
                <th className="num">Total</th>
                <th className="num">Difference</th>
                <th>Issued</th>
              </tr>
            </thead>
            <tbody>
              {[...invoices]
                .sort((a, b) => (a.month === b.month ? b.revision - a.revision : a.month < b.month ? 1 : -1))
                .map((invoice) => (
                  <tr key={invoice.invoiceNumber} className={invoice.month === shownMonth ? "selected" : undefined}>
                    <td data-label="Month">
                      <button className="link-plain" onClick={() => onMonth(invoice.month)}>
                        {formatMonth(invoice.month)}
                      </button>
                    </td>
                    <td data-label="Invoice">
                      <a href={invoice.pdfUrl} download={`${invoice.invoiceNumber}.pdf`}>
                        {invoice.invoiceNumber}
                      </a>
                    </td>
                    <td data-label="Revision">{invoice.revision === 0 ? "original" : `revision ${invoice.revision}`}</td>
                    <td className="num" data-label="kWh">
                      {roundDecimal(invoice.energyKwh, 3)}
                    </td>
                    <td className="num" data-label="Total">
                      {invoice.currency} {groupThousands(invoice.total)}
                    </td>
                    <td className="num" data-label="Difference">
                      {invoice.difference ?? ""}
                    </td>
                    <td data-label="Issued">{formatDateTime(invoice.issuedAt, invoice.timeZone)}</td>
                  </tr>
                ))}
            </tbody>
          </table>
        </div>
      </section>
    </>
  );
}

/** The month's kWh summed from the daily rollups, beside the invoice's kWh. */
function MonthEnergy({ device, month, invoice }: { device: Device; month: string; invoice: Invoice | undefined }) {
  const fromDate = invoice?.firstDay ?? `${month}-01`;
  const toDate = invoice?.lastDay ?? addDays(addDays(`${month}-01`, 31).slice(0, 8) + "01", -1);
  const [result] = useQuery<{ dailyEnergy: DailyEnergy[] }>({
    query: DAILY_ENERGY,
    variables: { deviceId: device.deviceId, fromDate, toDate },
  });
  const total = result.data ? sumDecimals(result.data.dailyEnergy.map((d) => d.energyKwh), 6) : null;
  const same = total !== null && invoice ? sumDecimals([total, `-${invoice.energyKwh}`], 6) === "0.000000" : null;
  return (
    <p className="muted" data-testid="month-energy">
      {formatMonth(month)}: <strong data-testid="month-daily-kwh">{total ? roundDecimal(total, 3) : "…"}</strong> kWh from the
      daily rollups ({fromDate} to {toDate}, {device.timeZone})
      {same === true ? <span className="ok"> · equals the invoice</span> : null}
      {same === false ? <span className="field-error"> · differs from the invoice's {invoice?.energyKwh} kWh (late data after the invoice?)</span> : null}
      {localDate(new Date(), device.timeZone) < fromDate ? " (in the future)" : ""}
      <ErrorList error={result.error} />
    </p>
  );
}

/** Why a month has no invoice, as the billing period says. */
function NoInvoice({ deviceId, month }: { deviceId: string; month: string }) {
  const [result] = useQuery<{ billingPeriods: BillingPeriod[] }>({
    query: BILLING_PERIODS,
    variables: { deviceId, fromMonth: month, toMonth: month },
  });
  const period = result.data?.billingPeriods[0];
  return (
    <p className="notice" data-testid="no-invoice">
      No invoice for {formatMonth(month)}
      {!result.data
        ? "."
        : !period
          ? ": the meter sent nothing in this month."
          : period.status !== "CLOSED"
            ? `: the month is still open (${roundDecimal(period.energyKwh, 3)} kWh so far); it is invoiced once it closes.`
            : period.billingReason
              ? `: ${period.billingReason}.`
              : `: the month closed (${roundDecimal(period.energyKwh, 3)} kWh) and waits for billing.`}
      <ErrorList error={result.error} />
    </p>
  );
}
