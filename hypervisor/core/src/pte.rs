//! x86-64 page-table entries.

use crate::mem::Mfn;

/// Flag bits of a 4-level page-table entry: the `x86_64` crate's (`PRESENT`, `WRITABLE`,
/// `USER_ACCESSIBLE`, `HUGE_PAGE` for PSE/PAT, `NO_EXECUTE`, ...).
pub use x86_64::structures::paging::PageTableFlags as PteFlags;

/// Bits 12..51: the frame address.
pub const ADDR_MASK: u64 = 0x000F_FFFF_FFFF_F000;

/// Bit 62 (ignored by the CPU; reserved for guests, who may never set it): marks an L1
/// entry the hypervisor wrote for a grant mapping (Xen's `_PAGE_GNTTAB`). Such an entry
/// holds no reference of its own (the mapping domain's maptrack holds them) and only the
/// grant-table operations change it.
pub const GRANT_BIT: u64 = 1 << 62;

/// A page-table entry. Kept a plain word (not `x86_64`'s `PageTableEntry`, which is neither
/// `Copy` nor made from raw bits): entries of guest tables are read, validated and written
/// as whole words, and compared as such.
#[derive(Copy, Clone, PartialEq, Eq, Debug, Default)]
pub struct Pte(pub u64);

impl Pte {
    pub const fn new(mfn: Mfn, flags: PteFlags) -> Pte {
        Pte((mfn.0 << 12) & ADDR_MASK | flags.bits())
    }
    pub const fn mfn(self) -> Mfn {
        Mfn((self.0 & ADDR_MASK) >> 12)
    }
    pub const fn flags(self) -> PteFlags {
        PteFlags::from_bits_retain(self.0 & !ADDR_MASK)
    }
    pub const fn present(self) -> bool {
        self.0 & PteFlags::PRESENT.bits() != 0
    }
    pub const fn writable(self) -> bool {
        self.0 & PteFlags::WRITABLE.bits() != 0
    }
    /// A grant mapping's entry ([`GRANT_BIT`]).
    pub const fn granted(self) -> bool {
        self.0 & GRANT_BIT != 0 && self.present()
    }
}

/// Index of `va` in the table at `level` (1 = L1 .. 4 = L4).
pub const fn index(va: u64, level: u32) -> usize {
    ((va >> (12 + 9 * (level - 1))) & 511) as usize
}

/// Bytes covered by one entry at `level`.
pub const fn entry_span(level: u32) -> u64 {
    1u64 << (12 + 9 * (level - 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn pte_roundtrip() {
        let p = Pte::new(Mfn(0x1234), PteFlags::PRESENT | PteFlags::WRITABLE | PteFlags::NO_EXECUTE);
        assert_eq!(p.mfn(), Mfn(0x1234));
        assert!(p.present() && p.writable());
        assert!(p.flags().contains(PteFlags::NO_EXECUTE));
        assert_eq!(index(0xFFFF_8000_0000_0000, 4), 256);
        assert_eq!(index(0x20_0000, 2), 1);
        assert_eq!(entry_span(2), 2 << 20);
    }
}
