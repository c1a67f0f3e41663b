//! `mmu_update`, `mmuext_op`, `update_va_mapping(_otherdomain)`: guest page-table updates,
//! each validated by `hv_core::pt`.
//!
//! Batches are preemptible, inside multicalls too: once the hypercall's work budget is spent
//! (`super::preempt`) the hypercall is re-issued as a continuation, Xen style
//! (`count | MMU_UPDATE_PREEMPTED`, `done` carried in the guest's `done` word), so a long
//! batch gives the same result as an uninterrupted one.

use super::{continuation, foreign_dom, read_guest, write_guest, HcResult};
use crate::domain::DomShared;
use alloc::sync::Arc;
use super::Mx;
use guest_abi::errno::Errno;
use guest_abi::hypercall as nr;
use guest_abi::DomId;
use hv_arch::entry::TrapFrame;
use hv_arch::paging;
use hv_arch::physmem::DirectMap;
use hv_core::frame::Owner;
use hv_core::mem::{Mfn, PhysMem};
use hv_core::continuation::{batch_count, batch_rest};
use hv_core::pte::Pte;

/// Requests copied from the guest at a time.
const CHUNK: usize = 32;
pub use guest_abi::mm::{ext, MMU_MACHPHYS_UPDATE, MMU_NORMAL_PT_UPDATE, MMU_PT_UPDATE_PRESERVE_AD};

use crate::guest::{pt, DomPt};

/// Advances the current domain's preempted page-table work (`Err`: not done yet). A pending
/// validation whose vCPU went down is taken over by the caller (nobody else would finish it).
pub fn drive(hv: &mut Mx) -> Result<(), Errno> {
    if !hv.mm.jobs.is_pending() {
        return Ok(());
    }
    if let Some(owner) = hv.mm.jobs.validation_owner() {
        let gone = !hv.pc.cur.shared.is_up(owner);
        if owner != hv.pc.cur.id && gone {
            let me = hv.pc.cur.id;
            hv.mm.jobs.adopt(me);
        }
    }
    let mut dm = DirectMap;
    pt!(hv, dm).drive().map_err(Errno::from)
}

/// After the current root's L4 changed: copy its slots into this CPU's roots.
pub fn resync_root(hv: &impl super::OnCpu) {
    let pc = hv.pc();
    paging::sync_guest_slots(&pc.tables, pc.cur.l4);
}

/// After page-table or page-type changes affecting `doms`: drops this CPU's guest
/// translations and those of every other CPU running one of those domains (shootdown), so no
/// CPU keeps using a mapping that is gone before the next guest instruction anywhere.
pub fn tables_changed(hv: &impl super::OnCpu, doms: &[DomId]) {
    paging::flush_guest_tlb();
    crate::shootdown::shootdown(hv.pc().id, doms);
}

/// The memory lock of a foreign page-table owner, held for the operation.
type ForeignMm<'g> = crate::locks::Ordered<spin::mutex::TicketMutexGuard<'g, crate::domain::DomMm>>;

/// Whose page tables an operation changes: the caller's (the dispatch holds its memory
/// lock) or, for a privileged caller, an unprivileged domain's, whose memory lock is taken
/// here as the second one (`DomShared::foreign_mm`). A foreign operation's preempted
/// validation is recorded in the target's jobs under [`crate::guest::foreign_owner`].
struct Tables<'g> {
    foreign: Option<ForeignMm<'g>>,
    owner: u32,
}

