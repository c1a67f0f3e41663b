//! Guest-side memory management: a frame allocator over the P2M, and page-table building
//! through validated hypercalls (batched `mmu_update`s inside `multicall`s).
//!
//! The bootstrap region is mapped 1:1 from `VIRT_BASE`; PFNs past its end are free RAM the
//! guest may use as new page tables or give back to the hypervisor.

use crate::hypercall::{self as hc, MmuUpdate, MmuextOp, MulticallEntry};
use crate::StartInfo;
use guest_abi::hypercall as nr;

pub const P: u64 = 1;
pub const RW: u64 = 2;
pub const A: u64 = 1 << 5;
pub const D: u64 = 1 << 6;

/// `MMUEXT_*` numbers used here.
pub const PIN_L4: u32 = 3;
pub const UNPIN: u32 = 4;
pub const NEW_BASEPTR: u32 = 5;
pub const CLEAR_PAGE: u32 = 16;
/// `MMU_MACHPHYS_UPDATE`.
pub const MACHPHYS_UPDATE: u64 = 1;

/// The domain's memory as the guest sees it.
pub struct GuestMem {
    pub virt_base: u64,
    /// P2M list (PFN → MFN), mapped in the bootstrap region.
    pub p2m: &'static mut [u64],
    /// First PFN past the bootstrap region (not mapped by the bootstrap tables).
    pub region_end_pfn: u64,
    /// Next free PFN for [`GuestMem::alloc_pfn`].
    next_pfn: u64,
    /// PFNs from here up are the balloon's (given back to the hypervisor): `p2m.len()`
    /// while nothing is ballooned ([`crate::balloon`]).
    pub(crate) limit: u64,
}

impl GuestMem {
    /// The guest's memory from its start_info (call once: it hands out the P2M list).
    pub fn new(si: &StartInfo, virt_base: u64) -> GuestMem {
        // SAFETY: the builder maps the P2M list writable at `mfn_list` for `nr_pages` entries
        // (Xen's start-of-day contract), and nothing else in the runtime refers to it.
        let p2m = unsafe { core::slice::from_raw_parts_mut(si.mfn_list as *mut u64, si.nr_pages as usize) };
        let region_end_pfn = crate::pvio::region_end_pfn(si);
        GuestMem { virt_base, p2m, region_end_pfn, next_pfn: region_end_pfn, limit: si.nr_pages }
    }

    /// A PFN past the bootstrap region, never handed out before. Its frame is zeroed with
    /// `MMUEXT_CLEAR_PAGE`.
    pub fn alloc_pfn(&mut self) -> Option<u64> {
        if self.next_pfn >= self.limit {
            return None;
        }
        let pfn = self.next_pfn;
        self.next_pfn += 1;
        (hc::mmuext1(CLEAR_PAGE, self.p2m[pfn as usize], 0) == 0).then_some(pfn)
    }

    /// [`GuestMem::alloc_pfn`], returning the frame's MFN.
    pub fn alloc_mfn(&mut self) -> Option<u64> {
        let pfn = self.alloc_pfn()?;
        Some(self.mfn(pfn))
    }

    pub fn mfn(&self, pfn: u64) -> u64 {
        self.p2m[pfn as usize]
    }

    /// Makes the P2M `pages` entries long (the domain's maximum, so the balloon may grow it
    /// that far), or as long as the builder left room for: in Xen's layout `start_info` follows the P2M
    /// list, so the room is there when the longer list still ends before `si`. The entries
    /// past the domain's pages hold no frame until the balloon fills them. The P2M's
    /// length after.
    pub fn widen(&mut self, si: &StartInfo, pages: u64) -> u64 {
        let si_va = si as *const StartInfo as u64;
        // As far as the room goes (a maximum raised after the build finds less room).
        let pages = pages.min(si_va.saturating_sub(si.mfn_list) / 8);
        if pages > self.p2m.len() as u64 && si.mfn_list < si_va {
            // SAFETY: the builder maps the P2M list writable at `mfn_list`, and everything
            // from there to `start_info` is the list's (its pages, Xen's start-of-day
            // layout), so `pages` entries are mapped for the guest's lifetime. The old
            // slice is replaced here and not used again; nothing else refers to the list.
            self.p2m = unsafe { core::slice::from_raw_parts_mut(si.mfn_list as *mut u64, pages as usize) };
        }
        self.p2m.len() as u64
    }

    /// Frames left for [`GuestMem::alloc_pfn`].
    pub fn free_pfns(&self) -> u64 {
        self.limit.saturating_sub(self.next_pfn)
    }
}

/// Batches PTE writes: up to `REQS` per `mmu_update`, `CALLS` calls per `multicall`.
pub struct Batch {
    reqs: [[MmuUpdate; Batch::REQS]; Batch::CALLS],
    n: usize,
    pub updates: u64,
    pub multicalls: u64,
    pub failed: u64,
}

impl Batch {
    pub const REQS: usize = 128;
    pub const CALLS: usize = 8;

    pub const fn new() -> Batch {
        Batch { reqs: [[MmuUpdate { ptr: 0, val: 0 }; Batch::REQS]; Batch::CALLS], n: 0, updates: 0, multicalls: 0, failed: 0 }
    }

