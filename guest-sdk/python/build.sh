#!/usr/bin/env bash
# Builds a Python listener plugin into a component.
#
#   guest-sdk/python/build.sh PLUGIN_DIR OUT.wasm
#
# PLUGIN_DIR holds `app.py` (the module with the `Listener` class) and any modules it
# imports; the helpers (`import switchboard`) come from this folder. The toolchain is
# installed by toolchain.sh; unchanged builds are reused (../build-lib.sh).
set -euo pipefail
sdk="$(cd "$(dirname "$0")" && pwd)"
. "$sdk/../build-lib.sh"
guest_build_init python app.py "$@" \
    "$sdk/switchboard.py" "$sdk/requirements.txt" "$sdk/build.sh"

if [ ! -f "$built" ]; then
    venv="$("$sdk/toolchain.sh")"
    # Built from a staging copy: the interpreter inside componentize-py writes bytecode
    # caches next to the modules it imports.
    rm -rf "$stage"
    mkdir -p "$stage/plugin" "$stage/sdk" "$work/out"
    cp -R "$src/." "$stage/plugin/"
    cp "$sdk/switchboard.py" "$stage/sdk/"
    started=$SECONDS
    "$venv/bin/componentize-py" -d "$root/guest-sdk/wit/0.1.0" -w plugin \
        componentize app -p "$stage/plugin" -p "$stage/sdk" -o "$built.tmp$$" >&2
    mv "$built.tmp$$" "$built"
    echo "componentize-py: $name -> $built ($(( $(stat -c %s "$built") / 1000000 )) MB, $((SECONDS - started)) s)" >&2
fi
guest_build_finish
