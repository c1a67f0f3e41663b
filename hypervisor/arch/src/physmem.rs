//! Machine memory through the direct map, with an honest boundary.
//!
//! Every frame is either **private** (the hypervisor's own: image, boot information and
//! modules, the first MiB, everything carved at boot, frames it took for its own tables and
//! stacks) or not (guest and free frames). Private frames may back Rust objects; the others
//! never do. A bitmap records which is which ([`init_private`]); frames only ever become
//! private, never the other way.
//!
//! - [`DirectMap`] reaches non-private frames only, and only by copies (volatile, word by
//!   word): no Rust reference to guest memory is ever made, so a guest writing its pages on
//!   another CPU races with nothing in Rust's model, and two handles alias nothing.
//!   Pages shared with a guest that both sides update (event bits, `vcpu_info`) are changed
//!   with atomic byte operations.
//! - [`PrivateFrame`] is the capability to a frame the hypervisor took for itself: only
//!   [`claim_private`] makes one, from a frame that was not private (so no Rust object lives
//!   there), zeroed. The page-table builders take these, never a bare MFN.
//! - [`M2p`] is the machine-to-physical table carved at boot; it writes only inside itself.

use crate::layout::{phys_to_virt, DIRECTMAP_SIZE};
use core::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use hv_core::mem::{Mfn, PhysMem};
use hv_core::memmap::{Range, RangeSet};

/// Highest machine frame (exclusive) the direct map covers; set once RAM is known.
static LIMIT: AtomicU64 = AtomicU64::new(0);
/// The private-frame bitmap (direct-map address, words) once [`init_private`] ran.
static PRIVATE: AtomicU64 = AtomicU64::new(0);
static PRIVATE_WORDS: AtomicU64 = AtomicU64::new(0);

/// Records the end of the direct-mapped RAM (once).
pub fn set_limit(max_mfn: u64) {
    let _ = LIMIT.compare_exchange(0, max_mfn.min(DIRECTMAP_SIZE >> 12), Ordering::Relaxed, Ordering::Relaxed);
}

/// Is `mfn` RAM covered by the direct map?
#[inline]
pub fn is_mapped(mfn: Mfn) -> bool {
    mfn.0 < LIMIT.load(Ordering::Relaxed)
}

fn private_word(mfn: Mfn) -> Option<&'static AtomicU64> {
    let base = PRIVATE.load(Ordering::Acquire);
    let w = mfn.0 / 64;
    if base == 0 || w >= PRIVATE_WORDS.load(Ordering::Relaxed) {
        return None;
    }
    // SAFETY: the bitmap was carved for this purpose alone by `init_private` (private itself,
    // so nothing else reaches it) and covers `PRIVATE_WORDS` words.
    Some(unsafe { AtomicU64::from_ptr((base + 8 * w) as *mut u64) })
}

/// Is `mfn` private (or beyond the bitmap, which counts as private)?
pub fn is_private(mfn: Mfn) -> bool {
    private_word(mfn).is_none_or(|w| w.load(Ordering::Relaxed) & (1 << (mfn.0 % 64)) != 0)
}

/// Marks `mfn` private; returns whether it was not private before.
fn mark_private(mfn: Mfn) -> bool {
    match private_word(mfn) {
        Some(w) => w.fetch_or(1 << (mfn.0 % 64), Ordering::AcqRel) & (1 << (mfn.0 % 64)) == 0,
        None => false,
    }
}

/// Sets up the private-frame bitmap for `max_mfn` frames with storage carved from `usable`,
/// and marks private: every frame that is not in `usable` (the first MiB, the image, boot
/// information and modules, holes) and the bitmap itself. Once, before any other carve.
pub fn init_private(usable: &mut RangeSet, max_mfn: u64) -> Option<()> {
    if PRIVATE.load(Ordering::Acquire) != 0 {
        return None;
    }
    let words = max_mfn.div_ceil(64).max(1);
    let r = find_range(usable, words * 8)?;
    usable.remove(r).ok()?;
    let base = phys_to_virt(r.start);
    // Everything private to start with, then the usable ranges (now without the bitmap) cleared.
    for i in 0..words {
        // SAFETY: the range was just removed from `usable`: RAM nobody uses, direct-mapped
        // (below 4 GiB, in the early map too).
        unsafe { ((base + 8 * i) as *mut u64).write_volatile(u64::MAX) };
    }
    PRIVATE_WORDS.store(words, Ordering::Relaxed);
    PRIVATE.store(base, Ordering::Release);
    for u in usable.as_slice() {
        for m in Mfn::of(u.start + 0xFFF).0..Mfn::of(u.end).0.min(max_mfn) {
            if let Some(w) = private_word(Mfn(m)) {
                w.fetch_and(!(1 << (m % 64)), Ordering::AcqRel);
            }
        }
    }
    Some(())
}

