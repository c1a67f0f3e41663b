//! What grant tables need below the hypercalls: a domain's shared entries (v1 or v2) as
//! the hypervisor reaches them ([`Entries`]), and the machine-wide budget for maptracks.

use core::sync::atomic::{AtomicUsize, Ordering};
use guest_abi::grant::*;
use hv_arch::physmem::DirectMap;
use hv_core::grant::{Mapping, SharedEntries};
use guest_abi::DomId;
use hv_core::mem::{Mfn, PhysMem};

/// A domain's shared entries: its grant frames (v1: 8-byte entries; v2: 16-byte ones and
/// their status words in the status frames), reached through the direct map with atomic
/// accesses only (the guest writes the grant frames concurrently; the status frames are
/// read-only to it, written under its grant lock only).
pub struct Entries<'a> {
    frames: &'a [Mfn],
    status: &'a [Mfn],
    v2: bool,
}

const IN_USE: u16 = GTF_READING | GTF_WRITING;

impl<'a> Entries<'a> {
    /// The entries of a table in `version` (1 or 2) over these frames.
    pub fn new(frames: &'a [Mfn], status: &'a [Mfn], version: u8) -> Entries<'a> {
        Entries { frames, status, v2: version == 2 }
    }

    fn per_frame(&self) -> u32 {
        if self.v2 { ENTRIES_PER_FRAME_V2 } else { ENTRIES_PER_FRAME_V1 }
    }

    /// Entry `r`'s frame and byte offset.
    fn at(&self, r: u32) -> Option<(Mfn, usize)> {
        let f = *self.frames.get((r / self.per_frame()) as usize)?;
        let size = if self.v2 { ENTRY_V2_SIZE } else { ENTRY_V1_SIZE };
        Some((f, (r % self.per_frame()) as usize * size))
    }

    /// v2: entry `r`'s status word (frame, byte offset).
    fn status_at(&self, r: u32) -> Option<(Mfn, usize)> {
        let f = *self.status.get((r / STATUS_PER_FRAME) as usize)?;
        Some((f, (r % STATUS_PER_FRAME) as usize * 2))
    }

    /// Writes entry `r` whole, its in-use flags (given in `flags`) where this version keeps
    /// them: a reserved entry carried over a version switch.
    pub fn import(&self, r: u32, (flags, dom, frame): (u16, DomId, u64)) {
        let Some((f, off)) = self.at(r) else { return };
        if !self.v2 {
            DirectMap.write_u64(f, off / 8, u64::from(flags) | u64::from(dom) << 16 | (frame & 0xFFFF_FFFF) << 32);
            return;
        }
        DirectMap.write_u64(f, off / 8 + 1, frame);
        DirectMap.write_u64(f, off / 8, u64::from(flags & !IN_USE) | u64::from(dom) << 16);
        if let Some((sf, so)) = self.status_at(r) {
            DirectMap.store_u16(sf, so, flags & IN_USE);
        }
    }
}

impl SharedEntries for Entries<'_> {
    fn entries(&self) -> u32 {
        self.frames.len() as u32 * self.per_frame()
    }

    fn read(&self, r: u32) -> Option<(u16, u16, u64)> {
        let (f, off) = self.at(r)?;
        if !self.v2 {
            let w = DirectMap.read_u64(f, off / 8)?;
            return Some((w as u16, (w >> 16) as u16, w >> 32));
        }
        let h = DirectMap.load_u32(f, off)?;
        Some((h as u16, (h >> 16) as u16, DirectMap.read_u64(f, off / 8 + 1)?))
    }

    fn mark(&self, r: u32, (flags, dom, frame): (u16, u16, u64), bits: u16) -> bool {
        let Some((f, off)) = self.at(r) else { return false };
        let hdr = u32::from(flags) | u32::from(dom) << 16;
        if !self.v2 {
            // The whole entry in one compare-and-swap: flags, grantee and the frame used
            // are those one moment of it held (a grant ended and made again for another
            // frame in between fails it).
            let (old, frame) = (u64::from(hdr), frame << 32);
            return DirectMap.cas_u64(f, off, old | frame, old | u64::from(bits) | frame).is_some_and(|r| r.is_ok());
        }
        // The status first, then the entry again (the guest revokes in the other order:
        // header, then status), as Xen's `_set_status_v2`.
        let Some((sf, so)) = self.status_at(r) else { return false };
        // Only the hypervisor writes status words, under the grant lock.
        let Some(old) = DirectMap.load_u16(sf, so) else { return false };
        DirectMap.store_u16(sf, so, old | bits);
        core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
        if DirectMap.load_u32(f, off) == Some(hdr) && DirectMap.read_u64(f, off / 8 + 1) == Some(frame) {
            return true;
        }
        DirectMap.store_u16(sf, so, old);
        false
    }

    fn clear_flags(&self, r: u32, bits: u16) {
        let at = if self.v2 { self.status_at(r) } else { self.at(r) };
        if let Some((f, off)) = at {
            DirectMap.fetch_clear_u16(f, off, bits);
        }
    }

    fn is_v2(&self) -> bool {
        self.v2
    }

    fn swap(&self, a: u32, b: u32) {
        let (Some((fa, oa)), Some((fb, ob))) = (self.at(a), self.at(b)) else { return };
        let words = if self.v2 { 2 } else { 1 };
        for w in 0..words {
            let (x, y) = (DirectMap.read_u64(fa, oa / 8 + w), DirectMap.read_u64(fb, ob / 8 + w));
            if let (Some(x), Some(y)) = (x, y) {
                DirectMap.write_u64(fa, oa / 8 + w, y);
                DirectMap.write_u64(fb, ob / 8 + w, x);
            }
        }
        if let (true, Some((sa, pa)), Some((sb, pb))) = (self.v2, self.status_at(a), self.status_at(b)) {
            let (x, y) = (DirectMap.load_u16(sa, pa).unwrap_or(0), DirectMap.load_u16(sb, pb).unwrap_or(0));
            DirectMap.store_u16(sa, pa, y);
            DirectMap.store_u16(sb, pb, x);
        }
    }
}

/// Maptrack chunks all domains may hold at once: a quarter of the hypervisor heap, so that
/// no guest can exhaust it by mapping grants.
fn maptrack_chunks() -> usize {
    crate::mm::heap_size() as usize / 4 / (hv_core::grant::MAPTRACK_CHUNK * core::mem::size_of::<Option<Mapping>>())
}
static CHUNKS_USED: AtomicUsize = AtomicUsize::new(0);

/// May a maptrack grow by a chunk?
pub fn maptrack_grow() -> bool {
    CHUNKS_USED.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < maptrack_chunks()).then_some(n + 1)).is_ok()
}

/// Gives back `n` chunks of the budget (a maptrack that went, with its domain).
pub fn maptrack_release(n: usize) {
    let _ = CHUNKS_USED.fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| Some(u.saturating_sub(n)));
}
