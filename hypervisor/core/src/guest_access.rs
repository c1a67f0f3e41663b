//! Checked access to guest memory through the guest's own page tables.
//!
//! Every guest pointer a hypercall receives is translated here in software: the address must
//! be canonical and outside the hypervisor's slots, every level of the guest's tables must
//! map it present (and writable, for writes), no level may be a superpage, and the final
//! frame must belong to the domain. The bytes are then reached through the hypervisor's own
//! mapping of machine memory, never through the guest's address space, so no guest pointer
//! is ever dereferenced directly and a bad one is an error code, not a fault.

use crate::mem::{Mfn, PhysMem};
use crate::pte::{self, Pte, PteFlags};
use guest_abi::errno::Errno;
use guest_abi::layout;

/// Why a guest address could not be accessed. Hypercalls report all of them as `-EFAULT`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum GuestFault {
    /// Non-canonical, in the hypervisor's slots, or the range wraps.
    BadAddress,
    /// Some level is not present.
    NotPresent,
    /// A write through a mapping that is read-only at some level.
    ReadOnly,
    /// A superpage entry (guests may not have them).
    Superpage,
    /// The frame reached does not belong to the domain, or is not memory.
    NotOwned,
}

impl From<GuestFault> for Errno {
    fn from(_: GuestFault) -> Errno {
        Errno::EFAULT
    }
}

/// What a translation needs to know about the domain.
pub struct GuestView<'a> {
    /// Root (L4) of the domain's current page tables.
    pub l4: Mfn,
    /// Does the domain own this frame (so that the hypervisor may touch it on its behalf)?
    pub owns: &'a dyn Fn(Mfn) -> bool,
}

/// Translates one guest virtual address to the machine frame holding it.
pub fn translate<M: PhysMem + ?Sized>(
    mem: &M,
    view: &GuestView<'_>,
    va: u64,
    write: bool,
) -> Result<Mfn, GuestFault> {
    if !layout::is_guest_va(va) {
        return Err(GuestFault::BadAddress);
    }
    let mut table = view.l4;
    for level in (1..=4).rev() {
        let e = Pte(mem.read_u64(table, pte::index(va, level)).ok_or(GuestFault::NotOwned)?);
        if !e.present() {
            return Err(GuestFault::NotPresent);
        }
        if write && !e.writable() {
            return Err(GuestFault::ReadOnly);
        }
        if level > 1 && e.flags().contains(PteFlags::PSE) {
            return Err(GuestFault::Superpage);
        }
        table = e.mfn();
        if !(view.owns)(table) {
            return Err(GuestFault::NotOwned);
        }
    }
    Ok(table)
}

/// Checks that `[va, va+len)` is a range of guest addresses.
pub fn check_range(va: u64, len: usize) -> Result<(), GuestFault> {
    let end = va.checked_add(len as u64).ok_or(GuestFault::BadAddress)?;
    if crate::pv_image::is_guest_range(va, end) {
        Ok(())
    } else {
        Err(GuestFault::BadAddress)
    }
}

/// Splits `[va, va+len)` at page boundaries: (address, offset in page, length, bytes before).
fn pieces(va: u64, len: usize) -> impl Iterator<Item = (u64, usize, usize, usize)> {
    let mut done = 0;
    core::iter::from_fn(move || {
        if done >= len {
            return None;
        }
        let cur = va + done as u64;
        let off = (cur & 0xFFF) as usize;
        let n = (4096 - off).min(len - done);
        let item = (cur, off, n, done);
        done += n;
        Some(item)
    })
}

/// Copies `out.len()` bytes from guest address `va`.
pub fn copy_from_guest<M: PhysMem + ?Sized>(
    mem: &M,
    view: &GuestView<'_>,
    va: u64,
    out: &mut [u8],
) -> Result<(), GuestFault> {
    check_range(va, out.len())?;
    for (cur, off, n, done) in pieces(va, out.len()) {
        let mfn = translate(mem, view, cur, false)?;
        mem.read(mfn, off, &mut out[done..done + n]).ok_or(GuestFault::NotOwned)?;
    }
    Ok(())
}

