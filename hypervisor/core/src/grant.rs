//! Grant tables (v1 and v2) as pure logic: mapping another domain's granted frame and unmapping it
//! (`GNTTABOP_map_grant_ref` / `unmap_grant_ref`), pinning it for a copy
//! (`GNTTABOP_copy`) and swapping unused entries (`GNTTABOP_swap_grant_ref`), with Xen's
//! rules and status codes.
//!
//! Three records take part:
//! - the granter's **shared entries** ([`SharedEntries`]): guest-writable memory, read and
//!   changed with atomic operations only, never trusted: the granter may rewrite an entry at
//!   any moment. Their in-use flags (`GTF_reading`, `GTF_writing`) are in the entry's flags
//!   in v1 and in a status word of the hypervisor's (read-only to the guest) in v2; either
//!   way [`SharedEntries::mark`] sets them only while the entry still says what was checked;
//! - the granter's **active entries** ([`Granter`], under its grant lock in the
//!   hypervisor): for each ref in use, the grantee, the frame and the pin counts of each
//!   kind (host/device × read/write). While any pin exists the shared entry carries
//!   `GTF_reading`, and while a write pin exists `GTF_writing`, so that the granter can see
//!   the grant is in use (and revoke it only once both are clear);
//! - each mapping domain's **maptrack** ([`Maptrack`]): handle → (granter, ref, frame,
//!   kinds). An unmap releases what the maptrack recorded, never what the caller claims
//!   (XSA-234).
//!
//! Every pin holds, on the granted frame, a general reference and, when writable, a
//! writable type reference (so a frame mapped writable elsewhere can never become a page
//! table or descriptor page of its owner, and a page-table frame can never be mapped
//! writable: XSA-214's lesson, types do not travel with the page). A copy pins its grant
//! as a host kind for the length of the copy. Counts are exact: the property test below
//! recomputes them after every step of random sequences, and [`Granter::holds`] lists
//! them for the hypervisor's audit.
//!
//! A dying granter ([`Granter::dying`]) grants nothing new; what is mapped stays mapped
//! (the frames stay referenced) until the mappers unmap. A dying mapping domain releases
//! every handle of its maptrack with [`unmap`].
//!
//! Not here: `transfer` (`-ENOSYS`), sub-page and transitive v2 grants (refused:
//! `GNTST_general_error`), and the hypervisor side (the hypercall, the version switch, the
//! PTE written for a host mapping).

use crate::frame::{FrameTable, FrameSlot, PageType};
use crate::mem::Mfn;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use guest_abi::grant::*;
use guest_abi::DomId;

/// A granter's shared entries, as the hypervisor reaches them (the grant frames, and in v2
/// the status frames).
pub trait SharedEntries {
    /// Number of entries.
    fn entries(&self) -> u32;
    /// Entry `r`: (flags, grantee, frame) (`None` out of range). v1 reads it in one go; v2
    /// reads the header in one go and then the frame, which [`Self::mark`] checks again.
    fn read(&self, r: u32) -> Option<(u16, DomId, u64)>;
    /// Sets the in-use `bits` (`GTF_reading`, `GTF_writing`) of entry `r` if its header
    /// still holds `flags` and `dom` (and, v2, its frame still is `frame`): false (nothing
    /// set) if it changed or `r` is out of range. v1: one compare-and-swap of the whole
    /// entry; v2: the status word set, then the entry read again (the status undone if it
    /// changed), as Xen's `_set_status_v2`.
    fn mark(&self, r: u32, seen: (u16, DomId, u64), bits: u16) -> bool;
    /// Clears in-use `bits` of entry `r` (atomically).
    fn clear_flags(&self, r: u32, bits: u16);
    /// Swaps entries `a` and `b` whole (v2: their status words too).
    fn swap(&self, a: u32, b: u32);
    /// Are these v2 entries (whose flags may say `GTF_sub_page`)?
    fn is_v2(&self) -> bool;
}

/// Pin counts of an active entry, per kind.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Pins {
    pub host_ro: u32,
    pub host_rw: u32,
    pub dev_ro: u32,
    pub dev_rw: u32,
}

impl Pins {
    fn any(&self) -> bool {
        self.host_ro + self.host_rw + self.dev_ro + self.dev_rw != 0
    }

    fn writers(&self) -> u32 {
        self.host_rw + self.dev_rw
    }

    fn slot(&mut self, host: bool, writable: bool) -> &mut u32 {
        match (host, writable) {
            (true, false) => &mut self.host_ro,
            (true, true) => &mut self.host_rw,
            (false, false) => &mut self.dev_ro,
            (false, true) => &mut self.dev_rw,
        }
    }
}

/// A ref in use: who maps it, which frame, how.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Active {
    pub grantee: DomId,
    pub frame: Mfn,
    pub pins: Pins,
}

/// A granting domain's active entries.
#[derive(Debug, Default)]
pub struct Granter {
    pub active: BTreeMap<u32, Active>,
    /// The domain is dying: no new pin (`GNTST_bad_domain`); releases go on.
    pub dying: bool,
}

