//! Memory devices can reach, and the `virtio-drivers` HAL over it.
//!
//! The pool is [`EXTENTS`] machine-contiguous extents of [`EXTENT_PAGES`] pages below 4 GiB,
//! got by exchanging single frames (`XENMEM_exchange`) and mapped at a static area of this
//! image; allocations never cross an extent. A buffer the HAL is asked to share is given to
//! the device directly when its pages are machine-contiguous pool or heap pages, and
//! bounced through the pool otherwise (copied in before, out after, as swiotlb-xen).

use core::ptr::NonNull;
use pv_runtime::hypercall as hc;
use pv_runtime::mm::GuestMem;
use virtio_drivers::{BufferDirection, Hal, PhysAddr};

/// Pages per extent (order 6: the largest exchange the hypervisor does).
pub const EXTENT_PAGES: usize = 64;
pub const EXTENTS: usize = 4;
const POOL_PAGES: usize = EXTENT_PAGES * EXTENTS;
/// Pages of the MMIO window (BARs mapped uncached).
const MMIO_PAGES: usize = 32;

use pv_runtime::mm::{A, D, P, RW};
const PWT: u64 = 1 << 3;
const PCD: u64 = 1 << 4;
const NX: u64 = 1 << 63;
const UVMF_INVLPG: u64 = 2;

#[repr(C, align(4096))]
struct Pages<const N: usize>([[u8; 4096]; N]);

static mut POOL: Pages<POOL_PAGES> = Pages([[0; 4096]; POOL_PAGES]);
static mut MMIO: Pages<MMIO_PAGES> = Pages([[0; 4096]; MMIO_PAGES]);

fn pool_va(page: usize) -> u64 {
    core::ptr::addr_of!(POOL) as u64 + 4096 * page as u64
}

fn mmio_va(page: usize) -> u64 {
    core::ptr::addr_of!(MMIO) as u64 + 4096 * page as u64
}

/// A buffer bounced for the device: where it really is.
#[derive(Copy, Clone, Debug)]
struct Bounce {
    paddr: u64,
    first: usize,
    pages: usize,
}

struct State {
    /// First machine frame of each extent (0: not there).
    extent: [u64; EXTENTS],
    used: [bool; POOL_PAGES],
    bounces: alloc::vec::Vec<Bounce>,
    /// Machine frame mapped at each MMIO window page (0: free).
    mmio: [u64; MMIO_PAGES],
}

/// This domain's start_info (its P2M list), from [`init`].
static SI: spin::Once<&'static pv_runtime::StartInfo> = spin::Once::new();

static STATE: spin::Mutex<State> =
    spin::Mutex::new(State { extent: [0; EXTENTS], used: [true; POOL_PAGES], bounces: alloc::vec::Vec::new(), mmio: [0; MMIO_PAGES] });

/// Builds the pool: each extent exchanged for frames of `mem` mapped nowhere, then mapped
/// at the pool's pages (whose own frames stay where they are). Returns the extents made;
/// the pool works with fewer, smaller with each one missing.
pub fn init(si: &'static pv_runtime::StartInfo, mem: &mut GuestMem) -> usize {
    SI.call_once(|| si);
    let mut st = STATE.lock();
    // Once: a second caller (another device's driver) finds the pool made.
    let have = st.extent.iter().filter(|&&e| e != 0).count();
    if have != 0 {
        return have;
    }
    let mut made = 0;
    for e in 0..EXTENTS {
        let mut input = [0u64; EXTENT_PAGES];
        let mut pfns = [0u64; EXTENT_PAGES];
        let mut ok = true;
        for k in 0..EXTENT_PAGES {
            match mem.alloc_pfn() {
                Some(p) => {
                    pfns[k] = p;
                    input[k] = mem.mfn(p);
                }
                None => ok = false,
            }
        }
        if !ok {
            break;
        }
        // The extent takes the first PFN's place in the P2M and M2P, the rest of the input
        // PFNs are left without a frame.
        let Ok(first) = hc::exchange_for_extent(&mut input, pfns[0], 32) else { break };
        // The hypervisor's M2P gives frame first + k to PFN pfns[0] + k (the PFNs are
        // consecutive: `alloc_pfn` hands them out in order).
        for k in 0..EXTENT_PAGES {
            if let Some(e) = mem.p2m.get_mut(pfns[0] as usize + k) {
                *e = first + k as u64;
            }
        }
        let mut mapped = true;
        for k in 0..EXTENT_PAGES {
            let page = e * EXTENT_PAGES + k;
            mapped &= hc::update_va_mapping(pool_va(page), (first + k as u64) << 12 | P | RW | A | D | NX, UVMF_INVLPG) == 0;
        }
        if !mapped {
            break;
        }
        st.extent[e] = first;
        for k in 0..EXTENT_PAGES {
            st.used[e * EXTENT_PAGES + k] = false;
        }
        made += 1;
    }
    made
}

