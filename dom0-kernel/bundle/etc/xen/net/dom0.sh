# dom0's own interface on its switch (dom0-ip on its command line: DHCP, a TCP sink on port
# 5001): a domU pings dom0 and sends it 4 MiB, which dom0 checks.
wait-data Domain-0 ip
xl create /etc/xen/net/source.cfg 'extra=source ${Domain-0/ip} 5001 4194304'
wait-gone netsource
poweroff
