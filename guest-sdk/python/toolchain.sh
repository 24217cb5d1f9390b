#!/usr/bin/env bash
# Installs the Python plugin toolchain (componentize-py, pinned in requirements.txt) into a
# virtual environment at $SWITCHBOARD_GUEST_TARGET_DIR/python/venv when it is missing or the
# requirements changed, and prints that folder. python3 and its venv module come from apt
# when missing.
set -euo pipefail
sdk="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$sdk/../.." && pwd)"
guest_target="${SWITCHBOARD_GUEST_TARGET_DIR:-$root/target/guests}"
venv="$guest_target/python/venv"

apt_install() { "$root/scripts/apt-install.sh" "$@"; }

stamp="$venv/.installed"
want="$(sha256sum <"$sdk/requirements.txt" | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    command -v python3 >/dev/null 2>&1 || apt_install python3 python3-venv
    rm -rf "$venv"
    if ! python3 -m venv "$venv" >&2; then
        apt_install python3-venv
        rm -rf "$venv"
        python3 -m venv "$venv" >&2
    fi
    echo "python toolchain: pip install into $venv" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check \
        --cache-dir "$guest_target/python/pip-cache" -r "$sdk/requirements.txt" >&2
    echo "$want" >"$stamp"
fi
echo "$venv"
