//! From the guest kernel, hypervisor memory is unreachable: reads and writes of the direct
//! map, the heap, the image, the per-CPU area fault (#PF, not present); the entry area and
//! the M2P are mapped read-only, so writes fault and the GDT/IDT can't be changed. A ring-1
//! kernel reads the entry area (the CPU uses it from there); a Xen pv64 kernel (ring 3)
//! cannot read it at all (supervisor pages), only the M2P.
#![no_std]
#![no_main]

use test_guests::*;

const PF: u8 = 14;
/// #PF error code bits.
const P: u64 = 1;
const W: u64 = 2;

#[no_mangle]
fn guest_main(_si: &'static pv_runtime::StartInfo) -> ! {
    start("hv-memory");
    let unmapped: [(&str, u64); 6] = [
        ("direct map (low RAM)", 0xFFFF_8300_0000_1000),
        ("direct map (hypervisor heap region)", 0xFFFF_8300_0040_0000),
        ("direct map (1 GiB)", 0xFFFF_8300_4000_0000),
        ("hypervisor image text", 0xFFFF_82D0_4010_A000),
        ("hypervisor image data", 0xFFFF_82D0_4012_2000),
        ("per-CPU private area", 0xFFFF_8180_0000_0000),
    ];
    for (what, va) in unmapped {
        let r = probe!("mov rax, [{a}]"; a = in(reg) va);
        expect_fault(what, r, PF, Some(0));
        let w = probe!("mov qword ptr [{a}], 0x41"; a = in(reg) va);
        expect_fault(what, w, PF, Some(W));
    }
    // Entry area: readable (it must be, the CPU uses it), never writable.
    let ro: [(&str, u64); 5] = [
        ("GDT (reserved page)", 0xFFFF_8200_0000_E008),
        ("IDT", 0xFFFF_8200_0001_0000 + 16 * 0x82),
        ("TSS", 0xFFFF_8200_0001_1004),
        ("entry constants", 0xFFFF_8200_0001_4000),
        ("read-only M2P", guest_abi::layout::MACH2PHYS_VIRT_START),
    ];
    for (what, va) in ro {
        let r = probe!("mov rax, [{a}]"; a = in(reg) va);
        if pv_runtime::PV64 && va != guest_abi::layout::MACH2PHYS_VIRT_START {
            expect_fault(what, r, PF, Some(P));
        } else {
            check(what, r.is_none());
        }
        let w = probe!("mov qword ptr [{a}], 0"; a = in(reg) va);
        expect_fault(what, w, PF, Some(P | W));
    }
    // The entry text is mapped but not writable either.
    let w = probe!("mov byte ptr [{a}], 0xCC"; a = in(reg) 0xFFFF_8200_0002_0000u64);
    expect_fault("entry text write", w, PF, Some(P | W));
    // Executing hypervisor memory from ring 1.
    let x = probe!("call {a}"; a = in(reg) 0xFFFF_82D0_4010_A000u64);
    expect_fault("execute hypervisor text", x, PF, Some(0x10));
    // The hypervisor is still alive and well: a hypercall works.
    check("hypercall after the faults", pv_runtime::hypercall::yield_now() == 0);
    finish("hv-memory")
}
