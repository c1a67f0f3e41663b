//! The hypervisor's page tables: the shared hypervisor mappings, and per CPU a hypervisor
//! root and a guest root (split roots, DESIGN §2).
//!
//! - The **hypervisor root** maps the guest's slots (copied from the current guest L4), the
//!   read-only M2P (slot 256), this CPU's private area (259), its entry area (260), the image
//!   (261) and the direct map (262–271).
//! - The **guest root** maps the guest's slots, the read-only M2P and this CPU's entry area,
//!   and nothing else of the hypervisor.
//!
//! No hypervisor mapping is global, so a CR3 switch without PCID drops them all from the TLB.

use crate::descriptors::{self, Tss};
use crate::entry::EntryRo;
use crate::layout::*;
use crate::percpu::PerCpu;
use hv_core::mem::Mfn;
use hv_core::memmap::RangeSet;
use crate::physmem::PrivateFrame;
use hv_core::pte::{self, Pte, PteFlags};

/// Where page-table and data frames come from: frames the hypervisor claimed for itself
/// ([`crate::physmem::claim_private`], zeroed). Before [`activate`] they must lie below 4 GiB
/// (the early map's direct-map window).
pub trait FrameSource {
    fn frame(&mut self) -> Option<PrivateFrame>;
    fn contiguous(&mut self, n: u64) -> Option<PrivateFrame>;
}

fn frame_of(src: &mut dyn FrameSource) -> Result<Mfn, OutOfFrames> {
    src.frame().map(|f| f.mfn()).ok_or(OutOfFrames)
}

/// Out of frames while building tables.
#[derive(Copy, Clone, Debug)]
pub struct OutOfFrames;

fn entry_ptr(table: Mfn, idx: usize) -> *mut u64 {
    (phys_to_virt(table.maddr()) + 8 * idx as u64) as *mut u64
}

fn read_entry(table: Mfn, idx: usize) -> Pte {
    // SAFETY: `table` is a hypervisor page-table frame, direct-mapped; idx < 512.
    Pte(unsafe { entry_ptr(table, idx).read_volatile() })
}

fn write_entry(table: Mfn, idx: usize, e: Pte) {
    // SAFETY: as for `read_entry`; the hypervisor owns these tables.
    unsafe { entry_ptr(table, idx).write_volatile(e.0) }
}

const TABLE: PteFlags = PteFlags::PRESENT.union(PteFlags::WRITABLE);

/// Walks to the table at `level` for `va`, creating tables on the way.
fn table_for(
    root: Mfn,
    va: u64,
    level: u32,
    src: &mut dyn FrameSource,
) -> Result<Mfn, OutOfFrames> {
    let mut t = root;
    for l in ((level + 1)..=4).rev() {
        let i = pte::index(va, l);
        let e = read_entry(t, i);
        t = if e.present() {
            e.mfn()
        } else {
            let n = frame_of(src)?;
            write_entry(t, i, Pte::new(n, TABLE));
            n
        };
    }
    Ok(t)
}

/// Maps one 4 KiB page (in tables this module built).
fn map_4k(
    root: Mfn,
    va: u64,
    pa: u64,
    flags: PteFlags,
    src: &mut dyn FrameSource,
) -> Result<(), OutOfFrames> {
    let t = table_for(root, va, 1, src)?;
    write_entry(t, pte::index(va, 1), Pte::new(Mfn::of(pa), flags | PteFlags::PRESENT));
    Ok(())
}

/// Maps `[pa, pa+len)` at `va`, with 2 MiB pages where alignment allows.
fn map_range(
    root: Mfn,
    va: u64,
    pa: u64,
    len: u64,
    flags: PteFlags,
    src: &mut dyn FrameSource,
) -> Result<(), OutOfFrames> {
    let mut off = 0;
    while off < len {
        let (v, p) = (va + off, pa + off);
        if v % (2 << 20) == 0 && p % (2 << 20) == 0 && len - off >= (2 << 20) {
            let t = table_for(root, v, 2, src)?;
            write_entry(t, pte::index(v, 2), Pte::new(Mfn::of(p), flags | PteFlags::PRESENT | PteFlags::HUGE_PAGE));
            off += 2 << 20;
        } else {
            map_4k(root, v, p, flags, src)?;
            off += 4096;
        }
    }
    Ok(())
}

