#!/usr/bin/env bash
# Benchmark of meter-sim (prints figures; asserts nothing):
#   - readings per second one simulator process publishes to a real Mosquitto (QoS 1,
#     every reading acknowledged before it counts), and
#   - resident memory per 1,000 simulated meters,
# at 1,000 and 10,000 meters on one shared connection (the default), on four, at 1,000
# meters with one connection per meter, and as a dry run (no broker: the simulator
# alone). The outbox is a fixed array in every meter (as on the ESP32): 64 readings
# here, and once the default 720 to show what it costs.
#
#   firmware/simulator/bench.sh              # release build, then the runs
#   METERS="1000 10000 20000" firmware/simulator/bench.sh
#
# Each run replays the London households (repeated to N meters) from 2013-01-01 00:00
# for SMARTMETER_BENCH_HOURS hours (default 6: 13 readings a meter), as fast as the
# broker acknowledges. Device ids start with bench-.
#
# The broker is the benchmark's own: the project's Mosquitto with the project's config,
# ACL and accounts on a free port (SMARTMETER_SIM_BENCH_MQTT_PORT to choose one), its
# state in a temporary directory, stopped and removed at the end (mosquitto_private of
# infra/lib/mosquitto.sh). Nothing reaches the shared broker of infra/up.sh: no retained
# status messages left behind (every meter's birth and goodbye is retained, and a bridge
# on the shared broker makes each a discovered meter), and no other client's
# persistent session queueing the readings.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$repo"
# shellcheck source=../../infra/lib/common.sh
. infra/lib/common.sh
# shellcheck source=../../infra/lib/mosquitto.sh
. infra/lib/mosquitto.sh

meters_list=${METERS:-"1000 10000"}
hours=${SMARTMETER_BENCH_HOURS:-6}
data=${SMARTMETER_DATA_DIR:-$repo/../shared/data}/lcl_halfhourly_2013-01_10households.csv
to=$(date -u -d "2013-01-01 00:00 UTC + $hours hours" +%Y-%m-%dT%H:%M:%SZ)

cargo build --release --quiet -p meter-simulator
sim=$repo/target/release/meter-sim

broker_state=$(mktemp -d "${TMPDIR:-/tmp}/meter-sim-bench.XXXXXX")
stop_broker() {
    mosquitto_private down "$broker_state" >/dev/null 2>&1 || true
    rm -rf "$broker_state"
}
trap stop_broker EXIT
trap 'exit 130' INT TERM
port=${SMARTMETER_SIM_BENCH_MQTT_PORT:-}
if [[ -z $port ]]; then
    port=$((20000 + $$ % 20000))
    while port_open "$port"; do port=$((port + 1)); done
fi
(mosquitto_private up "$broker_state" "$port") >"$broker_state/up.log" 2>&1 ||
    { cat "$broker_state/up.log" >&2; exit 1; }
export SMARTMETER_MQTT_HOST=127.0.0.1 SMARTMETER_MQTT_PORT=$port

run() { # label meters extra-args...
    local label=$1 n=$2
    shift 2
    local out
    out=$("$sim" --input "$data" --meters "$n" --to "$to" --no-progress \
        --device-prefix "bench-" --client-id "bench-$$-$label-" "$@")
    local published elapsed rate rss peak
    published=$(grep -o 'published [0-9]*' <<<"$out" | grep -o '[0-9]*')
    elapsed=$(awk '/elapsed:/ {print $2}' <<<"$out")
    rate=$(awk '/elapsed:/ {print $4}' <<<"$out")
    rss=$(awk '/memory:/ {print $2}' <<<"$out")
    peak=$(awk '/memory:/ {print $5}' <<<"$out")
    printf '%-26s %6s meters %7s readings %7s s %7s readings/s  peak RSS %6s MiB (%5.2f MiB per 1,000 meters)\n' \
        "$label" "$n" "$published" "$elapsed" "$rate" "$peak" "$(awk -v p="$peak" -v n="$n" 'BEGIN {print p * 1000 / n}')"
    : "$rss"
    peaks+=("$n $peak")
}
peaks=()

largest=$(echo "$meters_list" | awk '{print $NF}')
echo "meter-sim benchmark: $hours h of London data per meter, release build, $(nproc) cores, broker of its own on 127.0.0.1:$port"
for n in $meters_list; do
    run "mqtt-1-conn-outbox-64" "$n" --outbox 64
done
run "mqtt-1-conn-outbox-720" "$largest" --outbox 720
run "mqtt-4-conn-outbox-64" "$largest" --outbox 64 --mqtt-connections 4
run "mqtt-per-meter-outbox-64" 1000 --outbox 64 --mqtt-connections per-meter
for n in $meters_list; do
    run "dry-run-outbox-64" "$n" --outbox 64 --dry-run --out /dev/null
done
# What another 1,000 meters cost, without the process's own footprint: the first two
# runs (one connection, outbox 64) at the smallest and the largest fleet.
read -r n1 p1 <<<"${peaks[0]}"
read -r n2 p2 <<<"${peaks[$(( $(wc -w <<<"$meters_list") - 1 ))]}"
if [[ $n2 != "$n1" ]]; then
    awk -v n1="$n1" -v p1="$p1" -v n2="$n2" -v p2="$p2" \
        'BEGIN {printf "marginal memory, one connection, outbox 64: %.2f MiB per 1,000 meters (%d -> %d meters)\n", (p2 - p1) * 1000 / (n2 - n1), n1, n2}'
fi
