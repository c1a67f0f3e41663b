//! Machine memory through the direct map.

use crate::layout::{phys_to_virt, DIRECTMAP_SIZE};
use hv_core::mem::{Mfn, Page, PhysMem};
use hv_core::memmap::{Range, RangeSet};

/// Highest machine frame (exclusive) the direct map covers; set once RAM is known.
static LIMIT: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// Records the end of the direct-mapped RAM (once).
pub fn set_limit(max_mfn: u64) {
    let _ = LIMIT.compare_exchange(0, max_mfn.min(DIRECTMAP_SIZE >> 12), core::sync::atomic::Ordering::Relaxed, core::sync::atomic::Ordering::Relaxed);
}

/// Is `mfn` RAM covered by the direct map?
#[inline]
pub fn is_mapped(mfn: Mfn) -> bool {
    mfn.0 < LIMIT.load(core::sync::atomic::Ordering::Relaxed)
}

/// The direct map as a [`PhysMem`]. Only frames below the RAM limit are reachable; holes in
/// RAM are mapped too, but only RAM frames are ever handed to this type by the frame table.
pub struct DirectMap;

impl PhysMem for DirectMap {
    fn frame(&self, mfn: Mfn) -> Option<&Page> {
        if !is_mapped(mfn) {
            return None;
        }
        // SAFETY: the direct map covers every frame below the limit for the hypervisor's
        // lifetime; frames are plain bytes with no validity invariants.
        Some(unsafe { &*(phys_to_virt(mfn.maddr()) as *const Page) })
    }

    fn frame_mut(&mut self, mfn: Mfn) -> Option<&mut Page> {
        if !is_mapped(mfn) {
            return None;
        }
        // SAFETY: as above. Exclusive access: the hypervisor is single-threaded per frame
        // operation and `&mut self` serialises users of this handle.
        Some(unsafe { &mut *(phys_to_virt(mfn.maddr()) as *mut Page) })
    }
}

/// Takes `bytes` (rounded up to pages) from the lowest range of `usable` below 4 GiB with
/// room, and returns its machine address. Boot time only: `usable` must list RAM nobody uses.
pub fn carve(usable: &mut RangeSet, bytes: u64) -> Option<u64> {
    let bytes = bytes.div_ceil(4096) * 4096;
    let r = *usable.as_slice().iter().find(|r| r.len() >= bytes && r.start + bytes <= 1 << 32)?;
    usable.remove(Range::new(r.start, r.start + bytes)).ok()?;
    Some(r.start)
}

/// Carves memory for `count` values of `T` from `usable` (as [`carve`]) and returns them as
/// a `'static` slice with every element set to `T::default()`.
pub fn carve_static<T: Default>(usable: &mut RangeSet, count: usize) -> Option<&'static mut [T]> {
    assert!(core::mem::align_of::<T>() <= 4096);
    let bytes = (count as u64).checked_mul(core::mem::size_of::<T>() as u64)?;
    let pa = carve(usable, bytes.max(1))?;
    let p = phys_to_virt(pa) as *mut T;
    for i in 0..count {
        // SAFETY: the range was just removed from `usable`, so it is RAM nobody else uses; the
        // early map (and later the direct map) covers it below 4 GiB; page alignment suits T.
        unsafe { p.add(i).write(T::default()) };
    }
    // SAFETY: as above; every element is initialised and the memory is never handed out again.
    Some(unsafe { core::slice::from_raw_parts_mut(p, count) })
}

/// Writes a u64 at a direct-map address the hypervisor owns (e.g. its M2P backing).
pub fn write_u64(va: u64, v: u64) {
    assert!(va >= crate::layout::DIRECTMAP_BASE && va.is_multiple_of(8));
    // SAFETY: callers pass direct-map addresses of hypervisor-owned RAM (checked to be in
    // the direct map and aligned above).
    unsafe { (va as *mut u64).write_volatile(v) }
}

/// Reads a u64 at a direct-map address.
pub fn read_u64(va: u64) -> u64 {
    assert!(va >= crate::layout::DIRECTMAP_BASE && va.is_multiple_of(8));
    // SAFETY: as for `write_u64`.
    unsafe { (va as *const u64).read_volatile() }
}
