//! A test kernel for the Xen pv64 mode, written the way Xen's own test kernels (XTF) are:
//! its ELF notes are Xen's alone (no rxen ABI note), so it runs with its kernel in ring 3 on
//! Xen's flat selectors, makes hypercalls with the `syscall` stubs of its hypercall page,
//! takes Xen's frames (RCX and R11 below the hardware frame, CS with RPL 0 for kernel mode),
//! returns with `HYPERVISOR_iret`, and runs user code on a user root of its own
//! (`MMUEXT_NEW_USER_BASEPTR`) that does not map the kernel.
//!
//! Command line: nothing for the checks; `noroot` returns to user mode without a user root
//! and `badframe` gives `HYPERVISOR_iret` an unmapped frame (both must crash the domain).
//! Ends with `Test result: SUCCESS` (or `FAILURE`) and a poweroff.
#![no_std]
#![no_main]

use core::arch::{asm, global_asm};
use core::fmt::Write;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};
use guest_abi::hypercall as nr;
use guest_abi::start_info::StartInfo;

global_asm!(
    r#"
    .section .text.entry, "ax"
    .global _start
_start:
    mov %rsi, %rdi
    lea boot_stack_top(%rip), %rsp
    call pv64_main
    ud2

    .section .text.hypercall_page, "ax"
    .balign 4096
    .global hypercall_page
hypercall_page:
    .fill 4096, 1, 0xC3

    /* Trap stubs: vector (0x100 syscall callback, 0x101 event, 0x102 failsafe) and the
       number of words the frame holds between R11 and RIP (error code, selectors). */
    .text
    .macro stub name, vec, below
    .global \name
\name:
    pushq $\below
    pushq $\vec
    jmp trap_common
    .endm
    stub trap_db, 1, 0
    stub trap_bp, 3, 0
    stub trap_ud, 6, 0
    stub trap_gp, 13, 1
    stub trap_pf, 14, 1
    stub trap_20, 0x20, 0
    stub trap_21, 0x21, 0
    stub trap_80, 0x80, 0
    stub trap_81, 0x81, 0
    stub cb_syscall, 0x100, 0
    stub cb_event, 0x101, 0
    stub cb_failsafe, 0x102, 4

trap_common:
    push %rax; push %rbx; push %rcx; push %rdx; push %rsi; push %rdi; push %rbp
    push %r8; push %r9; push %r10; push %r11; push %r12; push %r13; push %r14; push %r15
    mov %rsp, %rdi
    mov %rsp, %rbx
    and $-16, %rsp
    cld
    call pv64_trap
    mov %rbx, %rsp
    pop %r15; pop %r14; pop %r13; pop %r12; pop %r11; pop %r10; pop %r9; pop %r8
    pop %rbp; pop %rdi; pop %rsi; pop %rdx; pop %rcx; pop %rbx; pop %rax
    /* Return through HYPERVISOR_iret with the frame the handler left in iret_area: the
       stub pushes RCX, R11 and RAX below it. */
    lea iret_area+24(%rip), %rsp
    jmp hypercall_page + 23 * 32

    /* enter_user(rip, rsp, rflags): to user mode through HYPERVISOR_iret; comes back when
       the user code ends (the syscall callback resumes user_done). */
    .global enter_user
enter_user:
    push %rbx; push %rbp; push %r12; push %r13; push %r14; push %r15
    mov %rsp, kernel_saved_sp(%rip)
    lea iret_area+24(%rip), %rax
    movq $0, 0(%rax)
    mov %rdi, 8(%rax)
    movq ${USER_CS}, 16(%rax)
    mov %rdx, 24(%rax)
    mov %rsi, 32(%rax)
    movq ${USER_SS}, 40(%rax)
    mov %rax, %rsp
    xor %eax, %eax
    jmp hypercall_page + 23 * 32
    .global user_done
user_done:
    mov kernel_saved_sp(%rip), %rsp
    pop %r15; pop %r14; pop %r13; pop %r12; pop %rbp; pop %rbx
    ret

    /* enter_user_mc(rip, rsp, rflags, list): to user mode through a multicall whose first
       entry is an iret (the iret frame on the stack, RAX 0xdead in it); comes back as
       enter_user does. */
    .global enter_user_mc
enter_user_mc:
    push %rbx; push %rbp; push %r12; push %r13; push %r14; push %r15
    mov %rsp, kernel_saved_sp(%rip)
    pushq ${USER_SS}
    push %rsi
    push %rdx
    pushq ${USER_CS}
    push %rdi
    pushq $0
    pushq $0
    pushq $0
    pushq $0xdead
    mov %rcx, %rdi
    mov $2, %esi
    mov $13, %eax
    syscall
    ud2

    /* iret_to(frame): HYPERVISOR_iret with the 6-word frame given (flags, RIP, CS, RFLAGS,
       RSP, SS) copied to iret_area. */
    .global iret_to
iret_to:
    lea iret_area+24(%rip), %rax
    .set i, 0
    .rept 6
    mov i(%rdi), %rcx
    mov %rcx, i(%rax)
    .set i, i + 8
    .endr
    mov %rax, %rsp
    xor %eax, %eax
    jmp hypercall_page + 23 * 32

    .section .bss.pv64, "aw", @nobits
    .balign 16
    .global iret_area
iret_area: .fill 16, 8, 0
kernel_saved_sp: .quad 0
    .balign 16
    .fill 32768, 1, 0
boot_stack_top:
    .fill 32768, 1, 0
    .global kernel_stack_top
kernel_stack_top:

    .section .note.Xen, "a", @note
    .balign 4
    .long 4
    .long 11f - 10f
    .long {GUEST_OS}
    .asciz "Xen"
10: .asciz "pv64-test"
11:
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
"#,
    GUEST_OS = const guest_abi::elfnote::GUEST_OS,
    XEN_VERSION = const guest_abi::elfnote::XEN_VERSION,
    LOADER = const guest_abi::elfnote::LOADER,
    VIRT_BASE = const guest_abi::elfnote::VIRT_BASE,
    ENTRY = const guest_abi::elfnote::ENTRY,
    HYPERCALL_PAGE = const guest_abi::elfnote::HYPERCALL_PAGE,
    USER_CS = const USER_CS,
    USER_SS = const USER_SS,
    options(att_syntax)
);

extern "C" {
    static hypercall_page: u8;
    static iret_area: u8;
    static kernel_stack_top: u8;
    fn trap_db();
    fn trap_bp();
    fn trap_ud();
    fn trap_gp();
    fn trap_pf();
    fn trap_20();
    fn trap_21();
    fn trap_80();
    fn trap_81();
    fn cb_syscall();
    fn cb_event();
    fn cb_failsafe();
    fn enter_user(rip: u64, rsp: u64, rflags: u64);
    fn enter_user_mc(rip: u64, rsp: u64, rflags: u64, list: *mut [u64; 16]);
    fn user_done();
    fn iret_to(frame: &[u64; 6]) -> !;
}

