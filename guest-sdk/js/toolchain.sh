#!/usr/bin/env bash
# Installs the JavaScript plugin toolchain (componentize-js and jco, pinned by
# package-lock.json) into $SWITCHBOARD_GUEST_TARGET_DIR/js/toolchain when it is missing or
# the lock file changed, and prints that folder. Node.js and npm come from apt when missing.
set -euo pipefail
sdk="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$sdk/../.." && pwd)"
guest_target="${SWITCHBOARD_GUEST_TARGET_DIR:-$root/target/guests}"
toolchain="$guest_target/js/toolchain"

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    "$root/scripts/apt-install.sh" nodejs npm
fi

stamp="$toolchain/.installed"
want="$(cat "$sdk/package.json" "$sdk/package-lock.json" | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "js toolchain: installing the locked packages into $toolchain" >&2
    mkdir -p "$toolchain"
    rm -rf "$stamp" "$toolchain/node_modules"
    cp "$sdk/package.json" "$sdk/package-lock.json" "$toolchain/"
    # `npm install` with the lock file installs exactly the locked versions (integrity
    # checked). Not `npm ci`: it insists on every platform's optional binary packages being
    # in the lock, and the registry does not serve all of them for every platform.
    # A registry hiccup fails one attempt, not the build: three tries, then npm's own log.
    for attempt in 1 2 3; do
        if (cd "$toolchain" && npm install --no-audit --no-fund --loglevel=error \
            --cache "$guest_target/js/npm-cache" >&2); then
            break
        fi
        if [ "$attempt" -eq 3 ]; then
            echo "js toolchain: npm install failed 3 times; its last log:" >&2
            tail -n 40 "$(ls -t "$guest_target"/js/npm-cache/_logs/*.log | head -n 1)" >&2 || true
            exit 1
        fi
        echo "js toolchain: npm install failed (attempt $attempt); retrying" >&2
        sleep $((attempt * 5))
    done
    echo "$want" >"$stamp"
fi
# The build driver resolves its packages from the toolchain's node_modules.
cp "$sdk/componentize.mjs" "$toolchain/"
echo "$toolchain"
