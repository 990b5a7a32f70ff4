// Live: pick a meter, the cards and the bill projection update from the
// subscriptions when a reading is published over MQTT (no reload), and the 30-day
// chart's total equals the sum of the API's daily energy.

import { expect, test } from "@playwright/test";
import { graphql, mqttPublish, pickMeter, screenshot, signIn, stack } from "./helpers";

function toMicro(value: string): bigint {
  const [whole, fraction = ""] = value.split(".");
  return BigInt(whole + fraction.padEnd(6, "0").slice(0, 6));
}

test("a reading published over MQTT reaches the live cards and the projection without a reload", async ({ page }) => {
  // The household on the slab tariff: its projection has a next slab.
  const deviceId = stack().slabDevice;
  await signIn(page);
  await pickMeter(page, deviceId);
  await expect(page.getByTestId("card-power-value")).not.toHaveText("—");
  const before = await page.getByTestId("card-power-value").textContent();
  const slabLeft = page.getByTestId("kwh-to-next-slab");
  await expect(slabLeft).toHaveText(/kWh$/);
  const leftBefore = Number((await slabLeft.textContent())!.replace(/[^\d.]/g, ""));

  // The newest stored reading: the new one continues its counter 30 minutes later.
  const { latestReading } = await graphql<{ latestReading: { ts: string; energyKwh: number } }>(
    `query($id: String!) { latestReading(deviceId: $id) { ts energyKwh } }`,
    { id: deviceId },
  );
  const ts = new Date(new Date(latestReading.ts).getTime() + 30 * 60_000).toISOString().replace(".000Z", "Z");
  // A power no reading of the data set has, different on every run (a reused stack).
  const powerW = 4000 + (Date.now() % 997) + 0.5;
  const shownPower = Math.round(powerW).toLocaleString("en-GB");
  const energyKwh = Math.round((latestReading.energyKwh + 2.16075) * 1000) / 1000;
  // Marks this document: a reload would lose it.
  await page.evaluate(() => ((window as unknown as { noReload: boolean }).noReload = true));
  // The subscription is open once the page shows the live marker path; give the
  // WebSocket a moment to be subscribed before publishing.
  await page.waitForTimeout(1500);
  mqttPublish(
    `smartmeter/${deviceId}/telemetry`,
    JSON.stringify({
      device_id: deviceId,
      timestamp: ts,
      voltage: 238.6,
      current: 18.11,
      power_w: powerW,
      energy_kwh: energyKwh,
      power_factor: 1.0,
      rssi: -61,
    }),
  );
  await expect(page.getByTestId("card-power-value")).toHaveText(shownPower);
  await expect(page.getByTestId("card-voltage-value")).toHaveText("238.6");
  await expect(page.getByTestId("card-current-value")).toHaveText("18.11");
  await expect(page.getByTestId("card-energy-value")).toHaveText(energyKwh.toFixed(3).replace(/\B(?=(\d{3})+(?!\d))/g, ","));
  await expect(page.getByTestId("reading-at")).toContainText("live");
  expect(before).not.toBe(shownPower);
  // The projection counted the new reading's 2.161 kWh: less is left before the next slab.
  await expect
    .poll(async () => Number((await slabLeft.textContent())!.replace(/[^\d.]/g, "")))
    .toBeLessThan(leftBefore);
  await expect(page.getByTestId("projection")).toContainText("live");

  // The meter says goodbye on its status topic: the badge follows, still no reload.
  await expect(page.getByTestId("status-badge")).toHaveText("online");
  mqttPublish(`smartmeter/${deviceId}/status`, JSON.stringify({ status: "offline", reason: "disconnect" }));
  await expect(page.getByTestId("status-badge")).toHaveText("offline");
  mqttPublish(`smartmeter/${deviceId}/status`, "online");
  await expect(page.getByTestId("status-badge")).toHaveText("online");
  expect(await page.evaluate(() => (window as unknown as { noReload?: boolean }).noReload)).toBe(true);
  await screenshot(page, "live-desktop");
  await page.setViewportSize({ width: 390, height: 844 });
  await expect(page.getByTestId("card-power-value")).toBeVisible();
  await screenshot(page, "live-phone");
});

test("the 30-day chart's total equals the GraphQL daily sum", async ({ page }) => {
  const deviceId = `${stack().prefix}MAC000006`;
  await signIn(page);
  await pickMeter(page, deviceId);
  await expect(page.getByTestId("card-power-value")).not.toHaveText("—");

  const caption = page.locator("figcaption", { hasText: "Daily consumption" });
  await expect(caption).toContainText(/\d{4}-\d{2}-\d{2} to \d{4}-\d{2}-\d{2}/);
  const [, fromDate, toDate] = /(\d{4}-\d{2}-\d{2}) to (\d{4}-\d{2}-\d{2})/.exec((await caption.textContent()) ?? "")!;
  const total = page.getByTestId("consumption-total");
  await expect(total).not.toHaveText("…");
  const data = await graphql<{ dailyEnergy: { energyKwh: string }[] }>(
    `query($id: String!, $from: Date!, $to: Date!) { dailyEnergy(deviceId: $id, fromDate: $from, toDate: $to) { energyKwh } }`,
    { id: deviceId, from: fromDate, to: toDate },
  );
  expect(data.dailyEnergy.length).toBeGreaterThan(20);
  const expected = data.dailyEnergy.reduce((sum, d) => sum + toMicro(d.energyKwh), 0n);
  expect(expected).toBeGreaterThan(0n);
  expect(toMicro((await total.getAttribute("data-exact-kwh")) ?? "")).toBe(expected);
  // What a person reads: the same total to the watt-hour.
  const shownKwh = ((await total.textContent()) ?? "").replace(/,/g, "");
  expect(toMicro(shownKwh)).toBe(((expected + 500n) / 1000n) * 1000n);
  // And the chart draws one bar per day of the range.
  await expect(page.getByTestId("consumption-chart").locator("canvas")).toBeVisible();
});

test("the late reading revises the closed February: the history shows the revision", async ({ page }) => {
  // Runs after the reading above: February was closed (the meter had been silent), so
  // the reading adjusts it and the billing worker issues a revision with the difference.
  const deviceId = stack().slabDevice;
  const revised = async () => {
    const { invoices } = await graphql<{ invoices: { nodes: { revision: number; difference: string | null }[] } }>(
      `query($id: String!) { invoices(deviceId: $id, month: "2013-02", first: 10) { nodes { revision difference } } }`,
      { id: deviceId },
    );
    return invoices.nodes.filter((i) => i.revision > 0).length;
  };
  await expect.poll(revised, { timeout: 60_000 }).toBeGreaterThan(0);
  await signIn(page);
  await page.goto(`/billing/${deviceId}?month=2013-02`);
  await expect(page.getByTestId("invoice")).toContainText(/revision \d+ of /);
  await expect(page.getByTestId("invoice-difference")).not.toBeEmpty();
  const history = page.getByTestId("invoice-history");
  await expect(history).toContainText(/revision \d+/);
  await expect(history).toContainText("original");
  // February's kWh from the daily rollups is the revised invoice's.
  await expect(page.getByTestId("month-energy")).toContainText("equals the invoice");
  await screenshot(page, "billing-revision-desktop");
});
