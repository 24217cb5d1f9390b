#!/usr/bin/env bash
# The dependency audit: licences, duplicate versions and sources of every crate (deny.toml),
# with cargo-deny, installed on first use into $CARGO_TARGET_DIR/tools (default
# target/tools). Security advisories are checked too when the RustSec database can be
# fetched from GitHub; where it cannot (a machine that reaches only package registries) the
# audit says so and checks the rest.
set -euo pipefail
cd "$(dirname "$0")/.."
version="0.20.2"
tools="${CARGO_TARGET_DIR:-$PWD/target}/tools"
deny="$tools/bin/cargo-deny"
if [ "$("$deny" --version 2>/dev/null)" != "cargo-deny $version" ]; then
    echo "audit: cargo install cargo-deny $version (a few minutes, once)" >&2
    cargo install cargo-deny --version "$version" --locked --force --quiet \
        --root "$tools" --target-dir "$tools/build"
    rm -rf "$tools/build"
fi
checks=(licenses bans sources)
if timeout 20 git ls-remote https://github.com/rustsec/advisory-db HEAD >/dev/null 2>&1; then
    checks+=(advisories)
else
    echo "audit: the RustSec advisory database is unreachable from here; advisories not checked" >&2
fi
"$deny" --log-level warn check --hide-inclusion-graph "${checks[@]}"
