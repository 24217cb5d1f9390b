#!/usr/bin/env bash
# Installs the host as a systemd service: the release binary in /usr/local/bin, the unit
# packaging/switchboard.service, a starting config in /etc/switchboard (an existing one is
# kept), and the system user `switchboard`. Run as root on the target machine, then
#   systemctl daemon-reload && systemctl enable --now switchboard
#
#   scripts/install.sh [--root DIR] [--binary FILE]
#
# --root DIR installs into DIR instead of / (no user is created and systemd is not asked;
# used by the tests to check the installed files with `systemd-analyze verify`).
# --binary FILE installs that binary instead of building `cargo build --release`.
set -euo pipefail
cd "$(dirname "$0")/.."
root=""
binary=""
while [ $# -gt 0 ]; do
    case "$1" in
        --root) root="${2:?--root needs a folder}"; shift 2 ;;
        --binary) binary="${2:?--binary needs a file}"; shift 2 ;;
        *) echo "install.sh: unknown argument $1 (see the comment at the top)" >&2; exit 2 ;;
    esac
done

if [ -z "$binary" ]; then
    scripts/setup.sh
    cargo build --release -p switchboard
    binary="${CARGO_TARGET_DIR:-target}/release/switchboard"
fi
[ -x "$binary" ] || { echo "install.sh: $binary is not an executable" >&2; exit 1; }

install -D -m 0755 "$binary" "$root/usr/local/bin/switchboard"
install -D -m 0644 packaging/switchboard.service "$root/etc/systemd/system/switchboard.service"
if [ -e "$root/etc/switchboard/switchboard.toml" ]; then
    echo "install.sh: keeping the existing $root/etc/switchboard/switchboard.toml"
else
    install -D -m 0640 packaging/switchboard.toml "$root/etc/switchboard/switchboard.toml"
fi
"$root/usr/local/bin/switchboard" config check "$root/etc/switchboard/switchboard.toml"

if [ -z "$root" ]; then
    if ! id -u switchboard >/dev/null 2>&1; then
        useradd --system --home-dir /var/lib/switchboard --no-create-home \
            --shell /usr/sbin/nologin switchboard
    fi
    chgrp switchboard /etc/switchboard/switchboard.toml
    echo "installed; start it with: systemctl daemon-reload && systemctl enable --now switchboard"
fi
