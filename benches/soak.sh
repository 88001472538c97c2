#!/usr/bin/env bash
# A soak: one node under steady load for DURATION seconds (default 600),
# its RSS sampled every 10 s by weir-load, and whether it grew. Same core
# split as compare.sh (node on core 0, load and a tansu broker on core 1),
# CONNS connections (default 64) posting 27 KB bodies (50 events of ~550
# bytes), GeoIP on. Printed: weir-load's figures, the RSS samples, and the
# growth from the lowest sample after the first minute (warm-up: buffers
# and pools filling) to the last; a node that does not leak ends within a
# few MB of where it settled.
#
#   benches/soak.sh                  # ten minutes at 64 connections
#   CONNS=1000 DURATION=300 benches/soak.sh
#
# Needs scripts/setup.sh --tests --geoip.
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/ready.sh
duration="${DURATION:-600}"
conns="${CONNS:-64}"
port=19094
work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

cargo build --quiet --release -p weir-gateway -p weir-benches
geoip=var/geoip/dbip-city-lite.mmdb
[ -f "$geoip" ] || scripts/setup.sh --geoip
cat >"$work/weir.toml" <<EOF2
[server]
listen = "127.0.0.1:18082"
tls_listen = ""
admin_listen = "127.0.0.1:19095"
max_connections_per_address = 0
max_inflight = 4096
[kafka]
brokers = "127.0.0.1:$port"
[geoip]
path = "$PWD/$geoip"
[log]
level = "warn"
$(target/release/weir-load --print-tenants --key load)
[defaults]
max_inflight = 4096
EOF2
taskset -c 1 var/bin/tansu broker --listener-url "tcp://127.0.0.1:$port" \
  --advertised-listener-url "tcp://127.0.0.1:$port" --storage-engine memory://tansu/ >"$work/tansu.log" 2>&1 &
pids+=($!)
until var/bin/tansu topic create --broker "tcp://127.0.0.1:$port" --partitions 4 events.LOAD >/dev/null 2>&1; do sleep 0.2; done
taskset -c 0 target/release/weir --config "$work/weir.toml" serve >"$work/node.log" 2>&1 &
node=$!
pids+=("$node")
ready 127.0.0.1:19095
taskset -c 1 target/release/weir-load --target 127.0.0.1:18082 --key load --concurrency "$conns" \
  --batch 50 --event-bytes 550 --duration "$duration" --node-pid "$node" | tee "$work/load.txt"
python3 - "$work/load.txt" <<'PY'
import re, sys
line = next(l for l in open(sys.argv[1]) if l.startswith("node memory"))
samples = [int(x) for x in re.search(r"every 10 s: ([\d ]+)\)", line).group(1).split()]
# After the first minute when the run is longer than that.
start = 6 if len(samples) > 7 else 0
settled = min(samples[start:])
print(f"RSS {settled} MB at its lowest from {start * 10} s, {samples[-1]} MB at the end: "
      f"growth {samples[-1] - settled} MB over {(len(samples) - 1 - start) * 10} s")
PY
