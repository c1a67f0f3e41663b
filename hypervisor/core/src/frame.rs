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
//! (`pt::Pt`) flushes and calls [`FrameTable::flushed`] first. The clock counts those
//! flushes; each frame remembers the clock value when its type count last fell to zero.

use crate::mem::Mfn;
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

/// The frame table over some storage of [`FrameInfo`] records, indexed by MFN.
pub struct FrameTable<S> {
    frames: S,
    /// The TLB clock: flushes everywhere so far, plus one (so that a stamp of 0 never matches).
    clock: u32,
    /// The translation generation (never 0): moves on every hypervisor write into a
    /// page-table frame ([`crate::pt`]), every change of owner, and whenever a frame's last
    /// type reference goes (a table leaving every validated tree may then be rewritten, and
    /// a root frame number reused with other contents; a writable frame may become a
    /// table): what makes a cached guest translation stale (`guest_access::XlatCache`).
    xlat_gen: u64,
}

/// Would a frame with record `f` need a TLB flush everywhere before taking type `ty`?
fn stale(f: &FrameInfo, ty: PageType, clock: u32) -> bool {
    f.type_count == 0 && f.tlb_stamp == clock && f.ty != ty && (f.ty.is_protected() || ty.is_protected())
}

impl<S: AsRef<[FrameInfo]> + AsMut<[FrameInfo]>> FrameTable<S> {
    pub fn new(frames: S) -> Self {
        FrameTable { frames, clock: 1, xlat_gen: 1 }
    }

    /// The translation generation now.
    pub fn xlat_gen(&self) -> u64 {
        self.xlat_gen
    }

    /// Makes every cached guest translation stale (a table entry or an owner changed).
    pub fn invalidate_translations(&mut self) {
        self.xlat_gen = self.xlat_gen.wrapping_add(1).max(1);
    }

    /// Must every CPU's guest TLB be flushed before `mfn` may take type `ty`?
    pub fn needs_flush(&self, mfn: Mfn, ty: PageType) -> bool {
        self.get(mfn).is_some_and(|f| stale(f, ty, self.clock))
    }

    /// The TLB clock (1 + flushes recorded so far, modulo wrap-around).
    pub fn tlb_clock(&self) -> u32 {
        self.clock
    }

    /// Records that every CPU's guest TLB was flushed just now.
    pub fn flushed(&mut self) {
        self.clock = self.clock.wrapping_add(1).max(1);
    }

    /// Takes the type count of a record down by one, stamping it at zero.
    fn drop_type(f: &mut FrameInfo, clock: u32) -> Result<bool, FrameError> {
        f.type_count = f.type_count.checked_sub(1).ok_or(FrameError::Underflow)?;
        if f.type_count == 0 {
            f.validated = false;
            f.pinned = false;
            f.tlb_stamp = clock;
            return Ok(true);
        }
        Ok(false)
    }

