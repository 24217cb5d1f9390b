#!/usr/bin/env bash
# Builds a JavaScript listener plugin into a component.
#
#   guest-sdk/js/build.sh PLUGIN_DIR OUT.wasm
#
# PLUGIN_DIR holds `listener.js` (an ES module exporting `listener`) and any modules it
# imports from that folder; it may import the helpers as '../../guest-sdk/js/switchboard.js'
# (it is built from a staging copy laid out like this repository, wherever it lives).
# The toolchain is installed by toolchain.sh; unchanged builds are reused (../build-lib.sh).
set -euo pipefail
sdk="$(cd "$(dirname "$0")" && pwd)"
. "$sdk/../build-lib.sh"
guest_build_init js listener.js "$@" \
    "$sdk/switchboard.js" "$sdk/componentize.mjs" "$sdk/package-lock.json" "$sdk/build.sh"

if [ ! -f "$built" ]; then
    toolchain="$("$sdk/toolchain.sh")"
    rm -rf "$stage"
    mkdir -p "$stage/plugins/$name" "$stage/guest-sdk/js" "$work/out"
    cp -R "$src/." "$stage/plugins/$name/"
    cp "$sdk/switchboard.js" "$stage/guest-sdk/js/"
    (cd "$stage" && node "$toolchain/componentize.mjs" "plugins/$name/listener.js" "$built.tmp$$" \
        --wit "$root/guest-sdk/wit/0.1.0")
    mv "$built.tmp$$" "$built"
fi
guest_build_finish
