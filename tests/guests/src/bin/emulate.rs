//! The privileged instructions the hypervisor emulates for a PV kernel (Xen's
//! `emul-priv-op.c`, a subset), with good and hostile operands: control-register reads
//! (CR0 with the guest's TS, CR2 of its last page fault, CR3 its root, CR4 its view), a
//! CR0 write of TS only, CR3 writes (its own root again; a data frame that is no L4), the
//! segment-base MSRs and EFER, debug registers (kept, never armed); what stays refused (CR0
//! other bits, CR4 and CR8, the other MSRs, an armed breakpoint) still raises #GP in the
//! guest.
#![no_std]
#![no_main]

use test_guests::*;

const GP: u8 = 13;
const PF: u8 = 14;

fn read_cr(which: u8) -> (Option<pv_runtime::traps::Fault>, u64) {
    let mut v: u64 = 0;
    let f = match which {
        0 => probe!("mov {v}, cr0"; v = inout(reg) v),
        2 => probe!("mov {v}, cr2"; v = inout(reg) v),
        3 => probe!("mov {v}, cr3"; v = inout(reg) v),
        4 => probe!("mov {v}, cr4"; v = inout(reg) v),
        _ => probe!("mov {v}, cr8"; v = inout(reg) v),
    };
    (f, v)
}

fn rdmsr(msr: u32) -> (Option<pv_runtime::traps::Fault>, u64) {
    let (mut lo, mut hi): (u64, u64) = (0, 0);
    let f = probe!("mov ecx, {m:e}", "rdmsr", "mov {lo}, rax", "mov {hi}, rdx"; m = in(reg) msr, lo = inout(reg) lo, hi = inout(reg) hi);
    (f, hi << 32 | (lo & 0xFFFF_FFFF))
}

fn wrmsr(msr: u32, v: u64) -> Option<pv_runtime::traps::Fault> {
    probe!("mov ecx, {m:e}", "mov rax, {v}", "mov rdx, {v}", "shr rdx, 32", "wrmsr"; m = in(reg) msr, v = in(reg) v)
}

#[repr(C, align(4096))]
struct Page([u8; 4096]);
static DATA: Page = Page([0; 4096]);
static mut BATCH: pv_runtime::mm::Batch = pv_runtime::mm::Batch::new();

