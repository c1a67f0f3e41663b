//! The frame table: one record per machine frame.
//!
//! # The model
//!
//! Every machine frame has exactly one **owner**: free, the hypervisor, a domain, or I/O
//! (MMIO that is not RAM). Two counters guard how a frame may be used:
//!
//! - the **general reference count** counts every use of the frame: each present page-table
//!   entry that maps it, each root (CR3) or pin that holds it, each hypervisor-internal
//!   reference. A frame with a non-zero count is never freed or given away.
//! - the **type** (none, writable, L1, L2, L3, L4, segment descriptor) with its **type count**
//!   says what the frame is currently used *as*. A frame has one type at a time, and changes
//!   type only when its type count is zero. Every writable mapping of a frame holds one
//!   `Writable` type reference; every entry of a level-N table (N ≥ 2) that points at a frame
//!   holds one level-(N−1) type reference on it; a root or pin holds one reference of its
//!   level. So a frame in use as a page table or descriptor table can never also be mapped
//!   writable, and a frame mapped writable anywhere can never become a table.
//! - taking the first page-table type reference of a frame means its entries must be
//!   validated (the **validated** flag caches the result until the type count drops to 0);
//!   **pinned** records an explicit pin, which holds one type reference.
//!
//! Invariants: `type_count > 0` implies `ty != None`; `type_count <= count` for domain
//! frames (each type reference travels with a general reference); free frames have both
//! counts zero.
//!
//! # The TLB clock
//!
//! When the last type reference of a frame goes away, other CPUs may still hold stale
//! translations through it: a writable TLB entry for a former `Writable` frame, or a
//! paging-structure cache walking through a former table. So a frame whose type count fell to
//! zero may take a *different kind* of type (a table or descriptor type after anything else,
//! or anything after a table or descriptor type) only once every CPU's guest TLB was flushed
//! since (Xen's TLB clock, in its simplest form): [`FrameTable::needs_flush`] says so, the
//! table refuses such a type change with [`FrameError::StaleTlb`], and the caller
//! (`pt::Pt`) flushes first, between [`FrameTable::flush_begin`] and
//! [`FrameTable::flush_done`]. The clock counts flushes begun and the newest one completed;
//! each frame is stamped with the begun count when its type count falls to zero, and may
//! change kind once a flush begun at or after its stamp has completed. (Several CPUs flush
//! at once, for different domains: a flush already under way when the stamp was taken does
//! not count, since a CPU it had already passed may have cached the mapping again before it
//! went.)

use crate::mem::Mfn;
use core::sync::atomic::{AtomicU64, Ordering};
use guest_abi::errno::Errno;
use guest_abi::DomId;

/// Who owns a frame.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub enum Owner {
    /// Not RAM, or not usable (firmware, holes): never handed out.
    #[default]
    None,
    /// Free RAM in the allocator.
    Free,
    /// Used by the hypervisor itself (image, heap, its page tables, per-CPU data).
    Xen,
    /// Owned by a domain.
    Dom(DomId),
    /// MMIO owned by `DOMID_IO`.
    Io,
}

/// What a frame is currently used as.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub enum PageType {
    #[default]
    None,
    Writable,
    L1,
    L2,
    L3,
    L4,
    SegDesc,
}

impl PageType {
    /// The page-table type of level `n` (1..=4).
    pub fn table(level: u32) -> Option<PageType> {
        match level {
            1 => Some(PageType::L1),
            2 => Some(PageType::L2),
            3 => Some(PageType::L3),
            4 => Some(PageType::L4),
            _ => None,
        }
    }

    /// Is this a page-table or descriptor-table type (never writable-mappable)?
    pub fn is_protected(self) -> bool {
        matches!(self, PageType::L1 | PageType::L2 | PageType::L3 | PageType::L4 | PageType::SegDesc)
    }
}

/// One frame's record.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct FrameInfo {
    pub owner: Owner,
    pub count: u32,
    pub ty: PageType,
    pub type_count: u32,
    pub validated: bool,
    pub pinned: bool,
    /// The TLB clock when the type count last fell to zero (0: never).
    pub tlb_stamp: u32,
}

/// Why a frame-table operation was refused.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// The MFN is beyond the table.
    NoSuchFrame,
    /// The frame does not belong to the domain that named it.
    NotOwner,
    /// The frame has a different type with references.
    TypeConflict,
    /// A counter would overflow.
    Overflow,
    /// A counter would drop below zero (a hypervisor bug, reported, never panicking).
    Underflow,
    /// The frame is in use and cannot change owner.
    InUse,
    /// The type change needs a TLB flush everywhere first (see the module's TLB clock).
    StaleTlb,
}

