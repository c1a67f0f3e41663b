//! Exceptions through the virtual IDT.
//!
//! The runtime registers a handler for every exception vector with `set_trap_table`. The
//! hypervisor bounces a fault with a hardware-shaped frame on the kernel stack
//! (`[error code], RIP, CS, RFLAGS, RSP, SS`), so the stubs here look like native ones and
//! return with `iretq`.
//!
//! In the Xen pv64 build ([`crate::PV64`]) the frame starts with the interrupted RCX and
//! R11, which the stubs pop first (as Linux's Xen entry points do), a kernel-mode frame's CS
//! and SS have RPL 0, and every return goes through `HYPERVISOR_iret` (as Linux's does):
//! it switches to the user root for a return to user mode, and avoids a ring-3 `iretq`,
//! whose stack reads QEMU 7.2's TCG checks as supervisor accesses (SMAP refuses them).
//!
//! Tests use [`probe`]-style recovery: before a deliberate fault they store a resume address
//! in [`RECOVER`]; the handler then records the fault in [`LAST_FAULT`] and resumes there.

use core::arch::global_asm;
use core::sync::atomic::{AtomicU64, Ordering};
use crate::{KERNEL_CS, KERNEL_SS};
use guest_abi::traps::TrapInfo;

/// Registers as the stubs save them, then the bounce frame.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Frame {
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
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    pub vector: u64,
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

global_asm!(
    r#"
    .section .text.guest_traps, "ax"
    .global guest_trap_stubs
    .balign 16
guest_trap_stubs:
    .set vec, 0
    .rept 32
    .balign 16
    .if {PV64}
    pop %rcx
    pop %r11
    .endif
    .if (vec == 8) || ((vec >= 10) && (vec <= 14)) || (vec == 17) || (vec == 21) || (vec == 29) || (vec == 30)
    .else
    pushq $0
    .endif
    pushq $vec
    jmp guest_trap_common
    .set vec, vec + 1
    .endr
    /* int 0x80 (system calls): the same frame, vector 0x80. */
    .global guest_int80_stub
guest_int80_stub:
    .if {PV64}
    pop %rcx
    pop %r11
    .endif
    pushq $0
    pushq $0x80
    jmp guest_trap_common
    .global guest_trap_common
guest_trap_common:
    push %rax
    push %rbx
    push %rcx
    push %rdx
    push %rsi
    push %rdi
    push %rbp
    push %r8
    push %r9
    push %r10
    push %r11
    push %r12
    push %r13
    push %r14
    push %r15
    mov %rsp, %rdi
    mov %rsp, %rbx
    and $-16, %rsp
    cld
    movabs $pv_runtime_trap, %rax
    call *%rax
    mov %rbx, %rsp
    pop %r15
    pop %r14
    pop %r13
    pop %r12
    pop %r11
    pop %r10
    pop %r9
    pop %r8
    pop %rbp
    pop %rdi
    pop %rsi
    pop %rdx
    pop %rcx
    pop %rbx
    pop %rax
    add $16, %rsp
    .if {PV64}
    /* HYPERVISOR_iret, to kernel or user mode as the frame's CS says (flags 0: RCX and R11
       are restored as they are). */
    pushq $0
    jmp hypercall_page + {IRET} * 32
    .else
    iretq
    .endif
"#,
    PV64 = const crate::PV64 as u8,
    IRET = const guest_abi::hypercall::IRET,
    options(att_syntax)
);

extern "C" {
    static guest_trap_stubs: u8;
    static guest_int80_stub: u8;
}

/// Registers the runtime's handler for `int 0x80`, callable from guest user mode (DPL 3):
/// the hypervisor then points the vector straight at it, so a system call enters the guest
/// kernel without entering the hypervisor.
pub fn install_int80() -> i64 {
    install_vector(0x80, int80_stub_address(), 3)
}

