//! Privileged instructions from the guest kernel (ring 1, or ring 3 in the Xen pv64 mode)
//! raise #GP, bounced to the guest; the hypervisor keeps running and nothing changes.
#![no_std]
#![no_main]

use test_guests::*;

const GP: u8 = 13;

#[no_mangle]
fn guest_main(_si: &'static pv_runtime::StartInfo) -> ! {
    start("privileged");
    expect_fault("cli", probe!("cli"), GP, Some(0));
    expect_fault("sti", probe!("sti"), GP, Some(0));
    expect_fault("hlt", probe!("hlt"), GP, Some(0));
    expect_fault("mov cr3, rax", probe!("xor eax, eax", "mov cr3, rax"), GP, Some(0));
    // `mov rax, cr0` is emulated now (the `emulate` guest). In the Xen pv64 mode a CR4
    // write is too, never refused and changing nothing but the virtual FSGSBASE, as Xen's.
    if pv_runtime::PV64 {
        let cr4: u64;
        check("mov cr4, 0: emulated", probe!("xor eax, eax", "mov cr4, rax").is_none());
        // SAFETY: an emulated read of the guest's CR4 view.
        unsafe { core::arch::asm!("mov {v}, cr4", v = out(reg) cr4) };
        check("... CR4 keeps PAE", cr4 & 1 << 5 != 0);
    } else {
        expect_fault("mov cr4, rax", probe!("xor eax, eax", "mov cr4, rax"), GP, Some(0));
    }
    expect_fault("wrmsr (EFER)", probe!("mov ecx, 0xC0000080", "xor eax, eax", "xor edx, edx", "wrmsr"), GP, Some(0));
    expect_fault("rdmsr (LSTAR)", probe!("mov ecx, 0xC0000082", "rdmsr"), GP, Some(0));
    expect_fault("lgdt", probe!("lgdt [rsp]"), GP, Some(0));
    expect_fault("lidt", probe!("lidt [rsp]"), GP, Some(0));
    expect_fault("ltr", probe!("mov eax, 0xE040", "ltr ax"), GP, Some(0));
    expect_fault("invlpg", probe!("invlpg [rsp]"), GP, Some(0));
    expect_fault("wbinvd", probe!("wbinvd"), GP, Some(0));
    expect_fault("clts", probe!("clts"), GP, Some(0));
    expect_fault("swapgs", probe!("swapgs"), GP, Some(0));
    // dom0 has the machine's ports but the hypervisor's (the `iodev` guest tests the rest).
    expect_fault("out COM1", probe!("mov dx, 0x3F8", "mov al, 0x41", "out dx, al"), GP, Some(0));
    expect_fault("out isa-debug-exit", probe!("mov dx, 0xF4", "xor eax, eax", "out dx, eax"), GP, Some(0));
    expect_fault("out PIT", probe!("mov al, 0x30", "out 0x43, al"), GP, Some(0));
    // int n through a DPL-0 gate: #GP with an IDT error code naming the vector, passed
    // through as the CPU reported it (hardware: vector << 3 | 2; QEMU TCG: vector << 4 | 2).
    for (what, f, v) in [
        ("int 0x80", probe!("int 0x80"), 0x80u64),
        ("int 0x20", probe!("int 0x20"), 0x20),
        ("int 2 (NMI gate)", probe!("int 2"), 2),
    ] {
        let ok = f.is_some_and(|f| f.vector == GP && (f.error_code == (v << 3) | 2 || f.error_code == (v << 4) | 2));
        if !ok {
            test_guests::println!("  {}: got {:?}", what, f);
        }
        check(what, ok);
    }
    // DPL-3 gates and plain faults are bounced with their own vectors.
    expect_fault("int3", probe!("int3"), 3, None);
    expect_fault("ud2", probe!("ud2"), 6, None);
    expect_fault("divide by zero", probe!("xor edx, edx", "xor eax, eax", "xor ecx, ecx", "div ecx"), 0, None);
    // Loading a hypervisor (DPL 0) data selector.
    expect_fault("mov ds, hypervisor DS", probe!("mov eax, 0xE010", "mov ds, ax"), GP, Some(0xE010));
    check("hypercall after the faults", pv_runtime::hypercall::yield_now() == 0);
    check("still in the kernel's ring", pv_runtime::cpl() == guest_abi::selectors::kernel_rpl(pv_runtime::PV64) as u16);
    finish("privileged")
}
