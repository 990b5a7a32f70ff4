// Billing: a meter and a month show the invoice with its slab breakdown; its PDF
// downloads, is a PDF and carries the invoice's total; the month's kWh from the daily
// rollups equals the invoice's.

import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { expect, test } from "@playwright/test";
import { graphql, pickMeter, screenshot, signIn, stack } from "./helpers";

test("download an invoice PDF with the right total", async ({ page }) => {
  const deviceId = stack().slabDevice;
  const { invoices } = await graphql<{ invoices: { nodes: { invoiceNumber: string; total: string; energyKwh: string; currency: string; revision: number }[] } }>(
    `query($id: String!) { invoices(deviceId: $id, month: "2013-01", first: 10) { nodes { invoiceNumber total energyKwh currency revision } } }`,
    { id: deviceId },
  );
  const invoice = invoices.nodes.sort((a, b) => b.revision - a.revision)[0];
  expect(invoice).toBeTruthy();

  await signIn(page);
  await page.getByRole("link", { name: "Billing" }).click();
  await pickMeter(page, deviceId);
  await page.getByTestId("month-picker").fill("2013-01");
  await expect(page.getByTestId("invoice-number")).toHaveText(invoice.invoiceNumber);
  const grouped = invoice.total.replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  await expect(page.getByTestId("invoice-total")).toHaveText(`${invoice.currency} ${grouped}`);
  // One line per slab the month's energy reached, then charges and taxes.
  await expect(page.getByTestId("lines-energy").locator("tr:not(.section)")).toHaveCount(5);
  await expect(page.getByTestId("lines-taxes").locator("tr:not(.section)")).toHaveCount(3);
  await expect(page.getByTestId("month-energy")).toContainText("equals the invoice");

  const [download] = await Promise.all([page.waitForEvent("download"), page.getByTestId("invoice-pdf").click()]);
  const file = await download.path();
  const bytes = readFileSync(file);
  expect(bytes.subarray(0, 5).toString("latin1")).toBe("%PDF-");
  const text = execFileSync("pdftotext", ["-layout", file, "-"]).toString();
  expect(text).toContain(invoice.invoiceNumber);
  // The PDF states the same total (written with or without thousands separators).
  expect(text.replace(/(\d),(\d{3})/g, "$1$2")).toContain(invoice.total);

  await screenshot(page, "billing-desktop");
  await page.setViewportSize({ width: 390, height: 844 });
  await screenshot(page, "billing-phone");
});
