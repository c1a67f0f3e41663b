//! The hypervisor heap: a linked-list allocator over frames reserved at boot.

use linked_list_allocator::LockedHeap;

#[global_allocator]
static HEAP: LockedHeap = LockedHeap::empty();

/// Gives the heap `size` bytes carved from `usable` (see `physmem::carve`). Once only.
pub fn init(usable: &mut hv_core::memmap::RangeSet, size: usize) -> Option<()> {
    static DONE: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);
    if DONE.swap(true, core::sync::atomic::Ordering::SeqCst) {
        return None;
    }
    let pa = crate::physmem::carve(usable, size as u64)?;
    // SAFETY: the range was just carved out of unused RAM for the heap alone and is mapped
    // by the early map and the direct map; `DONE` makes this happen once.
    unsafe { HEAP.lock().init(crate::layout::phys_to_virt(pa) as *mut u8, size) };
    Some(())
}

/// (used, free) bytes.
pub fn usage() -> (usize, usize) {
    let h = HEAP.lock();
    (h.used(), h.free())
}
