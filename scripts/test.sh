#!/usr/bin/env bash
# Runs every test: host unit and property tests, then every QEMU scenario.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec cargo xtask test "$@"
