#!/usr/bin/env bash
# End-to-end comparisons with the load generator, every variant in one run
# so the ratios are comparable on a noisy machine:
#
#   benches/compare.sh filters     # no filter vs. pass-through vs. four pass-through chained
#                                  # (the host's share of a chain) vs. the four examples chained,
#                                  # and pass-through in Python and in JavaScript (not with BASE)
#   benches/compare.sh spool       # no spool vs. a spool idle vs. spooling everything (Kafka away)
#   benches/compare.sh quotas      # per-node rate limits vs. region-wide ones (a redis-server
#                                  # on core 1), limits at about twice what the node takes,
#                                  # so budget is leased and nothing is refused; prints the
#                                  # Redis commands/s the node caused
#   benches/compare.sh connections # 64 vs. 1,000 connections, 27 KB bodies (50 events of
#                                  # ~550 bytes), every request admitted: CPU per event and
#                                  # peak RSS as the connections grow; and 1,000 beside a
#                                  # quiet tenant at 20 requests/s: its latency
#   benches/compare.sh soak        # one node for DURATION seconds (default 600 here), CONNS
#                                  # connections (64), 27 KB bodies: its RSS every 10 s and
#                                  # the growth from the lowest sample after the first minute
#                                  # (warm-up: buffers and pools filling) to the last
#   benches/compare.sh telemetry   # telemetry off vs. metrics only vs. traces sampled 100% / 1%
#                                  # (exported over OTLP/HTTP to a discarding sink on core 1);
#                                  # records carry a traceparent in every variant (the
#                                  # record contract, proto/record.md)
#
# The node runs on core 0 (`taskset -c 0`), the load generator and a tansu
# broker (in-memory storage) on core 1, with GeoIP (DB-IP City Lite from
# scripts/setup.sh --geoip) and traceparent on. Each variant: a fresh node
# and a fresh broker, `weir-load --concurrency 64 --batch 50 --event-bytes
# 400` for DURATION seconds (default 10; events with a user agent, one in ten
# a crawler's, and an e-mail address, so the example filters have work to
# do). The variants take turns for ROUNDS rounds (default 3), each round
# starting one further along, and the table shows medians: this machine's
# noise between two runs of the same thing is often ±15%. Needs
# scripts/setup.sh --tests --geoip.
#
# A/B: with BASE=<commit>, every variant also runs on that commit's node
# ("<variant> (base)", built in a git worktree under var/ab sharing this
# tree's target/ for dependencies), in the same rounds; a second table then
# gives each variant's median per-round ratio to its own base:
#
#   BASE=HEAD~1 benches/compare.sh filters
#
# BASE_BIN=<a weir binary> compares against that binary instead (e.g. a
# build of this tree with one change undone), with the same tables.
#
# PERF=<dir> records a CPU profile of each variant's node over its measured
# window (`perf record -g`, on core 1) into <dir>/<variant>.<time>.data:
#   ROUNDS=1 PERF=var/perf benches/compare.sh filters
#   perf report -i var/perf/four_chained.*.data --no-children
# (perf costs the node a few percent; take figures from runs without it.
# With WEIR_FILTER_PERFMAP=1 in the environment, guests' functions have names.)
#
# Two ratios per variant, each the median of the per-round ratios to the
# first variant: events/s, and the node's own CPU time per request (utime +
# stime of all its threads over the measured window, divided by the requests
# answered 2xx in it; base / variant, so that both read alike). The
# node is not always the bottleneck: the load generator and the broker share
# the other core, and their noise moves events/s; it moves the node's CPU
# per request far less, so that column is the steadier measure of what a
# variant costs the node. A second table splits that CPU by thread (the
# runtime's workers, which run the request path; librdkafka's) and into
# user and kernel time.
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/ready.sh
mode="${1:-filters}"
duration="${DURATION:-10}"
rounds="${ROUNDS:-3}"
if [ "$mode" = soak ]; then duration="${DURATION:-600}"; rounds=1; fi
if [ -n "${PERF:-}" ] && ! command -v perf >/dev/null; then echo "PERF: perf is not installed" >&2; exit 2; fi
port=19092
work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

cargo build --quiet --release -p weir-gateway -p weir-benches
# The nodes run from copies: a later build replaces target/release/weir.
cp target/release/weir "$work/weir"
if [ -n "${BASE_BIN:-}" ]; then
  cp "$BASE_BIN" "$work/weir-base"
  BASE="$BASE_BIN"
