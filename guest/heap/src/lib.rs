//! A heap for PV guests that want `alloc` (dom0): a global allocator over a static region
//! of the guest's image (so it needs no page-table work), set up by the first allocation.
//! A crate of its own, so that only the guests that link it carry the region.
#![no_std]

use linked_list_allocator::LockedHeap;

/// Bytes of heap.
pub const HEAP_SIZE: usize = 4 << 20;

#[repr(C, align(4096))]
struct Region([u8; HEAP_SIZE]);

static mut REGION: Region = Region([0; HEAP_SIZE]);

struct Heap {
    inner: LockedHeap,
    ready: core::sync::atomic::AtomicBool,
}

// SAFETY: every allocation goes through the spin-locked heap; it is initialised, over the
// static region that nothing else uses, exactly once (the first caller), before any use.
unsafe impl core::alloc::GlobalAlloc for Heap {
    unsafe fn alloc(&self, layout: core::alloc::Layout) -> *mut u8 {
        self.init();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { self.inner.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: core::alloc::Layout) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { self.inner.dealloc(ptr, layout) }
    }
}

impl Heap {
    fn init(&self) {
        use core::sync::atomic::Ordering;
        if self.ready.load(Ordering::Acquire) {
            return;
        }
        let mut h = self.inner.lock();
        if !self.ready.load(Ordering::Relaxed) {
            // SAFETY: the region is static, used by nothing else, and handed over once
            // (under the heap's lock, the flag checked again inside it).
            unsafe { h.init(core::ptr::addr_of_mut!(REGION) as *mut u8, HEAP_SIZE) };
            self.ready.store(true, Ordering::Release);
        }
    }
}

#[global_allocator]
static HEAP: Heap = Heap { inner: LockedHeap::empty(), ready: core::sync::atomic::AtomicBool::new(false) };
