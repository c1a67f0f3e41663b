//! `grant_table_op(cmd, uop, count)`: grant tables v1 and v2. Set-up and queries
//! (`setup_table`, `query_size`, `get_version`, `set_version`, `get_status_frames`),
//! mappings (`map_grant_ref`, `unmap_grant_ref`, `unmap_and_replace`), `copy` and
//! `swap_grant_ref`; the state machine is `hv_core::grant`, the entries of each version
//! `crate::grants`, the PTEs of host mappings `hv_core::pt` (`install_grant` and friends: a
//! grant PTE carries `GRANT_BIT` and holds no reference itself).
//!
//! Runs under the caller's memory lock (the mapping domain's maptrack and page tables),
//! taking one granter's grant lock at a time, never two. Per-operation results go to each
//! operation's `status` with `GNTST_*` codes; the hypercall returns 0 for a well-formed
//! batch (XSA-316), `-EFAULT` when an operation cannot be read or its results written,
//! `-EINVAL` for a count other than 1 for the set-up and query commands, `-ENOSYS` for
//! `transfer` and `dump_table` (docs/abi-deviations.md). Batches are preemptible: a
//! continuation re-issues the rest.
//!
//! A switch of version (`set_version`, Xen's `gnttab_set_version`) needs every ref past the
//! reserved eight unused (`-EBUSY`), and from v2 the reserved ones representable in v1
//! (`-ERANGE`) and the status frames unmapped (`-EBUSY`: XSA-255); the reserved entries
//! are carried over, everything else is cleared.
//!
//! An unmap clears the PTE, flushes the TLBs of every CPU running the mapper, and only then
//! releases the pins: no CPU can still reach the frame once the granter may reuse it.

use super::bytes::{u16at, u32at, u64at};
use super::{continuation, read_guest, write_guest, HcResult, Mx, OnCpu};
use crate::domain::{DomShared, GrantTable};
use crate::guest::pt;
use alloc::sync::Arc;
use guest_abi::errno::Errno;
use guest_abi::grant::*;
use hv_arch::entry::TrapFrame;
use hv_arch::physmem::DirectMap;
use hv_core::frame::{Owner, PageType};
use crate::grants::Entries;
use hv_core::grant::SharedEntries;
use hv_core::grant::{GranterRef, Mapping};
use hv_core::mem::{Mfn, PhysMem};
use hv_core::pte::{Pte, PteFlags, GRANT_BIT};

/// The granting domain a map or copy names: the caller for `DOMID_SELF` or its own id, or
/// any existing domain (the grant itself says who may use it).
fn granter(c: &impl OnCpu, dom: u16) -> Result<Arc<DomShared>, GntSt> {
    let cur = &c.pc().cur;
    if dom == guest_abi::DOMID_SELF || dom == cur.dom {
        return Ok(cur.shared.clone());
    }
    crate::domain::shared_of(dom).ok_or(GntSt::BadDomain)
}

/// The domain a set-up or query names: as [`granter`], another domain only for a
/// privileged caller.
fn target(c: &impl OnCpu, dom: u16) -> Result<Arc<DomShared>, GntSt> {
    let d = granter(c, dom)?;
    let cur = &c.pc().cur;
    if d.id != cur.dom && !cur.shared.privileged {
        return Err(GntSt::PermissionDenied);
    }
    Ok(d)
}




/// Runs `f` on domain `d`'s grant table as a granter (its grant lock held): a dead domain
/// grants nothing new.
fn with_granter<R>(cpu: usize, d: &DomShared, f: impl FnOnce(&mut GranterRef<'_, Entries<'_>, fn(u64) -> Option<Mfn>>) -> R) -> R {
    let mut g = d.grant();
    let GrantTable { frames, status, version, active, .. } = &mut *g;
    active.dying |= d.is_dead();
    let e = Entries::new(frames, status, *version);
    let mut tlb = crate::shootdown::FlushAll { apic_ids: &crate::machine::get().apic_ids, this: cpu };
    // PV: a grant names the machine frame itself.
    let identity: fn(u64) -> Option<Mfn> = |gfn| Some(Mfn(gfn));
    f(&mut GranterRef { g: active, shared: &e, id: d.id, gfn_to_mfn: identity, tlb: &mut tlb })
}

