//! Checked access to guest memory through the guest's own page tables.
//!
//! Every guest pointer a hypercall receives is translated here in software: the address must
//! be canonical and outside the hypervisor's slots, every level of the guest's tables must
//! map it present (and writable, for writes), no level may be a superpage, and the final
//! frame must belong to the domain. The bytes are then reached through the hypervisor's own
//! mapping of machine memory, never through the guest's address space, so no guest pointer
//! is ever dereferenced directly and a bad one is an error code, not a fault.
//!
//! A walk is four table reads and four ownership checks, so each vCPU keeps the last few
//! results in an [`XlatCache`], tagged with the root and the frame table's translation
//! generation ([`crate::frame::FrameTable::xlat_gen`]). The generation moves on every write
//! the hypervisor makes into a page-table frame, on every change of a frame's owner, and
//! whenever a frame's last type reference goes (a table leaving every validated tree may be
//! rewritten and validated again under the same frame number). Validated tables are
//! read-only to their guest, so as long as it has not moved and the root is a validated
//! table, a fresh walk would give the same result.

use crate::mem::{Mfn, PhysMem};
use crate::pte::{self, Pte, PteFlags};
use guest_abi::errno::Errno;
use guest_abi::layout;

/// Why a guest address could not be accessed. Hypercalls report all of them as `-EFAULT`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum GuestFault {
    /// Non-canonical, in the hypervisor's slots, or the range wraps.
    BadAddress,
    /// Some level is not present.
    NotPresent,
    /// A write through a mapping that is read-only at some level.
    ReadOnly,
    /// A superpage entry (guests may not have them).
    Superpage,
    /// The frame reached does not belong to the domain, or is not memory.
    NotOwned,
}

impl From<GuestFault> for Errno {
    fn from(_: GuestFault) -> Errno {
        Errno::EFAULT
    }
}

/// Keeps frames from leaving the domain or changing kind while the hypervisor copies to or
/// from them. Needed when the copy runs without the lock under which the domain's frames
/// change hands and type (another vCPU of the domain may retype or free the frame between
/// the translation and the copy).
pub trait Pins {
    /// Holds `mfn` for a read, or for a write (then it must stay usable as data: not a
    /// table or descriptor page). False if it cannot be held: not the domain's any more, or
    /// no longer plain data.
    fn hold(&self, mfn: Mfn, write: bool) -> bool;
    /// Ends a hold taken with the same arguments.
    fn release(&self, mfn: Mfn, write: bool);
}

/// The frame table as [`Pins`] for domain `dom`: a general reference (a referenced frame
/// never changes hands) and, for a write, a writable type reference (a frame with one
/// never becomes a table or descriptor page).
pub struct FramePins<'a, S> {
    pub ft: &'a crate::frame::FrameTable<S>,
    pub dom: guest_abi::DomId,
}

impl<S: AsRef<[crate::frame::FrameSlot]>> Pins for FramePins<'_, S> {
    fn hold(&self, mfn: Mfn, write: bool) -> bool {
        let ty = write.then_some(crate::frame::PageType::Writable);
        self.ft.get_page_and_type(mfn, self.dom, ty).is_ok()
    }

    fn release(&self, mfn: Mfn, write: bool) {
        let _ = self.ft.put_page_and_type(mfn, write);
    }
}

/// Pages a held multi-page write holds at once (larger writes hold one page at a time and
/// are then not all-or-nothing against a concurrent retype).
const MAX_HELD: usize = 4;

/// Copies between guest frame `mfn` and the hypervisor with the frame held (if `pins`).
fn held<R>(pins: Option<&dyn Pins>, mfn: Mfn, write: bool, f: impl FnOnce() -> Option<R>) -> Result<R, GuestFault> {
    if let Some(p) = pins {
        if !p.hold(mfn, write) {
            return Err(GuestFault::NotOwned);
        }
    }
    let r = f();
    if let Some(p) = pins {
        p.release(mfn, write);
    }
    r.ok_or(GuestFault::NotOwned)
}

