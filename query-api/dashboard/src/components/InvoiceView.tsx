// One invoice as the customer reads it: the period and meter reads, the energy lines
// (one per slab or band), the charges, the taxes, the total, the PDF, and for a
// revision what it revises and the difference.

import type { Invoice, InvoiceLine } from "../api/types";
import { groupThousands, roundDecimal } from "../lib/decimal";
import { formatDateTime } from "../lib/time";

type Section = "energy" | "charges" | "taxes";

function sectionOf(line: InvoiceLine): Section {
  if (line.unit === "kWh") return "energy";
  if (line.unit?.endsWith(" base")) return "taxes";
  return "charges";
}

const SECTION_TITLES: Record<Section, string> = {
  energy: "Energy (slabs and bands)",
  charges: "Charges",
  taxes: "Taxes and surcharges",
};

function money(value: string): string {
  return groupThousands(value);
}

export function InvoiceView({ invoice }: { invoice: Invoice }) {
  const sections: Section[] = ["energy", "charges", "taxes"];
  return (
    <article className="panel invoice" data-testid="invoice" data-invoice-number={invoice.invoiceNumber}>
      <header className="invoice-head">
        <div>
          <h3>
            Invoice <span data-testid="invoice-number">{invoice.invoiceNumber}</span>
          </h3>
          <p className="muted">
            {invoice.firstDay} to {invoice.lastDay} ({invoice.timeZone}) · tariff {invoice.tariffId} v
            {invoice.tariffVersions.join(", v")} · issued {formatDateTime(invoice.issuedAt, invoice.timeZone)}
            {invoice.revision > 0 ? ` · revision ${invoice.revision} of ${invoice.revises ?? "the original"}` : ""}
          </p>
        </div>
        <a className="button" href={invoice.pdfUrl} download={`${invoice.invoiceNumber}.pdf`} data-testid="invoice-pdf">
          Download PDF
        </a>
      </header>
      <p className="reads">
        Energy <strong data-testid="invoice-kwh">{roundDecimal(invoice.energyKwh, 3)}</strong> kWh
        {invoice.openingRead && invoice.closingRead ? (
          <span className="muted">
            {" "}
            · meter {roundDecimal(invoice.openingRead.counterKwh, 3)} → {roundDecimal(invoice.closingRead.counterKwh, 3)} kWh
          </span>
        ) : null}
      </p>
      <div className="table-wrap">
        <table className="table lines">
          <thead>
            <tr>
              <th>Line</th>
              <th className="num">Quantity</th>
              <th className="num">Rate</th>
              <th className="num">Amount ({invoice.currency})</th>
            </tr>
          </thead>
          {sections.map((section) => {
            const lines = invoice.lines.filter((line) => sectionOf(line) === section);
            if (lines.length === 0) return null;
            return (
              <tbody key={section} data-testid={`lines-${section}`}>
                <tr className="section">
                  <th colSpan={4}>{SECTION_TITLES[section]}</th>
                </tr>
                {lines.map((line, i) => (
                  <tr key={i}>
                    <td data-label="Line">{line.name}</td>
                    <td className="num" data-label="Quantity">
                      {line.quantity !== null ? `${roundDecimal(line.quantity, 3)} ${line.unit ?? ""}` : ""}
                    </td>
                    <td className="num" data-label="Rate">
                      {line.rate !== null ? (section === "taxes" ? `${line.rate} %` : line.rate) : ""}
                    </td>
                    <td className="num" data-label="Amount">
                      {money(line.amount)}
                    </td>
                  </tr>
                ))}
              </tbody>
            );
          })}
          <tfoot>
            <tr>
              <td colSpan={3}>Total</td>
              <td className="num" data-testid="invoice-total">
                {invoice.currency} {money(invoice.total)}
              </td>
            </tr>
            {invoice.includedTaxes.map((tax) => (
              <tr key={tax.name} className="muted">
                <td colSpan={3}>
                  of which {tax.name} {tax.percent} % (included in the rates)
                </td>
                <td className="num">{money(tax.amount)}</td>
              </tr>
            ))}
            {invoice.difference !== null ? (
              <tr>
                <td colSpan={3}>
                  Difference to the previous total {invoice.previousTotal !== null ? money(invoice.previousTotal) : ""}
                </td>
                <td className="num" data-testid="invoice-difference">
                  {money(invoice.difference)}
                </td>
              </tr>
            ) : null}
          </tfoot>
        </table>
      </div>
    </article>
  );
}