/// A zeroed frame from the allocator for `d`'s grant table, owned by `d` and held with a
/// type reference of `ty` (grant frames: writable; status frames: untyped, so `d` can map
/// them read-only only). Under `d`'s grant lock. A frame that was a page table or
/// descriptor page until lately takes its new type after a flush of every CPU (the TLB
/// clock); one that cannot be set up goes back to the allocator.
fn table_frame(cpu: usize, d: &DomShared, ty: PageType) -> Option<Mfn> {
    let ft = crate::machine::frames();
    let m = crate::mm::with(|mm| mm.alloc.alloc()).flatten()?;
    // The only scrub a frame gets: one that cannot be zeroed stays out of use.
    if DirectMap.zero(m).is_none() {
        log::error!("grant frame {:#x} from the allocator cannot be zeroed: kept out of use", m.0);
        return None;
    }
    if ft.needs_flush(m, ty) {
        use hv_core::pt::TlbFlush;
        let t = ft.flush_begin();
        crate::shootdown::FlushAll { apic_ids: &crate::machine::get().apic_ids, this: cpu }.flush_all();
        ft.flush_done(t);
    }
    if ft.set_owner(m, Owner::Dom(d.id)).is_err() {
        // Cannot happen for a frame fresh from the allocator (nothing references it); if it
        // did, it stays out of use rather than be handed out twice.
        log::error!("grant frame {:#x} from the allocator is still referenced: kept out of use", m.0);
        return None;
    }
    if ft.get_page_and_type(m, d.id, Some(ty)).is_err() {
        // Nothing was taken: the frame goes back.
        if ft.set_owner(m, Owner::Free).is_ok() {
            crate::mm::with(|mm| mm.alloc.free(m));
        }
        return None;
    }
    d.note_frame(m);
    Some(m)
}

/// Gives table frames `frames` of `d` that nobody but the hypervisor references back to
/// the allocator: each is handed from `d` to the hypervisor while the hypervisor holds its
/// only reference (so no mapping can appear meanwhile), all or none (`-EBUSY`: one is
/// mapped, XSA-255). Every CPU is flushed before they are freed: no translation of one can
/// outlive its use. Under `d`'s grant lock.
fn free_table_frames(cpu: usize, d: &DomShared, frames: &[Mfn]) -> Result<(), Errno> {
    let ft = crate::machine::frames();
    for (i, &m) in frames.iter().enumerate() {
        if ft.hand_over_sole(m, Owner::Dom(d.id), Owner::Xen).is_err() {
            for &back in &frames[..i] {
                let _ = ft.hand_over_sole(back, Owner::Xen, Owner::Dom(d.id));
            }
            return Err(Errno::EBUSY);
        }
    }
    for &m in frames {
        let _ = ft.put_page_and_type(m, true);
    }
    use hv_core::pt::TlbFlush;
    crate::shootdown::FlushAll { apic_ids: &crate::machine::get().apic_ids, this: cpu }.flush_all();
    for &m in frames {
        if ft.set_owner(m, Owner::Free).is_ok() {
            crate::mm::with(|mm| mm.alloc.free(m));
        }
    }
    Ok(())
}

/// Grows `d`'s status frames to what its grant frames need (v2). `GNTST_general_error`
/// when memory runs out (the frames added so far stay).
fn grow_status(cpu: usize, d: &DomShared, g: &mut GrantTable) -> Result<(), GntSt> {
    while (g.status.len() as u32) < status_frames(g.frames.len() as u32) {
        g.status.push(table_frame(cpu, d, PageType::None).ok_or(GntSt::GeneralError)?);
    }
    Ok(())
}

