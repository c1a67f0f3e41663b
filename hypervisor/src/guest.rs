//! Guest memory as hypercalls and bounces reach it: through the current vCPU's tables
//! (`hv_core::guest_access`), with whatever lock the caller holds ([`OnCpu`]).

use crate::domain::{with_view, DomMm};
use crate::percpu::PerCpu;
use crate::Hv;
use guest_abi::errno::Errno;
use hv_arch::physmem::DirectMap;
use hv_core::guest_access::{copy_from_guest, copy_to_guest};
use hv_core::mem::PhysMem;

/// A page-table hypercall's context: this CPU's structure and the current domain's memory,
/// its lock held.
pub struct Mx<'a> {
    pub pc: &'a mut PerCpu,
    pub mm: &'a mut DomMm,
}

/// What hypercall helpers run on: this CPU's structure, whatever lock is held besides.
pub trait OnCpu {
    fn pc(&self) -> &PerCpu;
    fn pc_mut(&mut self) -> &mut PerCpu;
    /// Is the current domain's memory lock held (guest copies then need no frame holds)?
    fn mm_held(&self) -> bool {
        false
    }
    /// Runs `f` with the current domain's memory lock, taking it unless it is held.
    fn with_mx<R>(&mut self, f: impl FnOnce(&mut Mx<'_>) -> R) -> R;
}

impl OnCpu for Hv<'_> {
    fn pc(&self) -> &PerCpu {
        self.pc
    }
    fn pc_mut(&mut self) -> &mut PerCpu {
        self.pc
    }
    fn with_mx<R>(&mut self, f: impl FnOnce(&mut Mx<'_>) -> R) -> R {
        with_mm(self, f)
    }
}

impl OnCpu for PerCpu {
    fn pc(&self) -> &PerCpu {
        self
    }
    fn pc_mut(&mut self) -> &mut PerCpu {
        self
    }
    fn with_mx<R>(&mut self, f: impl FnOnce(&mut Mx<'_>) -> R) -> R {
        let shared = self.cur.shared.clone();
        let mut mm = shared.mm();
        f(&mut Mx { pc: self, mm: &mut mm })
    }
}

impl OnCpu for Mx<'_> {
    fn pc(&self) -> &PerCpu {
        self.pc
    }
    fn pc_mut(&mut self) -> &mut PerCpu {
        self.pc
    }
    fn mm_held(&self) -> bool {
        true
    }
    fn with_mx<R>(&mut self, f: impl FnOnce(&mut Mx<'_>) -> R) -> R {
        f(self)
    }
}

/// Runs `f` with the current domain's memory lock (no run-queue lock may be held).
pub fn with_mm<R>(hv: &mut Hv<'_>, f: impl FnOnce(&mut Mx<'_>) -> R) -> R {
    let shared = hv.pc.cur.shared.clone();
    let mut mm = shared.mm();
    f(&mut Mx { pc: hv.pc, mm: &mut mm })
}

/// Checks that a guest address translates through the current tables (for a write, to a
/// writable mapping). Nothing is held: the answer may be stale by the time it is used.
pub fn check_translates(c: &impl OnCpu, va: u64, write: bool) -> Result<(), Errno> {
    let cur = &c.pc().cur;
    with_view(cur.dom, cur.l4, c.mm_held(), Some(&cur.xlat), |v| hv_core::guest_access::translate(&DirectMap, v, va, write)).map(|_| ()).map_err(Errno::from)
}

/// Translates a guest address of the current domain through root `l4`. Only under the
/// domain's memory lock: the frame returned stays the domain's, of the same kind, while it
/// is held.
pub fn translate_in(c: &Mx<'_>, l4: hv_core::mem::Mfn, va: u64, write: bool) -> Result<hv_core::mem::Mfn, Errno> {
    let cur = &c.pc().cur;
    let cache = (l4 == cur.l4).then_some(&cur.xlat);
    with_view(cur.dom, l4, c.mm_held(), cache, |v| hv_core::guest_access::translate(&DirectMap, v, va, write)).map_err(Errno::from)
}

/// A copy of `len` bytes at `va` within one page whose walk the current vCPU's translation
/// cache holds at the domain's current generation: the frame, the offset in it, and that
/// generation (`None`: take the general path).
#[inline]
fn cached(cur: &crate::vcpu::Vcpu, va: u64, len: usize, write: bool) -> Option<(hv_core::mem::Mfn, usize, u64)> {
    let off = (va & 0xFFF) as usize;
    if off + len > 4096 {
        return None;
    }
    let gen = crate::machine::frames().xlat_gen(cur.dom);
    Some((cur.xlat.hit(gen, cur.l4, va, write)?, off, gen))
}

/// Copies bytes from the current domain's memory.
///
/// Without the domain's memory lock the copy is first made optimistically, holding no frame:
/// it stands if the domain's translation generation did not move meanwhile. Every change
/// that could make the bytes another domain's (a frame leaving the domain, a table entry
/// written) moves the generation before the frame can reach anyone else, so bytes that came
/// from a frame no longer the domain's are never kept: the copy is made again, each frame
/// held (`hv_core::guest_access::Pins`), and on failure `out` is cleared. (A write cannot
/// be taken back, so writes always hold their frames.)
pub fn read_guest(c: &impl OnCpu, va: u64, out: &mut [u8]) -> Result<(), Errno> {
    let cur = &c.pc().cur;
    if let Some((mfn, off, gen)) = cached(cur, va, out.len(), false) {
        // The walk is cached at the current generation: one read, and (without the memory
        // lock) the generation looked at again, as below.
        if DirectMap.read(mfn, off, out).is_some() {
            if c.mm_held() {
                return Ok(());
            }
            core::sync::atomic::fence(core::sync::atomic::Ordering::Acquire);
            if crate::machine::frames().xlat_gen(cur.dom) == gen {
                return Ok(());
            }
        }
    }
    if c.mm_held() {
        return with_view(cur.dom, cur.l4, true, Some(&cur.xlat), |v| copy_from_guest(&DirectMap, v, va, out)).map_err(Errno::from);
    }
    let ft = crate::machine::frames();
    let before = ft.xlat_gen(cur.dom);
    let fast = with_view(cur.dom, cur.l4, true, Some(&cur.xlat), |v| copy_from_guest(&DirectMap, v, va, out));
    core::sync::atomic::fence(core::sync::atomic::Ordering::Acquire);
    if ft.xlat_gen(cur.dom) == before {
        return fast.map_err(Errno::from);
    }
    let r = with_view(cur.dom, cur.l4, false, Some(&cur.xlat), |v| copy_from_guest(&DirectMap, v, va, out));
    if r.is_err() {
        out.fill(0);
    }
    r.map_err(Errno::from)
}

/// Copies bytes into the current domain's memory.
pub fn write_guest(c: &impl OnCpu, va: u64, data: &[u8]) -> Result<(), Errno> {
    let cur = &c.pc().cur;
    if c.mm_held() {
        // Under the memory lock no frame of the domain changes hands or kind and no table
        // entry changes: a cached walk stays true for the write.
        if let Some((mfn, off, _)) = cached(cur, va, data.len(), true) {
            if DirectMap.write(mfn, off, data).is_some() {
                return Ok(());
            }
        }
    }
    with_view(cur.dom, cur.l4, c.mm_held(), Some(&cur.xlat), |v| copy_to_guest(&mut DirectMap, v, va, data)).map_err(Errno::from)
}

/// Writes 64-bit words into the current domain's memory at `va` (8-aligned): a frame a
/// bounce pushes onto a guest stack. Under the memory lock with a cached walk, one checked
/// store of the words; otherwise as [`write_guest`].
pub fn write_guest_words(c: &impl OnCpu, va: u64, words: &[u64]) -> Result<(), Errno> {
    let cur = &c.pc().cur;
    if c.mm_held() {
        if let Some((mfn, off, _)) = cached(cur, va, 8 * words.len(), true) {
            if DirectMap.write_words(mfn, off, words).is_some() {
                return Ok(());
            }
        }
    }
    if words.len() > MAX_WORDS {
        return Err(Errno::EINVAL);
    }
    let mut bytes = [0u8; 8 * MAX_WORDS];
    for (i, w) in words.iter().enumerate() {
        bytes[8 * i..8 * i + 8].copy_from_slice(&w.to_le_bytes());
    }
    write_guest(c, va, &bytes[..8 * words.len()])
}

/// Most words [`write_guest_words`] takes (a bounce frame: four below RIP, five above, and
/// RCX and R11 below them all in the Xen pv64 mode).
pub const MAX_WORDS: usize = 11;

/// A page-table context over the direct map (what [`pt!`] builds).
pub type DomPt<'a> = hv_core::pt::Pt<'a, DirectMap, &'static [hv_core::frame::FrameSlot]>;

/// A page-table context over the direct map, for the current domain (`$mx`: an [`Mx`]): page-table hypercalls build one per operation.
macro_rules! pt {
    // The current domain's own tables: MMIO if it has I/O rights.
    ($mx:expr, $dm:ident) => {
        $crate::guest::pt!(@ $mx.pc, $dm, $mx.mm.jobs, $mx.pc.cur.id, $mx.pc.cur.shared.privileged.then(|| &$crate::machine::get().iomem))
    };
    // Over another domain's preempted work (`$jobs`), for an operation of owner `$owner`
    // (no MMIO: the tables may be another domain's).
    ($pc:expr, $dm:ident, $jobs:expr, $owner:expr) => {
        $crate::guest::pt!(@ $pc, $dm, $jobs, $owner, None)
    };
    (@ $pc:expr, $dm:ident, $jobs:expr, $owner:expr, $io:expr) => {
        hv_core::pt::Pt {
            mem: &mut $dm,
            ft: $crate::machine::frames(),
            ram_end: hv_core::mem::Mfn($crate::machine::get().max_mfn),
            io: $io,
            tlb: &mut $crate::shootdown::FlushAll { apic_ids: &$crate::machine::get().apic_ids, this: $pc.id },
            jobs: &mut $jobs,
            vcpu: $owner,
            budget: &mut $pc.pt_budget,
        }
    };
}
pub(crate) use pt;

/// The owner a foreign page-table operation's preempted validation is recorded under in the
/// target domain's jobs: never one of the target's vCPU ids (those are below 64).
pub fn foreign_owner(caller: guest_abi::DomId, vcpu: u32) -> u32 {
    0x8000_0000 | (u32::from(caller) << 6) | vcpu
}
