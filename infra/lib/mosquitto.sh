# Mosquitto: our own broker from infra/mosquitto/, on 127.0.0.1 only, with accounts and ACL.
# shellcheck shell=bash

MQTT_DIR=$STATE/mosquitto
MQTT_CONF=$MQTT_DIR/mosquitto.conf
MQTT_PASSWD=$MQTT_DIR/passwd
MQTT_PID=$RUN/mosquitto.pid
MQTT_LOG=$LOGS/mosquitto.log
MQTT_PORT=$SMARTMETER_MQTT_PORT
# Account for the readiness round trip; its password is generated into the state dir.
MQTT_HEALTH_USER=smartmeter-healthcheck
MQTT_HEALTH_SECRET=$MQTT_DIR/healthcheck.password
MQTT_HEALTH_TOPIC=smartmeter-infra/healthcheck
# Mosquitto drops root privileges to this user.
MQTT_RUN_USER=mosquitto

mosquitto_packages() { echo mosquitto mosquitto-clients; }

mosquitto_pid() { pid_from_file "$MQTT_PID" mosquitto; }

# Publishes a fresh retained value and reads it back: auth, ACL and delivery all work.
mosquitto_ready() {
    local password nonce got
    password=$(<"$MQTT_HEALTH_SECRET")
    nonce="ready-$$-$RANDOM"
    mosquitto_pub -h 127.0.0.1 -p "$MQTT_PORT" -u "$MQTT_HEALTH_USER" -P "$password" \
        -q 1 -r -t "$MQTT_HEALTH_TOPIC" -m "$nonce" || return 1
    got=$(mosquitto_sub -h 127.0.0.1 -p "$MQTT_PORT" -u "$MQTT_HEALTH_USER" -P "$password" \
        -q 1 -C 1 -W 5 -t "$MQTT_HEALTH_TOPIC") || return 1
    [[ $got == "$nonce" ]]
}

# Sets (adds or changes) one account in the password file.
mosquitto_set_password() { mosquitto_passwd -b "$MQTT_PASSWD" "$1" "$2" >/dev/null; }

# Config, ACL and password file in $STATE/mosquitto, readable by the broker's user only.
mosquitto_write_config() {
    local run_user=root
    if ((EUID == 0)); then
        run_user=$MQTT_RUN_USER
    else
        run_user=$(id -un)
    fi
    mkdir -p "$MQTT_DIR/data"
    render "$INFRA_DIR/mosquitto/mosquitto.conf.template" "$MQTT_CONF" \
        RUN_USER="$run_user" STATE_DIR="$STATE" MQTT_PORT="$MQTT_PORT"
    render "$INFRA_DIR/mosquitto/acl" "$MQTT_DIR/acl" \
        BRIDGE_USER="$SMARTMETER_MQTT_BRIDGE_USER" \
        SIMULATOR_USER="$SMARTMETER_MQTT_SIMULATOR_USER" \
        HEALTHCHECK_USER="$MQTT_HEALTH_USER"
    [[ -s $MQTT_HEALTH_SECRET ]] ||
        (umask 077 && head -c 24 /dev/urandom | base64 | tr -d '/+=' >"$MQTT_HEALTH_SECRET")
    # Meter accounts added by mqtt-add-meter.sh stay; the service accounts follow env.sh.
    [[ -f $MQTT_PASSWD ]] || (umask 077 && : >"$MQTT_PASSWD")
    mosquitto_set_password "$SMARTMETER_MQTT_BRIDGE_USER" "$SMARTMETER_MQTT_BRIDGE_PASSWORD"
    mosquitto_set_password "$SMARTMETER_MQTT_SIMULATOR_USER" "$SMARTMETER_MQTT_SIMULATOR_PASSWORD"
    mosquitto_set_password "$MQTT_HEALTH_USER" "$(<"$MQTT_HEALTH_SECRET")"
    chmod 700 "$MQTT_DIR"
    chmod 600 "$MQTT_PASSWD" "$MQTT_DIR/acl" "$MQTT_CONF"
    if ((EUID == 0)); then
        chown -R "$MQTT_RUN_USER:" "$MQTT_DIR"
        chown root: "$MQTT_HEALTH_SECRET"
        ensure_reachable "$MQTT_RUN_USER" "$MQTT_DIR"
    fi
}

