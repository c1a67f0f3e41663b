//! The grant table client (v1, one frame: 512 references): grant another domain access to
//! a frame of this one, end that access once the grantee let go, and map or unmap what
//! another domain granted. No heap: the free references are a bitmap.
//!
//! References below [`NR_RESERVED_ENTRIES`] are the toolstack's (0: console, 1: XenStore)
//! and never handed out.

use crate::hypercall::{self as hc, hypercall5};
use crate::mm::{A, D, P, RW};
use crate::StartInfo;
use core::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use guest_abi::grant::*;
use guest_abi::hypercall as nr;

/// Where the table's frame is mapped (0: not yet).
static TABLE: AtomicU64 = AtomicU64::new(0);
/// `init` ran (or runs): it sets up the table once.
static INIT: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// A reference this guest granted: ended (and freed) only through [`end_access`], which
/// takes it, so a reference cannot be ended twice or after it was handed out again.
#[derive(Debug, PartialEq, Eq)]
pub struct Grant(u32);

impl Grant {
    /// The reference number, for the grantee.
    pub fn gref(&self) -> u32 {
        self.0
    }
}
/// Free references (bit set = free), 512 of them.
static FREE: [AtomicU64; 8] = [const { AtomicU64::new(!0) }; 8];

fn op(cmd: u64, arg: &mut [u8], count: u64) -> i64 {
    // SAFETY: `arg` is valid for reads and writes of `count` operations of the command's
    // size (every caller passes a buffer of `count` operations of that size).
    unsafe { hypercall5(nr::GRANT_TABLE_OP, cmd, arg.as_mut_ptr() as u64, count, 0, 0) }
}

/// Sets the table up (`GNTTABOP_setup_table`, one frame) and maps it at the bootstrap
/// region's second-to-last page (shared_info has the last; a guest using the client leaves
/// that slack page to it). True if the client can be used.
pub fn init(si: &StartInfo) -> bool {
    if INIT.swap(true, Ordering::SeqCst) {
        return TABLE.load(Ordering::SeqCst) != 0;
    }
    let Ok(frame) = crate::ctl::grant_frame(guest_abi::DOMID_SELF) else { return false };
    let va = crate::virt_base() + (crate::pvio::region_end_pfn(si) - 2) * 4096;
    if hc::update_va_mapping(va, frame << 12 | P | RW | A | D, 2) != 0 {
        return false;
    }
    FREE[0].store(!((1u64 << NR_RESERVED_ENTRIES) - 1), Ordering::SeqCst);
    TABLE.store(va, Ordering::SeqCst);
    true
}

/// The flags word of entry `gref` (`None` before [`init`] or past the frame).
fn flags(gref: u32) -> Option<&'static AtomicU16> {
    let va = TABLE.load(Ordering::SeqCst);
    if va == 0 || gref >= ENTRIES_PER_FRAME_V1 {
        return None;
    }
    // SAFETY: `init` mapped the table frame at `va` for the guest's lifetime; the entry is
    // inside it and its flags are a 2-aligned u16 the hypervisor also changes atomically.
    Some(unsafe { AtomicU16::from_ptr((va + 8 * gref as u64) as *mut u16) })
}

/// Grants domain `dom` access to machine frame `mfn` (read-only if `readonly`): the
/// reference, or `None` when all are in use (or before [`init`]).
///
/// # Safety
/// `mfn` must be a frame of this guest that `dom` may see (and, unless `readonly`, change)
/// until [`end_access`] succeeds: no Rust object may rely on its contents meanwhile.
pub unsafe fn grant_access(dom: u16, mfn: u64, readonly: bool) -> Option<Grant> {
    let va = TABLE.load(Ordering::SeqCst);
    if va == 0 || mfn > u32::MAX as u64 {
        return None;
    }
    let gref = take_free()?;
    // SAFETY: as for `flags`: the entry's domid (u16 at +2) and frame (u32 at +4) are
    // inside the mapped table frame; nobody else writes them while the entry is invalid.
    unsafe {
        ((va + 8 * gref as u64 + 2) as *mut u16).write_volatile(dom);
        ((va + 8 * gref as u64 + 4) as *mut u32).write_volatile(mfn as u32);
    }
    // The grantee may look once the flags say so: after domid and frame.
    let f = flags(gref)?;
    f.store(GTF_PERMIT_ACCESS | if readonly { GTF_READONLY } else { 0 }, Ordering::SeqCst);
    Some(Grant(gref))
}

fn take_free() -> Option<u32> {
    for (i, w) in FREE.iter().enumerate() {
        let mut cur = w.load(Ordering::SeqCst);
        while cur != 0 {
            let bit = cur.trailing_zeros();
            match w.compare_exchange(cur, cur & !(1 << bit), Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => return Some(i as u32 * 64 + bit),
                Err(now) => cur = now,
            }
        }
    }
    None
}

