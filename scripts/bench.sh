#!/usr/bin/env bash
# Benchmarks, built in release mode. See BENCHMARKS.md.
#
#   scripts/bench.sh dispatch [options]     plugin dispatch cost, in process
#   scripts/bench.sh compare  [options]     idle + fan-out, Switchboard and nginx + nchan
#   scripts/bench.sh idle | fanout | push | chat | reload | cluster [options]
#   scripts/bench.sh callgrind [options]    host instructions per delivery under callgrind
#   scripts/bench.sh all                    the figures of BENCHMARKS.md (full sizes, 3 runs)
#
# Installs what it needs when missing: the wasm32-wasip2 target (setup.sh) and, for the
# scenarios that run the peer, Debian's nginx and libnginx-mod-nchan (never started as a
# service: the benchmark runs nginx in the foreground from a temporary folder), and valgrind
# for `callgrind`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build-plugins.sh target/plugins-dist >/dev/null

want_nchan=""
case " $* " in
    " compare "* | " all "* | *" nchan "* | *" both "* | *=nchan* | *=both*) want_nchan=1 ;;
esac

if [ -n "$want_nchan" ] && [ ! -e /usr/lib/nginx/modules/ngx_nchan_module.so ]; then
    echo "bench: installing nginx and libnginx-mod-nchan"
    if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq
    # policy-rc.d answering 101: the package must not start nginx as a service.
    policy="/usr/sbin/policy-rc.d"
    created_policy=""
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
        $SUDO chmod +x "$policy"
        created_policy=1
    fi
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nginx libnginx-mod-nchan >/dev/null
    if [ -n "$created_policy" ]; then $SUDO rm -f "$policy"; fi
fi

if [ "${1:-}" = "callgrind" ]; then
    scripts/apt-install.sh valgrind
fi

cargo build --release -q -p switchboard -p switchboard-bench
bench="${CARGO_TARGET_DIR:-target}/release/switchboard-bench"

if [ "${1:-}" = "all" ]; then
    shift
    "$bench" compare --conns 10000 --runs 3 "$@"
    "$bench" chat --clients 10000 --rate 1 --runs 3 "$@"
    "$bench" reload --clients 2000 --rate 1 --runs 3 "$@"
    "$bench" idle --conns 19000 --runs 3 "$@"
    "$bench" cluster --conns 10000 --runs 3 "$@"
    exit 0
fi
exec "$bench" "$@"
