//! Time since boot, from the TSC, whose frequency comes from CPUID leaf 0x15 (or 0x16)
//! when the CPU reports it, else is measured against the HPET, else the ACPI PM timer, else
//! the PIT; a second source, when there is one, checks the first (many recent boards have
//! no PIT, where PIT reads give garbage and a lone PIT calibration is silently wrong).

use crate::cpu::{cpuid, inb, outb, port_in, rdtsc};
use core::sync::atomic::{AtomicU64, Ordering};

static BOOT_TSC: AtomicU64 = AtomicU64::new(0);
/// TSC ticks per microsecond × 1024 (0 until calibrated).
static TSC_PER_US_X1024: AtomicU64 = AtomicU64::new(0);

const PIT_HZ: u64 = 1_193_182;
const PIT_CH2: u16 = 0x42;
const PIT_CMD: u16 = 0x43;
const PIT_GATE: u16 = 0x61;

/// The PM timer's rate.
const PM_HZ: u64 = 3_579_545;

/// TSC Hz from CPUID, if the CPU reports it: leaf 0x15's crystal × ratio, or, when 0x15
/// gives the ratio but not the crystal, leaf 0x16's base frequency (MHz).
fn cpuid_hz() -> Option<u64> {
    let max = cpuid(0, 0).0;
    if max < 0x15 {
        return None;
    }
    let (den, num, crystal, _) = cpuid(0x15, 0);
    if den == 0 || num == 0 {
        return None;
    }
    if crystal != 0 {
        return Some(u64::from(crystal) * u64::from(num) / u64::from(den));
    }
    let base_mhz = if max >= 0x16 { cpuid(0x16, 0).0 & 0xFFFF } else { 0 };
    (base_mhz != 0).then(|| u64::from(base_mhz) * 1_000_000)
}

/// Most reads of a timer while measuring: 10 ms of a counter read at about a microsecond
/// a read (real HPETs and PM timers) is ~10 000; a counter that does not count costs at
/// most this many before it is given up.
const MAX_READS: u64 = 2_000_000;

/// TSC Hz measured over `ms` milliseconds of the HPET (`boot::hpet_read`: its main
/// counter, started if it was not; a 32-bit counter masked); `None` if its period is
/// implausible or it does not count.
fn hpet_hz(ms: u64) -> Option<u64> {
    use crate::boot::{hpet_enable, hpet_read as rd};
    // General capabilities: the period in femtoseconds in the upper half; bit 13, a 64-bit
    // main counter.
    let caps = rd(0)?;
    let period_fs = caps >> 32;
    if period_fs == 0 || period_fs > 100_000_000 {
        return None;
    }
    let mask = if caps & (1 << 13) != 0 { u64::MAX } else { u64::from(u32::MAX) };
    if rd(0x10)? & 1 == 0 && !hpet_enable() {
        return None;
    }
    let want = ms * 1_000_000_000_000 / period_fs;
    let c0 = rd(0xF0)? & mask;
    let t0 = rdtsc();
    let (mut c, mut t1, mut reads) = (c0, t0, 0u64);
    while c.wrapping_sub(c0) & mask < want && reads < MAX_READS {
        c = rd(0xF0)? & mask;
        t1 = rdtsc();
        reads += 1;
    }
    let ticks = c.wrapping_sub(c0) & mask;
    (ticks >= want).then(|| ((t1 - t0) as u128 * 1_000_000_000_000_000 / (ticks as u128 * period_fs as u128)) as u64)
}

/// TSC Hz measured over `ms` milliseconds of the ACPI PM timer at `port` (24 or 32 bits);
/// `None` if it does not count.
fn pm_hz(port: u16, bits32: bool, ms: u64) -> Option<u64> {
    let mask: u32 = if bits32 { u32::MAX } else { 0xFF_FFFF };
    let want = (PM_HZ * ms / 1000) as u32;
    let start = port_in(port, 4) & mask;
    // Wait for the next tick edge, so the count starts on one.
    let mut spins = 0u64;
    let mut c0 = start;
    while c0 == start && spins < MAX_READS {
        c0 = port_in(port, 4) & mask;
        spins += 1;
    }
    let t0 = rdtsc();
    let (mut c, mut t1) = (c0, t0);
    while c.wrapping_sub(c0) & mask < want && spins < 2 * MAX_READS {
        c = port_in(port, 4) & mask;
        t1 = rdtsc();
        spins += 1;
    }
    let ticks = u64::from(c.wrapping_sub(c0) & mask);
    (ticks >= u64::from(want)).then(|| (t1 - t0) * PM_HZ / ticks.max(1))
}

/// TSC Hz measured over `ms` milliseconds of PIT channel 2.
fn pit_hz(ms: u64) -> u64 {
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
    (t1 - t0) * 1000 / ms.max(1)
}

