# The PV network scenario (`cargo xtask test --only net`), run by dom0 with run=/etc/xen/net/test.sh.
# The host fetches nethttp's page through QEMU's port forward to 10.0.2.15:80 (the first lease).
xl create /etc/xen/net/http.cfg
wait-gone nethttp
xl create /etc/xen/net/sink.cfg
wait-data netsink sink
xl network-list netsink
xl create /etc/xen/net/stall.cfg
wait-data netstall stall
xl create /etc/xen/net/hostile.cfg
xl create /etc/xen/net/idxtx.cfg
xl create /etc/xen/net/idxrx.cfg
xl create /etc/xen/net/flood.cfg
wait-data netflood flood
xl create /etc/xen/net/source.cfg 'extra=source ${netsink/ip} 5001 10485760'
wait-gone netsource
wait-gone netsink
wait-gone nethostile
xl network-list netstall
# A domain's data/ is its own: only plain words go into a script line.
xl list ${netstall/evil}
xl destroy netstall
wait-gone netidxtx
wait-gone netidxrx
xl network-list netflood
xl network-detach netflood 0
wait-gone netflood
# A domain destroyed while it floods: its vif goes with it, the switch carries on.
xl create /etc/xen/net/flood2.cfg
wait-data netflood2 flood
xl destroy netflood2
xl create /etc/xen/net/fetch.cfg 'extra=fetch ${host-port} 1048576'
wait-gone netfetch
xl create /etc/xen/net/post.cfg 'extra=post ${host-port} 1048576'
wait-gone netpost
# A vif attached to a running domain.
xl create /etc/xen/net/hot.cfg 'extra=hot ${host-port} 65536'
xl network-attach nethot mac=00:16:3e:00:00:0b
xl network-list nethot
wait-gone nethot
# Every domain is gone: nothing of theirs is left under the backend directory.
xenstore-ls /local/domain/0/backend/vif
xl list
poweroff
