//! `set_gdt`, `update_descriptor`, `set_segment_base`, `fpu_taskswitch`.

use super::{read_guest, HcResult};
use crate::guest::{pt, DomPt};
use guest_abi::DomId;
use super::Mx;
use guest_abi::errno::Errno;
use guest_abi::selectors::FIRST_RESERVED_GDT_ENTRY;
use hv_arch::cpu::{self, SegBase};
use hv_arch::paging;
use hv_arch::physmem::DirectMap;
use hv_core::mem::Mfn;

/// `set_gdt(frame_list, entries)`: the guest's own GDT, at most 7168 entries, in frames that
/// pass the descriptor checks and are never writable while in use.
pub fn set_gdt(hv: &mut Mx, list: u64, entries: u64) -> HcResult {
    if entries > FIRST_RESERVED_GDT_ENTRY as u64 {
        return Err(Errno::EINVAL);
    }
    let n = entries.div_ceil(512) as usize;
    let mut frames = [0u64; 14];
    for (i, f) in frames.iter_mut().enumerate().take(n) {
        let mut b = [0u8; 8];
        read_guest(hv, list.wrapping_add(8 * i as u64), &mut b)?;
        *f = u64::from_le_bytes(b);
    }
    let new = acquire_gdt(hv, &frames[..n])?;
    let old = core::mem::replace(&mut hv.pc.cur.gdt, new);
    for (i, m) in new.iter().enumerate() {
        if m.is_some() || old[i].is_some() {
            paging::map_gdt_page(&hv.pc.tables, i, *m);
        }
    }
    release(hv, &old);
    hv.pc.cur.gdt_ents = entries as u32;
    hv.pc.mapped_desc.gdt = new;
    Ok(0)
}

/// Takes descriptor-page references on the GDT frames `frames` (all or none).
pub fn acquire_gdt(hv: &mut Mx, frames: &[u64]) -> Result<[Option<Mfn>; 14], Errno> {
    let dom = hv.pc.cur.dom;
    let mut dm = DirectMap;
    acquire_gdt_in(&mut pt!(hv, dm), dom, frames)
}

/// [`acquire_gdt`] for frames of `dom`, through a page-table context of that domain.
pub fn acquire_gdt_in(pt: &mut DomPt<'_>, dom: DomId, frames: &[u64]) -> Result<[Option<Mfn>; 14], Errno> {
    let mut new = [None; 14];
    for (i, &f) in frames.iter().enumerate().take(14) {
        if let Err(e) = pt.get_segdesc(Mfn(f), dom) {
            release_in(pt, &new);
            return Err(e.into());
        }
        new[i] = Some(Mfn(f));
    }
    Ok(new)
}

/// Drops the descriptor-page references on GDT or LDT frames.
pub fn release(hv: &mut Mx, frames: &[Option<Mfn>]) {
    let mut dm = DirectMap;
    release_in(&mut pt!(hv, dm), frames)
}

/// [`release`] through a page-table context.
pub fn release_in(pt: &mut DomPt<'_>, frames: &[Option<Mfn>]) {
    for m in frames.iter().flatten() {
        pt.put_segdesc(*m);
    }
}

pub fn update_descriptor(hv: &mut Mx, maddr: u64, desc: u64) -> HcResult {
    let dom = hv.pc.cur.dom;
    let mut dm = DirectMap;
    pt!(hv, dm).update_descriptor(maddr, desc, dom)?;
    Ok(0)
}

/// `set_segment_base(which, base)`. Ring-1 guests can load selectors and (with FSGSBASE)
/// bases themselves; this sets the FS, GS and shadow (swapgs) GS base MSRs for them.
pub fn set_segment_base(which: u64, base: u64) -> HcResult {
    let reg = match which {
        0 => SegBase::Fs,
        1 => SegBase::KernelGs,
        2 => SegBase::Gs,
        _ => return Err(Errno::ENOSYS),
    };
    if cpu::set_segment_base(reg, base) {
        Ok(0)
    } else {
        Err(Errno::EINVAL)
    }
}

pub fn fpu_taskswitch(pc: &mut crate::percpu::PerCpu, set: u64) -> HcResult {
    pc.cur.fpu_ts = set != 0;
    cpu::set_ts(set != 0);
    Ok(0)
}
