#!/usr/bin/env bash
# The whole test suite, in tiers: formatting, lints and docs; the dependency audit; the
# hermetic tier (`cargo test`: unit and in-process tests); then, after installing what it
# needs and building every guest once, the end-to-end tier (real hosts, brokers, sockets and
# components built from source) and the browser test. Arguments go to both `cargo test`s.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

echo "== fmt"
cargo fmt --all --check
cargo fmt --all --check --manifest-path plugins/Cargo.toml
cargo fmt --all --check --manifest-path tests/guests/Cargo.toml

echo "== clippy"
cargo clippy --workspace --all-targets --features switchboard-tests/e2e -- -D warnings
guest_target="${SWITCHBOARD_GUEST_TARGET_DIR:-$PWD/target/guests}"
CARGO_TARGET_DIR="$guest_target/plugins" cargo clippy --release --target wasm32-wasip2 \
    --manifest-path plugins/Cargo.toml -- -D warnings
CARGO_TARGET_DIR="$guest_target/test-guests" cargo clippy --release --target wasm32-wasip2 \
    --manifest-path tests/guests/Cargo.toml -- -D warnings

echo "== docs"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet

echo "== dependency audit"
scripts/audit.sh

echo "== hermetic tests"
cargo test "$@"

echo "== guests"
scripts/build-guests.sh

echo "== end-to-end tests"
# The same package set as the hermetic tier, so nothing but the test targets is rebuilt.
cargo test --workspace --features switchboard-tests/e2e "$@"

echo "== browser test"
target_dir="${CARGO_TARGET_DIR:-$PWD/target}"
# The workspace's feature set, as the tiers above: `-p switchboard` alone would compile
# wasmtime once more with other features.
cargo build --workspace --features switchboard-tests/e2e --bin switchboard
scripts/build-plugins.sh "$target_dir/plugins-dist" >/dev/null
SWITCHBOARD_BIN="$target_dir/debug/switchboard" SWITCHBOARD_PLUGINS_DIR="$target_dir/plugins-dist" \
    SWITCHBOARD_SCREENSHOT="${SWITCHBOARD_SCREENSHOT:-$target_dir/browser-screenshot.png}" \
    tests/browser/run.sh