impl Granter {
    /// The references the pins hold: per pin, the frame and whether a writable type
    /// reference comes with the general one.
    pub fn holds(&self) -> impl Iterator<Item = (Mfn, bool)> + '_ {
        self.active.values().flat_map(|a| {
            let p = a.pins;
            let ro = core::iter::repeat_n((a.frame, false), (p.host_ro + p.dev_ro) as usize);
            ro.chain(core::iter::repeat_n((a.frame, true), (p.host_rw + p.dev_rw) as usize))
        })
    }

}

/// One mapping a domain holds.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub granter: DomId,
    pub gref: u32,
    pub frame: Mfn,
    pub host: bool,
    pub device: bool,
    pub writable: bool,
    /// The host mapping was made with `GNTMAP_contains_pte` (its unmap names the PTE's
    /// machine address, not a linear address).
    pub contains_pte: bool,
    /// `GNTMAP_application_map`: the host PTE is user-accessible.
    pub app: bool,
}

/// Handles a maptrack grows by at a time (one "maptrack frame", as Xen counts them).
pub const MAPTRACK_CHUNK: usize = 512;

/// A mapping domain's handles.
#[derive(Debug)]
pub struct Maptrack {
    entries: Vec<Option<Mapping>>,
    /// The lowest free handle below `entries.len()` is at or after this one.
    free_from: usize,
    limit: usize,
    /// Asked before the maptrack grows by a chunk (the hypervisor's share of memory for
    /// all maptracks): false refuses the growth.
    grow: fn() -> bool,
    /// Growths `grow` allowed (to be given back when the maptrack goes).
    grown: usize,
}

impl Maptrack {
    /// At most `limit` mappings at once; `grow` allows each growth by [`MAPTRACK_CHUNK`].
    pub fn new(limit: usize, grow: fn() -> bool) -> Maptrack {
        Maptrack { entries: Vec::new(), free_from: 0, limit, grow, grown: 0 }
    }

    /// How many growths `grow` allowed: the share of the budget this maptrack holds.
    pub fn chunks_held(&self) -> usize {
        self.grown
    }

    /// One past the highest handle ever handed out (handles are below it).
    pub fn handles(&self) -> u32 {
        self.entries.len() as u32
    }

    pub fn get(&self, handle: u32) -> Option<&Mapping> {
        self.entries.get(handle as usize)?.as_ref()
    }

    /// Every live mapping with its handle.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &Mapping)> {
        self.entries.iter().enumerate().filter_map(|(h, m)| m.as_ref().map(|m| (h as u32, m)))
    }

    fn alloc(&mut self, m: Mapping) -> Option<u32> {
        if let Some(h) = self.entries.iter().skip(self.free_from).position(Option::is_none) {
            let h = h + self.free_from;
            self.entries[h] = Some(m);
            self.free_from = h + 1;
            return Some(h as u32);
        }
        if self.entries.len() >= self.limit {
            return None;
        }
        if self.entries.len() == self.entries.capacity() {
            // A chunk of the budget is asked for only when every chunk allowed so far is in
            // use: one allowed whose memory was not there is tried again, not asked again.
            if self.grown * MAPTRACK_CHUNK <= self.entries.capacity() {
                if !(self.grow)() {
                    return None;
                }
                // Held (and given back with the rest) even if the memory is not there.
                self.grown += 1;
            }
            if self.entries.try_reserve_exact(MAPTRACK_CHUNK).is_err() {
                return None;
            }
        }
        self.entries.push(Some(m));
        self.free_from = self.entries.len();
        Some(self.entries.len() as u32 - 1)
    }

    fn set(&mut self, handle: u32, m: Option<Mapping>) {
        let h = handle as usize;
        self.entries[h] = m;
        if m.is_none() {
            self.free_from = self.free_from.min(h);
        }
    }
}

/// How often a pin retries when the granter keeps changing the entry's flags under it
/// before it gives up (as Xen).
const FLAG_RETRIES: u32 = 4;

/// Sets `GTF_reading` (and `GTF_writing` for `writable`) on entry `r` if it still grants
/// `grantee` access of that kind; the frame it names. As Xen, a grant of the wrong type,
/// to another domain, read-only for a writer, or changing under every retry is
/// `GNTST_general_error`; so is a sub-page grant (v2; rxen maps and copies whole pages
/// only).
fn take_flags(e: &impl SharedEntries, r: u32, grantee: DomId, writable: bool) -> Result<u64, GntSt> {
    for _ in 0..FLAG_RETRIES {
        let seen = e.read(r).ok_or(GntSt::BadGntref)?;
        let (flags, dom, frame) = seen;
        let sub_page = e.is_v2() && flags & GTF_SUB_PAGE != 0;
        if flags & GTF_TYPE_MASK != GTF_PERMIT_ACCESS || sub_page || dom != grantee || (writable && flags & GTF_READONLY != 0) {
            return Err(GntSt::GeneralError);
        }
        if e.mark(r, seen, GTF_READING | if writable { GTF_WRITING } else { 0 }) {
            return Ok(frame);
        }
    }
    Err(GntSt::GeneralError)
}

