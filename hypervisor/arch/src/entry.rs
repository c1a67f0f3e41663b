//! Entry and exit stubs: the only code that runs on the guest root besides the guest.
//!
//! # Entry (interrupt, exception, hypercall)
//! From a guest (CS RPL ≠ 0) the CPU has pushed its frame on this CPU's entry stack (or an IST
//! stack) in the entry area. The stub pushes RAX and RCX there, **loads the hypervisor root
//! into CR3 before touching anything else** (the value comes from the read-only [`EntryRo`]
//! page at a fixed address), switches to the hypervisor stack of `PerCpu`, copies the frame
//! across and saves the remaining registers, building a [`TrapFrame`]. Then Rust runs.
//!
//! From the hypervisor itself (CS RPL = 0), the stub saves registers in place, saves CR3 and
//! loads the hypervisor root (a fault or NMI can arrive inside an exit stub after it switched
//! to the guest root), calls Rust, and returns the way it came. IST stacks live in the entry
//! area, which the guest can read, so on the way out the stub scrubs the handler's stack and
//! the saved registers; only the 5-word IRET frame of the interrupted hypervisor context
//! stays there.
//!
//! # Exit
//! [`exit_to_guest`] runs at the entry-area alias of the text: it restores registers from the
//! `TrapFrame`, moves the IRET frame onto the entry stack, loads the guest root and `iretq`s.

use crate::layout::{ENTRY_RO, ENTRY_STACK_TOP, ENTRY_TEXT, PERCPU_DATA};
use core::arch::global_asm;

/// Saved guest (or hypervisor) state on entry, lowest address first.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default)]
pub struct TrapFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rbx: u64,
    pub rcx: u64,
    pub rax: u64,
    pub vector: u64,
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

const _: () = assert!(core::mem::size_of::<TrapFrame>() == 22 * 8);

impl TrapFrame {
    /// Did the trap come from a guest (ring 1 or 3)?
    pub fn from_guest(&self) -> bool {
        self.cs & 3 != 0
    }
}

/// The read-only constants the stubs read at a fixed address before and after CR3 switches.
#[repr(C)]
#[derive(Debug)]
pub struct EntryRo {
    pub hv_cr3: u64,
    pub guest_cr3: u64,
}