extern "C" {
    static __text_start: u8;
    static __text_end: u8;
    static __rodata_start: u8;
    static __rodata_end: u8;
    static __data_start: u8;
    static __image_end: u8;
}

fn addr(s: &u8) -> u64 {
    s as *const u8 as u64
}

const RW_NX: PteFlags = PteFlags::WRITABLE.union(PteFlags::NO_EXECUTE);

/// Mappings every CPU's hypervisor root shares.
pub struct Shared {
    /// L4 entries for slots 256..272 of a hypervisor root.
    pub slots: [Pte; 16],
    /// The zero frame that backs the guest part of every GDT.
    pub zero: Mfn,
}

/// Builds the shared hypervisor mappings into `template` (the BSP's hypervisor root):
/// the direct map of `ram`, the image with per-section permissions, and the read-only M2P
/// backed by `m2p_frames` contiguous frames at `m2p`.
pub fn build_shared(
    template: PrivateFrame,
    ram: &RangeSet,
    m2p: &crate::physmem::M2p,
    src: &mut dyn FrameSource,
) -> Result<Shared, OutOfFrames> {
    let template = template.mfn();
    let (m2p, m2p_frames) = m2p.frames();
    for r in ram.as_slice() {
        let (s, e) = (r.start & !0xFFF, (r.end + 0xFFF) & !0xFFF);
        if e <= DIRECTMAP_SIZE {
            map_range(template, phys_to_virt(s), s, e - s, RW_NX, src)?;
        }
    }
    // SAFETY: linker symbols; only addresses are taken.
    let (ts, te, rs, re, ds, ie) = unsafe {
        (
            addr(&__text_start),
            addr(&__text_end),
            addr(&__rodata_start),
            addr(&__rodata_end),
            addr(&__data_start),
            addr(&__image_end),
        )
    };
    for (s, e, f) in [(ts, te, PteFlags::empty()), (rs, re, PteFlags::NO_EXECUTE), (ds, ie, RW_NX)] {
        let mut va = s & !0xFFF;
        while va < e {
            map_4k(template, va, image_to_phys(va), f, src)?;
            va += 4096;
        }
    }
    // The read-only M2P: its L3, L2 and L1 entries carry the User bit, and the guest root's
    // L4 entry (slot 256, which holds nothing else) does too while a Xen pv64 domain runs
    // ([`set_m2p_user`]: its kernel runs in ring 3); in the ring-1 model it stays a
    // supervisor mapping (SMAP would fault ring-1 reads of a User page). The hypervisor
    // itself reads and writes the M2P through the direct map, never here.
    for i in 0..m2p_frames {
        let va = M2P_BASE + i * 4096;
        map_4k(template, va, m2p.maddr() + i * 4096, PteFlags::NO_EXECUTE | PteFlags::USER_ACCESSIBLE, src)?;
        let mut t = read_entry(template, pte::index(va, 4)).mfn();
        for l in (2..=3).rev() {
            let e = read_entry(t, pte::index(va, l));
            write_entry(t, pte::index(va, l), Pte(e.0 | PteFlags::USER_ACCESSIBLE.bits()));
            t = e.mfn();
        }
    }
    let zero = frame_of(src)?;
    let mut slots = [Pte::default(); 16];
    for (i, s) in slots.iter_mut().enumerate() {
        *s = read_entry(template, 256 + i);
    }
    Ok(Shared { slots, zero })
}

/// PCID of every hypervisor root (when PCID is in use).
pub const PCID_HV: u64 = 1;
/// PCID of every guest root.
pub const PCID_GUEST: u64 = 2;
/// CR3 bit 63: keep this PCID's TLB entries.
pub const CR3_NOFLUSH: u64 = 1 << 63;

static USE_PCID: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// Are tagged CR3 switches in use (PCID and INVPCID present)?
pub fn pcid_enabled() -> bool {
    USE_PCID.load(core::sync::atomic::Ordering::Relaxed)
}

/// The CR3 values the entry stubs load: with PCID, tagged and non-flushing; without, the
/// plain roots (each switch then flushes the TLB, which is correct, only slower).
fn cr3_values(hv_root: Mfn, guest_root: Mfn) -> (u64, u64) {
    if pcid_enabled() {
        (hv_root.maddr() | PCID_HV | CR3_NOFLUSH, guest_root.maddr() | PCID_GUEST | CR3_NOFLUSH)
    } else {
        (hv_root.maddr(), guest_root.maddr())
    }
}

