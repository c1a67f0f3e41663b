//! What is left of a domain once it is destroyed: the teardown's steps (driven by
//! `hypercall::domctl`'s `destroydomain`), its frames freed or noted as still referenced
//! elsewhere, the lingering domain reaped when the last such reference goes, and a dead
//! domain's own grant mappings released.

use crate::domain::DomShared;
use alloc::sync::Arc;
use core::sync::atomic::Ordering;
use hv_core::frame::Owner;
use hv_core::mem::Mfn;

/// The teardown steps (`hypercall::domctl`'s `destroy`).
pub const STOP: u32 = 0;
pub const WAIT: u32 = 1;
pub const PORTS: u32 = 2;
pub const VCPUS: u32 = 3;
pub const UNPIN: u32 = 4;
pub const HELD: u32 = 5;
pub const FREE: u32 = 6;
pub const DONE: u32 = 7;

/// Frame `m` of dying domain `d` (its record `f`), if nothing references it: returned to
/// the allocator with its M2P entry invalidated ([`free_from`]). It is not scrubbed
/// here: every path that hands a frame out again zeroes it first (a guest's
/// `alloc_for_guest`, grant frames, shared_info, the hypervisor's private frames), as for
/// frames a guest gives back with `decrease_reservation`; one scrub per frame, not two.
pub fn free_frame(d: &DomShared, m: Mfn, f: hv_core::frame::FrameInfo) -> bool {
    f.count == 0 && f.type_count == 0 && free_from(d, m).is_ok()
}

/// Gives frame `m` of domain `d` back to the allocator (`decrease_reservation`, and the
/// teardown): only if `d` owns it and nothing references it; for a frame nothing can have
/// seen yet (just given to it), whose domain's memory lock is held, or whose domain is
/// dying (the teardown's FREE walk). The frame is not scrubbed: whoever is handed it next
/// zeroes it first.
pub fn free_from(d: &DomShared, m: Mfn) -> Result<(), guest_abi::errno::Errno> {
    use guest_abi::errno::Errno;
    let id = d.id;
    let ft = crate::machine::frames();
    let f = ft.get(m).ok_or(Errno::EINVAL)?;
    if f.owner != Owner::Dom(id) {
        return Err(Errno::EINVAL);
    }
    if f.count != 0 || f.type_count != 0 {
        return Err(Errno::EBUSY);
    }
    ft.set_owner(m, Owner::Free).map_err(|_| Errno::EBUSY)?;
    crate::machine::get().m2p.set(m, guest_abi::layout::INVALID_M2P_ENTRY);
    crate::mm::with(|mm| mm.alloc.free(m));
    let _ = d.tot_pages.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    Ok(())
}

/// [`free_frame`] in the FREE walk: a frame still referenced (by another domain's mapping)
/// is noted in the teardown's stuck list, which is all a later [`reap`] looks at (up to
/// [`STUCK_MAX`] frames; past that it walks every frame the domain ever owned).
pub fn free_or_note(d: &DomShared, m: Mfn, f: hv_core::frame::FrameInfo) {
    if free_frame(d, m, f) {
        return;
    }
    let mut stuck = d.teardown.stuck.lock();
    if stuck.len() >= STUCK_MAX || stuck.try_reserve(1).is_err() {
        d.teardown.overflow.store(true, Ordering::Release);
    } else {
        stuck.push(m);
    }
}

/// Frames a teardown notes as still referenced before it falls back to whole walks.
const STUCK_MAX: usize = 4096;

/// Forgets `d` (its id becomes free) if it owns no frame any more (its stuck list is empty
/// and nothing overflowed it: every frame the FREE walk met was freed or noted) and none
/// of its grants is in use; otherwise it lingers, dying.
pub fn finish_if_free(d: &Arc<DomShared>) {
    if !crate::domain::is_registered(d) {
        return;
    }
    let t = &d.teardown;
    let left = t.stuck.lock().len();
    let lingering = &t.lingering;
    if left == 0 && !t.overflow.load(Ordering::Acquire) && d.grant().active.holds().next().is_none() {
        d.tot_pages.store(0, Ordering::Relaxed);
        crate::domain::unregister(d);
        if lingering.swap(false, Ordering::AcqRel) {
            crate::domain::LINGERING.fetch_sub(1, Ordering::AcqRel);
        }
        log::info!("d{}: torn down; its id is free", d.id);
    } else if !lingering.swap(true, Ordering::AcqRel) {
        crate::domain::LINGERING.fetch_add(1, Ordering::AcqRel);
        log::info!("d{}: dying: {} frame(s) still referenced by other domains", d.id, left);
    }
}

