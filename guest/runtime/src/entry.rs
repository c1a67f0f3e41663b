//! Entry point, ELF notes and the hypercall page.

use crate::StartInfo;
use core::arch::global_asm;

global_asm!(
    r#"
    .section .text.entry, "ax"
    .global _start
_start:
    /* RSI = start_info. Clear .bss, move to our own stack, call Rust. */
    mov %rsi, %r12
    lea __bss_start(%rip), %rdi
    lea __bss_end(%rip), %rcx
    sub %rdi, %rcx
    shr $3, %rcx
    xor %eax, %eax
    rep stosq
    lea guest_stack_top(%rip), %rsp
    xor %ebp, %ebp
    mov %r12, %rdi
    movabs $pv_runtime_start, %rax
    call *%rax
    ud2

    .section .text.hypercall_page, "ax"
    .balign 4096
    .global hypercall_page
hypercall_page:
    .fill 4096, 1, 0xC3

    .section .note.Xen, "a", @note
    .balign 4
    .long 4
    .long 11f - 10f
    .long {GUEST_OS}
    .asciz "Xen"
10: .asciz "rxen-pv"
11:
    .balign 4
    .long 4
    .long 13f - 12f
    .long {GUEST_VERSION}
    .asciz "Xen"
12: .asciz "0.1"
13:
    .balign 4
    .long 4
    .long 15f - 14f
    .long {XEN_VERSION}
    .asciz "Xen"
14: .asciz "xen-3.0"
15:
    .balign 4
    .long 4
    .long 17f - 16f
    .long {LOADER}
    .asciz "Xen"
16: .asciz "generic"
17:
    .balign 4
    .long 4
    .long 19f - 18f
    .long {VIRT_BASE}
    .asciz "Xen"
18: .quad __virt_base
19:
    .balign 4
    .long 4
    .long 21f - 20f
    .long {ENTRY}
    .asciz "Xen"
20: .quad _start
21:
    .balign 4
    .long 4
    .long 23f - 22f
    .long {HYPERCALL_PAGE}
    .asciz "Xen"
22: .quad hypercall_page
23:
    /* rxen's own note (the ring-1 build only): this kernel is written for the ring-1
       model. Without it the hypervisor runs the kernel in its Xen pv64 mode. */
    .if {RING1}
    .balign 4
    .long 5
    .long 4
    .long {RXEN_ABI}
    .asciz "rxen"
    .balign 4
    .long {RXEN_ABI_RING1}
    .endif

    .section .bss.guest_stack, "aw", @nobits
    .balign 16
    .fill 65536, 1, 0
    .global guest_stack_top
guest_stack_top:
"#,
    GUEST_OS = const guest_abi::elfnote::GUEST_OS,
    GUEST_VERSION = const guest_abi::elfnote::GUEST_VERSION,
    XEN_VERSION = const guest_abi::elfnote::XEN_VERSION,
    LOADER = const guest_abi::elfnote::LOADER,
    VIRT_BASE = const guest_abi::elfnote::VIRT_BASE,
    ENTRY = const guest_abi::elfnote::ENTRY,
    HYPERCALL_PAGE = const guest_abi::elfnote::HYPERCALL_PAGE,
    RXEN_ABI = const guest_abi::elfnote::RXEN_ABI,
    RXEN_ABI_RING1 = const guest_abi::elfnote::RXEN_ABI_RING1,
    RING1 = const !crate::PV64 as u8,
    options(att_syntax)
);

extern "Rust" {
    /// The guest's main function.
    fn guest_main(si: &'static StartInfo) -> !;
}

#[no_mangle]
extern "C" fn pv_runtime_start(si: *const StartInfo) -> ! {
    // SAFETY: the builder passes the address of start_info, mapped writable in the bootstrap
    // region for the guest's lifetime.
    let si = unsafe { &*si };
    if crate::PV64 {
        // A user root (Xen pv64 guests have two): the kernel's own until the guest sets
        // one of its own, as XTF does, so that user mode can be entered.
        let l4 = crate::mm::GuestMem::new(si, crate::virt_base()).mfn((si.pt_base - crate::virt_base()) / 4096);
        crate::hypercall::mmuext1(guest_abi::mm::ext::NEW_USER_BASEPTR, l4, 0);
    }
    // A domU a toolstack built prints through its console ring from the start.
    crate::xencons::init(si);
    // SAFETY: `guest_main` is defined by the guest binary with this signature.
    unsafe { guest_main(si) }
}
