#!/usr/bin/env bash
# Runs every test: starts the services the integration tests talk to (PostgreSQL,
# Mosquitto, Kafka; installed first when missing), then formatting, lints and the
# whole workspace's tests. Tests create their own databases and Kafka topics, so they
# do not touch the demo's data.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$repo/infra/up.sh" all
# shellcheck source=env.sh
. "$repo/infra/env.sh"
cd "$repo"

echo "test: cargo fmt --check"
cargo fmt --all --check
echo "test: cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked --quiet -- -D warnings
echo "test: dashboard (npm ci, build, browser tests in Debian Chromium; query-api/dashboard/README.md)"
# shellcheck source=lib/common.sh
(. "$repo/infra/lib/common.sh" && ensure_packages chromium)
(cd query-api/dashboard && npm ci --no-audit --no-fund --loglevel=error && npm test)
echo "test: cargo test"
cargo test --workspace --locked

# Where this machine's PostgreSQL has TimescaleDB (hypertables, continuous aggregate,
# compression), the tests whose results come from the database run once more on a
# plain PostgreSQL 15 cluster of their own: both paths must give the same results.
if [[ $(psql "$SMARTMETER_DATABASE_URL" -XtAc "SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'") == 1 ]]; then
    plain_state="$SMARTMETER_STATE_DIR/plain-postgres"
    # Below the kernel's ephemeral range (32768-60999), where an outgoing connection's
    # local port can never be holding it.
    plain_port=${SMARTMETER_PLAIN_PG_PORT:-25434}
    plain_postgres() {
        SMARTMETER_STATE_DIR=$plain_state SMARTMETER_PG_PORT=$plain_port SMARTMETER_TIMESCALEDB=off \
            infra/"$1".sh postgres
    }
    plain() {
        SMARTMETER_DATABASE_URL=postgres://smartmeter:smartmeter@127.0.0.1:$plain_port/smartmeter \
            SMARTMETER_TEST_DATABASE_URL=postgres://smartmeter:smartmeter@127.0.0.1:$plain_port/smartmeter_test \
            "$@"
    }
    trap 'plain_postgres down' EXIT
    echo "test: again on plain PostgreSQL (no TimescaleDB), port $plain_port"
    plain_postgres up
    plain cargo test --locked -p smartmeter-query-api -p smartmeter-billing-worker
    plain cargo test --locked -p smartmeter-processor --test periods --test device_events --test restart
fi
infra/bench.sh --smoke
