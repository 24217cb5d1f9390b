#!/usr/bin/env bash
# Browser test of the demo page. Installs what it needs when missing (Debian's chromium,
# playwright-core from package-lock.json), then runs test.mjs, which starts its own host.
#
#   SWITCHBOARD_BIN=target/debug/switchboard SWITCHBOARD_PLUGINS_DIR=target/plugins-dist \
#     tests/browser/run.sh
#
# SWITCHBOARD_SCREENSHOT sets where the screenshot goes (default tests/browser/screenshot.png).
set -euo pipefail

: "${SWITCHBOARD_BIN:?set SWITCHBOARD_BIN to the switchboard binary}"
: "${SWITCHBOARD_PLUGINS_DIR:?set SWITCHBOARD_PLUGINS_DIR to the folder of plugin components}"
# Paths relative to the caller's directory stay valid after the cd below.
SWITCHBOARD_BIN="$(realpath "$SWITCHBOARD_BIN")"
SWITCHBOARD_PLUGINS_DIR="$(realpath "$SWITCHBOARD_PLUGINS_DIR")"
export SWITCHBOARD_BIN SWITCHBOARD_PLUGINS_DIR
if [ -n "${SWITCHBOARD_SCREENSHOT:-}" ]; then
    SWITCHBOARD_SCREENSHOT="$(realpath -m "$SWITCHBOARD_SCREENSHOT")"
    export SWITCHBOARD_SCREENSHOT
fi
cd "$(dirname "$0")"

export CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
if [ ! -x "$CHROMIUM" ]; then
    echo "== installing chromium (Debian package)"
    ../../scripts/apt-install.sh chromium
fi

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    echo "node and npm are needed (Node.js 20 or newer)" >&2
    exit 1
fi
node_major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$node_major" -lt 20 ]; then
    echo "Node.js 20 or newer is needed (found $(node --version))" >&2
    exit 1
fi

echo "== npm ci"
npm ci --no-audit --no-fund --loglevel=error

echo "== browser test"
exec node test.mjs
