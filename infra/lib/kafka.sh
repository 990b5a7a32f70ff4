# Apache Kafka 4.x, one KRaft node (broker + controller), from Maven Central jars.
# shellcheck shell=bash

KAFKA_DIR=$STATE/kafka
# SMARTMETER_KAFKA_LIBS: jars copied once elsewhere (a second stack on other ports
# reuses the first one's instead of running Maven again).
KAFKA_LIBS=${SMARTMETER_KAFKA_LIBS:-$KAFKA_DIR/libs}
KAFKA_DATA=$KAFKA_DIR/data
KAFKA_PROPS=$KAFKA_DIR/server.properties
KAFKA_POM=$INFRA_DIR/kafka/pom.xml
KAFKA_PID=$RUN/kafka.pid
KAFKA_OUT=$LOGS/kafka.out
KAFKA_LOG=$LOGS/kafka.log
# Ports from the environment, so a second stack (tests that restart Kafka) can run
# beside the first; the defaults are the shared stack's.
KAFKA_PORT=${SMARTMETER_KAFKA_PORT:-9092}
KAFKA_CONTROLLER_PORT=${SMARTMETER_KAFKA_CONTROLLER_PORT:-9093}
KAFKA_BOOTSTRAP=127.0.0.1:$KAFKA_PORT
KAFKA_TOPICS=$INFRA_DIR/kafka/topics.txt

# The jars in $KAFKA_LIBS were copied from this very pom.xml.
kafka_libs_ok() {
    [[ -s $KAFKA_LIBS/.pom.sha256 ]] && [[ $(sha256sum <"$KAFKA_POM") == "$(<"$KAFKA_LIBS/.pom.sha256")" ]]
}

kafka_packages() {
    command -v java >/dev/null || echo openjdk-17-jre-headless
    kafka_libs_ok || command -v mvn >/dev/null || echo maven
}

kafka_pid() { pid_from_file "$KAFKA_PID" java; }

# Runs a Kafka command-line class from the copied jars in a small, quick-starting JVM.
kafka_tool() {
    java -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
        -Dlog4j2.configurationFile="$INFRA_DIR/kafka/tools-log4j2.yaml" \
        -cp "$KAFKA_LIBS/*" "$@"
}

