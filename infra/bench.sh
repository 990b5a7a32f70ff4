#!/usr/bin/env bash
# Benchmarks smartmeter and its peers on this machine, side by side in one run, and
# writes BENCHMARKS.md (figures, machine, commands, ratio to each peer).
#
#   infra/bench.sh                  the full run (hours with the defaults; see below)
#   infra/bench.sh --smoke          seconds-long check that every step works (CI runs it)
#   infra/bench.sh --only ingest,graphql   some loads only
#
# Loads: ingest (MQTT -> bridge -> Kafka -> processor -> PostgreSQL, rate ladder, then the
# highest sustained rate held for SMARTMETER_BENCH_DURATION; peers Mosquitto alone, the
# naive mosquitto_sub | psql COPY pipe, PostgreSQL COPY of the same rows), freshness,
# graphql (query-api vs PostGraphile), billing (billing-worker's replay_bench), memory,
# growth (1x/10x/100x meters). Every run has its own databases, Kafka topics, MQTT
# client ids and MQTT broker (a second Mosquitto with infra's config on
# SMARTMETER_BENCH_MQTT_PORT), removed at the end. Settings: see infra/bench/README.md.
set -euo pipefail

# shellcheck source=lib/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
# shellcheck source=lib/apps.sh
. "$INFRA_DIR/lib/apps.sh"
# shellcheck source=lib/mosquitto.sh
. "$INFRA_DIR/lib/mosquitto.sh"
# shellcheck source=lib/postgres.sh
. "$INFRA_DIR/lib/postgres.sh"

MODE=full
ONLY=all
while (($#)); do
    case $1 in
        --smoke) MODE=smoke ;;
        --only) ONLY=${2:?--only needs a list}; shift ;;
        --only=*) ONLY=${1#--only=} ;;
        -h | --help) sed -n '2,16s/^# \{0,1\}//p' "$0"; exit 0 ;;
        *) die "unknown argument '$1' (see infra/bench.sh --help)" ;;
    esac
    shift
done

# --- settings (env) -------------------------------------------------------------------
if [[ $MODE == smoke ]]; then
    d_duration=2 d_step=2 d_http=1 d_rates="300" d_meters=20 d_growth="1" d_mem_meters=300
    d_mem_per_meter=2 d_bill_meters="5" d_bill_months=2 d_wrk_conns=4 d_drain=40 d_profile=debug
    d_out=$STATE/bench/BENCHMARKS-smoke.md
else
    d_duration=600 d_step=60 d_http=60 d_rates="1000 2000 4000 8000 16000 32000 64000" d_meters=1000
    d_growth="1 10 100" d_mem_meters=100000 d_mem_per_meter=3 d_bill_meters="100 1000 10000"
    d_bill_months=12 d_wrk_conns=16 d_drain=300 d_profile=release d_out=$REPO_DIR/BENCHMARKS.md
fi
DURATION=${SMARTMETER_BENCH_DURATION:-$d_duration}       # sustained run at the top rate; freshness
STEP=${SMARTMETER_BENCH_STEP_SECONDS:-$d_step}            # each step of a rate ladder
HTTP_SECONDS=${SMARTMETER_BENCH_HTTP_SECONDS:-$d_http}    # wrk per server
RATES=${SMARTMETER_BENCH_RATES:-$d_rates}                 # readings/s ladder
METERS=${SMARTMETER_BENCH_METERS:-$d_meters}              # the 1x meter count
GROWTH=${SMARTMETER_BENCH_GROWTH:-$d_growth}              # meter-count factors
MEM_METERS=${SMARTMETER_BENCH_MEMORY_METERS:-$d_mem_meters}
MEM_PER_METER=${SMARTMETER_BENCH_MEMORY_READINGS_PER_METER:-$d_mem_per_meter}
BILL_METERS=${SMARTMETER_BENCH_BILLING_METERS:-$d_bill_meters}
BILL_MONTHS=${SMARTMETER_BENCH_BILLING_MONTHS:-$d_bill_months}
WRK_CONNS=${SMARTMETER_BENCH_WRK_CONNECTIONS:-$d_wrk_conns}
DRAIN=${SMARTMETER_BENCH_DRAIN_SECONDS:-$d_drain}         # wait for the pipeline to store all
PROFILE=${SMARTMETER_BENCH_PROFILE:-$d_profile}           # release | debug
BUILD=${SMARTMETER_BENCH_BUILD:-1}                        # 0: use the binaries already built
OUT=${SMARTMETER_BENCH_OUT:-$d_out}
LAG_SECONDS=${SMARTMETER_BENCH_LAG_SECONDS:-5}            # longest catch-up after publishing ends
# The bearer token of every GraphQL request; query-api accepts it as its dev admin key.
# perf: a flat, system-wide CPU profile (99 Hz, no call graphs) of the held ingest run and
# of query-api under wrk, when perf works here. Off in smoke runs.
d_perf=0
[[ $MODE == full ]] && perf record -q -o /dev/null -- true >/dev/null 2>&1 && d_perf=1
PERF=${SMARTMETER_BENCH_PERF:-$d_perf}
GRAPHQL_TOKEN=${SMARTMETER_BENCH_GRAPHQL_TOKEN:-bench-$(head -c 18 /dev/urandom | base64 | tr -d '/+=')}
DATA_DIR=${SMARTMETER_DATA_DIR:-$REPO_DIR/../shared/data}
export SMARTMETER_DATA_DIR=$DATA_DIR