/// Xen's 64-bit PV selectors: kernel and user share them (ring 3); frames show the kernel's
/// with RPL 0.
const USER_CS: u64 = 0xE033;
const USER_SS: u64 = 0xE02B;
const KERNEL_CS_RPL0: u64 = 0xE030;

/// Where the user root maps its code and stack (L4 slot 1: nothing of the kernel's).
const USER_VA: u64 = 0x80_0000_0000;

fn addr(f: unsafe extern "C" fn()) -> u64 {
    f as usize as u64
}

/// A hypercall through the hypercall page (Xen's `syscall` stubs).
fn hypercall(n: u64, a: [u64; 5]) -> i64 {
    // SAFETY: the stub at `hypercall_page + 32 n` is the hypervisor's; it preserves every
    // register but RAX and the argument registers, which are declared clobbered.
    unsafe {
        let page = &hypercall_page as *const u8 as u64;
        let r: i64;
        asm!("call {s}", s = in(reg) page + 32 * n, inlateout("rax") n as i64 => r,
             inlateout("rdi") a[0] => _, inlateout("rsi") a[1] => _, inlateout("rdx") a[2] => _,
             inlateout("r10") a[3] => _, inlateout("r8") a[4] => _);
        r
    }
}

struct Console;

impl Write for Console {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        hypercall(nr::CONSOLE_IO, [nr::console_io::WRITE, s.len() as u64, s.as_ptr() as u64, 0, 0]);
        Ok(())
    }
}

macro_rules! say {
    ($($t:tt)*) => {{ let _ = writeln!(Console, $($t)*); }};
}

static CHECKS: AtomicUsize = AtomicUsize::new(0);
static FAILED: AtomicUsize = AtomicUsize::new(0);

fn check(what: &str, ok: bool) {
    CHECKS.fetch_add(1, SeqCst);
    if !ok {
        FAILED.fetch_add(1, SeqCst);
        say!("FAIL: {}", what);
    }
}

fn expect(what: &str, got: i64, want: i64) {
    if got != want {
        say!("  {}: got {} want {}", what, got, want);
    }
    check(what, got == want);
}