/// Drops the in-use flags the pins no longer need.
fn settle_flags(e: &impl SharedEntries, r: u32, pins: &Pins) {
    if !pins.any() {
        e.clear_flags(r, GTF_READING | GTF_WRITING);
    } else if pins.writers() == 0 {
        e.clear_flags(r, GTF_WRITING);
    }
}

/// A granter as a pin reaches it: its active entries (under its grant lock), its shared
/// entries, its id, its physical-to-machine lookup, and the TLB flush a frame needs before
/// it becomes writable again after being a table (the TLB clock of [`crate::frame`]).
pub struct GranterRef<'a, S, F> {
    pub g: &'a mut Granter,
    pub shared: &'a S,
    pub id: DomId,
    pub gfn_to_mfn: F,
    pub tlb: &'a mut dyn crate::pt::TlbFlush,
}

/// Pins `gref` of the granter `gr` for `user`: one pin of the host kind and/or one of the
/// device kind, for writing or only reading, each holding a general reference on the frame
/// (and a writable type reference for writing). Returns the frame. On failure nothing is
/// kept: `GNTST_bad_page` for a frame the granter does not own, `GNTST_general_error` for
/// one that cannot take the pin's type (a writable pin of a page table or descriptor page).
#[allow(clippy::too_many_arguments)]
pub fn pin<S: AsRef<[FrameSlot]>, E: SharedEntries, F: Fn(u64) -> Option<Mfn>>(
    ft: &FrameTable<S>,
    gr: &mut GranterRef<'_, E, F>,
    user: DomId,
    gref: u32,
    host: bool,
    device: bool,
    writable: bool,
) -> Result<Mfn, GntSt> {
    let (shared, granter) = (gr.shared, gr.id);
    if !host && !device {
        return Err(GntSt::BadGntref);
    }
    if gr.g.dying {
        return Err(GntSt::BadDomain);
    }
    if gref >= shared.entries() {
        return Err(GntSt::BadGntref);
    }
    // The entry: taken from the shared table when the ref is not in use yet; otherwise the
    // active entry says who may map it, and a first writer must still be allowed to write.
    let (frame, fresh_flags) = match gr.g.active.get(&gref) {
        Some(a) => {
            if a.grantee != user {
                return Err(GntSt::GeneralError);
            }
            if writable && a.pins.writers() == 0 {
                take_flags(shared, gref, user, true)?;
                (a.frame, true)
            } else {
                (a.frame, false)
            }
        }
        None => {
            let gfn = take_flags(shared, gref, user, writable)?;
            match (gr.gfn_to_mfn)(gfn).filter(|&m| ft.owned_by(m, granter)) {
                Some(m) => (m, true),
                None => {
                    shared.clear_flags(gref, GTF_READING | GTF_WRITING);
                    return Err(GntSt::BadPage);
                }
            }
        }
    };
    let kinds = [(true, host), (false, device)];
    let ty = writable.then_some(PageType::Writable);
    if writable && ft.needs_flush(frame, PageType::Writable) {
        let t = ft.flush_begin();
        gr.tlb.flush_all();
        ft.flush_done(t);
    }
    let mut taken = 0;
    for &(_, want) in &kinds {
        if want {
            if ft.get_page_and_type(frame, granter, ty).is_err() {
                for _ in 0..taken {
                    let _ = ft.put_page_and_type(frame, writable);
                }
                if fresh_flags {
                    let pins = gr.g.active.get(&gref).map(|a| a.pins).unwrap_or_default();
                    settle_flags(shared, gref, &pins);
                }
                return Err(GntSt::GeneralError);
            }
            taken += 1;
        }
    }
    let a = gr.g.active.entry(gref).or_insert(Active { grantee: user, frame, pins: Pins::default() });
    for &(is_host, want) in &kinds {
        if want {
            *a.pins.slot(is_host, writable) += 1;
        }
    }
    Ok(frame)
}

/// Releases pins [`pin`] took on `gref` (the kinds named, `writable` as they were taken):
/// their references, and the in-use flags no pin needs any more. Nothing happens for a ref
/// that holds no such pin.
pub fn unpin<S: AsRef<[FrameSlot]>>(ft: &FrameTable<S>, g: &mut Granter, shared: &impl SharedEntries, gref: u32, host: bool, device: bool, writable: bool) {
    let Some(a) = g.active.get_mut(&gref) else { return };
    for (is_host, release) in [(true, host), (false, device)] {
        if release {
            let p = a.pins.slot(is_host, writable);
            if *p > 0 {
                *p -= 1;
                let _ = ft.put_page_and_type(a.frame, writable);
            }
        }
    }
    let pins = a.pins;
    settle_flags(shared, gref, &pins);
    if !pins.any() {
        g.active.remove(&gref);
    }
}