/// Pool pages `[first, first + n)` of one extent: free ones, taken.
fn take(st: &mut State, n: usize) -> Option<usize> {
    if n == 0 || n > EXTENT_PAGES {
        return None;
    }
    for e in (0..EXTENTS).filter(|&e| st.extent[e] != 0) {
        let base = e * EXTENT_PAGES;
        let mut run = 0;
        for k in 0..EXTENT_PAGES {
            run = if st.used[base + k] { 0 } else { run + 1 };
            if run == n {
                let first = base + k + 1 - n;
                st.used[first..first + n].iter_mut().for_each(|u| *u = true);
                return Some(first);
            }
        }
    }
    None
}

fn paddr_of_page(st: &State, page: usize) -> u64 {
    (st.extent[page / EXTENT_PAGES] + (page % EXTENT_PAGES) as u64) << 12
}

/// The machine address of `[va, va + len)` if the device can be given it directly: pool
/// pages of one extent, or heap pages that are machine-contiguous.
fn direct(st: &State, va: u64, len: usize) -> Option<u64> {
    let end = va.checked_add(len as u64)?;
    let pool = pool_va(0)..pool_va(POOL_PAGES);
    if pool.contains(&va) && end <= pool.end {
        let (p0, p1) = (((va - pool.start) / 4096) as usize, ((end - 1 - pool.start) / 4096) as usize);
        if p0 / EXTENT_PAGES == p1 / EXTENT_PAGES && st.extent[p0 / EXTENT_PAGES] != 0 {
            return Some(paddr_of_page(st, p0) + (va & 0xFFF));
        }
        return None;
    }
    let heap = pv_heap::range();
    if !(heap.contains(&va) && end <= heap.end) {
        return None;
    }
    let vb = pv_runtime::virt_base();
    let si = *SI.get()?;
    let mfn = |v: u64| pv_runtime::pvio::p2m(si, (v - vb) / 4096);
    let first = mfn(va)?;
    for (i, v) in (va & !0xFFF..end).step_by(4096).enumerate() {
        if mfn(v)? != first + i as u64 {
            return None;
        }
    }
    Some(first << 12 | (va & 0xFFF))
}

/// Maps the BAR range `[paddr, paddr + size)` uncached into the MMIO window (the pages it
/// already has are reused). The hypervisor's refusal (not I/O memory, or its own) or a full
/// window is an error: nothing of the range stays mapped.
pub fn map_mmio(paddr: u64, size: usize) -> Result<u64, i64> {
    let mut st = STATE.lock();
    let end = paddr.checked_add(size.max(1) as u64 - 1).ok_or(-22i64)?;
    let (f0, f1) = (paddr >> 12, end >> 12);
    let n = (f1 - f0 + 1) as usize;
    if n > MMIO_PAGES {
        return Err(-28);
    }
    if let Some(i) = (0..=MMIO_PAGES.saturating_sub(n)).find(|&i| (0..n).all(|k| st.mmio[i + k] == f0 + k as u64)) {
        return Ok(mmio_va(i) + (paddr & 0xFFF));
    }
    let i = (0..=MMIO_PAGES.saturating_sub(n)).find(|&i| (0..n).all(|k| st.mmio[i + k] == 0)).ok_or(-28i64)?;
    for k in 0..n {
        let r = hc::update_va_mapping(mmio_va(i + k), (f0 + k as u64) << 12 | P | RW | A | D | PCD | PWT | NX, UVMF_INVLPG);
        if r != 0 {
            for j in 0..k {
                hc::update_va_mapping(mmio_va(i + j), 0, UVMF_INVLPG);
                st.mmio[i + j] = 0;
            }
            return Err(r);
        }
        st.mmio[i + k] = f0 + k as u64;
    }
    Ok(mmio_va(i) + (paddr & 0xFFF))
}

/// Bytes of requests a driver keeps in flight at most, and the largest request: the bounce
/// pages they could need always fit in the pool beside its queues.
pub const INFLIGHT_BYTES: usize = 384 << 10;
pub const MAX_REQUEST: usize = 128 << 10;

