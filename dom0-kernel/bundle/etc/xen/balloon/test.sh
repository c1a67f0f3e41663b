# The balloon scenario (`cargo xtask test --only balloon`), run by dom0 with run=/etc/xen/balloon/test.sh.
xl create /etc/xen/balloon/balloon.cfg
wait-data balloon ready
xl info
xl mem-set balloon 12m
wait-data balloon at-12288-1
xl list
xl info
xl mem-set balloon 32m
wait-data balloon at-32768-2
xl list
xl info
# Below what it uses: followed as far as it can be.
xl mem-set balloon 2m
wait-data balloon at-6144-3
xl list
xl mem-set balloon 32m
wait-data balloon at-32768-4
# Past the size it was built with, up to maxmem; above that xl refuses.
xl mem-set balloon 48m
wait-data balloon at-49152-5
xl list
xl mem-set balloon 64m
xl shutdown balloon
wait-gone balloon
poweroff