impl From<FrameError> for Errno {
    fn from(e: FrameError) -> Errno {
        match e {
            FrameError::TypeConflict | FrameError::InUse => Errno::EBUSY,
            FrameError::Overflow => Errno::EOVERFLOW,
            _ => Errno::EINVAL,
        }
    }
}

/// One frame's record as stored: two words, each read and changed atomically, so that any
/// CPU may read a record while another changes it. Zero is a valid record (no owner, no
/// references): the table may live in zeroed memory.
///
/// `refs`: general count (bits 0–31), owner kind (32–34), owner domain (48–63).
/// `types`: type count (0–27), type (28–30), validated (31), pinned (32), TLB stamp (33–63).
///
/// # Concurrency
///
/// A frame's record changes only under its owner's lock: the owning domain's for its frames
/// (a domain's own page-table operations, and the owner changes that give a frame to it or
/// take it away), the allocator's for free frames. Each word is updated with a
/// compare-and-swap, so the counts stay exact whatever the callers do; what the lock adds
/// is that the two words of one record move together for every reader holding it. A reader
/// without that lock (another domain's guest access checking ownership) sees each word
/// whole, and only ever an owner the frame really had.
#[derive(Debug, Default)]
pub struct FrameSlot {
    refs: AtomicU64,
    types: AtomicU64,
}

const OWNER_SHIFT: u32 = 32;
const DOM_SHIFT: u32 = 48;
const TY_SHIFT: u32 = 28;
const VALIDATED: u64 = 1 << 31;
const PINNED: u64 = 1 << 32;
const STAMP_SHIFT: u32 = 33;
/// TLB stamps and the flush counters have 31 bits, compared modulo 2^31 (see [`Clock`]).
const STAMP_MASK: u32 = (1 << 31) - 1;
const HALF: u32 = 1 << 30;

#[inline]
fn owner_bits(o: Owner) -> u64 {
    let (kind, dom) = match o {
        Owner::None => (0u64, 0u16),
        Owner::Free => (1, 0),
        Owner::Xen => (2, 0),
        Owner::Dom(d) => (3, d),
        Owner::Io => (4, 0),
    };
    (kind << OWNER_SHIFT) | ((dom as u64) << DOM_SHIFT)
}

fn owner_of(refs: u64) -> Owner {
    match (refs >> OWNER_SHIFT) & 7 {
        1 => Owner::Free,
        2 => Owner::Xen,
        3 => Owner::Dom((refs >> DOM_SHIFT) as u16),
        4 => Owner::Io,
        _ => Owner::None,
    }
}

#[inline]
fn ty_bits(t: PageType) -> u64 {
    (match t {
        PageType::None => 0u64,
        PageType::Writable => 1,
        PageType::L1 => 2,
        PageType::L2 => 3,
        PageType::L3 => 4,
        PageType::L4 => 5,
        PageType::SegDesc => 6,
    }) << TY_SHIFT
}

#[inline]
fn ty_of(types: u64) -> PageType {
    match (types >> TY_SHIFT) & 7 {
        1 => PageType::Writable,
        2 => PageType::L1,
        3 => PageType::L2,
        4 => PageType::L3,
        5 => PageType::L4,
        6 => PageType::SegDesc,
        _ => PageType::None,
    }
}

fn unpack(refs: u64, types: u64) -> FrameInfo {
    FrameInfo {
        owner: owner_of(refs),
        count: refs as u32,
        ty: ty_of(types),
        type_count: (types & TCOUNT) as u32,
        validated: types & VALIDATED != 0,
        pinned: types & PINNED != 0,
        tlb_stamp: (types >> STAMP_SHIFT) as u32 & STAMP_MASK,
    }
}

impl FrameSlot {
    pub const fn new() -> FrameSlot {
        FrameSlot { refs: AtomicU64::new(0), types: AtomicU64::new(0) }
    }

    /// A snapshot of the record.
    pub fn load(&self) -> FrameInfo {
        unpack(self.refs.load(Ordering::Acquire), self.types.load(Ordering::Acquire))
    }

    fn owner(&self) -> Owner {
        owner_of(self.refs.load(Ordering::Acquire))
    }

    /// Replaces the word `w` by `f(old)` atomically; `f` refuses with an error.
    #[inline]
    fn update(w: &AtomicU64, f: impl Fn(u64) -> Result<u64, FrameError>) -> Result<u64, FrameError> {
        let mut cur = w.load(Ordering::Acquire);
        loop {
            let new = f(cur)?;
            match w.compare_exchange_weak(cur, new, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Ok(cur),
                Err(now) => cur = now,
            }
        }
    }
}