/// A frame the hypervisor took for its own use (page tables, per-CPU data, stacks): zeroed
/// when claimed, private for good.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct PrivateFrame(Mfn);

impl PrivateFrame {
    pub fn mfn(self) -> Mfn {
        self.0
    }
    pub fn maddr(self) -> u64 {
        self.0.maddr()
    }
}

/// Makes the `n` frames from `first` private and zeroes them: `None` (and nothing changed
/// but the frames that were claimed already) if any of them was private already or is not
/// direct-mapped RAM.
pub fn claim_private(first: Mfn, n: u64) -> Option<PrivateFrame> {
    for i in 0..n {
        let m = Mfn(first.0 + i);
        if !is_mapped(m) || is_private(m) {
            return None;
        }
    }
    for i in 0..n {
        let m = Mfn(first.0 + i);
        if !mark_private(m) {
            return None;
        }
        // SAFETY: the frame was not private, so no Rust object lives there; it is
        // direct-mapped; from now on only the holder of the capability uses it.
        unsafe { core::ptr::write_bytes(phys_to_virt(m.maddr()) as *mut u8, 0, 4096) };
    }
    Some(PrivateFrame(first))
}

/// Guest and free frames through the direct map (see the module documentation). Accesses to
/// private frames, frames beyond RAM and ranges crossing the frame's end return `None`.
#[derive(Debug, Default)]
pub struct DirectMap;

impl DirectMap {
    /// The direct-map address of `len` bytes at `off` of a frame `DirectMap` may reach.
    fn at(mfn: Mfn, off: usize, len: usize) -> Option<u64> {
        if !is_mapped(mfn) || is_private(mfn) || off.checked_add(len)? > 4096 {
            return None;
        }
        Some(phys_to_virt(mfn.maddr()) + off as u64)
    }

