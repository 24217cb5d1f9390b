#!/usr/bin/env bash
# Builds everything and starts the host with the example plugins on the local broker
# (no Redis needed), listening on 127.0.0.1:48080 with dev settings from switchboard.dev.toml.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build-plugins.sh target/plugins-dist
cargo build -p switchboard
bin="${CARGO_TARGET_DIR:-target}/debug/switchboard"
echo
echo "A token for user 1 (type 2):  $bin token --config switchboard.dev.toml --user-id 1 --user-type 2"
echo "Then connect a WebSocket client to ws://127.0.0.1:48080/ws?token=<token>"
echo
exec "$bin" serve --config switchboard.dev.toml
