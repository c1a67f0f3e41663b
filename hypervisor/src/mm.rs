//! Machine memory at boot: the usable-RAM map, the frame allocator, the frame table, the
//! heap and the machine-to-physical table.

use hv_arch::layout::DIRECTMAP_SIZE;
use hv_arch::paging::FrameSource;
use hv_core::frame::{FrameSlot, FrameTable, Owner};
use hv_core::frame_alloc::FrameAllocator;
use hv_core::mem::Mfn;
use hv_arch::physmem::{carve_static, claim_private, M2p, PrivateFrame};
use hv_core::memmap::{Range, RangeSet};

/// Machine memory once the hypervisor runs: a leaf lock (taken last, holding nothing else)
/// over the frame allocator; the frame table and the M2P are reached through `machine`.
static MM: spin::Mutex<Option<Mm>> = spin::Mutex::new(None);

/// Hands boot's memory to the running hypervisor.
pub fn install(mm: Mm) {
    *MM.lock() = Some(mm);
}

/// Runs `f` on the frame allocator (under its lock); `None` before `install`.
pub fn with<R>(f: impl FnOnce(&mut Mm) -> R) -> Option<R> {
    MM.lock().as_mut().map(f)
}

/// The hypervisor heap's fixed part; it also gets [`HEAP_PER_PAGE`] bytes per frame of
/// usable RAM, so that what scales with the machine (a domain builder's table of one word
/// per page of the domain, maptracks, per-domain records) scales with it.
pub const HEAP_BASE: u64 = 4 << 20;
pub const HEAP_PER_PAGE: u64 = 12;

static HEAP_BYTES: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(HEAP_BASE);

/// The heap's size, as [`Mm::init`] chose it.
pub fn heap_size() -> u64 {
    HEAP_BYTES.load(core::sync::atomic::Ordering::Relaxed)
}

pub struct Mm {
    pub alloc: FrameAllocator<&'static mut [u64]>,
    pub ft: &'static FrameTable<&'static [FrameSlot]>,
    pub max_mfn: u64,
    /// RAM frames (owned by anything but `Owner::None`).
    pub ram_pages: u64,
    /// The M2P (read-only to guests at slot 256).
    pub m2p: M2p,
}

impl Mm {
    /// Sets up memory from the firmware's RAM map minus `reserved` (image, boot information,
    /// modules) and the first MiB.
    pub fn init(ram: &RangeSet, reserved: &RangeSet, image: Range) -> Result<Mm, &'static str> {
        let mut usable = ram.clone();
        let too_many = |_| "memory map too fragmented";
        usable.remove(Range::new(0, 1 << 20)).map_err(too_many)?;
        usable.remove(image).map_err(too_many)?;
        for r in reserved.as_slice() {
            usable.remove(*r).map_err(too_many)?;
        }
        usable.page_align();
        let top = ram.as_slice().last().map(|r| r.end).ok_or("no RAM")?.min(DIRECTMAP_SIZE);
        let max_mfn = top.div_ceil(4096);

        // First: which frames are the hypervisor's own (everything not in `usable`).
        hv_arch::physmem::init_private(&mut usable, max_mfn).ok_or("no room for the private-frame bitmap")?;
        let words = max_mfn.div_ceil(64) as usize;
        let bitmap = carve_static::<u64>(&mut usable, words).ok_or("no room for the frame bitmap")?;
        let frames: &'static [FrameSlot] = carve_static::<FrameSlot>(&mut usable, max_mfn as usize)
            .ok_or("no room for the frame table")?;
        // Sized from the memory map: HEAP_BASE plus HEAP_PER_PAGE per usable frame (at most
        // an eighth of what is usable), in whole MiB.
        let usable_bytes = usable.total();
        let heap = (HEAP_BASE + (usable_bytes / 4096) * HEAP_PER_PAGE).min(HEAP_BASE.max(usable_bytes / 8)).next_multiple_of(1 << 20);
        hv_arch::heap::init(&mut usable, heap as usize).ok_or("no room for the heap")?;
        HEAP_BYTES.store(heap, core::sync::atomic::Ordering::Relaxed);
        let m2p = M2p::carve(&mut usable, max_mfn).ok_or("no room for the M2P")?;
        usable.page_align();

        let mut alloc = FrameAllocator::new(bitmap, max_mfn);
        let ft: &'static FrameTable<&'static [FrameSlot]> = alloc::boxed::Box::leak(alloc::boxed::Box::new(FrameTable::new(frames)));
        let mut ram_pages = 0;
        for r in ram.as_slice() {
            for m in Mfn::of(r.start).0..Mfn::of(r.end).0.min(max_mfn) {
                let _ = ft.set_owner(Mfn(m), Owner::Xen);
                ram_pages += 1;
            }
        }
        for r in usable.as_slice() {
            alloc.free_range(Mfn::of(r.start), Mfn::of(r.end));
            for m in Mfn::of(r.start).0..Mfn::of(r.end).0.min(max_mfn) {
                let _ = ft.set_owner(Mfn(m), Owner::Free);
            }
        }
        let mut mm = Mm { alloc, ft, max_mfn, ram_pages, m2p };
        for i in 0..max_mfn {
            mm.set_m2p(Mfn(i), guest_abi::layout::INVALID_M2P_ENTRY);
        }
        hv_arch::physmem::set_limit(max_mfn);
        Ok(mm)
    }

    /// Records M2P[mfn] = pfn.
    pub fn set_m2p(&mut self, mfn: Mfn, pfn: u64) {
        self.m2p.set(mfn, pfn);
    }

    /// Frames still free.
    pub fn free_frames(&self) -> u64 {
        self.alloc.free_frames()
    }
}

impl FrameSource for Mm {
    /// A zeroed frame for the hypervisor's own use.
    fn frame(&mut self) -> Option<PrivateFrame> {
        let m = self.alloc.alloc()?;
        let _ = self.ft.set_owner(m, Owner::Xen);
        claim_private(m, 1)
    }

    fn contiguous(&mut self, n: u64) -> Option<PrivateFrame> {
        let m = self.alloc.alloc_contig(n, 1)?;
        for i in 0..n {
            let _ = self.ft.set_owner(Mfn(m.0 + i), Owner::Xen);
        }
        claim_private(m, n)
    }
}
