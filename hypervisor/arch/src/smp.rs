//! Starting application processors: a real-mode trampoline at [`TRAMPOLINE`], INIT-SIPI-SIPI,
//! and the first Rust code an AP runs.
//!
//! The trampoline enters long mode on a boot root (the shared hypervisor mappings plus an
//! identity map of the first 2 MiB for the trampoline itself), switches to a small boot
//! stack in the direct map and calls the AP main function the binary registered; that
//! function loads the CPU's own roots and tables.
//!
//! The trampoline page is rewritten for each AP, so an AP that starts late (after the BSP's
//! timeout) could otherwise run with the next AP's number and stack. Each start therefore
//! holds a claim word naming the APIC id it is for (`id << 2 | state`), and the AP claims it
//! with one compare-and-swap from `its id, open` to `its id, claimed` (its id: CPUID's initial
//! APIC id); the BSP, on its timeout, abandons the start with the same compare-and-swap to
//! `id, abandoned`. A late AP finds either its own start abandoned or another AP's id, fails
//! the swap and halts for good without touching anything.

use crate::layout::phys_to_virt;
use core::arch::global_asm;
use core::sync::atomic::{AtomicU32, Ordering};

/// Physical address the trampoline is copied to (SIPI vector = address >> 12).
pub const TRAMPOLINE: u64 = 0x8000;

global_asm!(
    r#"
    .section .rodata.ap_trampoline, "a"
    .balign 16
    .global ap_trampoline_start
ap_trampoline_start:
    .code16
    cli
    cld
    xor %ax, %ax
    mov %ax, %ds
    lgdtl ({T} + (tr_gdtr - ap_trampoline_start))
    mov %cr0, %eax
    or $1, %eax
    mov %eax, %cr0
    ljmpl $0x08, $({T} + (tr_pm - ap_trampoline_start))
    .code32
tr_pm:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov %cr4, %eax
    or $(1 << 5), %eax
    mov %eax, %cr4
    mov ({T} + (tr_cr3 - ap_trampoline_start)), %eax
    mov %eax, %cr3
    mov $0xC0000080, %ecx
    rdmsr
    or $((1 << 8) | (1 << 11)), %eax
    wrmsr
    mov %cr0, %eax
    or $((1 << 31) | (1 << 16) | 1), %eax
    mov %eax, %cr0
    ljmp $0x18, $({T} + (tr_lm - ap_trampoline_start))
    .code64
tr_lm:
    /* Claim the start if it is open and for me (initial APIC id): one compare-and-swap of
       `id << 2 | open` to `id << 2 | claimed`. */
    mov $1, %eax
    cpuid
    shr $24, %ebx
    shl $2, %ebx
    mov %ebx, %eax
    lea 1(%rbx), %ecx
    lock cmpxchgl %ecx, ({T} + (tr_claim - ap_trampoline_start))
    jne 1f
    mov ({T} + (tr_stack - ap_trampoline_start)), %rsp
    mov ({T} + (tr_cpu - ap_trampoline_start)), %rdi
    mov ({T} + (tr_entry - ap_trampoline_start)), %rax
    call *%rax
    ud2
1:  cli
    hlt
    jmp 1b
    .balign 8
tr_gdt:
    .quad 0
    .quad 0x00CF9A000000FFFF
    .quad 0x00CF92000000FFFF
    .quad 0x00AF9A000000FFFF
tr_gdtr:
    .short 31
    .long {T} + (tr_gdt - ap_trampoline_start)
    .balign 8
tr_claim: .quad 0
tr_cr3: .quad 0
tr_stack: .quad 0
tr_entry: .quad 0
tr_cpu: .quad 0
    .global ap_trampoline_end
ap_trampoline_end:
"#,
    T = const TRAMPOLINE,
    options(att_syntax)
);

extern "C" {
    static ap_trampoline_start: u8;
    static ap_trampoline_end: u8;
}

/// The binary's AP main function.
static AP_MAIN: spin::Once<fn(u32) -> !> = spin::Once::new();
/// Set by an AP once it runs Rust code.
static STARTED: AtomicU32 = AtomicU32::new(0);

