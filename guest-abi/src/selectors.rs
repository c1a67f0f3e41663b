//! GDT layout and flat selectors.
//!
//! Guests own GDT entries 0..7167 (pages 0..13); entries from 7168 (selector 0xE000) are the
//! hypervisor's, as in Xen. Deviation: guest kernels run in ring 1, so the flat kernel code
//! and data selectors are ring-1 descriptors. Their numbers are those of Xen's 32-bit PV
//! `FLAT_RING1_CS`/`FLAT_RING1_DS`; the ring-3 selectors keep Xen's 64-bit values.

/// Number of GDT entries a guest may own.
pub const FIRST_RESERVED_GDT_ENTRY: usize = 7168;
/// First GDT page reserved for the hypervisor.
pub const FIRST_RESERVED_GDT_PAGE: usize = 14;
/// Byte offset of the reserved area.
pub const FIRST_RESERVED_GDT_BYTE: usize = FIRST_RESERVED_GDT_PAGE * 4096;

/// Hypervisor 64-bit code (ring 0).
pub const HYPERVISOR_CS: u16 = 0xE008;
/// Hypervisor data (ring 0).
pub const HYPERVISOR_DS: u16 = 0xE010;
/// Guest kernel 64-bit code, ring 1.
pub const FLAT_KERNEL_CS: u16 = 0xE019;
/// Guest kernel data/stack, ring 1.
pub const FLAT_KERNEL_DS: u16 = 0xE021;
/// Guest kernel stack selector (same descriptor as the data selector).
pub const FLAT_KERNEL_SS: u16 = FLAT_KERNEL_DS;
/// Guest user data/stack, ring 3 (Xen's `FLAT_RING3_DS64`/`SS64` value).
pub const FLAT_USER_DS: u16 = 0xE02B;
/// Guest user stack selector.
pub const FLAT_USER_SS: u16 = FLAT_USER_DS;
/// Guest user 64-bit code, ring 3 (Xen's `FLAT_RING3_CS64`).
pub const FLAT_USER_CS: u16 = 0xE033;
/// Per-CPU TSS (16-byte system descriptor).
pub const TSS_SELECTOR: u16 = 0xE040;
/// LDT descriptor (16 bytes).
pub const LDT_SELECTOR: u16 = 0xE050;

/// Xen's 64-bit PV kernel selectors (the Xen pv64 mode: kernel and user both in ring 3).
pub const FLAT_RING3_CS64: u16 = FLAT_USER_CS;
pub const FLAT_RING3_SS64: u16 = FLAT_USER_SS;
/// Xen's `FLAT_RING3_DS64`: the null selector.
pub const FLAT_RING3_DS64: u16 = 0;

/// The guest kernel's flat code and stack selectors in each mode (`pv64`: Xen's).
pub const fn kernel_cs(pv64: bool) -> u16 {
    if pv64 { FLAT_RING3_CS64 } else { FLAT_KERNEL_CS }
}
pub const fn kernel_ss(pv64: bool) -> u16 {
    if pv64 { FLAT_RING3_SS64 } else { FLAT_KERNEL_SS }
}
/// The ring guest kernels run in, in each mode.
pub const fn kernel_rpl(pv64: bool) -> u8 {
    if pv64 { 3 } else { GUEST_KERNEL_RPL }
}

/// Requested privilege level of a selector.
pub const fn rpl(sel: u16) -> u8 {
    (sel & 3) as u8
}

/// GDT index of a selector.
pub const fn index(sel: u16) -> usize {
    (sel >> 3) as usize
}

/// Is this a selector in the hypervisor-reserved part of the GDT?
pub const fn is_reserved(sel: u16) -> bool {
    sel & 4 == 0 && index(sel) >= FIRST_RESERVED_GDT_ENTRY
}

/// The privilege ring guest kernels run in.
pub const GUEST_KERNEL_RPL: u8 = 1;

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn selector_numbers() {
        assert_eq!(index(HYPERVISOR_CS), 7169);
        assert_eq!(index(FLAT_KERNEL_CS), 7171);
        assert_eq!(rpl(FLAT_KERNEL_CS), 1);
        assert_eq!(index(FLAT_KERNEL_DS), 7172);
        assert_eq!(rpl(FLAT_USER_CS), 3);
        assert_eq!(index(FLAT_USER_DS), 7173);
        assert_eq!(index(FLAT_USER_CS), 7174);
        assert_eq!(index(TSS_SELECTOR), 7176);
        assert!(is_reserved(FLAT_KERNEL_CS) && !is_reserved(0x10));
    }
}
