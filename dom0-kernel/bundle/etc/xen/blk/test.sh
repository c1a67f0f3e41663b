# The PV block scenario (`cargo xtask test --only blk`), run by dom0 with run=/etc/xen/blk/test.sh.
xl create /etc/xen/blk/persist.cfg
wait-gone blkpersist
xl create /etc/xen/blk/ro.cfg
wait-gone blkro
xl create /etc/xen/blk/part1.cfg
xl create /etc/xen/blk/part2.cfg
wait-gone blkpart1
wait-gone blkpart2
xl create /etc/xen/blk/hostile.cfg
xl create /etc/xen/blk/part1.cfg
# Partition 2 is the hostile domain's, writable: nobody else gets it, nor the whole disk.
xl block-attach blkpart1 vda2,xvdb,r
xl block-attach blkpart1 vda,xvdc,r
wait-gone blkhostile
xl create /etc/xen/blk/closemid.cfg
wait-gone blkclosemid
wait-gone blkpart1
xl create /etc/xen/blk/hot.cfg
xl block-attach blkhot vda1,xvda,r
wait-data blkhot blk
xl block-list blkhot
xl block-detach blkhot xvda
wait-gone blkhot
xl list
poweroff