global_asm!(
    r#"
    /* The TrapFrame registers below RCX/RAX, in frame order. */
    .macro push_gprs
    push %rbx; push %rdx; push %rsi; push %rdi; push %rbp
    push %r8; push %r9; push %r10; push %r11; push %r12; push %r13; push %r14; push %r15
    .endm
    /* From guest context: save RAX/RCX where we are (entry or IST stack), load the hypervisor
       root before touching anything else, switch to the hypervisor stack; RCX then points at
       the saved RCX, RAX, and what the CPU pushed above them. */
    .macro enter_hv_from_guest
    push %rax
    push %rcx
    movabs {HV_CR3}, %rax
    mov %rax, %cr3
    /* RFLAGS.AC is the guest's (an exception leaves it): cleared, so SMAP holds in the
       hypervisor (every page of a Xen pv64 guest is a User page). `clac` would #UD
       without SMAP; IF is kept. */
    pushfq
    andq $~(1 << 18), (%rsp)
    popfq
    mov %rsp, %rcx
    movabs {HV_STACK}, %rax
    mov %rax, %rsp
    .endm
    .macro pop_gprs
    pop %r15; pop %r14; pop %r13; pop %r12; pop %r11; pop %r10; pop %r9; pop %r8
    pop %rbp; pop %rdi; pop %rsi; pop %rdx; pop %rbx
    .endm

    .section .entry.text, "ax"
    .balign 4096
    .global __entry_text_start
__entry_text_start:
    .global entry_stubs
entry_stubs:
    .set vec, 0
    .rept 256
    .balign 16
    .if (vec == 8) || ((vec >= 10) && (vec <= 14)) || (vec == 17) || (vec == 21) || (vec == 29) || (vec == 30)
    .else
    pushq $0
    .endif
    pushq $vec
    jmp common_entry
    .set vec, vec + 1
    .endr

common_entry:
    testb $3, 24(%rsp)
    jz from_hypervisor

    /* From a guest: switch address space first. */
    enter_hv_from_guest
    pushq 64(%rcx)
    pushq 56(%rcx)
    pushq 48(%rcx)
    pushq 40(%rcx)
    pushq 32(%rcx)
    pushq 24(%rcx)
    pushq 16(%rcx)
    pushq 8(%rcx)
    pushq (%rcx)
    /* The entry (or IST) stack is readable by whichever guest runs here next: scrub the 9
       words this entry left there (the exit path writes only the resumed vCPU's own). */
    .set off, 0
    .rept 9
    movq $0, off(%rcx)
    .set off, off + 8
    .endr
    push_gprs
    mov %rsp, %rdi
    cld
    movabs $hv_trap_from_guest, %rax
    call *%rax
    ud2

    /* The exit iretq faulted (#NP, #SS, #GP, #PF): the CPU refused a selector or the RIP of
       the frame it was to resume. CR3 is still the guest root and RSP is on the entry stack,
       right below the rejected 5-word frame; the registers hold the guest's. Enter as from
       the guest, with the frame it was to resume and the fault as vector | FAILED_RETURN. */
failed_return:
    enter_hv_from_guest
    movabs ${EXIT_IRET_FRAME}, %rax
    pushq 32(%rax)
    pushq 24(%rax)
    pushq 16(%rax)
    pushq 8(%rax)
    pushq (%rax)
    pushq 24(%rcx)
    mov 16(%rcx), %rax
    or ${FAILED_RETURN}, %rax
    push %rax
    pushq 8(%rcx)
    pushq (%rcx)
    push_gprs
    /* Scrub the entry stack from the fault frame up (nothing of it stays for the next guest). */
    cld
    mov %rcx, %rdi
    movabs ${ENTRY_STACK_TOP}, %rcx
    sub %rdi, %rcx
    shr $3, %rcx
    xor %eax, %eax
    rep stosq
    mov %rsp, %rdi
    movabs $hv_trap_from_guest, %rax
    call *%rax
    ud2

from_hypervisor:
    /* A fault of the exit iretq (not an NMI or #DB landing on it: those have vectors outside
       10..14) is a failed return to the guest, not a hypervisor bug. */
    push %rax
    movabs ${ENTRY_TEXT} + (exit_iret - __entry_text_start), %rax
    cmp %rax, 24(%rsp)
    je 2f
    /* The benchmark gate's iretq resumes the same way (its frame is where the CPU put it:
       the top of the entry stack). */
    movabs ${ENTRY_TEXT} + (bare_iret_stub - __entry_text_start), %rax
    cmp %rax, 24(%rsp)
    jne 1f
2:  mov 8(%rsp), %rax
    sub $10, %rax
    cmp $4, %rax
    ja 1f
    pop %rax
    jmp failed_return
1:  /* RAX is pushed already: the TrapFrame's RAX slot. */
    push %rcx
    push_gprs
    mov %rsp, %rdi
    mov %cr3, %rax
    push %rax
    movabs {HV_CR3}, %rax
    mov %rax, %cr3
    mov %rsp, %rbx
    and $-16, %rsp
    cld
    movabs $hv_trap_from_hypervisor, %rax
    call *%rax
    mov %rbx, %rsp
    /* On an IST stack (entry area, readable by the guest): scrub what the handler left
       below the saved registers. */
    movabs ${IST_BASE}, %rax
    mov %rsp, %rcx
    sub %rax, %rcx
    cmp ${IST_SPAN}, %rcx
    jae 3f
    mov %rsp, %rdi
    and $~0xFFFF, %rdi
    add $0x1000, %rdi
    mov %rsp, %rcx
    sub %rdi, %rcx
    shr $3, %rcx
    xor %eax, %eax
    rep stosq
3:
    pop %rax
    mov %rax, %cr3
    pop_gprs
    pop %rcx
    pop %rax
    /* Scrub the saved registers (and CR3) just popped: they may sit on a guest-readable
       IST stack. Immediate stores need no register. */
    .set off, 8
    .rept 16
    movq $0, -off(%rsp)
    .set off, off + 8
    .endr
    add $16, %rsp
    iretq

    /* rdi = &TrapFrame on the hypervisor stack. Runs from the entry-area alias. */
    .global exit_to_guest_stub
exit_to_guest_stub:
    mov %rdi, %rsp
    pop_gprs
    movabs ${EXIT_FRAME}, %rax
    pop %rcx
    mov %rcx, (%rax)
    pop %rcx
    mov %rcx, 8(%rax)
    add $16, %rsp
    pop %rcx
    mov %rcx, 16(%rax)
    pop %rcx
    mov %rcx, 24(%rax)
    pop %rcx
    mov %rcx, 32(%rax)
    pop %rcx
    mov %rcx, 40(%rax)
    pop %rcx
    mov %rcx, 48(%rax)
    mov %rax, %rsp
    movabs {GUEST_CR3}, %rax
    mov %rax, %cr3
    pop %rcx
    pop %rax
    .global exit_iret
exit_iret:
    iretq

    /* Hypercall round-trip baseline for benchmarks: a bare int+iretq gate target. */
    .global bare_iret_stub
bare_iret_stub:
    iretq
    .balign 4096
    .global __entry_text_end
__entry_text_end:
"#,
    HV_CR3 = const ENTRY_RO,
    GUEST_CR3 = const ENTRY_RO + 8,
    HV_STACK = const PERCPU_DATA + crate::percpu::HV_STACK_TOP_OFFSET as u64,
    EXIT_FRAME = const ENTRY_STACK_TOP - 56,
    EXIT_IRET_FRAME = const ENTRY_STACK_TOP - 40,
    ENTRY_STACK_TOP = const ENTRY_STACK_TOP,
    ENTRY_TEXT = const ENTRY_TEXT,
    FAILED_RETURN = const FAILED_RETURN,
    IST_BASE = const crate::layout::ENTRY_IST_BASE,
    IST_SPAN = const crate::layout::NR_IST as u64 * 0x1_0000,
    options(att_syntax)
);