const COUNT: u64 = 0xFFFF_FFFF;
/// Type counts have 28 bits (more references are refused with `Overflow`).
const TCOUNT: u64 = (1 << 28) - 1;
const TY_BITS: u64 = 7 << TY_SHIFT;
const STAMP_BITS: u64 = (STAMP_MASK as u64) << STAMP_SHIFT;

fn is_protected_bits(t: u64) -> bool {
    // L1..L4 and SegDesc (2..=6).
    (2..=6).contains(&(t >> TY_SHIFT))
}

/// The TLB clock as of one look: flushes everywhere begun and the newest one completed.
///
/// A frame whose last type reference goes is stamped with `started` (read after a full
/// barrier, so any flush that takes that ticket or a later one began after the frame's last
/// mapping was gone). It may change kind once a flush with such a ticket has *completed*
/// (`done` past the stamp). A flush that was already under way when the stamp was taken does
/// not count: a CPU it had already passed may have cached the mapping again before it went.
#[derive(Copy, Clone, Debug)]
struct Clock {
    started: u64,
    done: u64,
}

/// Is `a` later than `b` modulo 2^31 (by less than half the range)?
fn later(a: u32, b: u32) -> bool {
    (1..HALF).contains(&(a.wrapping_sub(b) & STAMP_MASK))
}

impl Clock {
    /// Has every CPU flushed since a frame was stamped `stamp`? A stamp half the range
    /// behind the begun count is that old: long flushed.
    fn flushed_since(self, stamp: u32) -> bool {
        let (started, done) = (self.started as u32 & STAMP_MASK, self.done as u32 & STAMP_MASK);
        later(done, stamp) || started.wrapping_sub(stamp) & STAMP_MASK >= HALF
    }
}

/// The type word after taking a reference of type bits `ty` (see [`FrameTable::get_type`]).
#[inline]
fn type_taken(cur: u64, ty: u64, clock: Clock) -> Result<u64, FrameError> {
    let (count, have) = (cur & TCOUNT, cur & TY_BITS);
    if count == 0 {
        let stamp = (cur >> STAMP_SHIFT) as u32 & STAMP_MASK;
        if have != ty && (is_protected_bits(have) || is_protected_bits(ty)) && !clock.flushed_since(stamp) {
            return Err(FrameError::StaleTlb);
        }
        // A new type: not validated, not pinned; the stamp stays.
        return Ok((cur & STAMP_BITS) | ty | 1);
    }
    if have != ty {
        return Err(FrameError::TypeConflict);
    }
    if count == TCOUNT {
        return Err(FrameError::Overflow);
    }
    Ok(cur + 1)
}

/// The type word after dropping a reference (stamped with `stamp()` at zero).
#[inline]
fn type_dropped(cur: u64, stamp: &impl Fn() -> u32) -> Result<u64, FrameError> {
    match cur & TCOUNT {
        0 => Err(FrameError::Underflow),
        1 => Ok((cur & TY_BITS) | (((stamp() & STAMP_MASK) as u64) << STAMP_SHIFT)),
        _ => Ok(cur - 1),
    }
}

/// The frame table over some storage of [`FrameSlot`] records, indexed by MFN. Every
/// operation takes `&self` (see [`FrameSlot`] for who may change a record).
pub struct FrameTable<S> {
    frames: S,
    /// The TLB clock ([`Clock`]): flushes everywhere begun and the newest ticket completed
    /// plus one. Both start at 1, so a fresh frame (stamp 0) counts as flushed.
    /// (Each on a cache line of its own: every frame operation reads `frames`, and CPUs
    /// bump these.)
    started: Line,
    done: Line,
    /// The translation generations (never 0), per domain (ids modulo [`GENS`]): one moves
    /// on every hypervisor write into a page-table frame of the domain ([`crate::pt`]), when
    /// a frame leaves or joins the domain, and whenever a frame of the domain loses its last
    /// type reference (a table leaving every validated tree may then be rewritten, and a
    /// root frame number reused with other contents; a writable frame may become a table):
    /// what makes the domain's cached guest translations stale (`guest_access::XlatCache`
    /// caches walks of a domain's own tables to its own frames only).
    xlat_gens: [Line; GENS],
}

/// Translation generations kept (domains share one modulo this: more invalidation, never
/// less).
pub const GENS: usize = 64;

/// An atomic word on a cache line of its own (domains bump their generations on every table
/// write; the TLB clock moves on flushes).
#[repr(align(64))]
struct Line(AtomicU64);

