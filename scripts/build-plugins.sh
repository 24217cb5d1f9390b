#!/usr/bin/env bash
# Builds the example plugins in plugins/ for wasm32-wasip2 and copies the components to
# the folder given as $1 (default: target/plugins-dist).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-target/plugins-dist}"
guest_target="${SWITCHBOARD_GUEST_TARGET_DIR:-$PWD/target/guests}/plugins"
CARGO_TARGET_DIR="$guest_target" cargo build --release --target wasm32-wasip2 \
    --manifest-path plugins/Cargo.toml
mkdir -p "$out"
for wasm in "$guest_target"/wasm32-wasip2/release/*.wasm; do
    name="$(basename "$wasm" .wasm)"
    cp "$wasm" "$out/${name//_/-}.wasm"
done
# Sidecars (capabilities, config) travel with their plugins.
for sidecar in plugins/*/*.toml; do
    case "$(basename "$sidecar")" in Cargo.toml) continue ;; esac
    cp "$sidecar" "$out/"
done
echo "plugins in $out:" && ls "$out"
