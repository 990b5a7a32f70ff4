# Shared by infra/up.sh, down.sh, status.sh and mqtt-add-meter.sh. Not meant to be run.
# shellcheck shell=bash

INFRA_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=infra/env.sh
. "$INFRA_DIR/env.sh"

mkdir -p "$SMARTMETER_STATE_DIR"
STATE=$(cd "$SMARTMETER_STATE_DIR" && pwd)
LOGS=$STATE/logs
# shellcheck disable=SC2034 # used by lib/*.sh
RUN=$STATE/run

ALL_SERVICES=(postgres mosquitto kafka prometheus)

say() { printf '%s\n' "$*"; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# The services named by the first argument of up.sh/down.sh: "all" or one name.
services_for() {
    local arg=${1:-all} s
    if [[ $arg == all ]]; then
        printf '%s\n' "${ALL_SERVICES[@]}"
        return
    fi
    for s in "${ALL_SERVICES[@]}"; do
        if [[ $s == "$arg" ]]; then
            echo "$s"
            return
        fi
    done
    die "unknown service '$arg' (expected: all ${ALL_SERVICES[*]})"
}

# --- processes and ports ------------------------------------------------------------

# True when something accepts TCP connections on 127.0.0.1:<port>.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# The pid of the process listening on <port>, if it can be seen (needs root for others').
port_owner() { ss -Hltnp "sport = :$1" 2>/dev/null | grep -o 'pid=[0-9]*' | head -n 1 | cut -d= -f2; }

# True while process <pid> exists and is not a zombie waiting to be reaped.
pid_alive() {
    [[ $1 =~ ^[0-9]+$ && -r /proc/$1/status ]] || return 1
    ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null
}

# Prints the pid in <pidfile> when that process is alive and its command is <comm>.
pid_from_file() {
    local file=$1 comm=$2 pid
    [[ -s $file ]] || return 1
    read -r pid <"$file" || return 1
    pid_alive "$pid" || return 1
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$comm" ]] || return 1
    echo "$pid"
}

# HTTP GET on 127.0.0.1:<port><path> answers 200 (no curl needed).
http_ok() {
    (
        exec 3<>"/dev/tcp/127.0.0.1/$1"
        printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' "$2" >&3
        head -n 1 <&3 | grep -q ' 200 '
    ) 2>/dev/null
}

# wait_until <seconds> <what> <logfile> <command...>: retry the command until it succeeds.
# Exit status 99 from the command means "gave up for good" (see alive_and).
wait_until() {
    local timeout=$1 what=$2 log=$3
    shift 3
    local deadline=$((SECONDS + timeout)) rc
    while true; do
        rc=0
        "$@" >/dev/null 2>&1 || rc=$?
        ((rc == 0)) && return 0
        if ((rc == 99 || SECONDS >= deadline)); then
            [[ -f $log ]] && tail -n 20 "$log" >&2
            ((rc == 99)) && die "$what: the process exited (log: $log)"
            die "$what not ready after ${timeout}s (log: $log)"
        fi
        sleep 0.5
    done
}

# alive_and <pidfile> <command...>: 99 when the process of <pidfile> is gone, else the
# command's status. (It checks the pid only: just after the launch the command name
# may still be that of setsid.)
alive_and() {
    local pidfile=$1 pid
    shift
    read -r pid <"$pidfile" 2>/dev/null && pid_alive "$pid" || return 99
    "$@"
}

# stop_pid <name> <pid> <seconds>: SIGTERM, wait, then SIGKILL.
stop_pid() {
    local name=$1 pid=$2 timeout=$3
    kill -TERM "$pid" 2>/dev/null || return 0
    local deadline=$((SECONDS + timeout))
    while pid_alive "$pid"; do
        if ((SECONDS >= deadline)); then
            warn "$name (pid $pid) did not stop in ${timeout}s; killing it"
            kill -KILL "$pid" 2>/dev/null || true
            sleep 0.5
            break
        fi
        sleep 0.2
    done
}

# A Debian package may have started its own instance (e.g. mosquitto on 1883, prometheus
# on 9090). reclaim_port <port> <comm>: stop it when it is that program; fail otherwise.
reclaim_port() {
    local port=$1 comm=$2 pid owner
    port_open "$port" || return 0
    pid=$(port_owner "$port")
    [[ -n $pid ]] || die "port $port is in use by a process this user cannot see; free it and retry"
    owner=$(cat "/proc/$pid/comm" 2>/dev/null || echo unknown)
    [[ $owner == "$comm" ]] || die "port $port is in use by '$owner' (pid $pid); free it and retry"
    say "$comm: a system $comm (pid $pid, not ours) holds port $port; stopping it"
    if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null; then
        as_root systemctl stop "$comm" >/dev/null 2>&1 || true
    elif [[ -x /etc/init.d/$comm ]]; then
        as_root "/etc/init.d/$comm" stop >/dev/null 2>&1 || true
    fi
    if pid_alive "$pid"; then
        stop_pid "system $comm" "$pid" 10
    fi
    wait_until 10 "port $port to be free" /dev/null bash -c "! (exec 3<>/dev/tcp/127.0.0.1/$port)"
}

# --- users and packages -------------------------------------------------------------

as_root() {
    if ((EUID == 0)); then
        "$@"
    elif command -v sudo >/dev/null; then
        sudo "$@"
    else
        die "root is needed for: $*"
    fi
}

pkg_installed() { [[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) == "install ok installed" ]]; }

# Installs the packages that are missing: one apt-get update, one apt-get install.
ensure_packages() {
    local missing=() p
    for p in "$@"; do
        pkg_installed "$p" || missing+=("$p")
    done
    ((${#missing[@]})) || return 0
    command -v apt-get >/dev/null || die "missing packages (${missing[*]}) and no apt-get to install them"
    mkdir -p "$LOGS"
    say "apt: installing ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >>"$LOGS/apt.log" 2>&1 ||
        { tail -n 20 "$LOGS/apt.log" >&2; die "apt-get update failed (log: $LOGS/apt.log)"; }
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" \
        >>"$LOGS/apt.log" 2>&1 ||
        { tail -n 20 "$LOGS/apt.log" >&2; die "apt-get install failed (log: $LOGS/apt.log)"; }
}

# Services that must not run as root get their own OS user; this makes sure that user
# can walk down to <dir> (search permission only, o+x) on every directory above it.
ensure_reachable() {
    local user=$1 dir=$2 path="" part
    ((EUID == 0)) || return 0
    local -a parts
    IFS=/ read -ra parts <<<"${dir#/}"
    for part in "${parts[@]}"; do
        [[ -n $part ]] || continue
        path+="/$part"
        [[ -d $path ]] || break
        if ! runuser -u "$user" -- test -x "$path"; then
            chmod o+x "$path"
            say "  made $path searchable (o+x) so the $user user can reach $dir"
        fi
    done
}

# Fills @NAME@ placeholders: render <template> <output> NAME=value...
render() {
    local template=$1 out=$2 kv key value
    shift 2
    local text
    text=$(<"$template")
    for kv in "$@"; do
        key=${kv%%=*}
        value=${kv#*=}
        text=${text//@"$key"@/"$value"}
    done
    printf '%s\n' "$text" >"$out"
    if grep -q '@[A-Z_]\+@' "$out"; then
        die "unfilled placeholder in $out: $(grep -o '@[A-Z_]\+@' "$out" | head -n 1)"
    fi
}
