//! Guest pointers: console_io and xen_version with non-canonical, unmapped, hypervisor-area
//! and read-only buffers get -EFAULT; good buffers work.
#![no_std]
#![no_main]

use guest_abi::errno::Errno;
use guest_abi::hypercall as nr;
use pv_runtime::hypercall::hypercall5 as hc;
use test_guests::*;

#[no_mangle]
fn guest_main(si: &'static pv_runtime::StartInfo) -> ! {
    start("console-fault");
    let ok = b"console-fault: a good buffer\n";
    // SAFETY: each pointer is either a valid local buffer or deliberately bad and expected to
    // be refused without being touched.
    unsafe {
        expect_ret("console_io good buffer", hc(nr::CONSOLE_IO, 0, ok.len() as u64, ok.as_ptr() as u64, 0, 0), 0);
        expect_ret("console_io zero length, NULL", hc(nr::CONSOLE_IO, 0, 0, 0, 0, 0), 0);
        let bad: [(&str, u64); 9] = [
            ("non-canonical", 0x8000_0000_0000_0000),
            ("non-canonical high", 0x0000_8000_0000_1000),
            ("unmapped low", 0x4000_0000),
            ("NULL", 0),
            ("read-only M2P", guest_abi::layout::MACH2PHYS_VIRT_START),
            ("hypervisor direct map", 0xFFFF_8300_0010_0000),
            ("hypervisor image", 0xFFFF_82D0_4010_A000),
            ("entry area", 0xFFFF_8200_0000_0000),
            ("per-CPU area", 0xFFFF_8180_0000_0000),
        ];
        for (what, p) in bad {
            let r = hc(nr::CONSOLE_IO, 0, 16, p, 0, 0);
            if p == 0 {
                // Page 0 is mapped for a guest linked at VIRT_BASE 0 (as XTF's are), so NULL
                // is a valid guest address here.
                check("console_io NULL reads guest page 0", r == 0);
            } else {
                expect_err(what, r, Errno::EFAULT);
            }
        }
        // A buffer that starts mapped and runs off the end of the bootstrap region.
        let region_end = (si.pt_base + 0x40_0000) & !0x3F_FFFF;
        expect_err("buffer running into unmapped memory", hc(nr::CONSOLE_IO, 0, 8192, region_end - 4096, 0, 0), Errno::EFAULT);
        expect_err("buffer wrapping the address space", hc(nr::CONSOLE_IO, 0, 64, u64::MAX - 8, 0, 0), Errno::EFAULT);
        expect_err("console_io unknown cmd", hc(nr::CONSOLE_IO, 9, 1, ok.as_ptr() as u64, 0, 0), Errno::ENOSYS);
        // Output buffers: a page-table page is mapped read-only, so writing into it fails.
        expect_err("xen_version into a read-only page table", hc(nr::XEN_VERSION, 1, si.pt_base, 0, 0, 0), Errno::EFAULT);
        expect_err("xen_version into the hypervisor", hc(nr::XEN_VERSION, 3, 0xFFFF_8300_0000_0000, 0, 0, 0), Errno::EFAULT);
        expect_err("xen_version into non-canonical", hc(nr::XEN_VERSION, 4, 0x0000_8000_0000_0000, 0, 0, 0), Errno::EFAULT);
        // The page tables must be unchanged (still a valid L4 at pt_base with our mappings).
        let l4 = si.pt_base as *const u64;
        check("L4 entry 0 still present", l4.read_volatile() & 1 == 1);
    }
    finish("console-fault")
}
