#!/usr/bin/env bash
# Builds a JavaScript listener plugin into a component.
#
#   guest-sdk/js/build.sh PLUGIN_DIR OUT.wasm
#
# PLUGIN_DIR holds `listener.js` (an ES module exporting `listener`) and any modules it
# imports from that folder; it may import the helpers as '../../guest-sdk/js/switchboard.js'
# (it is built from a staging copy laid out like this repository, wherever it lives).
# The toolchain is installed by toolchain.sh. A build whose inputs (the plugin folder, the
# helpers, the lock file, the WIT contract) did not change is reused from
# $SWITCHBOARD_GUEST_TARGET_DIR/js/out, so repeated builds are fast and byte-identical.
set -euo pipefail
sdk="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$sdk/../.." && pwd)"
src="$(cd "$1" && pwd)"
out="$2"
name="$(basename "$src")"
guest_target="${SWITCHBOARD_GUEST_TARGET_DIR:-$root/target/guests}"
work="$guest_target/js"

[ -f "$src/listener.js" ] || { echo "$src/listener.js: no such file" >&2; exit 1; }

key="$( (cd "$src" && find . -type f ! -name '*.wasm' ! -name '*.toml' ! -name '*.md' -print0 | sort -z | xargs -0 sha256sum
         cat "$sdk/switchboard.js" "$sdk/componentize.mjs" "$sdk/package-lock.json" "$sdk/build.sh" \
             "$root"/guest-sdk/wit/*.wit | sha256sum) | sha256sum | cut -c1-16)"
built="$work/out/$name-$key.wasm"

if [ ! -f "$built" ]; then
    toolchain="$("$sdk/toolchain.sh")"
    stage="$work/stage/$name-$key"
    rm -rf "$stage"
    mkdir -p "$stage/plugins/$name" "$stage/guest-sdk/js" "$work/out"
    cp -R "$src/." "$stage/plugins/$name/"
    cp "$sdk/switchboard.js" "$stage/guest-sdk/js/"
    (cd "$stage" && node "$toolchain/componentize.mjs" "plugins/$name/listener.js" "$built" \
        --wit "$root/guest-sdk/wit")
    rm -rf "$stage"
    # Keep the last few builds of each plugin.
    ls -t "$work/out/$name"-*.wasm | tail -n +5 | xargs -r rm -f
fi
mkdir -p "$(dirname "$out")"
cp "$built" "$out"
echo "$out"
