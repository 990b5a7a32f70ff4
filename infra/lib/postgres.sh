# PostgreSQL 15: a project-owned cluster in $STATE/postgres, on 127.0.0.1 only.
# shellcheck shell=bash

PG_BIN=/usr/lib/postgresql/15/bin
PG_DIR=$STATE/postgres
PG_DATA=$PG_DIR/data
PG_SOCKET_DIR=$PG_DIR/run
PG_PORT=$SMARTMETER_PG_PORT
PG_LOG=$LOGS/postgres.log
# Role and databases the services and tests use (dev-only password, see README).
PG_ROLE=smartmeter
PG_ROLE_PASSWORD=smartmeter
PG_DATABASES=(smartmeter smartmeter_test)

postgres_packages() { echo postgresql-15 postgresql-contrib; }

# Runs a command as the cluster owner: `postgres` when we are root, else ourselves.
as_pg() {
    if ((EUID == 0)); then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

postgres_pid() { pid_from_file "$PG_DATA/postmaster.pid" postgres; }

postgres_ready() { "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT"; }

# psql as the superuser over the cluster's own Unix socket (peer authentication).
postgres_admin_sql() {
    as_pg "$PG_BIN/psql" -h "$PG_SOCKET_DIR" -p "$PG_PORT" -U postgres -X -q -v ON_ERROR_STOP=1 "$@"
}

# SMARTMETER_TIMESCALEDB=off runs a plain PostgreSQL even where the library is
# installed (infra/test.sh uses it to prove both paths give the same results).
postgres_has_timescaledb() {
    [[ ${SMARTMETER_TIMESCALEDB:-auto} == off ]] && return 1
    local libdir
    libdir=$("$PG_BIN/pg_config" --pkglibdir 2>/dev/null || echo /usr/lib/postgresql/15/lib)
    compgen -G "$libdir/timescaledb*.so" >/dev/null
}

# Whether the RUNNING server preloads TimescaleDB (the library may have been installed
# after it started: then the extension waits for the next restart).
postgres_timescaledb_loaded() {
    [[ $(postgres_admin_sql -d postgres -tAc "SHOW shared_preload_libraries") == *timescaledb* ]]
}

postgres_write_config() {
    local preload="''"
    if postgres_has_timescaledb; then
        preload="'timescaledb'"
        say "postgres: timescaledb library found; preloading it"
    fi
    as_pg tee "$PG_DATA/smartmeter.conf" >/dev/null <<EOF
# Written by infra/up.sh on every start; edit infra/lib/postgres.sh, not this file.
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$PG_SOCKET_DIR'
max_connections = 100
shared_buffers = 256MB
effective_cache_size = 1GB
work_mem = 8MB
maintenance_work_mem = 64MB
max_wal_size = 1GB
fsync = on
synchronous_commit = on
timezone = 'UTC'
log_timezone = 'UTC'
log_line_prefix = '%m [%p] %q%u@%d '
shared_preload_libraries = $preload
timescaledb.telemetry_level = off
EOF
    if ! postgres_has_timescaledb; then
        # The timescaledb.* setting is only known once the library is loaded.
        as_pg sed -i '/^timescaledb\./d' "$PG_DATA/smartmeter.conf"
    fi
}

postgres_init() {
    [[ -s $PG_DATA/PG_VERSION ]] && return 0
    say "postgres: initdb $PG_DATA"
    as_pg "$PG_BIN/initdb" -D "$PG_DATA" -U postgres -E UTF8 --locale=C.UTF-8 \
        --auth-local=peer --auth-host=scram-sha-256 >"$LOGS/postgres-initdb.log" 2>&1 ||
        { tail -n 20 "$LOGS/postgres-initdb.log" >&2; die "initdb failed (log: $LOGS/postgres-initdb.log)"; }
    echo "include 'smartmeter.conf'" | as_pg tee -a "$PG_DATA/postgresql.conf" >/dev/null
}

# Role smartmeter and its databases; created when missing, never altered (but for the
# one grant TimescaleDB needs, below).
postgres_provision() {
    if [[ -z $(postgres_admin_sql -d postgres -tAc "SELECT 1 FROM pg_roles WHERE rolname = '$PG_ROLE'") ]]; then
        postgres_admin_sql -d postgres -c "CREATE ROLE $PG_ROLE LOGIN CREATEDB PASSWORD '$PG_ROLE_PASSWORD'"
        say "postgres: created role $PG_ROLE"
    fi
    local db
    for db in "${PG_DATABASES[@]}"; do
        if [[ -z $(postgres_admin_sql -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$db'") ]]; then
            postgres_admin_sql -d postgres -c "CREATE DATABASE $db OWNER $PG_ROLE"
            say "postgres: created database $db"
        fi
        if postgres_timescaledb_loaded; then
            # CREATE EXTENSION timescaledb needs a superuser; the migrations then find it.
            postgres_admin_sql -d "$db" -c "CREATE EXTENSION IF NOT EXISTS timescaledb"
        fi
    done
    if postgres_timescaledb_loaded; then
        # The databases the tests create are copies of template1: with the extension
        # there, they exercise the TimescaleDB path too.
        postgres_admin_sql -d template1 -c "CREATE EXTENSION IF NOT EXISTS timescaledb"
        # Each database then has a TimescaleDB job scheduler connected, a background
        # worker of no role: DROP DATABASE ... WITH (FORCE), which the tests use on
        # their databases, may terminate it only with pg_signal_backend (PostgreSQL 15).
        postgres_admin_sql -d postgres -c "GRANT pg_signal_backend TO $PG_ROLE"
    fi
}

# After a crash (kill -9) the old postmaster may linger as a zombie for a moment; pg_ctl
# would take it for a live server, so wait until it is reaped.
postgres_wait_stale_postmaster() {
    local pid
    [[ -s $PG_DATA/postmaster.pid ]] || return 0
    read -r pid <"$PG_DATA/postmaster.pid" || return 0
    [[ $pid =~ ^[0-9]+$ && -d /proc/$pid ]] || return 0
    say "postgres: waiting for the previous postmaster (pid $pid) to be gone"
    wait_until 30 "old postmaster $pid to exit" "$PG_LOG" bash -c "! [ -d /proc/$pid ]"
}

postgres_up() {
    local pid
    mkdir -p "$PG_DIR" "$PG_SOCKET_DIR"
    touch "$PG_LOG"
    if ((EUID == 0)); then
        chown postgres:postgres "$PG_DIR" "$PG_SOCKET_DIR" "$PG_LOG"
        ensure_reachable postgres "$PG_DIR"
    fi
    postgres_init
    if pid=$(postgres_pid); then
        say "postgres: already running (pid $pid, 127.0.0.1:$PG_PORT)"
    else
        postgres_wait_stale_postmaster
        if port_open "$PG_PORT"; then
            die "port $PG_PORT is in use by another process ($(port_owner "$PG_PORT" || true)); set SMARTMETER_PG_PORT or free it"
        fi
        postgres_write_config
        say "postgres: starting on 127.0.0.1:$PG_PORT"
        as_pg setsid "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -w -t 60 start >/dev/null ||
            { tail -n 20 "$PG_LOG" >&2; die "postgres did not start (log: $PG_LOG)"; }
    fi
    wait_until 60 postgres "$PG_LOG" postgres_ready
    postgres_provision
    # Ready means: the services' own URL logs in.
    wait_until 10 "postgres login as $PG_ROLE" "$PG_LOG" \
        "$PG_BIN/psql" "$SMARTMETER_DATABASE_URL" -X -tAc 'SELECT 1'
    say "postgres: ready ($SMARTMETER_DATABASE_URL)"
}

postgres_down() {
    local pid
    if pid=$(postgres_pid); then
        say "postgres: stopping (pid $pid)"
        as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w -t 60 stop >/dev/null ||
            stop_pid postgres "$pid" 30
        say "postgres: stopped"
    else
        say "postgres: not running"
    fi
}

postgres_status() {
    local pid
    if pid=$(postgres_pid); then
        if postgres_ready; then
            printf '%-11s running  pid %-7s 127.0.0.1:%s\n' postgres "$pid" "$PG_PORT"
            return 0
        fi
        printf '%-11s starting pid %-7s 127.0.0.1:%s (not accepting connections)\n' postgres "$pid" "$PG_PORT"
        return 1
    fi
    printf '%-11s stopped\n' postgres
    return 1
}
