#!/usr/bin/env bash
# Benchmarks, built in release mode. Usage: scripts/bench.sh dispatch [options]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build-plugins.sh target/plugins-dist >/dev/null
cargo run --release -q -p switchboard-bench -- "$@"