    /// Queues "write `val` at machine address `maddr`".
    pub fn push(&mut self, maddr: u64, val: u64) {
        if self.n == Self::REQS * Self::CALLS {
            self.flush();
        }
        self.reqs[self.n / Self::REQS][self.n % Self::REQS] = MmuUpdate { ptr: maddr, val };
        self.n += 1;
    }

    /// Issues everything queued as one multicall of `mmu_update`s.
    pub fn flush(&mut self) {
        if self.n == 0 {
            return;
        }
        let mut done = [0u32; Batch::CALLS];
        let mut mc = [MulticallEntry::default(); Batch::CALLS];
        let calls = self.n.div_ceil(Self::REQS);
        for c in 0..calls {
            let len = (self.n - c * Self::REQS).min(Self::REQS);
            mc[c] = MulticallEntry {
                op: nr::MMU_UPDATE,
                result: 0,
                args: [self.reqs[c].as_ptr() as u64, len as u64, &mut done[c] as *mut u32 as u64, hc::SELF, 0, 0],
            };
        }
        hc::multicall(&mut mc[..calls]);
        self.failed += mc[..calls].iter().filter(|e| e.result != 0).count() as u64;
        self.updates += self.n as u64;
        self.multicalls += 1;
        self.n = 0;
    }
}

impl Default for Batch {
    fn default() -> Self {
        Batch::new()
    }
}

/// Builds a fresh 4-level hierarchy mapping `[va, va + pages * 4096)` onto PFNs from
/// `first_pfn`, read-only for PFNs in `ro_pfns`, into frames from `mem`. Returns the new
/// L4's MFN and the number of table frames used. Tables are plain memory until pinned.
pub fn build_tables(
    mem: &mut GuestMem,
    batch: &mut Batch,
    va: u64,
    first_pfn: u64,
    pages: u64,
    ro_pfns: core::ops::Range<u64>,
) -> Option<(u64, u64)> {
    let l4_pfn = mem.alloc_pfn()?;
    let l4 = mem.mfn(l4_pfn);
    let mut used = 1;
    // Current tables at levels 3, 2, 1 and the index range they cover.
    let mut cur = [(u64::MAX, 0u64); 4];
    for i in 0..pages {
        let v = va + i * 4096;
        let mut parent = l4;
        for level in (2..=4u32).rev() {
            let span_shift = 12 + 9 * (level - 1);
            let key = v >> span_shift;
            let slot = (level - 1) as usize;
            if cur[slot].0 != key {
                let t_pfn = mem.alloc_pfn()?;
                let t = mem.mfn(t_pfn);
                used += 1;
                let idx = (v >> span_shift) & 511;
                batch.push((parent << 12) + idx * 8, (t << 12) | P | RW | A);
                cur[slot] = (key, t);
            }
            parent = cur[slot].1;
        }
        let pfn = first_pfn + i;
        let flags = if ro_pfns.contains(&pfn) { P | A } else { P | RW | A | D };
        batch.push((parent << 12) + ((v >> 12) & 511) * 8, (mem.mfn(pfn) << 12) | flags);
    }
    batch.flush();
    Some((l4, used))
}

/// Pins `l4` and makes it the current root.
pub fn switch_root(l4: u64) -> i64 {
    let ops = [
        MmuextOp { cmd: PIN_L4, _pad: 0, arg1: l4, arg2: 0 },
        MmuextOp { cmd: NEW_BASEPTR, _pad: 0, arg1: l4, arg2: 0 },
    ];
    hc::mmuext_op(&ops).0
}

/// `shared_info` mapped into the guest (see [`map_shared_info`]).
pub struct SharedInfoMap {
    va: u64,
}

/// Maps the domain's `shared_info` page at `va` (a page whose L1 exists) with
/// `update_va_mapping`, as Xen guests do at boot.
pub fn map_shared_info(si: &StartInfo, va: u64) -> Result<SharedInfoMap, i64> {
    match hc::update_va_mapping(va, si.shared_info | P | RW | A | D, 2) {
        0 => Ok(SharedInfoMap { va }),
        e => Err(e),
    }
}

impl SharedInfoMap {
    pub fn va(&self) -> u64 {
        self.va
    }

    /// vCPU `n`'s `evtchn_upcall_mask`.
    pub fn upcall_mask(&self, vcpu: usize) -> u8 {
        // SAFETY: the page is mapped at `va` for as long as this value exists (nothing in
        // the runtime unmaps it); the offset is inside the page.
        unsafe { ((self.va + guest_abi::shared_info::upcall_mask_offset(vcpu) as u64) as *const u8).read_volatile() }
    }
}

/// The descriptor the CPU sees at GDT entry `i` (the entry-area GDT is readable from ring 1).
pub fn gdt_entry(i: usize) -> u64 {
    const ENTRY_GDT: u64 = 0xFFFF_8200_0000_0000;
    assert!(i < 8192);
    // SAFETY: the hypervisor maps its per-CPU GDT window read-only in every guest root.
    unsafe { ((ENTRY_GDT + 8 * i as u64) as *const u64).read_volatile() }
}

/// Loads `sel` into DS and back to the null selector; false if the load faulted.
pub fn try_load_ds(sel: u16) -> bool {
    crate::probe!("mov ds, {s:x}", "xor eax, eax", "mov ds, ax"; s = in(reg) sel).is_none()
}