fn shutdown(reason: u32) -> ! {
    let r = reason;
    loop {
        hypercall(nr::SCHED_OP, [guest_abi::sched::SCHEDOP_SHUTDOWN, &r as *const u32 as u64, 0, 0, 0]);
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    say!("pv64 panic: {}", info);
    shutdown(guest_abi::sched::ShutdownReason::Crash as u32)
}

/// What the trap stubs saved: the registers, then the vector and the count of words
/// between the frame's R11 and RIP, then Xen's frame.
#[repr(C)]
struct Saved {
    r15: u64, r14: u64, r13: u64, r12: u64, r11: u64, r10: u64, r9: u64, r8: u64,
    rbp: u64, rdi: u64, rsi: u64, rdx: u64, rcx: u64, rbx: u64, rax: u64,
    vec: u64,
    below: u64,
    frame: [u64; 11],
}

/// One trap as a handler saw it.
#[derive(Copy, Clone, Default, Debug)]
struct Trap {
    vec: u64,
    below: [u64; 4],
    rip: u64,
    cs: u64,
    rflags: u64,
    rsp: u64,
    ss: u64,
    /// The frame's RCX and R11 words, and RAX/RDI as the handler found them.
    rcx: u64,
    r11: u64,
    rax: u64,
    rdi: u64,
    cr2: u64,
}

const LOG_LEN: usize = 128;
static mut LOG: [Trap; LOG_LEN] = [Trap { vec: 0, below: [0; 4], rip: 0, cs: 0, rflags: 0, rsp: 0, ss: 0, rcx: 0, r11: 0, rax: 0, rdi: 0, cr2: 0 }; LOG_LEN];
static LOGGED: AtomicUsize = AtomicUsize::new(0);
/// The shared_info page, once mapped (vcpu_info 0 at its start).
static SHARED: AtomicU64 = AtomicU64::new(0);

fn logged(i: usize) -> Trap {
    // SAFETY: entries below LOGGED are written once, before LOGGED moves past them.
    unsafe { (*core::ptr::addr_of!(LOG))[i] }
}

fn cr2() -> u64 {
    match SHARED.load(SeqCst) {
        0 => 0,
        // SAFETY: the shared_info page is mapped at this address; vcpu_info 0's arch.cr2.
        s => unsafe { ((s + 16) as *const u64).read_volatile() },
    }
}

/// Every trap and callback lands here (events masked: the vectors are registered so, and
/// the callbacks mask them). Logs the trap and chooses how to go on: the syscall with the
/// end marker goes back to the kernel (`user_done`); anything else resumes where it was,
/// `R12` bytes further (the code under test sets R12 to the trapping instruction's length
/// when the frame points at it); the failsafe callback resumes with a good SS.
#[no_mangle]
extern "C" fn pv64_trap(s: &mut Saved) {
    let n = s.below as usize;
    let f = &s.frame;
    let t = Trap {
        vec: s.vec,
        below: core::array::from_fn(|i| if i < n { f[2 + i] } else { 0 }),
        rip: f[2 + n],
        cs: f[3 + n],
        rflags: f[4 + n],
        rsp: f[5 + n],
        ss: f[6 + n],
        rcx: f[0],
        r11: f[1],
        rax: s.rax,
        rdi: s.rdi,
        cr2: cr2(),
    };
    let i = LOGGED.load(SeqCst);
    if i >= LOG_LEN {
        // A trap the code under test did not expect, taken again and again: a failure, not
        // a hang.
        check("fewer traps than the log holds", false);
        say!("  last: {:x?}", t);
        finish()
    }
    // SAFETY: one handler runs at a time (events are masked in all of them).
    unsafe { (*core::ptr::addr_of_mut!(LOG))[i] = t };
    LOGGED.store(i + 1, SeqCst);
    // The interrupted RCX and R11 are the frame's.
    s.rcx = t.rcx;
    s.r11 = t.r11;
    let mut out = [0, t.rip.wrapping_add(s.r12), t.cs & 0xFFFF, t.rflags & !(1 << 9), t.rsp, t.ss];
    if s.vec == 0x100 && s.rax == 0xD0DE {
        out = [0, addr(user_done), KERNEL_CS_RPL0, 0x2, t.rsp, USER_SS];
    }
    if s.vec == 0x101 {
        // The event: acknowledged (upcall_pending and the selector word cleared); resumed
        // exactly where it was.
        if let Some(sh) = core::num::NonZeroU64::new(SHARED.load(SeqCst)) {
            // SAFETY: the mapped shared_info page (vcpu_info 0 and the pending bitmap).
            unsafe {
                (sh.get() as *mut u8).write_volatile(0);
                ((sh.get() + 8) as *mut u64).write_volatile(0);
                for w in 0..8 {
                    ((sh.get() + 2048 + 8 * w) as *mut u64).write_volatile(0);
                }
            }
        }
        out[1] = t.rip;
    }
    if s.vec == 0x102 {
        out = [0, t.rip, t.cs & 0xFFFF, t.rflags & !(1 << 9), t.rsp, USER_SS];
    }
    if s.vec == 1 {
        // A single step: once is enough.
        out[3] &= !(1 << 8);
    }
    if s.vec == 13 && t.rip == NONCANONICAL {
        out[1] = RECOVER.load(SeqCst);
    }
    s.r12 = 0;
    // SAFETY: iret_area has 16 words; the return stub reads words 3..9 and pushes 3 below.
    unsafe { core::ptr::copy_nonoverlapping(out.as_ptr(), (&iret_area as *const u8 as *mut u64).add(3), 6) };
}

/// `mmu_update` of one entry.
fn mmu_update(ptr: u64, val: u64) -> i64 {
    let req = [ptr, val];
    hypercall(nr::MMU_UPDATE, [req.as_ptr() as u64, 1, 0, guest_abi::DOMID_SELF as u64, 0])
}

fn mmuext(cmd: u32, arg1: u64) -> i64 {
    let op = [cmd as u64, arg1, 0];
    hypercall(nr::MMUEXT_OP, [op.as_ptr() as u64, 1, 0, guest_abi::DOMID_SELF as u64, 0])
}

/// Writes `words` into frame `mfn` as plain memory (it is no table).
fn fill(mfn: u64, words: &[u64]) -> bool {
    words.iter().enumerate().all(|(i, &w)| mmu_update((mfn << 12) + 8 * i as u64, w) == 0)
}

/// The user program (see the module's checks): a `syscall` carrying a would-be
/// `sched_op(shutdown)`, a read of the kernel's image (not mapped here), `int 0x80` (DPL 3),
/// `int 0x81` (DPL 1), `ud2`, and the end marker's `syscall`.
const USER_CODE: [u8; 128] = {
    let mut c = [0xCCu8; 128];
    let code: [u8; 58] = [
        0xB8, 29, 0, 0, 0, // mov eax, 29 (sched_op)
        0xBF, 2, 0, 0, 0, // mov edi, 2 (shutdown)
        0x0F, 0x05, // syscall
        0x41, 0xBC, 10, 0, 0, 0, // mov r12d, 10
        0x48, 0xA1, 0, 0, 0x10, 0, 0, 0, 0, 0, // mov rax, [0x100000]
        0x45, 0x31, 0xE4, // xor r12d, r12d
        0xCD, 0x80, // int 0x80
        0x41, 0xBC, 2, 0, 0, 0, // mov r12d, 2
        0xCD, 0x81, // int 0x81
        0x41, 0xBC, 2, 0, 0, 0, // mov r12d, 2
        0x0F, 0x0B, // ud2
        0xB8, 0xDE, 0xD0, 0, 0, // mov eax, 0xD0DE
        0x0F, 0x05, // syscall
        0xEB, 0xFE, // jmp .
    ];
    c = put(c, 0, &code);
    // At USER_IO: the virtual IOPL's instructions, each skipped if it faults (R12).
    let io: [u8; 31] = [
        0x41, 0xBC, 1, 0, 0, 0, // mov r12d, 1
        0xFA, // cli
        0x41, 0xBC, 2, 0, 0, 0, // mov r12d, 2
        0xE6, 0x80, // out 0x80, al
        0x41, 0xBC, 1, 0, 0, 0, // mov r12d, 1
        0xFB, // sti
        0xB8, 0xDE, 0xD0, 0, 0, // mov eax, 0xD0DE
        0x0F, 0x05, // syscall
        0xEB, 0xFE, // jmp .
    ];
    c = put(c, 64, &io);
    // At USER_UMIP: `sgdt [rsp - 16]` and `str eax` (UMIP makes them fault; emulated).
    let umip: [u8; 29] = [
        0x41, 0xBC, 5, 0, 0, 0, // mov r12d, 5
        0x0F, 0x01, 0x44, 0x24, 0xF0, // sgdt [rsp - 16]
        0x41, 0xBC, 3, 0, 0, 0, // mov r12d, 3
        0x0F, 0x00, 0xC8, // str eax
        0xB8, 0xDE, 0xD0, 0, 0, // mov eax, 0xD0DE
        0x0F, 0x05, // syscall
        0xEB, 0xFE, // jmp .
    ];
    put(c, 96, &umip)
};

/// `code` copied into `c` at `at` (for the constant above).
const fn put(mut c: [u8; 128], at: usize, code: &[u8]) -> [u8; 128] {
    let mut i = 0;
    while i < code.len() {
        c[at + i] = code[i];
        i += 1;
    }
    c
}

/// The user program of the UMIP checks.
const USER_UMIP: u64 = USER_VA + 96;

/// The user program of the virtual IOPL checks, and its `cli` and `out`.
const USER_IO: u64 = USER_VA + 64;
const USER_CLI: u64 = USER_IO + 6;
const USER_OUT: u64 = USER_IO + 13;

/// A user root of its own: L4 slot 1 → L3 → L2 → L1 mapping the user code (read-only) at
/// `USER_VA` and a stack page after it; nothing of the kernel. Built in the domain's last
/// frames as plain memory, then pinned. Its L4's machine frame.
fn user_root(si: &StartInfo) -> Option<u64> {
    // SAFETY: the P2M list the builder mapped (one MFN per PFN).
    let p2m = |pfn: u64| unsafe { (si.mfn_list as *const u64).add(pfn as usize).read_volatile() };
    let [l4, l3, l2, l1, code, stack] = core::array::from_fn(|i| p2m(si.nr_pages - 1 - i as u64));
    const TABLE: u64 = 0x27; // P | RW | U | A
    let mut words = [0u64; 16];
    for (i, w) in words.iter_mut().enumerate() {
        *w = u64::from_le_bytes(USER_CODE[8 * i..8 * i + 8].try_into().ok()?);
    }
    let ok = fill(code, &words)
        && fill(stack, &[0])
        && fill(l1, &[code << 12 | 0x25, stack << 12 | 0x67])
        && fill(l2, &[l1 << 12 | TABLE])
        && fill(l3, &[l2 << 12 | TABLE])
        && fill(l4, &[0, l3 << 12 | TABLE]);
    (ok && mmuext(guest_abi::mm::ext::PIN_L4_TABLE, l4) == 0).then_some(l4)
}

fn trap_table(entries: &[(u8, u8, u64)]) -> i64 {
    let mut t = [[0u64; 2]; 16];
    for (slot, &(vec, flags, a)) in t.iter_mut().zip(entries) {
        slot[0] = vec as u64 | (flags as u64) << 8 | KERNEL_CS_RPL0 << 16;
        slot[1] = a;
    }
    hypercall(nr::SET_TRAP_TABLE, [t.as_ptr() as u64, 0, 0, 0, 0])
}

fn rdtsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: reads the TSC (CR4.TSD is clear: allowed in every ring).
    unsafe { asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack)) };
    (hi as u64) << 32 | lo as u64
}

