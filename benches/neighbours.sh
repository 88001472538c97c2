#!/usr/bin/env bash
# A noisy neighbour's filter against a quiet tenant: one node (core 0),
# tenant "load" with the filter component FILTER hammered by weir-load
# (core 1, 32 connections, batch 50), tenant "quiet" (Rust pass-through)
# at 20 requests/s; weir-load reports the quiet tenant's latency apart.
#
#   benches/neighbours.sh target/wasm32-unknown-unknown/release/pass_through.wasm
#   benches/neighbours.sh target/wasm-py/pass_through.wasm
#   benches/neighbours.sh target/wasm-js/pass_through.wasm
#
# Python and JavaScript components load from target/filter-cache (compile
# them once first, e.g. with `WEIR_FILTER_CACHE=target/filter-cache weir
# filter test`). Needs scripts/setup.sh --tests, scripts/build-filters.sh
# and a release build (WEIR_BIN: another node binary, for an A/B run).
set -euo pipefail
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$(dirname "$0")/.."
. benches/ready.sh
loadfilter="${1:?usage: $0 FILTER.wasm}"
port=19392
var/bin/tansu broker --listener-url "tcp://127.0.0.1:$port" --advertised-listener-url "tcp://127.0.0.1:$port" --storage-engine memory://tansu/ >"$work"/mixed-tansu.log 2>&1 &
broker=$!
until var/bin/tansu topic create --broker "tcp://127.0.0.1:$port" --partitions 4 events.LOAD >/dev/null 2>&1; do sleep 0.2; done
tenants="$(target/release/weir-load --print-tenants --key load --quiet-key quiet)"
load_block="$(sed -n '1,7p' <<<"$tenants")"
quiet_block="$(sed -n '9,15p' <<<"$tenants")"
cat >"$work"/mixed.toml <<TOML
[server]
listen = "127.0.0.1:18680"
tls_listen = ""
admin_listen = "127.0.0.1:19680"
[kafka]
brokers = "127.0.0.1:$port"
[log]
level = "warn"
[filters]
cache_path = "$PWD/target/filter-cache"
$load_block
[[tenants.filters]]
path = "$PWD/$loadfilter"
memory_mb = 128
timeout_ms = 1000
$quiet_block
[[tenants.filters]]
path = "$PWD/target/wasm32-unknown-unknown/release/pass_through.wasm"
TOML
taskset -c 0 "${WEIR_BIN:-target/release/weir}" --config "$work"/mixed.toml serve >"$work"/mixed-node.log 2>&1 &
node=$!
ready 127.0.0.1:19680
taskset -c 1 target/release/weir-load --target 127.0.0.1:18680 --key load --quiet-key quiet --quiet-rate 20 --concurrency 32 --batch 50 --event-bytes 400 --duration 10 2>&1 | tail -4
kill $node $broker; wait 2>/dev/null || true
