// Device management as an operator: a bad time zone is refused next to its field; a
// new meter is registered and listed; it is edited; it is decommissioned.

import { expect, test } from "@playwright/test";
import { screenshot, signIn, stack } from "./helpers";

test("register, edit and decommission a meter", async ({ page }) => {
  const deviceId = `${stack().prefix}new-meter`;
  await signIn(page, "operator");
  await page.getByRole("link", { name: "Devices" }).click();
  // Registered meters only: the stack's 1,500 unregistered meters are discovered ones.
  await page.getByTestId("lifecycle-filter").selectOption("REGISTERED");
  await page.getByTestId("add-device").click();
  const form = page.getByTestId("device-form");
  await form.locator("input[name=deviceId]").fill(deviceId);
  await form.locator("input[name=name]").fill("Kitchen sub-meter");
  await form.locator("input[name=location]").fill("Pune");
  await form.locator("input[name=timeZone]").fill("Asia/Pune");
  await form.getByTestId("device-submit").click();
  await expect(form.getByTestId("error-timeZone")).toContainText("Asia/Pune");
  await screenshot(page, "devices-error-desktop");

  await form.locator("input[name=timeZone]").fill("Asia/Kolkata");
  await form.getByTestId("device-submit").click();
  const row = page.getByTestId(`device-row-${deviceId}`);
  await expect(row).toContainText("Kitchen sub-meter");
  await expect(row).toContainText("Asia/Kolkata");

  await page.getByTestId(`edit-${deviceId}`).click();
  await form.locator("input[name=location]").fill("Pune, Maharashtra");
  await form.getByTestId("device-submit").click();
  await expect(row).toContainText("Pune, Maharashtra");

  // Found among every meter, over 1,500 of them, by part of its location (the API searches).
  await page.getByTestId("lifecycle-filter").selectOption("");
  await page.getByTestId("device-search").fill("MAHARASHTRA");
  await expect(page.locator("[data-testid^=device-row-]")).toHaveCount(1);
  await expect(row).toContainText("Kitchen sub-meter");
  await page.getByTestId("device-search").fill("no such meter anywhere");
  await expect(page.getByText("No meter's id, name or location contains")).toBeVisible();
  await page.getByTestId("device-search").fill("");
  await page.getByTestId("lifecycle-filter").selectOption("REGISTERED");

  // Billing's tariff: assigned from the first of this month, shown in the list.
  await page.getByTestId(`tariff-${deviceId}`).click();
  const assign = page.getByTestId("assign-tariff");
  await assign.getByLabel("Tariff").selectOption(stack().tariffId);
  await assign.getByRole("button", { name: "Assign" }).click();
  await expect(row).toContainText(stack().tariffId);

  page.once("dialog", (dialog) => dialog.accept("replaced by a three-phase meter"));
  await page.getByTestId(`decommission-${deviceId}`).click();
  await expect(row).toHaveCount(0);
  await page.getByTestId("lifecycle-filter").selectOption("DECOMMISSIONED");
  await expect(row.getByTestId("status-badge")).toHaveText("decommissioned");
  await page.getByTestId("lifecycle-filter").selectOption("REGISTERED");
  await expect(page.locator("[data-testid^=device-row-]")).toHaveCount(stack().devices.length - 1);

  await screenshot(page, "devices-desktop");
  await page.setViewportSize({ width: 390, height: 844 });
  await screenshot(page, "devices-phone");
});
