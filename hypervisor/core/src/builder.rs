//! The PV domain builder: lays out and writes a PV guest's start-of-day memory, as Xen's
//! dom0 builder and libxenguest do.
//!
//! One contiguous virtual region starting at `VIRT_BASE` is a 1:1 map of the domain's first
//! pseudo-physical frames (`va = virt_base + pfn * 4096`). In it, each item 4 KiB aligned:
//! the kernel image, the boot module (dom0's initrd, if any: `start_info.mod_start` is its
//! address, `mod_len` its length, as Xen), the P2M list, `start_info`, for a domU built by
//! the toolstack its XenStore and console ring pages (libxenguest's "magic pages"), the
//! bootstrap page tables, the boot stack.
//! The region ends on a 4 MiB boundary with at least 512 KiB of slack. Everything is mapped
//! writable except the page-table frames, which are read-only. Remaining pages of the domain
//! are listed in the P2M but not mapped.
//!
//! The builder also records every reference its tables make in the frame table, exactly as
//! validation would: a general reference per present entry, a level-(N−1) type reference per
//! entry of a level-N table, a `Writable` type reference per writable leaf, and the L4's
//! root reference. So the domain starts in a state that `mmu_update` validation accepts.

use crate::frame::{FrameError, FrameTable, Owner, PageType};
use crate::mem::{Mfn, PhysMem};
use crate::pte::{self, Pte, PteFlags};
use crate::pv_image::{is_guest_range, PvImage};
use core::fmt;
use guest_abi::start_info::{self, StartInfo};
use guest_abi::{hypercall, DomId, PAGE_SIZE};

const PAGE: u64 = PAGE_SIZE as u64;
/// Slack after the last bootstrap item.
pub const MIN_SLACK: u64 = 512 << 10;
/// Alignment of the region's end.
pub const REGION_ALIGN: u64 = 4 << 20;

/// Where everything goes, in guest virtual addresses.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    pub virt_base: u64,
    /// The boot module (0 bytes: none).
    pub mod_va: u64,
    pub mod_len: u64,
    pub p2m_va: u64,
    pub p2m_pages: u64,
    /// Entries the P2M list has room for: `nr_pages`, or more for a domU that may grow
    /// (its `maxmem`; the entries past `nr_pages` hold no frame, `!0`).
    pub p2m_entries: u64,
    pub start_info_va: u64,
    /// The XenStore ring page (`start_info.store_mfn`), 0 if none (dom0).
    pub store_va: u64,
    /// The console ring page (`start_info.console.domU.mfn`), 0 if none (dom0).
    pub console_va: u64,
    pub pt_va: u64,
    pub nr_pt_frames: u64,
    pub stack_va: u64,
    /// End of the mapped region.
    pub v_end: u64,
    /// Pages of the domain in all.
    pub nr_pages: u64,
}

impl Layout {
    /// Pages covered by the mapped region.
    pub fn region_pages(&self) -> u64 {
        (self.v_end - self.virt_base) / PAGE
    }
    /// PFN of a region address.
    pub fn pfn(&self, va: u64) -> u64 {
        (va - self.virt_base) / PAGE
    }
    /// Initial stack pointer (top of the boot stack page).
    pub fn stack_top(&self) -> u64 {
        self.stack_va + PAGE
    }
}

/// Why a domain could not be built.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum BuildError {
    /// The domain's memory does not cover the bootstrap region.
    NotEnoughMemory { need_pages: u64, have_pages: u64 },
    /// The region would reach the hypervisor's slots or non-canonical addresses.
    ReservedAddress,
    /// The caller gave a P2M list of the wrong length.
    BadP2m,
    /// A frame could not be taken.
    Frame(FrameError),
    /// Memory the builder needed was not reachable.
    NoMemory,
    /// The command line does not fit `start_info`.
    CmdlineTooLong,
}