/// Chooses tagged CR3 switches when the CPU has PCID and INVPCID; sets CR4.PCIDE. Call once,
/// before the first [`build_cpu`], while CR3's PCID field is 0.
pub fn enable_pcid(f: &crate::cpu::Features) -> bool {
    if !(f.pcid && f.invpcid) {
        return false;
    }
    // SAFETY: PCID is supported (CPUID), long mode is active and CR3[11:0] is 0 now.
    unsafe { crate::cpu::write_cr4(crate::cpu::read_cr4() | crate::cpu::cr4::PCIDE) };
    USE_PCID.store(true, core::sync::atomic::Ordering::Relaxed);
    true
}

/// On an application processor: sets CR4.PCIDE if the boot CPU chose tagged CR3 switches
/// (every CPU's entry stubs load tagged CR3 values). Call before [`activate`], while CR3's
/// PCID field is 0 (the AP boot root).
pub fn enable_pcid_ap() {
    if pcid_enabled() {
        // SAFETY: the boot CPU found PCID and INVPCID (all CPUs are alike); CR3[11:0] is 0.
        unsafe { crate::cpu::write_cr4(crate::cpu::read_cr4() | crate::cpu::cr4::PCIDE) };
    }
}

/// Drops every TLB entry of guest address spaces on this CPU (after the guest's slots of
/// the roots changed). Without PCID the CR3 load on exit already does it.
pub fn flush_guest_tlb() {
    if pcid_enabled() {
        for pcid in [PCID_GUEST, PCID_HV] {
            crate::cpu::invpcid_single(pcid);
        }
    }
}

/// One CPU's roots and tables.
#[derive(Copy, Clone, Debug)]
pub struct CpuTables {
    hv_root: Mfn,
    guest_root: Mfn,
    tss: Mfn,
    idt: Mfn,
    gdt: Mfn,
    zero: Mfn,
}

impl CpuTables {
    /// This CPU's hypervisor root.
    pub fn hv_root(&self) -> Mfn {
        self.hv_root
    }
    /// This CPU's guest root.
    pub fn guest_root(&self) -> Mfn {
        self.guest_root
    }
}