/// Copies `data` to guest address `va`. Every page is checked before any byte is written.
pub fn copy_to_guest<M: PhysMem + ?Sized>(
    mem: &mut M,
    view: &GuestView<'_>,
    va: u64,
    data: &[u8],
) -> Result<(), GuestFault> {
    check_range(va, data.len())?;
    // Check first, so a fault leaves guest memory untouched.
    for (cur, ..) in pieces(va, data.len()) {
        translate(mem, view, cur, true)?;
    }
    for (cur, off, n, done) in pieces(va, data.len()) {
        let mfn = translate(mem, view, cur, true)?;
        mem.write(mfn, off, &data[done..done + n]).ok_or(GuestFault::NotOwned)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::VecMem;

    /// Tables: L4 = mfn 0, L3 = 1, L2 = 2, L1 = 3; data pages 4 (RW) and 5 (RO) at VA 0x40_0000
    /// and 0x40_1000; mfn 6 mapped but not owned at 0x40_2000; 7 = a superpage L2 entry.
    fn setup() -> VecMem {
        let mut m = VecMem::new(0, 8);
        let t = PteFlags::P | PteFlags::RW;
        m.write_u64(Mfn(0), 0, Pte::new(Mfn(1), t).0);
        m.write_u64(Mfn(1), 0, Pte::new(Mfn(2), t).0);
        m.write_u64(Mfn(2), 2, Pte::new(Mfn(3), t).0);
        m.write_u64(Mfn(2), 3, Pte::new(Mfn(0), t | PteFlags::PSE).0);
        m.write_u64(Mfn(3), 0, Pte::new(Mfn(4), t).0);
        m.write_u64(Mfn(3), 1, Pte::new(Mfn(5), PteFlags::P).0);
        m.write_u64(Mfn(3), 2, Pte::new(Mfn(6), t).0);
        m
    }

    fn owns(m: Mfn) -> bool {
        m.0 < 6
    }

    #[test]
    fn translation_rules() {
        let m = setup();
        let v = GuestView { l4: Mfn(0), owns: &owns };
        assert_eq!(translate(&m, &v, 0x40_0123, true), Ok(Mfn(4)));
        assert_eq!(translate(&m, &v, 0x40_1000, false), Ok(Mfn(5)));
        assert_eq!(translate(&m, &v, 0x40_1000, true), Err(GuestFault::ReadOnly));
        assert_eq!(translate(&m, &v, 0x40_2000, false), Err(GuestFault::NotOwned));
        assert_eq!(translate(&m, &v, 0x40_3000, false), Err(GuestFault::NotPresent));
        assert_eq!(translate(&m, &v, 0x60_0000, false), Err(GuestFault::Superpage));
        assert_eq!(translate(&m, &v, 0x8000_0000_0000, false), Err(GuestFault::BadAddress));
        assert_eq!(translate(&m, &v, 0xFFFF_8300_0000_0000, false), Err(GuestFault::BadAddress));
    }

    #[test]
    fn copies_span_pages_and_fail_atomically() {
        let mut m = setup();
        let v = GuestView { l4: Mfn(0), owns: &owns };
        copy_to_guest(&mut m, &v, 0x40_0FFE, &[1, 2]).unwrap();
        let mut b = [0u8; 4];
        copy_from_guest(&m, &v, 0x40_0FFC, &mut b).unwrap();
        assert_eq!(b, [0, 0, 1, 2]);
        // Crosses into the read-only page: nothing is written.
        assert_eq!(copy_to_guest(&mut m, &v, 0x40_0FFE, &[9, 9, 9]), Err(GuestFault::ReadOnly));
        copy_from_guest(&m, &v, 0x40_0FFE, &mut b[..2]).unwrap();
        assert_eq!(&b[..2], &[1, 2]);
        assert_eq!(copy_from_guest(&m, &v, u64::MAX - 1, &mut b), Err(GuestFault::BadAddress));
        assert_eq!(
            copy_from_guest(&m, &v, 0x7FFF_FFFF_FFFE, &mut b),
            Err(GuestFault::BadAddress),
            "a range running off the canonical lower half"
        );
        assert_eq!(Errno::from(GuestFault::NotPresent), Errno::EFAULT);
    }
}
