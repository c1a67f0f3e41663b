#!/usr/bin/env bash
# Instruction profile of the hypervisor's hot paths: runs the hotpaths guest in `profile`
# mode under icount with a one-instruction-per-block trace of the hypervisor's addresses,
# then splits it per operation (tools/profile-trace.py). Needs the images built
# (`cargo xtask build`) and ~10 GB of free space in $TMPDIR for the trace.
# Usage: tools/profile-hotpaths.sh [smp] [top]
set -euo pipefail
cd "$(dirname "$0")/.."
smp=${1:-1}
top=${2:-15}
dir=target/x86_64-unknown-none/release
tmp=${TMPDIR:-/tmp}
qemu-system-x86_64 -accel tcg -cpu max -m 256M -smp "$smp" -display none -no-reboot \
    -serial "file:$tmp/hotpaths-serial.txt" -device isa-debug-exit,iobase=0xf4,iosize=0x04 \
    -nodefaults -vga none -monitor none -icount shift=0 \
    -kernel "$dir/hypervisor" -initrd "$dir/hotpaths" \
    -append "debug-exit loglvl=info dom0_mem=16M bench -- profile" \
    -singlestep -d exec,nochain \
    -dfilter 0xffff82d040000000..0xffff82d041000000,0xffff820000020000..0xffff820000024000 \
    -D "$tmp/hotpaths-trace.log" || true
python3 tools/profile-trace.py "$dir/hypervisor" "$tmp/hotpaths-trace.log" "$tmp/hotpaths-serial.txt" "$top"
rm -f "$tmp/hotpaths-trace.log"