impl From<FrameError> for BuildError {
    fn from(e: FrameError) -> Self {
        BuildError::Frame(e)
    }
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::NotEnoughMemory { need_pages, have_pages } => write!(
                f,
                "image needs {} KiB of bootstrap memory but the domain has {} KiB",
                need_pages * 4,
                have_pages * 4
            ),
            BuildError::ReservedAddress => {
                write!(f, "bootstrap region reaches the hypervisor area or wraps")
            }
            BuildError::BadP2m => write!(f, "P2M list length does not match the domain size"),
            BuildError::Frame(e) => write!(f, "frame table refused a frame: {:?}", e),
            BuildError::NoMemory => write!(f, "a domain frame is not reachable"),
            BuildError::CmdlineTooLong => write!(f, "command line longer than 1023 bytes"),
        }
    }
}

fn round_up(v: u64, a: u64) -> Option<u64> {
    v.checked_add(a - 1).map(|x| x & !(a - 1))
}

/// Page-table frames needed to map `[start, end)` with 4 KiB pages, L4 included.
pub fn tables_needed(start: u64, end: u64) -> u64 {
    if end <= start {
        return 1;
    }
    let span = |shift: u32| ((end - 1) >> shift) - (start >> shift) + 1;
    1 + span(39) + span(30) + span(21)
}

/// Computes the layout for an image and a domain of `nr_pages` pages.
pub fn compute_layout(img: &PvImage<'_>, nr_pages: u64) -> Result<Layout, BuildError> {
    layout(img, nr_pages, nr_pages, 0, false)
}

/// [`compute_layout`] with a boot module of `mod_len` bytes after the image (dom0's).
pub fn compute_layout_with_module(img: &PvImage<'_>, nr_pages: u64, mod_len: u64) -> Result<Layout, BuildError> {
    layout(img, nr_pages, nr_pages, mod_len, false)
}

/// [`compute_layout`] for a domU the toolstack builds: with its XenStore and console ring
/// pages after `start_info`, as libxenguest places them.
pub fn compute_layout_domu(img: &PvImage<'_>, nr_pages: u64) -> Result<Layout, BuildError> {
    layout(img, nr_pages, nr_pages, 0, true)
}

/// [`compute_layout_domu`] with a P2M list that has room for `max_pages` entries (the
/// domain's `maxmem`), so that its balloon can grow it past `nr_pages`. As in Xen's
/// layout, `start_info` follows the P2M list: a guest knows the room is there when
/// `mfn_list + 8 * max_pages` does not pass its `start_info`.
pub fn compute_layout_domu_max(img: &PvImage<'_>, nr_pages: u64, max_pages: u64) -> Result<Layout, BuildError> {
    layout(img, nr_pages, max_pages.max(nr_pages), 0, true)
}

fn layout(img: &PvImage<'_>, nr_pages: u64, p2m_entries: u64, mod_len: u64, rings: bool) -> Result<Layout, BuildError> {
    let bad = BuildError::ReservedAddress;
    let vb = img.virt_base;
    let mod_va = round_up(img.vend, PAGE).ok_or(bad)?;
    let p2m_va = round_up(mod_va.checked_add(mod_len).ok_or(bad)?, PAGE).ok_or(bad)?;
    let p2m_pages = p2m_entries.checked_mul(8).ok_or(bad)?.div_ceil(PAGE);
    let start_info_va = p2m_va.checked_add(p2m_pages * PAGE).ok_or(bad)?;
    let (store_va, console_va) = if rings { (start_info_va + PAGE, start_info_va + 2 * PAGE) } else { (0, 0) };
    let pt_va = start_info_va.checked_add(if rings { 3 * PAGE } else { PAGE }).ok_or(bad)?;
    let mut nr_pt = 1;
    let (stack_va, v_end) = loop {
        let stack_va = pt_va.checked_add(nr_pt * PAGE).ok_or(bad)?;
        let end = stack_va.checked_add(PAGE + MIN_SLACK).ok_or(bad)?;
        let v_end = round_up(end, REGION_ALIGN).ok_or(bad)?;
        let need = tables_needed(vb, v_end);
        if need <= nr_pt {
            break (stack_va, v_end);
        }
        nr_pt = need;
    };
    if !is_guest_range(vb, v_end) {
        return Err(bad);
    }
    let layout = Layout {
        virt_base: vb,
        mod_va,
        mod_len,
        p2m_va,
        p2m_pages,
        p2m_entries,
        start_info_va,
        store_va,
        console_va,
        pt_va,
        nr_pt_frames: nr_pt,
        stack_va,
        v_end,
        nr_pages,
    };
    if layout.region_pages() > nr_pages {
        return Err(BuildError::NotEnoughMemory {
            need_pages: layout.region_pages(),
            have_pages: nr_pages,
        });
    }
    Ok(layout)
}

