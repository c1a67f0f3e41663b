# The disk demo twice in a row (the blk-demo scenario): its counter goes 1, then 2.
xl create /etc/xen/disk.cfg
wait-gone disk
xl create /etc/xen/disk.cfg
wait-gone disk
poweroff
