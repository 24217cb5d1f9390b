#!/usr/bin/env bash
# Builds every component the end-to-end tests load, once, before they run (the tests read
# them and never build): the example plugins, the test guests (tests/guests: Rust, and
# JavaScript in tests/guests/js-*), the `versioned` guest at versions 1 and 2, the
# JavaScript, Python and C example plugins, and js-greet with its version changed (the
# hot-reload test). Output goes under
# $SWITCHBOARD_GUEST_TARGET_DIR (default target/guests), where tests/src/guests.rs looks.
# Unchanged guests are not rebuilt. Language toolchains are installed on first use.
set -euo pipefail
cd "$(dirname "$0")/.."
export SWITCHBOARD_GUEST_TARGET_DIR="${SWITCHBOARD_GUEST_TARGET_DIR:-$PWD/target/guests}"
guests="$SWITCHBOARD_GUEST_TARGET_DIR"

# Flags meant for the host build must not leak into the guest builds.
unset RUSTFLAGS CARGO_ENCODED_RUSTFLAGS CARGO_BUILD_TARGET
build_rust() { # MANIFEST TARGET_DIR [cargo args...]
    local manifest="$1" target="$2"
    shift 2
    CARGO_TARGET_DIR="$target" cargo build --quiet --release --target wasm32-wasip2 \
        --manifest-path "$manifest" "$@"
}

echo "guests: Rust example plugins and test guests" >&2
build_rust plugins/Cargo.toml "$guests/plugins"
build_rust tests/guests/Cargo.toml "$guests/test-guests"
for version in 1 2; do
    # A target folder per version, so the builds do not invalidate each other.
    SWITCHBOARD_TEST_VERSION="$version" build_rust tests/guests/Cargo.toml \
        "$guests/versioned-$version" --package versioned
done

echo "guests: JavaScript, Python and C example plugins" >&2
scripts/build-polyglot.sh "$guests/polyglot-dist" >/dev/null

# js-greet with VERSION 0.2.0: the source copied into a folder named after the plugin.
original="const VERSION = '0.1.0';"
grep -qF "$original" plugins/js-greet/listener.js \
    || { echo "plugins/js-greet/listener.js no longer sets: $original" >&2; exit 1; }
reloaded="$guests/polyglot-reloaded/js-greet"
mkdir -p "$reloaded"
sed "s/$original/const VERSION = '0.2.0';/" plugins/js-greet/listener.js >"$reloaded/listener.js"
guest-sdk/js/build.sh "$reloaded" "$guests/polyglot-reloaded/js-greet.wasm" >/dev/null

echo "guests: JavaScript test guests" >&2
for dir in tests/guests/js-*/; do
    guest-sdk/js/build.sh "$dir" "$guests/js-test/$(basename "$dir").wasm" >/dev/null
done
echo "guests: built under $guests" >&2