/// What the builder needs besides the image.
pub struct BuildParams<'a> {
    pub domid: DomId,
    /// `SIF_*` flags for start_info.
    pub flags: u32,
    pub cmdline: &'a [u8],
    /// Machine address of the domain's shared-info page.
    pub shared_info_maddr: u64,
    /// The boot module's bytes (its length is the layout's `mod_len`).
    pub module: &'a [u8],
}

/// The result: what the vCPU starts with.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Built {
    pub entry: u64,
    pub stack_top: u64,
    pub start_info_va: u64,
    /// Root page table (the vCPU's CR3).
    pub l4: Mfn,
}

/// Writes bytes at a region address (may span pages).
fn write_va<M: PhysMem>(
    mem: &mut M,
    l: &Layout,
    p2m: &[Mfn],
    va: u64,
    data: &[u8],
) -> Result<(), BuildError> {
    let mut done = 0usize;
    while done < data.len() {
        let cur = va + done as u64;
        let off = (cur % PAGE) as usize;
        let n = (PAGE as usize - off).min(data.len() - done);
        let mfn = *p2m.get(l.pfn(cur) as usize).ok_or(BuildError::BadP2m)?;
        mem.write(mfn, off, &data[done..done + n]).ok_or(BuildError::NoMemory)?;
        done += n;
    }
    Ok(())
}

/// Takes the references a present entry of a level-`level` table holds on its target.
fn account_entry<S>(ft: &FrameTable<S>, dom: DomId, level: u32, e: Pte) -> Result<(), BuildError>
where
    S: AsRef<[crate::frame::FrameSlot]>,
{
    ft.get_page(e.mfn(), dom)?;
    let ty = match level {
        1 if e.writable() => Some(PageType::Writable),
        1 => None,
        n => PageType::table(n - 1),
    };
    if let Some(ty) = ty {
        ft.get_type(e.mfn(), ty)?;
    }
    Ok(())
}

