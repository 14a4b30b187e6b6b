#!/usr/bin/env bash
# System services the tests use: redis-server (the Redis Streams queue back-end) and headless
# Chromium with its driver (the agent console's browser test). Idempotent and quiet: installs
# the Debian packages only when a binary is missing, and runs `apt-get update` only then.
# Called by ./setup.sh --test; CI runs it as root on a fresh Debian machine.
set -euo pipefail

want=()
command -v redis-server >/dev/null 2>&1 || want+=(redis-server)
[ -x /usr/bin/chromium ] || want+=(chromium fonts-liberation)  # fonts: a recommends we skip otherwise
command -v chromedriver >/dev/null 2>&1 || want+=(chromium-driver)
[ ${#want[@]} -eq 0 ] && exit 0

sudo=()
if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
        echo "test-services: need root (or sudo) to install: ${want[*]}" >&2
        exit 1
    fi
    sudo=(sudo)
fi
echo "test-services: installing ${want[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq >/dev/null
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null
# The package may start a system Redis; the tests start their own on a free port, so stop it
# if it was started here (no-op in containers without an init system).
if [[ " ${want[*]} " == *" redis-server "* ]] && command -v systemctl >/dev/null 2>&1; then
    "${sudo[@]}" systemctl disable --now redis-server >/dev/null 2>&1 || true
fi
