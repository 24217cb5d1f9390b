#!/usr/bin/env bash
# Builds a C listener plugin into a component.
#
#   guest-sdk/c/build.sh PLUGIN_DIR OUT.wasm
#
# Every `*.c` of PLUGIN_DIR is compiled with the helpers (switchboard.c) and the bindings
# that `wit-bindgen c` generates from the WIT contract (into the build folder, never into the
# sources), for wasm32-wasi as a reactor; `jco new` then wraps the core module into a
# component with the WASI reactor adapter. The toolchain is installed by toolchain.sh;
# unchanged builds are reused (../build-lib.sh).
set -euo pipefail
sdk="$(cd "$(dirname "$0")" && pwd)"
. "$sdk/../build-lib.sh"
guest_build_init c "" "$@" \
    "$sdk/switchboard.c" "$sdk/switchboard.h" "$sdk/build.sh" "$sdk/toolchain.sh" \
    "$root/guest-sdk/js/package-lock.json"
sources=("$src"/*.c)
[ -f "${sources[0]}" ] || { echo "$src: no .c files" >&2; exit 1; }

if [ ! -f "$built" ]; then
    tools="$("$sdk/toolchain.sh")"
    js_toolchain="$guest_target/js/toolchain"
    rm -rf "$stage"
    mkdir -p "$stage/bindings" "$work/out"
    "$tools/bin/wit-bindgen" c "$root/guest-sdk/wit/0.1.0" --world plugin \
        --out-dir "$stage/bindings" >"$stage/wit-bindgen.log" 2>&1 \
        || { cat "$stage/wit-bindgen.log" >&2; exit 1; }
    clang-19 --target=wasm32-wasi -mexec-model=reactor -fuse-ld=lld -O2 -std=c11 \
        -Wall -Wextra -Werror -Wno-unused-parameter \
        -I "$stage/bindings" -I "$sdk" \
        "${sources[@]}" "$sdk/switchboard.c" \
        -Wno-missing-field-initializers "$stage/bindings/plugin.c" \
        "$stage/bindings/plugin_component_type.o" \
        -Wl,--strip-debug -o "$stage/core.wasm"
    "$js_toolchain/node_modules/.bin/jco" new "$stage/core.wasm" \
        --wasi-reactor -o "$stage/component.wasm" >/dev/null
    mv "$stage/component.wasm" "$built"
    echo "c: $name -> $built ($(stat -c %s "$built") bytes)" >&2
fi
guest_build_finish
