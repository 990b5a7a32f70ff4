#!/usr/bin/env bash
# The main job: installs and starts the services (PostgreSQL, Mosquitto, Kafka,
# Prometheus), builds and starts the pipeline (bridge, processor, query-api), replays
# the real London smart-meter data (10 households, January 2013) over MQTT, waits until
# every reading is in the database, and prints the GraphQL URL and a query to paste.
#
#   infra/demo.sh                      # as fast as the pipeline goes
#   SMARTMETER_SIM_SPEEDUP=3600 infra/demo.sh   # one simulated hour per second
#
# Everything keeps running afterwards; infra/down.sh stops it all.
set -euo pipefail

# shellcheck source=lib/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
# shellcheck source=lib/apps.sh
. "$INFRA_DIR/lib/apps.sh"

DATA_DIR=${SMARTMETER_DATA_DIR:-$REPO_DIR/../shared/data}
LONDON_FILE=$DATA_DIR/lcl_halfhourly_2013-01_10households.csv
[[ -r $LONDON_FILE ]] || die "real data not found at $LONDON_FILE (set SMARTMETER_DATA_DIR)"

"$INFRA_DIR/up.sh" all

say "build: cargo build --release (the first build takes several minutes)"
(cd "$REPO_DIR" && cargo build --release --locked --quiet \
    -p smartmeter-bridge -p smartmeter-processor -p smartmeter-query-api -p meter-simulator)

# The London data is from 2013: the bridge's clock floor (what counts as a meter whose
# clock was never set) goes back to 2000 for this replay. The households are in London.
app_up bridge 9101 /health --clock-floor 2000-01-01T00:00:00Z
app_up processor 9102 /health --default-time-zone Europe/London
# The web dashboard, served by query-api at / (Node.js 20.19+ and npm).
command -v npm >/dev/null || die "npm is missing: install Node.js 20.19 or newer to build the dashboard"
say "dashboard: npm ci && npm run build (query-api/dashboard)"
(cd "$REPO_DIR/query-api/dashboard" && npm ci --no-audit --no-fund --loglevel=error && npm run build --silent) \
    >>"$LOGS/dashboard-build.log" 2>&1 || { tail -n 30 "$LOGS/dashboard-build.log" >&2; die "dashboard build failed"; }
app_up query-api 8080 /health

say "replay: $LONDON_FILE over MQTT"
"$APP_BIN_DIR/meter-sim" --input "$LONDON_FILE" --speedup "${SMARTMETER_SIM_SPEEDUP:-0}" \
    | tee "$LOGS/replay-summary.txt"
published=$(grep -o 'published [0-9]*' "$LOGS/replay-summary.txt" | head -n 1 | grep -o '[0-9]*')
[[ -n $published ]] || die "the replay printed no published count"

psql_count() {
    psql "$SMARTMETER_DATABASE_URL" -Atc \
        "SELECT count(*) FROM readings WHERE device_id LIKE 'MAC0000%' AND ts < '2013-02-02'"
}
say "waiting for the processor to store all $published readings"
wait_until 300 "processor to store $published readings" "$LOGS/processor.log" \
    bash -c "[[ \$(psql '$SMARTMETER_DATABASE_URL' -Atc \"SELECT count(*) FROM readings WHERE device_id LIKE 'MAC0000%' AND ts < '2013-02-02'\") -ge $published ]]"
say "stored: $(psql_count) readings"

cat <<TXT

smartmeter is running.
  Dashboard:                       http://127.0.0.1:8080/ (sign in with the API key ${SMARTMETER_QUERY_API_DEV_ADMIN_KEY:-of an admin})
  GraphQL (GraphiQL in a browser): http://127.0.0.1:8080/graphiql
  GraphQL endpoint:                http://127.0.0.1:8080/graphql
  Prometheus:                      $SMARTMETER_PROMETHEUS_URL
  Logs:                            $LOGS
  Stop everything:                 infra/down.sh

A query to paste (daily energy of one household, in London local days):

  {
    devices(first: 10) { nodes { deviceId timeZone newestReadingAt } }
    dailyEnergy(deviceId: "MAC000002", fromDate: "2013-01-01", toDate: "2013-01-31") {
      localDate energyKwh hours
    }
  }

or from a shell:

  curl -s http://127.0.0.1:8080/graphql -H 'content-type: application/json' \\
    -d '{"query":"{ dailyEnergy(deviceId: \\"MAC000002\\", fromDate: \\"2013-01-01\\", toDate: \\"2013-01-07\\") { localDate energyKwh } }"}'
TXT
