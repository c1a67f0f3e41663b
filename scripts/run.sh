#!/usr/bin/env bash
# Boots the hypervisor with dom0 in QEMU (GRUB ISO, serial console on this terminal).
# Options go to `cargo xtask run`: --pvh (fast -kernel boot), --kvm, -- <hypervisor options>.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec cargo xtask run "$@"