    /// Number of frames described.
    pub fn len(&self) -> usize {
        self.frames.as_ref().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The record of `mfn`.
    pub fn get(&self, mfn: Mfn) -> Option<&FrameInfo> {
        self.frames.as_ref().get(usize::try_from(mfn.0).ok()?)
    }

    fn get_mut(&mut self, mfn: Mfn) -> Result<&mut FrameInfo, FrameError> {
        let i = usize::try_from(mfn.0).map_err(|_| FrameError::NoSuchFrame)?;
        self.frames.as_mut().get_mut(i).ok_or(FrameError::NoSuchFrame)
    }

    /// Sets the owner of a frame that is not in use (boot-time classification, allocation
    /// and release).
    pub fn set_owner(&mut self, mfn: Mfn, owner: Owner) -> Result<(), FrameError> {
        self.invalidate_translations();
        let f = self.get_mut(mfn)?;
        if f.count != 0 || f.type_count != 0 {
            return Err(FrameError::InUse);
        }
        // The stamp and last type survive a change of hands: stale translations do too.
        *f = FrameInfo { owner, ty: f.ty, tlb_stamp: f.tlb_stamp, ..FrameInfo::default() };
        Ok(())
    }

    /// The owner of a frame (`Owner::None` beyond the table).
    pub fn owner(&self, mfn: Mfn) -> Owner {
        self.get(mfn).map(|f| f.owner).unwrap_or(Owner::None)
    }

    /// Takes a general reference on a frame owned by `dom`.
    pub fn get_page(&mut self, mfn: Mfn, dom: DomId) -> Result<(), FrameError> {
        let f = self.get_mut(mfn)?;
        if f.owner != Owner::Dom(dom) {
            return Err(FrameError::NotOwner);
        }
        f.count = f.count.checked_add(1).ok_or(FrameError::Overflow)?;
        Ok(())
    }

    /// Drops a general reference.
    pub fn put_page(&mut self, mfn: Mfn) -> Result<(), FrameError> {
        let f = self.get_mut(mfn)?;
        f.count = f.count.checked_sub(1).ok_or(FrameError::Underflow)?;
        Ok(())
    }

    /// [`Self::get_page`] and, if `ty` is given, [`Self::get_type`] in one lookup; nothing
    /// is taken on failure. Returns whether the type reference was the first.
    pub fn get_page_and_type(&mut self, mfn: Mfn, dom: DomId, ty: Option<PageType>) -> Result<bool, FrameError> {
        let clock = self.clock;
        let f = self.get_mut(mfn)?;
        if f.owner != Owner::Dom(dom) {
            return Err(FrameError::NotOwner);
        }
        let count = f.count.checked_add(1).ok_or(FrameError::Overflow)?;
        let mut first = false;
        if let Some(ty) = ty {
            if stale(f, ty, clock) {
                return Err(FrameError::StaleTlb);
            }
            if f.type_count == 0 {
                f.ty = ty;
                f.validated = false;
                first = true;
            } else if f.ty != ty {
                return Err(FrameError::TypeConflict);
            }
            f.type_count = f.type_count.checked_add(1).ok_or(FrameError::Overflow)?;
        }
        f.count = count;
        Ok(first)
    }

    /// Drops a type reference (if `typed`) and a general reference in one lookup. Returns
    /// whether the type reference was the last.
    pub fn put_page_and_type(&mut self, mfn: Mfn, typed: bool) -> Result<bool, FrameError> {
        let clock = self.clock;
        let f = self.get_mut(mfn)?;
        let mut last = false;
        if typed {
            last = Self::drop_type(f, clock)?;
        }
        f.count = f.count.checked_sub(1).ok_or(FrameError::Underflow)?;
        if last {
            self.invalidate_translations();
        }
        Ok(last)
    }

    /// Takes a type reference of type `ty`. Returns `true` when this was the first reference
    /// (the caller must then validate a table type and call [`Self::mark_validated`]).
    pub fn get_type(&mut self, mfn: Mfn, ty: PageType) -> Result<bool, FrameError> {
        let clock = self.clock;
        let f = self.get_mut(mfn)?;
        if stale(f, ty, clock) {
            return Err(FrameError::StaleTlb);
        }
        if f.type_count == 0 {
            f.ty = ty;
            f.validated = false;
            f.type_count = 1;
            return Ok(true);
        }
        if f.ty != ty {
            return Err(FrameError::TypeConflict);
        }
        f.type_count = f.type_count.checked_add(1).ok_or(FrameError::Overflow)?;
        Ok(false)
    }

    /// Drops a type reference. Returns `true` when it was the last one.
    pub fn put_type(&mut self, mfn: Mfn) -> Result<bool, FrameError> {
        let clock = self.clock;
        let f = self.get_mut(mfn)?;
        let last = Self::drop_type(f, clock)?;
        if last {
            self.invalidate_translations();
        }
        Ok(last)
    }

    /// Records that a table-typed frame's entries were validated.
    pub fn mark_validated(&mut self, mfn: Mfn) -> Result<(), FrameError> {
        let f = self.get_mut(mfn)?;
        if f.type_count == 0 {
            return Err(FrameError::Underflow);
        }
        f.validated = true;
        Ok(())
    }

    /// Marks a table-typed frame busy (not validated) while a job drops its entries'
    /// references: it cannot be updated, mapped writable or retyped until then.
    pub fn set_busy(&mut self, mfn: Mfn) -> Result<(), FrameError> {
        let f = self.get_mut(mfn)?;
        if f.type_count == 0 {
            return Err(FrameError::Underflow);
        }
        f.validated = false;
        Ok(())
    }

    /// Sets or clears the pinned flag of a frame with type references.
    pub fn set_pinned(&mut self, mfn: Mfn, pinned: bool) -> Result<(), FrameError> {
        let f = self.get_mut(mfn)?;
        if f.type_count == 0 {
            return Err(FrameError::Underflow);
        }
        f.pinned = pinned;
        Ok(())
    }

    /// Iterates over (mfn, record).
    pub fn iter(&self) -> impl Iterator<Item = (Mfn, &FrameInfo)> {
        self.frames.as_ref().iter().enumerate().map(|(i, f)| (Mfn(i as u64), f))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;

    fn table(n: usize) -> FrameTable<std::vec::Vec<FrameInfo>> {
        FrameTable::new(vec![FrameInfo::default(); n])
    }

    /// Cached guest translations go stale when a frame's last type reference goes (a root
    /// or table leaving every validated tree may be rewritten and validated again under the
    /// same number; a writable frame may become a table) and on owner changes; other
    /// reference changes leave them valid.
    #[test]
    fn translation_generation_moves_when_a_type_goes() {
        let mut ft = table(4);
        ft.set_owner(Mfn(1), Owner::Dom(0)).unwrap();
        let g = ft.xlat_gen();
        ft.get_page_and_type(Mfn(1), 0, Some(PageType::L4)).unwrap();
        ft.mark_validated(Mfn(1)).unwrap();
        ft.get_page_and_type(Mfn(1), 0, Some(PageType::L4)).unwrap();
        assert_eq!(ft.xlat_gen(), g, "taking references keeps cached walks valid");
        assert_eq!(ft.put_page_and_type(Mfn(1), true), Ok(false));
        assert_eq!(ft.xlat_gen(), g, "a type reference that is not the last");
        assert_eq!(ft.put_page_and_type(Mfn(1), true), Ok(true));
        let g2 = ft.xlat_gen();
        assert_ne!(g2, g, "the root lost its type: it may be rewritten now");
        ft.flushed(); // the TLB clock: a former table needs a flush before it is writable
        ft.get_type(Mfn(1), PageType::Writable).unwrap();
        assert_eq!(ft.put_type(Mfn(1)), Ok(true));
        assert_ne!(ft.xlat_gen(), g2, "a writable frame lost its type: it may become a table");
    }

    #[test]
    fn ownership_is_checked() {
        let mut ft = table(4);
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
        let mut ft = table(2);
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
        let mut ft = table(3);
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

    #[test]
    fn errors_map_to_xen_codes() {
        assert_eq!(Errno::from(FrameError::TypeConflict), Errno::EBUSY);
        assert_eq!(Errno::from(FrameError::NotOwner), Errno::EINVAL);
    }
}
