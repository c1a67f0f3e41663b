//! `memory_op`: reservations (ballooning), populate, exchange and the information queries.
//!
//! For a PV (non-translated) guest GMFN = MFN. Frames handed back are freed only when no
//! reference to them remains, and the TLB is flushed before they can be reused. The caller's
//! `max_pages` bounds every increase. Long operations are preemptible: reservations continue
//! through `cmd >> 6` (the start extent), exchanges through `nr_exchanged`, as in Xen.

use super::{continuation, read_guest, resolve_dom, write_guest, HcResult};
use super::Mx;
use core::sync::atomic::Ordering;
use guest_abi::errno::Errno;
use guest_abi::hypercall as nr;
use hv_arch::entry::TrapFrame;
use hv_arch::physmem::DirectMap;
use hv_core::mem::PhysMem;
use hv_core::frame::Owner;
use hv_core::mem::Mfn;
pub use guest_abi::memory::*;


/// `struct xen_memory_reservation`.
struct Reservation {
    extent_start: u64,
    nr_extents: u64,
    extent_order: u32,
    mem_flags: u32,
    domid: u16,
}

fn read_reservation(hv: &Mx, p: u64) -> Result<Reservation, Errno> {
    let mut b = [0u8; 32];
    read_guest(hv, p, &mut b)?;
    let u64at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap_or_default());
    Ok(Reservation {
        extent_start: u64at(0),
        nr_extents: u64at(8),
        extent_order: u32::from_le_bytes(b[16..20].try_into().unwrap_or_default()),
        mem_flags: u32::from_le_bytes(b[20..24].try_into().unwrap_or_default()),
        domid: u16::from_le_bytes([b[24], b[25]]),
    })
}

/// Checks the flags: address width, NUMA node (XSA-231: only node 0 exists), no others.
fn check_flags(r: &Reservation) -> Result<u64, Errno> {
    let node = (r.mem_flags >> 8) & 0xFF;
    if node > 1 || r.mem_flags >> 16 != 0 {
        return Err(Errno::EINVAL);
    }
    let bits = r.mem_flags & 0xFF;
    Ok(if bits == 0 || bits >= 64 { u64::MAX } else { 1u64 << bits.saturating_sub(12).min(52) })
}

/// A zeroed frame for the domain, counted in `tot_pages`. `replacing` frames of its are
/// about to be given back (exchange), so the maximum may be passed by that many meanwhile.
fn alloc_for_guest(hv: &mut Mx, mfn_limit: u64, replacing: u64) -> Option<Mfn> {
    let d = hv.pc.cur.shared.clone();
    alloc_for(&d, mfn_limit, replacing)
}

/// [`alloc_for_guest`] for domain `d` (the caller's, or one a privileged caller names). A
/// domain being destroyed gets none: a frame given to it after its teardown looked is
/// taken back (its teardown sets `dying` before it looks at its frames).
fn alloc_for(d: &crate::domain::DomShared, mfn_limit: u64, replacing: u64) -> Option<Mfn> {
    if !reserve(d, 1, replacing) {
        return None;
    }
    let Some(m) = crate::mm::with(|mm| {
        let m = mm.alloc.alloc()?;
        if m.0 >= mfn_limit {
            mm.alloc.free(m);
            return None;
        }
        Some(m)
    })
    .flatten() else {
        unreserve(d, 1);
        return None;
    };
    // The only scrub a frame gets (frees do not scrub): one that cannot be zeroed (not
    // direct-mapped, or the hypervisor's own) stays out of use.
    if DirectMap.zero(m).is_none() {
        log::error!("frame {:#x} from the allocator cannot be zeroed: kept out of use", m.0);
        unreserve(d, 1);
        return None;
    }
    if crate::machine::frames().set_owner(m, Owner::Dom(d.id)).is_err() {
        // Cannot happen for a frame fresh from the allocator (nothing references it). If it
        // did, something still holds the frame: it stays out of the allocator (which would
        // hand the same frame out again), and the domain gets none.
        log::error!("frame {:#x} from the allocator is still referenced: kept out of use", m.0);
        unreserve(d, 1);
        return None;
    }
    d.note_frame(m);
    core::sync::atomic::fence(Ordering::SeqCst);
    if d.is_dying() {
        if crate::machine::frames().set_owner(m, Owner::Free).is_ok() {
            crate::mm::with(|mm| mm.alloc.free(m));
        }
        unreserve(d, 1);
        return None;
    }
    Some(m)
}