/// What a translation needs to know about the domain.
pub struct GuestView<'a> {
    /// Root (L4) of the domain's current page tables.
    pub l4: Mfn,
    /// Does the domain own this frame (so that the hypervisor may touch it on its behalf)?
    pub owns: &'a dyn Fn(Mfn) -> bool,
    /// The vCPU's translation cache and the frame table's generation now; `None` for a root
    /// that is not known to be a validated table (its entries could change unseen).
    pub cache: Option<(&'a XlatCache, u64)>,
    /// Holds on the frames copied to or from, when the caller does not hold the domain's
    /// memory lock ([`Pins`]).
    pub pins: Option<&'a dyn Pins>,
}

/// One cached walk: generation 0 marks an empty slot.
#[derive(Copy, Clone, Debug, Default)]
struct XlatEntry {
    gen: u64,
    l4: Mfn,
    vpn: u64,
    mfn: Mfn,
    writable: bool,
}

/// The last few translations of one vCPU, direct-mapped by the page number's low bits.
#[derive(Debug, Default)]
pub struct XlatCache {
    slots: [core::cell::Cell<XlatEntry>; XLAT_SLOTS],
}

const XLAT_SLOTS: usize = 8;

impl XlatCache {
    #[inline]
    fn lookup(&self, gen: u64, l4: Mfn, vpn: u64) -> Option<(Mfn, bool)> {
        let e = self.slots[vpn as usize % XLAT_SLOTS].get();
        (e.gen == gen && e.l4 == l4 && e.vpn == vpn).then_some((e.mfn, e.writable))
    }

    /// The frame holding `va` through root `l4` if this cache has the walk at generation
    /// `gen` (and, for a write, a writable one): what [`translate`] would return, without
    /// the walk. `None` means "walk": a miss, a stale entry, a read-only page for a write, or
    /// an address outside the guest range.
    #[inline]
    pub fn hit(&self, gen: u64, l4: Mfn, va: u64, write: bool) -> Option<Mfn> {
        if !layout::is_guest_va(va) {
            return None;
        }
        let (mfn, writable) = self.lookup(gen, l4, va >> 12)?;
        (writable || !write).then_some(mfn)
    }

    fn fill(&self, e: XlatEntry) {
        self.slots[e.vpn as usize % XLAT_SLOTS].set(e);
    }
}

/// Walks the guest's tables to the frame holding `va`: (frame, writable at every level).
fn walk<M: PhysMem + ?Sized>(mem: &M, view: &GuestView<'_>, va: u64) -> Result<(Mfn, bool), GuestFault> {
    let mut table = view.l4;
    let mut writable = true;
    for level in (1..=4).rev() {
        let e = Pte(mem.read_u64(table, pte::index(va, level)).ok_or(GuestFault::NotOwned)?);
        if !e.present() {
            return Err(GuestFault::NotPresent);
        }
        writable &= e.writable();
        if level > 1 && e.flags().contains(PteFlags::HUGE_PAGE) {
            return Err(GuestFault::Superpage);
        }
        table = e.mfn();
        if !(view.owns)(table) {
            return Err(GuestFault::NotOwned);
        }
    }
    Ok((table, writable))
}

/// Translates one guest virtual address to the machine frame holding it.
#[inline]
pub fn translate<M: PhysMem + ?Sized>(
    mem: &M,
    view: &GuestView<'_>,
    va: u64,
    write: bool,
) -> Result<Mfn, GuestFault> {
    if !layout::is_guest_va(va) {
        return Err(GuestFault::BadAddress);
    }
    let vpn = va >> 12;
    let hit = view.cache.and_then(|(c, gen)| c.lookup(gen, view.l4, vpn));
    let (mfn, writable) = match hit {
        Some(x) => x,
        None => {
            let x = walk(mem, view, va)?;
            if let Some((c, gen)) = view.cache {
                c.fill(XlatEntry { gen, l4: view.l4, vpn, mfn: x.0, writable: x.1 });
            }
            x
        }
    };
    if write && !writable {
        return Err(GuestFault::ReadOnly);
    }
    Ok(mfn)
}