/// `GNTTABOP_map_grant_ref` of `gref` of the granter `gr` by domain `mapper` (its maptrack
/// `mt`), with `GNTMAP_*` `flags`. Returns the handle and the frame. On any failure
/// nothing is kept.
pub fn map<S: AsRef<[FrameSlot]>, E: SharedEntries, F: Fn(u64) -> Option<Mfn>>(
    ft: &FrameTable<S>,
    gr: &mut GranterRef<'_, E, F>,
    mt: &mut Maptrack,
    mapper: DomId,
    gref: u32,
    flags: u32,
) -> Result<(u32, Mfn), GntSt> {
    let (host, device) = (flags & GNTMAP_HOST_MAP != 0, flags & GNTMAP_DEVICE_MAP != 0);
    let writable = flags & GNTMAP_READONLY == 0;
    let frame = pin(ft, gr, mapper, gref, host, device, writable)?;
    let m = Mapping { granter: gr.id, gref, frame, host, device, writable, contains_pte: host && flags & GNTMAP_CONTAINS_PTE != 0, app: flags & GNTMAP_APPLICATION_MAP != 0 };
    let Some(handle) = mt.alloc(m) else {
        unpin(ft, gr.g, gr.shared, gref, host, device, writable);
        return Err(GntSt::NoDeviceSpace);
    };
    Ok((handle, frame))
}

/// `GNTTABOP_unmap_grant_ref` of `handle` of domain `mt`'s owner: releases its host kind
/// (`host`) and/or device kind (`device`), as the mapping recorded them (its writability
/// is the maptrack's, never the caller's). A kind the mapping does not hold is
/// `GNTST_general_error`, a handle not in use `GNTST_bad_handle`; nothing changes then.
/// The caller looks up the mapping's granter first ([`Maptrack::get`]) and passes its
/// active entries `g` and shared entries (`granter` must be that domain).
#[allow(clippy::too_many_arguments)]
pub fn unmap<S: AsRef<[FrameSlot]>>(
    ft: &FrameTable<S>,
    mt: &mut Maptrack,
    handle: u32,
    host: bool,
    device: bool,
    granter: DomId,
    g: &mut Granter,
    shared: &impl SharedEntries,
) -> Result<(), GntSt> {
    let m = *mt.get(handle).ok_or(GntSt::BadHandle)?;
    if (!host && !device) || (host && !m.host) || (device && !m.device) || m.granter != granter {
        return Err(GntSt::GeneralError);
    }
    if g.active.get(&m.gref).is_none_or(|a| a.frame != m.frame) {
        return Err(GntSt::GeneralError);
    }
    unpin(ft, g, shared, m.gref, host, device, m.writable);
    let left = Mapping { host: m.host && !host, device: m.device && !device, ..m };
    mt.set(handle, (left.host || left.device).then_some(left));
    Ok(())
}

