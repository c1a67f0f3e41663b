#!/usr/bin/env bash
# Installs the system packages the build and the QEMU tests need (Debian/Ubuntu).
# As root it installs what is missing; otherwise it says what to install.
set -euo pipefail
pkgs=(qemu-system-x86 grub-pc-bin grub-common xorriso)
missing=()
command -v qemu-system-x86_64 >/dev/null || missing+=(qemu-system-x86)
[ -d /usr/lib/grub/i386-pc ] || missing+=(grub-pc-bin)
command -v grub-mkrescue >/dev/null || missing+=(grub-common)
command -v xorriso >/dev/null || missing+=(xorriso)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
    else
        echo "missing system packages; run as root or install them:" >&2
        echo "  sudo apt-get install -y --no-install-recommends ${pkgs[*]}" >&2
        exit 1
    fi
fi
command -v cargo >/dev/null || { echo "cargo not found: install Rust with rustup (https://rustup.rs)" >&2; exit 1; }
# rust-toolchain.toml pins the toolchain and the x86_64-unknown-none target; this installs them.
cd "$(dirname "$0")/.." && rustup show active-toolchain >/dev/null