/// The address of the runtime's `int 0x80` entry (reports vector 0x80 to `run_user`).
pub fn int80_stub_address() -> u64 {
    core::ptr::addr_of!(guest_int80_stub) as u64
}

/// Registers `handler` for `vector` with the given DPL (one-entry `set_trap_table`).
pub fn install_vector(vector: u8, handler: u64, dpl: u8) -> i64 {
    let table = [
        TrapInfo { vector, flags: dpl & 3, cs: KERNEL_CS, _pad: 0, address: handler },
        TrapInfo::default(),
    ];
    // SAFETY: the table ends with a zero entry and stays valid during the call.
    unsafe { crate::hypercall::hypercall5(guest_abi::hypercall::SET_TRAP_TABLE, table.as_ptr() as u64, 0, 0, 0, 0) }
}

/// Pseudo-vector the event upcall entry passes to the common trap path.
pub const UPCALL_VECTOR: u64 = 0x100;

/// Where to resume after an expected fault (0 = none expected).
pub static RECOVER: AtomicU64 = AtomicU64::new(0);
/// With [`RECOVER`], for faults taken in ring 3: the kernel stack pointer to resume on (the
/// handler then returns to ring 1).
pub static RECOVER_RSP: AtomicU64 = AtomicU64::new(0);

/// The last recovered fault: (vector, error code, rip), vector = u64::MAX when none.
pub static LAST_FAULT: [AtomicU64; 3] =
    [AtomicU64::new(u64::MAX), AtomicU64::new(0), AtomicU64::new(0)];

/// A fault the handler recovered from.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    pub vector: u8,
    pub error_code: u64,
    pub rip: u64,
}

/// Takes the last recovered fault, if any.
pub fn take_fault() -> Option<Fault> {
    let v = LAST_FAULT[0].swap(u64::MAX, Ordering::SeqCst);
    (v != u64::MAX).then(|| Fault {
        vector: v as u8,
        error_code: LAST_FAULT[1].load(Ordering::SeqCst),
        rip: LAST_FAULT[2].load(Ordering::SeqCst),
    })
}

/// Hook for unexpected faults (dom0 prints them; tests fail).
static UNEXPECTED: AtomicU64 = AtomicU64::new(0);

/// Sets the function called for faults nobody expected. It may return to resume the frame.
pub fn on_unexpected(f: fn(&mut Frame)) {
    UNEXPECTED.store(f as *const () as u64, Ordering::SeqCst);
}

#[no_mangle]
extern "C" fn pv_runtime_trap(f: &mut Frame) {
    if f.vector == UPCALL_VECTOR {
        crate::events::upcall();
        return;
    }
    let r = RECOVER.swap(0, Ordering::SeqCst);
    if r != 0 {
        LAST_FAULT[1].store(f.error_code, Ordering::SeqCst);
        LAST_FAULT[2].store(f.rip, Ordering::SeqCst);
        LAST_FAULT[0].store(f.vector, Ordering::SeqCst);
        f.rip = r;
        // A fault in user mode (pv64: kernel-mode frames have RPL 0) resumes in the kernel.
        if f.cs & 3 == 3 {
            let rpl = if crate::PV64 { 3 } else { 0 };
            f.cs = (KERNEL_CS & !rpl) as u64;
            f.ss = (KERNEL_SS & !rpl) as u64;
            f.rsp = RECOVER_RSP.swap(0, Ordering::SeqCst);
        }
        return;
    }
    let h = UNEXPECTED.load(Ordering::SeqCst);
    if h != 0 {
        // SAFETY: only `on_unexpected` stores here, from a `fn(&mut Frame)`.
        let h: fn(&mut Frame) = unsafe { core::mem::transmute(h as usize) };
        h(f);
        return;
    }
    crate::println!(
        "unexpected exception {} error {:#x} at {:#x}",
        f.vector,
        f.error_code,
        f.rip
    );
    crate::hypercall::shutdown(guest_abi::sched::ShutdownReason::Crash)
}

