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
infra/bench.sh --smoke
