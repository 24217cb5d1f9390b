#!/usr/bin/env bash
# Builds a Python listener plugin into a component.
#
#   guest-sdk/python/build.sh PLUGIN_DIR OUT.wasm
#
# PLUGIN_DIR holds `app.py` (the module with the `Listener` class) and any modules it
# imports; the helpers (`import switchboard`) come from this folder. The toolchain is
# installed by toolchain.sh. A build whose inputs (the plugin folder, the helpers, the
# requirements, the WIT contract) did not change is reused from
# $SWITCHBOARD_GUEST_TARGET_DIR/python/out, so repeated builds are fast and byte-identical.
set -euo pipefail
sdk="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$sdk/../.." && pwd)"
src="$(cd "$1" && pwd)"
out="$2"
name="$(basename "$src")"
guest_target="${SWITCHBOARD_GUEST_TARGET_DIR:-$root/target/guests}"
work="$guest_target/python"

[ -f "$src/app.py" ] || { echo "$src/app.py: no such file" >&2; exit 1; }

key="$( (cd "$src" && find . -type f ! -name '*.wasm' ! -name '*.toml' ! -name '*.md' ! -path '*/__pycache__/*' -print0 \
             | sort -z | xargs -0 sha256sum
         cat "$sdk/switchboard.py" "$sdk/requirements.txt" "$sdk/build.sh" "$root"/guest-sdk/wit/*.wit \
             | sha256sum) | sha256sum | cut -c1-16)"
built="$work/out/$name-$key.wasm"

if [ ! -f "$built" ]; then
    venv="$("$sdk/toolchain.sh")"
    # Built from a staging copy: the interpreter inside componentize-py writes bytecode
    # caches next to the modules it imports.
    stage="$work/stage/$name-$key"
    rm -rf "$stage"
    mkdir -p "$stage/plugin" "$stage/sdk" "$work/out"
    cp -R "$src/." "$stage/plugin/"
    cp "$sdk/switchboard.py" "$stage/sdk/"
    started=$SECONDS
    "$venv/bin/componentize-py" -d "$root/guest-sdk/wit" -w plugin \
        componentize app -p "$stage/plugin" -p "$stage/sdk" -o "$built.tmp$$" >&2
    mv "$built.tmp$$" "$built"
    rm -rf "$stage"
    echo "componentize-py: $name -> $built ($(( $(stat -c %s "$built") / 1000000 )) MB, $((SECONDS - started)) s)" >&2
    # Keep the last few builds of each plugin.
    ls -t "$work/out/$name"-*.wasm | tail -n +5 | xargs -r rm -f
fi
mkdir -p "$(dirname "$out")"
cp "$built" "$out"
echo "$out"
