//! What of the machine's I/O a domain with I/O rights (dom0) reaches: ports through its I/O
//! permission bitmap, MMIO frames through its page tables. Xen's `ioports` / `iomem`
//! permissions as dom0 gets them (`dom0_setup_permissions`): everything but what the
//! hypervisor drives itself.
//!
//! There is no IOMMU: a device the domain drives can DMA anywhere in memory, as on Xen
//! without VT-d / AMD-Vi. I/O rights are as strong as the hypervisor itself; only the
//! privileged domain has them.

use crate::frame::Owner;
use crate::mem::Mfn;

/// A range the hypervisor keeps for itself, inclusive, with what it is.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Reserved {
    pub first: u64,
    pub last: u64,
    pub what: &'static str,
}

const fn r(first: u64, last: u64, what: &'static str) -> Reserved {
    Reserved { first, last, what }
}

/// The I/O ports the hypervisor drives, never in a domain's bitmap.
pub const HYPERVISOR_PORTS: &[Reserved] = &[
    r(0x20, 0x21, "8259A master PIC (masked by the hypervisor)"),
    r(0x40, 0x43, "8254 PIT (TSC calibration)"),
    r(0x60, 0x60, "i8042 data (the hypervisor's keyboard)"),
    r(0x61, 0x61, "PIT channel 2 gate (TSC calibration)"),
    r(0x64, 0x64, "i8042 status and command (the keyboard; its reset line reboots)"),
    r(0x70, 0x71, "CMOS RTC (the wallclock of new domains)"),
    r(0xA0, 0xA1, "8259A slave PIC"),
    r(0xF4, 0xF4, "isa-debug-exit (test verdicts)"),
    r(0x3F8, 0x3FF, "COM1 (the hypervisor's console)"),
    r(0x4D0, 0x4D1, "ELCR (interrupt trigger modes)"),
];

/// Bytes of a full I/O permission bitmap (one bit per port, set = denied, as the TSS has it).
pub const BITMAP_BYTES: usize = 65536 / 8;

/// May a domain with I/O rights use `port`?
pub fn port_permitted(port: u16) -> bool {
    !HYPERVISOR_PORTS.iter().any(|r| (r.first..=r.last).contains(&u64::from(port)))
}

/// The bitmap of a domain with I/O rights: every port but the hypervisor's.
pub fn fill_port_bitmap(bitmap: &mut [u8; BITMAP_BYTES]) {
    bitmap.fill(0);
    for r in HYPERVISOR_PORTS {
        for p in r.first..=r.last {
            bitmap[p as usize / 8] |= 1 << (p % 8);
        }
    }
}

/// The MMIO frames a domain with I/O rights may map: frames that are not RAM (not in the
/// frame table, or in it as a hole or firmware area) and not the hypervisor's devices.
#[derive(Clone, Debug)]
pub struct IoMem {
    /// One past the frame table's last frame.
    table_end: Mfn,
    /// One past the highest RAM frame the firmware reported (RAM beyond the table's end,
    /// where the direct map stops, is still RAM).
    ram_top: Mfn,
    denied: [(Mfn, Mfn); MAX_DENIED],
    nr: usize,
}

/// Most hypervisor MMIO ranges recorded.
pub const MAX_DENIED: usize = 16;

/// The MSI address window (the local APICs answer there): 0xFEE00000–0xFEEFFFFF.
pub const MSI_WINDOW: (Mfn, Mfn) = (Mfn(0xFEE00), Mfn(0xFEEFF));
/// The HPET's usual page (the hypervisor calibrates the TSC against it at boot, and keeps
/// it; the page the ACPI HPET table names is denied too, `setup::iomem`).
pub const HPET_PAGE: Mfn = Mfn(0xFED00);

impl IoMem {
    /// I/O frames above the frame table (`table_end`) and RAM (`ram_top`), the MSI window and
    /// the HPET page denied.
    pub fn new(table_end: Mfn, ram_top: Mfn) -> IoMem {
        let mut m = IoMem { table_end, ram_top: Mfn(ram_top.0.max(table_end.0)), denied: [(Mfn(0), Mfn(0)); MAX_DENIED], nr: 0 };
        m.deny(MSI_WINDOW.0, MSI_WINDOW.1);
        m.deny(HPET_PAGE, HPET_PAGE);
        m
    }

