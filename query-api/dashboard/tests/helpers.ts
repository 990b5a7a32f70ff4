// What the browser tests share: the stack's description, GraphQL over HTTP (the same
// API the dashboard uses, to compute the expected figures independently), MQTT.

import { execFileSync } from "node:child_process";
import { expect, type Page } from "@playwright/test";

export interface Stack {
  url: string;
  graphql: string;
  prefix: string;
  devices: string[];
  unassignedDevice: string;
  tariffId: string;
  slabTariffId: string;
  slabDevice: string;
  customerId: string;
  customerDevices: string[];
  readings: number;
  databaseUrl: string;
  tokens?: Record<string, string>;
  /** The stack's own Mosquitto (never the shared one) and the simulator's account there. */
  mqtt: { host: string; port: number; simulatorUser: string; simulatorPassword: string };
  /** Meters that announced themselves and were never registered: more than one API page. */
  unregisteredDevices: { count: number; first: string; last: string };
}

export function stack(): Stack {
  const json = process.env.SMARTMETER_DASHBOARD_STACK;
  if (!json) throw new Error("SMARTMETER_DASHBOARD_STACK is not set (global setup did not run)");
  return JSON.parse(json) as Stack;
}

/** GraphQL as `token` (default: the stack's admin key). */
export async function graphql<T>(
  query: string,
  variables: Record<string, unknown> = {},
  token: string | undefined = stack().tokens?.admin,
): Promise<T> {
  const response = await fetch(stack().graphql, {
    method: "POST",
    headers: { "content-type": "application/json", ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify({ query, variables }),
  });
  const body = (await response.json()) as { data?: T; errors?: unknown[] };
  if (body.errors) throw new Error(`GraphQL errors: ${JSON.stringify(body.errors)}`);
  return body.data as T;
}

/** Publishes `payload` on `topic` with mosquitto_pub and the simulator's account, to the stack's own broker. */
export function mqttPublish(topic: string, payload: string): void {
  const { mqtt } = stack();
  if (!mqtt) throw new Error("the stack names no broker (an older dashboard_stack?)");
  execFileSync("mosquitto_pub", [
    "-h", mqtt.host,
    "-p", String(mqtt.port),
    "-u", mqtt.simulatorUser,
    "-P", mqtt.simulatorPassword,
    "-q", "1",
    "-t", topic,
    "-m", payload,
  ]);
}

/** Saves a full-page screenshot in test-screenshots/ (SMARTMETER_SCREENSHOT_DIR=screenshots refreshes the committed ones). */
export async function screenshot(page: Page, name: string): Promise<void> {
  const dir = process.env.SMARTMETER_SCREENSHOT_DIR ?? "test-screenshots";
  await page.screenshot({ path: `${dir}/${name}.png`, fullPage: true });
}

/**
 * Picks a meter as a person would: types part of its id (without the stack's prefix)
 * into the picker and clicks the match; the page then shows that meter.
 */
export async function pickMeter(page: Page, deviceId: string): Promise<void> {
  const picker = page.getByTestId("meter-picker");
  await picker.click();
  await picker.fill(deviceId.startsWith(stack().prefix) ? deviceId.slice(stack().prefix.length) : deviceId);
  await page.getByTestId(`meter-option-${deviceId}`).click();
  await expect(page).toHaveURL(new RegExp(`/${encodeURIComponent(deviceId)}(\\?|$)`));
  await expect(picker).toHaveValue(new RegExp(deviceId.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")));
}

/** The meters the open picker offers, in order. */
export async function pickerOptions(page: Page): Promise<string[]> {
  return page
    .getByTestId("meter-picker-menu")
    .locator("[data-device-id]")
    .evaluateAll((els) => els.map((e) => e.getAttribute("data-device-id") ?? ""));
}

/** Signs in through the form with the stack's key for `role`. */
export async function signIn(page: Page, role: "admin" | "operator" | "customer" = "admin"): Promise<void> {
  const key = stack().tokens?.[role];
  if (!key) throw new Error(`the stack has no API key for ${role}`);
  await page.goto("/");
  await page.getByTestId("api-key").fill(key);
  await page.getByTestId("signin-submit").click();
  await expect(page.getByTestId("signin-form")).toHaveCount(0);
}
