#!/usr/bin/env bash
# The whole test suite: formatting, lints (host and guests), unit and end-to-end tests.
# End-to-end tests build the guest components from source and start real hosts.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

echo "== fmt"
cargo fmt --all --check
cargo fmt --all --check --manifest-path plugins/Cargo.toml
cargo fmt --all --check --manifest-path tests/guests/Cargo.toml

echo "== clippy"
cargo clippy --workspace --all-targets -- -D warnings
guest_target="${SWITCHBOARD_GUEST_TARGET_DIR:-$PWD/target/guests}"
CARGO_TARGET_DIR="$guest_target/plugins" cargo clippy --release --target wasm32-wasip2 \
    --manifest-path plugins/Cargo.toml -- -D warnings
CARGO_TARGET_DIR="$guest_target/test-guests" cargo clippy --release --target wasm32-wasip2 \
    --manifest-path tests/guests/Cargo.toml -- -D warnings

echo "== tests"
cargo test --workspace "$@"

echo "== browser test"
target_dir="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build -p switchboard
scripts/build-plugins.sh "$target_dir/plugins-dist" >/dev/null
SWITCHBOARD_BIN="$target_dir/debug/switchboard" SWITCHBOARD_PLUGINS_DIR="$target_dir/plugins-dist" \
    SWITCHBOARD_SCREENSHOT="${SWITCHBOARD_SCREENSHOT:-$target_dir/browser-screenshot.png}" \
    tests/browser/run.sh