fn cs_now() -> u64 {
    let cs: u64;
    // SAFETY: reads CS.
    unsafe { asm!("mov {:r}, cs", out(reg) cs) };
    cs
}

/// Runs `ud2` with RCX/R11 set (the frame must carry them) and R12 = 2; returns the RCX and
/// R11 the handler's return left.
fn kernel_ud2() -> (u64, u64) {
    let (c, e): (u64, u64);
    // SAFETY: the #UD handler resumes 2 bytes on (R12) with every register restored.
    unsafe {
        asm!("mov r12, 2", "ud2", inlateout("rcx") 0x1111u64 => c, inlateout("r11") 0x2222u64 => e, out("r12") _);
    }
    (c, e)
}

#[no_mangle]
extern "C" fn pv64_main(si: &'static StartInfo) -> ! {
    let cmd = si.cmdline_bytes();
    say!("--- pv64 (CS {:#x}) ---", cs_now());
    check("the kernel runs on Xen's FLAT_RING3_CS64", cs_now() == USER_CS);
    let version = (guest_abi::version::VERSION_MAJOR << 16 | guest_abi::version::VERSION_MINOR) as i64;
    expect("xen_version through a syscall stub", hypercall(nr::XEN_VERSION, [0; 5]), version);
    if cmd == b"bench" {
        // `cargo xtask bench`: the null hypercall through Xen's stub (`syscall`, a #UD
        // here), per call, the median of 10 batches of 1000 (as `hotpaths` measures
        // `int 0x82`'s).
        let mut v = [0u64; 10];
        for x in v.iter_mut() {
            let t0 = rdtsc();
            for _ in 0..1000 {
                hypercall(nr::XEN_VERSION, [0; 5]);
            }
            *x = (rdtsc() - t0) / 1000;
        }
        v.sort_unstable();
        say!("BENCH hp_pv64_xen_version_tsc={}", v[5]);
        finish()
    }
    let mut caps = [0u8; 1024];
    expect("xen_version capabilities", hypercall(nr::XEN_VERSION, [guest_abi::version::XENVER_CAPABILITIES, caps.as_mut_ptr() as u64, 0, 0, 0]), 0);
    check("Xen's 64-bit PV ABI is offered", caps.starts_with(b"xen-3.0-x86_64\0"));
    // SAFETY: the hypercall page is part of the image, readable.
    let page = unsafe { core::slice::from_raw_parts(&hypercall_page as *const u8, 4096) };
    check("the hypercall page holds Xen's 64-bit PV stubs", (0..128).all(|n| page[32 * n..32 * n + 32] == nr::stub_pv64(n as u32)));

    // Trap table: Xen's kernel selector given with RPL 0 is taken (as 0xE033); the ring-1
    // model's kernel selector is not this mode's.
    let ring1 = [[0x20 | 1 << 8 | 0xE019 << 16, addr(trap_20)], [0, 0]];
    expect("set_trap_table with the ring-1 kernel selector", hypercall(nr::SET_TRAP_TABLE, [ring1.as_ptr() as u64, 0, 0, 0, 0]), -22);
    const MASK: u8 = guest_abi::traps::TI_MASK_EVENTS;
    let table = [
        (1, MASK, addr(trap_db)),
        (3, 3 | MASK, addr(trap_bp)),
        (6, MASK, addr(trap_ud)),
        (13, MASK, addr(trap_gp)),
        (14, MASK, addr(trap_pf)),
        (0x20, 1 | MASK, addr(trap_20)),
        (0x21, MASK, addr(trap_21)),
        (0x80, 3 | MASK, addr(trap_80)),
        (0x81, 1 | MASK, addr(trap_81)),
    ];
    expect("set_trap_table (CS 0xE030)", trap_table(&table), 0);
    // SAFETY: only the address of the stack's top is taken.
    let ksp = unsafe { &kernel_stack_top as *const u8 as u64 };
    expect("stack_switch (SS 0xE028)", hypercall(nr::STACK_SWITCH, [0xE028, ksp, 0, 0, 0]), 0);
    expect("set_callbacks", hypercall(nr::SET_CALLBACKS, [addr(cb_event), addr(cb_failsafe), addr(cb_syscall), 0, 0]), 0);

    if cmd == b"noroot" {
        say!("pv64: to user mode without a user root");
        // SAFETY: the hypervisor refuses this return and crashes the domain.
        unsafe { enter_user(USER_VA, USER_VA + 0x2000, 0x2) };
        say!("pv64: came back from user mode");
        shutdown(0)
    }
    if cmd == b"badframe" {
        // The stub's three pushes land at the end of a mapped page; the rest of the frame
        // would be in the next one, unmapped here.
        #[repr(align(4096))]
        #[allow(dead_code)]
        struct Two([u8; 8192]);
        static mut TWO: Two = Two([0; 8192]);
        let edge = core::ptr::addr_of!(TWO) as u64 + 4096;
        expect("unmap a page", hypercall(nr::UPDATE_VA_MAPPING, [edge, 0, guest_abi::mm::UVMF_INVLPG, 0, 0]), 0);
        say!("pv64: HYPERVISOR_iret with a frame reaching into an unmapped page");
        // SAFETY: the hypervisor cannot read the frame and crashes the domain.
        unsafe { asm!("mov rsp, rdi", "xor eax, eax", "jmp rsi", in("rdi") edge, in("rsi") &hypercall_page as *const u8 as u64 + 23 * 32, options(noreturn)) }
    }

    // Kernel-mode traps: Xen's frame with RCX/R11, CS with RPL 0.
    let (rcx, r11) = kernel_ud2();
    let t = logged(0);
    check("kernel ud2 reaches #UD", t.vec == 6);
    check("its frame's CS is the kernel's with RPL 0", t.cs & 0xFFFF == KERNEL_CS_RPL0);
    check("its frame carries RCX and R11", t.rcx == 0x1111 && t.r11 == 0x2222);
    check("HYPERVISOR_iret restored RCX and R11", rcx == 0x1111 && r11 == 0x2222);
    // SAFETY: int3 and the int N below trap to handlers that resume after them (R12 0) or
    // skip them (R12 2).
    unsafe { asm!("xor r12d, r12d", "int3", out("r12") _) };
    check("kernel int3 reaches #BP", logged(1).vec == 3);
    // SAFETY: as above.
    unsafe { asm!("xor r12d, r12d", "int 0x20", out("r12") _) };
    check("kernel int 0x20 (DPL 1) reaches its handler after the instruction", logged(2).vec == 0x20);
    // SAFETY: as above.
    unsafe { asm!("mov r12, 2", "int 0x21", out("r12") _) };
    let t = logged(3);
    // The architectural error code, whatever the CPU reported (QEMU 7.2: vector × 16 + 2).
    check("kernel int 0x21 (DPL 0) is #GP with its IDT error code", t.vec == 13 && t.below[0] == 0x21 << 3 | 2);
    // A kernel #PF: the error code's User bit says kernel mode (the CPU ran ring 3).
    // SAFETY: the #PF handler skips the 10-byte load (`mov rax, [0x7000_0000_0000]`).
    unsafe { asm!("mov r12, 10", ".byte 0x48, 0xA1, 0, 0, 0, 0, 0, 0x70, 0, 0", out("r12") _, out("rax") _) };
    let t = logged(4);
    check("a kernel #PF's error code has no User bit", t.vec == 14 && t.below[0] & 4 == 0);

    // The shared_info page over a page of ours (for vcpu_info: CR2, the upcall mask).
    #[repr(align(4096))]
    #[allow(dead_code)]
    struct Page([u8; 4096]);
    static mut SHARED_PAGE: Page = Page([0; 4096]);
    let va = core::ptr::addr_of!(SHARED_PAGE) as u64;
    expect("map shared_info", hypercall(nr::UPDATE_VA_MAPPING, [va, si.shared_info | 0x67, guest_abi::mm::UVMF_INVLPG, 0, 0]), 0);
    SHARED.store(va, SeqCst);
    // An entry written without the User bit gets it (the kernel runs in ring 3): a page of
    // ours mapped again so still reads (it would #PF, with no handler skipping it).
    static mut SCRATCH: Page = Page([0; 4096]);
    let sva = core::ptr::addr_of!(SCRATCH) as u64;
    // SAFETY: our own page, written before and read after its mapping changed.
    unsafe { (sva as *mut u64).write_volatile(0x5EED) };
    // SAFETY: the P2M list the builder mapped; virt_base is 0, so the PFN is va >> 12.
    let smfn = unsafe { (si.mfn_list as *const u64).add((sva >> 12) as usize).read_volatile() };
    expect("map a page without the User bit", hypercall(nr::UPDATE_VA_MAPPING, [sva, smfn << 12 | 0x63, guest_abi::mm::UVMF_INVLPG, 0, 0]), 0);
    // SAFETY: as above.
    check("it reads from the ring-3 kernel (the hypervisor added the User bit)", unsafe { (sva as *const u64).read_volatile() } == 0x5EED);

    // The read-only M2P at Xen's address, readable by the ring-3 kernel (XTF's
    // `mfn_to_virt` reads it): the entry of our own frame names its PFN.
    // SAFETY: the M2P is mapped read-only in every guest root; the entry is in range.
    let m2p = unsafe { ((guest_abi::layout::MACH2PHYS_VIRT_START + 8 * smfn) as *const u64).read_volatile() };
    check("the M2P is readable and maps our frame back to its PFN", m2p == sva >> 12);

    // NEW_USER_BASEPTR: a frame that is no L4 is refused; the user root is taken.
    // SAFETY: the P2M list the builder mapped.
    let data_mfn = unsafe { (si.mfn_list as *const u64).add(0x100).read_volatile() };
    expect("NEW_USER_BASEPTR of a data frame", mmuext(guest_abi::mm::ext::NEW_USER_BASEPTR, data_mfn), -22);
    let Some(user_l4) = user_root(si) else {
        check("build and pin the user root", false);
        finish()
    };
    expect("NEW_USER_BASEPTR of the user root", mmuext(guest_abi::mm::ext::NEW_USER_BASEPTR, user_l4), 0);

    // An event made pending while masked is delivered the moment user mode unmasks it:
    // from user mode, on the kernel root and stack.
    let mut bind = [guest_abi::evtchn::VIRQ_TIMER, 0, 0];
    expect("bind VIRQ_TIMER", hypercall(nr::EVENT_CHANNEL_OP, [guest_abi::evtchn::EVTCHNOP_BIND_VIRQ, bind.as_mut_ptr() as u64, 0, 0, 0]), 0);
    let mut port = bind[2];
    expect("unmask it", hypercall(nr::EVENT_CHANNEL_OP, [guest_abi::evtchn::EVTCHNOP_UNMASK, &mut port as *mut u32 as u64, 0, 0, 0]), 0);
    expect("set_timer_op (due now)", hypercall(nr::SET_TIMER_OP, [1, 0, 0, 0, 0]), 0);
    // SAFETY: vcpu_info 0's evtchn_upcall_pending, in the mapped shared_info.
    let pending = unsafe { (va as *const u8).read_volatile() };
    check("the timer event is pending (masked)", pending == 1);

    let before = LOGGED.load(SeqCst);
    // SAFETY: the user code ends with the end marker's syscall, which returns here.
    unsafe { enter_user(USER_VA, USER_VA + 0x2000, 0x202) };
    say!("pv64: back from user mode ({} traps)", LOGGED.load(SeqCst) - before);
    check("back in kernel mode on the kernel's CS", cs_now() == USER_CS);
    let u = |k: usize| logged(before + k);
    let ev = u(0);
    check("the event came from user mode", ev.vec == 0x101 && ev.cs & 0xFFFF == USER_CS && ev.rip == USER_VA);
    check("its saved upcall mask was 0", (ev.cs >> 32) & 0xFF == 0);
    let sc = u(1);
    check("user syscall goes to the syscall callback, not to a hypercall", sc.vec == 0x100 && sc.rax == 29 && sc.rdi == 2);
    // (The frame's RFLAGS.IF is the virtual one: events were masked by then.)
    check("its frame: CS RPL 3, RIP after the syscall, RCX = RIP, R11 = RFLAGS", sc.cs & 0xFFFF == USER_CS && sc.rip == USER_VA + 12 && sc.rcx == sc.rip && (sc.r11 ^ sc.rflags) & !(1 << 9 | 1 << 16) == 0);
    check("its frame: the user stack", sc.rsp == USER_VA + 0x2000 && sc.ss == USER_SS);
    let pf = u(2);
    check("the kernel's image is not mapped in the user root: #PF", pf.vec == 14 && pf.rip == USER_VA + 18);
    check("its error code has the User bit, CR2 the address", pf.below[0] == 4 && pf.cr2 == 0x10_0000);
    check("user int 0x80 (DPL 3) reaches its handler", u(3).vec == 0x80 && u(3).rip == USER_VA + 33);
    let gp = u(4);
    check("user int 0x81 (DPL 1) is #GP", gp.vec == 13 && gp.below[0] == 0x81 << 3 | 2 && gp.rip == USER_VA + 39);
    check("user ud2 is #UD from user mode", u(5).vec == 6 && u(5).cs & 3 == 3);
    check("the end marker's syscall", u(6).vec == 0x100 && u(6).rax == 0xD0DE);

    virtual_iopl();
    fsgsbase();
    noncanonical_return(si);
    umip();
    debug_registers();
    iret_in_multicall();
    hypercall_from_own_cs(si);

    // A return the CPU refuses (SS names an LDT descriptor; there is no LDT): the failsafe
    // callback gets Xen's failsafe frame (RCX, R11, DS, ES, FS, GS, RIP, CS, ...).
    let resume = after_failsafe as *const () as u64;
    let rsp: u64;
    // SAFETY: reads RSP.
    unsafe { asm!("mov {}, rsp", out(reg) rsp) };
    // SAFETY: the failsafe handler resumes `after_failsafe` with a good SS on this stack.
    unsafe { iret_to(&[0, resume, KERNEL_CS_RPL0, 0x2, (rsp - 256) & !15, 0x000F]) }

    extern "C" fn after_failsafe() -> ! {
        let t = logged(LOGGED.load(SeqCst) - 1);
        check("a refused return reaches the failsafe callback", t.vec == 0x102);
        check("its frame: the refused SS and RIP", t.ss & 0xFFFF == 0x000F && t.rip == after_failsafe as *const () as u64);
        finish()
    }
}

