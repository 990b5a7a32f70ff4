#!/usr/bin/env bash
# The main job: installs and starts the services (PostgreSQL, Mosquitto, Kafka,
# Prometheus), builds and starts the pipeline (bridge, processor, billing worker,
# query-api with the web dashboard), publishes a tariff and registers the meters
# through the GraphQL API, replays real London smart-meter data over MQTT with the
# meter simulator (ten households for January 2013, and household MAC000002 from
# October 2012 to February 2014), waits until the readings are stored and the months
# invoiced, and prints the URLs.
#
#   infra/demo.sh                                 # as fast as the pipeline goes
#   SMARTMETER_SIM_SPEEDUP=3600 infra/demo.sh     # one simulated hour per second
#
# Everything keeps running afterwards; infra/down.sh stops it all. Running it again
# changes nothing that is already there (the replay's readings are duplicates).
set -euo pipefail

# shellcheck source=lib/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
# shellcheck source=lib/apps.sh
. "$INFRA_DIR/lib/apps.sh"

DATA_DIR=${SMARTMETER_DATA_DIR:-$REPO_DIR/../shared/data}
LONDON_JANUARY=$DATA_DIR/lcl_halfhourly_2013-01_10households.csv
LONDON_MAC000002=$DATA_DIR/lcl_raw_MAC000002_halfhourly_2012-10_to_2014-02.csv
for file in "$LONDON_JANUARY" "$LONDON_MAC000002"; do
    [[ -r $file ]] || die "real data not found at $file (set SMARTMETER_DATA_DIR)"
done
API=http://127.0.0.1:8080
# A month closes this long after its end once its meter is silent (wall clock): short,
# so the replayed months are invoiced within the demo.
PERIOD_GRACE=${SMARTMETER_DEMO_PERIOD_GRACE:-1m}

"$INFRA_DIR/up.sh" all

say "build: cargo build --release (the first build takes several minutes)"
(cd "$REPO_DIR" && cargo build --release --locked --quiet \
    -p smartmeter-bridge -p smartmeter-processor -p smartmeter-billing-worker \
    -p smartmeter-query-api -p meter-simulator)
command -v npm >/dev/null || die "npm is missing: install Node.js 20.19 or newer to build the dashboard"
say "dashboard: npm ci && npm run build (query-api/dashboard)"
(cd "$REPO_DIR/query-api/dashboard" && npm ci --no-audit --no-fund --loglevel=error && npm run build --silent) \
    >>"$LOGS/dashboard-build.log" 2>&1 || { tail -n 30 "$LOGS/dashboard-build.log" >&2; die "dashboard build failed"; }

# The London data is from 2012-2014: the bridge's clock floor (what counts as a meter
# whose clock was never set) goes back to 2000 for this replay.
app_up bridge 9101 /health --clock-floor 2000-01-01T00:00:00Z
app_up processor 9102 /health --default-time-zone Europe/London --period-grace "$PERIOD_GRACE"
app_up billing-worker 9104 /health run
app_up query-api 8080 /health