#[no_mangle]
fn guest_main(si: &'static pv_runtime::StartInfo) -> ! {
    start("emulate");
    // CR0: PE and PG set, TS the guest's own.
    let (f, cr0) = read_cr(0);
    println!("emulate: cr0 {:#x} ({:?})", cr0, f);
    check("mov rax, cr0 is emulated", f.is_none() && cr0 & 1 != 0 && cr0 & 1 << 31 != 0 && cr0 & 8 == 0);
    expect_ret("fpu_taskswitch(1)", pv_runtime::hypercall::fpu_taskswitch(1), 0);
    check("cr0 shows TS", read_cr(0).1 & 8 != 0);
    let clear = cr0 & !8;
    check("mov cr0 clearing TS", probe!("mov cr0, {v}"; v = in(reg) clear).is_none() && read_cr(0).1 & 8 == 0);
    let no_pg = cr0 & !(1 << 31);
    expect_fault("mov cr0 clearing PG", probe!("mov cr0, {v}"; v = in(reg) no_pg), GP, Some(0));
    // CR2: the address of the last page fault the guest took.
    let va: u64 = 0x7654_3210_0000;
    expect_fault("a read of an unmapped address", probe!("mov {t}, [{a}]"; a = in(reg) va, t = out(reg) _), PF, None);
    let (f, cr2) = read_cr(2);
    check("mov rax, cr2 after it", f.is_none() && cr2 == va);
    // CR3: the root the guest runs on, as a machine address; loading it again works, a data
    // frame is refused.
    let (f, cr3) = read_cr(3);
    let root = pv_runtime::pvio::region_mfn(si, si.pt_base).unwrap_or(0) << 12;
    println!("emulate: cr3 {:#x}, the boot tables at {:#x}", cr3, root);
    check("mov rax, cr3 is the root", f.is_none() && cr3 == root);
    check("mov cr3 of the same root", probe!("mov cr3, {v}"; v = in(reg) cr3).is_none());
    let data = pv_runtime::pvio::region_mfn(si, core::ptr::addr_of!(DATA) as u64).unwrap_or(0) << 12;
    expect_fault("mov cr3 of a data frame", probe!("mov cr3, {v}"; v = in(reg) data), GP, Some(0));
    expect_fault("mov cr3 of frame 0", probe!("xor eax, eax", "mov cr3, rax"), GP, Some(0));
    check("still on the same root", read_cr(3).1 == root);
    // A fresh tree (built with mmu_update, never pinned): `mov cr3` validates it as a
    // hypercall would, and the guest runs on it; then back to the boot tables.
    let vb = pv_runtime::virt_base();
    let mut mem = pv_runtime::mm::GuestMem::new(si, vb);
    // SAFETY: taken once, here.
    let batch = unsafe { &mut *core::ptr::addr_of_mut!(BATCH) };
    let pt0 = (si.pt_base - vb) / 4096;
    let region = mem.region_end_pfn;
    let built = pv_runtime::mm::build_tables(&mut mem, batch, vb, 0, region, pt0..pt0 + si.nr_pt_frames);
    batch.flush();
    let new = built.map_or(0, |(l4, _)| l4 << 12);
    check("a fresh tree built", built.is_some() && batch.failed == 0);
    check("mov cr3 of the fresh tree", probe!("mov cr3, {v}"; v = in(reg) new).is_none() && read_cr(3).1 == new);
    check("mov cr3 back to the boot tables", probe!("mov cr3, {v}"; v = in(reg) root).is_none() && read_cr(3).1 == root);
    // CR4: the guest's view, unchangeable; CR8 and debug registers not emulated.
    let (f, cr4) = read_cr(4);
    check("mov rax, cr4: PAE, nothing hidden", f.is_none() && cr4 & 1 << 5 != 0 && cr4 & !hv_visible_cr4() == 0);
    if pv_runtime::PV64 {
        // Xen pv64: written, never refused; only the virtual FSGSBASE follows it.
        check("mov cr4 (pv64: emulated)", probe!("mov cr4, {v}"; v = in(reg) cr4 | 1 << 7).is_none() && read_cr(4).1 == cr4);
    } else {
        expect_fault("mov cr4", probe!("mov cr4, {v}"; v = in(reg) cr4), GP, Some(0));
    }
    expect_fault("mov rax, cr8", read_cr(8).0, GP, Some(0));
    // Debug registers: values kept (DR7 at its reset value), no breakpoint armed.
    let mut dr7: u64 = 0;
    check("mov rax, dr7: its reset value", probe!("mov {v}, dr7"; v = inout(reg) dr7).is_none() && dr7 == 0x400);
    let va = 0x1234_5000u64;
    let mut back: u64 = 0;
    check("mov dr0, a guest address; read back", probe!("mov dr0, {v}"; v = in(reg) va).is_none() && probe!("mov {v}, dr0"; v = inout(reg) back).is_none() && back == va);
    expect_fault("mov dr1, a hypervisor address", probe!("mov dr1, {v}"; v = in(reg) 0xFFFF_8000_0000_0000u64), GP, Some(0));
    expect_fault("mov dr7, L0 (arming a breakpoint)", probe!("mov dr7, {v}"; v = in(reg) 1u64), GP, Some(0));
    // SAFETY: set_debugreg and get_debugreg take no pointer.
    let (s, g) = unsafe { (pv_runtime::hypercall::hypercall5(guest_abi::hypercall::SET_DEBUGREG, 7, 1 << 13, 0, 0, 0), pv_runtime::hypercall::hypercall5(guest_abi::hypercall::GET_DEBUGREG, 0, 0, 0, 0, 0)) };
    expect_err("set_debugreg(7, GD)", s, guest_abi::errno::Errno::EPERM);
    expect_ret("get_debugreg(0)", g, va as i64);
    // MSRs: the segment bases and EFER; nothing else.
    let base = 0x1234_5678_9000u64;
    check("wrmsr FS_BASE", wrmsr(0xC000_0100, base).is_none());
    let (f, got) = rdmsr(0xC000_0100);
    check("rdmsr FS_BASE reads it back", f.is_none() && got == base);
    expect_ret("set_segment_base(0, 0)", pv_runtime::hypercall::set_segment_base(0, 0), 0);
    check("rdmsr FS_BASE after set_segment_base", rdmsr(0xC000_0100).1 == 0);
    expect_fault("wrmsr FS_BASE non-canonical", wrmsr(0xC000_0100, 0x8000_0000_0000_0000), GP, Some(0));
    let (f, efer) = rdmsr(0xC000_0080);
    check("rdmsr EFER: LMA and NXE", f.is_none() && efer & (1 << 10 | 1 << 11) == 1 << 10 | 1 << 11);
    expect_fault("wrmsr EFER", wrmsr(0xC000_0080, efer), GP, Some(0));
    expect_fault("rdmsr LSTAR", rdmsr(0xC000_0082).0, GP, Some(0));
    expect_fault("wrmsr SYSENTER_EIP", wrmsr(0x176, 0), GP, Some(0));
    // The virtual IOPL is the Xen pv64 mode's: none in the ring-1 model.
    let set_iopl = |iopl: u32| {
        // SAFETY: the argument is a u32 the call reads.
        unsafe { pv_runtime::hypercall::hypercall5(guest_abi::hypercall::PHYSDEV_OP, guest_abi::physdev::PHYSDEVOP_SET_IOPL, &iopl as *const u32 as u64, 0, 0, 0) }
    };
    if pv_runtime::PV64 {
        expect_ret("PHYSDEVOP_set_iopl 1", set_iopl(1), 0);
        check("cli and sti with the virtual IOPL", probe!("cli", "sti").is_none());
        expect_ret("PHYSDEVOP_set_iopl 0", set_iopl(0), 0);
        expect_fault("cli with IOPL 0", probe!("cli"), GP, Some(0));
    } else {
        expect_err("PHYSDEVOP_set_iopl in the ring-1 model", set_iopl(3), guest_abi::errno::Errno::ENOSYS);
        expect_fault("cli in the ring-1 model", probe!("cli"), GP, Some(0));
    }
    finish("emulate")
}

/// CR4 bits a PV guest may see (`hv_core::emul::CR4_VISIBLE`).
fn hv_visible_cr4() -> u64 {
    1 << 4 | 1 << 5 | 1 << 7 | 1 << 9 | 1 << 10 | 1 << 18
}