/// Builds a CPU's private area and entry area, and its two roots. `hv_root` may be the
/// template of [`build_shared`] (the BSP) or a fresh frame.
pub fn build_cpu(
    cpu_id: u32,
    hv_root: PrivateFrame,
    shared: &Shared,
    src: &mut dyn FrameSource,
) -> Result<CpuTables, OutOfFrames> {
    let hv_root = hv_root.mfn();
    for (i, s) in shared.slots.iter().enumerate() {
        if s.present() {
            write_entry(hv_root, 256 + i, *s);
        }
    }
    let guest_root = frame_of(src)?;
    let mut f = || frame_of(src);

    // Private area.
    let percpu = f()?;
    let mut stack = [Mfn(0); HV_STACK_PAGES as usize];
    for s in stack.iter_mut() {
        *s = f()?;
    }
    // Entry area.
    let gdt = f()?;
    let idt = f()?;
    let entry_ro = f()?;
    let entry_stack = f()?;
    let tss = src.contiguous(TSS_PAGES).ok_or(OutOfFrames)?.mfn();
    let mut ist = [[Mfn(0); IST_PAGES as usize]; NR_IST];
    for s in ist.iter_mut().flatten() {
        *s = frame_of(src)?;
    }

    map_4k(hv_root, PERCPU_DATA, percpu.maddr(), RW_NX, src)?;
    for (i, s) in stack.iter().enumerate() {
        map_4k(hv_root, HV_STACK_BOTTOM + 4096 * i as u64, s.maddr(), RW_NX, src)?;
    }
    for p in 0..14 {
        map_4k(hv_root, ENTRY_GDT + 4096 * p, shared.zero.maddr(), PteFlags::NO_EXECUTE, src)?;
    }
    map_4k(hv_root, ENTRY_GDT + 14 * 4096, gdt.maddr(), PteFlags::NO_EXECUTE, src)?;
    for p in 0..LDT_PAGES {
        map_4k(hv_root, ENTRY_LDT + 4096 * p, shared.zero.maddr(), PteFlags::NO_EXECUTE, src)?;
    }
    map_4k(hv_root, ENTRY_IDT, idt.maddr(), PteFlags::NO_EXECUTE, src)?;
    for p in 0..TSS_PAGES {
        map_4k(hv_root, ENTRY_TSS + 4096 * p, tss.maddr() + 4096 * p, PteFlags::NO_EXECUTE, src)?;
    }
    map_4k(hv_root, ENTRY_RO, entry_ro.maddr(), PteFlags::NO_EXECUTE, src)?;
    let (ets, ete) = crate::entry::entry_text_range();
    assert!(ete - ets <= ENTRY_TEXT_MAX_PAGES * 4096, "entry text too large");
    let mut va = ets;
    while va < ete {
        map_4k(hv_root, ENTRY_TEXT + (va - ets), image_to_phys(va), PteFlags::empty(), src)?;
        va += 4096;
    }
    map_4k(hv_root, ENTRY_STACK, entry_stack.maddr(), RW_NX, src)?;
    for (n, pages) in ist.iter().enumerate() {
        for (i, p) in pages.iter().enumerate() {
            map_4k(hv_root, ist_bottom(n + 1) + 4096 * i as u64, p.maddr(), RW_NX, src)?;
        }
    }

    // The guest root shares the M2P and entry-area tables, nothing else.
    write_entry(guest_root, SLOT_M2P, read_entry(hv_root, SLOT_M2P));
    write_entry(guest_root, SLOT_ENTRY, read_entry(hv_root, SLOT_ENTRY));

    // Contents.
    // SAFETY: all of these frames were just allocated for this CPU and are direct-mapped.
    unsafe {
        let ro = phys_to_virt(entry_ro.maddr()) as *mut EntryRo;
        let (hv_cr3, guest_cr3) = cr3_values(hv_root, guest_root);
        ro.write(EntryRo { hv_cr3, guest_cr3 });
        let pc = phys_to_virt(percpu.maddr()) as *mut PerCpu;
        pc.write(PerCpu {
            cpu_id,
            _pad: 0,
            hv_stack_top: HV_STACK_TOP,
            hv_root: hv_root.maddr(),
            guest_root: guest_root.maddr(),
            tss_maddr: tss.maddr(),
            idt_maddr: idt.maddr(),
        });
        let t = phys_to_virt(tss.maddr()) as *mut u8;
        let mut hdr = Tss { iomap_base: IOMAP_NONE, ..Tss::default() };
        hdr.rsp[0] = ENTRY_STACK_TOP;
        for n in 0..NR_IST {
            hdr.ist[n] = ist_top(n + 1);
        }
        (t as *mut Tss).write_unaligned(hdr);
        // The I/O bitmap of a domain with I/O rights (in force only while one runs, see
        // `set_io_ports`), plus the terminating byte.
        let mut bitmap = [0u8; hv_core::ioperm::BITMAP_BYTES];
        hv_core::ioperm::fill_port_bitmap(&mut bitmap);
        core::ptr::copy_nonoverlapping(bitmap.as_ptr(), t.add(descriptors::TSS_HEADER), bitmap.len());
        t.add(descriptors::TSS_HEADER + bitmap.len()).write(0xFF);
        let g = phys_to_virt(gdt.maddr()) as *mut u64;
        for (i, d) in descriptors::reserved_gdt(ENTRY_TSS, descriptors::TSS_LIMIT).iter().enumerate() {
            g.add(i).write(*d);
        }
        let idtp = phys_to_virt(idt.maddr()) as *mut [u64; 2];
        for v in 0..256usize {
            let (dpl, ist) = gate_policy(v as u8);
            idtp.add(v).write(descriptors::idt_gate(crate::entry::stub_address(v as u8), dpl, ist));
        }
    }
    Ok(CpuTables { hv_root, guest_root, tss, idt, gdt, zero: shared.zero })
}

/// DPL and IST of each gate.
fn gate_policy(v: u8) -> (u8, u8) {
    use guest_abi::traps::vector::*;
    match v {
        NMI => (0, 1),
        DF => (0, 2),
        MC => (0, 3),
        DB => (0, 4),
        BP | OF => (3, 0),
        guest_abi::hypercall::HYPERCALL_VECTOR => (1, 0),
        _ => (0, 0),
    }
}

