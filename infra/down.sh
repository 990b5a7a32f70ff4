#!/usr/bin/env bash
# Stops the services infra/up.sh started, and (with all) the pipeline that
# infra/demo.sh started (ours only; found by their pid files).
#
#   infra/down.sh [all|postgres|mosquitto|kafka|prometheus]   (default: all)
#
# Data stays in $SMARTMETER_STATE_DIR; to wipe it: infra/down.sh && rm -rf .state
set -euo pipefail

# shellcheck source=lib/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
for service in "${ALL_SERVICES[@]}"; do
    # shellcheck source=/dev/null
    . "$INFRA_DIR/lib/$service.sh"
done
# shellcheck source=lib/apps.sh
. "$INFRA_DIR/lib/apps.sh"

case ${1:-all} in
    -h | --help) sed -n '2,7s/^# \{0,1\}//p' "$0"; exit 0 ;;
esac
list=$(services_for "${1:-all}")
mapfile -t services <<<"$list"

# smartmeter's own services first: they are the clients of everything below.
[[ ${1:-all} == all ]] && apps_down

# Reverse start order: the clients of a service go before it.
for ((i = ${#services[@]} - 1; i >= 0; i--)); do
    "${services[i]}_down"
done