    /// The byte at `off` of a frame shared with a guest, as an atomic.
    fn byte(mfn: Mfn, off: usize) -> Option<&'static AtomicU8> {
        let a = Self::at(mfn, off, 1)?;
        // SAFETY: a non-private frame is never a Rust object and stays mapped; atomics are
        // the right access for bytes a guest updates concurrently.
        Some(unsafe { AtomicU8::from_ptr(a as *mut u8) })
    }

    /// Writes aligned 64-bit words at `off` (a multiple of 8) of a frame `DirectMap` may
    /// reach: one check for them all (`None`, nothing written, if unaligned, private or
    /// crossing the frame's end).
    pub fn write_words(&mut self, mfn: Mfn, off: usize, words: &[u64]) -> Option<()> {
        if !off.is_multiple_of(8) {
            return None;
        }
        let a = Self::at(mfn, off, words.len().checked_mul(8)?)?;
        for (i, &w) in words.iter().enumerate() {
            // SAFETY: `a..a + 8 * len` lies in a non-private, mapped frame (checked by `at`),
            // each word aligned; volatile: the guest may read it concurrently.
            unsafe { ((a + 8 * i as u64) as *mut u64).write_volatile(w) };
        }
        Some(())
    }

    /// Reads an aligned 16-bit word of a guest frame in one load (`None` if unaligned).
    pub fn load_u16(&self, mfn: Mfn, off: usize) -> Option<u16> {
        Some(Self::word16(mfn, off)?.load(Ordering::SeqCst))
    }

    /// The aligned 16-bit word at `off` of a frame shared with a guest, as an atomic
    /// (`None` if unaligned or not reachable).
    fn word16(mfn: Mfn, off: usize) -> Option<&'static core::sync::atomic::AtomicU16> {
        if !off.is_multiple_of(2) {
            return None;
        }
        let a = Self::at(mfn, off, 2)?;
        // SAFETY: as for `byte`, an aligned word.
        Some(unsafe { core::sync::atomic::AtomicU16::from_ptr(a as *mut u16) })
    }

    /// Compare-and-swap of an aligned 16-bit word of a guest frame (a grant entry's flags):
    /// `Some(Err(current))` if it was not `old`.
    pub fn cas_u16(&self, mfn: Mfn, off: usize, old: u16, new: u16) -> Option<Result<(), u16>> {
        Some(Self::word16(mfn, off)?.compare_exchange(old, new, Ordering::SeqCst, Ordering::SeqCst).map(|_| ()))
    }

    /// Writes an aligned 16-bit word of a guest frame in one store.
    pub fn store_u16(&self, mfn: Mfn, off: usize, v: u16) -> Option<()> {
        Self::word16(mfn, off)?.store(v, Ordering::SeqCst);
        Some(())
    }

    /// Clears `bits` of an aligned 16-bit word of a guest frame; returns the old word.
    pub fn fetch_clear_u16(&self, mfn: Mfn, off: usize, bits: u16) -> Option<u16> {
        Some(Self::word16(mfn, off)?.fetch_and(!bits, Ordering::SeqCst))
    }

    /// The aligned 32-bit word at `off` of a frame shared with a guest, as an atomic
    /// (`None` if unaligned or not reachable): FIFO event words and control blocks.
    fn word32(mfn: Mfn, off: usize) -> Option<&'static core::sync::atomic::AtomicU32> {
        if !off.is_multiple_of(4) {
            return None;
        }
        let a = Self::at(mfn, off, 4)?;
        // SAFETY: as for `byte`, an aligned word.
        Some(unsafe { core::sync::atomic::AtomicU32::from_ptr(a as *mut u32) })
    }

    /// Reads an aligned 32-bit word of a guest frame in one load.
    pub fn load_u32(&self, mfn: Mfn, off: usize) -> Option<u32> {
        Some(Self::word32(mfn, off)?.load(Ordering::SeqCst))
    }

    /// Writes an aligned 32-bit word of a guest frame in one store.
    pub fn store_u32(&self, mfn: Mfn, off: usize, v: u32) -> Option<()> {
        Self::word32(mfn, off)?.store(v, Ordering::SeqCst);
        Some(())
    }

    /// Sets bits of an aligned 32-bit word of a guest frame; returns the old word.
    pub fn fetch_or_u32(&self, mfn: Mfn, off: usize, m: u32) -> Option<u32> {
        Some(Self::word32(mfn, off)?.fetch_or(m, Ordering::SeqCst))
    }

    /// Clears the bits not in `m` of an aligned 32-bit word of a guest frame; the old word.
    pub fn fetch_and_u32(&self, mfn: Mfn, off: usize, m: u32) -> Option<u32> {
        Some(Self::word32(mfn, off)?.fetch_and(m, Ordering::SeqCst))
    }

    /// Compare-and-swap of an aligned 64-bit word of a guest frame (a v1 grant entry whole):
    /// `Some(Err(current))` if it was not `old`.
    pub fn cas_u64(&self, mfn: Mfn, off: usize, old: u64, new: u64) -> Option<Result<(), u64>> {
        if !off.is_multiple_of(8) {
            return None;
        }
        let a = Self::at(mfn, off, 8)?;
        // SAFETY: as for `byte`, an aligned word.
        let w = unsafe { core::sync::atomic::AtomicU64::from_ptr(a as *mut u64) };
        Some(w.compare_exchange(old, new, Ordering::SeqCst, Ordering::SeqCst).map(|_| ()))
    }

    /// Compare-and-swap of an aligned 32-bit word of a guest frame: `Some(Err(current))`
    /// if it was not `old`.
    pub fn cas_u32(&self, mfn: Mfn, off: usize, old: u32, new: u32) -> Option<Result<(), u32>> {
        Some(Self::word32(mfn, off)?.compare_exchange(old, new, Ordering::SeqCst, Ordering::SeqCst).map(|_| ()))
    }

    /// Reads a byte of a guest frame.
    pub fn load_u8(&self, mfn: Mfn, off: usize) -> Option<u8> {
        Some(Self::byte(mfn, off)?.load(Ordering::SeqCst))
    }

    /// Writes a byte of a guest frame.
    pub fn store_u8(&self, mfn: Mfn, off: usize, v: u8) -> Option<()> {
        Self::byte(mfn, off)?.store(v, Ordering::SeqCst);
        Some(())
    }

    /// Sets bits of a byte of a guest frame; returns the old byte.
    pub fn fetch_or_u8(&self, mfn: Mfn, off: usize, m: u8) -> Option<u8> {
        Some(Self::byte(mfn, off)?.fetch_or(m, Ordering::SeqCst))
    }

    /// Clears the bits not in `m` of a byte of a guest frame; returns the old byte.
    pub fn fetch_and_u8(&self, mfn: Mfn, off: usize, m: u8) -> Option<u8> {
        Some(Self::byte(mfn, off)?.fetch_and(m, Ordering::SeqCst))
    }
}

