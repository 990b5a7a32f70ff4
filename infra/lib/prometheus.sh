# Prometheus: our own process on 127.0.0.1:9090 with infra/prometheus/prometheus.yml
# (not the Debian system service).
# shellcheck shell=bash

PROM_DIR=$STATE/prometheus
PROM_DATA=$PROM_DIR/data
PROM_CONFIG=$INFRA_DIR/prometheus/prometheus.yml
PROM_PID=$RUN/prometheus.pid
PROM_LOG=$LOGS/prometheus.log
PROM_PORT=9090
# Runs as this user when started as root (it exists once the Debian package is installed).
PROM_RUN_USER=prometheus

prometheus_packages() { echo prometheus; }

prometheus_pid() { pid_from_file "$PROM_PID" prometheus; }

prometheus_ready() { http_ok "$PROM_PORT" /-/ready; }

prometheus_up() {
    local pid
    mkdir -p "$PROM_DATA"
    if pid=$(prometheus_pid); then
        say "prometheus: already running (pid $pid, 127.0.0.1:$PROM_PORT)"
    else
        reclaim_port "$PROM_PORT" prometheus
        promtool check config "$PROM_CONFIG" >"$LOGS/promtool.log" 2>&1 ||
            { cat "$LOGS/promtool.log" >&2; die "invalid $PROM_CONFIG"; }
        local -a as_user=()
        if ((EUID == 0)) && id "$PROM_RUN_USER" >/dev/null 2>&1; then
            chown -R "$PROM_RUN_USER:" "$PROM_DIR"
            ensure_reachable "$PROM_RUN_USER" "$PROM_DIR"
            ensure_reachable "$PROM_RUN_USER" "$(dirname "$PROM_CONFIG")"
            as_user=(setpriv --reuid="$PROM_RUN_USER" --regid="$PROM_RUN_USER" --init-groups)
        fi
        say "prometheus: starting on 127.0.0.1:$PROM_PORT"
        setsid "${as_user[@]}" prometheus \
            --config.file="$PROM_CONFIG" \
            --storage.tsdb.path="$PROM_DATA" \
            --storage.tsdb.retention.time=15d \
            --web.listen-address=127.0.0.1:$PROM_PORT \
            --web.console.templates=/etc/prometheus/consoles \
            --web.console.libraries=/etc/prometheus/console_libraries \
            >>"$PROM_LOG" 2>&1 </dev/null &
        echo $! >"$PROM_PID"
    fi
    wait_until 60 prometheus "$PROM_LOG" alive_and "$PROM_PID" prometheus_ready
    say "prometheus: ready ($SMARTMETER_PROMETHEUS_URL)"
}

prometheus_down() {
    local pid
    if pid=$(prometheus_pid); then
        say "prometheus: stopping (pid $pid)"
        stop_pid prometheus "$pid" 30
        rm -f "$PROM_PID"
        say "prometheus: stopped"
    else
        rm -f "$PROM_PID"
        say "prometheus: not running"
    fi
}

prometheus_status() {
    local pid
    if pid=$(prometheus_pid); then
        if prometheus_ready; then
            printf '%-11s running  pid %-7s 127.0.0.1:%s\n' prometheus "$pid" "$PROM_PORT"
            return 0
        fi
        printf '%-11s starting pid %-7s 127.0.0.1:%s (not ready)\n' prometheus "$pid" "$PROM_PORT"
        return 1
    fi
    printf '%-11s stopped\n' prometheus
    return 1
}
