#!/usr/bin/env bash
# Installs the C plugin toolchain when it is missing and prints the folder of wit-bindgen:
# - Debian packages clang-19, lld-19, wasi-libc and libclang-rt-19-dev-wasm32 (the compiler,
#   linker, C library and compiler runtime for wasm32-wasi);
# - wit-bindgen-cli 0.63.0 with only its C generator, by `cargo install` into
#   $SWITCHBOARD_GUEST_TARGET_DIR/c/tools (about 5 minutes of compiling, once);
# - the JavaScript toolchain (guest-sdk/js/toolchain.sh), for `jco new` and the WASI
#   preview1-to-preview2 reactor adapter that turn the core module into a component.
set -euo pipefail
sdk="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$sdk/../.." && pwd)"
guest_target="${SWITCHBOARD_GUEST_TARGET_DIR:-$root/target/guests}"
tools="$guest_target/c/tools"
wit_bindgen_version="0.63.0"
packages=(clang-19 lld-19 wasi-libc libclang-rt-19-dev-wasm32)

"$root/scripts/apt-install.sh" "${packages[@]}"

if [ "$("$tools/bin/wit-bindgen" --version 2>/dev/null)" != "wit-bindgen-cli $wit_bindgen_version" ]; then
    echo "c toolchain: cargo install wit-bindgen-cli $wit_bindgen_version (C generator only)" >&2
    cargo install wit-bindgen-cli --version "$wit_bindgen_version" --locked --force \
        --no-default-features --features c --root "$tools" --target-dir "$tools/build" >&2
    rm -rf "$tools/build"
fi

"$root/guest-sdk/js/toolchain.sh" >/dev/null
echo "$tools"