impl PhysMem for DirectMap {
    /// One `rep stosq` over the frame (a frame's scrub is the hot part of populating and
    /// freeing domain memory).
    fn zero(&mut self, mfn: Mfn) -> Option<()> {
        let a = Self::at(mfn, 0, 4096)?;
        // SAFETY: the whole of a non-private, mapped frame (checked), never a Rust object;
        // DF is clear (the ABI on entry to inline asm), RDI/RCX are clobbered and declared.
        unsafe {
            core::arch::asm!("rep stosq", inout("rdi") a => _, inout("rcx") 512u64 => _, in("rax") 0u64, options(nostack, preserves_flags));
        }
        Some(())
    }

    /// One `rep movsq` from frame to frame.
    fn copy_frame(&mut self, dst: Mfn, src: Mfn) -> Option<()> {
        let (d, s) = (Self::at(dst, 0, 4096)?, Self::at(src, 0, 4096)?);
        if d == s {
            return Some(());
        }
        // SAFETY: two whole, distinct, non-private, mapped frames (checked), never Rust
        // objects; DF is clear; RDI/RSI/RCX are clobbered and declared.
        unsafe {
            core::arch::asm!("rep movsq", inout("rdi") d => _, inout("rsi") s => _, inout("rcx") 512u64 => _, options(nostack, preserves_flags));
        }
        Some(())
    }

    fn read_u64(&self, mfn: Mfn, index: usize) -> Option<u64> {
        let a = Self::at(mfn, index.checked_mul(8)?, 8)?;
        // SAFETY: an aligned word of a non-private, mapped frame (checked); volatile: the
        // guest may write it concurrently.
        Some(unsafe { (a as *const u64).read_volatile() })
    }

    fn write_u64(&mut self, mfn: Mfn, index: usize, v: u64) -> Option<()> {
        let a = Self::at(mfn, index.checked_mul(8)?, 8)?;
        // SAFETY: as for `read_u64`.
        unsafe { (a as *mut u64).write_volatile(v) };
        Some(())
    }

    fn read(&self, mfn: Mfn, off: usize, out: &mut [u8]) -> Option<()> {
        let a = Self::at(mfn, off, out.len())?;
        let (n, dst) = (out.len(), out.as_mut_ptr());
        let mut i = 0;
        // SAFETY: (every access below) `a..a + n` lies in a non-private, mapped frame (checked
        // by `at`) and `dst..dst + n` is `out`; reads of the frame are volatile (the guest may
        // write it concurrently), each word aligned; stores into `out` may be unaligned.
        unsafe {
            while i < n && !(a + i as u64).is_multiple_of(8) {
                if (a + i as u64).is_multiple_of(4) && n - i >= 4 {
                    // An aligned 32-bit word in one load (pvclock and wallclock versions).
                    dst.add(i).cast::<u32>().write_unaligned(((a + i as u64) as *const u32).read_volatile());
                    i += 4;
                } else {
                    *dst.add(i) = ((a + i as u64) as *const u8).read_volatile();
                    i += 1;
                }
            }
            while n - i >= 8 {
                dst.add(i).cast::<u64>().write_unaligned(((a + i as u64) as *const u64).read_volatile());
                i += 8;
            }
            if n - i >= 4 {
                dst.add(i).cast::<u32>().write_unaligned(((a + i as u64) as *const u32).read_volatile());
                i += 4;
            }
            while i < n {
                *dst.add(i) = ((a + i as u64) as *const u8).read_volatile();
                i += 1;
            }
        }
        Some(())
    }

    fn write(&mut self, mfn: Mfn, off: usize, data: &[u8]) -> Option<()> {
        let a = Self::at(mfn, off, data.len())?;
        let (n, src) = (data.len(), data.as_ptr());
        let mut i = 0;
        // SAFETY: (every access below) as for `read`, with the roles swapped: volatile aligned
        // stores into the frame, possibly unaligned loads from `data`.
        unsafe {
            while i < n && !(a + i as u64).is_multiple_of(8) {
                if (a + i as u64).is_multiple_of(4) && n - i >= 4 {
                    // Aligned 32-bit words in one store (pvclock and wallclock versions).
                    ((a + i as u64) as *mut u32).write_volatile(src.add(i).cast::<u32>().read_unaligned());
                    i += 4;
                } else {
                    ((a + i as u64) as *mut u8).write_volatile(*src.add(i));
                    i += 1;
                }
            }
            while n - i >= 8 {
                ((a + i as u64) as *mut u64).write_volatile(src.add(i).cast::<u64>().read_unaligned());
                i += 8;
            }
            if n - i >= 4 {
                ((a + i as u64) as *mut u32).write_volatile(src.add(i).cast::<u32>().read_unaligned());
                i += 4;
            }
            while i < n {
                ((a + i as u64) as *mut u8).write_volatile(*src.add(i));
                i += 1;
            }
        }
        Some(())
    }
}