/// Grows `d`'s grant table to `n` frames (within its limit; it never shrinks), with their
/// status frames in v2, and returns its first `n` frames. `GNTST_general_error` beyond the
/// limit or when memory runs out (the grant frames added by this call go again: nobody
/// has seen them).
fn grow(cpu: usize, d: &DomShared, n: u32) -> Result<alloc::vec::Vec<Mfn>, GntSt> {
    let mut g = d.grant();
    if n > g.max_frames {
        return Err(GntSt::GeneralError);
    }
    // Under its grant lock: a domain being destroyed gets no new frame (its teardown drops
    // the grant frames under this lock after setting the flag).
    if d.is_dying() && (g.frames.len() as u32) < n {
        return Err(GntSt::BadDomain);
    }
    let had = g.frames.len();
    let mut r = Ok(());
    while r.is_ok() && (g.frames.len() as u32) < n {
        match table_frame(cpu, d, PageType::Writable) {
            Some(m) => g.frames.push(m),
            None => r = Err(GntSt::GeneralError),
        }
    }
    if r.is_ok() && g.version == 2 {
        r = grow_status(cpu, d, &mut g);
    }
    if let Err(e) = r {
        // (One a privileged domain mapped meanwhile stays, as a frame of the table.)
        let fresh = g.frames.split_off(had);
        if free_table_frames(cpu, d, &fresh).is_err() {
            g.frames.extend(fresh);
        }
        return Err(e);
    }
    Ok(g.frames.iter().take(n as usize).copied().collect())
}

/// `GNTTABOP_setup_table {dom u16 @0, nr_frames u32 @4; OUT status i16 @8; frame_list
/// u64* @16}`: grows the table to `nr_frames` and writes the frames' MFNs.
fn setup_table(c: &Mx<'_>, uop: u64) -> Result<(), Errno> {
    let mut b = [0u8; 24];
    read_guest(c, uop, &mut b)?;
    let (dom, nr, list) = (u16at(&b, 0), u32at(&b, 4), u64at(&b, 16));
    let status = (|| {
        // The guest copies are made after the grant lock is let go.
        let d = target(c, dom)?;
        let frames = grow(c.pc.id, &d, nr)?;
        for (i, m) in frames.iter().enumerate() {
            write_guest(c, list.wrapping_add(8 * i as u64), &m.0.to_le_bytes()).map_err(|_| GntSt::BadVirtAddr)?;
        }
        Ok(())
    })();
    put_status(c, uop, 8, status)
}

/// `GNTTABOP_set_version {version u32}` of the caller's table; the version in force
/// afterwards is written back whatever the result.
fn set_version(c: &mut Mx<'_>, uop: u64) -> Result<(), Errno> {
    let mut b = [0u8; 4];
    read_guest(c, uop, &mut b)?;
    let want = u32::from_le_bytes(b);
    let d = c.pc.cur.shared.clone();
    let (r, now) = {
        let mut g = d.grant();
        let r = switch_version(c.pc.id, &d, &mut g, want);
        (r, g.version)
    };
    write_guest(c, uop, &u32::from(now).to_le_bytes())?;
    r
}