/// The runtime's entry for exception `vector` (0..32), for trap tables built by hand (e.g. a
/// `vcpu_guest_context`).
pub fn vector_stub(vector: u8) -> u64 {
    core::ptr::addr_of!(guest_trap_stubs) as u64 + 16 * (vector as u64 & 31)
}

/// Registers handlers for vectors 0–31 (events masked on delivery for none of them).
pub fn install() -> i64 {
    let base = core::ptr::addr_of!(guest_trap_stubs) as u64;
    let mut table = [TrapInfo::default(); 33];
    for (v, t) in table.iter_mut().take(32).enumerate() {
        // #BP and #OF may be raised with int3/into from any ring, like native gates.
        let dpl = if v == 3 || v == 4 { 3 } else { 0 };
        *t = TrapInfo { vector: v as u8, flags: dpl, cs: KERNEL_CS, _pad: 0, address: base + 16 * v as u64 };
    }
    // SAFETY: the table ends with a zero entry and stays valid during the call.
    unsafe {
        crate::hypercall::hypercall5(guest_abi::hypercall::SET_TRAP_TABLE, table.as_ptr() as u64, 0, 0, 0, 0)
    }
}

/// Runs the assembly lines expecting a fault: returns the fault, or `None` if they ran to
/// completion. Operands follow a `;`: `probe!("mov rax, [{a}]"; a = in(reg) va)`.
#[macro_export]
macro_rules! probe {
    ($($insn:literal),+ $(; $($op:tt)*)?) => {{
        // The caller's instructions and operands are the point of this macro: they can only
        // go inside the asm block (the caller's own `unsafe` obligations are the instructions').
        // SAFETY: the instructions are expected to fault; the runtime's handler resumes at
        // label 2 and records the fault.
        #[allow(clippy::macro_metavars_in_unsafe)]
        unsafe {
            core::arch::asm!(
                "lea {tmp}, [rip + 2f]",
                "mov qword ptr [rip + {rec}], {tmp}",
                $($insn),+,
                "2:",
                "mov qword ptr [rip + {rec}], 0",
                $($($op)*,)?
                rec = sym $crate::traps::RECOVER,
                tmp = out(reg) _,
                out("rax") _, out("rcx") _, out("rdx") _,
            );
        }
        $crate::traps::take_fault()
    }};
}

/// Runs user code at `rip` in ring 3 on `user_rsp` and returns the fault that brought the
/// CPU back to the kernel (`None` is impossible: user code can only come back by faulting).
pub fn run_user(rip: u64, user_rsp: u64) -> Option<Fault> {
    // SAFETY: enters ring 3 with iretq (pv64: HYPERVISOR_iret, whose frame is the same with
    // a flags word below; its stub pushes RCX, R11 and RAX under that); the only way back is
    // a fault, which the handler turns into a return to label 2 on the saved kernel stack.
    unsafe {
        core::arch::asm!(
            "lea rax, [rip + 2f]",
            "mov qword ptr [rip + {rec}], rax",
            "mov qword ptr [rip + {rsp}], rsp",
            "push r8",
            "push r9",
            "push 0x202",
            "push r10",
            "push r11",
            ".if {pv64}",
            "push 0",
            "jmp {iret}",
            ".else",
            "iretq",
            ".endif",
            "2:",
            rec = sym RECOVER,
            rsp = sym RECOVER_RSP,
            pv64 = const crate::PV64 as u8,
            iret = in(reg) crate::hypercall::stub_address(guest_abi::hypercall::IRET),
            in("r8") guest_abi::selectors::FLAT_USER_SS as u64,
            in("r9") user_rsp,
            in("r10") guest_abi::selectors::FLAT_USER_CS as u64,
            in("r11") rip,
            // User code may change any caller-saved register before it faults.
            clobber_abi("C"),
        );
    }
    take_fault()
}