elif [ -n "${BASE:-}" ]; then
  base_tree="var/ab/$(git rev-parse --short "$BASE")"
  [ -d "$base_tree" ] || git worktree add --detach "$base_tree" "$BASE" >/dev/null
  (cd "$base_tree" && CARGO_TARGET_DIR="$OLDPWD/target" cargo build --quiet --release -p weir-gateway)
  cp target/release/weir "$work/weir-base"
  if cmp -s "$work/weir" "$work/weir-base"; then
    echo "the base's binary is this tree's: nothing to compare" >&2; exit 1
  fi
fi
wasm=target/wasm32-unknown-unknown/release
[ -f "$wasm/pass_through.wasm" ] || scripts/build-filters.sh
geoip=var/geoip/dbip-city-lite.mmdb
[ -f "$geoip" ] || scripts/setup.sh --geoip

# A fresh broker (in-memory storage) for every run: one that kept every
# earlier run's records would grow by a gigabyte a run, on the load
# generator's core, and weigh on the later variants.
broker=""
fresh_broker() {
  if [ -n "$broker" ]; then kill "$broker" 2>/dev/null || true; wait "$broker" 2>/dev/null || true; fi
  taskset -c 1 var/bin/tansu broker --listener-url "tcp://127.0.0.1:$port" \
    --advertised-listener-url "tcp://127.0.0.1:$port" --storage-engine memory://tansu/ >"$work/tansu.log" 2>&1 &
  broker=$!
  pids+=("$broker")
  for _ in $(seq 50); do
    var/bin/tansu topic create --broker "tcp://127.0.0.1:$port" --partitions 4 events.LOAD >/dev/null 2>&1 && return
    sleep 0.2
  done
  echo "the broker did not start: $work/tansu.log" >&2; cat "$work/tansu.log" >&2; exit 1
}

tenant="$(target/release/weir-load --print-tenants --key load)"
if [ "$mode" = telemetry ]; then
  taskset -c 1 target/release/weir-load --otlp-sink 127.0.0.1:14318 2>/dev/null &
  pids+=($!)
fi
filter() { printf '[[tenants.filters]]\npath = "%s"\nconfig = %s\n' "$PWD/$wasm/$1.wasm" "$2"; }

# One variant: name, then extra TOML for the config, then env assignments
# (LOAD_ARGS: extra arguments of the load generator; CONNS and EVENT_BYTES:
# its connections and event size, 64 and 400 unless set; SERVER_EXTRA:
# lines for the config's [server]; BIN: the node binary).
run() {
  local name="$1" extra="$2"; shift 2
  local bin="${BIN:-$work/weir}"
  cat >"$work/weir.toml" <<EOF
[server]
listen = "127.0.0.1:18080"
tls_listen = ""
admin_listen = "127.0.0.1:19090"
${SERVER_EXTRA:-}
[kafka]
brokers = "127.0.0.1:$port"
[geoip]
path = "$PWD/$geoip"
[log]
level = "warn"
format = "json"
$tenant
$extra
EOF
  fresh_broker
  env "$@" taskset -c 0 "$bin" --config "$work/weir.toml" serve >"$work/node.log" 2>&1 &
  local node=$!
  pids+=("$node")
  ready 127.0.0.1:19090 || { echo "$name: the node did not become ready" >&2; cat "$work/node.log" >&2; exit 1; }
  # The load generator reads the node's CPU time at the ends of its
  # measured window (not its warm-up second or its tail).
  local line profiler=""
  if [ -n "${PERF:-}" ]; then
    mkdir -p "$PERF"
    taskset -c 1 perf record -q -g -F 999 -p "$node" -o "$PERF/${name// /_}${run_suffix:-}.$(date +%s).data" 2>/dev/null &
    profiler=$!
  fi
  line="$(taskset -c 1 target/release/weir-load --target 127.0.0.1:18080 --key load --concurrency "${CONNS:-64}" \
    --batch 50 --event-bytes "${EVENT_BYTES:-400}" --duration "$duration" --node-pid "$node" ${LOAD_ARGS:-} --json | tail -1)"
  line="${line%\}},\"clk_tck\":$(getconf CLK_TCK)}"
  if [ -n "$profiler" ]; then kill -INT "$profiler" 2>/dev/null || true; wait "$profiler" 2>/dev/null || true; fi
  kill "$node"; wait "$node" 2>/dev/null || true
  name="$name${run_suffix:-}"
  printf '%s\t%s\n' "$name" "$line" >>"$work/results"
  printf '%-22s %s\n' "$name" "$line" >&2
}

