#!/usr/bin/env python3
"""Splits a QEMU instruction trace of the hotpaths guest's `profile` mode into one segment
per operation and prints, per segment, the hypervisor instructions per operation and the
functions they were spent in.

Make the trace with one instruction per translation block and only hypervisor addresses:
  qemu-system-x86_64 ... -icount shift=0 -singlestep -d exec,nochain \
      -dfilter 0xffff82d040000000..0xffff82d041000000,0xffff820000020000..0xffff820000024000 \
      -D trace.log -kernel hypervisor -initrd hotpaths -append "debug-exit bench -- profile"
then: profile-trace.py hypervisor trace.log serial.txt [top]
(serial.txt: the guest's BENCH lines, for names). Addresses in the per-CPU entry-text alias
are mapped back to the linked entry stubs.
Each operation runs three times after a marker `int 0x83` (the lone-iretq bench gate).
"""
import collections, re, sys

import bisect, subprocess

MARK = "bare_iret_stub"
ENTRY_TEXT = 0xFFFF_8200_0002_0000
elf, trace, serial = sys.argv[1], sys.argv[2], sys.argv[3]
syms = []
for l in subprocess.run(["nm", "-n", "-C", elf], capture_output=True, text=True).stdout.splitlines():
    parts = l.split(" ", 2)
    if len(parts) == 3 and parts[1] in "tTwW":
        syms.append((int(parts[0], 16), parts[2]))
addrs = [a for a, _ in syms]
entry_start = next(a for a, n in syms if n == "__entry_text_start")


def name_of(pc):
    if ENTRY_TEXT <= pc < ENTRY_TEXT + 0x4000:
        pc = pc - ENTRY_TEXT + entry_start
    i = bisect.bisect_right(addrs, pc) - 1
    n = syms[i][1] if i >= 0 else "?"
    return re.sub(r"::h[0-9a-f]{16}$", "", n)


names = [m.group(1) for m in re.finditer(r"BENCH hp_(\w+)_tsc=", open(serial, errors="replace").read())]
per_op = 3
segs, cur = [], None
with open(trace, errors="replace") as f:
    for line in f:
        if not line.startswith("Trace"):
            continue
        pc = int(line.split("[", 1)[1].split("/")[1], 16)
        sym = name_of(pc)
        if sym == MARK:
            cur = collections.Counter()
            segs.append(cur)
            continue
        if cur is not None:
            cur[sym] += 1
top = int(sys.argv[4]) if len(sys.argv) > 4 else 12
for i, c in enumerate(segs):
    name = names[i] if i < len(names) else f"segment{i}"
    total = sum(c.values())
    print(f"== {name}: {total / per_op:.0f} hypervisor instructions per operation")
    for sym, k in c.most_common(top):
        print(f"   {k / per_op:8.1f}  {sym}")