# graphql <query> [variables JSON]: POSTs with the development admin key; prints the
# data, fails on errors.
graphql() {
    local body
    body=$(python3 -c 'import json,sys; print(json.dumps({"query": sys.argv[1], "variables": json.loads(sys.argv[2])}))' \
        "$1" "${2:-{\}}")
    curl -fsS "$API/graphql" -H 'content-type: application/json' \
        -H "authorization: Bearer $SMARTMETER_QUERY_API_DEV_ADMIN_KEY" -d "$body" |
        python3 -c 'import json,sys; r=json.load(sys.stdin); sys.exit("GraphQL: %s" % r["errors"]) if r.get("errors") else print(json.dumps(r["data"]))'
}
json_field() { python3 -c 'import json,sys; d=json.load(sys.stdin)
for k in sys.argv[1].split("."): d = d[int(k)] if k.isdigit() else d[k]
print("" if d is None else d)' "$1"; }

# The tariff: Ofgem's published 2024 Q3 cap rates, re-dated to cover the replayed
# years (infra/demo/tariff.json says so in its notes).
tariff_id=$(json_field tariff_id <"$INFRA_DIR/demo/tariff.json")
if ! graphql '{ tariffs { tariffId } }' | grep -q "\"$tariff_id\""; then
    say "tariff: publishing $tariff_id version 1"
    graphql 'mutation($d:JSON!){ publishTariffVersion(document:$d){ tariffId version } }' \
        "{\"d\": $(cat "$INFRA_DIR/demo/tariff.json")}" >/dev/null
    wait_until 60 "billing worker to store $tariff_id" "$LOGS/billing-worker.log" bash -c \
        "[[ -n \$(psql '$SMARTMETER_DATABASE_URL' -Atc \"SELECT 1 FROM tariff_versions WHERE tariff_id = '$tariff_id'\") ]]"
fi

# A customer who owns MAC000002 (the dashboard's customer view), and the meters.
if [[ -z $(psql "$SMARTMETER_DATABASE_URL" -Atc "SELECT 1 FROM customers WHERE customer_id = 'household-2'") ]]; then
    graphql 'mutation{ createCustomer(customerId:"household-2", name:"Household MAC000002"){ customerId } }' >/dev/null
fi
households=$(awk -F, 'NR > 1 && $1 != "LCLid" { print $1 }' "$LONDON_JANUARY" | sort -u)
for household in $households; do
    [[ -n $(psql "$SMARTMETER_DATABASE_URL" -Atc \
        "SELECT 1 FROM devices WHERE device_id = '$household' AND lifecycle = 'registered'") ]] && continue
    customer=null
    [[ $household == MAC000002 ]] && customer='"household-2"'
    graphql 'mutation($i:RegisterDeviceInput!){ registerDevice(input:$i){ eventId } }' \
        "{\"i\": {\"deviceId\": \"$household\", \"name\": \"London household $household\",
                  \"location\": \"London (Low Carbon London trial)\", \"timeZone\": \"Europe/London\",
                  \"tariffId\": \"$tariff_id\", \"tariffEffectiveFrom\": \"2012-10-01\",
                  \"customerId\": $customer}}" >/dev/null
    say "registered $household"
done
wait_until 60 "processor to register the meters" "$LOGS/processor.log" bash -c \
    "[[ \$(psql '$SMARTMETER_DATABASE_URL' -Atc \"SELECT count(*) FROM devices WHERE lifecycle = 'registered'\") -ge 10 ]]"

say "replay: $LONDON_JANUARY and $LONDON_MAC000002 over MQTT"
"$APP_BIN_DIR/meter-sim" --input "$LONDON_JANUARY" --input "$LONDON_MAC000002" \
    --speedup "${SMARTMETER_SIM_SPEEDUP:-0}" | tee "$LOGS/replay-summary.txt"
published=$(grep -o 'published [0-9]*' "$LOGS/replay-summary.txt" | head -n 1 | grep -o '[0-9]*')
[[ -n $published ]] || die "the replay printed no published count"

stored_sql="SELECT count(*) FROM readings WHERE device_id LIKE 'MAC0000%' AND ts < '2014-03-01'"
say "waiting for the processor to store the $published readings"
wait_until 600 "processor to store $published readings" "$LOGS/processor.log" \
    bash -c "[[ \$(psql '$SMARTMETER_DATABASE_URL' -Atc \"$stored_sql\") -ge $published ]]"
say "stored: $(psql "$SMARTMETER_DATABASE_URL" -Atc "$stored_sql") readings"

# Every replayed month closes once its meter has been silent for the grace; the
# billing worker then invoices it.
months_sql="SELECT count(*) FROM billing_periods WHERE device_id LIKE 'MAC0000%'"
say "waiting for the months to close (grace $PERIOD_GRACE) and be invoiced"
wait_until 600 "billing worker to invoice every replayed month" "$LOGS/billing-worker.log" bash -c \
    "[[ \$(psql '$SMARTMETER_DATABASE_URL' -Atc \"SELECT count(*) FROM invoices WHERE device_id LIKE 'MAC0000%' AND revision = 0\") -ge \$(psql '$SMARTMETER_DATABASE_URL' -Atc \"$months_sql\") ]]"
say "invoiced: $(psql "$SMARTMETER_DATABASE_URL" -Atc "SELECT count(*) FROM invoices WHERE device_id LIKE 'MAC0000%'") invoices"

cat <<TXT

smartmeter is running.
  Dashboard:            $API/   (sign in with the API key $SMARTMETER_QUERY_API_DEV_ADMIN_KEY)
  GraphiQL:             $API/graphiql   (header  Authorization: Bearer $SMARTMETER_QUERY_API_DEV_ADMIN_KEY)
  GraphQL endpoint:     $API/graphql    (WebSocket subscriptions: $API/graphql/ws)
  Seed REST API:        $API/api/devices
  Prometheus:           $SMARTMETER_PROMETHEUS_URL
  Grafana provisioning: infra/grafana (see infra/README.md; Grafana is not packaged here)
  Logs:                 $LOGS
  Stop everything:      infra/down.sh

A query to paste into GraphiQL (daily energy of one household, in London local days,
and its invoices):

  {
    devices(first: 10) { nodes { deviceId timeZone lifecycle lastSeenAt } }
    dailyEnergy(deviceId: "MAC000002", fromDate: "2013-01-01", toDate: "2013-01-31") {
      localDate energyKwh hours
    }
    invoices(deviceId: "MAC000002") { nodes { invoiceNumber month energyKwh total currency } }
  }

or from a shell:

  curl -s $API/graphql -H 'content-type: application/json' \\
    -H 'authorization: Bearer $SMARTMETER_QUERY_API_DEV_ADMIN_KEY' \\
    -d '{"query":"{ dailyEnergy(deviceId: \\"MAC000002\\", fromDate: \\"2013-01-01\\", toDate: \\"2013-01-07\\") { localDate energyKwh } }"}'
TXT
