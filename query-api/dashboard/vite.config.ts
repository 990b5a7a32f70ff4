import { defineConfig } from "vitest/config";
import react from "@vitejs/plugin-react";

// `npm run dev` proxies the API to a running query-api (default the demo's on :8080),
// so the dashboard talks to the same origin in development as when query-api serves it.
const api = process.env.SMARTMETER_QUERY_API_URL ?? "http://127.0.0.1:8080";

export default defineConfig({
  plugins: [react()],
  // Unit tests (vitest) beside the code; the browser tests in tests/ are Playwright's.
  test: { include: ["src/**/*.test.ts"] },
  build: {
    outDir: "dist",
    sourcemap: true,
    chunkSizeWarningLimit: 1024,
  },
  server: {
    proxy: {
      "/graphql": { target: api, ws: true },
      "/api": api,
      "/health": api,
    },
  },
});