# The variants, run in turn every round, each round starting one further
# along (a fixed order would give the same variants the same place in any
# drift of the machine over a run).
case "$mode" in
  filters)
    v_none() { run "no filter" ""; }
    v_pass() { run "pass-through" "$(filter pass_through "''")"; }
    v_four() {
      run "four chained" "$(filter require_fields "'{\"fields\": [\"id\"]}'")
$(filter tag_bots "'{\"field\": \"user_agent\", \"action\": \"tag\"}'")
$(filter redact_pii "'{\"fields\": [\"props.email\"]}'")
$(filter sample "'{\"rate\": 1.0}'")"
    }
    # The host's share of a chain: four fresh instances, four copies in
    # and out, no guest work to speak of.
    v_four_pass() {
      run "four pass-through" "$(filter pass_through "''")
$(filter pass_through "''")
$(filter pass_through "''")
$(filter pass_through "''")"
    }
    order=(v_none v_pass v_four_pass v_four)
    if [ -z "${BASE:-}" ]; then
      # Python and JavaScript, compiled once into the filter cache first
      # (a node would wait out its readiness deadline compiling them).
      cache="$PWD/target/filter-cache"
      echo '[{"id": "warm"}]' >"$work/warm.json"
      for c in target/wasm-py/pass_through.wasm target/wasm-js/pass_through.wasm; do
        [ -f "$c" ] || scripts/build-filters.sh
        WEIR_FILTER_CACHE="$cache" "$work/weir" filter test --events "$work/warm.json" --memory-mb 128 "$c" >/dev/null
      done
      filter_at() { printf '[[tenants.filters]]\npath = "%s"\nconfig = %s\nmemory_mb = 128\n' "$PWD/$1" "$2"; }
      v_py() { run "python pass" "$(filter_at target/wasm-py/pass_through.wasm "''")" WEIR_FILTER_CACHE="$cache"; }
      v_js() { run "js pass" "$(filter_at target/wasm-js/pass_through.wasm "''")" WEIR_FILTER_CACHE="$cache"; }
      order+=(v_py v_js)
    fi
    ;;
  connections)
    # Caps that admit all of 1,000 connections from one address and their
    # requests (the defaults would close some and answer others 429/503:
    # this measures the cost of connections, not the caps).
    wide=$'max_connections_per_address = 0\nmax_inflight = 4096'
    admit=$'[defaults]\nmax_inflight = 4096'
    v_64() { CONNS=64 EVENT_BYTES=550 SERVER_EXTRA="$wide" run "64 connections" "$admit"; }
    v_1000() { CONNS=1000 EVENT_BYTES=550 SERVER_EXTRA="$wide" run "1000 connections" "$admit"; }
    # The same flood, and a second tenant posting 20 requests/s on its own
    # connection: its latency (the quiet columns) is what a neighbour of
    # a flooding tenant gets.
    v_quiet() {
      tenant="$(target/release/weir-load --print-tenants --key load --quiet-key quiet)" \
        CONNS=1000 EVENT_BYTES=550 SERVER_EXTRA="$wide" LOAD_ARGS="--quiet-key quiet --quiet-rate 20" \
        run "1000 + quiet tenant" "$admit"
    }
    order=(v_64 v_1000 v_quiet)
    ;;
  soak)
    wide=$'max_connections_per_address = 0\nmax_inflight = 4096'
    admit=$'[defaults]\nmax_inflight = 4096'
    v_soak() { CONNS="${CONNS:-64}" EVENT_BYTES=550 SERVER_EXTRA="$wide" run "soak" "$admit"; }
    order=(v_soak)
    ;;
  telemetry)
    otlp=(OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:14318 OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf)
    v_off() { run "telemetry off" "" WEIR_TELEMETRY_TRACES=off WEIR_TELEMETRY_METRICS=off; }
    v_metrics() { run "metrics only" "" WEIR_TELEMETRY_TRACES=off "${otlp[@]}"; }
    v_all() { run "traces 100%" "" OTEL_TRACES_SAMPLER_ARG=1.0 "${otlp[@]}"; }
    v_one() { run "traces 1%" "" OTEL_TRACES_SAMPLER_ARG=0.01 "${otlp[@]}"; }
    order=(v_off v_metrics v_all v_one)
    ;;
  spool)
    # The spool idle (Kafka takes everything) against none, and the node
    # spooling everything (its brokers' address answers nobody): every
    # append fsync'd, concurrent requests sharing fsyncs. A fresh spool
    # directory each run.
    v_none() { run "no spool" ""; }
    v_idle() { run "spool idle" "" WEIR_SPOOL_PATH="$(mktemp -d -p "$work")"; }
    # Caps above what a run writes (~60 MB/s), so that none is refused.
    v_away() {
      run "spooling" "$(printf '[spool]\nmax_bytes = 8589934592\ntenant_max_bytes = 8589934592')" \
        WEIR_SPOOL_PATH="$(mktemp -d -p "$work")" WEIR_KAFKA_BROKERS=127.0.0.1:1
    }
    order=(v_none v_idle v_away)
    ;;
  quotas)
    # The load tenant with limits the node works under (about twice its
    # events/s here): every rate is enforced, leases are taken all along.
    hash_line="$(grep keys_sha256 <<<"$tenant")"
    tenant="$(printf '[[tenants]]\nname = "load"\n%s\nrequests_per_second = 20000\nrequests_burst = 20000\nevents_per_second = 500000\nevents_burst = 500000\nbytes_per_second = 500000000\nbytes_burst = 500000000' "$hash_line")"
    redis_port=16379
    taskset -c 1 redis-server --bind 127.0.0.1 --port "$redis_port" --save '' --appendonly no >"$work/redis.log" 2>&1 &
    pids+=($!)
    until redis-cli -p "$redis_port" ping >/dev/null 2>&1; do sleep 0.1; done
    v_node() { run "per-node quotas" ""; }
    v_region() {
      redis-cli -p "$redis_port" flushall >/dev/null
      redis-cli -p "$redis_port" config resetstat >/dev/null
      run "region-wide" "" WEIR_REDIS_URL="redis://127.0.0.1:$redis_port"
      # Script calls (each a lease, give-back or heartbeat: one round trip)
      # and Redis' CPU time for them, over the node's whole run.
      redis-cli -p "$redis_port" info commandstats | tr -d '\r' \
        | sed -n 's/^cmdstat_evalsha:calls=\([0-9]*\),usec=\([0-9]*\),.*/\1 \2/p' >>"$work/redis_ops"
    }
    order=(v_node v_region)
    ;;
  *) echo "usage: $0 filters|connections|soak|telemetry|spool|quotas" >&2; exit 2 ;;