/// Switches `d`'s table (its grant lock held) to version `want`, as Xen's
/// `gnttab_set_version`: nothing changes on a refusal.
fn switch_version(cpu: usize, d: &DomShared, g: &mut GrantTable, want: u32) -> Result<(), Errno> {
    let want = match want {
        1 | 2 => want as u8,
        _ => return Err(Errno::EINVAL),
    };
    if want == g.version {
        return Ok(());
    }
    // As Xen when v2 is not allowed: as if `set_version` did not exist.
    if want > g.max_version {
        return Err(Errno::ENOSYS);
    }
    // Every ref past the reserved ones unused (the toolstack's console and XenStore grants
    // may stay mapped).
    if g.active.active.range(NR_RESERVED_ENTRIES..).next().is_some() {
        return Err(Errno::EBUSY);
    }
    let old = g.entries();
    let reserved = NR_RESERVED_ENTRIES.min(old.entries());
    // The reserved entries, each read once: from v2 only full-page grants of frames v1 can
    // name are carried over (a transitive one or a frame past 32 bits is -ERANGE). Their
    // in-use flags are the pins' (the hypervisor's record, not what the guest left in its
    // memory), carried even for an entry that is not.
    let mut keep = [(0u16, 0u16, 0u64); NR_RESERVED_ENTRIES as usize];
    for r in 0..reserved {
        let Some((flags, dom, frame)) = old.read(r) else { continue };
        let kind = flags & GTF_TYPE_MASK;
        if g.version == 2 && (kind == GTF_TRANSITIVE || (kind == GTF_PERMIT_ACCESS && frame >> 32 != 0)) {
            return Err(Errno::ERANGE);
        }
        let carried = g.version == 1 || (kind == GTF_PERMIT_ACCESS && flags & GTF_SUB_PAGE == 0);
        let pins = g.active.active.get(&r).map(|a| a.pins).unwrap_or_default();
        let in_use = if pins.host_ro + pins.host_rw + pins.dev_ro + pins.dev_rw != 0 { GTF_READING } else { 0 }
            | if pins.host_rw + pins.dev_rw != 0 { GTF_WRITING } else { 0 };
        let e = if carried { (flags & !(GTF_READING | GTF_WRITING), dom, frame) } else { (0, 0, 0) };
        keep[r as usize] = (e.0 | in_use, e.1, e.2);
    }
    if want == 2 {
        // All or nothing: the status frames exist before anything is cleared (any made
        // here go again if not all could be).
        let had = g.status.len();
        if grow_status(cpu, d, g).is_err() {
            // (Ones a privileged domain mapped meanwhile stay, unused in v1, until the
            // next switch or the teardown.)
            let fresh = g.status.split_off(had);
            if free_table_frames(cpu, d, &fresh).is_err() {
                g.status.extend(fresh);
            }
            return Err(Errno::ENOMEM);
        }
        // (Status frames kept from an earlier try hold nothing of it.)
        for &m in &g.status {
            let _ = DirectMap.zero(m);
        }
    } else {
        // XSA-255: a status frame the domain still maps is not freed.
        free_table_frames(cpu, d, &g.status)?;
        g.status.clear();
    }
    for &m in &g.frames {
        let _ = DirectMap.zero(m);
    }
    g.version = want;
    let new = g.entries();
    for (r, &e) in keep.iter().enumerate().take(reserved as usize) {
        new.import(r as u32, e);
    }
    Ok(())
}

/// `GNTTABOP_get_status_frames {nr_frames u32 @0, dom u16 @4; OUT status i16 @6;
/// frame_list u64* @8}`: the MFNs of the first `nr_frames` status frames (more than the
/// table has, which is none in v1, is `GNTST_general_error`).
fn get_status_frames(c: &Mx<'_>, uop: u64) -> Result<(), Errno> {
    let mut b = [0u8; 16];
    read_guest(c, uop, &mut b)?;
    let (nr, dom, list) = (u32at(&b, 0), u16at(&b, 4), u64at(&b, 8));
    let status = (|| {
        let d = target(c, dom)?;
        // Copied out after the grant lock is let go (a `set_version` of the domain's may
        // free them meanwhile: the numbers written are then of frames it no longer owns).
        let frames: alloc::vec::Vec<Mfn> = {
            let g = d.grant();
            let have = if g.version == 2 { g.status.len() } else { 0 };
            if nr as usize > have {
                return Err(GntSt::GeneralError);
            }
            g.status[..nr as usize].to_vec()
        };
        for (i, m) in frames.iter().enumerate() {
            write_guest(c, list.wrapping_add(8 * i as u64), &m.0.to_le_bytes()).map_err(|_| GntSt::BadVirtAddr)?;
        }
        Ok(())
    })();
    put_status(c, uop, 6, status)
}

/// `GNTTABOP_query_size {dom u16 @0; OUT nr_frames u32 @4, max_nr_frames u32 @8, status
/// i16 @12}`.
fn query_size(c: &Mx<'_>, uop: u64) -> Result<(), Errno> {
    let mut b = [0u8; 16];
    read_guest(c, uop, &mut b)?;
    match target(c, u16at(&b, 0)) {
        Ok(d) => {
            let g = d.grant();
            b[4..8].copy_from_slice(&(g.frames.len() as u32).to_le_bytes());
            b[8..12].copy_from_slice(&g.max_frames.to_le_bytes());
            b[12..14].copy_from_slice(&(GntSt::Okay as i16).to_le_bytes());
        }
        Err(e) => b[12..14].copy_from_slice(&(e as i16).to_le_bytes()),
    }
    write_guest(c, uop.wrapping_add(4), &b[4..14])
}

