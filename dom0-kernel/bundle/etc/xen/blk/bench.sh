# `cargo xtask bench --only disk`: after dom0's own pass over the disk (bench-disk), the
# same pass from a domU through blkfront and blkback.
xl create /etc/xen/blk/bench.cfg
wait-gone blkbench
poweroff