esac
if [ -n "${BASE:-}" ]; then
  # Each variant on the base commit's node too, in the same rounds.
  for v in "${order[@]}"; do
    eval "${v}_base() { BIN=\"\$work/weir-base\" run_suffix=' (base)' $v; }"
  done
  with_base=()
  for v in "${order[@]}"; do with_base+=("${v}_base" "$v"); done
  order=("${with_base[@]}")
fi
n=${#order[@]}
for r in $(seq 0 $((rounds - 1))); do
  for i in $(seq 0 $((n - 1))); do "${order[$(( (i + r) % n ))]}"; done
done

# Medians per variant. Each ratio is the median over rounds of that round's
# ratio to the first variant, both oriented so that 1 is "costs nothing"
# and lower is worse: events/s variant / base, and node CPU per request
# base / variant (the node's CPU time over the measured window divided by
# the requests answered 2xx in it).
python3 - "$work/results" <<'EOF'
import json, statistics, sys
rows = [(name, json.loads(line)) for name, line in (l.rstrip("\n").split("\t", 1) for l in open(sys.argv[1]))]
names = list(dict.fromkeys(name for name, _ in rows))
runs = {name: [r for n, r in rows if n == name] for name in names}
base = runs[names[0]]
cpu = lambda r: r["node_cpu_ticks"] / r["clk_tck"] * 1e6 / max(r["ok_requests"], 1)
rss = lambda r: r.get("node_peak_rss_kib", 0) / 1024
print(f"{'variant':<16} {'events/s':>10} {'ratio':>6} {'p50 ms':>7} {'p99 ms':>7} {'failed':>7} {'node CPU µs/req':>16} {'ratio':>6} {'peak RSS MB':>12}  (medians of {len(base)} rounds; ratios per round, to the first variant)")
for name in names:
    rs = runs[name]
    med = lambda key: statistics.median(r[key] for r in rs)
    ratio = statistics.median(r["events_per_s"] / b["events_per_s"] for r, b in zip(rs, base))
    cpu_ratio = statistics.median(cpu(b) / cpu(r) for r, b in zip(rs, base))
    failed = sum(r["non_2xx"] + r["errors"] for r in rs)
    print(f"{name:<16} {med('events_per_s'):>10.0f} {ratio:>6.3f} {med('p50_ms'):>7.1f} {med('p99_ms'):>7.1f} {failed:>7} {statistics.median(cpu(r) for r in rs):>16.1f} {cpu_ratio:>6.3f} {statistics.median(rss(r) for r in rs):>12.1f}")
# Where that CPU went: the runtime's threads (the request path) and
# librdkafka's, user and kernel apart (weir-load reads /proc/<pid>/task).
if all("node_cpu_by_thread" in r for r in base):
    kinds = [("runtime", "user"), ("runtime", "system"), ("librdkafka", "user"), ("librdkafka", "system"), ("other", "user"), ("other", "system")]
    per_req = lambda r, k, m: r["node_cpu_by_thread"][k][m] / r["clk_tck"] * 1e6 / max(r["ok_requests"], 1)
    label = {"runtime": "rt", "librdkafka": "rdk", "other": "other", "user": "user", "system": "sys"}
    print(f"\n{'node CPU µs/req':<16} " + " ".join(f"{label[k] + ' ' + label[m]:>10}" for k, m in kinds) + "  (medians; rt = the runtime's workers, the request path; rdk = librdkafka's threads)")
    for name in names:
        rs = runs[name]
        print(f"{name:<16} " + " ".join(f"{statistics.median(per_req(r, k, m) for r in rs):>10.1f}" for k, m in kinds))
quiet = [n for n in names if "quiet_p50_ms" in runs[n][0]]
if quiet:
    print(f"\n{'quiet tenant':<22} {'p50 ms':>7} {'p99 ms':>7} {'requests':>9} {'failed':>7}  (medians; its own connection, 20 requests/s)")
    for name in quiet:
        rs = runs[name]
        med = lambda key: statistics.median(r[key] for r in rs)
        failed = sum(r["quiet_requests"] - r["quiet_ok"] for r in rs)
        print(f"{name:<22} {med('quiet_p50_ms'):>7.1f} {med('quiet_p99_ms'):>7.1f} {med('quiet_requests'):>9.0f} {failed:>7}")
pairs = [(n, n + " (base)") for n in names if n + " (base)" in runs]
if pairs:
    print(f"\n{'this tree vs base':<16} {'events/s':>10} {'node CPU':>9}  (medians of per-round ratios; 1 = same, lower = worse)")
    for name, base_name in pairs:
        ev = statistics.median(r["events_per_s"] / b["events_per_s"] for r, b in zip(runs[name], runs[base_name]))
        cp = statistics.median(cpu(b) / cpu(r) for r, b in zip(runs[name], runs[base_name]))
        print(f"{name:<16} {ev:>10.3f} {cp:>9.3f}")
EOF
if [ "$mode" = soak ]; then
  python3 - "$work/results" <<'PY'
import json, sys
run = json.loads(open(sys.argv[1]).readline().split("\t", 1)[1])
samples = [kib / 1024 for kib in run["node_rss_kib_every_10s"]]
start = 6 if len(samples) > 7 else 0  # after the first minute, when there is one
settled = min(samples[start:])
print(f"\nRSS every 10 s (MB): {' '.join(f'{s:.0f}' for s in samples)}")
print(f"RSS {settled:.0f} MB at its lowest from {start * 10} s, {samples[-1]:.0f} MB at the end: "
      f"growth {samples[-1] - settled:.0f} MB over {(len(samples) - 1 - start) * 10} s")
PY
fi
if [ -s "$work/redis_ops" ]; then
  # Per second of the node's whole run: its start, weir-load's warm-up
  # second, the measured window and the tail (about DURATION + 2 s).
  python3 - "$work/redis_ops" "$duration" <<'PY'
import statistics, sys
runs = [tuple(map(int, l.split())) for l in open(sys.argv[1]) if l.strip()]
seconds = float(sys.argv[2]) + 2
calls = statistics.median(c for c, _ in runs)
usec = statistics.median(u for _, u in runs)
print(f"\nRedis, one node at full load: {calls / seconds:.1f} script calls/s "
      f"(leases, give-backs, heartbeats; median of {len(runs)} runs), "
      f"{usec / calls:.0f} µs of Redis CPU each, {usec / seconds / 1e4:.3f}% of a Redis core")
PY
fi