kafka_topics() { kafka_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$KAFKA_BOOTSTRAP" "$@"; }

# Ready when the broker answers a topic description; keeps it for kafka_ensure_topics.
kafka_ready() { kafka_topics --describe --exclude-internal >"$KAFKA_DIR/topics.described"; }

kafka_fetch_libs() {
    kafka_libs_ok && return 0
    say "kafka: copying jars from Maven Central into $KAFKA_LIBS (mvn)"
    rm -rf "$KAFKA_LIBS"
    mvn -q -B dependency:copy-dependencies -DoutputDirectory="$KAFKA_LIBS" -DincludeScope=runtime \
        -f "$KAFKA_POM" >"$LOGS/kafka-mvn.log" 2>&1 ||
        { tail -n 20 "$LOGS/kafka-mvn.log" >&2; die "mvn could not resolve Kafka (log: $LOGS/kafka-mvn.log)"; }
    sha256sum <"$KAFKA_POM" >"$KAFKA_LIBS/.pom.sha256"
}

# Formats the log directory once, as the single voter of a new cluster.
kafka_format() {
    [[ -f $KAFKA_DATA/meta.properties ]] && return 0
    local cluster_id
    if [[ ! -s $KAFKA_DIR/cluster-id ]]; then
        kafka_tool kafka.tools.StorageTool random-uuid >"$KAFKA_DIR/cluster-id"
    fi
    cluster_id=$(<"$KAFKA_DIR/cluster-id")
    say "kafka: formatting $KAFKA_DATA (cluster id $cluster_id)"
    kafka_tool kafka.tools.StorageTool format --cluster-id "$cluster_id" --config "$KAFKA_PROPS" \
        --standalone >>"$LOGS/kafka-format.log" 2>&1 ||
        { tail -n 20 "$LOGS/kafka-format.log" >&2; die "kafka storage format failed (log: $LOGS/kafka-format.log)"; }
}

# Creates the topics of topics.txt that are missing (in parallel: each tool run is a JVM
# start of ~2 s); warns about partition counts that differ from topics.txt.
kafka_ensure_topics() {
    local described name partitions retention have
    local -a pids=() created=()
    described=$(grep -E '^Topic: .*PartitionCount:' "$KAFKA_DIR/topics.described") || described=""
    while read -r name partitions retention; do
        [[ -z $name || $name == \#* ]] && continue
        have=$(awk -v t="$name" '$2 == t { for (i = 1; i < NF; i++) if ($i == "PartitionCount:") print $(i + 1) }' <<<"$described")
        if [[ -z $have ]]; then
            kafka_topics --create --if-not-exists --topic "$name" --partitions "$partitions" \
                --replication-factor 1 --config "retention.ms=$retention" >>"$LOGS/kafka-topics.log" 2>&1 &
            pids+=($!)
            created+=("$name ($partitions partitions, retention.ms=$retention)")
        elif [[ $have != "$partitions" ]]; then
            warn "kafka topic $name has $have partitions, topics.txt says $partitions (not changed)"
        fi
    done <"$KAFKA_TOPICS"
    local i failed=0
    for i in "${!pids[@]}"; do
        if wait "${pids[i]}"; then
            say "kafka: created topic ${created[i]}"
        else
            warn "kafka: could not create topic ${created[i]}"
            failed=1
        fi
    done
    ((failed == 0)) || { tail -n 20 "$LOGS/kafka-topics.log" >&2; die "topic creation failed (log: $LOGS/kafka-topics.log)"; }
    ((${#pids[@]})) || say "kafka: all topics of topics.txt present"
}

kafka_up() {
    local pid
    mkdir -p "$KAFKA_DIR" "$KAFKA_DATA"
    kafka_fetch_libs
    if pid=$(kafka_pid); then
        say "kafka: already running (pid $pid, $KAFKA_BOOTSTRAP)"
    else
        local port
        for port in "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT"; do
            if port_open "$port"; then
                die "port $port is in use by another process ($(port_owner "$port" || true)); free it and retry"
            fi
        done
        render "$INFRA_DIR/kafka/server.properties.template" "$KAFKA_PROPS" STATE_DIR="$STATE" \
            KAFKA_PORT="$KAFKA_PORT" KAFKA_CONTROLLER_PORT="$KAFKA_CONTROLLER_PORT"
        kafka_format
        say "kafka: starting on $KAFKA_BOOTSTRAP (controller 127.0.0.1:$KAFKA_CONTROLLER_PORT)"
        setsid java -Xms256m -Xmx512m -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
            -Dlog4j2.configurationFile="$INFRA_DIR/kafka/log4j2.yaml" -Dkafka.logs.dir="$LOGS" \
            -cp "$KAFKA_LIBS/*" kafka.Kafka "$KAFKA_PROPS" >>"$KAFKA_OUT" 2>&1 </dev/null &
        echo $! >"$KAFKA_PID"
        wait_until 90 "kafka port $KAFKA_PORT" "$KAFKA_LOG" alive_and "$KAFKA_PID" port_open "$KAFKA_PORT"
    fi
    wait_until 90 "kafka (describe topics)" "$KAFKA_LOG" alive_and "$KAFKA_PID" kafka_ready
    kafka_ensure_topics
    say "kafka: ready ($KAFKA_BOOTSTRAP)"
}

kafka_down() {
    local pid
    if pid=$(kafka_pid); then
        say "kafka: stopping (pid $pid)"
        stop_pid kafka "$pid" 60
        rm -f "$KAFKA_PID"
        say "kafka: stopped"
    else
        rm -f "$KAFKA_PID"
        say "kafka: not running"
    fi
}

kafka_status() {
    local pid
    if pid=$(kafka_pid); then
        if port_open "$KAFKA_PORT"; then
            printf '%-11s running  pid %-7s %s\n' kafka "$pid" "$KAFKA_BOOTSTRAP"
            return 0
        fi
        printf '%-11s starting pid %-7s %s (port closed)\n' kafka "$pid" "$KAFKA_BOOTSTRAP"
        return 1
    fi
    printf '%-11s stopped\n' kafka
    return 1
}