impl<S: AsRef<[FrameSlot]>> FrameTable<S> {
    pub fn new(frames: S) -> Self {
        let xlat_gens = core::array::from_fn(|_| Line(AtomicU64::new(1)));
        FrameTable { frames, started: Line(AtomicU64::new(1)), done: Line(AtomicU64::new(1)), xlat_gens }
    }

    /// Domain `dom`'s translation generation now.
    #[inline]
    pub fn xlat_gen(&self, dom: DomId) -> u64 {
        self.xlat_gens[dom as usize % GENS].0.load(Ordering::Acquire)
    }

    /// Makes `dom`'s cached guest translations stale (a table entry or an owner changed).
    /// (Generations start at 1 and only count up: 0, the mark of an empty cache slot, would
    /// take 2^64 bumps.)
    #[inline]
    pub fn invalidate_translations(&self, dom: DomId) {
        self.xlat_gens[dom as usize % GENS].0.fetch_add(1, Ordering::AcqRel);
    }

    /// Bumps the generation of the domain in the general word `refs`, if a domain owns it.
    #[inline]
    fn invalidate_owner(&self, refs: u64) {
        if (refs >> OWNER_SHIFT) & 7 == 3 {
            self.invalidate_translations((refs >> DOM_SHIFT) as DomId);
        }
    }

    /// Must every CPU's guest TLB be flushed before `mfn` may take type `ty`?
    #[inline]
    pub fn needs_flush(&self, mfn: Mfn, ty: PageType) -> bool {
        let Ok(s) = self.slot(mfn) else { return false };
        type_taken(s.types.load(Ordering::Acquire), ty_bits(ty), self.clock()) == Err(FrameError::StaleTlb)
    }

    /// Does `dom` own `mfn`? (One look at one word.)
    #[inline]
    pub fn owned_by(&self, mfn: Mfn, dom: DomId) -> bool {
        self.slot(mfn).is_ok_and(|s| s.refs.load(Ordering::Acquire) & !COUNT == owner_bits(Owner::Dom(dom)))
    }

    /// The type, type count and validated flag of `mfn`, which `dom` must own.
    #[inline]
    pub fn typed_by(&self, mfn: Mfn, dom: DomId) -> Result<(PageType, u32, bool), FrameError> {
        let s = self.slot(mfn)?;
        if s.refs.load(Ordering::Acquire) & !COUNT != owner_bits(Owner::Dom(dom)) {
            return Err(FrameError::NotOwner);
        }
        let t = s.types.load(Ordering::Acquire);
        Ok((ty_of(t), (t & TCOUNT) as u32, t & VALIDATED != 0))
    }

    fn clock(&self) -> Clock {
        Clock { started: self.started.0.load(Ordering::SeqCst), done: self.done.0.load(Ordering::SeqCst) }
    }

    /// Flushes everywhere begun so far (modulo 2^31; for tests and statistics).
    pub fn tlb_clock(&self) -> u32 {
        self.started.0.load(Ordering::SeqCst).wrapping_sub(1) as u32 & STAMP_MASK
    }

    /// A flush of every CPU's guest TLB begins now: its ticket, for [`Self::flush_done`].
    /// Call it before asking any CPU to flush.
    pub fn flush_begin(&self) -> u64 {
        self.started.0.fetch_add(1, Ordering::SeqCst)
    }

    /// The flush with ticket `t` has completed on every CPU. (The counters are 64-bit and
    /// only grow; stamps are their low 31 bits.)
    pub fn flush_done(&self, t: u64) {
        self.done.0.fetch_max(t + 1, Ordering::SeqCst);
    }

    /// Records a flush everywhere that begins and ends now (a caller that flushed with
    /// nothing running concurrently).
    pub fn flushed(&self) {
        let t = self.flush_begin();
        self.flush_done(t);
    }

