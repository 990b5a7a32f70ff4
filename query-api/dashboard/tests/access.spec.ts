// Roles: a customer sees only its meters; a wrong key is refused at sign-in.

import { expect, test } from "@playwright/test";
import { pickerOptions, screenshot, signIn, stack } from "./helpers";

test("a customer sees only its own meters", async ({ page }) => {
  const { customerDevices, devices } = stack();
  await signIn(page, "customer");
  await expect(page.getByTestId("who")).toContainText("customer");
  // The picker offers its meters only, also when searching for another's.
  await page.getByTestId("meter-picker").click();
  const options = page.getByTestId("meter-picker-menu").locator("[data-device-id]");
  await expect(options).toHaveCount(customerDevices.length);
  expect((await pickerOptions(page)).sort()).toEqual([...customerDevices].sort());
  const others = devices.find((d) => !customerDevices.includes(d))!;
  await page.getByTestId("meter-picker").fill(others.slice(stack().prefix.length));
  await expect(page.getByTestId("meter-picker-none")).toBeVisible();
  await expect(options).toHaveCount(0);
  await page.getByTestId("meter-picker").press("Escape");
  await page.getByRole("link", { name: "Devices" }).click();
  await expect(page.locator("[data-testid^=device-row-]")).toHaveCount(customerDevices.length);
  await expect(page.getByTestId("add-device")).toHaveCount(0);
  await expect(page.getByRole("link", { name: "Tariffs" })).toHaveCount(0);
  // Another household's meter is not the customer's: the API refuses it.
  const other = devices.find((d) => !customerDevices.includes(d))!;
  await page.goto(`/live/${other}`);
  await expect(page.getByRole("alert")).toContainText(/FORBIDDEN|NOT_FOUND/);
  await page.setViewportSize({ width: 390, height: 844 });
  await page.goto(`/devices`);
  await screenshot(page, "devices-customer-phone");
});

test("a wrong key is refused at sign-in", async ({ page }) => {
  await page.goto("/");
  await page.getByTestId("api-key").fill("smk_0000000000000000_notakey");
  await page.getByTestId("signin-submit").click();
  await expect(page.getByTestId("signin-error")).toContainText("not valid");
  await expect(page.getByTestId("signin-form")).toBeVisible();
});

test("every request stays on the server's origin (no CDN)", async ({ page, baseURL }) => {
  const origin = new URL(baseURL!).origin;
  const wsOrigin = origin.replace(/^http/, "ws");
  const elsewhere: string[] = [];
  page.on("request", (request) => {
    if (!request.url().startsWith(origin) && !request.url().startsWith("data:")) elsewhere.push(request.url());
  });
  const sockets: string[] = [];
  page.on("websocket", (socket) => sockets.push(socket.url()));
  await signIn(page);
  for (const path of [`/live/${stack().slabDevice}`, `/billing/${stack().slabDevice}`, "/devices", "/tariffs"]) {
    await page.goto(path);
    await page.waitForLoadState("networkidle");
  }
  expect(elsewhere).toEqual([]);
  expect(sockets.length).toBeGreaterThan(0);
  expect(sockets.filter((url) => !url.startsWith(`${wsOrigin}/graphql/ws`))).toEqual([]);
});