/// Can `[va, va + len)` be shared right now: given to the device directly, or bounced
/// through a free run of pool pages? (The driver asks before queueing, so `share` never
/// finds the pool without room: dom0's driver runs on one thread.)
pub fn shareable(va: u64, len: usize) -> bool {
    let st = STATE.lock();
    if direct(&st, va, len).is_some() {
        return true;
    }
    let n = len.div_ceil(4096);
    (0..EXTENTS).filter(|&e| st.extent[e] != 0).any(|e| {
        let base = e * EXTENT_PAGES;
        let mut run = 0;
        (0..EXTENT_PAGES).any(|k| {
            run = if st.used[base + k] { 0 } else { run + 1 };
            run >= n
        })
    })
}

/// Pool pages free now (for reports).
pub fn free_pages() -> usize {
    let st = STATE.lock();
    st.used.iter().filter(|u| !**u).count()
}

/// The HAL `virtio-drivers` runs on in this domain.
#[derive(Debug)]
pub struct XenHal;

// SAFETY: `dma_alloc` returns zeroed, page-aligned pool memory no other allocation
// overlaps (the page bitmap), mapped for as long as it is allocated; `mmio_phys_to_virt`
// returns window pages mapped to exactly that MMIO range; `share` returns machine addresses
// of memory that holds the buffer's bytes (the buffer itself, or a bounce copy kept until
// `unshare`).
unsafe impl Hal for XenHal {
    fn dma_alloc(pages: usize, _dir: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        let mut st = STATE.lock();
        let Some(first) = take(&mut st, pages) else { return (0, NonNull::dangling()) };
        let va = pool_va(first);
        // SAFETY: the pages were free pool pages, now this allocation's alone, mapped.
        unsafe { core::ptr::write_bytes(va as *mut u8, 0, pages * 4096) };
        (paddr_of_page(&st, first), NonNull::new(va as *mut u8).unwrap_or(NonNull::dangling()))
    }

    unsafe fn dma_dealloc(_paddr: PhysAddr, vaddr: NonNull<u8>, pages: usize) -> i32 {
        let mut st = STATE.lock();
        let first = ((vaddr.as_ptr() as u64).wrapping_sub(pool_va(0)) / 4096) as usize;
        if first + pages > POOL_PAGES {
            return -1;
        }
        st.used[first..first + pages].iter_mut().for_each(|u| *u = false);
        0
    }

    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, size: usize) -> NonNull<u8> {
        // The device layer maps a device's BARs before the transport asks (`blk::probe`),
        // so this finds them; a range it cannot map is a driver bug.
        match map_mmio(paddr, size) {
            Ok(va) => NonNull::new(va as *mut u8).unwrap_or(NonNull::dangling()),
            Err(e) => panic!("MMIO {:#x}+{:#x} cannot be mapped ({})", paddr, size, e),
        }
    }

    unsafe fn share(buffer: NonNull<[u8]>, dir: BufferDirection) -> PhysAddr {
        let va = buffer.as_ptr() as *mut u8 as u64;
        let len = buffer.len();
        let mut st = STATE.lock();
        if let Some(pa) = direct(&st, va, len) {
            return pa;
        }
        let pages = len.div_ceil(4096);
        let Some(first) = take(&mut st, pages) else { panic!("DMA bounce pool exhausted ({} bytes)", len) };
        let paddr = paddr_of_page(&st, first);
        if dir != BufferDirection::DeviceToDriver {
            // SAFETY: the caller's buffer is valid for `len` bytes; the bounce pages are ours.
            unsafe { core::ptr::copy_nonoverlapping(va as *const u8, pool_va(first) as *mut u8, len) };
        } else {
            // What the device does not write comes back as zeroes, not an older request's.
            // SAFETY: the bounce pages are ours.
            unsafe { core::ptr::write_bytes(pool_va(first) as *mut u8, 0, len) };
        }
        st.bounces.push(Bounce { paddr, first, pages });
        paddr
    }

    unsafe fn unshare(paddr: PhysAddr, buffer: NonNull<[u8]>, dir: BufferDirection) {
        let mut st = STATE.lock();
        let Some(i) = st.bounces.iter().position(|b| b.paddr == paddr) else { return };
        let b = st.bounces.swap_remove(i);
        if dir != BufferDirection::DriverToDevice {
            let len = buffer.len().min(b.pages * 4096);
            // SAFETY: as in `share`, the other way.
            unsafe { core::ptr::copy_nonoverlapping(pool_va(b.first) as *const u8, buffer.as_ptr() as *mut u8, len) };
        }
        st.used[b.first..b.first + b.pages].iter_mut().for_each(|u| *u = false);
    }
}
