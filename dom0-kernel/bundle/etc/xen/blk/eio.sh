# The blk-eio scenario: the disk fails reads of sector 1000.
xl create /etc/xen/blk/eio.cfg
wait-gone blkeio
poweroff