    /// Keeps `first..=last` (a device the hypervisor drives). False if the list is full,
    /// and then every frame is refused (`permits` fails closed).
    pub fn deny(&mut self, first: Mfn, last: Mfn) -> bool {
        if self.nr == MAX_DENIED {
            self.nr = MAX_DENIED + 1;
            return false;
        }
        if self.nr > MAX_DENIED {
            return false;
        }
        self.denied[self.nr] = (first, last);
        self.nr += 1;
        true
    }

    /// Is `mfn` (whose frame-table owner is `owner`) an I/O frame at all? (Stable for the
    /// machine's life: no frame becomes or stops being RAM.)
    pub fn is_io(&self, mfn: Mfn, owner: Owner) -> bool {
        matches!(owner, Owner::None | Owner::Io) && !(mfn.0 >= self.table_end.0 && mfn.0 < self.ram_top.0)
    }

    /// May a domain with I/O rights map `mfn` (owner `owner`)?
    pub fn permits(&self, mfn: Mfn, owner: Owner) -> bool {
        self.is_io(mfn, owner) && self.nr <= MAX_DENIED && !self.denied[..self.nr].iter().any(|&(a, b)| (a.0..=b.0).contains(&mfn.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports() {
        let mut b = [0xAAu8; BITMAP_BYTES];
        fill_port_bitmap(&mut b);
        for p in 0..=u16::MAX {
            let denied = b[p as usize / 8] & (1 << (p % 8)) != 0;
            assert_eq!(denied, !port_permitted(p), "port {p:#x}");
        }
        for p in [0x20, 0x21, 0x40, 0x43, 0x60, 0x61, 0x64, 0x70, 0x71, 0xA1, 0xF4, 0x3F8, 0x3FD, 0x3FF, 0x4D0] {
            assert!(!port_permitted(p), "{p:#x}");
        }
        for p in [0x80, 0xCF8, 0xCFC, 0xCFF, 0x3F7, 0x400, 0x2F8, 0xC000, 0xFFFF] {
            assert!(port_permitted(p), "{p:#x}");
        }
    }

    #[test]
    fn iomem() {
        let mut m = IoMem::new(Mfn(0x1000), Mfn(0x1000));
        assert!(m.deny(Mfn(0xFEC00), Mfn(0xFEC00)));
        // RAM and the hypervisor's frames are not I/O.
        for o in [Owner::Free, Owner::Xen, Owner::Dom(0), Owner::Dom(3)] {
            assert!(!m.permits(Mfn(0x10), o));
        }
        assert!(m.permits(Mfn(0xA0), Owner::None)); // a hole in the table (VGA)
        assert!(m.permits(Mfn(0xFEBD0), Owner::None)); // a BAR above the table
        assert!(m.permits(Mfn(0x10_0000), Owner::None)); // a 64-bit BAR
        assert!(!m.permits(Mfn(0xFEC00), Owner::None)); // the IOAPIC
        assert!(!m.permits(Mfn(0xFEE00), Owner::None)); // the local APIC
        assert!(!m.permits(Mfn(0xFEEFF), Owner::None)); // the MSI window
        assert!(!m.permits(HPET_PAGE, Owner::None));
        assert!(m.permits(Mfn(0xFEF00), Owner::None));
        // RAM the direct map stops short of is still RAM.
        let big = IoMem::new(Mfn(0x1000), Mfn(0x2000));
        assert!(!big.permits(Mfn(0x1800), Owner::None));
        assert!(big.permits(Mfn(0x2000), Owner::None));
        // A full list fails closed.
        let mut full = IoMem::new(Mfn(0x1000), Mfn(0x1000));
        while full.deny(Mfn(0xF0000), Mfn(0xF0000)) {}
        assert!(!full.permits(Mfn(0xA0), Owner::None));
    }
}