/// Points IDT vector `v` of this CPU at `handler` with DPL `dpl` (benchmark gates).
pub fn set_gate(t: &CpuTables, v: u8, handler: u64, dpl: u8) {
    // SAFETY: the IDT frame belongs to this CPU and is direct-mapped; the CPU reads the gate
    // only when the vector is raised.
    unsafe {
        (phys_to_virt(t.idt.maddr()) as *mut [u64; 2])
            .add(v as usize)
            .write(descriptors::idt_gate(handler, dpl, 0));
    }
}

/// Switches this CPU to its hypervisor root and loads its descriptor tables. `CpuTables`
/// only comes from [`build_cpu`], whose root holds the shared mappings (image, direct map),
/// so the running code, stack and data stay mapped.
pub fn activate(t: &CpuTables) {
    crate::boot::end_early_map();
    // SAFETY: see above; the GDT alias base puts the reserved page at page 14.
    unsafe {
        let pcid = if pcid_enabled() { PCID_HV } else { 0 };
        crate::cpu::write_cr3(t.hv_root.maddr() | pcid);
        descriptors::load(phys_to_virt(t.gdt.maddr()) - 14 * 4096);
    }
}

/// Copies the guest's L4 slots (all but 256–271) into both of this CPU's roots and drops
/// this CPU's guest translations.
pub fn sync_guest_slots(t: &CpuTables, guest_l4: Mfn) {
    copy_guest_slots(t, guest_l4);
    flush_guest_tlb();
}

/// Empties the guest slots of this CPU's roots (it runs no guest now; the tables it ran
/// may be freed) and drops its guest translations.
pub fn clear_guest_slots(t: &CpuTables) {
    for i in (0..256).chain(272..512) {
        write_entry(t.hv_root, i, Pte::default());
        write_entry(t.guest_root, i, Pte::default());
    }
    flush_guest_tlb();
}

/// Copies the guest's L4 slots into both roots of any CPU (`t` may be another CPU's: that
/// CPU must then flush its TLB before running guest code again).
pub fn copy_guest_slots(t: &CpuTables, guest_l4: Mfn) {
    // A hypervisor frame is never a guest's root: copy nothing of it.
    let private = crate::physmem::is_private(guest_l4);
    for i in (0..256).chain(272..512) {
        let e = if private { Pte::default() } else { read_entry(guest_l4, i) };
        write_entry(t.hv_root, i, e);
        write_entry(t.guest_root, i, e);
    }
}

/// The TSS's I/O map base when no port is allowed: beyond the TSS limit, so every `in`/`out`
/// from rings 1 and 3 raises #GP.
const IOMAP_NONE: u16 = u16::MAX;

/// Puts this CPU's I/O bitmap (every port but the hypervisor's, `hv_core::ioperm`) in force
/// for the guest about to run (`on`: it has I/O rights), or takes it out.
pub fn set_io_ports(t: &CpuTables, on: bool) {
    let base = if on { descriptors::TSS_HEADER as u16 } else { IOMAP_NONE };
    // SAFETY: the TSS frame belongs to this CPU; the I/O map base is a plain u16 in its
    // header, read by the CPU at each I/O instruction of a guest.
    unsafe {
        let p = phys_to_virt(t.tss.maddr()) as *mut Tss;
        core::ptr::addr_of_mut!((*p).iomap_base).write_unaligned(base);
    }
}

/// Makes the read-only M2P readable from ring 3 in this CPU's guest root (`user`: a Xen
/// pv64 domain runs) or from rings 0–2 only (the ring-1 model: a supervisor mapping, which
/// its ring-1 kernel reads under SMAP). The guest TLB is flushed by the root switch after.
pub fn set_m2p_user(t: &CpuTables, user: bool) {
    let i = pte::index(M2P_BASE, 4);
    let e = read_entry(t.guest_root, i);
    let u = PteFlags::USER_ACCESSIBLE.bits();
    write_entry(t.guest_root, i, Pte(if user { e.0 | u } else { e.0 & !u }));
}