/// Takes `bytes` (rounded up to pages) from the lowest range of `usable` below 4 GiB with
/// room, marks it private, and returns its machine address. `None` if no range has room or
/// any of it is private already (nothing then changes hands).
pub fn carve(usable: &mut RangeSet, bytes: u64) -> Option<u64> {
    let r = find_range(usable, bytes)?;
    let (first, n) = (Mfn::of(r.start), r.len() / 4096);
    // (Before `init_private` every frame counts as private: the bitmap comes first.)
    if (0..n).any(|i| is_private(Mfn(first.0 + i))) {
        return None;
    }
    usable.remove(r).ok()?;
    for i in 0..n {
        mark_private(Mfn(first.0 + i));
    }
    Some(r.start)
}

/// The first `bytes` (rounded up to pages) of the lowest range of `usable` below 4 GiB with
/// room.
fn find_range(usable: &RangeSet, bytes: u64) -> Option<Range> {
    let bytes = bytes.div_ceil(4096) * 4096;
    let r = usable.as_slice().iter().find(|r| r.len() >= bytes && r.start + bytes <= 1 << 32)?;
    Some(Range::new(r.start, r.start + bytes))
}

/// Carves memory for `count` values of `T` from `usable` (as [`carve`]) and returns them as
/// a `'static` slice with every element set to `T::default()`.
pub fn carve_static<T: Default>(usable: &mut RangeSet, count: usize) -> Option<&'static mut [T]> {
    assert!(core::mem::align_of::<T>() <= 4096);
    let bytes = (count as u64).checked_mul(core::mem::size_of::<T>() as u64)?;
    let pa = carve(usable, bytes.max(1))?;
    let p = phys_to_virt(pa) as *mut T;
    for i in 0..count {
        // SAFETY: `carve` took the range out of `usable` and made it private (it was not
        // before, so no Rust object lives there); the early map (and later the direct map)
        // covers it below 4 GiB; page alignment suits T.
        unsafe { p.add(i).write(T::default()) };
    }
    // SAFETY: as above; every element is initialised and the memory is never handed out again.
    Some(unsafe { core::slice::from_raw_parts_mut(p, count) })
}

/// The machine-to-physical table: one u64 per machine frame, carved at boot, read-only to
/// guests at Xen's address. Handles may be cloned: the table is no Rust object, every access
/// is a volatile one inside it.
#[derive(Clone, Debug)]
pub struct M2p {
    base: u64,
    entries: u64,
}

impl M2p {
    /// Carves the table for `max_mfn` frames from `usable`.
    pub fn carve(usable: &mut RangeSet, max_mfn: u64) -> Option<M2p> {
        let pa = carve(usable, max_mfn.checked_mul(8)?.max(1))?;
        Some(M2p { base: pa, entries: max_mfn })
    }

    /// First frame and frame count of the table (for the read-only guest mapping).
    pub fn frames(&self) -> (Mfn, u64) {
        (Mfn::of(self.base), (self.entries * 8).div_ceil(4096))
    }

    fn slot(&self, mfn: Mfn) -> Option<*mut u64> {
        (mfn.0 < self.entries).then(|| phys_to_virt(self.base + 8 * mfn.0) as *mut u64)
    }

    /// M2P[mfn] = pfn (ignored beyond the table).
    pub fn set(&self, mfn: Mfn, pfn: u64) {
        if let Some(p) = self.slot(mfn) {
            // SAFETY: inside the carved, private table, which only this type accesses (guests
            // read it through a read-only mapping).
            unsafe { p.write_volatile(pfn) }
        }
    }

    /// M2P[mfn] (the invalid entry beyond the table).
    pub fn get(&self, mfn: Mfn) -> u64 {
        match self.slot(mfn) {
            // SAFETY: as for `set`.
            Some(p) => unsafe { p.read_volatile() },
            None => guest_abi::layout::INVALID_M2P_ENTRY,
        }
    }
}
