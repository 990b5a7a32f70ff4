# Connection settings of the local smartmeter stack. Source it:
#
#     . infra/env.sh
#
# Every variable is only set when it is not set already, so an exported value wins.
# The passwords here are DEV-ONLY defaults for the one-command local run on loopback
# (see infra/README.md); a real deployment sets its own.

if [ -n "${BASH_SOURCE:-}" ]; then
    _smartmeter_repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
else
    _smartmeter_repo=$(git rev-parse --show-toplevel 2>/dev/null || pwd)
fi

# Where up.sh keeps data, logs, pid files and generated configs.
: "${SMARTMETER_STATE_DIR:=$_smartmeter_repo/.state}"

# PostgreSQL (project-owned cluster, not the system one).
: "${SMARTMETER_PG_PORT:=55432}"
: "${SMARTMETER_DATABASE_URL:=postgres://smartmeter:smartmeter@127.0.0.1:$SMARTMETER_PG_PORT/smartmeter}"
: "${SMARTMETER_TEST_DATABASE_URL:=postgres://smartmeter:smartmeter@127.0.0.1:$SMARTMETER_PG_PORT/smartmeter_test}"

# Kafka (single KRaft node).
: "${SMARTMETER_KAFKA_BROKERS:=127.0.0.1:${SMARTMETER_KAFKA_PORT:-9092}}"

# Mosquitto.
: "${SMARTMETER_MQTT_HOST:=127.0.0.1}"
: "${SMARTMETER_MQTT_PORT:=1883}"
# The bridge's account: reads smartmeter/+/telemetry and smartmeter/+/status.
: "${SMARTMETER_MQTT_BRIDGE_USER:=smartmeter-bridge}"
: "${SMARTMETER_MQTT_BRIDGE_PASSWORD:=bridge-dev-only}"
# The fleet simulator's account: writes smartmeter/+/telemetry and smartmeter/+/status.
: "${SMARTMETER_MQTT_SIMULATOR_USER:=smartmeter-simulator}"
: "${SMARTMETER_MQTT_SIMULATOR_PASSWORD:=simulator-dev-only}"

# Prometheus.
: "${SMARTMETER_PROMETHEUS_URL:=http://127.0.0.1:9090}"

# query-api: an admin API key held in memory by query-api (never stored), DEV-ONLY, so
# the local run needs no key setup; Prometheus scrapes query-api's /metrics with it
# (prometheus/prometheus.yml). See query-api/README.md for real keys.
: "${SMARTMETER_QUERY_API_DEV_ADMIN_KEY:=dev-admin-key-local-only}"

export SMARTMETER_STATE_DIR SMARTMETER_PG_PORT SMARTMETER_DATABASE_URL SMARTMETER_TEST_DATABASE_URL \
    SMARTMETER_KAFKA_BROKERS SMARTMETER_MQTT_HOST SMARTMETER_MQTT_PORT \
    SMARTMETER_MQTT_BRIDGE_USER SMARTMETER_MQTT_BRIDGE_PASSWORD \
    SMARTMETER_MQTT_SIMULATOR_USER SMARTMETER_MQTT_SIMULATOR_PASSWORD \
    SMARTMETER_PROMETHEUS_URL SMARTMETER_QUERY_API_DEV_ADMIN_KEY
unset _smartmeter_repo