mosquitto_up() {
    local pid
    if pid=$(mosquitto_pid); then
        say "mosquitto: already running (pid $pid, 127.0.0.1:$MQTT_PORT)"
    else
        reclaim_port "$MQTT_PORT" mosquitto
        mosquitto_write_config
        say "mosquitto: starting on 127.0.0.1:$MQTT_PORT"
        setsid mosquitto -c "$MQTT_CONF" >>"$MQTT_LOG" 2>&1 </dev/null &
        echo $! >"$MQTT_PID"
        wait_until 15 "mosquitto port $MQTT_PORT" "$MQTT_LOG" alive_and "$MQTT_PID" port_open "$MQTT_PORT"
    fi
    wait_until 20 "mosquitto round trip" "$MQTT_LOG" alive_and "$MQTT_PID" mosquitto_ready
    say "mosquitto: ready (mqtt://127.0.0.1:$MQTT_PORT, publish/subscribe round trip ok)"
}

# Re-reads the password file and ACL (SIGHUP) without dropping sessions.
mosquitto_reload() {
    local pid
    pid=$(mosquitto_pid) || return 0
    kill -HUP "$pid"
}

mosquitto_down() {
    local pid
    if pid=$(mosquitto_pid); then
        say "mosquitto: stopping (pid $pid)"
        # SIGTERM saves the persistence file (queued QoS 1 messages) before exiting.
        stop_pid mosquitto "$pid" 30
        rm -f "$MQTT_PID"
        say "mosquitto: stopped"
    else
        rm -f "$MQTT_PID"
        say "mosquitto: not running"
    fi
}

mosquitto_status() {
    local pid
    if pid=$(mosquitto_pid); then
        if mosquitto_ready 2>/dev/null; then
            printf '%-11s running  pid %-7s 127.0.0.1:%s\n' mosquitto "$pid" "$MQTT_PORT"
            return 0
        fi
        printf '%-11s starting pid %-7s 127.0.0.1:%s (round trip fails)\n' mosquitto "$pid" "$MQTT_PORT"
        return 1
    fi
    printf '%-11s stopped\n' mosquitto
    return 1
}

# A broker of one's own beside the shared one: this Mosquitto with this config, ACL and
# accounts (env.sh's), listening on <port>, with its config, persistence, log and pid
# under <state dir> (up.sh and down.sh run with that state directory and port). For
# benchmarks and test stacks that must neither see other people's messages nor leave
# theirs (retained status messages, queued sessions) on the shared broker.
#   mosquitto_private up <state dir> <port>   start it; returns once a round trip works
#   mosquitto_private down <state dir>        stop it (the state directory stays)
#   mosquitto_private pid <state dir>         its pid, when it runs
# A port that is already taken is refused (up.sh would stop a Mosquitto found there).
mosquitto_private() {
    local action=${1:-} dir=${2:-} port=${3:-}
    [[ -n $dir ]] || die "mosquitto_private $action: a state directory is needed"
    case $action in
        up)
            [[ $port =~ ^[0-9]+$ ]] || die "mosquitto_private up: a port is needed"
            port_open "$port" && die "mosquitto_private up: port $port is in use"
            SMARTMETER_STATE_DIR=$dir SMARTMETER_MQTT_PORT=$port "$INFRA_DIR/up.sh" mosquitto
            ;;
        down) SMARTMETER_STATE_DIR=$dir "$INFRA_DIR/down.sh" mosquitto ;;
        pid) pid_from_file "$dir/run/mosquitto.pid" mosquitto ;;
        *) die "mosquitto_private: up, down or pid, not '$action'" ;;
    esac
}