/// Counts `n` more frames in `d`'s `tot_pages` if they fit under `max_pages` (plus the
/// `replacing` frames about to go): one atomic step, so vCPUs allocating at once cannot
/// together pass the limit.
fn reserve(d: &crate::domain::DomShared, n: u64, replacing: u64) -> bool {
    let max = d.max_pages.load(Ordering::Relaxed) + replacing;
    d.tot_pages.fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| t.checked_add(n).filter(|&v| v <= max)).is_ok()
}

/// Takes back a [`reserve`] of frames that did not come (never below zero: a teardown may
/// have cleared the count meanwhile).
fn unreserve(d: &crate::domain::DomShared, n: u64) {
    let _ = d.tot_pages.fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| Some(t.saturating_sub(n)));
}

/// Gives a frame back: only if the domain owns it and nothing references it.
fn free_from_guest(hv: &mut Mx, m: Mfn) -> Result<(), Errno> {
    let d = hv.pc.cur.shared.clone();
    crate::teardown::free_from(&d, m)
}

fn reservation_op(hv: &mut Mx, f: &mut TrapFrame, op: u64, start: u64, arg: u64) -> HcResult {
    let r = read_reservation(hv, arg)?;
    let target = super::foreign_dom(hv, r.domid)?;
    let limit = check_flags(&r)?;
    let foreign = target.id != hv.pc.cur.dom;
    // Changing another domain's memory holds its memory lock as well (the second level,
    // `DomShared::foreign_mm`): no table of its can take a frame being taken from it, and,
    // the dying flag looked at again under the lock, no frame reaches a domain whose
    // teardown has begun (its walks take that lock, so they come after this call and see
    // every frame it gave).
    let _target_mm = if foreign {
        let g = target.foreign_mm();
        if target.is_dying() {
            return Err(Errno::ESRCH);
        }
        Some(g)
    } else {
        None
    };
    if r.extent_order != 0 {
        // Only single pages; larger extents are reported as not done (as Xen does for an
        // order above its maximum).
        return Ok(start as i64);
    }
    if r.nr_extents > (1 << 40) {
        return Err(Errno::EINVAL);
    }
    let mut i = start;
    let mut freed = false;
    while i < r.nr_extents {
        if i > start && super::preempt(hv, 1) {
            if freed {
                super::mmu::tables_changed(hv, &[hv.pc.cur.dom, target.id]);
            }
            return continuation(f, nr::MEMORY_OP, [hv_core::continuation::memop_join(op, i), arg, 0, 0]);
        }
        let slot = r.extent_start.wrapping_add(8 * i);
        match op {
            XENMEM_INCREASE_RESERVATION | XENMEM_POPULATE_PHYSMAP => {
                let gpfn = if op == XENMEM_POPULATE_PHYSMAP {
                    let mut b = [0u8; 8];
                    read_guest(hv, slot, &mut b)?;
                    Some(u64::from_le_bytes(b))
                } else {
                    None
                };
                let Some(m) = alloc_for(&target, limit, 0) else { break };
                if r.extent_start != 0 || gpfn.is_some() {
                    if let Err(e) = write_guest(hv, slot, &m.0.to_le_bytes()) {
                        let _ = crate::teardown::free_from(&target, m);
                        return Err(e);
                    }
                }
                if let Some(p) = gpfn {
                    crate::machine::get().m2p.set(m, p);
                }
            }
            _ => {
                let mut b = [0u8; 8];
                read_guest(hv, slot, &mut b)?;
                if crate::teardown::free_from(&target, Mfn(u64::from_le_bytes(b))).is_err() {
                    break;
                }
                freed = true;
            }
        }
        i += 1;
    }
    if freed {
        super::mmu::tables_changed(hv, &[hv.pc.cur.dom, target.id]);
    }
    Ok(i as i64)
}

