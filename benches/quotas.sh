#!/usr/bin/env bash
# How close region-wide quotas hold a tenant to its limit: 1, 2 and 4 nodes
# sharing one redis-server, each node offered far more than the whole quota
# by its own `weir-load` (every node at full speed), and what the region
# admitted in each 10 s window against what the quota allows there.
#
#   benches/quotas.sh                     # RATE=1000 requests/s, burst = RATE, 3 windows
#   RATE=500 WINDOWS=6 NODES="2 4" benches/quotas.sh
#
# The first window includes the burst (allowed: burst + 10 x RATE), the
# others only the rate (10 x RATE). Admitted = increase of
# weir_http_requests_total{status="200"} summed over the nodes, scraped at
# each window's end. A broker (tansu, in memory) and Redis run beside the
# nodes; on 2 cores the nodes and load generators share the machine, which
# only lowers what each node is offered (still far above the quota).
# Needs scripts/setup.sh --tests and a release build
# (cargo build --release -p weir-gateway -p weir-benches).
set -euo pipefail
cd "$(dirname "$0")/.."
rate="${RATE:-1000}"
windows="${WINDOWS:-3}"
node_counts="${NODES:-1 2 4}"
broker_port=19292
redis_port=16392
work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

var/bin/tansu broker --listener-url "tcp://127.0.0.1:$broker_port" \
  --advertised-listener-url "tcp://127.0.0.1:$broker_port" --storage-engine memory://tansu/ >"$work/tansu.log" 2>&1 &
pids+=($!)
until var/bin/tansu topic create --broker "tcp://127.0.0.1:$broker_port" --partitions 4 events.LOAD >/dev/null 2>&1; do sleep 0.2; done
redis-server --bind 127.0.0.1 --port "$redis_port" --save '' --appendonly no >"$work/redis.log" 2>&1 &
pids+=($!)
until redis-cli -p "$redis_port" ping >/dev/null 2>&1; do sleep 0.1; done
hash_line="$(target/release/weir-load --print-tenants --key load | grep keys_sha256)"

# The sum over the nodes of requests answered 200.
admitted() {
  local total=0 n
  for admin in "$@"; do
    n="$(curl -sf "http://$admin/metrics" | awk '/^weir_http_requests_total\{/ && /status="200"/ { s += $2 } END { printf "%d", s }')"
    total=$((total + n))
  done
  echo "$total"
}

printf '%-6s %-7s %10s %10s %10s\n' nodes window admitted allowed overshoot
for count in $node_counts; do
  redis-cli -p "$redis_port" flushall >/dev/null
  admins=()
  loads=()
  for i in $(seq 0 $((count - 1))); do
    cat >"$work/weir-$i.toml" <<EOF
[server]
listen = "127.0.0.1:$((18500 + i))"
tls_listen = ""
admin_listen = "127.0.0.1:$((19500 + i))"
[kafka]
brokers = "127.0.0.1:$broker_port"
[log]
level = "warn"
[quotas]
redis_url = "redis://127.0.0.1:$redis_port"
[[tenants]]
name = "load"
$hash_line
requests_per_second = $rate
requests_burst = $rate
EOF
    target/release/weir --config "$work/weir-$i.toml" serve >"$work/node-$i.log" 2>&1 &
    pids+=($!)
    admins+=("127.0.0.1:$((19500 + i))")
  done
  for admin in "${admins[@]}"; do
    until curl -sf "http://$admin/readyz" | grep -q "region-wide: $count node"; do sleep 0.2; done
  done
  for i in $(seq 0 $((count - 1))); do
    target/release/weir-load --target "127.0.0.1:$((18500 + i))" --key load --concurrency 8 --batch 1 \
      --event-bytes 200 --duration $((windows * 10 + 5)) >/dev/null 2>&1 &
    loads+=($!)
    pids+=($!)
  done
  # weir-load's warm-up second is load too: the windows start at its start.
  before="$(admitted "${admins[@]}")"
  start="$(date +%s.%N)"
  for w in $(seq 1 "$windows"); do
    sleep "$(python3 -c "import time; print(max(0, $start + $w * 10 - time.time()))")"
    now="$(admitted "${admins[@]}")"
    allowed=$((rate * 10))
    [ "$w" = 1 ] && allowed=$((allowed + rate))
    python3 -c "print(f'{$count:<6} {$w:<7} {$now - $before:>10} {$allowed:>10} {($now - $before) / $allowed - 1:>+10.1%}')"
    before="$now"
  done
  for p in "${loads[@]}"; do kill "$p" 2>/dev/null || true; done
  for i in $(seq 0 $((count - 1))); do pkill -f "weir-$i.toml serve" || true; done
  wait "${loads[@]}" 2>/dev/null || true
done