/// Sets TSS.RSP1 (the guest kernel stack for ring 3 → ring 1 gates) on this CPU.
pub fn set_rsp1(t: &CpuTables, rsp1: u64) {
    // The CPU pushes ring-1 frames there through the guest root: guest addresses only.
    let rsp1 = if guest_abi::layout::is_guest_va(rsp1) { rsp1 } else { 0 };
    // SAFETY: the TSS frame belongs to this CPU; the CPU reads RSP1 only on a ring change.
    unsafe {
        let p = phys_to_virt(t.tss.maddr()) as *mut Tss;
        let mut h = p.read_unaligned();
        h.rsp[1] = rsp1;
        p.write_unaligned(h);
    }
}

/// Replaces the frame behind an already-mapped 4 KiB page of this CPU's entry area.
fn remap_entry_page(t: &CpuTables, va: u64, mfn: Mfn) {
    let mut table = t.hv_root;
    for level in (2..=4).rev() {
        let e = read_entry(table, pte::index(va, level));
        assert!(e.present(), "entry-area page {va:#x} is not mapped");
        table = e.mfn();
    }
    write_entry(table, pte::index(va, 1), Pte::new(mfn, PteFlags::PRESENT | PteFlags::NO_EXECUTE));
    x86_64::instructions::tlb::flush(x86_64::VirtAddr::new_truncate(va));
    flush_guest_tlb();
}

/// A guest descriptor frame for the entry area's windows: never a hypervisor frame (the guest
/// can read these windows), the zero page instead.
fn guest_desc_frame(t: &CpuTables, mfn: Option<Mfn>) -> Mfn {
    mfn.filter(|&m| crate::physmem::is_mapped(m) && !crate::physmem::is_private(m)).unwrap_or(t.zero)
}

/// Maps guest GDT page `idx` (0..14) to `mfn`, read-only, or back to the zero page.
pub fn map_gdt_page(t: &CpuTables, idx: usize, mfn: Option<Mfn>) {
    assert!(idx < guest_abi::selectors::FIRST_RESERVED_GDT_PAGE);
    remap_entry_page(t, ENTRY_GDT + 4096 * idx as u64, guest_desc_frame(t, mfn));
}

/// Maps LDT page `idx` (0..16) to `mfn`, read-only, or back to the zero page.
pub fn map_ldt_page(t: &CpuTables, idx: usize, mfn: Option<Mfn>) {
    assert!((idx as u64) < LDT_PAGES);
    remap_entry_page(t, ENTRY_LDT + 4096 * idx as u64, guest_desc_frame(t, mfn));
}

/// Loads an LDT of `ents` descriptors from the LDT area (0 = no LDT).
pub fn load_ldt(t: &CpuTables, ents: u32) {
    let g = phys_to_virt(t.gdt.maddr()) as *mut u64;
    let (lo, hi) = if ents == 0 {
        (0, 0)
    } else {
        let lim = ents as u64 * 8 - 1;
        let base = ENTRY_LDT;
        ((lim & 0xFFFF) | ((base & 0xFF_FFFF) << 16) | (0x82u64 << 40) | (((lim >> 16) & 0xF) << 48)
            | (((base >> 24) & 0xFF) << 56), base >> 32)
    };
    // SAFETY: the reserved GDT page belongs to this CPU; entries 10/11 (selector 0xE050) are
    // the LDT descriptor, which the CPU reads only on `lldt`.
    unsafe {
        g.add(10).write_volatile(lo);
        g.add(11).write_volatile(hi);
        let sel: u16 = if ents == 0 { 0 } else { guest_abi::selectors::LDT_SELECTOR };
        core::arch::asm!("lldt {0:x}", in(reg) sel, options(nostack));
    }
}

/// Flushes this CPU's TLB entries for guest address spaces and reloads the hypervisor root.
pub fn flush_local(t: &CpuTables) {
    let pcid = if pcid_enabled() { PCID_HV } else { 0 };
    // SAFETY: reloading this CPU's own hypervisor root (flushing form).
    unsafe { crate::cpu::write_cr3(t.hv_root.maddr() | pcid) };
    flush_guest_tlb();
}

/// Drops the guest translation of `va` on this CPU. Without PCID the next guest-root load
/// flushes everything anyway.
pub fn invlpg_guest(va: u64) {
    if pcid_enabled() {
        crate::cpu::invpcid_address(PCID_GUEST, va);
    }
}

