#!/usr/bin/env bash
# Gives a meter its broker account (provisioning): username = device id, so the ACL lets
# it publish smartmeter/<device_id>/telemetry and .../status and nothing else.
# Adds the account or changes its password, then makes a running broker reload (SIGHUP).
#
#   infra/mqtt-add-meter.sh <device_id> <password>
set -euo pipefail

# shellcheck source=lib/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
# shellcheck source=lib/mosquitto.sh
. "$INFRA_DIR/lib/mosquitto.sh"

if (($# != 2)); then
    sed -n '2,7s/^# \{0,1\}//p' "$0" >&2
    exit 2
fi
device_id=$1
password=$2

# The same rule as core's DeviceId: 1..64 of [A-Za-z0-9._:-].
[[ $device_id =~ ^[A-Za-z0-9._:-]{1,64}$ ]] ||
    die "'$device_id' is not a device id (1 to 64 of letters, digits and . _ : -)"
case $device_id in
    "$SMARTMETER_MQTT_BRIDGE_USER" | "$SMARTMETER_MQTT_SIMULATOR_USER" | "$MQTT_HEALTH_USER")
        die "'$device_id' is a service account, not a meter" ;;
esac
[[ -n $password ]] || die "empty password"
[[ -f $MQTT_PASSWD ]] || die "no broker set up in $STATE yet; run infra/up.sh mosquitto first"

mosquitto_set_password "$device_id" "$password"
chmod 600 "$MQTT_PASSWD"
if ((EUID == 0)); then
    chown "$MQTT_RUN_USER:" "$MQTT_PASSWD"
fi
if pid=$(mosquitto_pid); then
    kill -HUP "$pid"
    say "mqtt: account $device_id set; broker (pid $pid) reloaded"
else
    say "mqtt: account $device_id set; it takes effect when mosquitto starts"
fi
