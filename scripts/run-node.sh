#!/usr/bin/env bash
# Runs a local Weir node: HTTP on 127.0.0.1:8080, HTTPS on :8443 (self-signed),
# admin on :9090, in front of the embedded in-memory Kafka broker unless
# WEIR_KAFKA_BROKERS names a real one. Any WEIR_* variable overrides config/weir.toml.
#
# WEIR_PROFILE=debug builds without optimisations (quicker to build, slower to run).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${WEIR_GEOIP_PATH+set}" ]; then
  scripts/setup.sh --geoip
  [ -s var/geoip/dbip-city-lite.mmdb ] && export WEIR_GEOIP_PATH="$PWD/var/geoip/dbip-city-lite.mmdb"
else
  scripts/setup.sh
fi
profile="${WEIR_PROFILE:-release}"
flag=(--release); [ "$profile" = debug ] && flag=()
cargo build "${flag[@]}" -p weir-gateway --bin weir
exec "target/$profile/weir" --config "${WEIR_CONFIG:-config/weir.toml}" serve