extern "C" fn ap_rust_entry(cpu: u64) -> ! {
    STARTED.store(cpu as u32, Ordering::SeqCst);
    match AP_MAIN.get() {
        Some(f) => f(cpu as u32),
        None => crate::cpu::halt_forever(),
    }
}

/// Registers the function APs run (once).
pub fn set_ap_main(f: fn(u32) -> !) {
    AP_MAIN.call_once(|| f);
}

/// Starts the AP with `apic_id` as CPU `cpu` on `boot_cr3` (below 4 GiB) with the stack
/// `stack_top` (direct-mapped). Returns once it runs Rust code, or false after 100 ms (the
/// start is then abandoned: see the module documentation).
/// `abandon_at_once` (tests only) abandons the start before the AP runs, as a timeout would,
/// so the AP arrives late.
pub fn start_ap(apic_id: u32, cpu: u32, boot_cr3: u64, stack_top: u64, abandon_at_once: bool) -> bool {
    if TRAMPOLINE_STUCK.load(Ordering::SeqCst) {
        return false;
    }
    // SAFETY: linker symbols; only addresses are taken.
    let (s, e) = unsafe { (&ap_trampoline_start as *const u8, &ap_trampoline_end as *const u8) };
    let len = e as usize - s as usize;
    let dst = phys_to_virt(TRAMPOLINE) as *mut u8;
    let slot = |name_off: usize, v: u64| {
        // SAFETY: writes a parameter slot inside the copied trampoline page (low memory the
        // hypervisor reserved for this; it is direct-mapped).
        unsafe { (dst.add(name_off) as *mut u64).write_volatile(v) }
    };
    // SAFETY: the trampoline page at 0x8000 lies in the first MiB, which is never handed
    // out; the copy stays within one page (checked).
    unsafe {
        assert!(len <= 4096);
        core::ptr::copy_nonoverlapping(s, dst, len);
    }
    let tail = len - 32; // tr_cr3, tr_stack, tr_entry, tr_cpu: the last four quads
    let claim = tail - 8;
    let open = (apic_id as u64 & 0xFF) << 2;
    slot(claim, open);
    slot(tail, boot_cr3);
    slot(tail + 8, stack_top);
    slot(tail + 16, ap_rust_entry as *const () as u64);
    slot(tail + 24, cpu as u64);
    STARTED.store(0, Ordering::SeqCst);
    // SAFETY: the claim word lies in the trampoline page written above; the AP accesses it
    // only with `lock cmpxchg` as well (the low 32 bits; the high ones stay 0).
    let word = unsafe { core::sync::atomic::AtomicU64::from_ptr(dst.add(claim) as *mut u64) };
    if abandon_at_once {
        // Tests: the start is abandoned before the AP even runs, so it arrives "late".
        word.store(open | CLAIM_ABANDONED, Ordering::SeqCst);
    }
    crate::lapic::send_init(apic_id);
    crate::time::delay_us(10_000);
    for _ in 0..2 {
        crate::lapic::send_sipi(apic_id, (TRAMPOLINE >> 12) as u8);
        crate::time::delay_us(200);
    }
    if abandon_at_once {
        return false;
    }
    for _ in 0..1000 {
        if STARTED.load(Ordering::SeqCst) == cpu {
            return true;
        }
        crate::time::delay_us(100);
    }
    // Abandon the start unless the AP claimed it at the last moment (then it is on its way).
    if word.compare_exchange(open, open | CLAIM_ABANDONED, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
        return false;
    }
    for _ in 0..10_000 {
        if STARTED.load(Ordering::SeqCst) == cpu {
            return true;
        }
        crate::time::delay_us(100);
    }
    // Claimed but never reached Rust: the page may still be in use, so no other AP starts.
    TRAMPOLINE_STUCK.store(true, Ordering::SeqCst);
    false
}

/// An AP claimed the trampoline and never reported: the page is not reused.
static TRAMPOLINE_STUCK: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// The state bits of the trampoline's claim word (0: open, 1: claimed by the AP).
const CLAIM_ABANDONED: u64 = 2;
