//! A heap for PV guests that want `alloc` (dom0): linked_list_allocator's heap over a
//! static region of the guest's image (so it needs no page-table work), handed over by
//! [`init`] before the first allocation. A crate of its own, so that only the guests that
//! link it carry the region.
#![no_std]

use core::sync::atomic::{AtomicBool, Ordering};
use linked_list_allocator::LockedHeap;

/// Bytes of heap.
pub const HEAP_SIZE: usize = 8 << 20;

#[repr(C, align(4096))]
struct Region([u8; HEAP_SIZE]);

static mut REGION: Region = Region([0; HEAP_SIZE]);
static READY: AtomicBool = AtomicBool::new(false);

#[global_allocator]
static HEAP: LockedHeap = LockedHeap::empty();

/// Gives the heap its region (once; later calls do nothing). Allocations before it fail.
pub fn init() {
    if READY.swap(true, Ordering::AcqRel) {
        return;
    }
    // SAFETY: the region is a static nothing else names, handed over exactly once (the
    // flag above), and stays valid for the program's life.
    unsafe { HEAP.lock().init(core::ptr::addr_of_mut!(REGION) as *mut u8, HEAP_SIZE) };
}

/// Bytes of heap not allocated now.
pub fn free() -> usize {
    HEAP.lock().free()
}

/// Bytes of heap in all (0 before [`init`]).
pub fn size() -> usize {
    HEAP.lock().size()
}

/// The heap's addresses (its region of this image, never remapped: the device layer gives
/// devices the machine addresses of heap buffers from the P2M).
pub fn range() -> core::ops::Range<u64> {
    let start = core::ptr::addr_of!(REGION) as u64;
    start..start + HEAP_SIZE as u64
}