/// Builds the domain into the frames `p2m` (index = PFN). The frames must be free in the
/// frame table; they become the domain's.
pub fn build<M: PhysMem, S>(
    mem: &mut M,
    ft: &FrameTable<S>,
    img: &PvImage<'_>,
    l: &Layout,
    p2m: &[Mfn],
    params: &BuildParams<'_>,
) -> Result<Built, BuildError>
where
    S: AsRef<[crate::frame::FrameSlot]>,
{
    if p2m.len() as u64 != l.nr_pages {
        return Err(BuildError::BadP2m);
    }
    if params.cmdline.len() >= start_info::MAX_GUEST_CMDLINE {
        return Err(BuildError::CmdlineTooLong);
    }
    if params.module.len() as u64 != l.mod_len {
        return Err(BuildError::BadP2m);
    }
    let dom = params.domid;
    for &mfn in p2m {
        ft.set_owner(mfn, Owner::Dom(dom))?;
        mem.zero(mfn).ok_or(BuildError::NoMemory)?;
    }

    // The image.
    for s in img.segments() {
        let bytes = &img.data[s.file_offset..s.file_offset + s.filesz];
        write_va(mem, l, p2m, s.vaddr, bytes)?;
    }

    // The boot module.
    write_va(mem, l, p2m, l.mod_va, params.module)?;

    // The P2M list.
    for (pfn, mfn) in p2m.iter().enumerate() {
        write_va(mem, l, p2m, l.p2m_va + 8 * pfn as u64, &mfn.0.to_le_bytes())?;
    }

    // Bootstrap page tables: frame 0 of the table area is the L4; the others are handed out
    // in order as the walk below needs them.
    let pt_pfn0 = l.pfn(l.pt_va);
    let pt_range = pt_pfn0..pt_pfn0 + l.nr_pt_frames;
    let l4 = p2m[pt_pfn0 as usize];
    let mut next_pt = pt_pfn0 + 1;
    // The Xen pv64 mode runs the kernel in ring 3: every entry carries the User bit, as
    // Xen's builder and its entry adjustments give them.
    let user = if img.ring1 { PteFlags::empty() } else { PteFlags::USER_ACCESSIBLE };
    let inner = PteFlags::PRESENT | PteFlags::WRITABLE | PteFlags::ACCESSED | user;
    for pfn in 0..l.region_pages() {
        let va = l.virt_base + pfn * PAGE;
        let mut table = l4;
        for level in (2..=4).rev() {
            let idx = pte::index(va, level);
            let e = Pte(mem.read_u64(table, idx).ok_or(BuildError::NoMemory)?);
            table = if e.present() {
                e.mfn()
            } else {
                if !pt_range.contains(&next_pt) {
                    return Err(BuildError::NoMemory);
                }
                let child = p2m[next_pt as usize];
                next_pt += 1;
                let e = Pte::new(child, inner);
                mem.write_u64(table, idx, e.0).ok_or(BuildError::NoMemory)?;
                account_entry(ft, dom, level, e)?;
                child
            };
        }
        let mut flags = PteFlags::PRESENT | PteFlags::ACCESSED | PteFlags::DIRTY | user;
        if !pt_range.contains(&pfn) {
            flags |= PteFlags::WRITABLE;
        }
        let e = Pte::new(p2m[pfn as usize], flags);
        mem.write_u64(table, pte::index(va, 1), e.0).ok_or(BuildError::NoMemory)?;
        account_entry(ft, dom, 1, e)?;
    }
    // The root reference the vCPU's CR3 holds.
    ft.get_page(l4, dom)?;
    ft.get_type(l4, PageType::L4)?;
    for pfn in pt_pfn0..next_pt {
        ft.mark_validated(p2m[pfn as usize])?;
    }

    // Hypercall page.
    if let Some(hp) = img.hypercall_page {
        for nr in 0..hypercall::NR_STUBS {
            let stub = if img.ring1 { hypercall::stub(nr as u32) } else { hypercall::stub_pv64(nr as u32) };
            write_va(mem, l, p2m, hp + (nr * hypercall::STUB_SIZE) as u64, &stub)?;
        }
    }

    // start_info.
    let si = start_info_for(l, params.shared_info_maddr, params.flags, params.cmdline);
    write_va(mem, l, p2m, l.start_info_va, &start_info_bytes(&si))?;

    Ok(Built { entry: img.entry, stack_top: l.stack_top(), start_info_va: l.start_info_va, l4 })
}

/// The start_info of a domain laid out as `l` (with its boot module, if any): its
/// shared_info's machine address, `SIF_*` flags and command line (cut to what fits). Both
/// builders use it: the hypervisor's and dom0's (`xl create`).
pub fn start_info_for(l: &Layout, shared_info: u64, flags: u32, cmdline: &[u8]) -> StartInfo {
    let mut si = StartInfo {
        magic: [0; 32],
        nr_pages: l.nr_pages,
        shared_info,
        flags,
        _pad0: 0,
        store_mfn: 0,
        store_evtchn: 0,
        _pad1: 0,
        console: Default::default(),
        pt_base: l.pt_va,
        nr_pt_frames: l.nr_pt_frames,
        mfn_list: l.p2m_va,
        mod_start: if l.mod_len > 0 { l.mod_va } else { 0 },
        mod_len: l.mod_len,
        cmd_line: [0; start_info::MAX_GUEST_CMDLINE],
        first_p2m_pfn: 0,
        nr_p2m_frames: 0,
    };
    si.magic[..start_info::MAGIC.len()].copy_from_slice(start_info::MAGIC);
    let n = cmdline.len().min(start_info::MAX_GUEST_CMDLINE - 1);
    si.cmd_line[..n].copy_from_slice(&cmdline[..n]);
    si
}

