//! The consistency audit of one domain's frames: every general and type count recomputed
//! from what should hold it (the entries of its validated tables, pins, and the references
//! the hypervisor holds for it: roots, descriptor pages, `vcpu_info` and shared_info pages,
//! grant frames, and the pins of its grants mapped or being copied by any domain)
//! and compared with the frame table. Run on a domain whose vCPUs are all off the CPUs
//! (nothing changes under it); the same rules as the host property tests of `pt`.

use crate::frame::{FrameSlot, FrameTable, Owner, PageType};
use crate::mem::{Mfn, PhysMem};
use crate::pte::Pte;
use alloc::vec::Vec;
use guest_abi::layout::is_reserved_l4_slot;
use guest_abi::DomId;

/// A reference the hypervisor holds on a frame for the domain: a general reference and,
/// with `typed`, one type reference (a root, a descriptor page, a writable page it keeps).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Hold {
    pub mfn: Mfn,
    pub typed: bool,
}

/// A frame's (general count, type count).
pub type Counts = (u32, u32);

/// What the audit found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Frames the domain owns, and how many of them are validated tables.
    pub frames: usize,
    pub tables: usize,
    /// Frames whose counts differ from the recomputed ones: (frame, (count, type count)
    /// expected, found), the first few.
    pub mismatches: Vec<(Mfn, Counts, Counts)>,
    /// Frames used against their type (an entry of a level-n table pointing at a frame that
    /// is not a level-(n−1) table, a writable mapping of a frame that is not writable).
    pub misuse: Vec<Mfn>,
    /// Tables with type references that are not validated (a job in progress): the counts
    /// below them cannot be recomputed.
    pub busy: usize,
    /// The recomputed counts did not fit in memory: nothing was checked.
    pub no_memory: bool,
}

impl Report {
    pub fn consistent(&self) -> bool {
        self.mismatches.is_empty() && self.misuse.is_empty() && self.busy == 0 && !self.no_memory
    }
}

const MAX_LISTED: usize = 8;

/// Audits the frames `dom` owns in `ft` (contents read through `mem`), with `holds` the
/// hypervisor's own references for it.
pub fn audit<M: PhysMem + ?Sized, S: AsRef<[FrameSlot]>>(mem: &M, ft: &FrameTable<S>, dom: DomId, holds: &[Hold]) -> Report {
    let mut r = Report::default();
    // The domain's frames in order, with their recomputed counts: one fallible allocation
    // (a large domain must not take the heap down with it).
    let mut want: Vec<(u64, Counts)> = Vec::new();
    let n = ft.iter().filter(|(_, f)| f.owner == Owner::Dom(dom)).count();
    if want.try_reserve_exact(n).is_err() {
        r.no_memory = true;
        return r;
    }
    want.extend(ft.iter().filter(|(_, f)| f.owner == Owner::Dom(dom)).map(|(m, _)| (m.0, (0, 0))));
    r.frames = want.len();
    let mut add = |m: Mfn, typed: bool| {
        if let Ok(i) = want.binary_search_by_key(&m.0, |w| w.0) {
            want[i].1 .0 += 1;
            want[i].1 .1 += typed as u32;
        }
    };
    let mut misuse = Vec::new();
    for (mfn, f) in ft.iter() {
        if f.owner != Owner::Dom(dom) {
            continue;
        }
        if f.pinned {
            add(mfn, true);
        }
        let level = match (f.ty, f.type_count) {
            (_, 0) => continue,
            (PageType::L1, _) => 1,
            (PageType::L2, _) => 2,
            (PageType::L3, _) => 3,
            (PageType::L4, _) => 4,
            _ => continue,
        };
        if !f.validated {
            r.busy += 1;
            continue;
        }
        r.tables += 1;
        for i in 0..512 {
            if level == 4 && is_reserved_l4_slot(i) {
                continue;
            }
            let Some(e) = mem.read_u64(mfn, i).map(Pte) else { continue };
            // A grant mapping's entry holds nothing itself: the granter's active entry does
            // (its holds).
            if !e.present() || e.granted() || ft.owner(e.mfn()) != Owner::Dom(dom) {
                continue;
            }
            let t = ft.get(e.mfn()).unwrap_or_default();
            let typed = if level > 1 {
                if Some(t.ty) != PageType::table(level - 1) && misuse.len() < MAX_LISTED {
                    misuse.push(e.mfn());
                }
                true
            } else if e.writable() {
                if t.ty != PageType::Writable && misuse.len() < MAX_LISTED {
                    misuse.push(e.mfn());
                }
                true
            } else {
                false
            };
            add(e.mfn(), typed);
        }
    }
    for h in holds {
        add(h.mfn, h.typed);
    }
    for &(m, w) in &want {
        let f = ft.get(Mfn(m)).unwrap_or_default();
        if w != (f.count, f.type_count) && r.mismatches.len() < MAX_LISTED {
            r.mismatches.push((Mfn(m), w, (f.count, f.type_count)));
        }
    }
    misuse.sort_unstable_by_key(|m| m.0);
    misuse.dedup();
    r.misuse = misuse;
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::slots;
    use crate::mem::VecMem;
    use crate::pt::{CountFlushes, Jobs, Pt};

    const P: u64 = 1;
    const RW: u64 = 2;

    /// A domain with an L4 → L3 → L2 → L1 chain mapping two frames (one writable), the L4
    /// as root: consistent; then each kind of stray reference is caught.
    #[test]
    fn recomputes_counts_and_catches_strays() {
        let mut mem = VecMem::new(0, 16);
        let ft = FrameTable::new(slots(16));
        for m in 0..16 {
            ft.set_owner(Mfn(m), Owner::Dom(1)).unwrap();
        }
        let (mut tlb, mut jobs, mut budget) = (CountFlushes::default(), Jobs::default(), u64::MAX);
        let mut p = Pt { mem: &mut mem, ft: &ft, ram_end: Mfn(16), io: None, tlb: &mut tlb, jobs: &mut jobs, vcpu: 0, budget: &mut budget };
        let e = |m: u64, f: u64| Pte(m << 12 | f);
        p.mem.write_u64(Mfn(4), 0, e(3, P | RW).0);
        p.mem.write_u64(Mfn(3), 0, e(2, P | RW).0);
        p.mem.write_u64(Mfn(2), 0, e(1, P | RW).0);
        p.mem.write_u64(Mfn(1), 0, e(8, P | RW).0);
        p.mem.write_u64(Mfn(1), 1, e(9, P).0);
        p.get_root(Mfn(4), 1).unwrap();
        p.pin(Mfn(1), 1, 1).unwrap();
        let holds = [Hold { mfn: Mfn(4), typed: true }];
        let r = audit(&mem, &ft, 1, &holds);
        assert!(r.consistent(), "{r:?}");
        assert_eq!((r.frames, r.tables), (16, 4));
        // The hypervisor forgetting a root it holds is caught.
        assert!(!audit(&mem, &ft, 1, &[]).consistent());
        // A stray general reference.
        ft.get_page(Mfn(9), 1).unwrap();
        let r = audit(&mem, &ft, 1, &holds);
        assert_eq!(r.mismatches, [(Mfn(9), (1, 0), (2, 0))]);
        ft.put_page(Mfn(9)).unwrap();
        // A read-only mapping of a frame that is typed writable elsewhere is fine; a table
        // entry pointing at a frame of the wrong kind is misuse.
        mem.write_u64(Mfn(2), 1, e(8, P | RW).0);
        let r = audit(&mem, &ft, 1, &holds);
        assert!(r.misuse.contains(&Mfn(8)), "{r:?}");
    }
}
