//! GDT, IDT and TSS contents, and loading them.
//!
//! Each CPU's tables live in frames mapped read-only in its entry area (`layout`); the
//! hypervisor writes them through the direct map. All descriptors have the accessed bit
//! preset so the CPU never needs to write the read-only GDT.

use crate::layout::{self, ENTRY_GDT, ENTRY_IDT};
use guest_abi::selectors::{self, FIRST_RESERVED_GDT_ENTRY};

/// Descriptors of the reserved GDT page, by entry index minus 7168.
pub fn reserved_gdt(tss_va: u64, tss_limit: u32) -> [u64; 12] {
    let mut g = [0u64; 12];
    g[1] = 0x00AF_9B00_0000_FFFF; // hypervisor code64, DPL0
    g[2] = 0x00CF_9300_0000_FFFF; // hypervisor data, DPL0
    g[3] = 0x00AF_BB00_0000_FFFF; // guest kernel code64, DPL1
    g[4] = 0x00CF_B300_0000_FFFF; // guest kernel data, DPL1
    g[5] = 0x00CF_F300_0000_FFFF; // guest user data, DPL3
    g[6] = 0x00AF_FB00_0000_FFFF; // guest user code64, DPL3
    // 64-bit TSS descriptor (available; `ltr` marks it busy).
    let lim = tss_limit as u64;
    g[8] = (lim & 0xFFFF)
        | ((tss_va & 0xFF_FFFF) << 16)
        | (0x89u64 << 40)
        | (((lim >> 16) & 0xF) << 48)
        | (((tss_va >> 24) & 0xFF) << 56);
    g[9] = tss_va >> 32;
    g
}

/// GDT limit: through the LDT descriptor.
pub const GDT_LIMIT: u16 = ((FIRST_RESERVED_GDT_ENTRY + 12) * 8 - 1) as u16;

/// The 64-bit TSS header.
#[repr(C, packed)]
#[derive(Copy, Clone, Debug, Default)]
pub struct Tss {
    pub _r0: u32,
    pub rsp: [u64; 3],
    pub _r1: u64,
    pub ist: [u64; 7],
    pub _r2: u64,
    pub _r3: u16,
    pub iomap_base: u16,
}

pub const TSS_HEADER: usize = core::mem::size_of::<Tss>();
const _: () = assert!(TSS_HEADER == 104);
/// Header + I/O bitmap for 65536 ports + the terminating 0xFF byte.
pub const TSS_LIMIT: u32 = (TSS_HEADER + 8192 + 1 - 1) as u32;

/// An IDT gate: interrupt gate (IF cleared) to `handler` at DPL `dpl`, IST `ist`.
pub fn idt_gate(handler: u64, dpl: u8, ist: u8) -> [u64; 2] {
    let lo = (handler & 0xFFFF)
        | ((selectors::HYPERVISOR_CS as u64) << 16)
        | ((ist as u64 & 7) << 32)
        | ((0x8E | ((dpl as u64 & 3) << 5)) << 40)
        | (((handler >> 16) & 0xFFFF) << 48);
    [lo, handler >> 32]
}

/// A trap gate (IF unchanged) into guest code: `sel` must be a ring-1 code selector.
pub fn guest_trap_gate(handler: u64, sel: u16, dpl: u8) -> [u64; 2] {
    let lo = (handler & 0xFFFF)
        | ((sel as u64) << 16)
        | ((0x8F | ((dpl as u64 & 3) << 5)) << 40)
        | (((handler >> 16) & 0xFFFF) << 48);
    [lo, handler >> 32]
}

/// Loads this CPU's descriptor tables: first the GDT through the writable alias at
/// `writable_base` (so `ltr` can mark the TSS busy), then the read-only entry-area GDT and
/// IDT, and reloads the segment registers.
///
/// # Safety
/// The entry-area GDT/IDT/TSS must be mapped and filled, and `writable_base` must be a
/// writable mapping whose page `FIRST_RESERVED_GDT_PAGE` is the reserved GDT page.
pub unsafe fn load(writable_base: u64) {
    use x86_64::instructions::tables::{lgdt, lidt, load_tss};
    use x86_64::structures::DescriptorTablePointer;
    use x86_64::VirtAddr;
    let ptr = |limit: u16, base: u64| DescriptorTablePointer { limit, base: VirtAddr::new_truncate(base) };
    let (rw, ro, idt) = (ptr(GDT_LIMIT, writable_base), ptr(GDT_LIMIT, ENTRY_GDT), ptr(4095, ENTRY_IDT));
    // SAFETY: guaranteed by the caller; the selectors exist in the reserved page.
    unsafe {
        lgdt(&rw);
        load_tss(x86_64::structures::gdt::SegmentSelector(selectors::TSS_SELECTOR));
        lgdt(&ro);
        lidt(&idt);
        use x86_64::instructions::segmentation::{Segment, CS, DS, ES, SS};
        use x86_64::structures::gdt::SegmentSelector;
        CS::set_reg(SegmentSelector(selectors::HYPERVISOR_CS));
        for set in [DS::set_reg, ES::set_reg, SS::set_reg] {
            set(SegmentSelector(selectors::HYPERVISOR_DS));
        }
    }
    let _ = layout::ENTRY_TSS;
}
