//! A privileged guest's view of another domain's frames: one page of its own image whose
//! mapping is pointed at a foreign frame (`update_va_mapping_otherdomain`) while it reads or
//! writes it, and given back afterwards.

use crate::hypercall::{self as hc, hypercall5};
use crate::mm::{A, D, P, RW};
use crate::StartInfo;
use guest_abi::hypercall as nr;

#[repr(C, align(4096))]
struct Page([u8; 4096]);
static mut WINDOW: Page = Page([0; 4096]);

fn va() -> u64 {
    core::ptr::addr_of!(WINDOW) as u64
}

/// The window, with its own frame's PTE (restored by [`Window::restore`] and on drop).
pub struct Window {
    own: u64,
}

impl Window {
    /// The window of a guest whose image holds it in the bootstrap region.
    pub fn new(si: &StartInfo) -> Window {
        let mfn = crate::pvio::region_mfn(si, va()).unwrap_or(0);
        Window { own: mfn << 12 | P | RW | A | D }
    }

    /// Maps frame `mfn` of domain `dom` writable at the window (-errno on refusal).
    pub fn map(&mut self, dom: u16, mfn: u64) -> Result<(), i64> {
        // SAFETY: takes no pointer.
        match unsafe { hypercall5(nr::UPDATE_VA_MAPPING_OTHERDOMAIN, va(), mfn << 12 | P | RW | A | D, 2, dom as u64, 0) } {
            0 => Ok(()),
            e => Err(e),
        }
    }

    /// Maps frame `mfn` of this guest writable at the window (-errno on refusal).
    pub fn map_own(&mut self, mfn: u64) -> Result<(), i64> {
        match hc::update_va_mapping(va(), mfn << 12 | P | RW | A | D, 2) {
            0 => Ok(()),
            e => Err(e),
        }
    }

    /// Writes `bytes` at `off` of the frame mapped now.
    pub fn write(&mut self, off: usize, bytes: &[u8]) {
        let n = bytes.len().min(4096usize.saturating_sub(off));
        // SAFETY: the window is one page of this image, mapped writable (to whichever frame
        // `map` put there); the range is inside it. The copy goes through a raw pointer
        // derived from the address (not the static), between hypercalls (asm with memory
        // clobbers), so the compiler assumes nothing about what the page holds.
        unsafe {
            core::ptr::copy_nonoverlapping(bytes.as_ptr(), (va() as *mut u8).add(off), n);
        }
        core::sync::atomic::compiler_fence(core::sync::atomic::Ordering::SeqCst);
    }

    /// Zeroes the frame mapped now.
    pub fn zero(&mut self) {
        self.write(0, &[0u8; 4096]);
    }

    /// Reads a word at `off` (8-aligned) of the frame mapped now.
    pub fn read_u64(&self, off: usize) -> u64 {
        // SAFETY: as for `write`; `off` is kept inside the page and aligned.
        unsafe { ((va() + (off as u64 & 0xFF8)) as *const u64).read_volatile() }
    }

    /// Gives the window its own frame back.
    pub fn restore(&mut self) -> i64 {
        hc::update_va_mapping(va(), self.own, 2)
    }
}

impl Drop for Window {
    fn drop(&mut self) {
        self.restore();
    }
}

/// Pages of this image that [`Slots`] points at other domains' granted frames for as long
/// as a backend needs them (two per domain: its console and XenStore rings) ...
pub const SLOTS: usize = 128;
/// ... and those of the data slots ([`Slots::new_data`]: a block backend's grants).
pub const DATA_SLOTS: usize = 128;

#[repr(C, align(4096))]
struct SlotPages<const N: usize>([[u8; 4096]; N]);
static mut SLOT_PAGES: SlotPages<SLOTS> = SlotPages([[0; 4096]; SLOTS]);
static mut DATA_PAGES: SlotPages<DATA_SLOTS> = SlotPages([[0; 4096]; DATA_SLOTS]);

