//! Time since boot, from the TSC calibrated against the PIT.

use crate::cpu::{inb, outb, rdtsc};
use core::sync::atomic::{AtomicU64, Ordering};

static BOOT_TSC: AtomicU64 = AtomicU64::new(0);
/// TSC ticks per microsecond × 1024 (0 until calibrated).
static TSC_PER_US_X1024: AtomicU64 = AtomicU64::new(0);

const PIT_HZ: u64 = 1_193_182;
const PIT_CH2: u16 = 0x42;
const PIT_CMD: u16 = 0x43;
const PIT_GATE: u16 = 0x61;

/// Calibrates the TSC over `ms` milliseconds of PIT channel 2 and records the boot TSC.
pub fn calibrate(ms: u64) {
    let ticks = PIT_HZ * ms / 1000;
    // Gate on, speaker off; channel 2, mode 0, lobyte/hibyte.
    outb(PIT_GATE, (inb(PIT_GATE) & !0x02) | 0x01);
    outb(PIT_CMD, 0b1011_0000);
    outb(PIT_CH2, ticks as u8);
    outb(PIT_CH2, (ticks >> 8) as u8);
    // Restart the count by toggling the gate.
    let g = inb(PIT_GATE) & !0x01;
    outb(PIT_GATE, g);
    outb(PIT_GATE, g | 0x01);
    let t0 = rdtsc();
    let mut spins = 0u64;
    while inb(PIT_GATE) & 0x20 == 0 && spins < 100_000_000 {
        spins += 1;
    }
    let t1 = rdtsc();
    let per_us_x1024 = ((t1 - t0) * 1024) / (ms * 1000).max(1);
    TSC_PER_US_X1024.store(per_us_x1024.max(1), Ordering::Relaxed);
    BOOT_TSC.compare_exchange(0, t0, Ordering::Relaxed, Ordering::Relaxed).ok();
}

/// Marks the boot TSC (before calibration, so early timestamps start at zero).
pub fn mark_boot() {
    BOOT_TSC.store(rdtsc(), Ordering::Relaxed);
}

/// TSC frequency in kHz (0 before calibration).
pub fn tsc_khz() -> u64 {
    TSC_PER_US_X1024.load(Ordering::Relaxed) * 1000 / 1024
}

/// Nanoseconds since boot (0 before calibration).
pub fn now_ns() -> u64 {
    let k = TSC_PER_US_X1024.load(Ordering::Relaxed);
    if k == 0 {
        return 0;
    }
    let d = rdtsc().saturating_sub(BOOT_TSC.load(Ordering::Relaxed)) as u128;
    (d * 1024 * 1000 / k as u128) as u64
}