/// Maps the local APIC's registers (uncached, no-execute) at `LAPIC_VA` in the shared
/// hypervisor slots of `template` (its upper-level tables are shared by every CPU's
/// hypervisor root).
pub fn map_lapic(template: PrivateFrame, src: &mut dyn FrameSource) -> Result<(), OutOfFrames> {
    map_4k(template.mfn(), LAPIC_VA, crate::lapic::phys_base(), RW_NX | PteFlags::NO_CACHE | PteFlags::WRITE_THROUGH, src)
}

/// Is `va`, a hypervisor address (L4 slots 256–271, whose tables are the hypervisor's own
/// in every root), mapped in the tables this CPU runs on? False for any other address.
pub fn hypervisor_va_mapped(va: u64) -> bool {
    if !(256..272).contains(&pte::index(va, 4)) || va >> 48 != 0xFFFF {
        return false;
    }
    let mut t = Mfn::of(crate::cpu::read_cr3() & 0x000F_FFFF_FFFF_F000);
    for level in (1..=4).rev() {
        let e = read_entry(t, pte::index(va, level));
        if !e.present() {
            return false;
        }
        if level == 1 || (level <= 3 && e.flags().contains(PteFlags::HUGE_PAGE)) {
            return true;
        }
        t = e.mfn();
    }
    false
}

/// Maps the screen's memory `[pa, pa + len)` (uncached: PAT's UC-, which the MTRRs turn
/// into write-combining where the firmware set a framebuffer so) at `crate::layout::SCREEN_VA`
/// in the shared hypervisor slots of `template`; `len` at most `SCREEN_MAX`.
pub(crate) fn map_screen(template: PrivateFrame, src: &mut dyn FrameSource, pa: u64, len: u64) -> Result<(), OutOfFrames> {
    let (first, end) = (pa & !0xFFF, (pa + len.min(crate::layout::SCREEN_MAX) + 0xFFF) & !0xFFF);
    for p in (first..end).step_by(4096) {
        map_4k(template.mfn(), crate::layout::SCREEN_VA + (p - first), p, RW_NX | PteFlags::NO_CACHE, src)?;
    }
    Ok(())
}

/// Maps I/O APIC `i`'s register page (uncached, no-execute) at `ioapic::va(i)` in the
/// shared hypervisor slots of `template`.
pub fn map_ioapic(template: PrivateFrame, src: &mut dyn FrameSource, i: usize, phys: u64) -> Result<(), OutOfFrames> {
    map_4k(template.mfn(), crate::ioapic::va(i), phys & !0xFFF, RW_NX | PteFlags::NO_CACHE | PteFlags::WRITE_THROUGH, src)
}

/// Points IDT vector `v` of this CPU straight at guest code: a DPL-3 trap gate to `handler`
/// in the guest kernel's ring-1 code segment, so `int v` from guest user mode enters the
/// guest kernel on TSS.RSP1 without entering the hypervisor. `None` restores the
/// hypervisor's own gate.
pub fn set_direct_gate(t: &CpuTables, v: u8, handler: Option<u64>) {
    let gate = match handler {
        Some(h) if guest_abi::layout::is_guest_va(h) => {
            descriptors::guest_trap_gate(h, guest_abi::selectors::FLAT_KERNEL_CS, 3)
        }
        _ => descriptors::idt_gate(crate::entry::stub_address(v), gate_policy(v).0, gate_policy(v).1),
    };
    // SAFETY: this CPU's IDT frame, direct-mapped; the CPU reads a gate only when the vector
    // is raised, and both halves are written before the guest runs again.
    unsafe { (phys_to_virt(t.idt.maddr()) as *mut [u64; 2]).add(v as usize).write(gate) };
}

/// A root for starting APs: the shared hypervisor slots of `template` plus an identity map
/// of the first 2 MiB (the trampoline runs there until it jumps to the image).
pub fn build_ap_boot_root(template: PrivateFrame, src: &mut dyn FrameSource) -> Result<Mfn, OutOfFrames> {
    let template = template.mfn();
    let root = frame_of(src)?;
    for i in 256..272 {
        write_entry(root, i, read_entry(template, i));
    }
    let l3 = frame_of(src)?;
    let l2 = frame_of(src)?;
    write_entry(root, 0, Pte::new(l3, TABLE));
    write_entry(l3, 0, Pte::new(l2, TABLE));
    write_entry(l2, 0, Pte::new(Mfn(0), PteFlags::PRESENT | PteFlags::WRITABLE | PteFlags::HUGE_PAGE));
    Ok(root)
}
