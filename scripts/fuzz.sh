#!/usr/bin/env bash
# Runs the fuzz targets (fuzz/fuzz_targets: every parser of outside data)
# for SECONDS each (default 60), or only the TARGETs named, from the
# checked-in seed corpus (fuzz/corpus/<target>) plus what earlier runs
# found (var/fuzz/<target>, git-ignored: copy an input worth keeping into
# the seed corpus), with the dictionaries in fuzz/dict.
#
#   scripts/fuzz.sh                  # a minute per target
#   scripts/fuzz.sh 3600 headers     # an hour of the header parsers
#   RUNS=10000000 scripts/fuzz.sh    # ten million executions per target
#
# A crash stops the run, leaves its input in var/fuzz/artifacts/<target>/
# and exits non-zero: make the input a unit test, then fix it. To replay
# one: fuzz/target/x86_64-unknown-linux-gnu/release/<target> <input>.
#
# Builds with the nightly toolchain and cargo-fuzz (scripts/setup.sh --fuzz
# installs both); AddressSanitizer on unless SANITIZER=none.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
shift || true
scripts/setup.sh --fuzz
cd fuzz
cargo +nightly fuzz build -O --sanitizer "${SANITIZER:-address}"
bin=target/x86_64-unknown-linux-gnu/release
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo +nightly fuzz list)
for target in "${targets[@]}"; do
  mkdir -p "corpus/$target" "../var/fuzz/$target" "../var/fuzz/artifacts/$target"
  dict=dict/json.dict
  [ -e "dict/$target.dict" ] && dict="dict/$target.dict"
  limit=(-max_total_time="$seconds")
  [ -n "${RUNS:-}" ] && limit=(-runs="$RUNS")
  echo "fuzz: $target (${RUNS:-${seconds}s})" >&2
  # A 1 MiB stack, half a tokio worker's: a recursion the limits should
  # stop shows up as a crash, not as a deeper stack's luck. An input that
  # takes 10 s is a crash too (a parser must be linear).
  (ulimit -s 1024 && "$bin/$target" "../var/fuzz/$target" "corpus/$target" \
    -artifact_prefix="../var/fuzz/artifacts/$target/" "${limit[@]}" -dict="$dict" \
    -timeout=10 -rss_limit_mb=2048 -print_final_stats=1)
done