/// Marks a [`TrapFrame::vector`] that reports a failed return: the exit `iretq` faulted with
/// the vector in the low byte and its error code in `error_code`; the rest of the frame is
/// the one it refused (the guest's registers, RIP, CS, RFLAGS, RSP and SS).
pub const FAILED_RETURN: u64 = 0x200;

extern "C" {
    static __entry_text_start: u8;
    static __entry_text_end: u8;
    static entry_stubs: u8;
    static exit_to_guest_stub: u8;
    static bare_iret_stub: u8;
}

/// Image address of a symbol in `.entry.text`.
fn sym(s: &u8) -> u64 {
    s as *const u8 as u64
}

/// Start and end (image addresses) of the entry text.
pub fn entry_text_range() -> (u64, u64) {
    // SAFETY: linker symbols; only addresses are taken.
    unsafe { (sym(&__entry_text_start), sym(&__entry_text_end)) }
}

/// Entry-area address of an image address inside `.entry.text`.
fn alias(image_va: u64) -> u64 {
    ENTRY_TEXT + (image_va - entry_text_range().0)
}

/// Entry-area address of the stub for `vector`.
pub fn stub_address(vector: u8) -> u64 {
    // SAFETY: linker symbol; only its address is taken.
    alias(unsafe { sym(&entry_stubs) }) + 16 * vector as u64
}

/// Entry-area address of the bare `iretq` stub (benchmark baseline gate).
pub fn bare_iret_address() -> u64 {
    // SAFETY: linker symbol; only its address is taken.
    alias(unsafe { sym(&bare_iret_stub) })
}

/// What the binary installs to handle traps.
pub struct Handlers {
    /// A trap from a guest; returns true to resume the (possibly modified) frame, false when
    /// this CPU has nothing to run (then `idle` takes over).
    pub guest: fn(&mut TrapFrame) -> bool,
    /// A trap inside the hypervisor; on return the frame is resumed.
    pub hypervisor: fn(&mut TrapFrame),
    /// This CPU's idle loop: waits for work and resumes a guest.
    pub idle: fn() -> !,
}

static HANDLERS: spin::Once<Handlers> = spin::Once::new();

/// Installs the trap handlers (once).
pub fn set_handlers(h: Handlers) {
    HANDLERS.call_once(|| h);
}

#[no_mangle]
extern "C" fn hv_trap_from_guest(frame: &mut TrapFrame) -> ! {
    match HANDLERS.get() {
        Some(h) => {
            if !(h.guest)(frame) {
                (h.idle)()
            }
        }
        None => crate::cpu::halt_forever(),
    }
    exit_to_guest(frame)
}

#[no_mangle]
extern "C" fn hv_trap_from_hypervisor(frame: &mut TrapFrame) {
    match HANDLERS.get() {
        Some(h) => (h.hypervisor)(frame),
        None => crate::cpu::halt_forever(),
    }
}

/// Resumes a guest with `frame` (any hypervisor memory). A frame whose CS or SS has RPL 0
/// would return to ring 0 on the guest root: that is never done (the CPU halts instead). A
/// selector or RIP the CPU refuses comes back as a failed return (`FAILED_RETURN`).
pub fn exit_to_guest(frame: &TrapFrame) -> ! {
    if frame.cs & 3 == 0 || frame.ss & 3 == 0 {
        crate::console::emergency_write_fmt(format_args!("(XEN) refusing to resume {:#x}:{:#x} in ring 0\n", frame.cs, frame.rip));
        crate::cpu::halt_forever()
    }
    // SAFETY: linker symbol; only its address is taken.
    let stub = alias(unsafe { sym(&exit_to_guest_stub) });
    // SAFETY: the stub restores `frame` and iretqs to the guest on the guest root; it runs
    // from the entry-area alias, which both roots map. It never returns.
    unsafe {
        core::arch::asm!("jmp {}", in(reg) stub, in("rdi") frame as *const TrapFrame, options(noreturn))
    }
}