/// Ends access through `g` if the grantee has it mapped no more (`GTF_reading` /
/// `GTF_writing` clear), and frees the reference; while it is still in use, `g` comes back.
pub fn end_access(g: Grant) -> Result<(), Grant> {
    let gref = g.0;
    let Some(f) = flags(gref) else { return Err(g) };
    let mut cur = f.load(Ordering::SeqCst);
    loop {
        if cur & (GTF_READING | GTF_WRITING) != 0 {
            return Err(g);
        }
        match f.compare_exchange(cur, 0, Ordering::SeqCst, Ordering::SeqCst) {
            Ok(_) => break,
            Err(now) => cur = now,
        }
    }
    FREE[(gref / 64) as usize].fetch_or(1 << (gref % 64), Ordering::SeqCst);
    Ok(())
}

/// Maps grant `gref` of domain `dom` at `va` (read-only if `readonly`): the handle, or the
/// -errno / negative `GNTST_*` status.
///
/// # Safety
/// `va` must be a page of this guest whose L1 exists and in which no Rust object lives: its
/// mapping is replaced by the other domain's page, which that domain may change at any time.
pub unsafe fn map(dom: u16, gref: u32, va: u64, readonly: bool) -> Result<u32, i64> {
    let mut m = [0u8; 32];
    m[..8].copy_from_slice(&va.to_le_bytes());
    m[8..12].copy_from_slice(&(GNTMAP_HOST_MAP | if readonly { GNTMAP_READONLY } else { 0 }).to_le_bytes());
    m[12..16].copy_from_slice(&gref.to_le_bytes());
    m[16..18].copy_from_slice(&dom.to_le_bytes());
    let rc = op(GNTTABOP_MAP_GRANT_REF, &mut m, 1);
    match (rc, i16::from_le_bytes([m[18], m[19]])) {
        (0, 0) => Ok(u32::from_le_bytes([m[20], m[21], m[22], m[23]])),
        (0, s) => Err(s as i64),
        (e, _) => Err(e),
    }
}

/// Unmaps the grant mapped at `va` with `handle` (the entry is left empty).
///
/// # Safety
/// Nothing may use `va` afterwards until it is mapped again (the page is gone).
pub unsafe fn unmap(va: u64, handle: u32) -> Result<(), i64> {
    let mut u = [0u8; 24];
    u[..8].copy_from_slice(&va.to_le_bytes());
    u[16..20].copy_from_slice(&handle.to_le_bytes());
    let rc = op(GNTTABOP_UNMAP_GRANT_REF, &mut u, 1);
    match (rc, i16::from_le_bytes([u[20], u[21]])) {
        (0, 0) => Ok(()),
        (0, s) => Err(s as i64),
        (e, _) => Err(e),
    }
}

/// One side of a grant copy: another domain's grant, or a frame of this guest's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Grant { dom: u16, gref: u32, offset: u16 },
    Local { mfn: u64, offset: u16 },
}

impl Side {
    fn encode(&self, b: &mut [u8]) -> u16 {
        let (u, dom, off, is_gref) = match *self {
            Side::Grant { dom, gref, offset } => (gref as u64, dom, offset, true),
            Side::Local { mfn, offset } => (mfn, guest_abi::DOMID_SELF, offset, false),
        };
        b[0..8].copy_from_slice(&u.to_le_bytes());
        b[8..10].copy_from_slice(&dom.to_le_bytes());
        b[10..12].copy_from_slice(&off.to_le_bytes());
        is_gref as u16
    }
}

/// A copy of `len` bytes from `src` to `dst`, each within one page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Copy {
    pub src: Side,
    pub dst: Side,
    pub len: u16,
}

/// Copies per hypercall.
const COPY_BATCH: usize = 32;

/// `GNTTABOP_copy` of every operation in `ops`, `status[i]` set to operation `i`'s
/// `GNTST_*` (0: done): 0, or the -errno of a batch the hypervisor refused as a whole (its
/// operations' status then reads -1).
pub fn copy(ops: &[Copy], status: &mut [i16]) -> i64 {
    let mut rc = 0;
    for (k, chunk) in ops.chunks(COPY_BATCH).enumerate() {
        let mut b = [0u8; 40 * COPY_BATCH];
        for (i, c) in chunk.iter().enumerate() {
            let e = &mut b[40 * i..40 * i + 40];
            let mut flags = c.src.encode(&mut e[0..16]);
            flags |= c.dst.encode(&mut e[16..32]) << 1;
            e[32..34].copy_from_slice(&c.len.to_le_bytes());
            e[34..36].copy_from_slice(&flags.to_le_bytes());
        }
        let r = op(GNTTABOP_COPY, &mut b[..40 * chunk.len()], chunk.len() as u64);
        for i in 0..chunk.len() {
            if let Some(s) = status.get_mut(k * COPY_BATCH + i) {
                *s = if r == 0 { i16::from_le_bytes([b[40 * i + 36], b[40 * i + 37]]) } else { -1 };
            }
        }
        if r != 0 {
            rc = r;
        }
    }
    rc
}