/// After a privileged domain's page-table operation: it may have dropped the last foreign
/// reference to a frame of a dying domain (a mapping of another domain's frame in its own
/// tables): the lingering domains are looked at again. Nothing to do, one load, while none
/// linger.
/// A look costs one frame-table read per stuck frame.
pub fn reap_lingering() {
    if crate::domain::LINGERING.load(Ordering::Acquire) == 0 {
        return;
    }
    for d in crate::domain::all().filter(|d| d.teardown.lingering.load(Ordering::Acquire)) {
        reap(&d);
    }
}

/// A reference another domain held on a frame of dying domain `d` went: frees what is
/// unreferenced now (the teardown does it if it holds `d` at the moment).
pub fn reap(d: &Arc<DomShared>) {
    reap_with(d, true)
}

/// Shortest time between two whole walks of one domain's frames by [`reap`] (its stuck
/// list overflowed): a dom0 holding thousands of mappings of a dead domain does not pay a
/// walk on every page-table operation.
const WALK_INTERVAL_NS: u64 = 10_000_000;

/// [`reap`]; with `may_walk` false (the scheduler's path) an overflowed domain is left to
/// a later caller rather than walked here.
fn reap_with(d: &Arc<DomShared>, may_walk: bool) {
    let t = &d.teardown;
    // Set first: a teardown walking the frames now (FREE, busy or preempted) looks again
    // when it is done (`destroy`).
    t.reap.store(true, Ordering::Release);
    if t.step.load(Ordering::Acquire) != DONE || !crate::domain::is_registered(d) {
        return;
    }
    while t.reap.swap(false, Ordering::AcqRel) {
        if t.busy.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
            // The CPU holding it looks again when it lets go.
            t.reap.store(true, Ordering::Release);
            return;
        }
        let ft = crate::machine::frames();
        let owned = |m: Mfn| ft.get(m).filter(|f| f.owner == Owner::Dom(d.id));
        if t.overflow.load(Ordering::Acquire) {
            let now = crate::events::now();
            if !may_walk || now.saturating_sub(t.last_walk.load(Ordering::Acquire)) < WALK_INTERVAL_NS {
                // Later (the flag stays set for whoever comes next).
                t.reap.store(true, Ordering::Release);
                t.busy.store(false, Ordering::Release);
                return;
            }
            t.last_walk.store(now, Ordering::Release);
            // Too many were stuck to list: every frame it ever owned is looked at, and the
            // list made again.
            t.overflow.store(false, Ordering::Release);
            t.stuck.lock().clear();
            let (lo, hi) = d.frame_range();
            for m in lo..=hi {
                if let Some(f) = owned(Mfn(m)) {
                    free_or_note(d, Mfn(m), f);
                }
            }
        } else {
            let mut stuck = t.stuck.lock();
            stuck.retain(|&m| owned(m).is_some_and(|f| !free_frame(d, m, f)));
        }
        finish_if_free(d);
        t.busy.store(false, Ordering::Release);
    }
}


/// Releases up to `max` handles' worth of dead domain `d`'s mappings of grants, from where
/// the last call stopped (its vCPUs are all off the CPUs: no CPU runs its tables, and
/// loading any vCPU flushes). Its PTEs stay, marked as grants: they hold nothing and are
/// refused if the domain ever validated them again. Returns how many were released and
/// whether none is left. A granter being destroyed is reaped (its frame may be free now).
/// Allocates nothing.
pub fn release_grant_maps(d: &DomShared, max: u32) -> (usize, bool) {
    let ft = crate::machine::frames();
    let mut dying = [None::<guest_abi::DomId>; 8];
    let (n, done) = {
        let mut mm = d.mm();
        let end = mm.maptrack.handles();
        let mut h = d.teardown.release_at.load(Ordering::Acquire);
        let stop = h.saturating_add(max).min(end);
        let mut n = 0;
        while h < stop {
            if let Some(m) = mm.maptrack.get(h).copied() {
                if let Some(gd) = crate::domain::shared_of(m.granter) {
                    let mut g = gd.grant();
                    let crate::domain::GrantTable { frames, status, version, active, .. } = &mut *g;
                    let shared = crate::grants::Entries::new(frames, status, *version);
                    if hv_core::grant::unmap(ft, &mut mm.maptrack, h, m.host, m.device, gd.id, active, &shared).is_ok() {
                        n += 1;
                        if gd.is_dying() {
                            // Its teardown looks again when it is done; a done one is
                            // reaped below.
                            gd.teardown.reap.store(true, Ordering::Release);
                            if let Some(slot) = dying.iter_mut().find(|s| s.is_none() || **s == Some(gd.id)) {
                                *slot = Some(gd.id);
                            }
                        }
                    }
                }
            }
            h += 1;
        }
        d.teardown.release_at.store(h, Ordering::Release);
        (n, h >= end)
    };
    for gd in dying.iter().flatten().filter_map(|&id| crate::domain::shared_of(id)) {
        reap_with(&gd, false);
    }
    (n, done)
}
