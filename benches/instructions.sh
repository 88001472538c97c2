#!/usr/bin/env bash
# Instructions per request of one or more `weir` binaries, counted by
# callgrind: repeatable on a noisy machine, where events/s between two runs
# of the same binary move by ±15%. For each binary: a fresh tansu broker and
# node (no filter, the MaxMind test GeoIP database), warmed up, counters
# zeroed, then `weir-load` for DURATION seconds (default 15; the node runs
# ~50x slower under callgrind), counters dumped; instructions of all the
# node's threads divided by the requests answered 2xx.
#
#   benches/instructions.sh /tmp/weir-base target/release/weir
#   KEEP=var/callgrind benches/instructions.sh ...   # and keep the dumps
#   EXTRA="$(cat filters.toml)" benches/instructions.sh ...   # TOML after the
#     load tenant, e.g. its [[tenants.filters]]
#
# Needs valgrind, scripts/setup.sh --tests, and a release weir-load
# (cargo build --release -p weir-benches).
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/ready.sh
duration="${DURATION:-15}"
port=19192
work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
[ $# -ge 1 ] || { echo "usage: $0 WEIR_BINARY..." >&2; exit 2; }
tenant="$(target/release/weir-load --print-tenants --key load)"

for bin in "$@"; do
  var/bin/tansu broker --listener-url "tcp://127.0.0.1:$port" \
    --advertised-listener-url "tcp://127.0.0.1:$port" --storage-engine memory://tansu/ >"$work/tansu.log" 2>&1 &
  broker=$!
  pids+=("$broker")
  until var/bin/tansu topic create --broker "tcp://127.0.0.1:$port" --partitions 4 events.LOAD >/dev/null 2>&1; do sleep 0.2; done
  cat >"$work/weir.toml" <<EOF
[server]
listen = "127.0.0.1:18180"
tls_listen = ""
admin_listen = "127.0.0.1:19190"
[kafka]
brokers = "127.0.0.1:$port"
[geoip]
path = "$PWD/tests/fixtures/GeoIP2-City-Test.mmdb"
[log]
level = "warn"
$tenant
${EXTRA:-}
EOF
  valgrind --tool=callgrind --callgrind-out-file="$work/callgrind.%p" \
    "$bin" --config "$work/weir.toml" serve >"$work/node.log" 2>&1 &
  node=$!
  pids+=("$node")
  ready 127.0.0.1:19190 1200
  # Warm up (topic listing, first connections), then count from zero.
  target/release/weir-load --target 127.0.0.1:18180 --key load --concurrency 8 --batch 50 \
    --event-bytes 400 --duration 3 --json >/dev/null
  callgrind_control --zero "$node" >/dev/null
  line="$(target/release/weir-load --target 127.0.0.1:18180 --key load --concurrency 8 --batch 50 \
    --event-bytes 400 --duration "$duration" --json | tail -1)"
  callgrind_control --dump "$node" >/dev/null
  kill "$node"; wait "$node" 2>/dev/null || true
  kill "$broker"; wait "$broker" 2>/dev/null || true
  python3 - "$bin" "$line" "$work" "$node" <<'PY'
import glob, json, sys
bin, line, work, pid = sys.argv[1:]
ok = json.loads(line)["ok_requests"]
# The dump after --zero: the file with the highest part number.
dumps = sorted(glob.glob(f"{work}/callgrind.{pid}.*"), key=lambda p: int(p.rsplit(".", 1)[1]))
total = 0
for l in open(dumps[-1]):
    if l.startswith("summary:") or l.startswith("totals:"):
        total = int(l.split()[1]); break
print(f"{bin}\t{ok} requests\t{total} instructions\t{total / max(ok, 1):,.0f} per request")
PY
  # KEEP=dir keeps each binary's dump there, for callgrind_annotate.
  if [ -n "${KEEP:-}" ]; then
    mkdir -p "$KEEP"
    cp "$(ls "$work"/callgrind."$node".* | sort -t. -k3 -n | tail -1)" "$KEEP/$(basename "$bin").callgrind"
  fi
  rm -f "$work"/callgrind.*
done