    /// Number of frames described.
    pub fn len(&self) -> usize {
        self.frames.as_ref().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    #[inline]
    fn slot(&self, mfn: Mfn) -> Result<&FrameSlot, FrameError> {
        let i = usize::try_from(mfn.0).map_err(|_| FrameError::NoSuchFrame)?;
        self.frames.as_ref().get(i).ok_or(FrameError::NoSuchFrame)
    }

    /// A snapshot of the record of `mfn`.
    pub fn get(&self, mfn: Mfn) -> Option<FrameInfo> {
        self.slot(mfn).ok().map(FrameSlot::load)
    }

    /// Sets the owner of a frame that is not in use (boot-time classification, allocation
    /// and release). The type and TLB stamp survive a change of hands: stale translations
    /// do too.
    pub fn set_owner(&self, mfn: Mfn, owner: Owner) -> Result<(), FrameError> {
        let s = self.slot(mfn)?;
        let cur = s.refs.load(Ordering::Acquire);
        if cur as u32 != 0 || s.types.load(Ordering::Acquire) & TCOUNT != 0 {
            return Err(FrameError::InUse);
        }
        s.refs.compare_exchange(cur, owner_bits(owner), Ordering::AcqRel, Ordering::Acquire).map_err(|_| FrameError::InUse)?;
        // After the change: a walk that saw the old owner cached it under the old generation.
        for o in [owner_of(cur), owner] {
            if let Owner::Dom(d) = o {
                self.invalidate_translations(d);
            }
        }
        let _ = FrameSlot::update(&s.types, |cur| Ok(cur & !(VALIDATED | PINNED)));
        Ok(())
    }

    /// Hands a frame whose only general reference the caller holds from `from` to `to` in
    /// one step (its type references stay): nobody can take a new reference as `from`'s
    /// meanwhile. `InUse` if anyone else holds one, `NotOwner` if `from` does not own it.
    /// (The hypervisor takes back a frame it lent a domain, such as a grant status frame,
    /// only while the domain has no mapping of it.)
    pub fn hand_over_sole(&self, mfn: Mfn, from: Owner, to: Owner) -> Result<(), FrameError> {
        let s = self.slot(mfn)?;
        FrameSlot::update(&s.refs, |cur| {
            if cur & !COUNT != owner_bits(from) {
                return Err(FrameError::NotOwner);
            }
            if cur & COUNT != 1 {
                return Err(FrameError::InUse);
            }
            Ok(owner_bits(to) | 1)
        })?;
        for o in [from, to] {
            if let Owner::Dom(d) = o {
                self.invalidate_translations(d);
            }
        }
        Ok(())
    }

    /// The owner of a frame (`Owner::None` beyond the table).
    #[inline]
    pub fn owner(&self, mfn: Mfn) -> Owner {
        self.slot(mfn).map(FrameSlot::owner).unwrap_or(Owner::None)
    }

    /// Takes a general reference on a frame owned by `dom`.
    pub fn get_page(&self, mfn: Mfn, dom: DomId) -> Result<(), FrameError> {
        let owner = owner_bits(Owner::Dom(dom));
        FrameSlot::update(&self.slot(mfn)?.refs, |cur| {
            if cur & !COUNT != owner {
                return Err(FrameError::NotOwner);
            }
            if cur & COUNT == COUNT {
                return Err(FrameError::Overflow);
            }
            Ok(cur + 1)
        })
        .map(|_| ())
    }

    /// Drops a general reference.
    pub fn put_page(&self, mfn: Mfn) -> Result<(), FrameError> {
        FrameSlot::update(&self.slot(mfn)?.refs, |cur| if cur & COUNT == 0 { Err(FrameError::Underflow) } else { Ok(cur - 1) })
            .map(|_| ())
    }

    /// [`Self::get_page`] and, if `ty` is given, [`Self::get_type`]; nothing is taken on
    /// failure. Returns whether the type reference was the first.
    pub fn get_page_and_type(&self, mfn: Mfn, dom: DomId, ty: Option<PageType>) -> Result<bool, FrameError> {
        self.get_page(mfn, dom)?;
        let Some(ty) = ty else { return Ok(false) };
        match self.get_type(mfn, ty) {
            Ok(first) => Ok(first),
            Err(e) => {
                let _ = self.put_page(mfn);
                Err(e)
            }
        }
    }

    /// Drops a type reference (if `typed`) and a general reference. Returns whether the
    /// type reference was the last.
    pub fn put_page_and_type(&self, mfn: Mfn, typed: bool) -> Result<bool, FrameError> {
        let last = if typed { self.put_type(mfn)? } else { false };
        self.put_page(mfn)?;
        Ok(last)
    }

    /// Takes a type reference of type `ty`. Returns `true` when this was the first reference
    /// (the caller must then validate a table type and call [`Self::mark_validated`]).
    pub fn get_type(&self, mfn: Mfn, ty: PageType) -> Result<bool, FrameError> {
        let clock = self.clock();
        let old = FrameSlot::update(&self.slot(mfn)?.types, |cur| type_taken(cur, ty_bits(ty), clock))?;
        Ok(old & TCOUNT == 0)
    }

    /// Drops a type reference. Returns `true` when it was the last one.
    pub fn put_type(&self, mfn: Mfn) -> Result<bool, FrameError> {
        // The stamp (when this is the last reference) is read after a full barrier: the
        // mapping that held the reference is gone (written) before any flush that takes this
        // ticket begins.
        let stamp = || {
            core::sync::atomic::fence(Ordering::SeqCst);
            self.started.0.load(Ordering::SeqCst) as u32 & STAMP_MASK
        };
        let slot = self.slot(mfn)?;
        let old = FrameSlot::update(&slot.types, |cur| type_dropped(cur, &stamp))?;
        let last = old & TCOUNT == 1;
        if last {
            self.invalidate_owner(slot.refs.load(Ordering::Acquire));
        }
        Ok(last)
    }

    /// Sets or clears `flag` of a frame with type references.
    fn set_flag(&self, mfn: Mfn, flag: u64, on: bool) -> Result<(), FrameError> {
        FrameSlot::update(&self.slot(mfn)?.types, |cur| match (cur & TCOUNT, on) {
            (0, _) => Err(FrameError::Underflow),
            (_, true) => Ok(cur | flag),
            (_, false) => Ok(cur & !flag),
        })
        .map(|_| ())
    }

    /// Records that a table-typed frame's entries were validated.
    pub fn mark_validated(&self, mfn: Mfn) -> Result<(), FrameError> {
        self.set_flag(mfn, VALIDATED, true)
    }

    /// Marks a table-typed frame busy (not validated) while a job drops its entries'
    /// references: it cannot be updated, mapped writable or retyped until then.
    pub fn set_busy(&self, mfn: Mfn) -> Result<(), FrameError> {
        self.set_flag(mfn, VALIDATED, false)
    }

    /// Sets or clears the pinned flag of a frame with type references.
    pub fn set_pinned(&self, mfn: Mfn, pinned: bool) -> Result<(), FrameError> {
        self.set_flag(mfn, PINNED, pinned)
    }

    /// Iterates over (mfn, snapshot of its record).
    pub fn iter(&self) -> impl Iterator<Item = (Mfn, FrameInfo)> + '_ {
        self.frames.as_ref().iter().enumerate().map(|(i, f)| (Mfn(i as u64), f.load()))
    }
}