selected() { [[ $ONLY == all || ,$ONLY, == *,$1,* ]]; }
for load in ${ONLY//,/ }; do
    [[ $load =~ ^(all|ingest|freshness|graphql|billing|memory|growth)$ ]] ||
        die "unknown load '$load' (ingest, freshness, graphql, billing, memory, growth)"
done

RUN_ID=$(date -u +%Y%m%d%H%M%S)_$$
RUN_DIR=$STATE/bench/runs/$RUN_ID
RESULTS=$RUN_DIR/results.jsonl
mkdir -p "$RUN_DIR/logs"
: >"$RESULTS"
BIN=${SMARTMETER_BENCH_BIN_DIR:-$REPO_DIR/target/$PROFILE}
CLK_TCK=$(getconf CLK_TCK)
PG_ADMIN_URL=$SMARTMETER_DATABASE_URL
pg_url() { echo "${PG_ADMIN_URL%/*}/$1"; }

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
result() { jq -c -n "$@" >>"$RESULTS" || die "internal: a result could not be written"; }

# --- cleanup: only what this run started ---------------------------------------------
PIDS=()
DATABASES=()
cleanup() {
    local rc=$? entry pid start db id
    set +e
    for entry in "${PIDS[@]}"; do
        pid=${entry%%:*} start=${entry#*:}
        ours "$pid" "$start" && { kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null; }
    done
    for entry in "${PIDS[@]}"; do
        pid=${entry%%:*} start=${entry#*:}
        for _ in 1 2 3 4 5 6 7 8 9 10; do ours "$pid" "$start" || break; sleep 0.3; done
        ours "$pid" "$start" && { kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null; }
    done
    for db in "${DATABASES[@]}"; do drop_db "$db" >/dev/null 2>&1; done
    "$BIN/examples/bench_topics" delete "smartmeter.bench.$RUN_ID." >>"$RUN_DIR/logs/kafka-topics.log" 2>&1
    [[ -n ${BENCH_MQTT_PORT:-} ]] && bench_broker down >/dev/null 2>&1
    rm -rf "$BROKER_STATE/mosquitto/data"
    if ((rc != 0)); then
        # What was measured before the failure is not lost: a partial report beside the logs.
        [[ -s $RESULTS ]] && "$INFRA_DIR/bench/report.sh" "$RESULTS" "$RUN_DIR" "$MODE" >"$RUN_DIR/BENCHMARKS-partial.md" 2>/dev/null
        log "FAILED (exit $rc); logs in $RUN_DIR/logs"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Processes are remembered with their start time, so a pid reused later by someone
# else's process is never signalled.
proc_start() { awk '{print $22}' "/proc/$1/stat" 2>/dev/null; }
track() { PIDS+=("$1:$(proc_start "$1")"); }
ours() { [[ -n $2 && $(proc_start "$1") == "$2" ]]; }

start_bg() { # start_bg <log> <cmd...>: runs in its own session; sets BG_PID
    local logfile=$1
    shift
    setsid "$@" >>"$logfile" 2>&1 </dev/null &
    BG_PID=$!
    track "$BG_PID"
}

stop_pid_quiet() { # SIGTERM, wait up to 30 s, SIGKILL
    local pid=$1
    pid_alive "$pid" || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 1 150); do pid_alive "$pid" || return 0; sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null || true
}

free_port() {
    local port
    for port in $(seq $((19100 + $$ % 800)) 19999) $(seq 19100 19999); do
        if ! port_open "$port" && [[ ! -e $RUN_DIR/port.$port ]]; then
            : >"$RUN_DIR/port.$port"
            echo "$port"
            return
        fi
    done
    die "no free port"
}

# --- the benchmark's own broker --------------------------------------------------------
# infra's Mosquitto with infra's config and ACL (lib/mosquitto.sh's mosquitto_private),
# with a state directory and a port of this run (runs side by side never share one).
BROKER_STATE=$RUN_DIR/broker
bench_broker() { # up | down (a subshell: a refusal is a failed command, not the run's exit)
    (mosquitto_private "$1" "$BROKER_STATE" "$BENCH_MQTT_PORT")
}
bench_broker_pid() { (mosquitto_private pid "$BROKER_STATE"); }
discard_session() { # a clean-session connect removes a persistent session and its queue
    mosquitto_sub "${mqtt_bridge_auth[@]}" -i "$1" -t smartmeter/bench-none/telemetry -E >/dev/null 2>&1 || true
}

# --- CPU accounting ----------------------------------------------------------------------
proc_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
postgres_ticks() {
    local total=0 pid
    for pid in $(pgrep -x postgres || true); do total=$((total + $(proc_ticks "$pid"))); done
    echo "$total"
}
machine_ticks() { awk '/^cpu / {print $2+$3+$4+$7+$8, $2+$3+$4+$5+$6+$7+$8}' /proc/stat; }
declare -A CPU_PIDS
cpu_snapshot() { # cpu_snapshot <file>: "name ticks" per tracked process
    local name
    {
        for name in "${!CPU_PIDS[@]}"; do echo "$name $(proc_ticks "${CPU_PIDS[$name]}")"; done
        echo "postgres $(postgres_ticks)"
        echo "kafka $(proc_ticks "$(cat "$RUN/kafka.pid" 2>/dev/null)")"
        echo "mosquitto $(proc_ticks "$(bench_broker_pid)")"
        read -r busy all < <(machine_ticks)
        echo "machine_busy $busy"
        echo "machine_all $all"
    } >"$1"
}
cpu_json() { # cpu_json <before> <after> <seconds>: {"name": % of one core, "machine": % of all}
    awk -v secs="$3" -v tck="$CLK_TCK" '
        NR == FNR { before[$1] = $2; next }
        { after[$1] = $2 }
        END {
            out = ""
            for (n in after) {
                if (n ~ /^machine_/) continue
                pct = (after[n] - before[n]) / tck / secs * 100
                out = out sprintf("%s\"%s\":%.1f", out == "" ? "" : ",", n, pct)
            }
            all = after["machine_all"] - before["machine_all"]
            busy = after["machine_busy"] - before["machine_busy"]
            out = out sprintf(",\"machine\":%.1f", all > 0 ? busy / all * 100 : 0)
            print "{" out "}"
        }' "$1" "$2"
}

# profile_later <label> <delay s> <seconds>: in the background, after <delay>, records
# the whole machine for <seconds>; profile_report <label> writes the top of it.
profile_later() {
    ((PERF == 1)) || return 0
    (sleep "$2" && perf record -q -a -F 99 -o "$RUN_DIR/perf-$1.data" -- sleep "$3" >/dev/null 2>&1) &
    PROFILE_PID=$!
    track "$PROFILE_PID"
}
profile_report() {
    ((PERF == 1)) || return 0
    wait "$PROFILE_PID" 2>/dev/null || true
    [[ -s $RUN_DIR/perf-$1.data ]] || return 0
    {
        echo "by process and library:"
        perf report -i "$RUN_DIR/perf-$1.data" --stdio --sort comm,dso 2>/dev/null | grep -v -e '^#' -e '^$' | sed -n 1,15p || true
        echo
        echo "by function:"
        perf report -i "$RUN_DIR/perf-$1.data" --stdio --sort comm,sym 2>/dev/null | grep -v -e '^#' -e '^$' | sed -n 1,30p || true
    } >"$RUN_DIR/perf-$1.txt"
    rm -f "$RUN_DIR/perf-$1.data"
}

# --- the pipeline under test -------------------------------------------------------------
# pipeline_up <name> [query-api]: database, topics, processor, bridge (and query-api) of
# its own. Sets P_DB (name), P_URL, P_TOPIC, P_BRIDGE, P_PROCESSOR, P_API, P_API_PORT.
pipeline_up() {
    local name=$1 with_api=${2:-}
    P_DB=smbench_${RUN_ID}_$name
    P_URL=$(pg_url "$P_DB")
    P_TOPIC=smartmeter.bench.$RUN_ID.$name.telemetry
    local dlq=smartmeter.bench.$RUN_ID.$name.dlq logs=$RUN_DIR/logs
    psql "$PG_ADMIN_URL" -qAtc "CREATE DATABASE \"$P_DB\"" >/dev/null
    DATABASES+=("$P_DB")
    "$BIN/examples/bench_topics" create "$P_TOPIC:6" "$dlq:1" >>"$logs/kafka-topics.log" 2>&1 ||
        die "could not create Kafka topics (log: $logs/kafka-topics.log)"

    local port
    port=$(free_port)
    P_PROCESSOR_PORT=$port
    start_bg "$logs/$name-processor.log" "$BIN/processor" --database-url "$P_URL" \
        --group-id "bench-$RUN_ID-$name" --topic "$P_TOPIC" --default-time-zone Europe/London \
        --device-events-topic= --billing-periods-topic "smartmeter.bench.$RUN_ID.$name.periods" \
        --metrics-addr "127.0.0.1:$port"
    P_PROCESSOR=$BG_PID
    echo "$P_PROCESSOR" >"$RUN_DIR/$name-processor.pid"
    wait_until 120 "processor ($name)" "$logs/$name-processor.log" alive_and "$RUN_DIR/$name-processor.pid" http_ok "$port" /health

    port=$(free_port)
    P_BRIDGE_PORT=$port
    local client=bench-$RUN_ID-$name-bridge
    start_bg "$logs/$name-bridge.log" env SMARTMETER_MQTT_PORT="$BENCH_MQTT_PORT" "$BIN/bridge" \
        --mqtt-client-id "$client" --telemetry-topic "$P_TOPIC" --dlq-topic "$dlq" \
        --mqtt-status-topic-filter= --clock-floor 2000-01-01T00:00:00Z --metrics-addr "127.0.0.1:$port"
    P_BRIDGE=$BG_PID
    echo "$P_BRIDGE" >"$RUN_DIR/$name-bridge.pid"
    wait_until 120 "bridge ($name)" "$logs/$name-bridge.log" alive_and "$RUN_DIR/$name-bridge.pid" http_ok "$port" /health
    CPU_PIDS=([bridge]=$P_BRIDGE [processor]=$P_PROCESSOR)

    P_API=""
    if [[ $with_api == query-api ]]; then
        P_API_PORT=$(free_port)
        # Live subscriptions read this pipeline's telemetry; requests carry the run's
        # development admin key (query-api's --dev-admin-key, see query-api/README.md).
        start_bg "$logs/$name-query-api.log" env SMARTMETER_QUERY_API_DEV_ADMIN_KEY="$GRAPHQL_TOKEN" \
            SMARTMETER_QUERY_API_TELEMETRY_TOPIC="$P_TOPIC" SMARTMETER_QUERY_API_DLQ_TOPIC="$dlq" \
            "$BIN/query-api" --database-url "$P_URL" --listen "127.0.0.1:$P_API_PORT"
        P_API=$BG_PID
        echo "$P_API" >"$RUN_DIR/$name-query-api.pid"
        wait_until 120 "query-api ($name)" "$logs/$name-query-api.log" alive_and "$RUN_DIR/$name-query-api.pid" http_ok "$P_API_PORT" /health
        CPU_PIDS[query-api]=$P_API
    fi
}

pipeline_down() { # all three at once: each finishes what it has in hand
    local pid pids=("$P_BRIDGE" "$P_PROCESSOR") stoppers=()
    [[ -n ${P_API:-} ]] && pids+=("$P_API")
    for pid in "${pids[@]}"; do
        stop_pid_quiet "$pid" &
        stoppers+=($!)
    done
    wait "${stoppers[@]}"
    # The bridge's persistent session would queue the next steps' load: drop it.
    discard_session "bench-$RUN_ID-$1-bridge"
}

# An autovacuum worker (after a large COPY) belongs to the superuser, which our role may
# not terminate: FORCE then fails for a moment; try again.
# metric_mean <port> <histogram>: "mean count" of a Prometheus histogram on /metrics
metric_mean() {
    curl -s "http://127.0.0.1:$1/metrics" | awk -v n="$2" '
        index($1, n "_sum") == 1 { s += $NF } index($1, n "_count") == 1 { c += $NF }
        END { printf "%.6f %d\n", (c > 0 ? s / c : 0), c }'
}
# pipeline_internals: what the bridge and the processor saw (JSON)
pipeline_internals() {
    local produce batch commit
    read -r produce _ < <(metric_mean "$P_BRIDGE_PORT" smartmeter_bridge_kafka_produce_duration_seconds)
    read -r batch batches < <(metric_mean "$P_PROCESSOR_PORT" smartmeter_processor_batch_records)
    read -r commit _ < <(metric_mean "$P_PROCESSOR_PORT" smartmeter_processor_batch_commit_seconds)
    jq -c -n --argjson p "${produce:-0}" --argjson b "${batch:-0}" --argjson n "${batches:-0}" --argjson c "${commit:-0}" \
        '{bridge_produce_ms: ($p * 1000), processor_batches: $n, processor_batch_records: $b, processor_commit_ms: ($c * 1000)}'
}

drop_db() {
    local try
    for try in $(seq 1 60); do
        psql "$PG_ADMIN_URL" -qAtc "DROP DATABASE IF EXISTS \"$1\" WITH (FORCE)" >/dev/null 2>&1 && return 0
        sleep 0.5
    done
    psql "$PG_ADMIN_URL" -qAtc "DROP DATABASE IF EXISTS \"$1\" WITH (FORCE)" >/dev/null
}

stored_count() { psql "$P_URL" -qAtc "SELECT coalesce(sum(readings_total), 0) FROM devices"; }
row_count() { psql "$1" -qAtc "SELECT count(*) FROM ${2:-readings}"; }

# sampler <file> <cmd...>: "unix_ms value" every second, in the background; sets SAMPLER_PID
sampler() {
    local sampler_out=$1
    shift
    # Stamped when the value is in hand, so a sample never claims to be newer than it is.
    (while true; do v=$("$@" 2>/dev/null || echo -1); echo "$(date +%s%3N) $v"; sleep 1; done) >"$sampler_out" &
    SAMPLER_PID=$!
    track "$SAMPLER_PID"
}
# value_at <file> <unix_ms>: the last sample taken at or before that time (+0.5 s)
value_at() { awk -v t="$2" '$1 <= t + 500 && $2 >= 0 { v = $2 } END { print v + 0 }' "$1"; }

# wait_count <target> <seconds> <since unix ms> <cmd...>: polls the command (every 0.2 s)
# until it prints >= target; gives up after <seconds>, or after 30 s without progress.
# Prints the seconds from <since> (e.g. the end of publishing) to the poll that saw it.
wait_count() {
    local target=$1 limit=$2 since=$3
    shift 3
    local t0=$EPOCHREALTIME last=-1 last_change=$SECONDS value
    while true; do
        value=$("$@" 2>/dev/null || echo -1)
        ((value >= target)) && break
        ((value != last)) && last=$value last_change=$SECONDS
        if ((SECONDS - last_change > 30)) || awk -v a="$t0" -v b="$EPOCHREALTIME" -v l="$limit" 'BEGIN { exit !(b - a > l) }'; then
            break
        fi
        sleep 0.2
    done
    awk -v since="$since" -v now="$(date +%s%3N)" 'BEGIN { d = (now - since) / 1000; printf "%.2f", (d < 0 ? 0 : d) }'
}

bench_load() { # bench_load <label> <meters> <rate> <seconds> [args...] -> JSON on stdout
    local label=$1 meters=$2 rate=$3 seconds=$4
    shift 4
    "${LOAD_ENV[@]}" "$BIN/examples/bench_load" --meters "$meters" --rate "$rate" --duration-secs "$seconds" \
        --device-prefix "m-" --client-id-prefix "bench-$RUN_ID-$label-load-" "$@" 2>>"$RUN_DIR/logs/$label-load.log"
}

# Held: the generator achieved >= 95 % of the target, the sink has every reading, and it
# needed at most LAG_SECONDS after publishing ended to get there (a sink that falls
# behind builds a backlog that grows with the step's length).
sustained() { # sustained <rate> <achieved> <published> <stored> <drain seconds>
    awk -v r="$1" -v a="$2" -v p="$3" -v s="$4" -v d="$5" -v ls="$LAG_SECONDS" \
        'BEGIN { exit !(a >= 0.95 * r && s == p && p > 0 && d <= ls) }'
}

# --- load 1: the pipeline at one rate ---------------------------------------------------
# ingest_step <label> <meters> <rate> <seconds> [keep]: appends a result; returns 0 when
# the rate was sustained. With "keep" the database stays for the COPY peer (KEEP_DB).
ingest_step() {
    local label=$1 meters=$2 rate=$3 seconds=$4 keep=${5:-}
    local name=ingest_${label}_${meters}m_${rate}
    log "ingest: $meters meters at $rate readings/s for ${seconds}s ($label)"
    pipeline_up "$name"
    local samples=$RUN_DIR/$name.samples before=$RUN_DIR/$name.cpu0 after=$RUN_DIR/$name.cpu1
    sampler "$samples" stored_count
    cpu_snapshot "$before"
    local t0=$EPOCHREALTIME load
    [[ $label == sustained ]] && profile_later ingest 5 "$((seconds > 65 ? 60 : (seconds > 10 ? seconds - 5 : 1)))"
    load=$(bench_load "$name" "$meters" "$rate" "$seconds") || die "load generator failed (log: $RUN_DIR/logs/$name-load.log)"
    [[ $label == sustained ]] && profile_report ingest
    local published achieved end_ms
    published=$(jq -r .published <<<"$load")
    achieved=$(jq -r .achieved_rate <<<"$load")
    end_ms=$(jq -r .publish_end_unix_ms <<<"$load")
    local drain stored rows lag
    drain=$(wait_count "$published" "$DRAIN" "$end_ms" stored_count)
    local t1=$EPOCHREALTIME
    cpu_snapshot "$after"
    kill "$SAMPLER_PID" 2>/dev/null || true
    stored=$(value_at "$samples" "$end_ms")
    lag=$((published - stored))
    rows=$(row_count "$P_URL")
    local cpu internals
    cpu=$(cpu_json "$before" "$after" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')")
    internals=$(pipeline_internals)
    pipeline_down "$name"
    local ok=false
    sustained "$rate" "$achieved" "$published" "$rows" "$drain" && ok=true
    result --arg stepname "$label" --argjson meters "$meters" --argjson rate "$rate" --argjson seconds "$seconds" \
        --argjson load "$load" --argjson rows "$rows" --argjson lag "$lag" --argjson drain "$drain" \
        --argjson cpu "$cpu" --argjson ok "$ok" --arg db "$P_DB" \
        --argjson window "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')" --argjson internals "$internals" \
        '{load: "ingest", step: $stepname, meters: $meters, rate: $rate, seconds: $seconds, window_s: $window, internals: $internals,
          published: $load.published, achieved: $load.achieved_rate, rows: $rows,
          lost: ($load.published - $rows), lag_at_end: $lag, drain_s: $drain, cpu: $cpu,
          sustained: $ok, exhausted: $load.exhausted}'
    log "  published $published ($achieved/s), stored $rows, backlog at end $lag, drained in ${drain}s: sustained=$ok"
    if [[ $keep == keep ]]; then KEEP_DB=$P_DB; else drop_db "$P_DB"; fi
    [[ $ok == true ]]
}

# --- peer: Mosquitto alone (QoS 1 publisher -> QoS 1 subscriber) ---------------------------
mosquitto_step() {
    local label=$1 meters=$2 rate=$3 seconds=$4
    local name=mosquitto_${label}_${rate} file=$RUN_DIR/mosquitto_${label}_${rate}.sub
    log "peer mosquitto alone: $meters meters at $rate/s for ${seconds}s ($label)"
    : >"$file"
    start_bg "$RUN_DIR/logs/$name-sub.log" bash -c 'exec stdbuf -oL mosquitto_sub "$@" >"'"$file"'"' _ \
        "${mqtt_bridge_auth[@]}" -q 1 -i "bench-$RUN_ID-$name-sub" -t 'smartmeter/+/telemetry' -F x
    local sub=$BG_PID
    sleep 0.5
    local samples=$RUN_DIR/$name.samples before=$RUN_DIR/$name.cpu0 after=$RUN_DIR/$name.cpu1
    received() { echo $(($(stat -c %s "$file") / 2)); }
    sampler "$samples" received
    CPU_PIDS=([mosquitto_sub]=$sub)
    cpu_snapshot "$before"
    local t0=$EPOCHREALTIME load
    load=$(bench_load "$name" "$meters" "$rate" "$seconds") || die "load generator failed"
    local published achieved end_ms drain got lag
    published=$(jq -r .published <<<"$load")
    achieved=$(jq -r .achieved_rate <<<"$load")
    end_ms=$(jq -r .publish_end_unix_ms <<<"$load")
    drain=$(wait_count "$published" "$DRAIN" "$end_ms" received)
    local t1=$EPOCHREALTIME
    cpu_snapshot "$after"
    kill "$SAMPLER_PID" 2>/dev/null || true
    got=$(received)
    lag=$((published - $(value_at "$samples" "$end_ms")))
    stop_pid_quiet "$sub"
    local cpu ok=false
    cpu=$(cpu_json "$before" "$after" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')")
    sustained "$rate" "$achieved" "$published" "$got" "$drain" && ok=true
    result --arg stepname "$label" --argjson meters "$meters" --argjson rate "$rate" --argjson seconds "$seconds" \
        --argjson load "$load" --argjson got "$got" --argjson lag "$lag" --argjson drain "$drain" \
        --argjson cpu "$cpu" --argjson ok "$ok" \
        '{load: "mosquitto", step: $stepname, meters: $meters, rate: $rate, seconds: $seconds,
          published: $load.published, achieved: $load.achieved_rate, rows: $got,
          lost: ($load.published - $got), lag_at_end: $lag, drain_s: $drain, cpu: $cpu, sustained: $ok}'
    log "  published $published ($achieved/s), received $got, backlog at end $lag: sustained=$ok"
    [[ $ok == true ]]
}

# --- peer: the naive pipe, mosquitto_sub | psql COPY --------------------------------------
naive_step() {
    local label=$1 meters=$2 rate=$3 seconds=$4
    local name=naive_${label}_${rate}
    local db=smbench_${RUN_ID}_$name
    local url
    url=$(pg_url "$db")
    log "peer naive pipe: $meters meters at $rate/s for ${seconds}s ($label)"
    psql "$PG_ADMIN_URL" -qAtc "CREATE DATABASE \"$db\"" >/dev/null
    DATABASES+=("$db")
    psql "$url" -qAtc "CREATE TABLE naive_readings (payload jsonb NOT NULL)" >/dev/null
    # What a user would write: every message a line of JSON, into one COPY. (stdbuf -oL
    # only so that the harness can end the pipe once everything is through.)
    start_bg "$RUN_DIR/logs/$name.log" bash -c 'stdbuf -oL mosquitto_sub "$@" | psql "'"$url"'" -qc "COPY naive_readings (payload) FROM STDIN"' _ \
        "${mqtt_bridge_auth[@]}" -q 1 -i "bench-$RUN_ID-$name-sub" -t 'smartmeter/+/telemetry'
    local pipe=$BG_PID
    sleep 0.5
    copied() { psql "$PG_ADMIN_URL" -qAtc "SELECT coalesce(sum(tuples_processed), 0) FROM pg_stat_progress_copy WHERE datname = '$db'"; }
    local samples=$RUN_DIR/$name.samples before=$RUN_DIR/$name.cpu0 after=$RUN_DIR/$name.cpu1
    sampler "$samples" copied
    CPU_PIDS=([mosquitto_sub]=$(pgrep -x mosquitto_sub -s "$pipe" | sed -n 1p) [psql]=$(pgrep -x psql -s "$pipe" | sed -n 1p))
    cpu_snapshot "$before"
    local t0=$EPOCHREALTIME load
    load=$(bench_load "$name" "$meters" "$rate" "$seconds") || die "load generator failed"
    local published achieved end_ms drain lag
    published=$(jq -r .published <<<"$load")
    achieved=$(jq -r .achieved_rate <<<"$load")
    end_ms=$(jq -r .publish_end_unix_ms <<<"$load")
    # psql and libpq buffer up to ~16 KB of input before the server sees it, so the last
    # ~100 rows show only at the end of input: wait for all but those, then end it.
    drain=$(wait_count "$((published > 100 ? published - 100 : 0))" "$DRAIN" "$end_ms" copied)
    kill "$SAMPLER_PID" 2>/dev/null || true
    lag=$((published - $(value_at "$samples" "$end_ms")))
    local t1=$EPOCHREALTIME rows
    cpu_snapshot "$after" # (before the COPY's backend and the pipe's processes exit)
    # End of input: mosquitto_sub goes, psql commits the COPY.
    pkill -TERM -x mosquitto_sub -s "$pipe" 2>/dev/null || kill -TERM -- "-$pipe" 2>/dev/null || true
    for _ in $(seq 1 600); do pid_alive "$pipe" || break; sleep 0.1; done
    rows=$(row_count "$url" naive_readings)
    local cpu ok=false
    cpu=$(cpu_json "$before" "$after" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')")
    sustained "$rate" "$achieved" "$published" "$rows" "$drain" && ok=true
    result --arg stepname "$label" --argjson meters "$meters" --argjson rate "$rate" --argjson seconds "$seconds" \
        --argjson load "$load" --argjson rows "$rows" --argjson lag "$lag" --argjson drain "$drain" \
        --argjson cpu "$cpu" --argjson ok "$ok" \
        '{load: "naive", step: $stepname, meters: $meters, rate: $rate, seconds: $seconds,
          published: $load.published, achieved: $load.achieved_rate, rows: $rows,
          lost: ($load.published - $rows), lag_at_end: $lag, drain_s: $drain, cpu: $cpu, sustained: $ok}'
    log "  published $published ($achieved/s), committed $rows, backlog at end $lag: sustained=$ok"
    drop_db "$db"
    [[ $ok == true ]]
}

# ladder <step-fn> <label> <meters> [keep]: doubles through RATES until a rate is not
# sustained, tries once halfway between; sets LADDER_BEST (0 if none). With "keep", the
# database of the best step stays (KEEP_DB) for the COPY peer.
ladder() {
    local fn=$1 label=$2 meters=$3 keep=${4:-} best=0 bad=0 rate kept=""
    for rate in $RATES; do
        KEEP_DB=""
        if "$fn" "$label" "$meters" "$rate" "$STEP" $keep; then
            best=$rate
            [[ -n $kept ]] && drop_db "$kept"
            kept=$KEEP_DB
        else
            bad=$rate
            [[ -n $KEEP_DB ]] && drop_db "$KEEP_DB"
            break
        fi
    done
    if ((bad > 0 && best > 0)); then
        rate=$(((best + bad) / 2))
        if ((rate > best && rate < bad)); then
            KEEP_DB=""
            if "$fn" "$label" "$meters" "$rate" "$STEP" $keep; then
                best=$rate
                [[ -n $kept ]] && drop_db "$kept"
                kept=$KEEP_DB
            elif [[ -n $KEEP_DB ]]; then
                drop_db "$KEEP_DB"
            fi
        fi
    fi
    KEEP_DB=$kept
    LADDER_BEST=$best
    LADDER_CAPPED=$((bad == 0 ? 1 : 0)) # every rate held: the figure is a lower bound
}

# confirm <step-fn> <meters> <rate> [keep]: holds the rate for DURATION, stepping down by
# a quarter until it holds (4 tries); sets CONFIRMED (0 if none). When the ladder's steps
# were already DURATION long, the ladder's result stands.
confirm() {
    local fn=$1 meters=$2 rate=$3 keep=${4:-} tries=0
    CONFIRMED=0
    if ((STEP >= DURATION)); then
        CONFIRMED=$rate
        return
    fi
    [[ -n ${KEEP_DB:-} ]] && drop_db "$KEEP_DB"
    while ((rate > 0 && tries < 4)); do
        KEEP_DB=""
        if "$fn" sustained "$meters" "$rate" "$DURATION" $keep; then
            CONFIRMED=$rate
            return
        fi
        [[ -n $KEEP_DB ]] && drop_db "$KEEP_DB"
        KEEP_DB=""
        rate=$((rate * 3 / 4))
        tries=$((tries + 1))
    done
}

# --- load 1 with its peers ---------------------------------------------------------------
SUSTAINED_RATE=${SMARTMETER_BENCH_SUSTAINED_RATE:-0}
KEEP_DB=""
load_ingest() {
    ladder ingest_step ladder "$METERS" keep
    local best=$LADDER_BEST
    SUSTAINED_RATE=0
    if ((best > 0)); then
        confirm ingest_step "$METERS" "$best" keep
        SUSTAINED_RATE=$CONFIRMED
    fi
    result --argjson r "$SUSTAINED_RATE" --argjson b "$best" --argjson d "$DURATION" --argjson c "$LADDER_CAPPED" \
        '{load: "ingest_summary", sustained_rate: $r, ladder_best: $b, duration: $d, capped: ($c == 1)}'
    copy_peer
    local peer
    for peer in mosquitto naive; do
        ladder "${peer}_step" ladder "$METERS"
        best=$LADDER_BEST
        CONFIRMED=0
        ((best > 0)) && confirm "${peer}_step" "$METERS" "$best"
        result --arg p "$peer" --argjson r "$CONFIRMED" --argjson b "$best" --argjson d "$DURATION" --argjson c "$LADDER_CAPPED" \
            '{load: ($p + "_summary"), sustained_rate: $r, ladder_best: $b, duration: $d, capped: ($c == 1)}'
    done
}

# --- peer: PostgreSQL COPY of the very rows the pipeline stored ---------------------------
copy_peer() {
    local source=${KEEP_DB:-}
    if [[ -z $source ]]; then
        log "peer COPY: skipped (no sustained ingest run to take the rows from)"
        result '{load: "copy", skipped: "no sustained ingest run"}'
        return
    fi
    local src_url file=$RUN_DIR/readings.copy db=smbench_${RUN_ID}_copy
    src_url=$(pg_url "$source")
    log "peer PostgreSQL COPY: the rows of the sustained ingest run into an empty readings table"
    psql "$src_url" -qc "\\copy (SELECT * FROM readings) TO '$file'"
    # The same schema, keys and indexes (a TimescaleDB hypertable where the server has
    # it): a copy of the pipeline's database with its readings emptied.
    # A template must have no sessions: TimescaleDB's job scheduler (a superuser
    # background worker) reconnects to every database at once, so connections to the
    # source are closed first, then its sessions ended as the superuser.
    psql "$PG_ADMIN_URL" -qAtc "ALTER DATABASE \"$source\" WITH ALLOW_CONNECTIONS false" >/dev/null
    local try
    for try in $(seq 1 60); do # (an autovacuum worker on the source makes it wait)
        postgres_admin_sql -d postgres -tAc "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                                             WHERE datname = '$source'" >/dev/null 2>&1 || true
        psql "$PG_ADMIN_URL" -qAtc "CREATE DATABASE \"$db\" TEMPLATE \"$source\"" >/dev/null 2>&1 && break
        ((try < 60)) || die "could not copy database $source"
        sleep 0.5
    done
    psql "$PG_ADMIN_URL" -qAtc "ALTER DATABASE \"$source\" WITH ALLOW_CONNECTIONS true" >/dev/null
    DATABASES+=("$db")
    psql "$(pg_url "$db")" -qAtc "TRUNCATE readings" >/dev/null
    local rows t0 t1
    rows=$(wc -l <"$file")
    t0=$EPOCHREALTIME
    psql "$(pg_url "$db")" -qc "\\copy readings FROM '$file'"
    t1=$EPOCHREALTIME
    local copied
    copied=$(row_count "$(pg_url "$db")")
    result --argjson rows "$rows" --argjson copied "$copied" \
        --argjson secs "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')" \
        '{load: "copy", rows: $rows, copied: $copied, seconds: $secs, rate: ($copied / $secs)}'
    log "  $copied rows in $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }') s"
    rm -f "$file"
    drop_db "$db"
    drop_db "$source"
    KEEP_DB=""
}

# --- load 2: freshness, and load 3: GraphQL against PostGraphile ---------------------------
graphql_body() { # the "24 hours of hourly energy of one meter" request for query-api
    jq -c -n --arg d "$1" --arg f "$2" --arg t "$3" '{operationName: "HourlyEnergy",
        query: "query HourlyEnergy($d: String!, $f: DateTime!, $t: DateTime!) { hourlyEnergy(deviceId: $d, from: $f, to: $t) { bucketStart energyKwh } }",
        variables: {d: $d, f: $f, t: $t}}'
}
postgraphile_body() { # the same rows from PostGraphile's generated API
    jq -c -n --arg d "$1" --arg day "$2" '{operationName: "HourlyEnergy",
        query: "query HourlyEnergy($d: String!, $day: Date!) { allEnergyHourlies(condition: {deviceId: $d, localDate: $day}, orderBy: BUCKET_START_ASC) { nodes { bucketStart energyMilliWh } } }",
        variables: {d: $d, day: $day}}'
}
post_json() { # post_json <url> <body>
    local auth=()
    [[ -n $GRAPHQL_TOKEN ]] && auth=(-H "Authorization: Bearer $GRAPHQL_TOKEN")
    curl -sS --fail-with-body -H 'Content-Type: application/json' "${auth[@]}" -d "$2" "$1"
}

load_freshness() {
    local rate=$((SUSTAINED_RATE / 2))
    ((rate > 0)) || rate=${SMARTMETER_BENCH_FRESHNESS_RATE:-100}
    local name=freshness
    log "freshness: probe while $METERS meters publish $rate readings/s for ${DURATION}s"
    pipeline_up "$name" query-api
    local before=$RUN_DIR/$name.cpu0 after=$RUN_DIR/$name.cpu1 loadfile=$RUN_DIR/$name.load.json
    cpu_snapshot "$before"
    local t0=$EPOCHREALTIME
    (bench_load "$name" "$METERS" "$rate" "$((DURATION + 2))" >"$loadfile") &
    local load_pid=$!
    track "$load_pid"
    sleep 0.5
    local probe
    probe=$("${LOAD_ENV[@]}" SMARTMETER_BENCH_GRAPHQL_TOKEN="$GRAPHQL_TOKEN" "$BIN/examples/bench_freshness" \
        --graphql-url "http://127.0.0.1:$P_API_PORT/graphql" --device-id "probe-$RUN_ID" \
        --duration-secs "$DURATION" --samples-out "$RUN_DIR/freshness.samples" 2>>"$RUN_DIR/logs/$name-probe.log") ||
        die "freshness probe failed (log: $RUN_DIR/logs/$name-probe.log)"
    wait "$load_pid" || die "load generator failed during the freshness run"
    local t1=$EPOCHREALTIME cpu
    cpu_snapshot "$after"
    cpu=$(cpu_json "$before" "$after" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')")
    result --argjson probe "$probe" --argjson load "$(cat "$loadfile")" --argjson rate "$rate" --argjson cpu "$cpu" \
        '{load: "freshness", rate: $rate, achieved: $load.achieved_rate, meters: $load.meters} + $probe + {cpu: $cpu}'
    log "  p50 $(jq -r .p50_ms <<<"$probe") ms, p99 $(jq -r .p99_ms <<<"$probe") ms over $(jq -r .samples <<<"$probe") readings"
    if selected graphql; then load_graphql "$name"; fi
    pipeline_down "$name"
    drop_db "$P_DB"
}

wrk_run() { # wrk_run <label> <url> <body> [meters prefix] -> JSON
    local label=$1 url=$2 body=$3 meters=${4:-0} prefix=${5:-} out=$RUN_DIR/wrk-$1.txt
    BENCH_BODY=$body BENCH_TOKEN=$GRAPHQL_TOKEN BENCH_METERS=$meters BENCH_METER_PREFIX=$prefix \
        wrk -t1 -c"$WRK_CONNS" -d"${HTTP_SECONDS}s" --latency -s "$INFRA_DIR/bench/graphql.lua" "$url" >"$out" 2>&1 ||
        die "wrk failed against $url ($out)"
    awk '/^bench_/ { v[$1] = $2 } /Non-2xx/ { non2xx = $NF }
         END { printf "{\"requests\":%d,\"rps\":%.1f,\"p50_ms\":%.3f,\"p99_ms\":%.3f,\"errors\":%d}\n",
               v["bench_requests"], v["bench_requests"] / (v["bench_duration_us"] / 1e6),
               v["bench_p50_us"] / 1000, v["bench_p99_us"] / 1000, v["bench_errors"] }' "$out"
}

load_graphql() {
    local name=$1 device=MAC000002 day=2013-01-02
    log "graphql: replaying $device (real London data) with meter-sim for the query's day"
    local replay=$RUN_DIR/logs/graphql-meter-sim.log
    "${LOAD_ENV[@]}" "$BIN/meter-sim" --input "$DATA_DIR/lcl_halfhourly_2013-01_10households.csv" \
        --limit-meters 1 --to 2013-01-03T00:00:00Z --client-id "bench-$RUN_ID-graphql-sim" --no-progress \
        >"$replay" 2>&1 || die "meter-sim failed (log: $replay)"
    local published
    published=$(grep -o 'published [0-9]*' "$replay" | sed -n 1p | grep -o '[0-9]*' || true)
    [[ -n $published ]] || die "meter-sim printed no published count ($replay)"
    count_device() { psql "$P_URL" -qAtc "SELECT count(*) FROM readings WHERE device_id = '$device'"; }
    wait_count "$published" 120 "$(date +%s%3N)" count_device >/dev/null
    local api_url=http://127.0.0.1:$P_API_PORT/graphql
    local ours theirs pg_port pg_pid
    ours=$(post_json "$api_url" "$(graphql_body "$device" "${day}T00:00:00Z" "2013-01-03T00:00:00Z")") ||
        die "query-api refused the benchmark query: $ours"

    # PostGraphile over the same database and tables.
    local pgdir
    pgdir=$(postgraphile_dir)
    pg_port=$(free_port)
    start_bg "$RUN_DIR/logs/postgraphile.log" "$pgdir/node_modules/.bin/postgraphile" -c "$P_URL" -s public \
        -n 127.0.0.1 -p "$pg_port" --disable-query-log -b
    pg_pid=$BG_PID
    echo "$pg_pid" >"$RUN_DIR/postgraphile.pid"
    wait_until 90 "postgraphile" "$RUN_DIR/logs/postgraphile.log" alive_and "$RUN_DIR/postgraphile.pid" port_open "$pg_port"
    local pg_url_http=http://127.0.0.1:$pg_port/graphql
    theirs=$(post_json "$pg_url_http" "$(postgraphile_body "$device" "$day")") || die "PostGraphile refused: $theirs"
    # Same rows: 24 hours, same starts, same energy (kWh * 1e6 = mWh).
    local a b
    a=$(jq -c '[.data.hourlyEnergy[] | [(.bucketStart | fromdateiso8601), (.energyKwh | sub("\\."; "") | tonumber)]]' <<<"$ours")
    b=$(jq -c '[.data.allEnergyHourlies.nodes[] | [(.bucketStart | sub("\\+00:00$"; "Z") | fromdateiso8601), (.energyMilliWh | tonumber)]]' <<<"$theirs")
    [[ $a == "$b" ]] || die "query-api and PostGraphile disagree: $a vs $b"
    local hours
    hours=$(jq length <<<"$a")
    ((hours == 24)) || die "expected 24 hourly rows for $device on $day, got $hours"
    log "  both servers return the same $hours rows; wrk ${HTTP_SECONDS}s, $WRK_CONNS connections, each"

    local before=$RUN_DIR/graphql.cpu0 after=$RUN_DIR/graphql.cpu1 t0 t1 w_ours w_theirs cpu_ours cpu_theirs
    CPU_PIDS=([query-api]=$P_API [postgraphile]=$pg_pid)
    cpu_snapshot "$before"; t0=$EPOCHREALTIME
    profile_later graphql 2 "$((HTTP_SECONDS > 32 ? 30 : (HTTP_SECONDS > 3 ? HTTP_SECONDS - 2 : 1)))"
    w_ours=$(wrk_run query-api "$api_url" "$(graphql_body "$device" "${day}T00:00:00Z" "2013-01-03T00:00:00Z")")
    t1=$EPOCHREALTIME; cpu_snapshot "$after"
    profile_report graphql
    cpu_ours=$(cpu_json "$before" "$after" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')")
    cpu_snapshot "$before"; t0=$EPOCHREALTIME
    w_theirs=$(wrk_run postgraphile "$pg_url_http" "$(postgraphile_body "$device" "$day")")
    t1=$EPOCHREALTIME; cpu_snapshot "$after"
    cpu_theirs=$(cpu_json "$before" "$after" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')")
    local rss_api rss_pg
    rss_api=$(rss_kb "$P_API")
    rss_pg=$(rss_kb "$pg_pid")
    stop_pid_quiet "$pg_pid"
    result --argjson ours "$w_ours" --argjson theirs "$w_theirs" --argjson co "$cpu_ours" --argjson ct "$cpu_theirs" \
        --argjson rows "$hours" --argjson ra "$rss_api" --argjson rp "$rss_pg" --argjson conns "$WRK_CONNS" \
        --argjson secs "$HTTP_SECONDS" \
        '{load: "graphql", rows: $rows, connections: $conns, seconds: $secs,
          query_api: ($ours + {cpu: $co, rss_kb: $ra}), postgraphile: ($theirs + {cpu: $ct, rss_kb: $rp})}'
    log "  query-api $(jq -r .rps <<<"$w_ours") req/s p99 $(jq -r .p99_ms <<<"$w_ours") ms; PostGraphile $(jq -r .rps <<<"$w_theirs") req/s p99 $(jq -r .p99_ms <<<"$w_theirs") ms"
    (($(jq -r .errors <<<"$w_ours") == 0)) || die "query-api answered errors under load ($RUN_DIR/wrk-query-api.txt)"
    (($(jq -r .errors <<<"$w_theirs") == 0)) || die "PostGraphile answered errors under load ($RUN_DIR/wrk-postgraphile.txt)"
}

# PostGraphile 4.14 (Node 20), installed once per lock file outside the repository.
postgraphile_dir() {
    local src=$INFRA_DIR/bench/postgraphile hash dir
    hash=$(cat "$src/package.json" "$src/package-lock.json" | sha256sum | cut -c1-16)
    dir=${SMARTMETER_BENCH_CACHE:-$HOME/.cache/smartmeter-bench}/postgraphile-$hash
    if [[ ! -x $dir/node_modules/.bin/postgraphile ]]; then
        mkdir -p "$dir"
        cp "$src/package.json" "$src/package-lock.json" "$dir/"
        (cd "$dir" && npm ci --no-audit --no-fund --prefer-offline >"$RUN_DIR/logs/npm.log" 2>&1) ||
            die "npm ci for PostGraphile failed (log: $RUN_DIR/logs/npm.log)"
    fi
    echo "$dir"
}

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
hwm_kb() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

# --- load 5: memory with many active meters ---------------------------------------------------
load_memory() {
    local rate=${SMARTMETER_BENCH_MEMORY_RATE:-$((SUSTAINED_RATE > 0 ? SUSTAINED_RATE : 1000))}
    local total=$((MEM_METERS * MEM_PER_METER))
    local seconds
    seconds=$(awk -v t="$total" -v r="$rate" 'BEGIN { printf "%.1f", t / r }')
    local name=memory
    log "memory: $MEM_METERS meters, $MEM_PER_METER readings each, at $rate readings/s (~${seconds}s)"
    pipeline_up "$name" query-api
    local rss_proc0 rss_api0
    rss_proc0=$(rss_kb "$P_PROCESSOR"); rss_api0=$(rss_kb "$P_API")
    local load published active drain
    load=$(bench_load "$name" "$MEM_METERS" "$rate" "$seconds" --connections 8) || die "load generator failed"
    published=$(jq -r .published <<<"$load")
    # Many new meters per batch are slow to store (see BENCHMARKS.md): a longer wait.
    drain=$(wait_count "$published" "$((DRAIN * 3))" "$(jq -r .publish_end_unix_ms <<<"$load")" stored_count)
    active=$(psql "$P_URL" -qAtc "SELECT count(*) FROM devices WHERE readings_total > 0")
    # query-api serving the fleet: random meters, one day each.
    local w
    w=$(wrk_run memory-query-api "http://127.0.0.1:$P_API_PORT/graphql" \
        "$(graphql_body "@METER@" "2013-01-01T00:00:00Z" "2013-01-02T00:00:00Z")" "$MEM_METERS" m-)
    local stored
    stored=$(stored_count)
    result --argjson meters "$MEM_METERS" --argjson active "$active" --argjson published "$published" \
        --argjson stored "$stored" --argjson drain "$drain" --argjson wrk "$w" \
        --argjson p0 "$rss_proc0" --argjson p1 "$(rss_kb "$P_PROCESSOR")" --argjson ph "$(hwm_kb "$P_PROCESSOR")" \
        --argjson a0 "$rss_api0" --argjson a1 "$(rss_kb "$P_API")" --argjson ah "$(hwm_kb "$P_API")" \
        --argjson b1 "$(rss_kb "$P_BRIDGE")" --argjson rate "$rate" \
        '{load: "memory", meters: $meters, active: $active, rate: $rate, published: $published, stored: $stored,
          drain_s: $drain, processor_rss_kb_start: $p0, processor_rss_kb: $p1, processor_hwm_kb: $ph,
          query_api_rss_kb_start: $a0, query_api_rss_kb: $a1, query_api_hwm_kb: $ah, bridge_rss_kb: $b1,
          wrk: $wrk}'
    log "  $active meters active; processor RSS $(($(rss_kb "$P_PROCESSOR") / 1024)) MB, query-api RSS $(($(rss_kb "$P_API") / 1024)) MB"
    ((stored == published)) || warn "memory run: $published published but only $stored stored after ${drain}s"
    pipeline_down "$name"
    drop_db "$P_DB"
}

# --- load 4: billing (the billing worker's own benchmark) ---------------------------------------
BILLING_BENCH_SRC=$REPO_DIR/billing-worker/examples/replay_bench.rs
billing_run() { # billing_run <meters> <months>
    local meters=$1 months=$2 out=$RUN_DIR/billing-$1x$2.txt
    log "billing: replay_bench $meters meters x $months months"
    local t0=$EPOCHREALTIME
    "$BIN/examples/replay_bench" "$meters" "$months" >"$out" 2>"$RUN_DIR/logs/billing-$meters.log" ||
        die "replay_bench failed (log: $RUN_DIR/logs/billing-$meters.log)"
    local t1=$EPOCHREALTIME
    local first worker core
    first=$(grep -m1 '^replay (first' "$out" || true)
    worker=$(grep -oE 'price as the worker does +[0-9.]+' "$out" | grep -oE '[0-9.]+$' | sed -n 1p || true)
    core=$(grep -oE 'core arithmetic alone +[0-9.]+' "$out" | grep -oE '[0-9.]+$' | sed -n 1p || true)
    [[ -n $first && -n $worker ]] || die "could not read replay_bench's figures ($out)"
    local dm secs rate per_core
    dm=$(sed -E 's/.* ([0-9]+) device-months in.*/\1/' <<<"$first")
    secs=$(sed -E 's/.* device-months in ([0-9.]+) s.*/\1/' <<<"$first")
    rate=$(sed -E 's/.* = ([0-9.]+) device-months\/s.*/\1/' <<<"$first")
    per_core=$(sed -E 's/.*\(([0-9.]+) per core\).*/\1/' <<<"$first")
    result --argjson meters "$meters" --argjson months "$months" --argjson dm "$dm" --argjson secs "$secs" \
        --argjson rate "$rate" --argjson per_core "$per_core" --argjson worker "$worker" --argjson core "${core:-0}" \
        --arg output "$(cat "$out")" --argjson wall "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')" \
        '{load: "billing", meters: $meters, months: $months, device_months: $dm, replay_s: $secs,
          replay_rate: $rate, replay_per_core: $per_core, worker_pricing_per_core: $worker,
          core_pricing_per_core: $core, wall_s: $wall, output: $output}'
    log "  replay of $dm device-months in $secs s = $rate/s ($per_core per core); pricing $worker/s on one core"
}
load_billing() {
    if [[ ! -f $BILLING_BENCH_SRC ]]; then
        log "billing: $BILLING_BENCH_SRC is not there; skipped"
        result --arg p "$BILLING_BENCH_SRC" '{load: "billing", skipped: ("missing " + $p)}'
        return
    fi
    local meters
    for meters in $BILL_METERS; do billing_run "$meters" "$BILL_MONTHS"; done
}

# --- load 6: cost growth ------------------------------------------------------------------
load_growth() {
    local factor meters best
    for factor in $GROWTH; do
        ((factor == 1)) && selected ingest && continue # the 1x ladder is load 1's
        meters=$((METERS * factor))
        ladder ingest_step "growth_x$factor" "$meters"
        best=$LADDER_BEST
        result --argjson f "$factor" --argjson m "$meters" --argjson r "$best" --argjson c "$LADDER_CAPPED" \
            '{load: "growth_summary", factor: $f, meters: $m, ladder_best: $r, capped: ($c == 1)}'
    done
}

# --- the report ------------------------------------------------------------------------------
write_report() {
    local tmp=$OUT.tmp
    "$INFRA_DIR/bench/report.sh" "$RESULTS" "$RUN_DIR" "$MODE" >"$tmp"
    mv "$tmp" "$OUT"
    log "wrote $OUT"
}

# =========================================================================================
log "mode $MODE; run $RUN_ID; results in $RUN_DIR"
{
    echo "mode=$MODE duration=$DURATION step=$STEP http_seconds=$HTTP_SECONDS rates='$RATES' meters=$METERS"
    echo "growth='$GROWTH' memory_meters=$MEM_METERS memory_per_meter=$MEM_PER_METER billing_meters='$BILL_METERS'"
    echo "billing_months=$BILL_MONTHS wrk_connections=$WRK_CONNS drain=$DRAIN profile=$PROFILE lag_seconds=$LAG_SECONDS"
    echo "only=$ONLY"
} >"$RUN_DIR/settings.txt"
{
    echo "started_utc=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "commit=$(git -C "$REPO_DIR" rev-parse --short HEAD 2>/dev/null)$(git -C "$REPO_DIR" diff --quiet 2>/dev/null || echo '+dirty')"
    echo "kernel=$(uname -srm)"
    echo "loadavg_start=$(cut -d' ' -f1-3 /proc/loadavg)"
} >"$RUN_DIR/machine.txt"
lscpu >"$RUN_DIR/lscpu.txt"
free -h >"$RUN_DIR/free.txt"

if ! "$INFRA_DIR/up.sh" all >"$RUN_DIR/logs/up.log" 2>&1; then
    tail -n 20 "$RUN_DIR/logs/up.log" >&2
    # The services may be up and serving although up.sh's setup steps failed (e.g. a
    # library installed after the database started); the benchmark needs only them.
    "$INFRA_DIR/status.sh" >&2 || die "infra/up.sh failed and the services are not all running"
    warn "infra/up.sh failed (log: $RUN_DIR/logs/up.log) but every service is running; going on"
fi
ensure_packages wrk jq curl coreutils
[[ -r $DATA_DIR/lcl_halfhourly_2013-01_10households.csv ]] || die "real data not found in $DATA_DIR (set SMARTMETER_DATA_DIR)"

cargo_profile=(--release)
[[ $PROFILE == debug ]] && cargo_profile=()
build_args=()
if selected ingest || selected freshness || selected graphql || selected memory || selected growth; then
    build_args+=(-p smartmeter-bridge --bin bridge -p smartmeter-processor --bin processor --example bench_topics
        -p meter-simulator --example bench_load)
fi
if selected freshness || selected graphql || selected memory; then
    build_args+=(-p smartmeter-query-api --bin query-api)
fi
selected freshness && build_args+=(--example bench_freshness)
selected graphql && build_args+=(-p meter-simulator --bin meter-sim)
selected billing && [[ -f $BILLING_BENCH_SRC ]] && build_args+=(-p smartmeter-billing-worker --example replay_bench)
# After `cargo test --workspace` (CI), building every bin and example of the workspace
# in the dev profile reuses its artifacts; a narrower selection could unify features
# differently and rebuild.
[[ $PROFILE == debug ]] && build_args=(--workspace --bins --examples)
if [[ $BUILD == 1 ]]; then
    log "build: cargo build ${cargo_profile[*]} ${build_args[*]}"
    (cd "$REPO_DIR" && cargo build "${cargo_profile[@]}" --locked --quiet "${build_args[@]}") >"$RUN_DIR/logs/build.log" 2>&1 ||
        { tail -n 30 "$RUN_DIR/logs/build.log" >&2; die "build failed (log: $RUN_DIR/logs/build.log)"; }
else
    log "build: skipped (SMARTMETER_BENCH_BUILD=0); binaries from $BIN"
fi

BENCH_MQTT_PORT=${SMARTMETER_BENCH_MQTT_PORT:-$(free_port)}
mqtt_bridge_auth=(-h 127.0.0.1 -p "$BENCH_MQTT_PORT" -u "$SMARTMETER_MQTT_BRIDGE_USER" -P "$SMARTMETER_MQTT_BRIDGE_PASSWORD")
LOAD_ENV=(env SMARTMETER_MQTT_PORT="$BENCH_MQTT_PORT" SMARTMETER_MQTT_HOST=127.0.0.1)
bench_broker up >"$RUN_DIR/logs/bench-broker.log" 2>&1 || { cat "$RUN_DIR/logs/bench-broker.log" >&2; die "bench broker did not start"; }

selected ingest && load_ingest
selected freshness && load_freshness
if selected graphql && ! selected freshness; then
    pipeline_up graphql query-api
    load_graphql graphql
    pipeline_down graphql
    drop_db "$P_DB"
fi
selected billing && load_billing
selected memory && load_memory
selected growth && load_growth

echo "loadavg_end=$(cut -d' ' -f1-3 /proc/loadavg)" >>"$RUN_DIR/machine.txt"
echo "finished_utc=$(date -u +%Y-%m-%dT%H:%M:%SZ)" >>"$RUN_DIR/machine.txt"
write_report

if [[ $MODE == smoke ]]; then
    # The harness works when every selected load left a result with real figures.
    check() { jq -e -s "$1" "$RESULTS" >/dev/null || die "smoke: $2 ($RESULTS)"; }
    selected ingest && check 'any(.[]; .load == "ingest" and .rows > 0 and .lost == 0)' "no ingest run stored its readings"
    selected ingest && check 'any(.[]; .load == "mosquitto" and .rows > 0 and .lost == 0)' "the Mosquitto peer received nothing complete"
    selected ingest && check 'any(.[]; .load == "naive" and .rows > 0 and .lost == 0)' "the naive pipe committed nothing complete"
    selected ingest && check 'any(.[]; .load == "copy" and .copied > 0)' "the COPY peer copied nothing"
    selected freshness && check 'any(.[]; .load == "freshness" and .samples > 0 and .timeouts == 0)' "no freshness sample"
    selected graphql && check 'any(.[]; .load == "graphql" and .query_api.requests > 0 and .postgraphile.requests > 0)' "no GraphQL figures"
    selected billing && check 'any(.[]; .load == "billing" and ((.device_months // 0) > 0 or .skipped))' "no billing figures"
    selected memory && check 'any(.[]; .load == "memory" and .active == .meters)' "not every meter active in the memory run"
    log "smoke: every step produced figures ($OUT)"
fi
