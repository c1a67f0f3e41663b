//! Physical interrupts given to a domain that drives devices (Xen's PIRQs): which GSIs may
//! be given, their trigger mode, and the binding of each GSI to one domain's PIRQ and event
//! channel, with the state of a level-triggered line between its interrupt and the
//! domain's EOI.
//!
//! A GSI reaches a domain only while it is *mapped* (`PHYSDEVOP_map_pirq`) and *bound*
//! (`EVTCHNOP_bind_pirq`); the I/O APIC pin is unmasked exactly then. A level-triggered
//! interrupt masks its pin until the domain's `PHYSDEVOP_eoi` (Xen's `ACKTYPE_UNMASK`), so
//! a line the driver has not yet quietened cannot storm the CPU; an edge-triggered one
//! needs no EOI. This module is the rule book; the hypervisor programs the I/O APIC from
//! what it returns ([`Pin`]).

use crate::acpi::Override;
use guest_abi::errno::Errno;
use guest_abi::DomId;

/// GSIs handled: vectors `VECTOR_BASE..VECTOR_BASE + MAX_GSI` carry them, below the
/// hypercall vector 0x82 and the direct gate 0x80.
pub const MAX_GSI: u32 = 80;
pub const VECTOR_BASE: u8 = 0x30;
/// PIRQs per domain (`nr_pirqs`).
pub const NR_PIRQS: u32 = guest_abi::domctl::perm::NR_PIRQS;

/// ISA IRQs of devices the hypervisor drives: the PIT (0), the cascade (2), COM1 (4) and
/// the RTC (8). Their GSIs (after the interrupt source overrides) are never given out.
pub const HYPERVISOR_ISA_IRQS: &[u8] = &[0, 2, 4, 8];

/// The vector of `gsi`.
pub const fn vector(gsi: u32) -> u8 {
    VECTOR_BASE + gsi as u8
}

/// The GSI a vector carries, if it is a device vector.
pub fn gsi_of_vector(v: u64) -> Option<u32> {
    let b = VECTOR_BASE as u64;
    (b..b + MAX_GSI as u64).contains(&v).then(|| (v - b) as u32)
}

/// Device interrupts taken per GSI (reported when the hypervisor stops).
pub static TAKEN: [core::sync::atomic::AtomicU64; MAX_GSI as usize] = [const { core::sync::atomic::AtomicU64::new(0) }; MAX_GSI as usize];

/// How a GSI signals: level-triggered? active low?
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Mode {
    pub level: bool,
    pub active_low: bool,
}

/// The mode of `gsi`: from its interrupt source override if it has one (MPS INTI flags,
/// "bus default" read as the ISA default), else ISA's edge / active high below 16 and PCI's
/// level / active low from 16 (ACPI's defaults).
pub fn mode(overrides: &[Override], gsi: u32) -> Mode {
    let isa = gsi < 16 && !overrides.iter().any(|o| o.gsi != gsi && o.source as u32 == gsi);
    let default = if isa { Mode { level: false, active_low: false } } else { Mode { level: true, active_low: true } };
    match overrides.iter().find(|o| o.gsi == gsi) {
        None => default,
        Some(o) => Mode {
            active_low: match o.flags & 3 {
                1 => false,
                3 => true,
                _ => default.active_low,
            },
            level: match (o.flags >> 2) & 3 {
                1 => false,
                3 => true,
                _ => default.level,
            },
        },
    }
}

/// The GSI ISA IRQ `irq` arrives at.
pub fn isa_gsi(overrides: &[Override], irq: u8) -> u32 {
    overrides.iter().find(|o| o.source == irq).map_or(irq as u32, |o| o.gsi)
}

/// Is `gsi` the hypervisor's (a device of [`HYPERVISOR_ISA_IRQS`], or GSI 0 when the PIT
/// moved away from it: the 8259's ExtINT pin)?
pub fn reserved(overrides: &[Override], gsi: u32) -> bool {
    gsi == 0 || HYPERVISOR_ISA_IRQS.iter().any(|&irq| isa_gsi(overrides, irq) == gsi)
}