/// Runs `cli` (then `sti`, if it was let through) and `out 0x80, al` in kernel mode, then
/// the user program at `USER_IO` with `rflags`: which of the four faulted with #GP, as
/// (kernel cli, kernel out, user cli, user out), and the user #GP frames' RFLAGS.IOPL.
fn io_faults(rflags: u64) -> ([bool; 4], u64) {
    let gp_since = |n: usize, rip: Option<u64>| (n..LOGGED.load(SeqCst)).any(|i| logged(i).vec == 13 && rip.is_none_or(|r| logged(i).rip == r));
    let n = LOGGED.load(SeqCst);
    // SAFETY: a #GP handler skips the instruction (R12 bytes); a `cli` let through is
    // undone by the `sti` after it (as allowed as it was).
    unsafe { asm!("mov r12, 1", "cli", out("r12") _) };
    let kcli = gp_since(n, None);
    if !kcli {
        // SAFETY: as above.
        unsafe { asm!("mov r12, 1", "sti", out("r12") _) };
    }
    let n = LOGGED.load(SeqCst);
    // SAFETY: as above; AL is written to the POST port.
    unsafe { asm!("mov r12, 2", "out 0x80, al", out("r12") _, in("al") 0u8) };
    let kout = gp_since(n, None);
    let n = LOGGED.load(SeqCst);
    // SAFETY: the user program ends with the end marker's syscall, which returns here.
    unsafe { enter_user(USER_IO, USER_VA + 0x2000, rflags) };
    let iopl = (n..LOGGED.load(SeqCst)).find(|&i| logged(i).vec == 13).map_or(0, |i| logged(i).rflags >> 12 & 3);
    ([kcli, kout, gp_since(n, Some(USER_CLI)), gp_since(n, Some(USER_OUT))], iopl)
}