/// Writes a `status` field (an `i16` at `off` of the operation).
fn put_status(c: &impl OnCpu, uop: u64, off: u64, status: Result<(), GntSt>) -> Result<(), Errno> {
    let s = match status {
        Ok(()) => GntSt::Okay,
        Err(e) => e,
    } as i16;
    write_guest(c, uop.wrapping_add(off), &s.to_le_bytes())
}

/// The L1 entry a host mapping's `host_addr` names: with `contains_pte` the machine address
/// of the PTE (8-aligned: XSA-227), otherwise a linear address in the caller's current
/// address space; either way in a validated L1 of the caller. `GNTST_general_error` if not.
fn host_slot(c: &mut Mx<'_>, host_addr: u64, contains_pte: bool) -> Result<(Mfn, usize), GntSt> {
    let me = c.pc.cur.dom;
    let mut dm = DirectMap;
    let p = pt!(c, dm);
    let slot = if contains_pte {
        if !host_addr.is_multiple_of(8) {
            return Err(GntSt::GeneralError);
        }
        let t = Mfn::of(host_addr);
        (p.table_level(t, me) == Some(1)).then_some((t, ((host_addr & 0xFFF) / 8) as usize))
    } else {
        p.l1_for_va(c.pc.cur.l4, host_addr, me)
    };
    slot.ok_or(GntSt::GeneralError)
}

/// The PTE of a host mapping of `frame` made with `flags` for a domain of the Xen pv64
/// mode or not (Xen's grant PTE: present, accessed, dirty, not executable, writable unless
/// read-only, user-accessible for `GNTMAP_application_map` and for every mapping of a pv64
/// domain, whose kernel runs in ring 3, as Xen's `adjust_guest_l1e`; WB caching).
fn grant_pte(frame: Mfn, flags: u32, pv64: bool) -> Pte {
    let mut f = PteFlags::PRESENT | PteFlags::ACCESSED | PteFlags::DIRTY | PteFlags::NO_EXECUTE;
    if flags & GNTMAP_READONLY == 0 {
        f |= PteFlags::WRITABLE;
    }
    if flags & GNTMAP_APPLICATION_MAP != 0 || pv64 {
        f |= PteFlags::USER_ACCESSIBLE;
    }
    Pte(Pte::new(frame, f).0 | GRANT_BIT)
}

/// One `GNTTABOP_map_grant_ref {host_addr u64 @0, flags u32 @8, ref u32 @12, dom u16 @16;
/// OUT status i16 @18, handle u32 @20, dev_bus_addr u64 @24}`: the handle and the device
/// address. `replaced`: a host mapping took the place of a present entry (whose references
/// it dropped: the TLBs need a flush).
fn map_one(c: &mut Mx<'_>, b: &[u8; 32], replaced: &mut bool) -> Result<(u32, u64), GntSt> {
    let (host_addr, flags, gref, dom) = (u64at(b, 0), u32at(b, 8), u32at(b, 12), u16at(b, 16));
    let (host, device) = (flags & GNTMAP_HOST_MAP != 0, flags & GNTMAP_DEVICE_MAP != 0);
    if !host && !device {
        return Err(GntSt::BadGntref);
    }
    let me = c.pc.cur.dom;
    // Where the host mapping goes, before anything is pinned: a validated L1 entry of the
    // caller that is not a grant mapping already.
    let slot = if host {
        let (t, i) = host_slot(c, host_addr, flags & GNTMAP_CONTAINS_PTE != 0)?;
        if DirectMap.read_u64(t, i).map(Pte).is_none_or(|e| e.granted()) {
            return Err(GntSt::GeneralError);
        }
        Some((t, i))
    } else {
        None
    };
    let d = granter(c, dom)?;
    let ft = crate::machine::frames();
    let (handle, frame) = with_granter(c.pc.id, &d, |gr| hv_core::grant::map(ft, gr, &mut c.mm.maptrack, me, gref, flags))?;
    if let Some((t, i)) = slot {
        let mut dm = DirectMap;
        match pt!(c, dm).install_grant(t, i, grant_pte(frame, flags, c.pc.cur.shared.pv64), me) {
            Ok(was_present) => *replaced |= was_present,
            Err(_) => {
                // Not expected (the slot was checked under the same memory lock): undone.
                with_granter(c.pc.id, &d, |gr| hv_core::grant::unmap(ft, &mut c.mm.maptrack, handle, host, device, gr.id, gr.g, gr.shared)).ok();
                return Err(GntSt::GeneralError);
            }
        }
    }
    Ok((handle, if device { frame.maddr() } else { 0 }))
}

