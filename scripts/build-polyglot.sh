#!/usr/bin/env bash
# Builds the JavaScript, Python and C example plugins (plugins/js-*, plugins/python-*,
# plugins/c-*) and copies the components, with their sidecars, to the folder given as $1
# (default: target/plugins-dist), named after their folders (js-greet.wasm, ...).
#
# Each plugin folder's build.sh does the work with the toolchain of its language, which is
# installed on first use (apt, npm, pip in a venv, cargo install) into
# $SWITCHBOARD_GUEST_TARGET_DIR (default: target/guests). Unchanged plugins are not rebuilt.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-target/plugins-dist}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
for dir in plugins/js-*/ plugins/python-*/ plugins/c-*/; do
    [ -f "$dir/build.sh" ] || continue
    name="$(basename "$dir")"
    started=$SECONDS
    bash "$dir/build.sh" "$out" >/dev/null
    echo "built $name.wasm ($((SECONDS - started)) s)" >&2
    # Sidecars (config, capabilities) travel with their plugins.
    for sidecar in "$dir"*.toml; do
        [ -f "$sidecar" ] && cp "$sidecar" "$out/"
    done
done
echo "plugins in $out:" && ls "$out"