/// Checks that `[va, va+len)` is a range of guest addresses.
pub fn check_range(va: u64, len: usize) -> Result<(), GuestFault> {
    let end = va.checked_add(len as u64).ok_or(GuestFault::BadAddress)?;
    if crate::pv_image::is_guest_range(va, end) {
        Ok(())
    } else {
        Err(GuestFault::BadAddress)
    }
}

/// Splits `[va, va+len)` at page boundaries: (address, offset in page, length, bytes before).
fn pieces(va: u64, len: usize) -> impl Iterator<Item = (u64, usize, usize, usize)> {
    let mut done = 0;
    core::iter::from_fn(move || {
        if done >= len {
            return None;
        }
        let cur = va + done as u64;
        let off = (cur & 0xFFF) as usize;
        let n = (4096 - off).min(len - done);
        let item = (cur, off, n, done);
        done += n;
        Some(item)
    })
}

/// Copies `out.len()` bytes from guest address `va`.
pub fn copy_from_guest<M: PhysMem + ?Sized>(
    mem: &M,
    view: &GuestView<'_>,
    va: u64,
    out: &mut [u8],
) -> Result<(), GuestFault> {
    if (va & 0xFFF) as usize + out.len() <= 4096 {
        // One page: the translation's own check covers the range (guest and hypervisor
        // ranges are whole pages).
        let mfn = translate(mem, view, va, false)?;
        return held(view.pins, mfn, false, || mem.read(mfn, (va & 0xFFF) as usize, out));
    }
    check_range(va, out.len())?;
    for (cur, off, n, done) in pieces(va, out.len()) {
        let mfn = translate(mem, view, cur, false)?;
        held(view.pins, mfn, false, || mem.read(mfn, off, &mut out[done..done + n]))?;
    }
    Ok(())
}

