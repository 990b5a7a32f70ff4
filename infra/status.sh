#!/usr/bin/env bash
# One line per service: running (and ready), starting, or stopped.
# Exit status 0 when every service is running and ready, 1 otherwise.
#
#   infra/status.sh
set -euo pipefail

# shellcheck source=lib/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
for service in "${ALL_SERVICES[@]}"; do
    # shellcheck source=/dev/null
    . "$INFRA_DIR/lib/$service.sh"
done

all_ok=0
for service in "${ALL_SERVICES[@]}"; do
    "${service}_status" || all_ok=1
done
say "state: $STATE (logs in $LOGS)"
exit "$all_ok"