/// The host mapping of `m` at `host_addr` replaced by `new` (what `new_addr` held, or
/// nothing): checked first, so that a refusal leaves everything as it was. The PTE there
/// must be exactly the one `m` made (its frame, and its writability and user bit: a
/// handle's references stand for its own PTE; unmapping a read-only handle through a
/// writable mapping's PTE would leave that writable PTE behind with no writable
/// reference).
fn take_host_pte(c: &mut Mx<'_>, m: &Mapping, host_addr: u64, new_addr: u64) -> Result<(), GntSt> {
    let me = c.pc.cur.dom;
    let (t, i) = host_slot(c, host_addr, m.contains_pte)?;
    let flags = if m.writable { 0 } else { GNTMAP_READONLY } | if m.app { GNTMAP_APPLICATION_MAP } else { 0 };
    let expected = grant_pte(m.frame, flags, c.pc.cur.shared.pv64);
    if DirectMap.read_u64(t, i).map(Pte) != Some(expected) {
        return Err(GntSt::GeneralError);
    }
    let mut dm = DirectMap;
    let new = if new_addr != 0 {
        if m.contains_pte {
            return Err(GntSt::GeneralError);
        }
        let (t2, i2) = pt!(c, dm).l1_for_va(c.pc.cur.l4, new_addr, me).ok_or(GntSt::GeneralError)?;
        // Its own entry cannot be the one it takes over.
        if (t2, i2) == (t, i) {
            return Err(GntSt::GeneralError);
        }
        pt!(c, dm).steal_entry(t2, i2, me).map_err(|_| GntSt::GeneralError)?
    } else {
        Pte(0)
    };
    pt!(c, dm).remove_grant(t, i, expected, new, me).map_err(|_| GntSt::GeneralError)
}

/// One unmap of `handle`: the host kind at `host_addr` (when non-zero; its PTE replaced by
/// what `new_addr` held, for `unmap_and_replace`) and the device kind when `dev_bus_addr`
/// is non-zero (it must be the frame's address).
fn unmap_one(c: &mut Mx<'_>, handle: u32, host_addr: u64, dev_bus_addr: u64, new_addr: u64) -> Result<(), GntSt> {
    let m = *c.mm.maptrack.get(handle).ok_or(GntSt::BadHandle)?;
    let (host, device) = (host_addr != 0, dev_bus_addr != 0);
    if (!host && !device) || (host && !m.host) || (device && !m.device) {
        return Err(GntSt::GeneralError);
    }
    if device && dev_bus_addr != m.frame.maddr() {
        return Err(GntSt::BadDevAddr);
    }
    let d = crate::domain::shared_of(m.granter).ok_or(GntSt::BadDomain)?;
    if host {
        take_host_pte(c, &m, host_addr, new_addr)?;
        // No CPU may reach the frame through the old entry once the pins go.
        super::mmu::tables_changed(c, &[c.pc.cur.dom]);
    }
    let ft = crate::machine::frames();
    let r = with_granter(c.pc.id, &d, |gr| hv_core::grant::unmap(ft, &mut c.mm.maptrack, handle, host, device, gr.id, gr.g, gr.shared));
    if d.is_dying() {
        // Perhaps its last frame held from outside: the dying granter may go now.
        crate::teardown::reap(&d);
    }
    r
}

/// One side of a copy: a grant of another domain (or of the caller) pinned for the copy, or
/// a frame of the caller's held.
enum Side {
    Grant(Arc<DomShared>, u32),
    Frame,
}

