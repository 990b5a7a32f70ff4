# smartmeter's own services (bridge, processor, query-api), started from release
# binaries by infra/demo.sh and stopped by infra/down.sh. Not meant to be run.
# shellcheck shell=bash

REPO_DIR=$(cd "$INFRA_DIR/.." && pwd)
APP_BIN_DIR=${SMARTMETER_BIN_DIR:-$REPO_DIR/target/release}
# Stop order: readers before writers.
APPS=(query-api billing-worker processor bridge)

app_pid() { pid_from_file "$RUN/$1.pid" "${1:0:15}"; }

# app_up <name> <port> <health path> [args...]: starts target/release/<name> unless it
# runs already, then waits until its /health answers 200.
app_up() {
    local name=$1 port=$2 health=$3 pid
    shift 3
    local log=$LOGS/$name.log pidfile=$RUN/$name.pid
    mkdir -p "$LOGS" "$RUN"
    if pid=$(app_pid "$name"); then
        say "$name: already running (pid $pid)"
    else
        [[ -x $APP_BIN_DIR/$name ]] || die "$APP_BIN_DIR/$name is missing; build it first"
        say "$name: starting"
        setsid "$APP_BIN_DIR/$name" "$@" >>"$log" 2>&1 </dev/null &
        echo $! >"$pidfile"
    fi
    wait_until 120 "$name" "$log" alive_and "$pidfile" http_ok "$port" "$health"
    say "$name: ready (log: $log)"
}

app_down() {
    local name=$1 pid
    if pid=$(app_pid "$name"); then
        say "$name: stopping (pid $pid)"
        stop_pid "$name" "$pid" 30
    fi
    rm -f "$RUN/$name.pid"
}

apps_down() {
    local app
    for app in "${APPS[@]}"; do
        app_down "$app"
    done
}