/// `XENMEM_exchange`: trades the caller's frames for new ones. Every array element address
/// is checked as it is used (XSA-212); `nr_exchanged` makes it restartable.
fn exchange(hv: &mut Mx, f: &mut TrapFrame, arg: u64) -> HcResult {
    let inr = read_reservation(hv, arg)?;
    let out = read_reservation(hv, arg.wrapping_add(32))?;
    let mut b = [0u8; 8];
    read_guest(hv, arg.wrapping_add(64), &mut b)?;
    let mut done = u64::from_le_bytes(b);
    // Only the caller's own frames are exchanged (a foreign exchange: docs/abi-deviations.md).
    let me = hv.pc.cur.dom;
    if resolve_dom(hv, inr.domid)? != me || resolve_dom(hv, out.domid)? != me {
        return Err(Errno::EOPNOTSUPP);
    }
    let limit = check_flags(&out)?;
    check_flags(&inr)?;
    if inr.extent_order != 0 || out.extent_order != 0 {
        return exchange_orders(hv, f, arg, &inr, &out, done, limit);
    }
    if inr.nr_extents != out.nr_extents || done > inr.nr_extents {
        return Err(Errno::EINVAL);
    }
    let mut result = Ok(0);
    let first = done;
    while done < inr.nr_extents {
        if done > first && super::preempt(hv, 1) {
            // nr_exchanged carries the progress, as in Xen.
            super::mmu::tables_changed(hv, &[hv.pc.cur.dom]);
            write_guest(hv, arg.wrapping_add(64), &done.to_le_bytes())?;
            return continuation(f, nr::MEMORY_OP, [XENMEM_EXCHANGE, arg, 0, 0]);
        }
        let mut g = [0u8; 8];
        if let Err(e) = read_guest(hv, inr.extent_start.wrapping_add(8 * done), &mut g) {
            result = Err(e);
            break;
        }
        let old = Mfn(u64::from_le_bytes(g));
        // Check the old frame and the output slot before anything changes hands.
        let f = crate::machine::frames().get(old);
        if f.is_none_or(|f| f.owner != Owner::Dom(hv.pc.cur.dom) || f.count != 0 || f.type_count != 0) {
            result = Err(Errno::EINVAL);
            break;
        }
        let slot = out.extent_start.wrapping_add(8 * done);
        // Both ends of the 8-byte slot (it may straddle a page), before anything changes hands.
        let checked = hv_core::guest_access::check_range(slot, 8)
            .map_err(Errno::from)
            .and_then(|_| super::check_translates(hv, slot, true))
            .and_then(|_| super::check_translates(hv, slot.wrapping_add(7), true));
        if let Err(e) = checked {
            result = Err(e);
            break;
        }
        let Some(new) = alloc_for_guest(hv, limit, 1) else {
            result = Err(Errno::ENOMEM);
            break;
        };
        let pfn = crate::machine::get().m2p.get(old);
        // The old frame goes first: a copy on another vCPU may hold it for a moment (it was
        // checked unreferenced, but holds need no lock); then the new one goes back too.
        if let Err(e) = free_from_guest(hv, old) {
            let _ = free_from_guest(hv, new);
            result = Err(e);
            break;
        }
        crate::machine::get().m2p.set(new, pfn);
        done += 1;
        if let Err(e) = write_guest(hv, slot, &new.0.to_le_bytes()) {
            // Checked above; a sibling vCPU unmapped it since. The exchange stands (the
            // count below says so).
            result = Err(e);
            break;
        }
    }
    super::mmu::tables_changed(hv, &[hv.pc.cur.dom]);
    write_guest(hv, arg.wrapping_add(64), &done.to_le_bytes())?;
    result
}

/// Largest extent order an exchange takes (64 frames, 256 KiB: Linux's swiotlb-xen asks for
/// up to 256 KiB machine-contiguous).
pub const MAX_EXCHANGE_ORDER: u32 = 6;