/// `GNTTABOP_swap_grant_ref`: swaps entries `a` and `b` of a granter's own table, neither
/// of them in use (`GNTST_eagain` otherwise; `GNTST_bad_gntref` out of range).
pub fn swap(g: &Granter, shared: &impl SharedEntries, a: u32, b: u32) -> Result<(), GntSt> {
    if a >= shared.entries() || b >= shared.entries() {
        return Err(GntSt::BadGntref);
    }
    if g.active.contains_key(&a) || g.active.contains_key(&b) {
        return Err(GntSt::Eagain);
    }
    shared.swap(a, b);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{slots, Owner};
    use core::cell::RefCell;
    use proptest::prelude::*;
    use std::vec;

    /// Every growth the budget allowed is counted (to be given back when the maptrack
    /// goes), and a refusal stops the growth.
    #[test]
    fn maptrack_counts_the_chunks_it_holds() {
        use core::sync::atomic::{AtomicUsize, Ordering};
        static LEFT: AtomicUsize = AtomicUsize::new(2);
        fn grow() -> bool {
            LEFT.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok()
        }
        let mut mt = Maptrack::new(3 * MAPTRACK_CHUNK, grow);
        let m = Mapping { granter: 1, gref: 0, frame: Mfn(5), host: true, device: false, writable: false, contains_pte: false, app: false };
        for _ in 0..2 * MAPTRACK_CHUNK {
            assert!(mt.alloc(m).is_some());
        }
        assert_eq!(mt.chunks_held(), 2);
        assert_eq!(mt.alloc(m), None, "the budget refused a third chunk");
        assert_eq!(mt.chunks_held(), 2);
    }

    /// Shared entries in a vector (the granter's grant frames), with v2's status words
    /// beside them (`Some`) or v1's in-use flags in the entries' flags.
    struct VecEntries {
        e: RefCell<Vec<(u16, DomId, u64)>>,
        status: Option<RefCell<Vec<u16>>>,
        /// The next this many marks see the granter change the entry under them (between
        /// the check and the in-use flags): its flags' `GTF_PWT` flipped, or (`frame_races`)
        /// its frame.
        races: core::cell::Cell<u32>,
        frame_races: core::cell::Cell<u32>,
    }

    const IN_USE: u16 = GTF_READING | GTF_WRITING;

    impl VecEntries {
        fn new(n: usize, v2: bool) -> VecEntries {
            VecEntries { e: RefCell::new(vec![(0, 0, 0); n]), status: v2.then(|| RefCell::new(vec![0; n])), races: Default::default(), frame_races: Default::default() }
        }
        /// The granter writes entry `r` (v1: its in-use flags kept, unless `scribble`).
        fn grant(&self, r: u32, e: (u16, DomId, u64), scribble: bool) {
            let mut v = self.e.borrow_mut();
            let keep = if self.status.is_none() && !scribble { v[r as usize].0 & IN_USE } else { 0 };
            v[r as usize] = (e.0 | keep, e.1, e.2);
        }
        /// The in-use flags of entry `r`, as the granter sees them.
        fn in_use(&self, r: u32) -> u16 {
            match &self.status {
                Some(st) => st.borrow()[r as usize],
                None => self.e.borrow()[r as usize].0 & IN_USE,
            }
        }
        /// A granter racing a mark: the entry changed as [`Self::races`] says.
        fn race(&self, r: u32) {
            for (n, change) in [(&self.races, (GTF_PWT, 0)), (&self.frame_races, (0, 1))] {
                if n.get() > 0 {
                    n.set(n.get() - 1);
                    let e = &mut self.e.borrow_mut()[r as usize];
                    e.0 ^= change.0;
                    e.2 ^= change.1;
                }
            }
        }
        /// The granter ends a grant not in use, as a guest does.
        fn revoke(&self, r: u32) {
            if self.in_use(r) == 0 {
                self.e.borrow_mut()[r as usize].0 = 0;
            }
        }
    }

    impl SharedEntries for VecEntries {
        fn entries(&self) -> u32 {
            self.e.borrow().len() as u32
        }
        fn read(&self, r: u32) -> Option<(u16, DomId, u64)> {
            self.e.borrow().get(r as usize).copied()
        }
        fn mark(&self, r: u32, seen: (u16, DomId, u64), bits: u16) -> bool {
            let same = |now: Option<(u16, DomId, u64)>| now == Some(seen);
            let Some(st) = &self.status else {
                self.race(r);
                if !same(self.read(r)) {
                    return false;
                }
                self.e.borrow_mut()[r as usize].0 |= bits;
                return true;
            };
            let old = st.borrow()[r as usize];
            st.borrow_mut()[r as usize] = old | bits;
            self.race(r);
            if !same(self.read(r)) {
                st.borrow_mut()[r as usize] = old;
                return false;
            }
            true
        }
        fn clear_flags(&self, r: u32, bits: u16) {
            match &self.status {
                Some(st) => st.borrow_mut()[r as usize] &= !bits,
                None => self.e.borrow_mut()[r as usize].0 &= !bits,
            }
        }
        fn is_v2(&self) -> bool {
            self.status.is_some()
        }
        fn swap(&self, a: u32, b: u32) {
            self.e.borrow_mut().swap(a as usize, b as usize);
            if let Some(st) = &self.status {
                st.borrow_mut().swap(a as usize, b as usize);
            }
        }
    }

    const DOMS: usize = 3;
    const ENTRIES: u32 = 8;
    /// Frames per domain; domain d owns frames 1 + d*FRAMES ..; the last of each is an L1.
    const FRAMES: u64 = 4;

    struct World {
        ft: FrameTable<Vec<FrameSlot>>,
        granters: Vec<Granter>,
        shared: Vec<VecEntries>,
        mts: Vec<Maptrack>,
        /// Entries the granter rewrote with arbitrary flags (their in-use bits are the
        /// guest's, not ours).
        scribbled: Vec<[bool; ENTRIES as usize]>,
    }

    fn mfn_of(d: usize, gfn: u64) -> Option<Mfn> {
        (gfn < FRAMES).then(|| Mfn(1 + d as u64 * FRAMES + gfn))
    }

    impl World {
        /// A world whose granters use v2 (`v2`) or v1 entries.
        fn with_version(v2: bool) -> World {
            let ft = FrameTable::new(slots(1 + DOMS * FRAMES as usize));
            for d in 0..DOMS {
                for f in 0..FRAMES as u32 {
                    let m = mfn_of(d, u64::from(f)).unwrap();
                    ft.set_owner(m, Owner::Dom(d as DomId)).unwrap();
                }
                // The granter's own use of its last frame as a page table.
                let l1 = mfn_of(d, FRAMES - 1).unwrap();
                ft.get_page_and_type(l1, d as DomId, Some(PageType::L1)).unwrap();
                ft.mark_validated(l1).unwrap();
            }
            World {
                ft,
                granters: (0..DOMS).map(|_| Granter::default()).collect(),
                shared: (0..DOMS).map(|_| VecEntries::new(ENTRIES as usize, v2)).collect(),
                mts: (0..DOMS).map(|_| Maptrack::new(6, || true)).collect(),
                scribbled: vec![[false; ENTRIES as usize]; DOMS],
            }
        }

        fn map(&mut self, mapper: usize, granter: usize, gref: u32, flags: u32) -> Result<(u32, Mfn), GntSt> {
            let World { ft, granters, shared, mts, .. } = self;
            let mut tlb = crate::pt::CountFlushes::default();
            let mut gr = GranterRef { g: &mut granters[granter], shared: &shared[granter], id: granter as DomId, gfn_to_mfn: |gfn| mfn_of(granter, gfn), tlb: &mut tlb };
            map(ft, &mut gr, &mut mts[mapper], mapper as DomId, gref, flags)
        }

        /// A copy by `user` from or to `gref` of `granter`: pinned, checked, released.
        fn copy(&mut self, user: usize, granter: usize, gref: u32, writable: bool) -> Result<(), std::string::String> {
            let World { ft, granters, shared, .. } = self;
            let mut tlb = crate::pt::CountFlushes::default();
            let mut gr = GranterRef { g: &mut granters[granter], shared: &shared[granter], id: granter as DomId, gfn_to_mfn: |gfn| mfn_of(granter, gfn), tlb: &mut tlb };
            let Ok(frame) = pin(ft, &mut gr, user as DomId, gref, true, false, writable) else { return Ok(()) };
            let f = ft.get(frame).unwrap();
            if f.count == 0 || (writable && (f.ty != PageType::Writable || f.type_count == 0)) {
                return Err(std::format!("a copy's pin holds nothing: {f:?}"));
            }
            if self.trusted(granter, gref) {
                let flags = self.shared[granter].in_use(gref);
                if flags & GTF_READING == 0 || (writable && flags & GTF_WRITING == 0) {
                    return Err(std::format!("a copy's pin without its in-use flags: {flags:#x}"));
                }
            }
            unpin(&self.ft, &mut self.granters[granter], &self.shared[granter], gref, true, false, writable);
            Ok(())
        }

        fn unmap(&mut self, mapper: usize, handle: u32, host: bool, device: bool) -> Result<(), GntSt> {
            let World { ft, granters, shared, mts, .. } = self;
            let d = mts[mapper].get(handle).ok_or(GntSt::BadHandle)?.granter as usize;
            unmap(ft, &mut mts[mapper], handle, host, device, d as DomId, &mut granters[d], &shared[d])
        }

        /// A dying mapper: every mapping released.
        fn release_all(&mut self, mapper: usize) {
            let all: Vec<(u32, Mapping)> = self.mts[mapper].iter().map(|(h, m)| (h, *m)).collect();
            for (h, m) in all {
                self.unmap(mapper, h, m.host, m.device).unwrap();
            }
        }

        /// Are entry `r`'s in-use flags the hypervisor's alone? v2's status words always are;
        /// v1's flags not once the granter scribbled over them.
        fn trusted(&self, d: usize, r: u32) -> bool {
            self.shared[d].status.is_some() || !self.scribbled[d][r as usize]
        }

        /// Recomputes every count from the maptracks and compares.
        fn check(&self) -> Result<(), std::string::String> {
            for d in 0..DOMS {
                for f in 0..FRAMES as u32 {
                    let m = mfn_of(d, u64::from(f)).unwrap();
                    let info = self.ft.get(m).unwrap();
                    let maps: Vec<&Mapping> = self.mts.iter().flat_map(|t| t.iter().map(|(_, m)| m)).filter(|x| x.frame == m).collect();
                    let kinds = |w: Option<bool>| maps.iter().map(|x| (x.host as u32 + x.device as u32) * u32::from(w.is_none_or(|w| x.writable == w))).sum::<u32>();
                    let own = u32::from(f == FRAMES as u32 - 1);
                    if info.count != own + kinds(None) {
                        return Err(std::format!("frame {m:?}: {} general refs, {} expected", info.count, own + kinds(None)));
                    }
                    let want_type = own + kinds(Some(true));
                    if info.type_count != want_type {
                        return Err(std::format!("frame {m:?}: {} type refs, {want_type} expected", info.type_count));
                    }
                }
                for (&r, a) in &self.granters[d].active {
                    let maps: Vec<&Mapping> =
                        self.mts.iter().flat_map(|t| t.iter().map(|(_, m)| m)).filter(|x| x.granter as usize == d && x.gref == r).collect();
                    let mut p = Pins::default();
                    for x in &maps {
                        if x.host {
                            *p.slot(true, x.writable) += 1;
                        }
                        if x.device {
                            *p.slot(false, x.writable) += 1;
                        }
                    }
                    if p != a.pins || !p.any() {
                        return Err(std::format!("d{d} ref {r}: pins {:?}, maps give {p:?}", a.pins));
                    }
                    if self.trusted(d, r) {
                        let flags = self.shared[d].in_use(r);
                        if flags & GTF_READING == 0 || (flags & GTF_WRITING != 0) != (p.writers() != 0) {
                            return Err(std::format!("d{d} ref {r}: flags {flags:#x} for pins {p:?}"));
                        }
                    }
                }
                for r in 0..ENTRIES {
                    let in_use = self.granters[d].active.contains_key(&r);
                    let flags = self.shared[d].in_use(r);
                    if !in_use && self.trusted(d, r) && flags != 0 {
                        return Err(std::format!("d{d} ref {r}: in-use flags {flags:#x} with no pin"));
                    }
                }
            }
            Ok(())
        }
    }

    /// The refusals and releases of both versions (v2's in-use flags in the status words).
    fn hostile_maps_are_refused_in(v2: bool) {
        let mut w = World::with_version(v2);
        let g = |w: &World, r: u32, e: (u16, DomId, u64)| w.shared[1].grant(r, e, false);
        // d1 grants frame 0 read-only to d0, frame 3 (its L1) writable to d0.
        g(&w, 2, (GTF_PERMIT_ACCESS | GTF_READONLY, 0, 0));
        g(&w, 3, (GTF_PERMIT_ACCESS, 0, 3));
        g(&w, 4, (GTF_PERMIT_ACCESS, 2, 1));
        assert_eq!(w.map(0, 1, 2, GNTMAP_HOST_MAP), Err(GntSt::GeneralError), "read-only grant mapped writable");
        assert_eq!(w.map(0, 1, 3, GNTMAP_HOST_MAP), Err(GntSt::GeneralError), "a page table mapped writable");
        assert_eq!(w.map(0, 1, 4, GNTMAP_HOST_MAP), Err(GntSt::GeneralError), "granted to another domain");
        g(&w, 6, (GTF_PERMIT_ACCESS, 0, 99));
        assert_eq!(w.map(0, 1, 6, GNTMAP_HOST_MAP), Err(GntSt::BadPage), "a frame the granter does not own");
        assert_eq!(w.shared[1].in_use(6), 0, "in-use flags taken back");
        g(&w, 7, (GTF_PERMIT_ACCESS | GTF_SUB_PAGE, 0, 1));
        if v2 {
            assert_eq!(w.map(0, 1, 7, GNTMAP_HOST_MAP | GNTMAP_READONLY), Err(GntSt::GeneralError), "a sub-page grant");
        }
        assert_eq!(w.map(0, 1, 99, GNTMAP_HOST_MAP), Err(GntSt::BadGntref), "out of range");
        assert_eq!(w.map(0, 1, 2, GNTMAP_READONLY), Err(GntSt::BadGntref), "neither host nor device");
        assert_eq!(w.unmap(0, 0, true, false), Err(GntSt::BadHandle));
        w.check().unwrap();
        // XSA-224: host + device writable map, then two unmaps; the frame is plain again.
        g(&w, 5, (GTF_PERMIT_ACCESS, 0, 1));
        let (h, m) = w.map(0, 1, 5, GNTMAP_HOST_MAP | GNTMAP_DEVICE_MAP).unwrap();
        w.check().unwrap();
        assert_eq!(w.shared[1].in_use(5), IN_USE);
        assert_eq!(w.ft.get(m).unwrap().type_count, 2);
        w.unmap(0, h, true, false).unwrap();
        assert_eq!(w.unmap(0, h, true, false), Err(GntSt::GeneralError), "the host kind is gone already");
        w.unmap(0, h, false, true).unwrap();
        assert_eq!(w.unmap(0, h, false, true), Err(GntSt::BadHandle), "double unmap");
        assert_eq!(w.ft.get(m).unwrap().type_count, 0);
        w.ft.flushed(); // the TLB clock: a frame that was writable needs a flush first
        assert!(w.ft.get_type(m, PageType::L1).is_ok(), "with no writable reference left the frame may become a table");
        w.ft.put_type(m).unwrap();
        // XSA-234: a read-only map released as what it is, whatever the unmap says.
        let (h, m) = w.map(0, 1, 2, GNTMAP_HOST_MAP | GNTMAP_READONLY).unwrap();
        assert_eq!(w.shared[1].in_use(2), GTF_READING);
        w.unmap(0, h, true, false).unwrap();
        assert_eq!(w.ft.get(m).unwrap().count, 0);
        w.check().unwrap();
        assert_eq!(w.shared[1].in_use(2), 0, "in-use flags cleared");
        // A granter changing the entry between the check and the in-use flags: retried,
        // then refused with nothing left set.
        w.shared[1].races.set(FLAG_RETRIES);
        assert_eq!(w.map(0, 1, 5, GNTMAP_HOST_MAP), Err(GntSt::GeneralError), "the entry changed under every try");
        assert_eq!(w.shared[1].in_use(5), 0);
        w.check().unwrap();
        // ... or only its frame (a grant ended and made again for another frame): never a
        // mapping of the frame it named before.
        w.shared[1].frame_races.set(FLAG_RETRIES);
        assert_eq!(w.map(0, 1, 5, GNTMAP_HOST_MAP), Err(GntSt::GeneralError), "the frame changed under every try");
        assert_eq!(w.shared[1].in_use(5), 0);
        w.shared[1].frame_races.set(1);
        let (h, m) = w.map(0, 1, 5, GNTMAP_HOST_MAP).unwrap();
        assert_eq!(Some(m), mfn_of(1, w.shared[1].read(5).unwrap().2), "the frame the entry names now");
        w.unmap(0, h, true, false).unwrap();
        w.check().unwrap();
    }

    #[test]
    fn hostile_maps_are_refused() {
        hostile_maps_are_refused_in(false);
        hostile_maps_are_refused_in(true);
    }

    /// v2: a change between the check and the status write is seen (the status is undone);
    /// one that stops in time lets the next try through.
    #[test]
    fn v2_recheck_undoes_the_status() {
        let mut w = World::with_version(true);
        w.shared[1].grant(1, (GTF_PERMIT_ACCESS, 0, 1), false);
        w.shared[1].races.set(2); // the third try sees no change
        let (h, _) = w.map(0, 1, 1, GNTMAP_HOST_MAP).unwrap();
        assert_eq!(w.shared[1].in_use(1), IN_USE);
        w.check().unwrap();
        w.unmap(0, h, true, false).unwrap();
        assert_eq!(w.shared[1].in_use(1), 0);
    }

    proptest! {
        /// Random grants, revokes, hostile flag scribbles, maps, unmaps and mapper deaths:
        /// after every step every frame's counts, every active entry's pins and every in-use
        /// flag match what the maptracks hold; in the end everything is back to zero.
        #[test]
        fn counts_stay_exact(v2 in any::<bool>(), ops in proptest::collection::vec((0u8..10, 0usize..DOMS, 0usize..DOMS, 0u32..ENTRIES + 1, any::<u16>()), 1..300)) {
            let mut w = World::with_version(v2);
            for (op, a, b, r, x) in ops {
                let r = r.min(ENTRIES - 1);
                match op {
                    // Granter a grants ref r to b: frame x % (FRAMES + 1) (one past the end:
                    // a frame it does not own), read-only or not.
                    0 => {
                        let ro = if x & 1 != 0 { GTF_READONLY } else { 0 };
                        w.shared[a].grant(r, (GTF_PERMIT_ACCESS | ro, b as DomId, u64::from(x) % (FRAMES + 1)), false);
                    }
                    // Revoke as a guest does: only when not in use.
                    1 => w.shared[a].revoke(r),
                    // A hostile granter writes anything (its flags, and a grantee that
                    // changes under every other mark).
                    2 => {
                        let (_, dom, frame) = w.shared[a].read(r).unwrap();
                        w.shared[a].grant(r, (x, dom, frame), true);
                        w.shared[a].races.set(u32::from(x >> 15));
                        w.shared[a].frame_races.set(u32::from(x >> 14 & 1));
                        w.scribbled[a][r as usize] = true;
                    }
                    3 | 4 => {
                        let flags = u32::from(x) & (GNTMAP_HOST_MAP | GNTMAP_DEVICE_MAP | GNTMAP_READONLY);
                        let _ = w.map(b, a, r, flags);
                    }
                    5 => {
                        let _ = w.unmap(b, u32::from(x) % 8, x & 0x100 != 0, x & 0x200 != 0);
                    }
                    // A copy from (or to) a grant.
                    6 => {
                        let r = w.copy(b, a, r, x & 1 != 0);
                        prop_assert!(r.is_ok(), "{:?}", r);
                    }
                    // The granter dies: nothing new is pinned; what is mapped stays.
                    7 => {
                        w.granters[a].dying = true;
                        prop_assert_eq!(w.map(b, a, r, GNTMAP_HOST_MAP), Err(GntSt::BadDomain));
                    }
                    // The granter swaps two entries: only unused ones move.
                    8 => {
                        let other = u32::from(x) % ENTRIES;
                        let before = (w.shared[a].read(r), w.shared[a].read(other));
                        let busy = w.granters[a].active.contains_key(&r) || w.granters[a].active.contains_key(&other);
                        let res = swap(&w.granters[a], &w.shared[a], r, other);
                        prop_assert_eq!(res.is_err(), busy);
                        if busy {
                            prop_assert_eq!(before, (w.shared[a].read(r), w.shared[a].read(other)));
                        } else {
                            let (sr, so) = (w.scribbled[a][r as usize], w.scribbled[a][other as usize]);
                            w.scribbled[a][r as usize] = so;
                            w.scribbled[a][other as usize] = sr;
                        }
                    }
                    // The mapper dies: every mapping released.
                    _ => w.release_all(b),
                }
                prop_assert!(w.check().is_ok(), "{:?}", w.check());
            }
            for d in 0..DOMS {
                w.release_all(d);
            }
            prop_assert!(w.check().is_ok(), "{:?}", w.check());
            for d in 0..DOMS {
                prop_assert!(w.granters[d].active.is_empty(), "d{} keeps active entries", d);
            }
        }
    }
}
