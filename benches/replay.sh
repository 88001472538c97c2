#!/usr/bin/env bash
# The spool's replay rate, alone and alongside new traffic. A release node
# with a spool (fsync always) whose brokers' address answers nobody takes
# `weir-load` for FILL seconds (default 10): everything is spooled. Then a
# tansu broker starts at that address and, with LOAD=1 (default), weir-load
# goes on sending for DURATION seconds (default 30) while the spool drains.
# Printed: events spooled, seconds until the spool is empty (or still
# spooled after DURATION), replay rate, and the new traffic's own figures.
# Same core split as compare.sh: node on core 0, load and broker on core 1.
#
#   benches/replay.sh            # replay alongside new traffic
#   LOAD=0 benches/replay.sh     # replay alone
#
# Needs scripts/setup.sh --tests --geoip.
set -euo pipefail
cd "$(dirname "$0")/.."
fill="${FILL:-10}"
duration="${DURATION:-30}"
load="${LOAD:-1}"
port=19093
work="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

cargo build --quiet --release -p weir-gateway -p weir-benches
geoip="var/geoip/dbip-city-lite.mmdb"
tenant="$(target/release/weir-load --print-tenants --key load)"
cat >"$work/weir.toml" <<EOF
[server]
listen = "127.0.0.1:18081"
tls_listen = ""
admin_listen = "127.0.0.1:19091"
[kafka]
brokers = "127.0.0.1:$port"
[spool]
path = "$work/spool"
max_bytes = 8589934592
tenant_max_bytes = 8589934592
[geoip]
path = "$PWD/$geoip"
[log]
level = "warn"
$tenant
EOF
taskset -c 0 target/release/weir --config "$work/weir.toml" serve >"$work/node.log" 2>&1 &
pids+=("$!")
for _ in $(seq 100); do curl -sf http://127.0.0.1:19091/readyz >/dev/null && break; sleep 0.1; done
records() {
  curl -sf http://127.0.0.1:19091/metrics | awk '/^weir_spool_records[{ ]/ { s += $NF } END { print s + 0 }'
}
replayed() {
  curl -sf http://127.0.0.1:19091/metrics | awk '/^weir_spool_events_total[{].*outcome="(replayed|late)"/ { s += $NF } END { print s + 0 }'
}
loadgen() {
  taskset -c 1 target/release/weir-load --target 127.0.0.1:18081 --key load --concurrency 64 \
    --batch 50 --event-bytes 400 --duration "$1" --json | tail -1
}
echo "fill (Kafka away): $(loadgen "$fill")"
spooled="$(records)"
echo "spooled: $spooled events"

taskset -c 1 var/bin/tansu broker --listener-url "tcp://127.0.0.1:$port" \
  --advertised-listener-url "tcp://127.0.0.1:$port" --storage-engine memory://tansu/ >"$work/tansu.log" 2>&1 &
pids+=("$!")
until var/bin/tansu topic create --broker "tcp://127.0.0.1:$port" --partitions 4 events.LOAD >/dev/null 2>&1; do sleep 0.2; done
started="$(date +%s.%N)"
if [ "$load" = 1 ]; then
  loadgen "$duration" >"$work/load.json" &
  pids+=("$!")
fi
drained=""
while :; do
  now="$(date +%s.%N)"
  elapsed="$(awk -v a="$now" -v b="$started" 'BEGIN { printf "%.1f", a - b }')"
  left="$(records)"
  if [ "$left" = 0 ]; then drained="$elapsed"; break; fi
  if awk -v e="$elapsed" -v d="$duration" 'BEGIN { exit !(e > d) }'; then break; fi
  sleep 0.5
done
sent="$(replayed)"
if [ -n "$drained" ]; then
  echo "spool empty after $drained s: $sent events replayed, $(awk -v n="$sent" -v t="$drained" 'BEGIN { printf "%.0f", n / t }') events/s (new traffic for devices still spooled is spooled behind and replayed too)"
else
  echo "spool not empty after $elapsed s: $left events left; $sent replayed, $(awk -v n="$sent" -v t="$elapsed" 'BEGIN { printf "%.0f", n / t }') events/s"
fi
if [ "$load" = 1 ]; then
  wait "${pids[-1]}" 2>/dev/null || true
  echo "new traffic meanwhile: $(cat "$work/load.json")"
fi
