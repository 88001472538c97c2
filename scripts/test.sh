#!/usr/bin/env bash
# Runs the whole test suite: formatting, lints, unit tests, end-to-end tests
# against a real tansu broker and real weir processes, and the benches once
# each in test mode. Installs what it needs first (scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --tests
export WEIR_TANSU="$PWD/var/bin/tansu"
# CI builds once from a clean clone: incremental state would only take disk.
if [[ -n "${CI:-}" ]]; then export CARGO_INCREMENTAL=0; fi
scripts/build-filters.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace --all-targets