/// Storage of `n` empty records (host tests and tools).
pub fn slots(n: usize) -> alloc::vec::Vec<FrameSlot> {
    (0..n).map(|_| FrameSlot::new()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(n: usize) -> FrameTable<std::vec::Vec<FrameSlot>> {
        FrameTable::new(slots(n))
    }

    /// Cached guest translations go stale when a frame's last type reference goes (a root
    /// or table leaving every validated tree may be rewritten and validated again under the
    /// same number; a writable frame may become a table) and on owner changes; other
    /// reference changes leave them valid.
    #[test]
    fn translation_generation_moves_when_a_type_goes() {
        let ft = table(4);
        ft.set_owner(Mfn(1), Owner::Dom(0)).unwrap();
        let g = ft.xlat_gen(0);
        ft.get_page_and_type(Mfn(1), 0, Some(PageType::L4)).unwrap();
        ft.mark_validated(Mfn(1)).unwrap();
        ft.get_page_and_type(Mfn(1), 0, Some(PageType::L4)).unwrap();
        assert_eq!(ft.xlat_gen(0), g, "taking references keeps cached walks valid");
        assert_eq!(ft.put_page_and_type(Mfn(1), true), Ok(false));
        assert_eq!(ft.xlat_gen(0), g, "a type reference that is not the last");
        assert_eq!(ft.put_page_and_type(Mfn(1), true), Ok(true));
        let g2 = ft.xlat_gen(0);
        assert_ne!(g2, g, "the root lost its type: it may be rewritten now");
        ft.flushed(); // the TLB clock: a former table needs a flush before it is writable
        ft.get_type(Mfn(1), PageType::Writable).unwrap();
        assert_eq!(ft.put_type(Mfn(1)), Ok(true));
        assert_ne!(ft.xlat_gen(0), g2, "a writable frame lost its type: it may become a table");
        // Per domain: another domain's changes leave domain 0's walks valid.
        ft.set_owner(Mfn(2), Owner::Dom(1)).unwrap();
        let g3 = ft.xlat_gen(0);
        ft.get_type(Mfn(2), PageType::Writable).unwrap();
        ft.put_type(Mfn(2)).unwrap();
        assert_eq!(ft.xlat_gen(0), g3, "domain 1's frame");
        ft.set_owner(Mfn(1), Owner::Free).unwrap();
        assert_ne!(ft.xlat_gen(0), g3, "a frame left domain 0");
    }

    /// A lent frame goes back only while its lender holds the only reference; once it is
    /// back nobody can take one as the domain's.
    #[test]
    fn hand_over_sole_needs_the_only_reference() {
        let ft = table(4);
        ft.set_owner(Mfn(1), Owner::Dom(3)).unwrap();
        ft.get_page_and_type(Mfn(1), 3, Some(PageType::None)).unwrap();
        assert_eq!(ft.get_type(Mfn(1), PageType::Writable), Err(FrameError::TypeConflict), "held untyped: never writable");
        ft.get_page(Mfn(1), 3).unwrap(); // the domain maps it read-only
        assert_eq!(ft.hand_over_sole(Mfn(1), Owner::Dom(3), Owner::Xen), Err(FrameError::InUse));
        assert_eq!(ft.hand_over_sole(Mfn(1), Owner::Dom(2), Owner::Xen), Err(FrameError::NotOwner));
        ft.put_page(Mfn(1)).unwrap();
        let g = ft.xlat_gen(3);
        ft.hand_over_sole(Mfn(1), Owner::Dom(3), Owner::Xen).unwrap();
        assert_ne!(ft.xlat_gen(3), g, "a frame left domain 3");
        assert_eq!(ft.get_page(Mfn(1), 3), Err(FrameError::NotOwner), "no new reference once it is back");
        assert_eq!(ft.put_page_and_type(Mfn(1), true), Ok(true));
        ft.set_owner(Mfn(1), Owner::Free).unwrap();
    }

    /// Records change with compare-and-swap: CPUs taking and dropping references on the same
    /// frames at once leave exact counts, and a type is never shared between two kinds.
    #[test]
    fn concurrent_references_stay_exact() {
        let ft = std::sync::Arc::new(table(4));
        for m in 0..4 {
            ft.set_owner(Mfn(m), Owner::Dom(0)).unwrap();
        }
        let threads: std::vec::Vec<_> = (0..4)
            .map(|t| {
                let ft = ft.clone();
                std::thread::spawn(move || {
                    let mut conflicts = 0u32;
                    for i in 0..20_000u32 {
                        let m = Mfn(((i + t) % 4) as u64);
                        // Threads 0 and 1 want frames writable, 2 and 3 want them as L1s.
                        let ty = if t < 2 { PageType::Writable } else { PageType::L1 };
                        match ft.get_page_and_type(m, 0, Some(ty)) {
                            Ok(_) => {
                                assert_eq!(ft.get(m).unwrap().ty, ty, "a type taken is the frame's type");
                                ft.put_page_and_type(m, true).unwrap();
                            }
                            Err(FrameError::TypeConflict | FrameError::StaleTlb) => {
                                conflicts += 1;
                                ft.flushed();
                            }
                            Err(e) => panic!("{e:?}"),
                        }
                    }
                    conflicts
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        for m in 0..4 {
            let f = ft.get(Mfn(m)).unwrap();
            assert_eq!((f.count, f.type_count), (0, 0), "mfn {m}: {f:?}");
        }
    }

    #[test]
    fn ownership_is_checked() {
        let ft = table(4);
        ft.set_owner(Mfn(1), Owner::Dom(0)).unwrap();
        assert_eq!(ft.get_page(Mfn(1), 0), Ok(()));
        assert_eq!(ft.get_page(Mfn(1), 1), Err(FrameError::NotOwner));
        assert_eq!(ft.get_page(Mfn(2), 0), Err(FrameError::NotOwner));
        assert_eq!(ft.get_page(Mfn(9), 0), Err(FrameError::NoSuchFrame));
        // A referenced frame cannot change hands.
        assert_eq!(ft.set_owner(Mfn(1), Owner::Free), Err(FrameError::InUse));
        ft.put_page(Mfn(1)).unwrap();
        assert_eq!(ft.put_page(Mfn(1)), Err(FrameError::Underflow));
        ft.set_owner(Mfn(1), Owner::Free).unwrap();
    }

    #[test]
    fn type_changes_only_at_zero() {
        let ft = table(2);
        ft.set_owner(Mfn(0), Owner::Dom(0)).unwrap();
        assert_eq!(ft.get_type(Mfn(0), PageType::L1), Ok(true));
        assert_eq!(ft.get_type(Mfn(0), PageType::L1), Ok(false));
        assert_eq!(ft.get_type(Mfn(0), PageType::Writable), Err(FrameError::TypeConflict));
        ft.mark_validated(Mfn(0)).unwrap();
        assert_eq!(ft.put_type(Mfn(0)), Ok(false));
        assert!(ft.get(Mfn(0)).unwrap().validated);
        assert_eq!(ft.put_type(Mfn(0)), Ok(true));
        assert!(!ft.get(Mfn(0)).unwrap().validated);
        ft.flushed(); // a former table becomes writable only after a flush (the TLB clock)
        assert_eq!(ft.get_type(Mfn(0), PageType::Writable), Ok(true));
        assert_eq!(ft.put_type(Mfn(0)), Ok(true));
        assert_eq!(ft.put_type(Mfn(0)), Err(FrameError::Underflow));
    }

    #[test]
    fn tlb_clock() {
        let ft = table(3);
        for m in 0..3 {
            ft.set_owner(Mfn(m), Owner::Dom(0)).unwrap();
        }
        // A fresh frame may become anything.
        assert!(!ft.needs_flush(Mfn(0), PageType::L1));
        // Writable, then its last mapping goes: it may be mapped writable again at once, but
        // becomes a table only after a flush everywhere.
        ft.get_type(Mfn(0), PageType::Writable).unwrap();
        ft.put_type(Mfn(0)).unwrap();
        assert!(!ft.needs_flush(Mfn(0), PageType::Writable));
        assert!(ft.needs_flush(Mfn(0), PageType::L1));
        assert_eq!(ft.get_type(Mfn(0), PageType::L1), Err(FrameError::StaleTlb));
        assert_eq!(ft.get_page_and_type(Mfn(0), 0, Some(PageType::SegDesc)), Err(FrameError::StaleTlb));
        assert_eq!(ft.get(Mfn(0)).unwrap().count, 0, "nothing taken on refusal");
        ft.flushed();
        assert_eq!(ft.get_type(Mfn(0), PageType::L1), Ok(true));
        // The mirror: a table unhooked becomes writable only after a flush; the same table
        // type again needs none.
        ft.put_type(Mfn(0)).unwrap();
        assert_eq!(ft.get_type(Mfn(0), PageType::L1), Ok(true));
        ft.put_type(Mfn(0)).unwrap();
        assert!(ft.needs_flush(Mfn(0), PageType::Writable));
        assert!(ft.needs_flush(Mfn(0), PageType::L2));
        // Freeing and reallocating the frame keeps the stamp.
        ft.set_owner(Mfn(0), Owner::Free).unwrap();
        ft.set_owner(Mfn(0), Owner::Dom(1)).unwrap();
        assert!(ft.needs_flush(Mfn(0), PageType::Writable));
        ft.flushed();
        assert!(!ft.needs_flush(Mfn(0), PageType::Writable));
        // A type still referenced elsewhere is no type change at all.
        ft.get_type(Mfn(1), PageType::Writable).unwrap();
        ft.get_type(Mfn(1), PageType::Writable).unwrap();
        ft.put_type(Mfn(1)).unwrap();
        assert!(!ft.needs_flush(Mfn(1), PageType::L1), "still typed: the type conflict refuses it instead");
    }

    /// A flush already under way when a frame's last type reference went does not make the
    /// frame safe to change kind: only a flush begun after it, once completed.
    #[test]
    fn a_flush_under_way_does_not_count() {
        let ft = table(2);
        ft.set_owner(Mfn(0), Owner::Dom(0)).unwrap();
        let early = ft.flush_begin(); // another CPU starts flushing everyone
        ft.get_type(Mfn(0), PageType::Writable).unwrap();
        ft.put_type(Mfn(0)).unwrap(); // the last writable mapping goes meanwhile
        ft.flush_done(early);
        assert_eq!(ft.get_type(Mfn(0), PageType::L1), Err(FrameError::StaleTlb), "the early flush may have passed a CPU that then cached the mapping");
        let late = ft.flush_begin();
        assert_eq!(ft.get_type(Mfn(0), PageType::L1), Err(FrameError::StaleTlb), "begun is not done");
        ft.flush_done(late);
        assert_eq!(ft.get_type(Mfn(0), PageType::L1), Ok(true));
    }

    /// Stamps are 31 bits of 64-bit counters: they compare right across the wrap, and a stamp
    /// half the range old counts as flushed.
    #[test]
    fn clock_wraps() {
        let c = |started: u64, done: u64| Clock { started, done };
        let wrap = 1u64 << 31;
        assert!(c(5, 5).flushed_since(4));
        assert!(!c(5, 4).flushed_since(4));
        assert!(c(wrap + 2, wrap + 2).flushed_since(STAMP_MASK), "across the wrap");
        assert!(!c(wrap + 1, wrap - 1).flushed_since(STAMP_MASK));
        assert!(c(HALF as u64 + 10, 0).flushed_since(5), "ancient");
    }

    #[test]
    fn errors_map_to_xen_codes() {
        assert_eq!(Errno::from(FrameError::TypeConflict), Errno::EBUSY);
        assert_eq!(Errno::from(FrameError::NotOwner), Errno::EINVAL);
    }
}