/// [`exchange`] with extents larger than a frame: Linux's `xen_create_contiguous_region`
/// (2^n single frames for one machine-contiguous extent of order n, below `address_bits`)
/// and `xen_destroy_contiguous_region` (the reverse). The work goes in chunks of
/// 2^max(in, out order) frames, each all or nothing: every old frame of a chunk is the
/// caller's, unreferenced and listed once, and the new frames are allocated, before anything
/// changes hands. As in Xen, `out.extent_start` holds the pseudo-physical frame each output
/// extent is to fill on input (the M2P of its frames is set from it), its MFN on return;
/// `nr_exchanged` counts input extents done.
fn exchange_orders(hv: &mut Mx, f: &mut TrapFrame, arg: u64, inr: &Reservation, out: &Reservation, mut done: u64, limit: u64) -> HcResult {
    let (io, oo) = (inr.extent_order, out.extent_order);
    if io > MAX_EXCHANGE_ORDER || oo > MAX_EXCHANGE_ORDER {
        return Err(Errno::EINVAL);
    }
    let chunk = 1u64 << io.max(oo);
    let (in_per, out_per) = (chunk >> io, chunk >> oo);
    // Both lists describe the same number of frames, in whole chunks.
    let frames = inr.nr_extents.checked_shl(io).filter(|&n| n >> io == inr.nr_extents);
    if frames.is_none() || frames != out.nr_extents.checked_shl(oo).filter(|&n| n >> oo == out.nr_extents)
        || !inr.nr_extents.is_multiple_of(in_per) || done > inr.nr_extents || !done.is_multiple_of(in_per)
    {
        return Err(Errno::EINVAL);
    }
    let me = hv.pc.cur.shared.clone();
    let ft = crate::machine::frames();
    let m2p = &crate::machine::get().m2p;
    let mut result = Ok(0);
    let first = done;
    while done < inr.nr_extents {
        if done > first && super::preempt(hv, chunk) {
            super::mmu::tables_changed(hv, &[me.id]);
            write_guest(hv, arg.wrapping_add(64), &done.to_le_bytes())?;
            return continuation(f, nr::MEMORY_OP, [XENMEM_EXCHANGE, arg, 0, 0]);
        }
        let c = done / in_per;
        // The chunk's old frames: each input extent is 2^io machine-contiguous frames.
        let mut old = [0u64; 1 << MAX_EXCHANGE_ORDER];
        let mut bad = None;
        for k in 0..in_per {
            let mut g = [0u8; 8];
            if let Err(e) = read_guest(hv, inr.extent_start.wrapping_add(8 * (done + k)), &mut g) {
                bad = Some(e);
                break;
            }
            let base = u64::from_le_bytes(g);
            if base & ((1 << io) - 1) != 0 {
                bad = Some(Errno::EINVAL);
                break;
            }
            for j in 0..(1u64 << io) {
                old[(k << io | j) as usize] = base.wrapping_add(j);
            }
        }
        let old = &mut old[..chunk as usize];
        if bad.is_none() {
            let unusable = |m: u64| ft.get(Mfn(m)).is_none_or(|f| f.owner != Owner::Dom(me.id) || f.count != 0 || f.type_count != 0);
            old.sort_unstable();
            if old.windows(2).any(|w| w[0] == w[1]) || old.iter().any(|&m| unusable(m)) {
                bad = Some(Errno::EINVAL);
            }
        }
        // The output slots (pseudo-physical frames in, MFNs out), checked writable.
        let mut gpfn = [0u64; 1 << MAX_EXCHANGE_ORDER];
        for k in 0..out_per {
            if bad.is_some() {
                break;
            }
            let slot = out.extent_start.wrapping_add(8 * (c * out_per + k));
            let mut g = [0u8; 8];
            let r = hv_core::guest_access::check_range(slot, 8)
                .map_err(Errno::from)
                .and_then(|_| super::check_translates(hv, slot, true))
                .and_then(|_| super::check_translates(hv, slot.wrapping_add(7), true))
                .and_then(|_| read_guest(hv, slot, &mut g));
            match r {
                Ok(()) => gpfn[k as usize] = u64::from_le_bytes(g),
                Err(e) => bad = Some(e),
            }
        }
        if let Some(e) = bad {
            result = Err(e);
            break;
        }
        // The new frames, before anything is given back: `out_per` extents of 2^oo frames.
        let mut new = [Mfn(0); 1 << MAX_EXCHANGE_ORDER];
        let mut got = 0;
        while got < out_per {
            match alloc_extent(&me, oo, limit, chunk) {
                Some(m) => {
                    new[got as usize] = m;
                    got += 1;
                }
                None => break,
            }
        }
        if got < out_per {
            for &m in &new[..got as usize] {
                for j in 0..(1u64 << oo) {
                    let _ = crate::teardown::free_from(&me, Mfn(m.0 + j));
                }
            }
            result = Err(Errno::ENOMEM);
            break;
        }
        // The old frames go (checked unreferenced under the memory lock: only a grant copy
        // on another vCPU could hold one for a moment, and then the exchange stops there,
        // the frames already given back being the guest's loss).
        if let Some(e) = old.iter().find_map(|&m| crate::teardown::free_from(&me, Mfn(m)).err()) {
            for &m in &new[..got as usize] {
                for j in 0..(1u64 << oo) {
                    let _ = crate::teardown::free_from(&me, Mfn(m.0 + j));
                }
            }
            result = Err(e);
            break;
        }
        for k in 0..out_per as usize {
            for j in 0..(1u64 << oo) {
                m2p.set(Mfn(new[k].0 + j), gpfn[k].wrapping_add(j));
            }
            let slot = out.extent_start.wrapping_add(8 * (c * out_per + k as u64));
            if let Err(e) = write_guest(hv, slot, &new[k].0.to_le_bytes()) {
                result = Err(e);
            }
        }
        done += in_per;
        if result.is_err() {
            break;
        }
    }
    super::mmu::tables_changed(hv, &[me.id]);
    write_guest(hv, arg.wrapping_add(64), &done.to_le_bytes())?;
    result
}

