// The meter picker in a fleet larger than one page of the API. The stack has 1,500
// meters that announced themselves and were never registered, with ids that sort before
// its households' (as the shared broker's leftovers once did, when the picker listed the
// first 1000 meters by id and lost the households). The picker asks the server.

import { expect, test } from "@playwright/test";
import { graphql, pickerOptions, screenshot, signIn, stack } from "./helpers";

test("the picker finds any meter of a fleet larger than a page, registered meters first", async ({ page }) => {
  const { prefix, unregisteredDevices } = stack();
  expect(unregisteredDevices.count).toBeGreaterThan(1000);
  const { devices } = await graphql<{ devices: { totalCount: number; nodes: { deviceId: string }[] } }>(
    `{ devices(first: 20, lifecycle: REGISTERED) { totalCount nodes { deviceId } } }`,
  );
  const { devices: all } = await graphql<{ devices: { totalCount: number } }>(`{ devices { totalCount } }`);
  expect(all.totalCount).toBeGreaterThan(unregisteredDevices.count);
  const registered = devices.nodes.map((d) => d.deviceId);

  await signIn(page, "operator");
  const picker = page.getByTestId("meter-picker");
  await picker.click();
  // Opened empty: the registered meters first (by id), then the discovered ones, each
  // group cut short with a note that typing finds the rest.
  await expect.poll(async () => (await pickerOptions(page)).slice(0, registered.length)).toEqual(registered);
  expect((await pickerOptions(page))[registered.length]).toBe(unregisteredDevices.first);
  await expect(page.getByTestId("meter-picker-more-discovered")).toBeVisible();
  await expect(picker).toHaveAttribute("aria-expanded", "true");
  await screenshot(page, "picker-desktop");

  // The last of the 1,500: beyond any one page.
  await picker.fill("UNREGISTERED-1500");
  await expect.poll(() => pickerOptions(page)).toEqual([unregisteredDevices.last]);
  // By name, ignoring case; then picked with the keyboard.
  await picker.fill("household mac000006");
  await expect.poll(() => pickerOptions(page)).toEqual([`${prefix}MAC000006`]);
  await picker.press("ArrowDown");
  await picker.press("Enter");
  await expect(page).toHaveURL(new RegExp(`/live/${prefix}MAC000006$`));
  await expect(picker).toHaveValue(`Household MAC000006 · ${prefix}MAC000006`);
  await expect(page.getByTestId("card-power-value")).not.toHaveText("—");

  // Nothing matches: said so; Escape keeps the chosen meter.
  await picker.click();
  await picker.fill("no-such-meter");
  await expect(page.getByTestId("meter-picker-none")).toContainText("no-such-meter");
  await picker.press("Escape");
  await expect(picker).toHaveValue(`Household MAC000006 · ${prefix}MAC000006`);
  await expect(picker).toHaveAttribute("aria-expanded", "false");

  // A phone: the list spans the screen.
  await page.setViewportSize({ width: 390, height: 844 });
  await picker.click();
  await picker.fill("mac0000");
  await expect.poll(async () => (await pickerOptions(page)).length).toBeGreaterThanOrEqual(registered.length);
  const menu = await page.getByTestId("meter-picker-menu").boundingBox();
  expect(menu!.width).toBeGreaterThan(300);
  expect(menu!.x + menu!.width).toBeLessThanOrEqual(390);
  await screenshot(page, "picker-phone");
});