/// What the I/O APIC pin of a GSI must become.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Pin {
    /// Program it (masked) for this mode: a new mapping.
    Route { gsi: u32, mode: Mode },
    Mask(u32),
    Unmask(u32),
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
struct Line {
    dom: DomId,
    pirq: u32,
    mode: Mode,
    bound: bool,
    /// A level interrupt was delivered and its pin masked until the domain's EOI.
    in_flight: bool,
}

/// Where a delivered interrupt goes.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    pub dom: DomId,
    pub pirq: u32,
    /// Mask the pin before the LAPIC EOI (level-triggered).
    pub mask: bool,
}

/// Every GSI's mapping.
#[derive(Clone, Debug)]
pub struct Lines {
    lines: [Option<Line>; MAX_GSI as usize],
    /// GSIs the machine has (pins of its I/O APICs), at most [`MAX_GSI`].
    nr_gsis: u32,
    overrides: alloc::vec::Vec<Override>,
}

impl Lines {
    pub fn new(nr_gsis: u32, overrides: &[Override]) -> Lines {
        Lines { lines: [None; MAX_GSI as usize], nr_gsis: nr_gsis.min(MAX_GSI), overrides: overrides.to_vec() }
    }

    fn find(&self, dom: DomId, pirq: u32) -> Option<u32> {
        (0..self.nr_gsis).find(|&g| self.lines[g as usize].is_some_and(|l| l.dom == dom && l.pirq == pirq))
    }

    /// `map_pirq` of GSI `gsi` for `dom`, PIRQ `want` (negative: any; the GSI's own number
    /// if free, as Xen gives dom0). The same mapping again is no error.
    pub fn map(&mut self, dom: DomId, gsi: i32, want: i32) -> Result<(u32, Option<Pin>), Errno> {
        if gsi < 0 || gsi as u32 >= self.nr_gsis || want >= NR_PIRQS as i32 {
            return Err(Errno::EINVAL);
        }
        let gsi = gsi as u32;
        if reserved(&self.overrides, gsi) {
            return Err(Errno::EPERM);
        }
        let taken = |p: u32| (0..self.nr_gsis).any(|g| g != gsi && self.lines[g as usize].is_some_and(|l| l.dom == dom && l.pirq == p));
        if let Some(l) = self.lines[gsi as usize] {
            return match (l.dom == dom, want) {
                (true, w) if w < 0 || w as u32 == l.pirq => Ok((l.pirq, None)),
                (true, _) => Err(Errno::EEXIST),
                (false, _) => Err(Errno::EBUSY),
            };
        }
        let pirq = if want >= 0 {
            if taken(want as u32) {
                return Err(Errno::EEXIST);
            }
            want as u32
        } else {
            match core::iter::once(gsi).chain(0..NR_PIRQS).find(|&p| p < NR_PIRQS && !taken(p)) {
                Some(p) => p,
                None => return Err(Errno::ENOSPC),
            }
        };
        let mode = mode(&self.overrides, gsi);
        self.lines[gsi as usize] = Some(Line { dom, pirq, mode, bound: false, in_flight: false });
        Ok((pirq, Some(Pin::Route { gsi, mode })))
    }

    /// `unmap_pirq`: the PIRQ must be mapped and not bound to a port (-EBUSY: close it
    /// first).
    pub fn unmap(&mut self, dom: DomId, pirq: u32) -> Result<Pin, Errno> {
        let g = self.find(dom, pirq).ok_or(Errno::EINVAL)?;
        if self.lines[g as usize].is_some_and(|l| l.bound) {
            return Err(Errno::EBUSY);
        }
        self.lines[g as usize] = None;
        Ok(Pin::Mask(g))
    }

    /// Before `EVTCHNOP_bind_pirq`: claims the binding (-EINVAL unmapped, -EEXIST bound).
    pub fn claim(&mut self, dom: DomId, pirq: u32) -> Result<(), Errno> {
        let g = self.find(dom, pirq).ok_or(Errno::EINVAL)?;
        let l = self.lines[g as usize].as_mut().ok_or(Errno::EINVAL)?;
        if l.bound {
            return Err(Errno::EEXIST);
        }
        l.bound = true;
        l.in_flight = false;
        Ok(())
    }

    /// The port was bound after [`Lines::claim`]: the pin opens.
    pub fn bound(&mut self, dom: DomId, pirq: u32) -> Option<Pin> {
        let g = self.find(dom, pirq)?;
        self.lines[g as usize].filter(|l| l.bound).map(|_| Pin::Unmask(g))
    }