/// 2^`order` machine-contiguous zeroed frames below `limit` for `d`, aligned to their size
/// and counted in `tot_pages`; `replacing` frames are about to be given back (as in
/// [`alloc_for`]).
fn alloc_extent(d: &crate::domain::DomShared, order: u32, limit: u64, replacing: u64) -> Option<Mfn> {
    if order == 0 {
        return alloc_for(d, limit, replacing);
    }
    let n = 1u64 << order;
    if !reserve(d, n, replacing) {
        return None;
    }
    let Some(m) = crate::mm::with(|mm| {
        let m = mm.alloc.alloc_contig(n, n)?;
        if m.0 + n > limit {
            mm.alloc.free_range(m, Mfn(m.0 + n));
            return None;
        }
        Some(m)
    })
    .flatten() else {
        unreserve(d, n);
        return None;
    };
    let ft = crate::machine::frames();
    for j in 0..n {
        let f = Mfn(m.0 + j);
        if DirectMap.zero(f).is_none() || ft.set_owner(f, Owner::Dom(d.id)).is_err() {
            // As in `alloc_for`: a frame that cannot be zeroed or is still referenced stays
            // out of use; the ones before it go back to the domain's count and then to the
            // allocator, the rest of the range straight back.
            log::error!("frame {:#x} from the allocator is unusable: kept out of use", f.0);
            // The ones before it were counted (the reservation): freeing them uncounts.
            for i in 0..j {
                let _ = crate::teardown::free_from(d, Mfn(m.0 + i));
            }
            unreserve(d, n - j);
            crate::mm::with(|mm| mm.alloc.free_range(Mfn(f.0 + 1), Mfn(m.0 + n)));
            return None;
        }
        d.note_frame(f);
    }
    core::sync::atomic::fence(Ordering::SeqCst);
    if d.is_dying() {
        for j in 0..n {
            let _ = crate::teardown::free_from(d, Mfn(m.0 + j));
        }
        return None;
    }
    Some(m)
}

/// `memory_op`, under the domain's memory lock: frames change
/// hands only under it, so its page-table hypercalls and guest copies on other CPUs never
/// see a frame leave it halfway. The allocator has a lock of its own (`crate::mm`).
pub fn memory_op(hv: &mut Mx, f: &mut TrapFrame, cmd: u64, arg: u64) -> HcResult {
    let max_mfn = crate::machine::get().max_mfn;
    let (op, start) = hv_core::continuation::memop_split(cmd);
    match op {
        XENMEM_INCREASE_RESERVATION | XENMEM_DECREASE_RESERVATION | XENMEM_POPULATE_PHYSMAP => {
            reservation_op(hv, f, op, start, arg)
        }
        XENMEM_MAXIMUM_RAM_PAGE => Ok(max_mfn as i64 - 1),
        XENMEM_CURRENT_RESERVATION | XENMEM_MAXIMUM_RESERVATION => {
            let mut b = [0u8; 2];
            read_guest(hv, arg, &mut b)?;
            let d = super::foreign_dom(hv, u16::from_le_bytes(b))?;
            Ok(if op == XENMEM_CURRENT_RESERVATION { d.tot_pages.load(Ordering::Relaxed) } else { d.max_pages.load(Ordering::Relaxed) } as i64)
        }
        XENMEM_MACHPHYS_MAPPING => {
            let mut b = [0u8; 24];
            b[..8].copy_from_slice(&guest_abi::layout::MACH2PHYS_VIRT_START.to_le_bytes());
            b[8..16].copy_from_slice(&(guest_abi::layout::MACH2PHYS_VIRT_START + 8 * max_mfn).to_le_bytes());
            b[16..].copy_from_slice(&(max_mfn - 1).to_le_bytes());
            write_guest(hv, arg, &b)?;
            Ok(0)
        }
        XENMEM_MEMORY_MAP => {
            let mut b = [0u8; 16];
            read_guest(hv, arg, &mut b)?;
            let n = u32::from_le_bytes(b[..4].try_into().unwrap_or_default());
            let buf = u64::from_le_bytes(b[8..].try_into().unwrap_or_default());
            if n < 1 {
                return Err(Errno::EINVAL);
            }
            let mut e = [0u8; 20];
            e[8..16].copy_from_slice(&(hv.pc.cur.shared.max_pages.load(Ordering::Relaxed) * 4096).to_le_bytes());
            e[16..20].copy_from_slice(&1u32.to_le_bytes());
            write_guest(hv, buf, &e)?;
            write_guest(hv, arg, &1u32.to_le_bytes())?;
            Ok(0)
        }
        XENMEM_EXCHANGE => {
            if start != 0 {
                return Err(Errno::EINVAL);
            }
            exchange(hv, f, arg)
        }
        _ => Err(Errno::ENOSYS),
    }
}
