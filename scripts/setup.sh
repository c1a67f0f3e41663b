#!/usr/bin/env bash
# Installs what the build and the QEMU tests need on a fresh Debian/Ubuntu machine: the
# system packages (as root; otherwise it says what to install) and the pinned Rust
# toolchain's bare-metal target and components (idempotent, ~1 s when present).
set -euo pipefail
cd "$(dirname "$0")/.."
pkgs=(qemu-system-x86 grub-pc-bin grub-efi-amd64-bin grub-common xorriso mtools ovmf xenstore-utils gdb)
missing=()
command -v qemu-system-x86_64 >/dev/null || missing+=(qemu-system-x86)
[ -d /usr/lib/grub/i386-pc ] || missing+=(grub-pc-bin)
# The ISOs are BIOS+UEFI hybrids: grub-mkrescue adds the EFI image when GRUB's x86_64-efi
# modules are there, and then needs mtools (mformat) to build it.
[ -d /usr/lib/grub/x86_64-efi ] || missing+=(grub-efi-amd64-bin)
command -v mformat >/dev/null || missing+=(mtools)
# UEFI firmware for QEMU (the uefi-* scenarios).
[ -f /usr/share/ovmf/OVMF.fd ] || missing+=(ovmf)
command -v grub-mkrescue >/dev/null || missing+=(grub-common)
command -v xorriso >/dev/null || missing+=(xorriso)
# Debian's Xen client tools, pointed at `cargo xtask xenstored` by the host tests.
command -v xenstore-write >/dev/null || missing+=(xenstore-utils)
# `cargo xtask gdb` (and its test, gdb-attach).
command -v gdb >/dev/null || missing+=(gdb)
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
command -v rustup >/dev/null || { echo "rustup not found: install Rust with rustup (https://rustup.rs)" >&2; exit 1; }
# rust-toolchain.toml pins the toolchain; rustup installs its targets and components only
# when it installs the toolchain itself, so add them explicitly (no-ops when present).
toolchain=$(sed -n 's/^channel *= *"\(.*\)"/\1/p' rust-toolchain.toml)
rustup toolchain install "$toolchain" --profile minimal --no-self-update >/dev/null 2>&1 || true
rustup target add --toolchain "$toolchain" x86_64-unknown-none
rustup component add --toolchain "$toolchain" clippy rustfmt
