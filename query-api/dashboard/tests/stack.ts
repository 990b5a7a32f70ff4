// Global setup of the browser tests: the stack they run against. By default it starts
// `cargo run --example dashboard_stack` (query-api/examples/dashboard_stack.rs: its own
// database, Kafka topics and Mosquitto, the bridge, processor, billing worker and query
// API in one process, the London households replayed over MQTT) and stops it afterwards. With
// SMARTMETER_DASHBOARD_STACK set to a `DASHBOARD_STACK` JSON line, it reuses that one.

import { spawn, spawnSync } from "node:child_process";
import { createWriteStream, mkdirSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import type { FullConfig } from "@playwright/test";

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, "../../..");
const READY_TIMEOUT_MS = 6 * 60_000;

export default async function globalSetup(_config: FullConfig): Promise<(() => Promise<void>) | void> {
  if (process.env.SMARTMETER_DASHBOARD_STACK) {
    const stack = JSON.parse(process.env.SMARTMETER_DASHBOARD_STACK);
    process.env.SMARTMETER_DASHBOARD_URL = stack.url;
    return;
  }
  const build = spawnSync(
    "cargo",
    ["build", "--quiet", "-p", "smartmeter-query-api", "--example", "dashboard_stack"],
    { cwd: repo, stdio: "inherit" },
  );
  if (build.status !== 0) throw new Error("cargo build --example dashboard_stack failed");
  const targetDir = process.env.CARGO_TARGET_DIR ? resolve(repo, process.env.CARGO_TARGET_DIR) : join(repo, "target");
  const binary = join(targetDir, "debug", "examples", "dashboard_stack");

  // Not in test-results/: Playwright empties that after this setup has started.
  const logDir = join(here, "..", "test-logs");
  mkdirSync(logDir, { recursive: true });
  const log = createWriteStream(join(logDir, "stack.log"));
  // stdin stays an open pipe: the stack stops by itself when this process goes away.
  const child = spawn(binary, [], { cwd: repo, stdio: ["pipe", "pipe", "pipe"], env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? "info" } });
  child.stderr.pipe(log);
  child.stdout.pipe(log);

  const ready = new Promise<string>((resolveLine, reject) => {
    let buffered = "";
    const timer = setTimeout(() => reject(new Error(`the stack was not ready in ${READY_TIMEOUT_MS / 1000} s; see test-logs/stack.log`)), READY_TIMEOUT_MS);
    child.stdout.on("data", (chunk: Buffer) => {
      buffered += chunk.toString();
      // Complete lines only: the JSON may arrive in several chunks.
      const found = buffered.split("\n").slice(0, -1).find((l) => l.startsWith("DASHBOARD_STACK "));
      if (found) {
        clearTimeout(timer);
        resolveLine(found.slice("DASHBOARD_STACK ".length));
      }
    });
    child.on("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`the stack exited (${code}) before it was ready; see test-logs/stack.log`));
    });
  });
  const line = await ready.catch((error) => {
    child.kill("SIGTERM");
    throw error;
  });
  try {
    process.env.SMARTMETER_DASHBOARD_URL = JSON.parse(line).url;
    process.env.SMARTMETER_DASHBOARD_STACK = line;
  } catch (error) {
    child.kill("SIGTERM");
    throw error;
  }

  return async () => {
    const exited = new Promise<void>((done) => child.once("exit", () => done()));
    child.kill("SIGTERM");
    await Promise.race([exited, new Promise((done) => setTimeout(done, 60_000))]);
    log.end();
  };
}