/// Where the TSC frequency came from, and what checked it.
#[derive(Copy, Clone, Debug)]
pub struct Calibration {
    pub source: &'static str,
    pub khz: u64,
    /// The second source and its figure (kHz), when there was one.
    pub check: Option<(&'static str, u64)>,
    /// CPUID says the TSC is invariant (constant rate in every P-, C- and T-state).
    pub invariant: bool,
}

impl Calibration {
    /// Do the two sources disagree by more than 1%?
    pub fn disagrees(&self) -> bool {
        self.check.is_some_and(|(_, k)| k.abs_diff(self.khz) * 100 > self.khz)
    }
}

/// Finds the TSC frequency from the first source there is, in this order: CPUID, the
/// firmware's HPET (`boot::hpet_read`), the ACPI PM timer at `pm` (port, 32 bits), the PIT
/// (each measured over `ms` milliseconds); the next source there is checks it. A source is
/// measured only while fewer than two were found. Records the boot TSC.
pub fn calibrate(ms: u64, pm: Option<(u16, bool)>) -> Calibration {
    let t0 = rdtsc();
    let sources: [(&'static str, &dyn Fn() -> Option<u64>); 4] = [
        ("CPUID leaf 0x15", &cpuid_hz),
        ("the HPET", &|| hpet_hz(ms)),
        ("the ACPI PM timer", &|| pm.and_then(|(port, b)| pm_hz(port, b, ms))),
        ("the PIT", &|| Some(pit_hz(ms))),
    ];
    let mut found = sources.iter().filter_map(|(name, hz)| hz().map(|h| (*name, h)));
    let (source, hz) = found.next().unwrap_or(("the PIT", 0));
    let check = found.next();
    let invariant = cpuid(0x8000_0000, 0).0 >= 0x8000_0007 && cpuid(0x8000_0007, 0).3 & (1 << 8) != 0;
    let per_us_x1024 = hz * 1024 / 1_000_000;
    TSC_PER_US_X1024.store(per_us_x1024.max(1), Ordering::Relaxed);
    let (mul, shift) = hv_core::time::scale(tsc_khz() * 1000);
    let (hi, lo) = hv_core::time::inverse_factor(mul);
    INV_HI.store(hi, Ordering::Relaxed);
    INV_LO.store(lo, Ordering::Relaxed);
    SCALE.store(mul as u64 | ((shift as u8 as u64) << 32), Ordering::Relaxed);
    BOOT_TSC.compare_exchange(0, t0, Ordering::Relaxed, Ordering::Relaxed).ok();
    Calibration { source, khz: hz / 1000, check: check.map(|(n, h)| (n, h / 1000)), invariant }
}

/// Marks the boot TSC (before calibration, so early timestamps start at zero).
pub fn mark_boot() {
    BOOT_TSC.store(rdtsc(), Ordering::Relaxed);
}

/// The TSC value `us` microseconds from now.
pub fn tsc_after_us(us: u64) -> u64 {
    rdtsc().saturating_add(tsc_khz().max(1).saturating_mul(us) / 1000)
}

/// Spins for `us` microseconds by the TSC.
pub fn delay_us(us: u64) {
    let end = tsc_after_us(us);
    while rdtsc() < end {
        core::hint::spin_loop();
    }
}

/// TSC frequency in kHz (0 before calibration).
pub fn tsc_khz() -> u64 {
    TSC_PER_US_X1024.load(Ordering::Relaxed) * 1000 / 1024
}

/// (mul, shift) converting TSC ticks to ns: the same scale guests get in their pvclock, so
/// the hypervisor's and the guests' system time agree.
static SCALE: AtomicU64 = AtomicU64::new(0);
/// `hv_core::time::inverse_factor` of the scale (for [`ns_to_tsc`]).
static INV_HI: AtomicU64 = AtomicU64::new(0);
static INV_LO: AtomicU64 = AtomicU64::new(0);

/// The pvclock scale of the calibrated TSC.
pub fn scale() -> (u32, i8) {
    let s = SCALE.load(Ordering::Relaxed);
    (s as u32, (s >> 32) as u8 as i8)
}

/// Nanoseconds since boot (0 before calibration).
pub fn now_ns() -> u64 {
    now_pair().1
}

/// The first TSC value at which the system clock ([`now_ns`]) reads at least `ns`.
pub fn ns_to_tsc(ns: u64) -> u64 {
    let (mul, shift) = scale();
    let factor = (INV_HI.load(Ordering::Relaxed), INV_LO.load(Ordering::Relaxed));
    BOOT_TSC.load(Ordering::Relaxed).saturating_add(hv_core::time::inverse_delta_fast(ns, mul, shift, factor))
}

/// (TSC, ns since boot) read together.
pub fn now_pair() -> (u64, u64) {
    let t = rdtsc();
    let (mul, shift) = scale();
    if mul == 0 {
        return (t, 0);
    }
    (t, hv_core::time::scale_delta(t.saturating_sub(BOOT_TSC.load(Ordering::Relaxed)), mul, shift))
}

/// Seconds since the Unix epoch from the CMOS real-time clock (UTC assumed).
pub fn rtc_unix_seconds() -> u64 {
    let rd = |r: u8| {
        outb(0x70, r);
        inb(0x71)
    };
    // Wait for no update in progress, then read twice until stable.
    let read_all = || {
        let mut n = 0;
        while rd(0x0A) & 0x80 != 0 && n < 1_000_000 {
            n += 1;
        }
        [rd(0x00), rd(0x02), rd(0x04), rd(0x07), rd(0x08), rd(0x09), rd(0x32)]
    };
    let mut v = read_all();
    for _ in 0..3 {
        let w = read_all();
        if w == v {
            break;
        }
        v = w;
    }
    let bcd = rd(0x0B) & 0x04 == 0;
    let h24 = rd(0x0B) & 0x02 != 0;
    let conv = |x: u8| if bcd { (x & 0x0F) + (x >> 4) * 10 } else { x } as u64;
    let (sec, min, day, mon, yr) = (conv(v[0]), conv(v[1]), conv(v[3]), conv(v[4]), conv(v[5]));
    let mut hour = conv(v[2] & 0x7F);
    if !h24 && v[2] & 0x80 != 0 {
        hour = (hour % 12) + 12;
    }
    let century = if v[6] != 0 && v[6] != 0xFF { conv(v[6]) } else { 20 };
    let year = century * 100 + yr;
    // Days from civil (Howard Hinnant's algorithm).
    let (y, m) = if mon <= 2 { (year - 1, mon + 9) } else { (year, mon - 3) };
    let era = y / 400;
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    days * 86_400 + hour * 3600 + min * 60 + sec
}
