#!/usr/bin/env bash
# Builds a C listener plugin into a component.
#
#   guest-sdk/c/build.sh PLUGIN_DIR OUT.wasm
#
# Every `*.c` of PLUGIN_DIR is compiled with the helpers (switchboard.c) and the bindings
# that `wit-bindgen c` generates from the WIT contract (into the build folder, never into the
# sources), for wasm32-wasi as a reactor; `jco new` then wraps the core module into a
# component with the WASI reactor adapter. The toolchain is installed by toolchain.sh.
# A build whose inputs (the plugin folder, the helpers, the WIT contract, the tool versions)
# did not change is reused from $SWITCHBOARD_GUEST_TARGET_DIR/c/out.
set -euo pipefail
sdk="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$sdk/../.." && pwd)"
src="$(cd "$1" && pwd)"
out="$2"
name="$(basename "$src")"
guest_target="${SWITCHBOARD_GUEST_TARGET_DIR:-$root/target/guests}"
work="$guest_target/c"

key="$( (cd "$src" && find . -type f ! -name '*.wasm' ! -name '*.toml' ! -name '*.md' -print0 | sort -z | xargs -0 sha256sum
         cat "$sdk/switchboard.c" "$sdk/switchboard.h" "$sdk/build.sh" "$sdk/toolchain.sh" \
             "$root/guest-sdk/js/package-lock.json" "$root"/guest-sdk/wit/*.wit \
             | sha256sum) | sha256sum | cut -c1-16)"
built="$work/out/$name-$key.wasm"

if [ ! -f "$built" ]; then
    tools="$("$sdk/toolchain.sh")"
    js_toolchain="$guest_target/js/toolchain"
    stage="$work/stage/$name-$key"
    rm -rf "$stage"
    mkdir -p "$stage/bindings" "$work/out"
    "$tools/bin/wit-bindgen" c "$root/guest-sdk/wit" --world plugin \
        --out-dir "$stage/bindings" >"$stage/wit-bindgen.log" 2>&1 \
        || { cat "$stage/wit-bindgen.log" >&2; exit 1; }
    sources=("$src"/*.c)
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
    rm -rf "$stage"
    echo "c: $name -> $built ($(stat -c %s "$built") bytes)" >&2
    ls -t "$work/out/$name"-*.wasm | tail -n +5 | xargs -r rm -f
fi
mkdir -p "$(dirname "$out")"
cp "$built" "$out"
echo "$out"
