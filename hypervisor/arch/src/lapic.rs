//! The local APIC: one-shot timer (TSC-deadline when the CPU offers it), EOI.
//!
//! The xAPIC registers are mapped uncached at [`crate::layout::LAPIC_VA`] in the shared
//! hypervisor slots.

use crate::cpu::{cpuid, rdmsr, rdtsc, wrmsr};
use crate::layout::LAPIC_VA;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Vector of the hypervisor's timer interrupt.
pub const TIMER_VECTOR: u8 = 0xF0;
/// Spurious-interrupt vector.
pub const SPURIOUS_VECTOR: u8 = 0xFF;
/// Inter-processor "look again" interrupt (reschedule, deliver an upcall).
pub const IPI_VECTOR: u8 = 0xF1;
/// TLB shootdown IPI: handled without the hypervisor lock (see `schedule::shootdown`).
pub const FLUSH_VECTOR: u8 = 0xF2;

const IA32_APIC_BASE: u32 = 0x1B;
const IA32_TSC_DEADLINE: u32 = 0x6E0;
const REG_ID: u64 = 0x20;
const REG_EOI: u64 = 0xB0;
const REG_SVR: u64 = 0xF0;
const REG_LVT_TIMER: u64 = 0x320;
const REG_TIMER_INIT: u64 = 0x380;
const REG_TIMER_CUR: u64 = 0x390;
const REG_TIMER_DIV: u64 = 0x3E0;
const LVT_MASKED: u32 = 1 << 16;
const LVT_TSC_DEADLINE: u32 = 2 << 17;

static DEADLINE_MODE: AtomicBool = AtomicBool::new(false);
/// APIC timer ticks per 1024 TSC ticks (one-shot mode).
static APIC_PER_1024_TSC: AtomicU64 = AtomicU64::new(0);

fn read(reg: u64) -> u32 {
    // SAFETY: LAPIC_VA maps this CPU's xAPIC registers (uncached) once `map` ran; register
    // reads have no side effects for the registers used here.
    unsafe { ((LAPIC_VA + reg) as *const u32).read_volatile() }
}

fn write(reg: u64, v: u32) {
    // SAFETY: as for `read`; the registers written are the timer, EOI and SVR.
    unsafe { ((LAPIC_VA + reg) as *mut u32).write_volatile(v) }
}

/// Machine address of the xAPIC registers.
pub fn phys_base() -> u64 {
    // SAFETY: IA32_APIC_BASE exists on every x86-64 CPU.
    unsafe { rdmsr(IA32_APIC_BASE) & 0x000F_FFFF_FFFF_F000 }
}

/// Enables this CPU's APIC and sets up the timer. The registers must be mapped.
pub fn init() {
    // SAFETY: enables the xAPIC (bit 11) at its current base; nothing else changes.
    unsafe {
        let b = rdmsr(IA32_APIC_BASE);
        wrmsr(IA32_APIC_BASE, b | (1 << 11));
    }
    write(REG_SVR, 0x100 | SPURIOUS_VECTOR as u32);
    let (_, _, ecx, _) = cpuid(1, 0);
    if ecx & (1 << 24) != 0 {
        DEADLINE_MODE.store(true, Ordering::Relaxed);
        write(REG_LVT_TIMER, LVT_TSC_DEADLINE | TIMER_VECTOR as u32);
    } else {
        write(REG_TIMER_DIV, 0b1011); // divide by 1
        write(REG_LVT_TIMER, LVT_MASKED | TIMER_VECTOR as u32);
        // Calibrate the APIC timer against the TSC over ~1 ms.
        let khz = crate::time::tsc_khz().max(1);
        write(REG_TIMER_INIT, u32::MAX);
        let t0 = rdtsc();
        while rdtsc() - t0 < khz {}
        let elapsed = u32::MAX - read(REG_TIMER_CUR);
        write(REG_TIMER_INIT, 0);
        APIC_PER_1024_TSC.store(((elapsed as u64) << 10) / khz.max(1), Ordering::Relaxed);
        write(REG_LVT_TIMER, TIMER_VECTOR as u32);
    }
}

/// Is the TSC-deadline mode in use?
pub fn tsc_deadline_mode() -> bool {
    DEADLINE_MODE.load(Ordering::Relaxed)
}

/// Arms the one-shot timer to fire at TSC value `deadline` (now, if already past).
pub fn arm(deadline: u64) {
    if tsc_deadline_mode() {
        // SAFETY: IA32_TSC_DEADLINE exists in this mode; any value is valid.
        unsafe { wrmsr(IA32_TSC_DEADLINE, deadline.max(1)) };
    } else {
        let now = rdtsc();
        let ticks = deadline.saturating_sub(now).max(1);
        let apic = ((ticks as u128 * APIC_PER_1024_TSC.load(Ordering::Relaxed) as u128) >> 10).clamp(1, u32::MAX as u128);
        write(REG_TIMER_INIT, apic as u32);
    }
}

/// Acknowledges the interrupt being handled.
pub fn eoi() {
    write(REG_EOI, 0);
}

/// This CPU's APIC id.
pub fn id() -> u32 {
    read(REG_ID) >> 24
}

const REG_ICR_LO: u64 = 0x300;
const REG_ICR_HI: u64 = 0x310;

fn send_ipi(dest: u32, lo: u32) {
    write(REG_ICR_HI, dest << 24);
    write(REG_ICR_LO, lo);
    let mut n = 0;
    while read(REG_ICR_LO) & (1 << 12) != 0 && n < 1_000_000 {
        n += 1;
        core::hint::spin_loop();
    }
}

/// INIT (level assert) to the CPU with APIC id `dest`.
pub fn send_init(dest: u32) {
    send_ipi(dest, 0x4500);
}

/// Startup IPI: the CPU starts in real mode at `page << 12`.
pub fn send_sipi(dest: u32, page: u8) {
    send_ipi(dest, 0x4600 | page as u32);
}

/// An NMI to the CPU with APIC id `dest` (stopping the machine).
pub fn send_nmi(dest: u32) {
    send_ipi(dest, 0x4400);
}

/// A fixed-vector interrupt to another CPU.
pub fn send_vector(dest: u32, vector: u8) {
    send_ipi(dest, 0x4000 | vector as u32);
}