/// Copies `data` to guest address `va`. Every page is checked before any byte is written.
pub fn copy_to_guest<M: PhysMem + ?Sized>(
    mem: &mut M,
    view: &GuestView<'_>,
    va: u64,
    data: &[u8],
) -> Result<(), GuestFault> {
    if (va & 0xFFF) as usize + data.len() <= 4096 {
        // One page: one translation, whose own check covers the range (as above).
        let mfn = translate(mem, view, va, true)?;
        return held(view.pins, mfn, true, || mem.write(mfn, (va & 0xFFF) as usize, data));
    }
    check_range(va, data.len())?;
    if let Some(p) = view.pins.filter(|_| data.len() <= 4096 * (MAX_HELD - 1)) {
        // Every page translated and held before any byte is written.
        let mut frames = [Mfn(0); MAX_HELD];
        let mut n_held = 0;
        let mut r = Ok(());
        for (cur, ..) in pieces(va, data.len()) {
            match translate(mem, view, cur, true) {
                Ok(m) if p.hold(m, true) => {
                    frames[n_held] = m;
                    n_held += 1;
                }
                Ok(_) => r = Err(GuestFault::NotOwned),
                Err(e) => r = Err(e),
            }
            if r.is_err() {
                break;
            }
        }
        if r.is_ok() {
            for (i, (_, off, n, done)) in pieces(va, data.len()).enumerate() {
                if mem.write(frames[i], off, &data[done..done + n]).is_none() {
                    r = Err(GuestFault::NotOwned);
                }
            }
        }
        for &m in &frames[..n_held] {
            p.release(m, true);
        }
        return r;
    }
    // Check first, so a fault leaves guest memory untouched.
    for (cur, ..) in pieces(va, data.len()) {
        translate(mem, view, cur, true)?;
    }
    for (cur, off, n, done) in pieces(va, data.len()) {
        let mfn = translate(mem, view, cur, true)?;
        held(view.pins, mfn, true, || mem.write(mfn, off, &data[done..done + n]))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::VecMem;

    /// Tables: L4 = mfn 0, L3 = 1, L2 = 2, L1 = 3; data pages 4 (RW) and 5 (RO) at VA 0x40_0000
    /// and 0x40_1000; mfn 6 mapped but not owned at 0x40_2000; 7 = a superpage L2 entry.
    fn setup() -> VecMem {
        let mut m = VecMem::new(0, 8);
        let t = PteFlags::PRESENT | PteFlags::WRITABLE;
        m.write_u64(Mfn(0), 0, Pte::new(Mfn(1), t).0);
        m.write_u64(Mfn(1), 0, Pte::new(Mfn(2), t).0);
        m.write_u64(Mfn(2), 2, Pte::new(Mfn(3), t).0);
        m.write_u64(Mfn(2), 3, Pte::new(Mfn(0), t | PteFlags::HUGE_PAGE).0);
        m.write_u64(Mfn(3), 0, Pte::new(Mfn(4), t).0);
        m.write_u64(Mfn(3), 1, Pte::new(Mfn(5), PteFlags::PRESENT).0);
        m.write_u64(Mfn(3), 2, Pte::new(Mfn(6), t).0);
        m
    }

    fn owns(m: Mfn) -> bool {
        m.0 < 6
    }

    #[test]
    fn translation_rules() {
        let m = setup();
        let v = GuestView { l4: Mfn(0), owns: &owns, cache: None, pins: None };
        assert_eq!(translate(&m, &v, 0x40_0123, true), Ok(Mfn(4)));
        assert_eq!(translate(&m, &v, 0x40_1000, false), Ok(Mfn(5)));
        assert_eq!(translate(&m, &v, 0x40_1000, true), Err(GuestFault::ReadOnly));
        assert_eq!(translate(&m, &v, 0x40_2000, false), Err(GuestFault::NotOwned));
        assert_eq!(translate(&m, &v, 0x40_3000, false), Err(GuestFault::NotPresent));
        assert_eq!(translate(&m, &v, 0x60_0000, false), Err(GuestFault::Superpage));
        assert_eq!(translate(&m, &v, 0x8000_0000_0000, false), Err(GuestFault::BadAddress));
        assert_eq!(translate(&m, &v, 0xFFFF_8300_0000_0000, false), Err(GuestFault::BadAddress));
    }

    /// With pins, a copy holds its frame: a frame retyped as a table (or given away) between
    /// the translation and the copy is refused, and a copy leaves no reference behind.
    #[test]
    fn pinned_copies_refuse_retyped_frames() {
        use crate::frame::{slots, FrameTable, Owner, PageType};
        let mut m = setup();
        let ft = FrameTable::new(slots(8));
        for f in 0..6 {
            ft.set_owner(Mfn(f), Owner::Dom(3)).unwrap();
        }
        let pins = FramePins { ft: &ft, dom: 3 };
        let v = GuestView { l4: Mfn(0), owns: &owns, cache: None, pins: Some(&pins) };
        copy_to_guest(&mut m, &v, 0x40_0010, &[7; 8]).unwrap();
        let mut b = [0u8; 8];
        copy_from_guest(&m, &v, 0x40_0010, &mut b).unwrap();
        assert_eq!(b, [7; 8]);
        assert_eq!(ft.get(Mfn(4)).map(|f| (f.count, f.type_count)), Some((0, 0)), "holds released");
        // Another vCPU makes the data page an L1 (its writable mapping, not shown, is gone).
        ft.flushed();
        ft.get_type(Mfn(4), PageType::L1).unwrap();
        assert_eq!(copy_to_guest(&mut m, &v, 0x40_0010, &[9; 8]), Err(GuestFault::NotOwned));
        assert_eq!(m.read_u64(Mfn(4), 2), Some(u64::from_le_bytes([7; 8])), "nothing written into the table");
        // Without pins the stale walk would have written into it.
        let unpinned = GuestView { pins: None, ..v };
        assert_eq!(copy_to_guest(&mut m, &unpinned, 0x40_0010, &[9; 8]), Ok(()));
        // A write across two pages is all or nothing: the second page refused, the first
        // keeps its bytes.
        ft.put_type(Mfn(4)).unwrap();
        ft.flushed();
        copy_to_guest(&mut m, &v, 0x40_0FF8, &[1; 8]).unwrap();
        assert_eq!(copy_to_guest(&mut m, &v, 0x40_0FFC, &[2; 8]), Err(GuestFault::ReadOnly), "page 5 is read-only");
        assert_eq!(m.read_u64(Mfn(4), 511), Some(u64::from_le_bytes([1; 8])));
        ft.flushed();
        ft.get_type(Mfn(4), PageType::L1).unwrap();
        // A frame given away: a read is refused too.
        ft.put_type(Mfn(4)).unwrap();
        ft.set_owner(Mfn(4), Owner::Dom(5)).unwrap();
        assert_eq!(copy_from_guest(&m, &v, 0x40_0010, &mut b), Err(GuestFault::NotOwned));
    }

    #[test]
    fn copies_span_pages_and_fail_atomically() {
        let mut m = setup();
        let v = GuestView { l4: Mfn(0), owns: &owns, cache: None, pins: None };
        copy_to_guest(&mut m, &v, 0x40_0FFE, &[1, 2]).unwrap();
        let mut b = [0u8; 4];
        copy_from_guest(&m, &v, 0x40_0FFC, &mut b).unwrap();
        assert_eq!(b, [0, 0, 1, 2]);
        // Crosses into the read-only page: nothing is written.
        assert_eq!(copy_to_guest(&mut m, &v, 0x40_0FFE, &[9, 9, 9]), Err(GuestFault::ReadOnly));
        copy_from_guest(&m, &v, 0x40_0FFE, &mut b[..2]).unwrap();
        assert_eq!(&b[..2], &[1, 2]);
        assert_eq!(copy_from_guest(&m, &v, u64::MAX - 1, &mut b), Err(GuestFault::BadAddress));
        assert_eq!(
            copy_from_guest(&m, &v, 0x7FFF_FFFF_FFFE, &mut b),
            Err(GuestFault::BadAddress),
            "a range running off the canonical lower half"
        );
        assert_eq!(Errno::from(GuestFault::NotPresent), Errno::EFAULT);
    }

    /// The cache answers as a walk would until the generation moves; a write through a
    /// cached read-only translation is still refused.
    #[test]
    fn cached_translations_follow_the_generation() {
        let mut m = setup();
        let c = XlatCache::default();
        let v = GuestView { l4: Mfn(0), owns: &owns, cache: Some((&c, 1)), pins: None };
        assert_eq!(translate(&m, &v, 0x40_0123, true), Ok(Mfn(4)));
        assert_eq!(translate(&m, &v, 0x40_1000, false), Ok(Mfn(5)));
        assert_eq!(translate(&m, &v, 0x40_1000, true), Err(GuestFault::ReadOnly), "cached read-only entry");
        // The L1 entry changes: a cache at the old generation still has the old answer (which
        // is why every table write moves the generation), the new generation sees the change.
        m.write_u64(Mfn(3), 0, Pte::new(Mfn(5), PteFlags::PRESENT | PteFlags::WRITABLE).0);
        assert_eq!(translate(&m, &v, 0x40_0000, false), Ok(Mfn(4)));
        let v2 = GuestView { l4: Mfn(0), owns: &owns, cache: Some((&c, 2)), pins: None };
        assert_eq!(translate(&m, &v2, 0x40_0000, false), Ok(Mfn(5)));
        // Another root never hits entries of this one.
        m.write_u64(Mfn(7), 0, 0);
        let v3 = GuestView { l4: Mfn(7), owns: &owns, cache: Some((&c, 2)), pins: None };
        assert_eq!(translate(&m, &v3, 0x40_0000, false), Err(GuestFault::NotPresent));
        // Failed walks are not cached.
        assert_eq!(translate(&m, &v2, 0x40_3000, false), Err(GuestFault::NotPresent));
        m.write_u64(Mfn(3), 3, Pte::new(Mfn(4), PteFlags::PRESENT).0);
        let v4 = GuestView { l4: Mfn(0), owns: &owns, cache: Some((&c, 3)), pins: None };
        assert_eq!(translate(&m, &v4, 0x40_3000, false), Ok(Mfn(4)));
    }
}
