//! The I/O APICs: each pin's redirection entry (vector, trigger, polarity, mask,
//! destination). The hypervisor owns them; domains never map their registers
//! (`hv_core::ioperm`).
//!
//! An I/O APIC's registers are reached through an index and a window register, so each
//! access is a pair under [`LOCK`]. The lock is a leaf, taken only with interrupts off
//! (the hypervisor always runs so, outside its idle halt), so an interrupt can never find
//! it held by the code it interrupted.

use crate::layout::LAPIC_VA;

/// Most I/O APICs driven.
pub const MAX: usize = 8;

/// Registers of I/O APIC `i` (uncached), in the pages above the local APIC's.
pub const fn va(i: usize) -> u64 {
    LAPIC_VA + 0x1000 * (1 + i as u64)
}

#[derive(Copy, Clone, Debug, Default)]
struct Chip {
    gsi_base: u32,
    pins: u32,
    /// Offset of the registers in their page.
    off: u64,
}

static LOCK: spin::Mutex<([Chip; MAX], usize)> = spin::Mutex::new(([Chip { gsi_base: 0, pins: 0, off: 0 }; MAX], 0));

const IOREGSEL: u64 = 0;
const IOWIN: u64 = 0x10;
const REG_VER: u32 = 1;
const RTE_MASKED: u32 = 1 << 16;
const RTE_LEVEL: u32 = 1 << 15;
const RTE_ACTIVE_LOW: u32 = 1 << 13;

fn read(c: &Chip, i: usize, reg: u32) -> u32 {
    // SAFETY: `va(i)` maps I/O APIC `i`'s register page (uncached) once `add` ran for it;
    // IOREGSEL and IOWIN are 32-bit registers inside it.
    unsafe {
        ((va(i) + c.off + IOREGSEL) as *mut u32).write_volatile(reg);
        ((va(i) + c.off + IOWIN) as *const u32).read_volatile()
    }
}

fn write(c: &Chip, i: usize, reg: u32, v: u32) {
    // SAFETY: as for `read`.
    unsafe {
        ((va(i) + c.off + IOREGSEL) as *mut u32).write_volatile(reg);
        ((va(i) + c.off + IOWIN) as *mut u32).write_volatile(v);
    }
}

/// Takes I/O APIC number `i` (registers at `phys`, first GSI `gsi_base`), mapped at `va(i)`
/// by `paging::map_ioapic`, and masks every pin. Returns its pin count.
pub fn add(i: usize, phys: u64, gsi_base: u32) -> u32 {
    // Both registers must lie in the one page mapped.
    if i >= MAX || phys & 0xFFF > 0x1000 - 0x20 {
        return 0;
    }
    let mut g = LOCK.lock();
    let mut c = Chip { gsi_base, pins: 0, off: phys & 0xFF0 };
    c.pins = ((read(&c, i, REG_VER) >> 16) & 0xFF) + 1;
    for pin in 0..c.pins {
        write(&c, i, 0x10 + 2 * pin, RTE_MASKED);
        write(&c, i, 0x11 + 2 * pin, 0);
    }
    g.0[i] = c;
    g.1 = g.1.max(i + 1);
    c.pins
}

/// GSIs covered: one past the highest pin of any I/O APIC.
pub fn nr_gsis() -> u32 {
    let g = LOCK.lock();
    g.0[..g.1].iter().map(|c| c.gsi_base + c.pins).max().unwrap_or(0)
}

/// Runs `f` on the chip and pin of `gsi` (nothing if no I/O APIC has it).
fn on_pin(gsi: u32, f: impl FnOnce(&Chip, usize, u32)) {
    let g = LOCK.lock();
    if let Some((i, c)) = g.0[..g.1].iter().enumerate().find(|(_, c)| c.pins != 0 && (c.gsi_base..c.gsi_base + c.pins).contains(&gsi)) {
        f(c, i, gsi - c.gsi_base);
    }
}

/// Programs `gsi`'s pin, masked: fixed delivery of `vector` to the CPU with APIC id `dest`
/// (physical mode), with the trigger and polarity given.
pub fn route(gsi: u32, vector: u8, level: bool, active_low: bool, dest: u32) {
    on_pin(gsi, |c, i, pin| {
        let lo = RTE_MASKED | vector as u32 | if level { RTE_LEVEL } else { 0 } | if active_low { RTE_ACTIVE_LOW } else { 0 };
        write(c, i, 0x10 + 2 * pin, RTE_MASKED);
        write(c, i, 0x11 + 2 * pin, (dest & 0xFF) << 24);
        write(c, i, 0x10 + 2 * pin, lo);
    })
}

/// Masks or unmasks `gsi`'s pin (its other settings unchanged).
pub fn set_masked(gsi: u32, masked: bool) {
    on_pin(gsi, |c, i, pin| {
        let lo = read(c, i, 0x10 + 2 * pin);
        write(c, i, 0x10 + 2 * pin, if masked { lo | RTE_MASKED } else { lo & !RTE_MASKED });
    })
}
