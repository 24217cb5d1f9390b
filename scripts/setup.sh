#!/usr/bin/env bash
# Installs what the build and the tests need, when it is missing: the wasm32-wasip2 Rust
# target, redis-server and nats-server (the end-to-end tests start their own), and
# systemd-analyze (the install test).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! rustup target list --installed | grep -qx wasm32-wasip2; then
    echo "setup: adding the wasm32-wasip2 Rust target"
    rustup target add wasm32-wasip2
fi

command -v redis-server >/dev/null 2>&1 || scripts/apt-install.sh redis-server
# Debian installs it in /usr/sbin, which is not on every user's PATH; the tests look there too.
if ! command -v nats-server >/dev/null 2>&1 && [ ! -x /usr/sbin/nats-server ]; then
    scripts/apt-install.sh nats-server
fi

# The install test checks the systemd unit with `systemd-analyze verify`.
command -v systemd-analyze >/dev/null 2>&1 || scripts/apt-install.sh systemd

# The ingest tests publish what yudao and RuoYi-Vue-Plus publish with a small Java program
# (tests/java) built against Debian's Jackson and RabbitMQ client jars.
java_packages=(openjdk-17-jdk-headless libjackson2-databind-java libjackson2-core-java
    libjackson2-annotations-java librabbitmq-client-java libslf4j-java)
if ! command -v javac >/dev/null 2>&1 || [ ! -f /usr/share/java/jackson-databind.jar ] \
    || [ ! -f /usr/share/java/amqp-client.jar ]; then
    scripts/apt-install.sh "${java_packages[@]}"
fi
