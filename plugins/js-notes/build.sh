#!/usr/bin/env bash
# Builds this plugin into OUT_DIR/<folder name>.wasm (OUT_DIR defaults to the current folder).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
exec "$here/../../guest-sdk/js/build.sh" "$here" "${1:-.}/$(basename "$here").wasm"
