//! What grant tables need below the hypercalls: a domain's shared v1 entries as the
//! hypervisor reaches them ([`Entries`]), and the machine-wide budget for maptracks.

use core::sync::atomic::{AtomicUsize, Ordering};
use guest_abi::grant::*;
use hv_arch::physmem::DirectMap;
use hv_core::grant::{Mapping, SharedEntries};
use hv_core::mem::{Mfn, PhysMem};

/// A domain's shared v1 entries: its grant frames, reached through the direct map with
/// atomic accesses only (the guest writes them concurrently).
pub struct Entries<'a>(pub &'a [Mfn]);

impl Entries<'_> {
    fn at(&self, r: u32) -> Option<(Mfn, usize)> {
        let f = *self.0.get((r / ENTRIES_PER_FRAME_V1) as usize)?;
        Some((f, (r % ENTRIES_PER_FRAME_V1) as usize))
    }
}

impl SharedEntries for Entries<'_> {
    fn entries(&self) -> u32 {
        self.0.len() as u32 * ENTRIES_PER_FRAME_V1
    }

    fn read(&self, r: u32) -> Option<(u16, u16, u32)> {
        let (f, i) = self.at(r)?;
        let w = DirectMap.read_u64(f, i)?;
        Some((w as u16, (w >> 16) as u16, (w >> 32) as u32))
    }

    fn cas_flags(&self, r: u32, old: u16, new: u16) -> bool {
        self.at(r).and_then(|(f, i)| DirectMap.cas_u16(f, i * ENTRY_V1_SIZE, old, new)).is_some_and(|r| r.is_ok())
    }

    fn clear_flags(&self, r: u32, bits: u16) {
        if let Some((f, i)) = self.at(r) {
            DirectMap.fetch_clear_u16(f, i * ENTRY_V1_SIZE, bits);
        }
    }

    fn write(&self, r: u32, (flags, dom, frame): (u16, u16, u32)) {
        if let Some((f, i)) = self.at(r) {
            DirectMap.write_u64(f, i, u64::from(flags) | u64::from(dom) << 16 | u64::from(frame) << 32);
        }
    }
}

/// Maptrack chunks all domains may hold at once: a quarter of the hypervisor heap, so that
/// no guest can exhaust it by mapping grants.
const MAPTRACK_CHUNKS: usize = crate::mm::HEAP_SIZE as usize / 4 / (hv_core::grant::MAPTRACK_CHUNK * core::mem::size_of::<Option<Mapping>>());
static CHUNKS_USED: AtomicUsize = AtomicUsize::new(0);

/// May a maptrack grow by a chunk?
pub fn maptrack_grow() -> bool {
    CHUNKS_USED.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < MAPTRACK_CHUNKS).then_some(n + 1)).is_ok()
}

/// Gives back `n` chunks of the budget (a maptrack that went, with its domain).
pub fn maptrack_release(n: usize) {
    let _ = CHUNKS_USED.fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| Some(u.saturating_sub(n)));
}