impl<'g> Tables<'g> {
    /// The tables of `target` (the caller's own when it is `None` or the caller). A
    /// foreign target's pending work is driven first (see [`adopt_if_stalled`]);
    /// `Err(ERESTART)` while some remains.
    fn of(hv: &mut Mx, target: Option<&'g DomShared>) -> Result<Tables<'g>, Errno> {
        let Some(target) = target.filter(|t| t.id != hv.pc.cur.dom) else {
            return Ok(Tables { foreign: None, owner: hv.pc.cur.id });
        };
        let owner = crate::guest::foreign_owner(hv.pc.cur.dom, hv.pc.cur.id);
        let mut g = target.foreign_mm();
        // Looked at again under its lock: a teardown sets the flag before any step that
        // takes this lock, so nothing done from here can slip past its walks.
        if target.is_dying() {
            return Err(Errno::ESRCH);
        }
        if g.jobs.is_pending() {
            adopt_if_stalled(target, &mut g.jobs, owner);
            let mut dm = DirectMap;
            pt!(hv.pc, dm, g.jobs, owner).drive().map_err(Errno::from)?;
        }
        Ok(Tables { foreign: Some(g), owner })
    }
}

/// A foreign caller (`owner`) takes over `target`'s pending validation only when nobody
/// else will finish it: it belongs to another foreign caller, or to a vCPU of the target
/// that is down, or the target is paused. A running vCPU's own validation is left to it
/// (the caller's operation is re-issued until it is done), so the two never throw away
/// each other's finished work.
pub fn adopt_if_stalled(target: &DomShared, jobs: &mut hv_core::pt::Jobs, owner: u32) {
    if let Some(o) = jobs.validation_owner() {
        if o != owner && (o >= 64 || !target.is_up(o) || target.is_paused()) {
            jobs.adopt(owner);
        }
    }
}

/// A page-table context over `$t`'s tables (a [`Tables`]) for the operation of `$hv`: MMIO
/// only in the caller's own tables, if it has I/O rights.
macro_rules! pt_in {
    ($hv:expr, $t:expr, $dm:ident) => {{
        let (jobs, io) = match $t.foreign.as_mut() {
            Some(g) => (&mut g.jobs, None),
            None => (&mut $hv.mm.jobs, $hv.pc.cur.shared.privileged.then(|| &crate::machine::get().iomem)),
        };
        pt!(@ $hv.pc, $dm, *jobs, $t.owner, io)
    }};
}

/// Splits `foreigndom` into (data owner FD, page-table owner PFD), and the PFD itself when
/// it is not the caller. A foreign PFD's entries may only name its own frames (FD = PFD).
fn foreign(hv: &Mx, fdom: u64) -> Result<(DomId, DomId, Option<Arc<DomShared>>), Errno> {
    let me = hv.pc.cur.dom;
    // The usual case, without touching the registry: the caller's own tables and frames.
    if fdom == guest_abi::DOMID_SELF as u64 || fdom == me as u64 {
        return Ok((me, me, None));
    }
    // MMIO named through DOMID_IO, as Xen allows any domain (the rights are checked per
    // frame: `hv_core::ioperm`); it owns no RAM, so RAM entries are refused.
    if fdom == guest_abi::DOMID_IO as u64 {
        return Ok((guest_abi::DOMID_IO, me, None));
    }
    let fd = foreign_dom(hv, (fdom & 0xFFFF) as u16)?.id;
    let pfd = match fdom >> 16 {
        0 => None,
        n => Some(foreign_dom(hv, (n - 1) as u16)?).filter(|p| p.id != me),
    };
    match pfd {
        Some(p) if fd != p.id => Err(Errno::EINVAL),
        Some(p) => Ok((fd, p.id, Some(p))),
        None => Ok((fd, me, None)),
    }
}

/// Reads the `done` carried over a continuation.
fn done_so_far(hv: &Mx, preempted: bool, pdone: u64) -> Result<u64, Errno> {
    if !preempted || pdone == 0 {
        return Ok(0);
    }
    let mut b = [0u8; 4];
    read_guest(hv, pdone, &mut b)?;
    Ok(u32::from_le_bytes(b) as u64)
}

fn put_done(hv: &Mx, pdone: u64, done: u64) -> Result<(), Errno> {
    if pdone != 0 {
        write_guest(hv, pdone, &(done as u32).to_le_bytes())?;
    }
    Ok(())
}

pub fn mmu_update(hv: &mut Mx, f: &mut TrapFrame, reqs: u64, count: u64, pdone: u64, fdom: u64) -> HcResult {
    let (count, preempted) = batch_count(count).ok_or(Errno::EINVAL)?;
    let base = done_so_far(hv, preempted, pdone)?;
    let (fd, pfd, pfdd) = foreign(hv, fdom)?;
    let mut tables = Tables::of(hv, pfdd.as_deref())?;
    let mut resync = false;
    let mut result = Ok(0);
    let mut i = 0;
    // Requests are copied in chunks: one checked guest access per chunk, not per entry.
    let mut chunk = [0u8; 16 * CHUNK];
    let mut have = 0..0;
    while i < count {
        if i > 0 && super::preempt(hv, 1) {
            return mmu_update_later(hv, f, (reqs, count, pdone, fdom), &[fd, pfd], base, i, resync);
        }
        if !have.contains(&i) {
            let n = (count - i).min(CHUNK as u64) as usize;
            if let Err(e) = read_guest(hv, reqs.wrapping_add(16 * i), &mut chunk[..16 * n]) {
                result = Err(e);
                break;
            }
            have = i..i + n as u64;
        }
        let b = &chunk[16 * (i - have.start) as usize..][..16];
        let ptr = u64::from_le_bytes(b[..8].try_into().unwrap_or_default());
        let val = u64::from_le_bytes(b[8..].try_into().unwrap_or_default());
        let r = match ptr & 3 {
            cmd @ (MMU_NORMAL_PT_UPDATE | MMU_PT_UPDATE_PRESERVE_AD) => {
                let table = Mfn::of(ptr);
                let idx = ((ptr & 0xFFF) >> 3) as usize;
                let mut dm = DirectMap;
                let r = pt_in!(hv, tables, dm).update_entry(table, idx, Pte(val), pfd, fd, cmd == MMU_PT_UPDATE_PRESERVE_AD);
                if r.is_ok() && table == hv.pc.cur.l4 {
                    resync = true;
                }
                r.map_err(Errno::from)
            }
            MMU_MACHPHYS_UPDATE => {
                let mfn = Mfn::of(ptr);
                if pfd != hv.pc.cur.dom || crate::machine::frames().owner(mfn) != Owner::Dom(fd) {
                    Err(Errno::EINVAL)
                } else {
                    crate::machine::get().m2p.set(mfn, val);
                    Ok(())
                }
            }
            _ => Err(Errno::ENOSYS),
        };
        match r {
            // The entry's validation was preempted (it is the domain's pending job now): this
            // entry again, later.
            Err(Errno::ERESTART) => return mmu_update_later(hv, f, (reqs, count, pdone, fdom), &[fd, pfd], base, i, resync),
            Err(e) => {
                result = Err(e);
                break;
            }
            Ok(()) => i += 1,
        }
        // A devalidation left pending: the rest of the batch waits for it.
        if i < count && (hv.mm.jobs.is_pending() || tables.foreign.as_ref().is_some_and(|g| g.jobs.is_pending())) {
            return mmu_update_later(hv, f, (reqs, count, pdone, fdom), &[fd, pfd], base, i, resync);
        }
    }
    if resync {
        resync_root(hv);
    }
    if i > 0 {
        tables_changed(hv, &[hv.pc.cur.dom, fd, pfd]);
    }
    put_done(hv, pdone, base + i)?;
    result
}

/// Continues `mmu_update(reqs, count, pdone, fdom)` at entry `i` (of this call; `base` were
/// done before it); `doms` are the data and page-table owners it named.
fn mmu_update_later(hv: &mut Mx, f: &mut TrapFrame, (reqs, count, pdone, fdom): (u64, u64, u64, u64), doms: &[DomId; 2], base: u64, i: u64, resync: bool) -> HcResult {
    if resync {
        resync_root(hv);
    }
    tables_changed(hv, &[hv.pc.cur.dom, doms[0], doms[1]]);
    put_done(hv, pdone, base + i)?;
    let (rest, left) = batch_rest(reqs, 16, count, i);
    continuation(f, nr::MMU_UPDATE, [rest, left, pdone, fdom])
}


/// Reads a vCPU bitmap for the MULTI variants (checks the pointer).
fn read_vcpumask(hv: &Mx, p: u64) -> Result<u64, Errno> {
    let mut b = [0u8; 8];
    read_guest(hv, p, &mut b)?;
    Ok(u64::from_le_bytes(b))
}

fn check_invlpg_va(va: u64) -> Result<(), Errno> {
    // XSA-279: never hand a non-canonical address to a TLB instruction.
    if guest_abi::layout::is_canonical(va) {
        Ok(())
    } else {
        Err(Errno::EINVAL)
    }
}

pub(crate) fn new_baseptr(hv: &mut Mx, mfn: Mfn) -> Result<(), Errno> {
    let dom = hv.pc.cur.dom;
    let mut dm = DirectMap;
    pt!(hv, dm).get_root(mfn, dom)?;
    let old = core::mem::replace(&mut hv.pc.cur.l4, mfn);
    crate::shootdown::set_root(hv.pc);
    pt!(hv, dm).put_root(old);
    resync_root(hv);
    Ok(())
}

/// `MMUEXT_NEW_USER_BASEPTR` (Xen pv64 mode, from kernel mode: the user root is the other
/// one): a validated L4 of the caller's (a root reference, as `NEW_BASEPTR`), or frame 0
/// for none.
fn new_user_baseptr(hv: &mut Mx, mfn: Mfn) -> Result<(), Errno> {
    let dom = hv.pc.cur.dom;
    let mut dm = DirectMap;
    if mfn != Mfn(0) {
        pt!(hv, dm).get_root(mfn, dom)?;
    }
    let old = core::mem::replace(&mut hv.pc.cur.other_l4, mfn);
    if old != Mfn(0) {
        pt!(hv, dm).put_root(old);
    }
    Ok(())
}

/// Takes descriptor-page references on the frames behind an LDT of `ents` descriptors at
/// `base`, translated through root `l4` (all or none).
pub fn acquire_ldt(hv: &mut Mx, l4: Mfn, base: u64, ents: u64) -> Result<[Option<Mfn>; 16], Errno> {
    check_ldt(base, ents)?;
    let dom = hv.pc.cur.dom;
    let mut frames = [None; 16];
    for (i, slot) in frames.iter_mut().enumerate().take(ldt_pages(ents)) {
        *slot = Some(super::translate_in(hv, l4, base + 4096 * i as u64, false)?);
    }
    let mut dm = DirectMap;
    acquire_ldt_frames(&mut pt!(hv, dm), dom, &frames)
}

/// [`acquire_ldt`] for vCPU of another domain `dom` (its memory lock held: `pt` is over its
/// jobs), translated without the caller's cache.
pub fn acquire_ldt_in(pt: &mut DomPt<'_>, dom: DomId, l4: Mfn, base: u64, ents: u64) -> Result<[Option<Mfn>; 16], Errno> {
    check_ldt(base, ents)?;
    let mut frames = [None; 16];
    for (i, slot) in frames.iter_mut().enumerate().take(ldt_pages(ents)) {
        let va = base + 4096 * i as u64;
        let m = crate::domain::with_view(dom, l4, true, None, |v| hv_core::guest_access::translate(&DirectMap, v, va, false));
        *slot = Some(m.map_err(Errno::from)?);
    }
    acquire_ldt_frames(pt, dom, &frames)
}

fn check_ldt(base: u64, ents: u64) -> Result<(), Errno> {
    if ents > 8192 {
        return Err(Errno::EINVAL);
    }
    let end = base.checked_add(ents * 8).ok_or(Errno::EINVAL)?;
    if !base.is_multiple_of(4096) || (ents > 0 && !hv_core::pv_image::is_guest_range(base, end)) {
        return Err(Errno::EINVAL);
    }
    Ok(())
}

fn ldt_pages(ents: u64) -> usize {
    (ents * 8).div_ceil(4096) as usize
}

/// Descriptor-page references on LDT frames (all or none).
fn acquire_ldt_frames(pt: &mut DomPt<'_>, dom: DomId, frames: &[Option<Mfn>; 16]) -> Result<[Option<Mfn>; 16], Errno> {
    let mut new = [None; 16];
    for (slot, m) in new.iter_mut().zip(frames) {
        let Some(m) = *m else { break };
        if let Err(e) = pt.get_segdesc(m, dom) {
            super::desc::release_in(pt, &new);
            return Err(e.into());
        }
        *slot = Some(m);
    }
    Ok(new)
}

fn set_ldt(hv: &mut Mx, base: u64, ents: u64) -> Result<(), Errno> {
    let new = acquire_ldt(hv, hv.pc.cur.l4, base, ents)?;
    let old = core::mem::replace(&mut hv.pc.cur.ldt, new);
    for (i, m) in new.iter().enumerate() {
        if m.is_some() || old[i].is_some() {
            paging::map_ldt_page(&hv.pc.tables, i, *m);
        }
    }
    super::desc::release(hv, &old);
    hv.pc.cur.ldt_ents = ents as u32;
    hv.pc.cur.ldt_base = base;
    paging::load_ldt(&hv.pc.tables, ents as u32);
    hv.pc.mapped_desc.ldt = new;
    hv.pc.mapped_desc.ldt_ents = ents as u32;
    Ok(())
}

fn one_ext(hv: &mut Mx, t: &mut Tables, cmd: u32, arg1: u64, arg2: u64, fd: DomId) -> Result<(), Errno> {
    use ext::*;
    let dom = hv.pc.cur.dom;
    let mut dm = DirectMap;
    // On another domain (as Xen): its tables pinned or unpinned, its frames cleared or
    // copied; everything else concerns the caller's own vCPU.
    if fd != dom && !matches!(cmd, PIN_L1_TABLE..=PIN_L4_TABLE | UNPIN_TABLE | CLEAR_PAGE | COPY_PAGE) {
        return Err(Errno::EPERM);
    }
    match cmd {
        PIN_L1_TABLE..=PIN_L4_TABLE => pt_in!(hv, t, dm).pin(Mfn(arg1), cmd + 1, fd).map_err(Errno::from),
        UNPIN_TABLE => pt_in!(hv, t, dm).unpin(Mfn(arg1), fd).map_err(Errno::from),
        NEW_BASEPTR => new_baseptr(hv, Mfn(arg1)),
        TLB_FLUSH_LOCAL | TLB_FLUSH_ALL => {
            paging::flush_local(&hv.pc.tables);
            Ok(())
        }
        TLB_FLUSH_MULTI => {
            read_vcpumask(hv, arg2)?;
            paging::flush_local(&hv.pc.tables);
            Ok(())
        }
        INVLPG_LOCAL | INVLPG_ALL => {
            check_invlpg_va(arg1)?;
            paging::invlpg_guest(arg1);
            Ok(())
        }
        INVLPG_MULTI => {
            check_invlpg_va(arg1)?;
            read_vcpumask(hv, arg2)?;
            paging::invlpg_guest(arg1);
            Ok(())
        }
        FLUSH_CACHE | FLUSH_CACHE_GLOBAL => {
            if !hv.pc.cur.shared.privileged {
                return Err(Errno::EACCES);
            }
            hv_arch::cpu::wbinvd();
            Ok(())
        }
        SET_LDT => set_ldt(hv, arg1, arg2),
        CLEAR_PAGE | COPY_PAGE => {
            let dst = Mfn(arg1);
            if crate::machine::frames().owner(dst) != Owner::Dom(fd) {
                return Err(Errno::EINVAL);
            }
            let src = Mfn(arg2);
            if cmd == COPY_PAGE && crate::machine::frames().owner(src) != Owner::Dom(fd) {
                return Err(Errno::EINVAL);
            }
            pt_in!(hv, t, dm).get_writable(dst, fd).map_err(|_| Errno::EINVAL)?;
            if cmd == COPY_PAGE {
                dm.copy_frame(dst, src);
            } else {
                dm.zero(dst);
            }
            let _ = crate::machine::frames().put_type(dst);
            Ok(())
        }
        MARK_SUPER | UNMARK_SUPER => Err(Errno::EOPNOTSUPP),
        // Guest kernel and user share one root in the ring-1 model.
        NEW_USER_BASEPTR if !hv.pc.cur.shared.pv64 => Err(Errno::EOPNOTSUPP),
        NEW_USER_BASEPTR => new_user_baseptr(hv, Mfn(arg1)),
        _ => Err(Errno::ENOSYS),
    }
}

pub fn mmuext_op(hv: &mut Mx, f: &mut TrapFrame, ops: u64, count: u64, pdone: u64, fdom: u64) -> HcResult {
    let (count, preempted) = batch_count(count).ok_or(Errno::EINVAL)?;
    let base = done_so_far(hv, preempted, pdone)?;
    let me = hv.pc.cur.dom;
    let fdd = if fdom == guest_abi::DOMID_SELF as u64 || fdom == me as u64 { None } else { Some(foreign_dom(hv, (fdom & 0xFFFF) as u16)?) };
    let fd = fdd.as_ref().map_or(me, |d| d.id);
    let mut tables = Tables::of(hv, fdd.as_deref())?;
    let mut result = Ok(0);
    let mut i = 0;
    while i < count {
        if i > 0 && super::preempt(hv, 1) {
            return mmuext_later(hv, f, (ops, count, pdone, fdom), fd, base, i);
        }
        let mut b = [0u8; 24];
        if let Err(e) = read_guest(hv, ops.wrapping_add(24 * i), &mut b) {
            result = Err(e);
            break;
        }
        let cmd = u32::from_le_bytes(b[..4].try_into().unwrap_or_default());
        let a1 = u64::from_le_bytes(b[8..16].try_into().unwrap_or_default());
        let a2 = u64::from_le_bytes(b[16..24].try_into().unwrap_or_default());
        match one_ext(hv, &mut tables, cmd, a1, a2, fd) {
            Err(Errno::ERESTART) => return mmuext_later(hv, f, (ops, count, pdone, fdom), fd, base, i),
            Err(e) => {
                result = Err(e);
                break;
            }
            Ok(()) => i += 1,
        }
        if i < count && (hv.mm.jobs.is_pending() || tables.foreign.as_ref().is_some_and(|g| g.jobs.is_pending())) {
            return mmuext_later(hv, f, (ops, count, pdone, fdom), fd, base, i);
        }
    }
    if i > 0 {
        tables_changed(hv, &[hv.pc.cur.dom, fd]);
    }
    put_done(hv, pdone, base + i)?;
    result
}

/// Continues `mmuext_op(ops, count, pdone, fdom)` at operation `i` of this call (`fd` is the
/// domain it named).
fn mmuext_later(hv: &mut Mx, f: &mut TrapFrame, (ops, count, pdone, fdom): (u64, u64, u64, u64), fd: DomId, base: u64, i: u64) -> HcResult {
    tables_changed(hv, &[hv.pc.cur.dom, fd]);
    put_done(hv, pdone, base + i)?;
    let (rest, left) = batch_rest(ops, 24, count, i);
    continuation(f, nr::MMUEXT_OP, [rest, left, pdone, fdom])
}

/// `UVMF_*` flags.
use guest_abi::mm::{UVMF_ALL, UVMF_FLUSHTYPE_MASK, UVMF_INVLPG, UVMF_TLB_FLUSH};

fn uvm(hv: &mut Mx, va: u64, val: u64, flags: u64, fd: DomId) -> HcResult {
    if !guest_abi::layout::is_guest_va(va) {
        return Err(Errno::EINVAL);
    }
    let dom = hv.pc.cur.dom;
    let l4 = hv.pc.cur.l4;
    let mut dm = DirectMap;
    let (l1, idx) = pt!(hv, dm).l1_for_va(l4, va, dom).ok_or(Errno::EINVAL)?;
    let ty = flags & UVMF_FLUSHTYPE_MASK;
    if ty == 3 {
        return Err(Errno::EINVAL);
    }
    // A MULTI mask pointer must be readable before anything changes.
    if flags & UVMF_ALL == 0 && flags & !7 != 0 {
        read_vcpumask(hv, flags & !7)?;
    }
    pt!(hv, dm).update_entry(l1, idx, Pte(val), dom, fd, false)?;
    match ty {
        UVMF_TLB_FLUSH => paging::flush_local(&hv.pc.tables),
        UVMF_INVLPG => paging::invlpg_guest(va),
        _ => {}
    }
    tables_changed(hv, &[dom, fd]);
    Ok(0)
}

pub fn update_va_mapping(hv: &mut Mx, va: u64, val: u64, flags: u64) -> HcResult {
    let me = hv.pc.cur.dom;
    uvm(hv, va, val, flags, me)
}

/// `update_va_mapping_otherdomain`: a privileged caller maps a frame of domain `domid` at
/// `va` in its own tables (a foreign mapping: the frame's general reference keeps it from
/// being freed, even when its domain is destroyed, until the mapping goes).
pub fn update_va_mapping_otherdomain(hv: &mut Mx, va: u64, val: u64, flags: u64, domid: u64) -> HcResult {
    if !hv.pc.cur.shared.privileged {
        return Err(Errno::EPERM);
    }
    let fd = foreign_dom(hv, domid as u16)?.id;
    uvm(hv, va, val, flags, fd)
}