    /// The binding ended (its port closed, or the bind after a claim failed): the pin
    /// closes.
    pub fn unbound(&mut self, dom: DomId, pirq: u32) -> Option<Pin> {
        let g = self.find(dom, pirq)?;
        let l = self.lines[g as usize].as_mut()?;
        l.bound = false;
        l.in_flight = false;
        Some(Pin::Mask(g))
    }

    /// An interrupt on `gsi`: whom it goes to (nothing for a line not bound: spurious, or
    /// one that raced its unbinding).
    pub fn fire(&mut self, gsi: u32) -> Option<Delivery> {
        let l = self.lines.get_mut(gsi as usize)?.as_mut()?;
        if !l.bound {
            return None;
        }
        let mask = l.mode.level;
        l.in_flight |= mask;
        Some(Delivery { dom: l.dom, pirq: l.pirq, mask })
    }

    /// `PHYSDEVOP_eoi`: a level line in flight opens again.
    pub fn eoi(&mut self, dom: DomId, pirq: u32) -> Result<Option<Pin>, Errno> {
        let g = self.find(dom, pirq).ok_or(Errno::EINVAL)?;
        let l = self.lines[g as usize].as_mut().ok_or(Errno::EINVAL)?;
        Ok(core::mem::take(&mut l.in_flight).then_some(Pin::Unmask(g)))
    }

    /// `irq_status_query`: the `XENIRQSTAT_*` flags of PIRQ `pirq`. As Xen's for a PV
    /// domain, any PIRQ in range says `needs_eoi` (an EOI of a line not in flight does
    /// nothing), and no line is shared.
    pub fn status(&self, _dom: DomId, pirq: u32) -> Result<u32, Errno> {
        if pirq >= NR_PIRQS {
            return Err(Errno::EINVAL);
        }
        Ok(guest_abi::physdev::XENIRQSTAT_NEEDS_EOI)
    }

    /// A dying domain gives every line back; the pins to mask.
    pub fn release(&mut self, dom: DomId) -> alloc::vec::Vec<Pin> {
        let mut v = alloc::vec::Vec::new();
        for g in 0..self.nr_gsis {
            if self.lines[g as usize].is_some_and(|l| l.dom == dom) {
                self.lines[g as usize] = None;
                v.push(Pin::Mask(g));
            }
        }
        v
    }