/// Serialises `start_info` field by field (little-endian, Xen's offsets).
pub fn start_info_bytes(si: &StartInfo) -> [u8; core::mem::size_of::<StartInfo>()] {
    let mut b = [0u8; core::mem::size_of::<StartInfo>()];
    let mut put = |off: usize, v: &[u8]| b[off..off + v.len()].copy_from_slice(v);
    put(0, &si.magic);
    put(32, &si.nr_pages.to_le_bytes());
    put(40, &si.shared_info.to_le_bytes());
    put(48, &si.flags.to_le_bytes());
    put(56, &si.store_mfn.to_le_bytes());
    put(64, &si.store_evtchn.to_le_bytes());
    put(72, &si.console.mfn_or_info.to_le_bytes());
    put(80, &si.console.evtchn.to_le_bytes());
    put(88, &si.pt_base.to_le_bytes());
    put(96, &si.nr_pt_frames.to_le_bytes());
    put(104, &si.mfn_list.to_le_bytes());
    put(112, &si.mod_start.to_le_bytes());
    put(120, &si.mod_len.to_le_bytes());
    put(128, &si.cmd_line);
    put(1152, &si.first_p2m_pfn.to_le_bytes());
    put(1160, &si.nr_p2m_frames.to_le_bytes());
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guest_access::{copy_from_guest, translate, GuestView};
    use crate::mem::VecMem;
    use crate::pv_image::{parse, testelf};
    use std::vec;
    use std::vec::Vec;

    const BASE: u64 = 0xFFFF_FFFF_8000_0000;

    /// An image of rxen's ring-1 model.
    fn image(base: u64, load: u64) -> Vec<u8> {
        image_in(base, load, true)
    }

    /// An image of either mode (`ring1`: with rxen's ABI note, else a Xen pv64 image).
    fn image_in(base: u64, load: u64, ring1: bool) -> Vec<u8> {
        let mut code = vec![0x90u8; 0x3000];
        code[0x2000] = 0xAB;
        let mut notes = testelf::std_notes(base, load + 0x1000);
        if ring1 {
            notes.push(testelf::ring1_note());
        }
        testelf::build(load, &[(load, code, 0x5000, true)], &notes)
    }

    struct World {
        mem: VecMem,
        ft: FrameTable<Vec<crate::frame::FrameSlot>>,
        p2m: Vec<Mfn>,
    }

    /// A machine of `frames` frames; the domain gets every other frame from 100 on.
    fn world(frames: usize, nr_pages: u64) -> World {
        let ft = FrameTable::new(crate::frame::slots(frames));
        for m in 0..frames as u64 {
            ft.set_owner(Mfn(m), Owner::Free).unwrap();
        }
        let p2m = (0..nr_pages).map(|i| Mfn(100 + 2 * i)).collect();
        World { mem: VecMem::new(0, frames), ft, p2m }
    }

    #[test]
    fn layout_follows_xen_rules() {
        let data = image(BASE, BASE);
        let img = parse(&data).unwrap();
        let l = compute_layout(&img, 4096).unwrap();
        assert_eq!(l.p2m_va, BASE + 0x5000);
        assert_eq!(l.p2m_pages, 8);
        assert_eq!(l.start_info_va, l.p2m_va + 8 * 4096);
        assert_eq!(l.pt_va, l.start_info_va + 4096);
        assert_eq!((l.store_va, l.console_va), (0, 0), "dom0 has no ring pages");
        assert_eq!(l.nr_pt_frames, 5, "L4 + L3 + L2 + two L1s for 4 MiB");
        let d = compute_layout_domu(&img, 4096).unwrap();
        // Room for a balloon to grow the domain to 8192 pages: the P2M twice as long,
        // start_info still right after it.
        let m = compute_layout_domu_max(&img, 4096, 8192).unwrap();
        assert_eq!((m.p2m_entries, m.p2m_pages, m.start_info_va), (8192, 16, m.p2m_va + 16 * PAGE));
        assert_eq!(compute_layout_domu_max(&img, 4096, 100).unwrap(), d);
        assert_eq!((d.store_va, d.console_va), (d.start_info_va + 4096, d.start_info_va + 2 * 4096));
        assert_eq!(d.pt_va, d.console_va + 4096);
        assert!(d.v_end - d.stack_top() >= MIN_SLACK);
        assert_eq!(l.v_end % REGION_ALIGN, 0);
        assert!(l.v_end - l.stack_top() >= MIN_SLACK);
        assert_eq!(
            compute_layout(&img, 100),
            Err(BuildError::NotEnoughMemory { need_pages: 1024, have_pages: 100 })
        );
        assert_eq!(tables_needed(0, 1 << 30), 1 + 1 + 1 + 512);
    }

    #[test]
    fn region_near_the_top_is_refused_not_wrapped() {
        let top = 0xFFFF_FFFF_FFFF_0000;
        let data = testelf::build(top, &[(top, vec![0; 16], 0x1000, true)], &testelf::std_notes(top, top));
        let img = parse(&data).unwrap();
        assert_eq!(compute_layout(&img, 4096), Err(BuildError::ReservedAddress));
    }

    /// A boot module lands after the image, mapped, and start_info names it.
    #[test]
    fn builds_with_a_module() {
        let data = image(BASE, BASE);
        let img = parse(&data).unwrap();
        let nr = 2048;
        let module: std::vec::Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let mut w = world(100 + 2 * nr as usize, nr);
        let l = compute_layout_with_module(&img, nr, module.len() as u64).unwrap();
        assert!(l.mod_va >= img.vend && l.p2m_va >= l.mod_va + module.len() as u64);
        let params = BuildParams { domid: 0, flags: 3, cmdline: b"", shared_info_maddr: 0x5000, module: &module };
        let b = build(&mut w.mem, &w.ft, &img, &l, &w.p2m, &params).unwrap();
        let ft = &w.ft;
        let owns = |m: Mfn| ft.owner(m) == Owner::Dom(0);
        let view = GuestView { l4: b.l4, owns: &owns, cache: None, pins: None };
        let mut back = std::vec![0u8; module.len()];
        copy_from_guest(&w.mem, &view, l.mod_va, &mut back).unwrap();
        assert_eq!(back, module);
        let mut si = [0u8; 1168];
        copy_from_guest(&w.mem, &view, b.start_info_va, &mut si).unwrap();
        assert_eq!(u64::from_le_bytes(si[112..120].try_into().unwrap()), l.mod_va);
        assert_eq!(u64::from_le_bytes(si[120..128].try_into().unwrap()), module.len() as u64);
        let short = BuildParams { module: &module[..5], ..params };
        let mut w = world(100 + 2 * nr as usize, nr);
        assert_eq!(build(&mut w.mem, &w.ft, &img, &l, &w.p2m, &short), Err(BuildError::BadP2m), "a module of another length");
    }

    fn check_built(base: u64, load: u64, ring1: bool) {
        let data = image_in(base, load, ring1);
        let img = parse(&data).unwrap();
        let nr = 2048;
        let mut w = world(100 + 2 * nr as usize, nr);
        let l = compute_layout(&img, nr).unwrap();
        let params = BuildParams { domid: 0, flags: 3, cmdline: b"hello dom0", shared_info_maddr: 0x5000, module: b"" };
        let b = build(&mut w.mem, &w.ft, &img, &l, &w.p2m, &params).unwrap();
        assert_eq!(b.l4, w.p2m[l.pfn(l.pt_va) as usize]);
        let ft = &w.ft;
        let owns = |m: Mfn| ft.owner(m) == Owner::Dom(0);
        let view = GuestView { l4: b.l4, owns: &owns, cache: None, pins: None };

        // The image, start_info and hypercall page read back through the guest's tables.
        let mut byte = [0u8; 1];
        copy_from_guest(&w.mem, &view, load + 0x2000, &mut byte).unwrap();
        assert_eq!(byte[0], 0xAB);
        let mut si = [0u8; 1168];
        copy_from_guest(&w.mem, &view, b.start_info_va, &mut si).unwrap();
        assert_eq!(&si[..14], b"xen-3.0-x86_64");
        assert_eq!(u64::from_le_bytes(si[32..40].try_into().unwrap()), nr);
        assert_eq!(u64::from_le_bytes(si[88..96].try_into().unwrap()), l.pt_va);
        assert_eq!(&si[128..139], b"hello dom0\0");
        let mut stub = [0u8; 32];
        copy_from_guest(&w.mem, &view, load + 0x1000 + 17 * 32, &mut stub).unwrap();
        if ring1 {
            assert_eq!(stub[..8], [0xB8, 17, 0, 0, 0, 0xCD, 0x82, 0xC3]);
        } else {
            assert_eq!(stub, guest_abi::hypercall::stub_pv64(17), "Xen's syscall stubs");
        }
        let mut p2m0 = [0u8; 8];
        copy_from_guest(&w.mem, &view, l.p2m_va + 8 * 5, &mut p2m0).unwrap();
        assert_eq!(u64::from_le_bytes(p2m0), w.p2m[5].0);

        // Page tables are mapped read-only, everything else in the region writable.
        for pfn in 0..l.region_pages() {
            let va = l.virt_base + pfn * 4096;
            let is_pt = (l.pfn(l.pt_va)..l.pfn(l.pt_va) + l.nr_pt_frames).contains(&pfn);
            assert_eq!(translate(&w.mem, &view, va, true).is_ok(), !is_pt, "pfn {pfn}");
            assert_eq!(translate(&w.mem, &view, va, false), Ok(w.p2m[pfn as usize]));
        }
        // Beyond the region nothing is mapped.
        assert!(translate(&w.mem, &view, l.v_end, false).is_err());

        // Frame-table accounting matches the tables: no table is writable-typed, counts
        // equal the number of references.
        let mut refs = std::collections::HashMap::<u64, (u32, u32)>::new();
        let mut types = std::collections::HashMap::<u64, PageType>::new();
        types.insert(b.l4.0, PageType::L4);
        *refs.entry(b.l4.0).or_default() = (1, 1);
        let mut stack = vec![(b.l4, 4u32)];
        while let Some((t, level)) = stack.pop() {
            for i in 0..512 {
                let e = Pte(w.mem.read_u64(t, i).unwrap());
                if !e.present() {
                    continue;
                }
                // A Xen pv64 kernel runs in ring 3: every entry has the User bit (none in
                // the ring-1 model).
                assert_eq!(e.flags().contains(PteFlags::USER_ACCESSIBLE), !ring1, "level {level} entry {i}");
                let r = refs.entry(e.mfn().0).or_default();
                r.0 += 1;
                if level > 1 {
                    r.1 += 1;
                    types.insert(e.mfn().0, PageType::table(level - 1).unwrap());
                    stack.push((e.mfn(), level - 1));
                } else if e.writable() {
                    r.1 += 1;
                    types.entry(e.mfn().0).or_insert(PageType::Writable);
                }
            }
        }
        for (mfn, info) in w.ft.iter() {
            let (c, tc) = refs.get(&mfn.0).copied().unwrap_or((0, 0));
            assert_eq!((info.count, info.type_count), (c, tc), "{mfn:?}");
            if tc > 0 {
                assert_eq!(info.ty, types[&mfn.0], "{mfn:?}");
                assert_eq!(info.validated, info.ty.is_protected(), "{mfn:?}");
            }
        }
        let tables = w.ft.iter().filter(|(_, f)| f.ty.is_protected() && f.type_count > 0).count();
        assert_eq!(tables as u64, l.nr_pt_frames);
    }

    #[test]
    fn builds_upper_half_image() {
        check_built(BASE, BASE, true);
    }

    #[test]
    fn builds_low_image_with_zero_virt_base() {
        check_built(0, 0x10_0000, true);
    }

    #[test]
    fn builds_xen_pv64_images() {
        check_built(BASE, BASE, false);
        check_built(0, 0x10_0000, false);
    }

    #[test]
    fn refuses_long_cmdline_and_bad_p2m() {
        let data = image(BASE, BASE);
        let img = parse(&data).unwrap();
        let mut w = world(100 + 2 * 2048, 2048);
        let l = compute_layout(&img, 2048).unwrap();
        let long = [b'x'; 1024];
        let p = BuildParams { domid: 0, flags: 0, cmdline: &long, shared_info_maddr: 0, module: b"" };
        assert_eq!(build(&mut w.mem, &w.ft, &img, &l, &w.p2m, &p), Err(BuildError::CmdlineTooLong));
        let p = BuildParams { domid: 0, flags: 0, cmdline: b"", shared_info_maddr: 0, module: b"" };
        let short = &w.p2m[..10].to_vec();
        assert_eq!(build(&mut w.mem, &w.ft, &img, &l, short, &p), Err(BuildError::BadP2m));
    }
}