/// Xen's virtual IOPL (XTF `pv-iopl`): `PHYSDEVOP_set_iopl` with the kernel as CPL 1, then
/// `VMASST_TYPE_architectural_iopl`, the kernel as CPL 0 and the IOPL taken from
/// `HYPERVISOR_iret`'s RFLAGS (and shown in bounce frames).
fn virtual_iopl() {
    let set_iopl = |iopl: u32| hypercall(nr::PHYSDEV_OP, [guest_abi::physdev::PHYSDEVOP_SET_IOPL, &iopl as *const u32 as u64, 0, 0, 0]);
    for (iopl, want) in [(0, [true; 4]), (1, [false, false, true, true]), (2, [false, false, true, true]), (3, [false; 4])] {
        expect("PHYSDEVOP_set_iopl", set_iopl(iopl), 0);
        let (got, _) = io_faults(0x202);
        if got != want {
            say!("  vIOPL {}: #GP (kernel cli, out, user cli, out) {:?}, want {:?}", iopl, got, want);
        }
        check("set_iopl: cli and out fault as the virtual IOPL says", got == want);
    }
    expect("PHYSDEVOP_set_iopl 4", set_iopl(4), -22);
    expect("set_iopl 0", set_iopl(0), 0);
    use guest_abi::hypercall::vm_assist;
    let assist = |cmd: u64| hypercall(nr::VM_ASSIST, [cmd, vm_assist::TYPE_ARCHITECTURAL_IOPL, 0, 0, 0]);
    expect("enable VMASST_TYPE_architectural_iopl", assist(vm_assist::ENABLE), 0);
    for (iopl, want) in [(0, [false, false, true, true]), (1, [false, false, true, true]), (3, [false; 4])] {
        let (got, shown) = io_faults(0x202 | iopl << 12);
        if got != want {
            say!("  architectural vIOPL {}: #GP {:?}, want {:?}", iopl, got, want);
        }
        check("architectural IOPL from the iret: cli and out fault as it says", got == want);
        if got[2] {
            check("the user #GP frame shows the virtual IOPL", shown == iopl);
        }
    }
    expect("disable it", assist(vm_assist::DISABLE), 0);
    let (got, _) = io_faults(0x202 | 3 << 12);
    check("without the assist the iret's IOPL is ignored (vIOPL 0: all fault)", got == [true; 4]);
}

/// `sgdt`, `sidt`, `sldt`, `str`, `smsw` from kernel and user mode (XTF `umip`, `xsa-212`):
/// they work as on Xen (which leaves UMIP off), emulated where UMIP makes them fault.
fn umip() {
    let n = LOGGED.load(SeqCst);
    let (mut gdt, mut idt) = ([0u8; 10], [0u8; 10]);
    let (ldt, tr, msw): (u64, u64, u64);
    // SAFETY: each store writes 10 bytes into its buffer; a #GP handler would skip the
    // 3-byte instruction (R12), none is expected.
    unsafe {
        asm!("mov r12, 3", "sgdt [rax]", in("rax") gdt.as_mut_ptr(), out("r12") _);
        asm!("mov r12, 3", "sidt [rax]", in("rax") idt.as_mut_ptr(), out("r12") _);
        asm!("mov r12, 3", "mov rax, -1", "sldt eax", out("rax") ldt, out("r12") _);
        asm!("mov r12, 3", "str eax", out("rax") tr, out("r12") _);
        asm!("mov r12, 4", "smsw rax", out("rax") msw, out("r12") _);
    }
    check("kernel sgdt/sidt/sldt/str/smsw do not fault", (n..LOGGED.load(SeqCst)).all(|i| logged(i).vec != 13));
    let limit = |b: &[u8; 10]| u16::from_le_bytes([b[0], b[1]]);
    check("sgdt and sidt give tables with limits", limit(&gdt) >= 7 && limit(&idt) >= 255 * 16 + 15);
    check("sldt zero-extends the selector", ldt <= 0xFFFF);
    check("str gives the TSS selector", tr != 0 && tr <= 0xFFFF);
    check("smsw gives CR0 with PE and the guest's PG", msw & 1 != 0 && msw & 1 << 31 != 0);
    let n = LOGGED.load(SeqCst);
    // SAFETY: the user program ends with the end marker's syscall, which returns here.
    unsafe { enter_user(USER_UMIP, USER_VA + 0x2000, 0x202) };
    // (An event may come in between: its callback is 0x101.)
    let ok = (n..LOGGED.load(SeqCst)).all(|i| matches!(logged(i).vec, 0x100 | 0x101));
    if !ok {
        for i in n..LOGGED.load(SeqCst) {
            say!("  user trap {:x?}", logged(i));
        }
    }
    check("user sgdt and str do not fault either", ok);
}

