#!/usr/bin/env bash
# Runs the whole test suite: formatting, lints, unit tests, end-to-end tests
# against a real tansu broker and real weir processes, the benches once
# each in test mode, and every fuzz target for a short smoke. Installs what
# it needs first (scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --tests
export WEIR_TANSU="$PWD/var/bin/tansu"
# CI builds once from a clean clone: incremental state would only take disk.
if [[ -n "${CI:-}" ]]; then export CARGO_INCREMENTAL=0; fi
scripts/build-filters.sh
cargo fmt --all -- --check
cargo fmt --manifest-path fuzz/Cargo.toml -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace --all-targets
# Each fuzz target for 20 s from its checked-in corpus (fuzz/corpus): a
# parser that crashes on one of those inputs, or on what libFuzzer makes of
# them in that time, fails the suite (scripts/fuzz.sh runs them for longer).
scripts/fuzz.sh 20
