//! The 64-bit virtual address layout guests see.
//!
//! L4 slots 256–271 (`0xFFFF8000_00000000`–`0xFFFF8800_00000000`) belong to the hypervisor, as
//! in Xen. A guest can never install an entry there. Slot 256 holds the read-only
//! machine-to-physical table at Xen's address.

/// First virtual address reserved for the hypervisor (`HYPERVISOR_VIRT_START`).
pub const HYPERVISOR_VIRT_START: u64 = 0xFFFF_8000_0000_0000;
/// One past the last reserved address (`HYPERVISOR_VIRT_END`).
pub const HYPERVISOR_VIRT_END: u64 = 0xFFFF_8800_0000_0000;
/// First reserved L4 slot.
pub const FIRST_RESERVED_L4_SLOT: usize = 256;
/// One past the last reserved L4 slot.
pub const END_RESERVED_L4_SLOT: usize = 272;
/// Read-only M2P table: 8-byte entries indexed by MFN, value = PFN or [`INVALID_M2P_ENTRY`].
pub const MACH2PHYS_VIRT_START: u64 = 0xFFFF_8000_0000_0000;
/// End of the read-only M2P window (256 GiB).
pub const MACH2PHYS_VIRT_END: u64 = 0xFFFF_8040_0000_0000;
/// M2P value of a frame that has no pseudo-physical frame.
pub const INVALID_M2P_ENTRY: u64 = !0;

/// Is `slot` an L4 slot reserved for the hypervisor?
pub const fn is_reserved_l4_slot(slot: usize) -> bool {
    slot >= FIRST_RESERVED_L4_SLOT && slot < END_RESERVED_L4_SLOT
}

/// Is `va` a canonical 48-bit address?
pub const fn is_canonical(va: u64) -> bool {
    let top = (va as i64) >> 47;
    top == 0 || top == -1
}

/// Does `va` lie in the hypervisor-reserved range?
pub const fn is_hypervisor_va(va: u64) -> bool {
    va >= HYPERVISOR_VIRT_START && va < HYPERVISOR_VIRT_END
}

/// May a guest name `va` as an address of its own (canonical, outside the reserved range)?
pub const fn is_guest_va(va: u64) -> bool {
    is_canonical(va) && !is_hypervisor_va(va)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn ranges() {
        assert!(is_canonical(0x7FFF_FFFF_FFFF));
        assert!(!is_canonical(0x8000_0000_0000));
        assert!(is_canonical(0xFFFF_8000_0000_0000));
        assert!(is_hypervisor_va(0xFFFF_8000_0000_0000));
        assert!(is_hypervisor_va(0xFFFF_87FF_FFFF_FFFF));
        assert!(!is_hypervisor_va(0xFFFF_8800_0000_0000));
        assert!(is_guest_va(0xFFFF_FFFF_8000_0000));
        assert!(!is_guest_va(0xDEAD_0000_0000_0000));
        assert_eq!((HYPERVISOR_VIRT_START >> 39) & 511, FIRST_RESERVED_L4_SLOT as u64);
        assert_eq!((HYPERVISOR_VIRT_END >> 39) & 511, END_RESERVED_L4_SLOT as u64);
        assert!(is_reserved_l4_slot(256) && is_reserved_l4_slot(271));
        assert!(!is_reserved_l4_slot(255) && !is_reserved_l4_slot(272));
    }
}
