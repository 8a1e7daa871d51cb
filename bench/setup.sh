#!/bin/sh
# Install the real clients the benchmark drives, from Debian's packages:
# redis-benchmark (package redis-tools) and wrk.  Without them, bench/run.py
# skips the redis_ping_* and wrk_keepalive workloads, with a note.
#
#     bench/setup.sh            # as root, or as a user who may sudo
#
# It does nothing when both are already installed; otherwise it runs
# `apt-get update` once, then `apt-get install -y redis-tools wrk`.
set -eu

if command -v redis-benchmark >/dev/null 2>&1 && command -v wrk >/dev/null 2>&1; then
    echo "redis-benchmark and wrk are installed"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "no apt-get here: install redis-benchmark (redis-tools) and wrk with your" \
        "package manager; the benchmark skips their workloads without them" >&2
    exit 1
fi
if [ "$(id -u)" -eq 0 ]; then
    sudo=""
elif command -v sudo >/dev/null 2>&1; then
    sudo="sudo"
else
    echo "run this as root (apt-get install needs it)" >&2
    exit 1
fi
$sudo apt-get update
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y redis-tools wrk
redis-benchmark --version
wrk --version 2>&1 | head -n 1 || true
