import { expect, test } from "@playwright/test";
import { graphql, pickMeter, screenshot, signIn, stack } from "./helpers";

const HOUSEHOLD = "MAC000002";

function toMicro(value: string): bigint {
  const [whole, fraction = ""] = value.split(".");
  return BigInt(whole + fraction.padEnd(6, "0").slice(0, 6));
}

test("pick a meter: status, cards and both charts; the 30-day total equals the GraphQL daily sum", async ({ page }) => {
  const { prefix } = stack();
  const deviceId = `${prefix}${HOUSEHOLD}`;
  await signIn(page);
  await pickMeter(page, deviceId);
  await expect(page).toHaveURL(new RegExp(`/live/${deviceId}$`));
  await expect(page.getByTestId("card-power-value")).not.toHaveText("—");
  await expect(page.getByTestId("reading-at")).toContainText("reading of");

  // The chart's range as the page shows it, and the API's daily rollups for it.
  const caption = page.locator("figcaption", { hasText: "Daily consumption" });
  await expect(caption).toContainText(/\d{4}-\d{2}-\d{2} to \d{4}-\d{2}-\d{2}/);
  const [, fromDate, toDate] = /(\d{4}-\d{2}-\d{2}) to (\d{4}-\d{2}-\d{2})/.exec((await caption.textContent()) ?? "")!;
  const data = await graphql<{ dailyEnergy: { energyKwh: string }[] }>(
    `query($id: String!, $from: Date!, $to: Date!) { dailyEnergy(deviceId: $id, fromDate: $from, toDate: $to) { energyKwh } }`,
    { id: deviceId, from: fromDate, to: toDate },
  );
  expect(data.dailyEnergy.length).toBeGreaterThan(20);
  const expected = data.dailyEnergy.reduce((sum, d) => sum + toMicro(d.energyKwh), 0n);
  const shown = toMicro((await page.getByTestId("consumption-total").textContent()) ?? "");
  expect(shown).toBe(expected);
  expect(expected).toBeGreaterThan(0n);

  await screenshot(page, "live-desktop");
  await page.setViewportSize({ width: 390, height: 844 });
  await expect(page.getByTestId("card-power-value")).toBeVisible();
  await screenshot(page, "live-phone");
});
