//! The hypervisor's virtual address layout. All of it lies in L4 slots 256–271.
//!
//! | slot | range start | use | in guest root |
//! |---|---|---|---|
//! | 256 | `0xFFFF8000_00000000` | read-only M2P (Xen's address) | yes, read-only |
//! | 259 | `0xFFFF8180_00000000` | this CPU's private data and stacks | no |
//! | 260 | `0xFFFF8200_00000000` | this CPU's entry area | yes |
//! | 261 | `0xFFFF8280_00000000` | local and I/O APICs (uncached) | no |
//! | 261 | `0xFFFF8288_00000000` | the screen (VGA text or framebuffer, uncached) | no |
//! | 261 | `0xFFFF82D0_40000000` | hypervisor image (Xen's text address) | no |
//! | 262–271 | `0xFFFF8300_00000000` | direct map of RAM | no |
//!
//! Slots 259 and 260 are per CPU: every CPU's roots point them at that CPU's own tables, so
//! the same fixed virtual address names each CPU's own data.

/// Physical load address of the image (its first section).
pub const PHYS_BASE: u64 = 0x10_0000;
/// The local APIC's registers (uncached), in slot 261 below the image.
pub const LAPIC_VA: u64 = 0xFFFF_8280_0000_0000;

/// The screen (VGA text memory or the framebuffer, its first page's offset kept), in slot
/// 261 above the APICs, at most `SCREEN_MAX` bytes.
pub const SCREEN_VA: u64 = 0xFFFF_8288_0000_0000;
pub const SCREEN_MAX: u64 = 64 << 20;

/// Virtual address = physical address + this, for the image.
pub const IMAGE_BASE: u64 = 0xFFFF_82D0_4000_0000;
/// Direct map of machine memory.
pub const DIRECTMAP_BASE: u64 = 0xFFFF_8300_0000_0000;
/// Size of the direct map window (slots 262–271).
pub const DIRECTMAP_SIZE: u64 = 10 << 39;
/// Read-only M2P.
pub const M2P_BASE: u64 = guest_abi::layout::MACH2PHYS_VIRT_START;

/// L4 slots.
pub const SLOT_M2P: usize = 256;
pub const SLOT_PERCPU: usize = 259;
pub const SLOT_ENTRY: usize = 260;
pub const SLOT_IMAGE: usize = 261;
pub const SLOT_DIRECTMAP: usize = 262;
pub const SLOT_DIRECTMAP_END: usize = 272;

/// This CPU's private area (hypervisor root only).
pub const PERCPU_BASE: u64 = 0xFFFF_8180_0000_0000;
/// The `PerCpu` record.
pub const PERCPU_DATA: u64 = PERCPU_BASE;
/// Hypervisor stack (below it an unmapped guard page).
pub const HV_STACK_PAGES: u64 = 16;
pub const HV_STACK_BOTTOM: u64 = PERCPU_BASE + 0x1_0000;
pub const HV_STACK_TOP: u64 = HV_STACK_BOTTOM + HV_STACK_PAGES * 4096;

/// This CPU's entry area (both roots). Read-only except the stacks.
pub const ENTRY_BASE: u64 = 0xFFFF_8200_0000_0000;
/// GDT: 16 pages of address space; pages 0–13 (guest part) read the shared zero page,
/// page 14 is the reserved page with the hypervisor's descriptors.
pub const ENTRY_GDT: u64 = ENTRY_BASE;
pub const ENTRY_IDT: u64 = ENTRY_BASE + 0x1_0000;
/// TSS with its full I/O bitmap (3 pages).
pub const ENTRY_TSS: u64 = ENTRY_BASE + 0x1_1000;
pub const TSS_PAGES: u64 = 3;
/// Constants the entry stubs need before they switch CR3 (see `entry::EntryRo`).
pub const ENTRY_RO: u64 = ENTRY_BASE + 0x1_4000;
/// The entry text (an alias of the image's `.entry.text`).
pub const ENTRY_TEXT: u64 = ENTRY_BASE + 0x2_0000;
pub const ENTRY_TEXT_MAX_PAGES: u64 = 4;
/// The entry stack, TSS.RSP0 (guard page below).
pub const ENTRY_STACK: u64 = ENTRY_BASE + 0x3_0000;
pub const ENTRY_STACK_TOP: u64 = ENTRY_STACK + 0x1000;
/// IST stacks, each `IST_PAGES` pages with a guard page below: NMI, #DF, #MC, #DB.
pub const IST_PAGES: u64 = 4;
pub const ENTRY_IST_BASE: u64 = ENTRY_BASE + 0x4_0000;
pub const NR_IST: usize = 4;

/// Lowest mapped page of IST stack `n` (1-based, as in the TSS); the page below is a guard.
pub const fn ist_bottom(n: usize) -> u64 {
    ENTRY_IST_BASE + (n as u64 - 1) * 0x1_0000 + 0x1000
}

/// The guest's LDT, mapped read-only from its frames by `MMUEXT_SET_LDT` (16 pages = 8192
/// descriptors).
pub const ENTRY_LDT: u64 = ENTRY_BASE + 0x8_0000;
pub const LDT_PAGES: u64 = 16;

/// Top of IST stack `n` (1-based, as in the TSS).
pub const fn ist_top(n: usize) -> u64 {
    ist_bottom(n) + IST_PAGES * 0x1000
}

/// Direct-map address of a machine address.
pub const fn phys_to_virt(pa: u64) -> u64 {
    DIRECTMAP_BASE + pa
}

/// Physical address of an image virtual address.
pub const fn image_to_phys(va: u64) -> u64 {
    va - IMAGE_BASE
}