/// `{u: ref u32 or gmfn u64 @0, domid u16 @8, offset u16 @10}` of a copy, pinned for
/// reading or (`write`) writing: the frame and what holds it.
fn copy_side(c: &mut Mx<'_>, b: &[u8], is_gref: bool, write: bool) -> Result<(Mfn, Side), GntSt> {
    let (u, dom) = (u64at(b, 0), u16at(b, 8));
    let me = c.pc.cur.dom;
    if is_gref {
        let d = granter(c, dom)?;
        let gref = u as u32;
        let ft = crate::machine::frames();
        let frame = with_granter(c.pc.id, &d, |gr| hv_core::grant::pin(ft, gr, me, gref, true, false, write))?;
        return Ok((frame, Side::Grant(d, gref)));
    }
    // A frame by number: the caller's own only.
    if dom != guest_abi::DOMID_SELF && dom != me {
        return Err(GntSt::PermissionDenied);
    }
    let m = Mfn(u);
    let mut dm = DirectMap;
    // As Xen: a frame not the caller's is `GNTST_bad_page`, one that cannot be written (a
    // page table, a descriptor page) `GNTST_general_error`.
    if !crate::machine::frames().owned_by(m, me) {
        return Err(GntSt::BadPage);
    }
    let r = if write { pt!(c, dm).get_writable_page(m, me).map_err(|_| ()) } else { crate::machine::frames().get_page(m, me).map_err(|_| ()) };
    r.map_err(|()| GntSt::GeneralError)?;
    Ok((m, Side::Frame))
}

fn release_side(c: &Mx<'_>, frame: Mfn, side: Side, write: bool) {
    let ft = crate::machine::frames();
    match side {
        Side::Grant(d, gref) => {
            with_granter(c.pc.id, &d, |gr| hv_core::grant::unpin(ft, gr.g, gr.shared, gref, true, false, write));
            if d.is_dying() {
                crate::teardown::reap(&d);
            }
        }
        Side::Frame => {
            let _ = ft.put_page_and_type(frame, write);
        }
    }
}

const GNTCOPY_SOURCE_GREF: u16 = 1;
const GNTCOPY_DEST_GREF: u16 = 2;

/// One `GNTTABOP_copy {source @0, dest @16, len u16 @32, flags u16 @34; OUT status i16
/// @36}`: within one page on each side.
fn copy_one(c: &mut Mx<'_>, b: &[u8; 40]) -> Result<(), GntSt> {
    let (soff, doff, len, flags) = (u16at(b, 10) as usize, u16at(b, 26) as usize, u16at(b, 32) as usize, u16at(b, 34));
    if soff + len > 4096 || doff + len > 4096 {
        return Err(GntSt::BadCopyArg);
    }
    let (src, sside) = copy_side(c, &b[0..16], flags & GNTCOPY_SOURCE_GREF != 0, false)?;
    let (dst, dside) = match copy_side(c, &b[16..32], flags & GNTCOPY_DEST_GREF != 0, true) {
        Ok(x) => x,
        Err(e) => {
            release_side(c, src, sside, false);
            return Err(e);
        }
    };
    let mut buf = [0u8; 512];
    let mut done = 0;
    let mut ok = true;
    while done < len && ok {
        let n = (len - done).min(buf.len());
        ok = DirectMap.read(src, soff + done, &mut buf[..n]).is_some() && DirectMap.write(dst, doff + done, &buf[..n]).is_some();
        done += n;
    }
    release_side(c, dst, dside, true);
    release_side(c, src, sside, false);
    if ok { Ok(()) } else { Err(GntSt::BadPage) }
}

