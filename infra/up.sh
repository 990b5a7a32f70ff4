#!/usr/bin/env bash
# Installs (when missing) and starts smartmeter's services on loopback, idempotently:
# a service that is already running and ready is left alone.
#
#   infra/up.sh [all|postgres|mosquitto|kafka|prometheus]     (default: all)
#
# State (data, logs, pid files, generated configs) lives in $SMARTMETER_STATE_DIR,
# default <repo>/.state. See infra/README.md.
set -euo pipefail

# shellcheck source=lib/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
for service in "${ALL_SERVICES[@]}"; do
    # shellcheck source=/dev/null
    . "$INFRA_DIR/lib/$service.sh"
done

case ${1:-all} in
    -h | --help) sed -n '2,8s/^# \{0,1\}//p' "$0"; exit 0 ;;
esac
list=$(services_for "${1:-all}")
mapfile -t services <<<"$list"

# One apt-get update + install for everything that is missing.
# poppler-utils: the billing worker's tests read invoice PDFs back (pdftotext, pdfinfo).
packages=(iproute2 poppler-utils)
for service in "${services[@]}"; do
    read -ra needed <<<"$("${service}_packages")"
    packages+=("${needed[@]}")
done
ensure_packages "${packages[@]}"

mkdir -p "$LOGS" "$RUN"
started=$EPOCHREALTIME
for service in "${services[@]}"; do
    t0=$EPOCHREALTIME
    "${service}_up"
    t1=$EPOCHREALTIME
    say "  ($service: $(((${t1/./} - ${t0/./}) / 1000)) ms)"
done
t1=$EPOCHREALTIME
say "up: ${services[*]} ready in $(((${t1/./} - ${started/./}) / 1000)) ms; state in $STATE"
