//! An unprivileged domU: privileged operations are refused with Xen's error codes.
#![no_std]
#![no_main]

use guest_abi::errno::Errno::*;
use guest_abi::hypercall as nr;
use pv_runtime::hypercall::{self as hc, hypercall5};
use test_guests::*;

fn raw(n: u64, a1: u64, a2: u64, a3: u64, a4: u64) -> i64 {
    // SAFETY: every call here is either refused before any pointer is used or gets valid
    // local buffers.
    unsafe { hypercall5(n, a1, a2, a3, a4, 0) }
}

#[no_mangle]
fn guest_main(si: &'static pv_runtime::StartInfo) -> ! {
    settle();
    start("unpriv");
    check("no SIF_PRIVILEGED", si.flags & 3 == 0);
    let d0: u16 = 0;
    let mut buf = [0u8; 1024];
    expect_err("current_reservation of dom0", raw(nr::MEMORY_OP, 3, &d0 as *const u16 as u64, 0, 0), EPERM);
    expect_err("update_va_mapping_otherdomain", raw(nr::UPDATE_VA_MAPPING_OTHERDOMAIN, 0x10_0000, 0, 0, 0), EPERM);
    let req = [0u64; 2];
    expect_err("mmu_update on dom0's behalf", raw(nr::MMU_UPDATE, req.as_ptr() as u64, 1, 0, 0), EPERM);
    expect_err("xen_version commandline", raw(nr::XEN_VERSION, 9, buf.as_mut_ptr() as u64, 0, 0), EPERM);
    expect_err("FLUSH_CACHE", hc::mmuext1(guest_abi::mm::ext::FLUSH_CACHE, 0, 0), EACCES);
    expect_err("console_io read", hc::console_read(&mut buf[..8]), EPERM);
    let mut a = [(guest_abi::DOMID_SELF as u32) << 16, 0];
    expect_err("alloc_unbound in dom0", raw(nr::EVENT_CHANNEL_OP, 6, a.as_mut_ptr() as u64, 0, 0), EPERM);
    // Every domctl and sysctl, with a well-formed op: refused before anything is read.
    let mut op = [0u8; 144];
    for cmd in [1u32, 2, 3, 4, 5, 9, 11, 12, 13, 14, 15, 16, 17, 19, 20, 21, 22, 24, 25, 99] {
        op[..4].copy_from_slice(&cmd.to_le_bytes());
        op[4..8].copy_from_slice(&guest_abi::domctl::DOMCTL_INTERFACE_VERSION.to_le_bytes());
        expect_err("domctl", raw(nr::DOMCTL, op.as_mut_ptr() as u64, 0, 0, 0), EPERM);
    }
    for cmd in [1u32, 3, 4, 6, 8, 99] {
        op[..4].copy_from_slice(&cmd.to_le_bytes());
        op[4..8].copy_from_slice(&guest_abi::domctl::SYSCTL_INTERFACE_VERSION.to_le_bytes());
        expect_err("sysctl", raw(nr::SYSCTL, op.as_mut_ptr() as u64, 0, 0, 0), EPERM);
    }
    expect_err("domctl with a bad pointer", raw(nr::DOMCTL, 0xFFFF_8000_0000_0000, 0, 0, 0), EPERM);
    let mut fi = [0u32; 2];
    expect_ret("get_features", raw(nr::XEN_VERSION, 6, fi.as_mut_ptr() as u64, 0, 0), 0);
    check("no dom0 feature bit", fi[1] & (1 << 11) == 0);
    finish("unpriv")
}
