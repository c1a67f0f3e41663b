//! Device interrupts for the domain that drives devices: the I/O APICs from the MADT, the
//! PIRQ mappings (`hv_core::irq::Lines`, under one lock at [`Level::Irq`]) that
//! `physdev_op` and `EVTCHNOP_bind_pirq` change, and the interrupt itself: mask a level line, EOI the LAPIC, raise
//! the event on the bound port.
//!
//! Every GSI is delivered to the boot CPU. An interrupt taken while the hypervisor idles
//! (`entry::hypervisor_trap`, where nothing may take a lock) is only noted, its LAPIC EOI
//! held back so the line cannot fire again meanwhile; the idle loop handles it next
//! ([`service_deferred`]).

use crate::locks::{Level, Ordered};
use crate::Hv;
use core::sync::atomic::{AtomicU64, Ordering};
use guest_abi::errno::Errno;
use hv_core::irq::{Lines, Pin};

static LINES: spin::Once<spin::Mutex<Lines>> = spin::Once::new();

fn lines() -> Option<Ordered<spin::MutexGuard<'static, Lines>>> {
    LINES.get().map(|l| Ordered::new(Level::Irq, || l.lock()))
}

/// Maps and masks the machine's I/O APICs (at boot, on the boot CPU, before any guest).
pub fn init(template: hv_arch::physmem::PrivateFrame, src: &mut dyn hv_arch::paging::FrameSource, madt: Option<&hv_core::acpi::Madt>) {
    let (chips, overrides) = match madt {
        Some(m) => (m.ioapics().iter().map(|a| (a.addr, a.gsi_base)).collect::<alloc::vec::Vec<_>>(), m.overrides()),
        None => (alloc::vec::Vec::new(), &[][..]),
    };
    for (i, &(addr, base)) in chips.iter().enumerate().take(hv_arch::ioapic::MAX) {
        if hv_arch::paging::map_ioapic(template, src, i, addr).is_err() {
            log::error!("out of memory mapping I/O APIC {}: no device interrupts from it", i);
            continue;
        }
        let pins = hv_arch::ioapic::add(i, addr, base);
        log::info!("I/O APIC {} at {:#x}: GSIs {}-{}", i, addr, base, base + pins.saturating_sub(1));
    }
    let n = hv_arch::ioapic::nr_gsis();
    if n == 0 {
        log::warn!("no I/O APIC: no device interrupts for dom0");
    }
    LINES.call_once(|| spin::Mutex::new(Lines::new(n, overrides)));
}

fn apply(p: Pin) {
    match p {
        Pin::Route { gsi, mode } => {
            let dest = crate::machine::get().apic_ids.first().copied().unwrap_or(0);
            hv_arch::ioapic::route(gsi, hv_core::irq::vector(gsi), mode.level, mode.active_low, dest)
        }
        Pin::Mask(g) => hv_arch::ioapic::set_masked(g, true),
        Pin::Unmask(g) => hv_arch::ioapic::set_masked(g, false),
    }
}

/// An interrupt on `gsi`, in guest context (or from [`service_deferred`]): a level line is
/// masked until its EOI, the LAPIC acknowledged, the event raised.
pub fn interrupt(hv: &mut Hv, gsi: u32) {
    if let Some(n) = hv_core::irq::TAKEN.get(gsi as usize) {
        n.fetch_add(1, Ordering::Relaxed);
    }
    let to = lines().and_then(|mut l| {
        let d = l.fire(gsi);
        // A level line, or one nobody is bound to (it raced its unbinding): closed.
        if d.is_none_or(|d| d.mask) {
            hv_arch::ioapic::set_masked(gsi, true);
        }
        d
    });
    hv_arch::lapic::eoi();
    if let Some(d) = to {
        crate::schedule::send_pirq(hv, d.dom, d.pirq);
    }
}

/// Per CPU: device vectors taken while the hypervisor idled, not yet acknowledged.
static DEFERRED: [crate::line::Line<[AtomicU64; 2]>; hv_core::acpi::MAX_CPUS] =
    [const { crate::line::Line([AtomicU64::new(0), AtomicU64::new(0)]) }; hv_core::acpi::MAX_CPUS];

/// A device interrupt in hypervisor context: noted for [`service_deferred`]; no lock, no EOI.
pub fn defer(gsi: u32) {
    let w = &DEFERRED[hv_arch::percpu::cpu_id() % hv_core::acpi::MAX_CPUS];
    w[(gsi / 64) as usize % 2].fetch_or(1 << (gsi % 64), Ordering::Relaxed);
}

/// Handles the interrupts [`defer`] noted on this CPU (each acknowledged once: every one
/// holds its in-service bit until then).
pub fn service_deferred(hv: &mut Hv) {
    // Highest vector first: a LAPIC EOI retires the highest-priority vector in service, so
    // each EOI goes with the interrupt whose pin was just masked.
    let w = &DEFERRED[hv_arch::percpu::cpu_id() % hv_core::acpi::MAX_CPUS];
    for (k, word) in w.iter().enumerate().rev() {
        let mut bits = word.swap(0, Ordering::Relaxed);
        while bits != 0 {
            let b = 63 - bits.leading_zeros();
            bits &= !(1 << b);
            interrupt(hv, 64 * k as u32 + b);
        }
    }
}

/// Claims the binding of `pirq` of `dom` before its port is made (`Lines::claim`).
pub fn claim(dom: u16, pirq: u32) -> Result<(), Errno> {
    lines().ok_or(Errno::EINVAL)?.claim(dom, pirq)
}

/// The port of a claimed `pirq` was bound (`ok`) or failed to: the pin follows.
pub fn after_bind(dom: u16, pirq: u32, ok: bool) {
    if let Some(mut l) = lines() {
        if let Some(p) = if ok { l.bound(dom, pirq) } else { l.unbound(dom, pirq) } {
            apply(p)
        }
    }
}

/// The port bound to `pirq` of `dom` was closed: the pin closes.
pub fn unbound(dom: u16, pirq: u32) {
    after_bind(dom, pirq, false);
}

/// A dying domain's lines (after its ports are closed).
pub fn release_domain(dom: u16) {
    if let Some(mut l) = lines() {
        for p in l.release(dom) {
            apply(p);
        }
    }
}

/// `PHYSDEVOP_map_pirq` of GSI `gsi` for `dom` (PIRQ `want`, or any if negative).
pub fn map(dom: u16, gsi: i32, want: i32) -> Result<u32, Errno> {
    let mut l = lines().ok_or(Errno::EINVAL)?;
    let (pirq, pin) = l.map(dom, gsi, want)?;
    if let Some(p) = pin {
        apply(p);
    }
    Ok(pirq)
}

/// `PHYSDEVOP_unmap_pirq`.
pub fn unmap(dom: u16, pirq: u32) -> Result<(), Errno> {
    let mut l = lines().ok_or(Errno::EINVAL)?;
    apply(l.unmap(dom, pirq)?);
    Ok(())
}

/// `PHYSDEVOP_eoi`.
pub fn eoi(dom: u16, pirq: u32) -> Result<(), Errno> {
    let mut l = lines().ok_or(Errno::EINVAL)?;
    if let Some(p) = l.eoi(dom, pirq)? {
        apply(p);
    }
    Ok(())
}

/// `PHYSDEVOP_irq_status_query`'s flags.
pub fn status(dom: u16, pirq: u32) -> Result<u32, Errno> {
    lines().ok_or(Errno::EINVAL)?.status(dom, pirq)
}