/// Debug registers (XTF `xsa-213` keeps its stack pointer in DR0): values kept and read
/// back through `mov drN` and the hypercalls; breakpoints cannot be armed.
fn debug_registers() {
    let n = LOGGED.load(SeqCst);
    let (d0, d6, d7): (u64, u64, u64);
    // SAFETY: emulated moves; a refused one is a #GP whose handler skips 3 bytes (R12).
    unsafe {
        asm!("mov r12, 3", "mov dr0, rsp", "mov rax, dr0", out("rax") d0, out("r12") _);
        asm!("mov r12, 3", "mov rax, dr6", out("rax") d6, out("r12") _);
        asm!("mov r12, 3", "mov rax, dr7", out("rax") d7, out("r12") _);
    }
    let rsp: u64;
    // SAFETY: reads RSP.
    unsafe { asm!("mov {}, rsp", out(reg) rsp) };
    check("mov dr0 keeps a value, mov from dr0 reads it back", d0 == rsp && (n..LOGGED.load(SeqCst)).all(|i| logged(i).vec != 13));
    check("DR6 and DR7 read their reset values", d6 == 0xFFFF_0FF0 && d7 == 0x400);
    let n = LOGGED.load(SeqCst);
    // SAFETY: as above; both are refused.
    unsafe {
        asm!("mov r12, 3", "mov dr7, rax", in("rax") 0x401u64, out("r12") _);
        asm!("mov r12, 3", "mov dr1, rax", in("rax") 0xFFFF_8000_0000_1000u64, out("r12") _);
    }
    check("arming a breakpoint, or watching a hypervisor address: #GP", (n..LOGGED.load(SeqCst)).filter(|&i| logged(i).vec == 13).count() == 2);
    expect("set_debugreg(0, a guest address)", hypercall(nr::SET_DEBUGREG, [0, 0x1000, 0, 0, 0]), 0);
    expect("get_debugreg(0)", hypercall(nr::GET_DEBUGREG, [0, 0, 0, 0, 0]), 0x1000);
    expect("set_debugreg(7, L0)", hypercall(nr::SET_DEBUGREG, [7, 1, 0, 0, 0]), -1);
    expect("set_debugreg(2, a hypervisor address)", hypercall(nr::SET_DEBUGREG, [2, 0xFFFF_8000_0000_0000, 0, 0, 0]), -1);
    expect("set_debugreg(8, 0)", hypercall(nr::SET_DEBUGREG, [8, 0, 0, 0, 0]), -19);
    expect("get_debugreg(6)", hypercall(nr::GET_DEBUGREG, [6, 0, 0, 0, 0]), 0xFFFF_0FF0);
    // A single step (TF): #DB, and DR6 says BS, as Xen merges the CPU's status into it.
    let n = LOGGED.load(SeqCst);
    // SAFETY: TF traps after the `nop`; the #DB handler clears TF and resumes.
    unsafe { asm!("xor r12d, r12d", "pushfq", "or qword ptr [rsp], 0x100", "popfq", "nop", out("r12") _) };
    check("a single step is #DB", (n..LOGGED.load(SeqCst)).any(|i| logged(i).vec == 1));
    let dr6 = hypercall(nr::GET_DEBUGREG, [6, 0, 0, 0, 0]);
    check("DR6 has BS after it", dr6 & 1 << 14 != 0);
    expect("set_debugreg(6) clears it", hypercall(nr::SET_DEBUGREG, [6, 0, 0, 0, 0]), 0);
}

/// XSA-296 (XTF's PoC tells by it whether its hypercall ran): a `syscall` hypercall leaves
/// CS and SS flat, as SYSCALL and Xen's SYSRET do, whatever the kernel ran on: here a DPL-3
/// 64-bit code descriptor of its own GDT.
fn hypercall_from_own_cs(si: &StartInfo) {
    #[repr(align(4096))]
    #[allow(dead_code)]
    struct Gdt([u64; 512]);
    static mut GDT: Gdt = Gdt([0; 512]);
    const OWN_CS: u64 = 1 << 3 | 3;
    // SAFETY: our own page, written before it is mapped read-only: entry 1 is a present
    // DPL-3 64-bit code descriptor.
    unsafe { (core::ptr::addr_of_mut!(GDT) as *mut u64).add(1).write_volatile(0x00AF_FA00_0000_FFFF) };
    let va = core::ptr::addr_of!(GDT) as u64;
    // SAFETY: the P2M list the builder mapped; virt_base is 0.
    let mfn = unsafe { (si.mfn_list as *const u64).add((va >> 12) as usize).read_volatile() };
    expect("map the GDT page read-only", hypercall(nr::UPDATE_VA_MAPPING, [va, mfn << 12 | 0x25, guest_abi::mm::UVMF_INVLPG, 0, 0]), 0);
    let frames = [mfn];
    expect("set_gdt with it", hypercall(nr::SET_GDT, [frames.as_ptr() as u64, 2, 0, 0, 0]), 0);
    // The far pointer (offset, selector) of a `jmp far` (XTF uses `lretq`, whose stack
    // reads QEMU 7.2's TCG makes supervisor accesses, which SMAP refuses on user pages).
    static mut FAR: [u64; 2] = [0, OWN_CS];
    let (before, after): (u64, u64);
    // SAFETY: a far jump to our own code selector, then xen_version through the hypercall
    // page (its stub saves RCX and R11); the argument registers are clobbered.
    unsafe {
        asm!(
            "lea rcx, [rip + 2f]",
            "mov [rax], rcx",
            ".byte 0x48, 0xFF, 0x28", // rex.w jmp far [rax]
            "2:",
            "mov {b:r}, cs",
            "xor edi, edi",
            "call {stub}",
            "mov {a:r}, cs",
            b = out(reg) before,
            a = out(reg) after,
            stub = in(reg) &hypercall_page as *const u8 as u64 + nr::XEN_VERSION * 32,
            inout("rax") core::ptr::addr_of_mut!(FAR) as u64 => _, out("rcx") _, out("rdi") _, out("rsi") _, out("rdx") _, out("r10") _, out("r8") _,
        )
    };
    check("running on the GDT's own code selector", before & 0xFFFF == OWN_CS);
    check("after a hypercall CS is the flat one again", after & 0xFFFF == USER_CS);
}

