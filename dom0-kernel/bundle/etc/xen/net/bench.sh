# `cargo xtask bench --only net`: TCP between two domUs through the switch, from a domU to
# dom0, from the host and to it, ping; the switch's per-frame cost; the balloon shrinking and growing 64 MiB.
xl create /etc/xen/net/sink.cfg 'extra=sink 5001 33554432'
wait-data netsink sink
xl create /etc/xen/net/source.cfg 'extra=source ${netsink/ip} 5001 33554432'
wait-gone netsource
wait-gone netsink
# To dom0's own interface (dom0-ip: its TCP sink on port 5001).
wait-data Domain-0 ip
xl create /etc/xen/net/source.cfg 'extra=source ${Domain-0/ip} 5001 33554432'
wait-gone netsource
xl create /etc/xen/net/fetch.cfg 'extra=fetch ${host-port} 16777216'
wait-gone netfetch
xl create /etc/xen/net/post.cfg 'extra=post ${host-port} 16777216'
wait-gone netpost
xl info
xl network-list 0
xl create /etc/xen/balloon/bench.cfg
wait-data balloon ready
xl mem-set balloon 32m
wait-data balloon at-32768-1
xl mem-set balloon 96m
wait-data balloon at-98304-2
xl shutdown balloon
wait-gone balloon
poweroff
