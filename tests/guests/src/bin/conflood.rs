//! Floods the hypervisor console (each `console_io` write holds the console lock for a
//! while) so that NMIs injected from QEMU's monitor land inside the console path: the NMI
//! handler must not wait for that lock. Ends with a verdict once every line is out.
#![no_std]
#![no_main]

use test_guests::*;

#[no_mangle]
fn guest_main(_si: &'static pv_runtime::StartInfo) -> ! {
    start("conflood");
    let mut line = *b"conflood: ................................................................ 0000\n";
    let n = line.len();
    let mut failed = 0;
    for i in 0..1500u32 {
        let mut k = i;
        for d in (n - 5..n - 1).rev() {
            line[d] = b'0' + (k % 10) as u8;
            k /= 10;
        }
        failed += u32::from(pv_runtime::hypercall::console_write(&line) != 0);
    }
    check("every console write accepted", failed == 0);
    finish("conflood")
}