/// XSA-213 (XTF's PoC): a multicall whose first entry is an iret returns to user mode
/// there and then with the frame's RAX, and runs nothing after it.
fn iret_in_multicall() {
    let mut list = [0u64; 16];
    list[0] = nr::IRET;
    list[8] = nr::XEN_VERSION;
    let n = LOGGED.load(SeqCst);
    // SAFETY: the user program (vIOPL 0: its `cli` faults, with RAX as the iret left it)
    // ends with the end marker's syscall, which returns here.
    unsafe { enter_user_mc(USER_IO, USER_VA + 0x2000, 0x202, &mut list) };
    let first = (n..LOGGED.load(SeqCst)).map(logged).find(|t| t.vec == 13);
    check("the iret entry returned to user mode with the frame's RAX", first.is_some_and(|t| t.rip == USER_CLI && t.rax == 0xdead));
    check("and the entry after it did not run", list[9] == 0);
}

/// The first non-canonical address, and where the #GP there resumes.
const NONCANONICAL: u64 = 0x0000_8000_0000_0000;
static RECOVER: AtomicU64 = AtomicU64::new(0);

/// XSA-7: a hypercall `syscall` in the last two bytes below the canonical boundary returns
/// to 0x800000000000, which the CPU refuses: as Xen, the kernel gets #GP(0) at that RIP
/// (not a crash). A page of ours holding the `syscall` there is mapped at 0x7FFFFFFFF000
/// through tables built in three spare frames and hooked into L4 slot 255.
fn noncanonical_return(si: &StartInfo) {
    #[repr(align(4096))]
    #[allow(dead_code)]
    struct Stub([u8; 4096]);
    static mut STUB: Stub = Stub([0xCC; 4096]);
    // SAFETY: our own page, written before it is mapped elsewhere.
    unsafe {
        let p = core::ptr::addr_of_mut!(STUB) as *mut u8;
        p.add(4094).write_volatile(0x0F);
        p.add(4095).write_volatile(0x05);
    }
    // SAFETY: the P2M list the builder mapped; virt_base is 0.
    let p2m = |pfn: u64| unsafe { (si.mfn_list as *const u64).add(pfn as usize).read_volatile() };
    let stub = p2m(core::ptr::addr_of!(STUB) as u64 >> 12);
    let kl4 = p2m(si.pt_base >> 12);
    // The frames before the user root's six.
    let [l3, l2, l1] = core::array::from_fn(|i| p2m(si.nr_pages - 7 - i as u64));
    const TABLE: u64 = 0x27;
    let ok = mmu_update((l1 << 12) + 8 * 511, stub << 12 | 0x25) == 0
        && mmu_update((l2 << 12) + 8 * 511, l1 << 12 | TABLE) == 0
        && mmu_update((l3 << 12) + 8 * 511, l2 << 12 | TABLE) == 0
        && mmu_update((kl4 << 12) + 8 * 255, l3 << 12 | TABLE) == 0;
    check("map a syscall at the end of the lower half", ok);
    if !ok {
        return;
    }
    let n = LOGGED.load(SeqCst);
    // SAFETY: the `syscall` is xen_version(0) (RAX 17, RDI 0); its return to
    // 0x800000000000 takes #GP, whose handler resumes at label 2 with every register but
    // RCX and R11 (the frame's) as they were.
    unsafe {
        asm!(
            "lea {t}, [rip + 2f]",
            "mov [{rec}], {t}",
            "mov eax, 17",
            "xor edi, edi",
            "jmp {stub}",
            "2:",
            t = out(reg) _,
            rec = in(reg) RECOVER.as_ptr(),
            stub = in(reg) NONCANONICAL - 2,
            out("rax") _, out("rdi") _, out("rcx") _, out("r11") _, out("rsi") _, out("rdx") _, out("r10") _, out("r8") _,
        )
    };
    let gp = (n..LOGGED.load(SeqCst)).map(logged).find(|t| t.vec == 13);
    check("the return to 0x800000000000 is #GP(0) at that RIP", gp.is_some_and(|t| t.rip == NONCANONICAL && t.below[0] == 0 && t.cs & 0xFFFF == KERNEL_CS_RPL0));
    check("and the domain carries on", hypercall(nr::XEN_VERSION, [0; 5]) > 0);
}

/// Virtual CR4.FSGSBASE (XTF `pv-fsgsbase`): clear at start, so the instructions are #UD;
/// set through `mov cr4` (emulated), they work; cleared again, #UD again.
fn fsgsbase() {
    let cr4 = || {
        let v: u64;
        // SAFETY: emulated: the guest's CR4 view.
        unsafe { asm!("mov {}, cr4", out(reg) v) };
        v
    };
    let write_cr4 = |v: u64| {
        // SAFETY: emulated: only FSGSBASE is the guest's.
        unsafe { asm!("mov cr4, {}", in(reg) v) };
    };
    let has = core::arch::x86_64::__cpuid_count(7, 0).ebx & 1 != 0;
    if !has {
        say!("pv64: no FSGSBASE on this CPU");
        return;
    }
    const FSGSBASE: u64 = 1 << 16;
    let ud = |f: &dyn Fn()| {
        let n = LOGGED.load(SeqCst);
        f();
        (n..LOGGED.load(SeqCst)).any(|i| logged(i).vec == 6)
    };
    let wr = |v: u64| {
        // SAFETY: a #UD handler skips the 5-byte instruction (R12).
        unsafe { asm!("mov r12, 5", "wrfsbase {}", in(reg) v, out("r12") _) }
    };
    let rd = || {
        let v: u64;
        // SAFETY: as above.
        unsafe { asm!("mov r12, 5", "xor {0:e}, {0:e}", "rdfsbase {0}", out(reg) v, out("r12") _) };
        v
    };
    let c0 = cr4();
    check("CR4.FSGSBASE starts clear", c0 & FSGSBASE == 0);
    check("wrfsbase is #UD while it is", ud(&|| wr(0)));
    write_cr4(c0 | FSGSBASE);
    check("mov cr4 sets it", cr4() == c0 | FSGSBASE);
    let base = 0x1234_5000u64;
    check("wrfsbase works once it is set", !ud(&|| wr(base)));
    check("rdfsbase reads it back", rd() == base);
    // A switch away and back keeps the choice (yield: the scheduler reloads CR4).
    hypercall(nr::SCHED_OP, [guest_abi::sched::SCHEDOP_YIELD, 0, 0, 0, 0]);
    check("still set after a yield", cr4() & FSGSBASE != 0 && !ud(&|| wr(0)));
    write_cr4(c0);
    check("mov cr4 clears it", cr4() == c0);
    check("wrfsbase is #UD again", ud(&|| wr(0)));
}

fn finish() -> ! {
    let (n, f) = (CHECKS.load(SeqCst), FAILED.load(SeqCst));
    say!("pv64: {} checks, {} failed", n, f);
    say!("Test result: {}", if f == 0 { "SUCCESS" } else { "FAILURE" });
    shutdown(guest_abi::sched::ShutdownReason::Poweroff as u32)
}
