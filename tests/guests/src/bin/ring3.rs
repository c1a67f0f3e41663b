//! Guest ring 3: `int 0x82` from user mode is a #GP bounced to the kernel and makes no
//! hypercall; privileged instructions and supervisor pages are out of reach; #BP (a DPL-3
//! gate) reaches the kernel. User mappings are made with validated page-table updates.
#![no_std]
#![no_main]

use pv_runtime::hypercall as hc;
use pv_runtime::traps::run_user;
use test_guests::*;

#[no_mangle]
fn guest_main(si: &'static pv_runtime::StartInfo) -> ! {
    start("ring3");
    // User code: "mov eax, 17 (xen_version); xor edi, edi; int 0x82; ud2" at +0, "cli" at +16,
    // "mov rax, [kernel page]" at +32, "int3" at +48, "int 0x80" at +64.
    let mut bytes = [0xCCu8; 80];
    // "syscall" at +72.
    bytes[..13].copy_from_slice(&[0xB8, 17, 0, 0, 0, 0x31, 0xFF, 0xCD, 0x82, 0x0F, 0x0B, 0x90, 0x90]);
    bytes[16] = 0xFA;
    bytes[32..34].copy_from_slice(&[0x48, 0xA1]);
    bytes[34..42].copy_from_slice(&si.pt_base.to_le_bytes());
    bytes[48] = 0xCC;
    bytes[64..66].copy_from_slice(&[0xCD, 0x80]);
    bytes[72..74].copy_from_slice(&[0x0F, 0x05]); // syscall
    let (code, user_sp) = user_pages(si, &bytes);
    let f = run_user(code, user_sp);
    let gp_0x82 = |f: Option<pv_runtime::traps::Fault>| {
        f.is_some_and(|f| f.vector == 13 && (f.error_code == (0x82 << 3) | 2 || f.error_code == (0x82 << 4) | 2))
    };
    if !gp_0x82(f) {
        println!("  int 0x82 from ring 3: got {:?}", f);
    }
    check("int 0x82 from ring 3 is #GP, no hypercall", gp_0x82(f));
    check("the #GP was at the int 0x82", f.is_some_and(|f| f.rip == code + 7));
    expect_fault("cli from ring 3", run_user(code + 16, user_sp), 13, Some(0));
    // #PF error code: present (1) | user (4), read.
    expect_fault("read a kernel page from ring 3", run_user(code + 32, user_sp), 14, Some(5));
    expect_fault("int3 from ring 3 reaches the kernel", run_user(code + 48, user_sp), 3, None);
    let f = run_user(code + 64, user_sp);
    check("int 0x80 from ring 3 is #GP while no DPL-3 handler is registered", f.is_some_and(|f| f.vector == 13));
    // With a DPL-3 handler registered, int 0x80 reaches the guest kernel directly.
    expect_ret("register int 0x80 (DPL 3)", pv_runtime::traps::install_int80(), 0);
    let f = run_user(code + 64, user_sp);
    check("int 0x80 delivered to the kernel's handler", f.is_some_and(|f| f.vector == 0x80 && f.rip == code + 66));
    // The hypervisor's IDT now points 0x80 at the guest: a DPL-3 trap gate into ring 1.
    // SAFETY: the entry-area IDT is readable from ring 1.
    let idt80 = unsafe { ((0xFFFF_8200_0001_0000u64 + 16 * 0x80) as *const u64).read_volatile() };
    check("IDT 0x80 is a DPL-3 trap gate to the ring-1 code segment",
        (idt80 >> 40) & 0xFF == 0xEF && (idt80 >> 16) & 0xFFFF == guest_abi::selectors::FLAT_KERNEL_CS as u64);
    expect_ret("unregister it (DPL 0)", pv_runtime::traps::install_vector(0x80, 0x10_1000, 0), 0);
    // SAFETY: as above.
    let idt80 = unsafe { ((0xFFFF_8200_0001_0000u64 + 16 * 0x80) as *const u64).read_volatile() };
    check("IDT 0x80 back to the hypervisor's gate", (idt80 >> 16) & 0xFFFF == guest_abi::selectors::HYPERVISOR_CS as u64);
    let f = run_user(code + 64, user_sp);
    check("and int 0x80 from ring 3 is #GP again", f.is_some_and(|f| f.vector == 13));
    // `syscall` from ring 3: #UD without a syscall callback; with one, the hypervisor bounces
    // it to the callback (here the runtime's int 0x80 stub, which reports vector 0x80).
    expect_fault("syscall without a callback is #UD", run_user(code + 72, user_sp), 6, None);
    let cb = guest_abi::traps::CallbackRegister {
        ty: guest_abi::traps::CALLBACKTYPE_SYSCALL,
        flags: 0,
        _pad: 0,
        address: pv_runtime::traps::int80_stub_address(),
    };
    // SAFETY: `cb` is valid for the call.
    let r = unsafe { pv_runtime::hypercall::hypercall5(guest_abi::hypercall::CALLBACK_OP, 0, &cb as *const _ as u64, 0, 0, 0) };
    expect_ret("register the syscall callback", r, 0);
    let f = run_user(code + 72, user_sp);
    if !f.is_some_and(|f| f.vector == 0x80 && f.rip == code + 74) {
        println!("  syscall: got {:?}", f);
    }
    check("syscall from ring 3 reaches the callback, returning after it", f.is_some_and(|f| f.vector == 0x80 && f.rip == code + 74));
    check("back in ring 1", pv_runtime::cpl() == 1);
    check("hypercalls still work from ring 1", hc::yield_now() == 0);
    finish("ring3")
}
