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
  const powerW = 4321.5;
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
  await expect(page.getByTestId("card-power-value")).toHaveText("4,322");
  await expect(page.getByTestId("card-voltage-value")).toHaveText("238.6");
  await expect(page.getByTestId("card-current-value")).toHaveText("18.11");
  await expect(page.getByTestId("card-energy-value")).toHaveText(energyKwh.toFixed(3).replace(/\B(?=(\d{3})+(?!\d))/g, ","));
  await expect(page.getByTestId("reading-at")).toContainText("live");
  expect(before).not.toBe("4,322");
  // The projection counted the new reading's 2.161 kWh: less is left before the next slab.
  await expect
    .poll(async () => Number((await slabLeft.textContent())!.replace(/[^\d.]/g, "")))
    .toBeLessThan(leftBefore);
  await expect(page.getByTestId("projection")).toContainText("live");
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
