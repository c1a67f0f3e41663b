//! `grant_table_op(cmd, uop, count)`: the grant-table set-up and queries of v1
//! (`setup_table`, `query_size`, `get_version`, `set_version`). Per-operation results go to
//! the operation's `status` with `GNTST_*` codes; the hypercall returns 0 for a
//! well-formed call (XSA-316), `-EINVAL` for a count other than 1, `-EFAULT` when the
//! operation cannot be read, `-ENOSYS` for the operations not implemented yet (map, unmap,
//! copy, transfer: `hv_core::grant` has the map/unmap state machine; see
//! docs/abi-deviations.md).

use super::{read_guest, write_guest, HcResult, OnCpu};
use crate::domain::DomShared;
use guest_abi::errno::Errno;
use guest_abi::grant::*;
use hv_arch::physmem::DirectMap;
use hv_core::frame::{Owner, PageType};
use hv_core::mem::{Mfn, PhysMem};

/// The domain an operation names: the caller for `DOMID_SELF` or its own id; another
/// existing domain only for a privileged caller.
fn target(c: &impl OnCpu, dom: u16) -> Result<alloc::sync::Arc<DomShared>, GntSt> {
    let cur = &c.pc().cur;
    if dom == guest_abi::DOMID_SELF || dom == cur.dom {
        return Ok(cur.shared.clone());
    }
    let d = crate::domain::shared_of(dom).ok_or(GntSt::BadDomain)?;
    if !cur.shared.privileged {
        return Err(GntSt::PermissionDenied);
    }
    Ok(d)
}

fn u16at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}

fn u32at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap_or_default())
}

fn u64at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap_or_default())
}

/// Grows `d`'s grant table to `n` frames (within its limit; it never shrinks) and returns
/// its first `n`: each new frame zeroed, owned by `d`, and held with a writable type
/// reference. `GNTST_general_error` beyond the limit or when memory runs out (the frames
/// added so far stay).
fn grow(d: &DomShared, n: u32) -> Result<alloc::vec::Vec<Mfn>, GntSt> {
    let ft = crate::machine::frames();
    let mut g = d.grant();
    if n > g.max_frames {
        return Err(GntSt::GeneralError);
    }
    while (g.frames.len() as u32) < n {
        let Some(Some(m)) = crate::mm::with(|mm| mm.alloc.alloc()) else { return Err(GntSt::GeneralError) };
        DirectMap.zero(m);
        if ft.set_owner(m, Owner::Dom(d.id)).is_err() || ft.get_page_and_type(m, d.id, Some(PageType::Writable)).is_err() {
            // Cannot happen for a fresh frame; if it did, the frame stays out of use.
            log::error!("grant frame {:#x} from the allocator is still referenced: kept out of use", m.0);
            return Err(GntSt::GeneralError);
        }
        g.frames.push(m);
    }
    Ok(g.frames.iter().take(n as usize).copied().collect())
}

/// `GNTTABOP_setup_table {dom u16 @0, nr_frames u32 @4; OUT status i16 @8; frame_list
/// u64* @16}`: grows the table to `nr_frames` and writes the frames' MFNs.
fn setup_table(c: &impl OnCpu, uop: u64) -> Result<(), Errno> {
    let mut b = [0u8; 24];
    read_guest(c, uop, &mut b)?;
    let (dom, nr, list) = (u16at(&b, 0), u32at(&b, 4), u64at(&b, 16));
    let status = (|| {
        // The guest copies are made after the grant lock is let go.
        let d = target(c, dom)?;
        let frames = grow(&d, nr)?;
        for (i, m) in frames.iter().enumerate() {
            write_guest(c, list.wrapping_add(8 * i as u64), &m.0.to_le_bytes()).map_err(|_| GntSt::BadVirtAddr)?;
        }
        Ok(())
    })();
    put_status(c, uop, 8, status)
}

/// `GNTTABOP_query_size {dom u16 @0; OUT nr_frames u32 @4, max_nr_frames u32 @8, status
/// i16 @12}`.
fn query_size(c: &impl OnCpu, uop: u64) -> Result<(), Errno> {
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

pub fn grant_table_op(c: &impl OnCpu, cmd: u64, uop: u64, count: u64) -> HcResult {
    let one = || if count == 1 { Ok(()) } else { Err(Errno::EINVAL) };
    match cmd {
        GNTTABOP_SETUP_TABLE => {
            one()?;
            setup_table(c, uop)?;
        }
        GNTTABOP_QUERY_SIZE => {
            one()?;
            query_size(c, uop)?;
        }
        // {dom u16 @0, pad; OUT version u32 @4}: version 1 is the only one.
        GNTTABOP_GET_VERSION => {
            one()?;
            let mut b = [0u8; 2];
            read_guest(c, uop, &mut b)?;
            target(c, u16::from_le_bytes(b)).map_err(|e| if e == GntSt::PermissionDenied { Errno::EPERM } else { Errno::ESRCH })?;
            write_guest(c, uop.wrapping_add(4), &1u32.to_le_bytes())?;
        }
        // {version u32}: 1 is kept; 2 is not supported (docs/abi-deviations.md); the
        // version in force is written back.
        GNTTABOP_SET_VERSION => {
            one()?;
            let mut b = [0u8; 4];
            read_guest(c, uop, &mut b)?;
            let v = u32::from_le_bytes(b);
            write_guest(c, uop, &1u32.to_le_bytes())?;
            match v {
                1 => {}
                2 => return Err(Errno::EOPNOTSUPP),
                _ => return Err(Errno::EINVAL),
            }
        }
        _ => return Err(Errno::ENOSYS),
    }
    Ok(0)
}