/// Long-lived grant mappings of other domains' pages (`GNTTABOP_map_grant_ref` with
/// `GNTMAP_host_map`), each at a page of this image. A slot not in use maps its own page,
/// so a [`crate::pvio::RingPage`] of a slot is always backed by writable memory: after
/// [`Slots::unmap`] it reaches this guest's own (unused) page, never a page the granter
/// took back.
pub struct Slots {
    /// The first slot page, and how many there are.
    base: u64,
    n: usize,
    own: [u64; DATA_SLOTS],
    /// The grant handle of each slot in use.
    handle: [Option<u32>; DATA_SLOTS],
}

impl Slots {
    /// The ring slots of a guest whose image holds them in the bootstrap region (made once:
    /// two `Slots` over the same pages would hand out the same page twice).
    pub fn new(si: &StartInfo) -> Slots {
        Slots::over(si, core::ptr::addr_of!(SLOT_PAGES) as u64, SLOTS)
    }

    /// The data slots (made once, as [`Slots::new`]).
    pub fn new_data(si: &StartInfo) -> Slots {
        Slots::over(si, core::ptr::addr_of!(DATA_PAGES) as u64, DATA_SLOTS)
    }

    fn over(si: &StartInfo, base: u64, n: usize) -> Slots {
        let mut own = [0u64; DATA_SLOTS];
        for (i, o) in own.iter_mut().enumerate().take(n) {
            *o = crate::pvio::region_mfn(si, base + 4096 * i as u64).unwrap_or(0) << 12 | P | RW | A | D;
        }
        let mut handle = [None; DATA_SLOTS];
        // Slots past `n` are never handed out.
        handle.iter_mut().skip(n).for_each(|h| *h = Some(u32::MAX));
        Slots { base, n, own, handle }
    }

    fn va(&self, i: usize) -> u64 {
        self.base + 4096 * (i % self.n) as u64
    }

    /// Slots free now.
    pub fn free(&self) -> usize {
        self.handle.iter().filter(|h| h.is_none()).count()
    }

    /// Maps grant `gref` of domain `dom` writable in a free slot: its index (-ENOSPC when all
    /// are taken, the hypercall's -errno, or the negative `GNTST_*` status when refused).
    pub fn map(&mut self, dom: u16, gref: u32) -> Result<usize, i64> {
        self.map_with(dom, gref, false)
    }

    /// [`Slots::map`], read-only if `readonly`.
    pub fn map_with(&mut self, dom: u16, gref: u32, readonly: bool) -> Result<usize, i64> {
        let i = self.handle.iter().position(|h| h.is_none()).ok_or(-28)?;
        // SAFETY: slot pages are this image's own, mapped in the bootstrap region, and no
        // Rust object lives in them (they are only reached as `RingPage`s).
        let h = unsafe { crate::gnttab::map(dom, gref, self.va(i), readonly) }?;
        self.handle[i] = Some(h);
        Ok(i)
    }

    /// The page of slot `i` (its mapped frame, or this guest's own page if unmapped).
    pub fn page(&self, i: usize) -> crate::pvio::RingPage {
        // SAFETY: every slot address is a page of this image, mapped writable at all times
        // (to a granted frame by `map`, else to its own frame), and used by nothing else.
        // A slot mapped read-only faults on a write: its user writes only to pages it
        // mapped writable.
        unsafe { crate::pvio::RingPage::new(self.va(i)) }
    }

    /// Unmaps slot `i`'s grant and gives the slot its own frame back. If the unmap is
    /// refused the mapping stays as it is (the slot still in use): its -errno or negative
    /// `GNTST_*` status.
    pub fn unmap(&mut self, i: usize) -> i64 {
        let Some(Some(h)) = self.handle.get(i).copied() else { return 0 };
        // SAFETY: the slot's own frame goes back at once below; nothing reaches the page in
        // between (the caller holds the slots mutably).
        if let Err(e) = unsafe { crate::gnttab::unmap(self.va(i), h) } {
            return e;
        }
        self.handle[i] = None;
        // The unmap cleared the entry: the slot's own frame goes back in (it must stay
        // mapped). If even that were refused the slot is kept out of use.
        let back = hc::update_va_mapping(self.va(i), self.own[i], 2);
        if back != 0 {
            self.handle[i] = Some(u32::MAX);
        }
        back
    }
}