/// Runs `count` operations of `size` bytes at `uop` with `one`, writing each one's
/// results; a spent budget continues the rest later (`cmd` re-issued at the next one).
fn batch<const N: usize>(
    c: &mut Mx<'_>,
    f: &mut TrapFrame,
    cmd: u64,
    uop: u64,
    count: u64,
    mut one: impl FnMut(&mut Mx<'_>, &mut [u8; N]) -> Result<(), Errno>,
) -> HcResult {
    for i in 0..count {
        let at = uop.wrapping_add(N as u64 * i);
        if i > 0 && super::preempt(c, 1) {
            return continuation(f, guest_abi::hypercall::GRANT_TABLE_OP, [cmd, at, count - i, 0]);
        }
        let mut b = [0u8; N];
        read_guest(c, at, &mut b)?;
        one(c, &mut b)?;
        write_guest(c, at, &b)?;
    }
    Ok(0)
}

fn set_st(b: &mut [u8], off: usize, r: Result<(), GntSt>) {
    let s = match r {
        Ok(()) => 0,
        Err(e) => e as i16,
    };
    b[off..off + 2].copy_from_slice(&s.to_le_bytes());
}

pub fn grant_table_op(c: &mut Mx<'_>, f: &mut TrapFrame, cmd: u64, uop: u64, count: u64) -> HcResult {
    let one = || if count == 1 { Ok(()) } else { Err(Errno::EINVAL) };
    if count > u32::MAX as u64 {
        return Err(Errno::EINVAL);
    }
    match cmd {
        GNTTABOP_MAP_GRANT_REF => {
            let mut replaced = false;
            let r = batch::<32>(c, f, cmd, uop, count, |c, b| {
                let r = map_one(c, b, &mut replaced);
                let (h, dev) = r.unwrap_or((u32::MAX, 0));
                set_st(b, 18, r.map(|_| ()));
                b[20..24].copy_from_slice(&h.to_le_bytes());
                b[24..32].copy_from_slice(&dev.to_le_bytes());
                Ok(())
            });
            if replaced {
                super::mmu::tables_changed(c, &[c.pc.cur.dom]);
            }
            return r;
        }
        // {host_addr u64 @0, dev_bus_addr u64 @8, handle u32 @16; OUT status i16 @20}
        GNTTABOP_UNMAP_GRANT_REF => {
            return batch::<24>(c, f, cmd, uop, count, |c, b| {
                let r = unmap_one(c, u32at(b, 16), u64at(b, 0), u64at(b, 8), 0);
                set_st(b, 20, r);
                Ok(())
            });
        }
        // {host_addr u64 @0, new_addr u64 @8, handle u32 @16; OUT status i16 @20}
        GNTTABOP_UNMAP_AND_REPLACE => {
            return batch::<24>(c, f, cmd, uop, count, |c, b| {
                let host_addr = u64at(b, 0);
                let r = if host_addr == 0 { Err(GntSt::GeneralError) } else { unmap_one(c, u32at(b, 16), host_addr, 0, u64at(b, 8)) };
                set_st(b, 20, r);
                Ok(())
            });
        }
        GNTTABOP_COPY => {
            return batch::<40>(c, f, cmd, uop, count, |c, b| {
                let r = copy_one(c, b);
                set_st(b, 36, r);
                Ok(())
            });
        }
        // {ref_a u32 @0, ref_b u32 @4; OUT status i16 @8}: entries of the caller's table.
        GNTTABOP_SWAP_GRANT_REF => {
            return batch::<12>(c, f, cmd, uop, count, |c, b| {
                let d = c.pc.cur.shared.clone();
                let g = d.grant();
                let r = hv_core::grant::swap(&g.active, &g.entries(), u32at(b, 0), u32at(b, 4));
                set_st(b, 8, r);
                Ok(())
            });
        }
        GNTTABOP_SETUP_TABLE => {
            one()?;
            setup_table(c, uop)?;
        }
        GNTTABOP_QUERY_SIZE => {
            one()?;
            query_size(c, uop)?;
        }
        // {dom u16 @0, pad; OUT version u32 @4}
        GNTTABOP_GET_VERSION => {
            one()?;
            let mut b = [0u8; 2];
            read_guest(c, uop, &mut b)?;
            let d = target(c, u16::from_le_bytes(b)).map_err(|e| if e == GntSt::PermissionDenied { Errno::EPERM } else { Errno::ESRCH })?;
            let v = d.grant().version;
            write_guest(c, uop.wrapping_add(4), &u32::from(v).to_le_bytes())?;
        }
        GNTTABOP_SET_VERSION => {
            one()?;
            return set_version(c, uop).map(|()| 0);
        }
        GNTTABOP_GET_STATUS_FRAMES => {
            one()?;
            get_status_frames(c, uop)?;
        }
        _ => return Err(Errno::ENOSYS),
    }
    Ok(0)
}