    /// Is the pin of `gsi` open (mapped, bound, no level interrupt awaiting EOI)?
    pub fn open(&self, gsi: u32) -> bool {
        self.lines.get(gsi as usize).copied().flatten().is_some_and(|l| l.bound && !l.in_flight)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// QEMU's MADT: IRQ 0 on GSI 2; 5, 9, 10, 11 level, active high.
    fn qemu() -> alloc::vec::Vec<Override> {
        let mut v = alloc::vec![Override { source: 0, gsi: 2, flags: 0 }];
        for irq in [5u8, 9, 10, 11] {
            v.push(Override { source: irq, gsi: irq as u32, flags: 0xd });
        }
        v
    }

    #[test]
    fn modes_and_reserved() {
        let o = qemu();
        assert_eq!(mode(&o, 10), Mode { level: true, active_low: false });
        assert_eq!(mode(&o, 1), Mode { level: false, active_low: false });
        assert_eq!(mode(&o, 2), Mode { level: false, active_low: false });
        assert_eq!(mode(&o, 16), Mode { level: true, active_low: true });
        // GSI 0 is no ISA IRQ's any more (IRQ 0 moved to 2): PCI-style default there.
        assert_eq!(mode(&o, 0), Mode { level: true, active_low: true });
        for g in [0, 2, 4, 8] {
            assert!(reserved(&o, g), "GSI {}", g);
        }
        for g in [1, 3, 5, 9, 10, 11, 16, 23] {
            assert!(!reserved(&o, g), "GSI {}", g);
        }
        assert_eq!(isa_gsi(&o, 0), 2);
        assert_eq!(isa_gsi(&o, 10), 10);
    }

    #[test]
    fn map_bind_fire_eoi() {
        let mut l = Lines::new(24, &qemu());
        assert_eq!(l.map(0, 4, -1), Err(Errno::EPERM));
        assert_eq!(l.map(0, 2, -1), Err(Errno::EPERM));
        assert_eq!(l.map(0, 24, -1), Err(Errno::EINVAL));
        assert_eq!(l.map(0, -3, -1), Err(Errno::EINVAL));
        assert_eq!(l.map(0, 10, NR_PIRQS as i32), Err(Errno::EINVAL));
        let (p, pin) = l.map(0, 10, -1).unwrap();
        assert_eq!(p, 10);
        assert_eq!(pin, Some(Pin::Route { gsi: 10, mode: Mode { level: true, active_low: false } }));
        assert_eq!(l.map(0, 10, -1), Ok((10, None)));
        assert_eq!(l.map(0, 10, 11), Err(Errno::EEXIST));
        assert_eq!(l.map(1, 10, -1), Err(Errno::EBUSY));
        assert_eq!(l.map(0, 11, 10), Err(Errno::EEXIST));
        assert_eq!(l.fire(10), None, "not bound: nothing delivered");
        assert!(!l.open(10));
        assert_eq!(l.eoi(0, 11), Err(Errno::EINVAL));
        assert_eq!(l.claim(0, 11), Err(Errno::EINVAL));
        l.claim(0, 10).unwrap();
        assert_eq!(l.claim(0, 10), Err(Errno::EEXIST));
        assert_eq!(l.bound(0, 10), Some(Pin::Unmask(10)));
        assert!(l.open(10));
        assert_eq!(l.status(0, 10), Ok(guest_abi::physdev::XENIRQSTAT_NEEDS_EOI));
        assert_eq!(l.status(0, NR_PIRQS), Err(Errno::EINVAL));
        assert_eq!(l.fire(10), Some(Delivery { dom: 0, pirq: 10, mask: true }));
        assert!(!l.open(10), "level: closed until the EOI");
        assert_eq!(l.eoi(0, 10), Ok(Some(Pin::Unmask(10))));
        assert_eq!(l.eoi(0, 10), Ok(None), "a second EOI opens nothing");
        assert_eq!(l.unmap(0, 10), Err(Errno::EBUSY));
        assert_eq!(l.unbound(0, 10), Some(Pin::Mask(10)));
        assert_eq!(l.unmap(0, 10), Ok(Pin::Mask(10)));
        assert_eq!(l.unmap(0, 10), Err(Errno::EINVAL));
        // Edge lines need no EOI.
        let (p, _) = l.map(0, 3, -1).unwrap();
        l.claim(0, p).unwrap();
        assert_eq!(l.fire(3), Some(Delivery { dom: 0, pirq: p, mask: false }));
        assert!(l.open(3));
        assert_eq!(l.release(0), alloc::vec![Pin::Mask(3)]);
        assert_eq!(l.fire(3), None);
    }

    proptest! {
        /// Any sequence of operations: a GSI is mapped to at most one (domain, PIRQ), no
        /// domain has one PIRQ on two GSIs, and a pin is open only while mapped and bound.
        #[test]
        fn invariants(ops in proptest::collection::vec((0u8..7, 0u16..3, 0i32..26, -1i32..26), 1..200)) {
            let mut l = Lines::new(24, &qemu());
            for (op, dom, a, b) in ops {
                match op {
                    0 => { let _ = l.map(dom, a, b); }
                    1 => { let _ = l.unmap(dom, a as u32); }
                    2 => { if l.claim(dom, a as u32).is_ok() { l.bound(dom, a as u32); } }
                    3 => { l.unbound(dom, a as u32); }
                    4 => { let _ = l.fire(a as u32); }
                    5 => { let _ = l.eoi(dom, a as u32); }
                    _ => { l.release(dom); }
                }
                for g in 0..24u32 {
                    if let Some(x) = l.lines[g as usize] {
                        prop_assert!(!reserved(&l.overrides, g));
                        for h in 0..24u32 {
                            if h != g {
                                prop_assert!(l.lines[h as usize].is_none_or(|y| (y.dom, y.pirq) != (x.dom, x.pirq)));
                            }
                        }
                        prop_assert!(!x.in_flight || x.bound);
                    } else {
                        prop_assert!(!l.open(g));
                    }
                }
            }
        }
    }
}
