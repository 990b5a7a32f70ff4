#!/usr/bin/env bash
# Renders BENCHMARKS.md from one run of infra/bench.sh:
#   infra/bench/report.sh <results.jsonl> <run dir> <mode>   (markdown on stdout)
set -euo pipefail

results=$1 run_dir=$2 mode=$3
all=$(jq -s . "$results")
q() { jq -r "$@" <<<"$all"; }
kv() { sed -n "s/^$1=//p" "$run_dir/machine.txt" | sed -n 1p; }
setting() { tr ' ' '\n' <"$run_dir/settings.txt" | sed -n "s/^$1=//p" | tr -d "'" | sed -n 1p; }

cat <<EOF
# smartmeter benchmarks

Written by \`infra/bench.sh\`$([[ $mode == smoke ]] && echo ' --smoke') from $(kv started_utc) to $(kv finished_utc),
commit \`$(kv commit)\`. Every figure below was measured in this one run, on this one machine,
smartmeter and its peers one after the other with the same load generator.
EOF
if [[ $mode == smoke ]]; then
    cat <<'EOF'

> **Smoke run.** Seconds-long loads on debug builds, only to check that the harness works.
> These figures say nothing about performance.
EOF
fi

# --- summary -------------------------------------------------------------------------------
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
met() { awk "BEGIN { print ($1) ? \"yes\" : \"**no**\" }"; }
num() { awk -v x="$1" 'BEGIN { if (x == "" || x == "null") print "n/a"; else if (x == int(x)) printf "%d", x; else printf "%.1f", x }'; }

ingest=$(q '[.[] | select(.load == "ingest_summary")][0].sustained_rate // 0')
capped() { q --arg l "$1" '[.[] | select(.load == $l)][0] | if .capped then "≥ " else "" end'; }
# bounded_ratio <ours> <theirs> <ours capped> <theirs capped> <goal>: ratio text and "met"
bounded_ratio() {
    local r
    r=$(ratio "$1" "$2")
    if [[ -n $4 && -z $3 ]]; then
        printf '≤ %s | %s' "$r" "$(awk -v r="$r" -v g="$5" 'BEGIN { print (r + 0 < g) ? "**no**" : "unknown: the peer held every rate; raise SMARTMETER_BENCH_RATES" }')"
    elif [[ -n $4 && -n $3 ]]; then
        printf '%s | unknown: both held every rate; raise SMARTMETER_BENCH_RATES' "$r"
    elif [[ -n $3 ]]; then
        printf '≥ %s | %s' "$r" "$(awk -v r="$r" -v g="$5" 'BEGIN { print (r + 0 >= g) ? "yes" : "unknown: smartmeter held every rate; raise SMARTMETER_BENCH_RATES" }')"
    else
        printf '%s | %s' "$r" "$(awk -v r="$r" -v g="$5" 'BEGIN { print (r != "n/a" && r + 0 >= g) ? "yes" : "**no**" }')"
    fi
}
mosq=$(q '[.[] | select(.load == "mosquitto_summary")][0].sustained_rate // 0')
naive=$(q '[.[] | select(.load == "naive_summary")][0].sustained_rate // 0')
copy=$(q '[.[] | select(.load == "copy" and .rate != null)][0].rate // 0')
meters=$(setting meters)
duration=$(setting duration)

echo
echo "## Summary"
echo
echo "| # | figure | smartmeter | peer | peer's figure | ratio | goal (issue 8) | met |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
if [[ $(q 'any(.[]; .load == "ingest_summary")') == true ]]; then
    echo "| 1 | ingest: highest rate held ${duration} s with nothing lost, readings/s ($meters meters) | $(capped ingest_summary)$(num "$ingest") | Mosquitto alone (QoS 1 pub → QoS 1 sub) | $(capped mosquitto_summary)$(num "$mosq") | $(bounded_ratio "$ingest" "$mosq" "$(capped ingest_summary)" "$(capped mosquitto_summary)" 0.5 | sed 's/ | / | ≥ 0.5 | /') |"
    echo "| 1 | | | naive pipe (\`mosquitto_sub \| psql COPY\`) | $(capped naive_summary)$(num "$naive") | $(bounded_ratio "$ingest" "$naive" "$(capped ingest_summary)" "$(capped naive_summary)" 3 | sed 's/ | / | ≥ 3 | /') |"
    echo "| 1 | | | PostgreSQL \`COPY\` of the same rows (storage limit) | $(num "$copy") | $(ratio "$ingest" "$copy") | — | — |"
fi
if [[ $(q 'any(.[]; .load == "freshness")') == true ]]; then
    f=$(q '[.[] | select(.load == "freshness")][0]')
    p50=$(jq -r .p50_ms <<<"$f") p99=$(jq -r .p99_ms <<<"$f") frate=$(jq -r .rate <<<"$f")
    echo "| 2 | freshness: publish → hourly rollup in GraphQL, p50 / p99 ms (at $(num "$frate") readings/s) | $(printf '%.0f / %.0f' "$p50" "$p99") | — | — | — | p99 < 1000 ms | $(met "$p99 < 1000") |"
fi
if [[ $(q 'any(.[]; .load == "graphql")') == true ]]; then
    g=$(q '[.[] | select(.load == "graphql")][0]')
    ours=$(jq -r .query_api.rps <<<"$g") theirs=$(jq -r .postgraphile.rps <<<"$g")
    op99=$(jq -r .query_api.p99_ms <<<"$g") tp99=$(jq -r .postgraphile.p99_ms <<<"$g")
    echo "| 3 | GraphQL \"24 hours of hourly energy of one meter\": req/s | $(num "$ours") | PostGraphile 4.14 | $(num "$theirs") | $(ratio "$ours" "$theirs") | ≥ 2 | $(met "$theirs > 0 && $ours >= 2 * $theirs") |"
    echo "| 3 | same, p99 ms | $(printf '%.2f' "$op99") | PostGraphile 4.14 | $(printf '%.2f' "$tp99") | | < 10 ms | $(met "$op99 < 10") |"
fi
if [[ $(q 'any(.[]; .load == "billing" and .device_months != null)') == true ]]; then
    b=$(q '[.[] | select(.load == "billing" and .device_months != null)] | max_by(.meters)')
    echo "| 4 | billing: device-months priced per second on one core (as the worker prices) | $(num "$(jq -r .worker_pricing_per_core <<<"$b")") | — | — | — | ≥ 20,000 | $(met "$(jq -r .worker_pricing_per_core <<<"$b") >= 20000") |"
    echo "| 4 | billing: replay of $(jq -r .months <<<"$b") months × $(jq -r .meters <<<"$b") meters from Kafka, seconds | $(printf '%.1f' "$(jq -r .replay_s <<<"$b")") | — | — | — | ≤ 60 s (12 × 10,000) | $(if (($(jq -r .meters <<<"$b") >= 10000 && $(jq -r .months <<<"$b") >= 12)); then met "$(jq -r .replay_s <<<"$b") <= 60"; else echo "n/a: not the 12 × 10,000 case"; fi) |"
    echo "| 4 | same replay, device-months/s per core | $(num "$(jq -r .replay_per_core <<<"$b")") | — | — | — | ≥ 20,000 | $(met "$(jq -r .replay_per_core <<<"$b") >= 20000") |"
fi
if [[ $(q 'any(.[]; .load == "memory")') == true ]]; then
    m=$(q '[.[] | select(.load == "memory")][0]')
    prss=$(jq -r '.processor_hwm_kb / 1024' <<<"$m") arss=$(jq -r '.query_api_hwm_kb / 1024' <<<"$m")
    echo "| 5 | memory, $(jq -r .active <<<"$m") active meters: processor peak RSS, MB | $(printf '%.0f' "$prss") | — | — | — | < 150 MB | $(met "$prss < 150") |"
    echo "| 5 | same, query-api peak RSS, MB | $(printf '%.0f' "$arss") | — | — | — | — | — |"
fi

# --- load 1 details ------------------------------------------------------------------------
cpu_cols() { jq -r "$1"' | .cpu as $c | "\($c.bridge // "–") | \($c.processor // "–") | \($c.postgres // "–") | \($c.kafka // "–") | \($c.mosquitto // "–") | \($c.machine // "–")"' <<<"$2"; }
steps_table() { # steps_table <load> : one row per step
    echo "| step | meters | target/s | achieved/s | published | stored | lost | backlog at end | drain s | held | CPU % of a core: bridge | processor | postgres | kafka | mosquitto | machine % busy |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |"
    q --arg l "$1" '.[] | select(.load == $l) | @json' | while read -r row; do
        printf '| %s %ss | %s | %s | %.0f | %s | %s | %s | %s | %s | %s | %s |\n' \
            "$(jq -r .step <<<"$row")" "$(jq -r .seconds <<<"$row")" "$(jq -r .meters <<<"$row")" \
            "$(jq -r .rate <<<"$row")" "$(jq -r .achieved <<<"$row")" "$(jq -r .published <<<"$row")" \
            "$(jq -r .rows <<<"$row")" "$(jq -r .lost <<<"$row")" "$(jq -r .lag_at_end <<<"$row")" \
            "$(jq -r .drain_s <<<"$row")" "$(jq -r 'if .sustained then "yes" else "no" end' <<<"$row")" \
            "$(cpu_cols . "$row")"
    done
}

sed "s/@LAG@/$(setting lag_seconds)/" <<'EOF'

## 1. End-to-end ingest and its peers

The load generator (`firmware/simulator/examples/bench_load.rs`) publishes, QoS 1, the
real Low Carbon London January 2013 readings of ten households (one reading a minute of
event time, the simulator's counter code) as N meters (meter i = household i mod 10),
every meter active from the first second, spread over 4 MQTT connections, paced to the
target rate. A step is **held** when the generator achieved ≥ 95 % of the target, every
published reading is stored (rows counted with `count(*)`; nothing lost), and the sink
had everything at most @LAG@ s after publishing ended (a sink that falls behind
builds a backlog that grows with the step; "backlog at end" is the count not yet stored
at that moment, from 1-second samples, so it also holds up to a second of normal
latency). The rate
ladder doubles until a step is not held, tries once halfway, and the best rate is then
held for the full duration (stepping down a quarter at a time if it does not hold).

- **smartmeter**: bridge → Kafka (6 partitions, a topic of its own) → processor →
  PostgreSQL (a database of its own), release builds, default settings; counted in `readings`.
- **Mosquitto alone**: the same publisher into a `mosquitto_sub -q 1` subscriber (clean
  session), counted by the lines it writes.
- **naive pipe**: `mosquitto_sub -q 1 -t 'smartmeter/+/telemetry' | psql -c "COPY naive_readings (payload) FROM STDIN"`
  into a `jsonb` column (progress from `pg_stat_progress_copy`, rows counted after the
  COPY commits; it commits once, at the end, so a crash loses everything).
- **PostgreSQL COPY**: the rows the pipeline stored in the held run, `\copy` into an empty
  `readings` table with the same schema, keys and indexes (a `CREATE DATABASE ... TEMPLATE`
  copy of the pipeline's database with `readings` truncated).

All of them go through a Mosquitto of the benchmark's own (infra's config and ACL,
`max_inflight_messages 100`) so that other clients of the shared broker neither receive
the load nor skew it.

### smartmeter
EOF
steps_table ingest
echo
echo "Inside the pipeline (from the services' own /metrics): bridge = mean time from MQTT receipt to Kafka's confirmation; processor = batches committed, mean readings per batch, mean commit time."
echo
echo "| step | target/s | bridge MQTT → Kafka confirmed, ms | processor batches | readings per batch | commit ms |"
echo "| --- | ---: | ---: | ---: | ---: | ---: |"
q '.[] | select(.load == "ingest" and .internals) | "| \(.step) \(.seconds)s | \(.rate) | \(.internals.bridge_produce_ms * 10 | round / 10) | \(.internals.processor_batches) | \(.internals.processor_batch_records | round) | \(.internals.processor_commit_ms * 10 | round / 10) |"'
echo
echo "### Mosquitto alone"
steps_table mosquitto
echo
echo "### Naive pipe"
steps_table naive
echo
echo "### PostgreSQL COPY of the same rows"
echo
q '.[] | select(.load == "copy") | if .skipped then "Skipped: \(.skipped)." else "\(.copied) rows in \(.seconds * 100 | round / 100) s = **\(.rate | round) rows/s** (one `\\copy`, one transaction, primary key and indexes in place)." end'

# --- freshness ---------------------------------------------------------------------------------
if [[ $(q 'any(.[]; .load == "freshness")') == true ]]; then
    cat <<'EOF'

## 2. Freshness

`query-api/examples/bench_freshness.rs`: a probe meter (household MAC000002, one reading a
minute of event time) publishes one reading at a time while the load generator keeps the
pipeline busy at half the held rate; after each publish it asks `hourlyEnergy` for the
hour the reading ends in every 5 ms until the hour's energy equals what the counter says
(exact to the mWh). The sample is the time from just before the publish to that answer
(the 5 ms poll adds up to 5 ms).

EOF
    q '.[] | select(.load == "freshness") | "| readings/s (load) | samples | timeouts | p50 ms | p90 ms | p99 ms | max ms |\n| ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n| \(.achieved | round) | \(.samples) | \(.timeouts) | \(.p50_ms * 10 | round / 10) | \(.p90_ms * 10 | round / 10) | \(.p99_ms * 10 | round / 10) | \(.max_ms * 10 | round / 10) |\n\nCPU % of a core during the run: " + (.cpu | to_entries | map("\(.key) \(.value)") | join(", ")) + "."'
fi

# --- GraphQL -------------------------------------------------------------------------------------
if [[ $(q 'any(.[]; .load == "graphql")') == true ]]; then
    cat <<'EOF'

## 3. GraphQL: 24 hours of hourly energy of one meter

Household MAC000002's first days of January 2013 are replayed with `meter-sim` into a
fresh pipeline; then the same database and the same `energy_hourly` table are served by
query-api and by PostGraphile 4.14.1 (`postgraphile -c <db> -s public`, no plugins; 4.x
because PostGraphile 5 needs Node 22 and this machine has Node 20). The two requests
return the same 24 rows (checked before the load: same hour starts, same energy):

- query-api: `hourlyEnergy(deviceId: "MAC000002", from: "2013-01-02T00:00:00Z", to: "2013-01-03T00:00:00Z") { bucketStart energyKwh }`
- PostGraphile: `allEnergyHourlies(condition: {deviceId: "MAC000002", localDate: "2013-01-02"}, orderBy: BUCKET_START_ASC) { nodes { bucketStart energyMilliWh } }`

`wrk -t1 -c<connections> -d<seconds> --latency -s infra/bench/graphql.lua` against each
in turn (responses with GraphQL errors are counted; there must be none).

| server | req/s | p50 ms | p99 ms | errors | CPU % of a core: server | postgres | machine % busy | RSS MB |
| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |
EOF
    q '.[] | select(.load == "graphql") | ("| query-api | \(.query_api.rps | round) | \(.query_api.p50_ms) | \(.query_api.p99_ms) | \(.query_api.errors) | \(.query_api.cpu["query-api"]) | \(.query_api.cpu.postgres) | \(.query_api.cpu.machine) | \(.query_api.rss_kb / 1024 | round) |"),
        ("| PostGraphile | \(.postgraphile.rps | round) | \(.postgraphile.p50_ms) | \(.postgraphile.p99_ms) | \(.postgraphile.errors) | \(.postgraphile.cpu.postgraphile) | \(.postgraphile.cpu.postgres) | \(.postgraphile.cpu.machine) | \(.postgraphile.rss_kb / 1024 | round) |"),
        "\n\(.connections) connections, \(.seconds) s each."'
fi

# --- billing --------------------------------------------------------------------------------------
if [[ $(q 'any(.[]; .load == "billing")') == true ]]; then
    cat <<'EOF'

## 4. Billing

The billing worker's own benchmark, `billing-worker/examples/replay_bench.rs`
(`replay_bench <meters> <months>`): PeriodClosed events built from real London data
(MAC000002's 2013 hours, scaled per meter) are produced to a topic of their own, priced
in memory on one core, then replayed end to end from Kafka into invoices in a fresh
database (first pricing, again with nothing changed, then after a retroactive tariff
change).

| meters | months | device-months | replay s | replay device-months/s | per core | pricing on one core (worker) | core arithmetic alone |
| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |
EOF
    q '.[] | select(.load == "billing" and .device_months != null) | "| \(.meters) | \(.months) | \(.device_months) | \(.replay_s) | \(.replay_rate | round) | \(.replay_per_core | round) | \(.worker_pricing_per_core | round) | \(.core_pricing_per_core | round) |"'
    q '.[] | select(.load == "billing" and .skipped) | "\nSkipped: \(.skipped)."'
    q '[.[] | select(.load == "billing" and .output)] | max_by(.meters) | "\nIts output for the largest fleet:\n\n```text\n\(.output)\n```"' 2>/dev/null || true
fi

# --- memory ---------------------------------------------------------------------------------------
if [[ $(q 'any(.[]; .load == "memory")') == true ]]; then
    cat <<'EOF'

## 5. Memory with many active meters

A fresh pipeline receives readings from every meter of the fleet (the load generator, 8
connections), then query-api serves wrk requests for random meters of the fleet.
Resident memory from `/proc/<pid>/status` (VmRSS now, VmHWM peak).

EOF
    q '.[] | select(.load == "memory" and .stored < .published) | "**Not every reading was stored**: \(.published) published, \(.stored) stored after waiting \(.drain_s) s.\n"'
    q '.[] | select(.load == "memory") | "| meters active | readings | processor RSS at start / after / peak MB | query-api RSS at start / after / peak MB | bridge RSS MB |\n| ---: | ---: | --- | --- | ---: |\n| \(.active) of \(.meters) | \(.stored) | \(.processor_rss_kb_start / 1024 | round) / \(.processor_rss_kb / 1024 | round) / \(.processor_hwm_kb / 1024 | round) | \(.query_api_rss_kb_start / 1024 | round) / \(.query_api_rss_kb / 1024 | round) / \(.query_api_hwm_kb / 1024 | round) | \(.bridge_rss_kb / 1024 | round) |\n\nquery-api over the fleet: \(.wrk.rps | round) req/s, p99 \(.wrk.p99_ms) ms, \(.wrk.errors) errors."'
fi

# --- growth ---------------------------------------------------------------------------------------
if [[ $(q 'any(.[]; .load == "growth_summary" or .load == "ingest_summary")') == true ]]; then
    echo
    echo "## 6. Cost growth"
    echo
    echo "Highest held rate of the ladder (steps of $(setting step) s) and the CPU the pipeline spent per 1,000 readings at that rate, by meter count; billing replay by meter count."
    echo
    echo "| meters | highest held readings/s | bridge + processor CPU s per 1,000 readings | postgres CPU s per 1,000 readings |"
    echo "| ---: | ---: | ---: | ---: |"
    q '[.[] | select(.load == "ingest" and .sustained and (.step == "ladder" or (.step | startswith("growth"))))] | group_by(.meters) | .[] | max_by(.rate) |
       "| \(.meters) | \(.rate) | \(((.cpu.bridge + .cpu.processor) / 100 * (.window_s // .seconds) / .published * 1000) * 1000 | round / 1000) | \((.cpu.postgres / 100 * (.window_s // .seconds) / .published * 1000) * 1000 | round / 1000) |"'
    q '.[] | select(.load == "growth_summary" and .ladder_best == 0) | "| \(.meters) | none held | | |"'
    if [[ $(q 'any(.[]; .load == "billing" and .device_months != null)') == true ]]; then
        echo
        echo "| billing meters | device-months | replay s | device-months/s | s per 10,000 device-months |"
        echo "| ---: | ---: | ---: | ---: | ---: |"
        q '.[] | select(.load == "billing" and .device_months != null) | "| \(.meters) | \(.device_months) | \(.replay_s) | \(.replay_rate | round) | \(.replay_s / .device_months * 10000 * 100 | round / 100) |"'
    fi
fi

# --- what limits --------------------------------------------------------------------------------
echo
echo "## What limits each figure (from this run's CPU accounting)"
echo
q '.[] | select(.load == "ingest" or .load == "mosquitto" or .load == "naive") | select(.sustained | not) |
   "- \(.load) at \(.rate)/s (\(.meters) meters) did not hold: achieved \(.achieved | round)/s, lost \(.lost), caught up \(.drain_s) s after publishing ended; machine \(.cpu.machine) % busy; busiest: " +
   (.cpu | to_entries | map(select(.key != "machine")) | sort_by(-.value) | .[0:3] | map("\(.key) \(.value) %") | join(", ")) +
   (if .internals then "; processor \(.internals.processor_commit_ms | round) ms per batch of \(.internals.processor_batch_records | round) readings, bridge \(.internals.bridge_produce_ms * 10 | round / 10) ms from MQTT to Kafka confirmed" else "" end) + "."'
echo
echo "CPU % is of one core (200 % = both cores of a 2-core machine); postgres is every PostgreSQL process on the machine, kafka and mosquitto the brokers."

for profile in ingest graphql; do
    [[ -s $run_dir/perf-$profile.txt ]] || continue
    case $profile in
        ingest) title="the held ingest run (whole machine)" ;;
        graphql) title="query-api under wrk (whole machine)" ;;
    esac
    printf '\n### perf: %s\n\n`perf record -a -F 99` (no call graphs), share of samples:\n\n```text\n%s\n```\n' \
        "$title" "$(cat "$run_dir/perf-$profile.txt")"
done

# --- machine and commands ---------------------------------------------------------------------
cat <<EOF

## Machine

- kernel: $(kv kernel)
- load average at start: $(kv loadavg_start); at end: $(kv loadavg_end)

\`\`\`text
$(grep -E '^(Architecture|CPU\(s\)|Model name|Thread|Core|Socket|CPU max MHz|L2|L3|Hypervisor)' "$run_dir/lscpu.txt")
\`\`\`

\`\`\`text
$(cat "$run_dir/free.txt")
\`\`\`

Kafka 4.1 (one KRaft node, JVM heap 512 MB), PostgreSQL 15 (\`shared_buffers\` 256MB,
\`fsync\` and \`synchronous_commit\` on), Mosquitto 2 — as \`infra/up.sh\` starts them.

## Commands

\`\`\`sh
infra/bench.sh$([[ $mode == smoke ]] && echo ' --smoke')
\`\`\`

with these settings (each an environment variable, see \`infra/bench/README.md\`):

\`\`\`text
$(cat "$run_dir/settings.txt")
\`\`\`

The steps it ran, their logs and raw results (\`results.jsonl\`) are in \`$(basename "$run_dir")\` under
\`.state/bench/runs/\`. The load generator alone:
\`bench_load --meters N --rate R --duration-secs S\` (\`cargo run --release -p meter-simulator --example bench_load -- --help\`).
EOF
