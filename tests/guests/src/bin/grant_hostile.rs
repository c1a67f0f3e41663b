//! Grant mappings, copies and swaps (v1), and their hostile uses, Xen's advisories among
//! them. Modes (the command line):
//!
//! - `self D` (run as domain D): the domain grants pages to itself and attacks its own
//!   grants: bad and out-of-range refs, grants of the wrong type, to another domain,
//!   read-only ones mapped writable, of frames it does not own, of a page table and of a
//!   descriptor page (XSA-214: types do not travel with the page), host addresses with no
//!   L1, misaligned `contains_pte` (XSA-227), wrong, stale and double unmaps, host+device
//!   writable maps unmapped twice (XSA-224) and read-only ones (XSA-234) with pinning as an
//!   L1 afterwards, page-table updates over a grant PTE, revocation while mapped, copies out
//!   of range or into a page table, swaps of refs in use, `set_version` while mapped, and a
//!   batch with a bad operation in the middle (XSA-316). It ends holding one mapping: the
//!   hypervisor must release it when the domain is gone (the audit then checks every count).
//! - `race D` (run as domain D, two vCPUs): vCPU 1 rewrites a grant entry as fast as it
//!   can (writable, read-only, invalid, for another domain: plain stores, clobbering the
//!   in-use flags as a hostile granter may) while vCPU 0 maps and unmaps it. Every map must
//!   either be refused with a status or give a mapping that reads (and writes, if
//!   writable) and unmaps; afterwards the frame holds no reference (it pins as an L1 and
//!   unpins), and the audit of the dead domain checks every count. `race D 2` does it in
//!   v2, where the in-use flags are in the status frame.
//! - `v2 D` (run as domain D): grant tables v2. `set_version` refused while refs past the
//!   reserved eight are in use, with a reserved ref's mapping and in-use flags carried over
//!   both ways; v2 entries and their status words (`get_status_frames`, the status frame
//!   mapped read-only and never writable), maps, copies and swaps of v2 entries, sub-page,
//!   transitive and unrepresentable grants refused; the way back to v1 refused while a
//!   status frame is mapped (XSA-255) or a reserved entry cannot be held in v1 (-ERANGE),
//!   then the freed status frame out of reach. It ends in v2 with a grant and the status
//!   frame mapped: the teardown releases both, and the audit checks every count.
//! - `granter` (domain 1) / `mapper` (dom0): across domains. d1 grants a page to dom0 and
//!   dies while dom0 maps it; the page must stay readable to dom0 until it unmaps, new maps
//!   of the dead domain's grants are refused, and the unmap works.
#![no_std]
#![no_main]

use guest_abi::errno::Errno;
use guest_abi::grant::*;
use guest_abi::mm::ext;
use pv_runtime::hypercall::{self as hc, MmuUpdate};
use pv_runtime::mm::{GuestMem, A, D, P, RW};
use test_guests::grant::*;
use test_guests::*;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};

const SELF: u16 = guest_abi::DOMID_SELF;
const GEN: i16 = GntSt::GeneralError as i16;
/// A hypervisor frame (its image is loaded at 1 MiB).
const HV_MFN: u64 = 0x100;

/// `GNTTABOP_swap_grant_ref {ref_a, ref_b; OUT status}`.
#[repr(C)]
struct Swap {
    a: u32,
    b: u32,
    status: i16,
    _pad: u16,
}

fn map_st(host_addr: u64, flags: u32, gref: u32, dom: u16) -> i16 {
    map(host_addr, flags, gref, dom).1.status
}

fn gref_ptr(gref: u32, dom: u16, offset: u16) -> CopyPtr {
    CopyPtr { u: gref as u64, dom, offset, _pad: 0 }
}

fn frame_ptr(mfn: u64, dom: u16, offset: u16) -> CopyPtr {
    CopyPtr { u: mfn, dom, offset, _pad: 0 }
}

/// The page at slot `k` from the end of the bootstrap region's slack.
fn slot(mem: &GuestMem, k: u64) -> u64 {
    pv_runtime::virt_base() + (mem.region_end_pfn - k) * 4096
}

fn read64(va: u64) -> u64 {
    // SAFETY: callers pass addresses mapped in this domain.
    unsafe { (va as *const u64).read_volatile() }
}

fn write64(va: u64, v: u64) {
    // SAFETY: callers pass addresses mapped writable in this domain.
    unsafe { (va as *mut u64).write_volatile(v) }
}

fn write_faults(va: u64) -> bool {
    probe!("mov qword ptr [{a}], 1"; a = in(reg) va).is_some_and(|f| f.vector == 14)
}

fn read_faults(va: u64) -> bool {
    probe!("mov {t}, qword ptr [{a}]"; a = in(reg) va, t = out(reg) _).is_some_and(|f| f.vector == 14)
}

fn table_at(va: u64) -> Table {
    let t = Table::at(va);
    check("a one-frame grant table set up and mapped", t.is_some());
    t.unwrap_or(Table { va })
}

fn self_test(si: &'static pv_runtime::StartInfo, me: u16) {
    let mem = GuestMem::new(si, pv_runtime::virt_base());
    let t = Tables::new(si);
    let gt = table_at(slot(&mem, 2));
    let (m1, m2, m3, m4) = (slot(&mem, 3), slot(&mem, 4), slot(&mem, 5), slot(&mem, 6));
    let (d_rw, d_ro, d_plain, d_dst) = (slot(&mem, 20), slot(&mem, 21), slot(&mem, 22), slot(&mem, 23));
    let mfn = |va: u64| t.mfn_of_va(va);
    let (f_rw, f_ro, f_plain, f_dst) = (mfn(d_rw), mfn(d_ro), mfn(d_plain), mfn(d_dst));
    let l1 = t.table(d_rw, 1);
    write64(d_rw, 0x1111_2222_3333_4444);
    write64(d_ro, 0x5555_6666_7777_8888);
    // The slots the grants are mapped at must map something first (their old frames come
    // back afterwards).
    let m_old = [m1, m2, m3, m4].map(|va| t.entry(t.table(va, 1), (va >> 12) & 511));
    let restore = |k: usize, va: u64| {
        hc::update_va_mapping(va, m_old[k], 2);
    };

    // A descriptor page: a fresh frame, read-only, made the GDT.
    let gdt_va = slot(&mem, 24);
    let f_gdt = mfn(gdt_va);
    // SAFETY: the slot is mapped writable until the next line remaps it.
    unsafe { core::ptr::write_bytes(gdt_va as *mut u8, 0, 4096) };
    expect_ret("remap the GDT page read-only", hc::update_va_mapping(gdt_va, f_gdt << 12 | P | A, 2), 0);
    expect_ret("the page becomes the GDT", hc::set_gdt(&[f_gdt], 512), 0);
    // A plain page mapped only read-only here (so nothing else holds a writable type on it).
    // SAFETY: the slot is mapped writable until the next line remaps it.
    unsafe { core::ptr::write_bytes(d_plain as *mut u8, 0, 4096) };
    expect_ret("remap the plain page read-only", hc::update_va_mapping(d_plain, f_plain << 12 | P | A, 2), 0);

    gt.grant(8, GTF_PERMIT_ACCESS, me, f_rw);
    gt.grant(9, GTF_PERMIT_ACCESS | GTF_READONLY, me, f_ro);
    gt.grant(10, GTF_PERMIT_ACCESS, me, l1);
    gt.grant(11, GTF_PERMIT_ACCESS, me, HV_MFN);
    gt.grant(12, GTF_PERMIT_ACCESS, 7, f_rw);
    gt.grant(13, GTF_PERMIT_ACCESS, me, f_gdt);
    gt.grant(14, GTF_ACCEPT_TRANSFER, me, f_rw);
    gt.grant(16, GTF_PERMIT_ACCESS, me, f_plain);
    let h = GNTMAP_HOST_MAP;

    // Bad refs and grants.
    check("a ref beyond the table: GNTST_bad_gntref", map_st(m1, h, 512, SELF) == GntSt::BadGntref as i16);
    check("a huge ref: GNTST_bad_gntref", map_st(m1, h, u32::MAX, SELF) == GntSt::BadGntref as i16);
    check("an unused ref: GNTST_general_error", map_st(m1, h, 15, SELF) == GEN);
    check("a grant to another domain: GNTST_general_error", map_st(m1, h, 12, SELF) == GEN);
    check("a transfer grant mapped: GNTST_general_error", map_st(m1, h, 14, SELF) == GEN);
    check("a read-only grant mapped writable: GNTST_general_error", map_st(m1, h, 9, SELF) == GEN);
    check("... leaves no in-use flag", gt.flags(9) == GTF_PERMIT_ACCESS | GTF_READONLY);
    check("a frame the granter does not own: GNTST_bad_page", map_st(m1, h, 11, SELF) == GntSt::BadPage as i16);
    check("... leaves no in-use flag", gt.flags(11) == GTF_PERMIT_ACCESS);
    check("XSA-214: a page table mapped writable: GNTST_general_error", map_st(m1, h, 10, SELF) == GEN);
    check("XSA-214: a descriptor page mapped writable: GNTST_general_error", map_st(m1, h, 13, SELF) == GEN);
    check("... leave no in-use flag", gt.flags(10) == GTF_PERMIT_ACCESS && gt.flags(13) == GTF_PERMIT_ACCESS);
    check("neither host nor device map: GNTST_bad_gntref", map_st(m1, GNTMAP_READONLY, 8, SELF) == GntSt::BadGntref as i16);
    check("no such domain: GNTST_bad_domain", map_st(m1, h, 8, 0x7FEE) == GntSt::BadDomain as i16);
    // Bad host addresses.
    check("a host address with no L1: GNTST_general_error", map_st(0x7FFF_0000_0000, h, 8, SELF) == GEN);
    check("a host address in the hypervisor: GNTST_general_error", map_st(0xFFFF_8300_0000_0000, h, 8, SELF) == GEN);
    let pte_m1 = t.entry_maddr(m1, 1);
    check("XSA-227: a misaligned contains_pte: GNTST_general_error", map_st(pte_m1 + 3, h | GNTMAP_CONTAINS_PTE, 8, SELF) == GEN);
    check("contains_pte in a frame that is no L1: GNTST_general_error", map_st(f_rw << 12, h | GNTMAP_CONTAINS_PTE, 8, SELF) == GEN);
    check("... none of them left an in-use flag", gt.flags(8) == GTF_PERMIT_ACCESS);
    let mut bad = Map { host_addr: m1, flags: h, gref: 8, dom: SELF, ..Default::default() };
    expect_err("a map op in hypervisor memory", op(GNTTABOP_MAP_GRANT_REF, 0xFFFF_8300_0000_0000, 1), Errno::EFAULT);
    expect_ret("a batch of 0 maps", op(GNTTABOP_MAP_GRANT_REF, &mut bad as *mut Map as u64, 0), 0);

    // A good writable host map: the data is shared both ways, the entry shows it in use.
    let (r, a) = map(m1, h, 8, SELF);
    check("map ref 8 writable at a linear address", r == 0 && a.status == 0);
    check("the mapping shows the granted page", read64(m1) == 0x1111_2222_3333_4444);
    write64(m1, 0xABCD);
    check("writes through it land in the page", read64(d_rw) == 0xABCD);
    check("the entry is GTF_reading|GTF_writing", gt.flags(8) == GTF_PERMIT_ACCESS | GTF_READING | GTF_WRITING);
    let pte = t.entry(t.table(m1, 1), (m1 >> 12) & 511);
    check("the grant PTE is writable, not executable, bit 62 set", pte & RW != 0 && pte >> 63 == 1 && pte >> 62 & 1 == 1);
    expect_err("mmu_update over a grant PTE", hc::mmu_update(&[MmuUpdate { ptr: pte_m1, val: f_rw << 12 | P | RW | A | D }]).0, Errno::EINVAL);
    expect_err("update_va_mapping over a grant PTE", hc::update_va_mapping(m1, 0, 2), Errno::EINVAL);
    check("a map onto a grant PTE: GNTST_general_error", map_st(m1, h | GNTMAP_READONLY, 9, SELF) == GEN);
    check("the frame mapped writable cannot be pinned as an L1", hc::mmuext1(ext::PIN_L1_TABLE, f_rw, 0) == Errno::EINVAL.to_ret());
    // The granter revokes while mapped (the flags it may not clear stay Xen's to clear):
    // the mapping stays until unmapped, a new map of the revoked ref is refused.
    gt.grant(8, GTF_INVALID, 0, 0);
    // (As Xen: while a ref is pinned its active entry, not the shared one, decides.)
    let (_, again) = map(m2, h, 8, SELF);
    check("a revoked ref still pinned maps again (the active entry decides)", again.status == 0 && read64(m2) == 0xABCD);
    check("... and unmaps", unmap(m2, 0, again.handle) == 0);
    restore(1, m2);
    // Wrong and stale handles.
    check("an unmap of a handle never used: GNTST_bad_handle", unmap(m1, 0, 999) == GntSt::BadHandle as i16);
    check("an unmap with no address: GNTST_general_error", unmap(0, 0, a.handle) == GEN);
    check("an unmap at an address that maps no grant: GNTST_general_error", unmap(m2, 0, a.handle) == GEN);
    check("an unmap of a device mapping the handle lacks: GNTST_general_error", unmap(0, f_rw << 12, a.handle) == GEN);
    check("the unmap", unmap(m1, 0, a.handle) == 0);
    check("the mapping is gone", read_faults(m1));
    check("the in-use flags are cleared", gt.flags(8) == 0);
    check("a revoked ref no longer pinned maps no more", map_st(m2, h, 8, SELF) == GEN);
    check("double unmap: GNTST_bad_handle", unmap(m1, 0, a.handle) == GntSt::BadHandle as i16);
    restore(0, m1);
    gt.grant(8, GTF_PERMIT_ACCESS, me, f_rw);

    // XSA-224: host + device writable map, then two unmaps.
    let (r, a) = map(m2, h | GNTMAP_DEVICE_MAP, 8, SELF);
    check("XSA-224: a host + device writable map", r == 0 && a.status == 0 && a.dev_bus_addr == f_rw << 12);
    check("XSA-224: unmap the host kind", unmap(m2, 0, a.handle) == 0);
    check("XSA-224: the host kind twice: GNTST_general_error", unmap(m2, 0, a.handle) == GEN);
    check("XSA-224: still GTF_writing for the device kind", gt.flags(8) == GTF_PERMIT_ACCESS | GTF_READING | GTF_WRITING);
    check("a device unmap at a wrong bus address: GNTST_bad_dev_addr", unmap(0, (f_rw + 1) << 12, a.handle) == GntSt::BadDevAddr as i16);
    check("XSA-224: unmap the device kind", unmap(0, f_rw << 12, a.handle) == 0);
    check("XSA-224: the handle is gone", unmap(0, f_rw << 12, a.handle) == GntSt::BadHandle as i16);
    check("XSA-224: afterwards pinning the frame as an L1 fails (its own writable mapping)", hc::mmuext1(ext::PIN_L1_TABLE, f_rw, 0) == Errno::EINVAL.to_ret());
    restore(1, m2);

    // XSA-234: read-only maps released as what they are.
    let (r, a) = map(m3, h | GNTMAP_READONLY, 9, SELF);
    check("XSA-234: a read-only map of a read-only grant", r == 0 && a.status == 0 && gt.flags(9) == GTF_PERMIT_ACCESS | GTF_READONLY | GTF_READING);
    check("XSA-234: reads work, writes fault", read64(m3) == 0x5555_6666_7777_8888 && write_faults(m3));
    check("XSA-234: a writable map of the same ref: GNTST_general_error", map_st(m4, h, 9, SELF) == GEN);
    check("XSA-234: unmap", unmap(m3, 0, a.handle) == 0);
    check("XSA-234: afterwards pinning the frame as an L1 fails", hc::mmuext1(ext::PIN_L1_TABLE, f_ro, 0) == Errno::EINVAL.to_ret());
    check("XSA-234: flags clear", gt.flags(9) == GTF_PERMIT_ACCESS | GTF_READONLY);
    restore(2, m3);
    // Mixed pins of one ref: the writer's flag goes with the last writer.
    let (_, ro) = map(m3, h | GNTMAP_READONLY, 16, SELF);
    let (_, rw) = map(m4, h, 16, SELF);
    check("a read-only and a writable map of one ref", ro.status == 0 && rw.status == 0 && gt.flags(16) & GTF_WRITING != 0);
    // The writable handle unmapped through the read-only mapping's PTE would leave the
    // writable PTE with no writable reference (then the frame could become a page table
    // still mapped writable): a handle unmaps only its own kind of PTE.
    check("the writable handle unmapped at the read-only PTE: GNTST_general_error", unmap(m3, 0, rw.handle) == GEN);
    check("the read-only handle unmapped at the writable PTE: GNTST_general_error", unmap(m4, 0, ro.handle) == GEN);
    check("... both mappings stay", read64(m3) == read64(m4));
    check("... and the frame still cannot become an L1", hc::mmuext1(ext::PIN_L1_TABLE, f_plain, 0) == Errno::EINVAL.to_ret());
    check("... the writer unmapped first", unmap(m4, 0, rw.handle) == 0 && gt.flags(16) == GTF_PERMIT_ACCESS | GTF_READING);
    check("... then the reader", unmap(m3, 0, ro.handle) == 0 && gt.flags(16) == GTF_PERMIT_ACCESS);
    // With no writable reference left anywhere, the frame may become a table again: the
    // counts came back to exactly what the domain itself holds.
    expect_ret("the plain page pinned as an L1 after its writable grant map went", hc::mmuext1(ext::PIN_L1_TABLE, f_plain, 0), 0);
    expect_ret("... and unpinned", hc::mmuext1(ext::UNPIN_TABLE, f_plain, 0), 0);
    check("a page that is an L1 now maps writable no more", {
        hc::mmuext1(ext::PIN_L1_TABLE, f_plain, 0);
        let s = map_st(m4, h, 16, SELF);
        hc::mmuext1(ext::UNPIN_TABLE, f_plain, 0);
        s == GEN
    });
    restore(2, m3);
    restore(3, m4);

    // contains_pte: the PTE named by its machine address.
    let (r, a) = map(pte_m1, h | GNTMAP_CONTAINS_PTE | GNTMAP_READONLY, 9, SELF);
    check("a contains_pte map", r == 0 && a.status == 0 && read64(m1) == 0x5555_6666_7777_8888);
    check("its unmap by a linear address: GNTST_general_error", unmap(m1, 0, a.handle) == GEN);
    check("its unmap by the PTE's address", unmap(pte_m1, 0, a.handle) == 0);
    restore(0, m1);

    // Wrong handle for the address.
    let (_, a8) = map(m1, h, 8, SELF);
    let (_, a9) = map(m3, h | GNTMAP_READONLY, 9, SELF);
    check("an unmap naming another mapping's address: GNTST_general_error", unmap(m1, 0, a9.handle) == GEN);
    check("... both mappings stay", read64(m1) == 0xABCD && read64(m3) == 0x5555_6666_7777_8888);

    // Copies.
    write64(d_dst, 0);
    let me_gref = |r: u32, off: u16| gref_ptr(r, SELF, off);
    check("copy from a grant to an own frame", copy(me_gref(8, 0), frame_ptr(f_dst, SELF, 8), 8, 1) == 0 && read64(d_dst + 8) == 0xABCD);
    check("copy past the page's end: GNTST_bad_copy_arg", copy(me_gref(8, 4090), frame_ptr(f_dst, SELF, 0), 8, 1) == GntSt::BadCopyArg as i16);
    check("copy to past the page's end: GNTST_bad_copy_arg", copy(me_gref(8, 0), frame_ptr(f_dst, SELF, 4095), 2, 1) == GntSt::BadCopyArg as i16);
    check("copy by frame number of another domain: GNTST_permission_denied", copy(frame_ptr(f_rw, 0, 0), frame_ptr(f_dst, SELF, 0), 8, 0) == GntSt::PermissionDenied as i16);
    check("copy from a frame not the caller's: GNTST_bad_page", copy(frame_ptr(HV_MFN, SELF, 0), frame_ptr(f_dst, SELF, 0), 8, 0) == GntSt::BadPage as i16);
    check("copy into a page table: GNTST_general_error", copy(me_gref(8, 0), frame_ptr(l1, SELF, 0), 8, 1) == GEN);
    check("copy into a read-only grant: GNTST_general_error", copy(frame_ptr(f_dst, SELF, 0), me_gref(9, 0), 8, 2) == GEN);
    check("copy into a descriptor page's grant: GNTST_general_error", copy(frame_ptr(f_dst, SELF, 0), me_gref(13, 0), 8, 2) == GEN);
    check("copy from a bad ref: GNTST_bad_gntref", copy(me_gref(5000, 0), frame_ptr(f_dst, SELF, 0), 8, 1) == GntSt::BadGntref as i16);
    check("copy between two grants", copy(me_gref(9, 0), me_gref(8, 16), 8, 3) == 0 && read64(d_rw + 16) == 0x5555_6666_7777_8888);
    check("after copies the in-use flags are the mappings' only", gt.flags(8) == GTF_PERMIT_ACCESS | GTF_READING | GTF_WRITING && gt.flags(9) == GTF_PERMIT_ACCESS | GTF_READONLY | GTF_READING);

    // Swaps.
    let mut s = Swap { a: 8, b: 15, status: 0x5A5A, _pad: 0 };
    op(GNTTABOP_SWAP_GRANT_REF, &mut s as *mut Swap as u64, 1);
    check("a swap of a ref in use: GNTST_eagain", s.status == GntSt::Eagain as i16);
    let (w14, w15) = (gt.word(14), gt.word(15));
    let mut s = Swap { a: 14, b: 15, status: 0x5A5A, _pad: 0 };
    op(GNTTABOP_SWAP_GRANT_REF, &mut s as *mut Swap as u64, 1);
    check("a swap of two unused refs", s.status == 0 && gt.word(14) == w15 && gt.word(15) == w14);
    let mut s = Swap { a: 14, b: 9999, status: 0x5A5A, _pad: 0 };
    op(GNTTABOP_SWAP_GRANT_REF, &mut s as *mut Swap as u64, 1);
    check("a swap with a bad ref: GNTST_bad_gntref", s.status == GntSt::BadGntref as i16);

    // Versions while grants are in use.
    let mut v = [1u32];
    expect_ret("set_version 1 while mapped", op(GNTTABOP_SET_VERSION, v.as_mut_ptr() as u64, 1), 0);
    v[0] = 2;
    expect_err("set_version 2 while refs past the reserved ones are mapped", op(GNTTABOP_SET_VERSION, v.as_mut_ptr() as u64, 1), Errno::EBUSY);
    check("... the version in force is written back", v[0] == 1);
    check("... the mappings are untouched", read64(m1) == 0xABCD && gt.flags(8) == GTF_PERMIT_ACCESS | GTF_READING | GTF_WRITING);

    // unmap_and_replace: the grant PTE at m1 takes what m2 mapped; m2 is left empty.
    #[repr(C)]
    struct Replace {
        host_addr: u64,
        new_addr: u64,
        handle: u32,
        status: i16,
        _pad: u16,
    }
    let m2_frame = mfn(m2);
    let mut rp = Replace { host_addr: m1, new_addr: m2, handle: a8.handle, status: 0x5A5A, _pad: 0 };
    op(GNTTABOP_UNMAP_AND_REPLACE, &mut rp as *mut Replace as u64, 1);
    check("unmap_and_replace", rp.status == 0 && mfn(m1) == m2_frame && read_faults(m2));
    check("... and the grant is free", gt.flags(8) == GTF_PERMIT_ACCESS);
    let mut rp = Replace { host_addr: m3, new_addr: m3, handle: a9.handle, status: 0x5A5A, _pad: 0 };
    op(GNTTABOP_UNMAP_AND_REPLACE, &mut rp as *mut Replace as u64, 1);
    check("unmap_and_replace with its own grant PTE as the new address: GNTST_general_error", rp.status == GEN && read64(m3) == 0x5555_6666_7777_8888);
    check("unmap of the read-only map", unmap(m3, 0, a9.handle) == 0);
    restore(0, m1);
    restore(1, m2);
    restore(2, m3);

    // XSA-234 (XTF's PoC): unmap_and_replace may take over another grant mapping's PTE, as
    // Xen lets it. That handle's mapping moves: it is unmapped at its new place only, and
    // its frame keeps its writable type until then.
    let (r, w) = map(m1, h, 16, SELF);
    let (r2, ro) = map(m2, h | GNTMAP_READONLY, 9, SELF);
    check("XSA-234: a writable and a read-only map", r == 0 && w.status == 0 && r2 == 0 && ro.status == 0);
    let mut rp = Replace { host_addr: m2, new_addr: m1, handle: ro.handle, status: 0x5A5A, _pad: 0 };
    op(GNTTABOP_UNMAP_AND_REPLACE, &mut rp as *mut Replace as u64, 1);
    check("XSA-234: unmap_and_replace onto the other grant's PTE", rp.status == 0 && mfn(m2) == f_plain && read_faults(m1));
    check("XSA-234: ref 9 is free, ref 16 still mapped writable", gt.flags(9) == GTF_PERMIT_ACCESS | GTF_READONLY && gt.flags(16) == GTF_PERMIT_ACCESS | GTF_READING | GTF_WRITING);
    restore(0, m1);
    check("XSA-234: the moved handle is not unmapped where it was", unmap(m1, 0, w.handle) == GEN);
    check("XSA-234: its frame cannot become a page table while mapped", hc::mmuext1(ext::PIN_L1_TABLE, f_plain, 0) == Errno::EINVAL.to_ret());
    check("XSA-234: it is unmapped at its new place", unmap(m2, 0, w.handle) == 0);
    check("XSA-234: then its frame can be pinned", hc::mmuext1(ext::PIN_L1_TABLE, f_plain, 0) == 0 && hc::mmuext1(ext::UNPIN_TABLE, f_plain, 0) == 0);
    restore(1, m2);

    // XSA-316: a batch with a bad operation in the middle: rc 0, each status its own.
    let mut batch = [
        Map { host_addr: m1, flags: h, gref: 8, dom: SELF, ..Default::default() },
        Map { host_addr: m2, flags: h, gref: 12, dom: SELF, ..Default::default() },
        Map { host_addr: m3, flags: h | GNTMAP_READONLY, gref: 9, dom: SELF, ..Default::default() },
    ];
    let r = op(GNTTABOP_MAP_GRANT_REF, batch.as_mut_ptr() as u64, 3);
    check("XSA-316: a batch of three, the middle one bad: rc 0", r == 0);
    check("XSA-316: statuses okay, general_error, okay", batch[0].status == 0 && batch[1].status == GEN && batch[2].status == 0);
    let mut un = [
        Unmap { host_addr: m3, handle: batch[2].handle, ..Default::default() },
        Unmap { host_addr: m3, handle: batch[2].handle, ..Default::default() },
    ];
    let r = op(GNTTABOP_UNMAP_GRANT_REF, un.as_mut_ptr() as u64, 2);
    check("a batch unmapping one handle twice: okay then bad_handle", r == 0 && un[0].status == 0 && un[1].status == GntSt::BadHandle as i16);
    restore(2, m3);

    // The end: ref 8 stays mapped at m1. The hypervisor releases it once this domain is
    // gone, and audits every count.
    check("one mapping left for the hypervisor to release", read64(m1) == 0xABCD);
}

/// `set_version`: the call's return and the version written back.
fn set_version(v: u32) -> (i64, u32) {
    let mut b = [v];
    let r = op(GNTTABOP_SET_VERSION, b.as_mut_ptr() as u64, 1);
    (r, b[0])
}

fn get_version() -> u32 {
    let mut b = [SELF as u32, 0x5A5A];
    expect_ret("get_version", op(GNTTABOP_GET_VERSION, b.as_mut_ptr() as u64, 1), 0);
    b[1]
}

/// `get_status_frames` of `n` frames into `list`: the call's return and the status.
fn status_frames(dom: u16, n: u32, list: u64) -> (i64, i16) {
    #[repr(C)]
    struct Gsf {
        nr_frames: u32,
        dom: u16,
        status: i16,
        frame_list: u64,
    }
    let mut g = Gsf { nr_frames: n, dom, status: 0x5A5A, frame_list: list };
    let r = op(GNTTABOP_GET_STATUS_FRAMES, &mut g as *mut Gsf as u64, 1);
    (r, g.status)
}

/// A v2 entry `r` of the table mapped at `va` written as a guest does (the union, the
/// domain, then the flags), and its header read back.
fn grant2(va: u64, r: u32, flags: u16, dom: u16, frame: u64) {
    let e = va + 16 * r as u64;
    // SAFETY: the grant frame is mapped writable at `va`; v2 entries are 16 bytes.
    unsafe {
        ((e + 8) as *mut u64).write_volatile(frame);
        ((e + 2) as *mut u16).write_volatile(dom);
        core::sync::atomic::fence(SeqCst);
        (e as *mut u16).write_volatile(flags);
    }
}

fn flags2(va: u64, r: u32) -> u16 {
    // SAFETY: as in `grant2`.
    unsafe { ((va + 16 * r as u64) as *const u16).read_volatile() }
}

/// Status word `r` of the status frame mapped at `va`.
fn status2(va: u64, r: u32) -> u16 {
    // SAFETY: the status frame is mapped (read-only) at `va`.
    unsafe { ((va + 2 * r as u64) as *const u16).read_volatile() }
}

fn v2_test(si: &'static pv_runtime::StartInfo, me: u16) {
    let mem = GuestMem::new(si, pv_runtime::virt_base());
    let t = Tables::new(si);
    let mfn = |va: u64| t.mfn_of_va(va);
    let (m1, m2, m3, st_va) = (slot(&mem, 3), slot(&mem, 4), slot(&mem, 5), slot(&mem, 6));
    let (d_rw, d_ro, d_dst) = (slot(&mem, 20), slot(&mem, 21), slot(&mem, 22));
    let (f_rw, f_ro, f_dst) = (mfn(d_rw), mfn(d_ro), mfn(d_dst));
    let old = [m1, m2, m3, st_va].map(|va| t.entry(t.table(va, 1), (va >> 12) & 511));
    write64(d_rw, 0x1111_2222_3333_4444);
    write64(d_ro, 0x5555_6666_7777_8888);
    let h = GNTMAP_HOST_MAP;

    check("a new table is v1", get_version() == 1);
    let (r, v) = set_version(3);
    check("set_version 3: -EINVAL, 1 written back", r == Errno::EINVAL.to_ret() && v == 1);
    check("set_version 1 in v1: nothing to do", set_version(1) == (0, 1));
    let mut list = [0u64; 9];
    check("v1 has no status frames: GNTST_general_error", status_frames(SELF, 1, list.as_mut_ptr() as u64) == (0, GEN));
    check("... none asked for: okay", status_frames(SELF, 0, list.as_mut_ptr() as u64) == (0, 0));

    // In v1: reserved ref 1 mapped (it may stay so), ref 8 mapped (it may not).
    let gt = table_at(slot(&mem, 2));
    gt.grant(1, GTF_PERMIT_ACCESS, me, f_rw);
    gt.grant(8, GTF_PERMIT_ACCESS | GTF_READONLY, me, f_ro);
    gt.grant(9, GTF_PERMIT_ACCESS, me, f_ro);
    let (r1, a1) = map(m1, h, 1, SELF);
    let (r8, a8) = map(m2, h | GNTMAP_READONLY, 8, SELF);
    check("v1: reserved ref 1 and ref 8 mapped", r1 == 0 && a1.status == 0 && r8 == 0 && a8.status == 0);
    let (r, v) = set_version(2);
    check("set_version 2 with ref 8 mapped: -EBUSY, still v1", r == Errno::EBUSY.to_ret() && v == 1 && get_version() == 1);
    check("... ref 8 still mapped", unmap(m2, 0, a8.handle) == 0);
    hc::update_va_mapping(m2, old[1], 2);
    // A frame that was a page table until lately, given back: the allocator hands it out
    // next (lowest first), here as the status frame, which takes its type only after a
    // flush of every CPU (it used to be refused, and the frame kept by the domain uncounted).
    let mut mem = mem;
    let x = mem.alloc_mfn().unwrap_or(0);
    expect_ret("a fresh frame pinned as an L1", hc::mmuext1(ext::PIN_L1_TABLE, x, 0), 0);
    expect_ret("... unpinned", hc::mmuext1(ext::UNPIN_TABLE, x, 0), 0);
    expect_ret("... and given back", hc::reservation(1, &mut [x]), 1);
    check("set_version 2 with only a reserved ref in use", set_version(2) == (0, 2) && get_version() == 2);
    let mut first = [0u64];
    status_frames(SELF, 1, first.as_mut_ptr() as u64);
    println!("v2: status frame {:#x}; the former L1 was {:#x}", first[0], x);
    check("... its mapping still works", read64(m1) == 0x1111_2222_3333_4444);
    check("... the v2 header has no in-use flags", flags2(gt.va, 1) == GTF_PERMIT_ACCESS);
    check("... the other entries are cleared", flags2(gt.va, 8) == 0 && flags2(gt.va, 9) == 0);

    // The status frame: one for one grant frame.
    list[0] = 0;
    check("get_status_frames of 1", status_frames(SELF, 1, list.as_mut_ptr() as u64) == (0, 0) && list[0] != 0);
    let st = list[0];
    check("get_status_frames of 2 (there is 1): GNTST_general_error", status_frames(SELF, 2, list.as_mut_ptr() as u64) == (0, GEN));
    check("get_status_frames to a bad list: GNTST_bad_virt_addr", status_frames(SELF, 1, 0xFFFF_8000_0000_0000) == (0, GntSt::BadVirtAddr as i16));
    check("get_status_frames of no such domain: GNTST_bad_domain", status_frames(0x7FEE, 1, list.as_mut_ptr() as u64) == (0, GntSt::BadDomain as i16));
    check("get_status_frames of another domain: GNTST_permission_denied", status_frames(0, 1, list.as_mut_ptr() as u64) == (0, GntSt::PermissionDenied as i16));
    check("the status frame mapped writable: refused", hc::update_va_mapping(st_va, st << 12 | P | RW | A | D, 2) < 0);
    check("... nor pinned as a page table", hc::mmuext1(ext::PIN_L1_TABLE, st, 0) < 0);
    expect_ret("the status frame mapped read-only", hc::update_va_mapping(st_va, st << 12 | P | A, 2), 0);
    check("ref 1's status word: GTF_reading|GTF_writing (carried over)", status2(st_va, 1) == GTF_READING | GTF_WRITING);
    check("the status frame is not writable", write_faults(st_va));

    // v2 entries.
    grant2(gt.va, 10, GTF_PERMIT_ACCESS, me, f_dst);
    grant2(gt.va, 11, GTF_PERMIT_ACCESS | GTF_READONLY, me, f_ro);
    grant2(gt.va, 12, GTF_PERMIT_ACCESS | GTF_SUB_PAGE, me, f_ro);
    grant2(gt.va, 13, GTF_TRANSITIVE, me, 0);
    grant2(gt.va, 14, GTF_PERMIT_ACCESS, me, 1 << 32 | f_ro);
    grant2(gt.va, 15, GTF_PERMIT_ACCESS, 7, f_ro);
    let (r, a10) = map(m2, h, 10, SELF);
    check("v2: a full-page grant mapped writable", r == 0 && a10.status == 0);
    write64(m2, 0x9999);
    check("... writes land in the page", read64(d_dst) == 0x9999);
    check("... its status word: GTF_reading|GTF_writing; its header untouched", status2(st_va, 10) == GTF_READING | GTF_WRITING && flags2(gt.va, 10) == GTF_PERMIT_ACCESS);
    check("v2: a read-only grant mapped writable: GNTST_general_error", map_st(m3, h, 11, SELF) == GEN);
    check("v2: a sub-page grant: GNTST_general_error", map_st(m3, h | GNTMAP_READONLY, 12, SELF) == GEN);
    check("v2: a transitive grant: GNTST_general_error", map_st(m3, h | GNTMAP_READONLY, 13, SELF) == GEN);
    check("v2: a frame number past 32 bits: GNTST_bad_page", map_st(m3, h | GNTMAP_READONLY, 14, SELF) == GntSt::BadPage as i16);
    check("v2: a grant to another domain: GNTST_general_error", map_st(m3, h | GNTMAP_READONLY, 15, SELF) == GEN);
    check("v2: a ref past the table (256 per frame): GNTST_bad_gntref", map_st(m3, h | GNTMAP_READONLY, 256, SELF) == GntSt::BadGntref as i16);
    check("... none of them left a status", (11..16).all(|r| status2(st_va, r) == 0));
    let (r, a11) = map(m3, h | GNTMAP_READONLY, 11, SELF);
    check("v2: a read-only map: GTF_reading", r == 0 && a11.status == 0 && status2(st_va, 11) == GTF_READING && read64(m3) == 0x5555_6666_7777_8888);
    check("... unmapped: status clear", unmap(m3, 0, a11.handle) == 0 && status2(st_va, 11) == 0);
    hc::update_va_mapping(m3, old[2], 2);
    write64(d_rw + 8, 0);
    check("v2: a copy from a grant", copy(gref_ptr(11, SELF, 0), frame_ptr(f_rw, SELF, 8), 8, 1) == 0 && read64(d_rw + 8) == 0x5555_6666_7777_8888);
    check("v2: a copy from a sub-page grant: GNTST_general_error", copy(gref_ptr(12, SELF, 0), frame_ptr(f_rw, SELF, 8), 8, 1) == GEN);
    check("... the copy left no status", status2(st_va, 11) == 0);
    let mut s = Swap { a: 11, b: 20, status: 0x5A5A, _pad: 0 };
    op(GNTTABOP_SWAP_GRANT_REF, &mut s as *mut Swap as u64, 1);
    check("v2: a swap moves the whole entry", s.status == 0 && flags2(gt.va, 20) == GTF_PERMIT_ACCESS | GTF_READONLY && flags2(gt.va, 11) == 0);
    let (r, a20) = map(m3, h | GNTMAP_READONLY, 20, SELF);
    check("... the moved grant maps from its new ref", r == 0 && a20.status == 0 && status2(st_va, 20) == GTF_READING);
    let mut s = Swap { a: 10, b: 21, status: 0x5A5A, _pad: 0 };
    op(GNTTABOP_SWAP_GRANT_REF, &mut s as *mut Swap as u64, 1);
    check("v2: a swap of a ref in use: GNTST_eagain", s.status == GntSt::Eagain as i16);

    // Back to v1: refused while refs past the reserved ones are in use.
    let (r, v) = set_version(1);
    check("set_version 1 with refs 10 and 20 mapped: -EBUSY, still v2", r == Errno::EBUSY.to_ret() && v == 2);
    check("... and unmapped", unmap(m2, 0, a10.handle) == 0 && status2(st_va, 10) == 0);
    hc::update_va_mapping(m2, old[1], 2);
    check("... (ref 20 too)", unmap(m3, 0, a20.handle) == 0);
    hc::update_va_mapping(m3, old[2], 2);
    // Reserved ref 3 mapped, then its header cleared as a guest ending a grant still in use
    // would: the switch carries its in-use flags from the pins, not from the header.
    grant2(gt.va, 3, GTF_PERMIT_ACCESS | GTF_READONLY, me, f_ro);
    let (r, a3) = map(m3, h | GNTMAP_READONLY, 3, SELF);
    check("reserved ref 3 mapped read-only", r == 0 && a3.status == 0);
    grant2(gt.va, 3, GTF_INVALID, 0, 0);
    // XSA-255: the status frame is still mapped.
    let (r, v) = set_version(1);
    check("XSA-255: set_version 1 with the status frame mapped: -EBUSY, still v2", r == Errno::EBUSY.to_ret() && v == 2 && get_version() == 2);
    check("... the status frame still reads", status2(st_va, 1) == GTF_READING | GTF_WRITING);
    expect_ret("the status frame unmapped", hc::update_va_mapping(st_va, old[3], 2), 0);
    // Reserved entries v1 cannot hold.
    grant2(gt.va, 2, GTF_PERMIT_ACCESS, me, 1 << 32 | f_ro);
    check("a reserved v2 grant of a frame past 32 bits: -ERANGE", set_version(1) == (Errno::ERANGE.to_ret(), 2));
    grant2(gt.va, 2, GTF_TRANSITIVE, me, 0);
    check("a reserved transitive grant: -ERANGE", set_version(1) == (Errno::ERANGE.to_ret(), 2));
    grant2(gt.va, 2, GTF_PERMIT_ACCESS | GTF_READONLY, me, f_ro);
    check("set_version 1", set_version(1) == (0, 1) && get_version() == 1);
    check("... reserved ref 1 carried over mapped: flags with GTF_reading|GTF_writing", gt.flags(1) == GTF_PERMIT_ACCESS | GTF_READING | GTF_WRITING && read64(m1) == 0x1111_2222_3333_4444);
    check("... reserved ref 2 carried over as v1", gt.word(2) == (f_ro << 32 | (me as u64) << 16 | (GTF_PERMIT_ACCESS | GTF_READONLY) as u64));
    check("... ref 20 cleared", gt.word(20) == 0);
    check("... reserved ref 3: cleared but GTF_reading (still mapped)", gt.word(3) == GTF_READING as u64);
    check("... and it unmaps", unmap(m3, 0, a3.handle) == 0 && gt.word(3) == 0);
    hc::update_va_mapping(m3, old[2], 2);
    check("the freed status frame can no longer be mapped", hc::update_va_mapping(st_va, st << 12 | P | A, 2) < 0);
    check("v1 again: no status frames", status_frames(SELF, 1, list.as_mut_ptr() as u64) == (0, GEN));
    check("ref 1 unmaps in v1, its flags cleared", unmap(m1, 0, a1.handle) == 0 && gt.flags(1) == GTF_PERMIT_ACCESS);
    hc::update_va_mapping(m1, old[0], 2);

    // v2 again, with a table of 9 frames: 2 status frames. It ends holding a mapping of ref
    // 30 and the status frame mapped, for the teardown to release.
    check("set_version 2 again", set_version(2) == (0, 2));
    check("setup_table of 9 frames in v2", setup(SELF, 9, list.as_mut_ptr() as u64) == (0, 0));
    check("... 2 status frames", status_frames(SELF, 2, list.as_mut_ptr() as u64) == (0, 0) && list[0] != list[1] && status_frames(SELF, 3, list.as_mut_ptr() as u64) == (0, GEN));
    expect_ret("the first status frame mapped read-only", hc::update_va_mapping(st_va, list[0] << 12 | P | A, 2), 0);
    grant2(gt.va, 30, GTF_PERMIT_ACCESS, me, f_dst);
    let (r, a30) = map(m2, h, 30, SELF);
    check("a mapping left for the teardown", r == 0 && a30.status == 0 && status2(st_va, 30) == GTF_READING | GTF_WRITING);
}

/// The granter (d1): grants a page to dom0 through ref 8, tells dom0, and dies with it
/// mapped.
fn granter(si: &'static pv_runtime::StartInfo) -> ! {
    use pv_runtime::events as ev;
    let mem = GuestMem::new(si, pv_runtime::virt_base());
    let t = Tables::new(si);
    check("events up", events_up(si));
    ev::enable();
    let mut port = Err(0);
    for _ in 0..10_000 {
        port = ev::bind_interdomain(0, 1);
        if port.is_ok() {
            break;
        }
        hc::yield_now();
    }
    check("bound to dom0's port 1", port.is_ok());
    let port = port.unwrap_or(0);
    let gt = table_at(slot(&mem, 2));
    let page = slot(&mem, 20);
    write64(page, 0xD1D1_D1D1);
    gt.grant(8, GTF_PERMIT_ACCESS, 0, t.mfn_of_va(page));
    ev::send(port);
    // Wait for dom0 to map it (the entry shows it in use), then die with it mapped.
    let mut tries = 0;
    while gt.flags(8) & GTF_READING == 0 && tries < 1_000_000 {
        hc::yield_now();
        tries += 1;
    }
    check("dom0 has it mapped", gt.flags(8) & GTF_READING != 0);
    println!("granter: crashing with the page mapped by dom0");
    pv_runtime::hypercall::shutdown(guest_abi::sched::ShutdownReason::Crash)
}

/// The mapper (dom0): maps d1's grant, sees d1 die, still reads the page, unmaps.
fn mapper(si: &'static pv_runtime::StartInfo) {
    use pv_runtime::events as ev;
    let mem = GuestMem::new(si, pv_runtime::virt_base());
    check("events up", events_up(si));
    let p = ev::alloc_unbound(SELF, 1);
    check("alloc_unbound for d1 is port 1", p == Ok(1));
    let p = p.unwrap_or(1);
    let exc = ev::bind_virq(guest_abi::evtchn::VIRQ_DOM_EXC, 0).unwrap_or(0);
    check("VIRQ_DOM_EXC bound", exc != 0);
    ev::enable();
    ev::block_until(|| ev::count(p) != 0);
    let va = slot(&mem, 3);
    let (r, a) = map(va, GNTMAP_HOST_MAP | GNTMAP_READONLY, 8, 1);
    check("map d1's grant", r == 0 && a.status == 0);
    check("the page reads d1's data", read64(va) == 0xD1D1_D1D1);
    wait_domain_exit(exc);
    settle();
    check("d1 is dead: its page is still mapped and readable here", read64(va) == 0xD1D1_D1D1);
    check("a new map of the dead domain's grant: GNTST_bad_domain", map_st(slot(&mem, 4), GNTMAP_HOST_MAP | GNTMAP_READONLY, 8, 1) == GntSt::BadDomain as i16);
    check("a copy from it: GNTST_bad_domain", copy(gref_ptr(8, 1, 0), frame_ptr(mem.mfn(mem.region_end_pfn - 20), SELF, 0), 8, 1) == GntSt::BadDomain as i16);
    // Destroyed while its page is mapped here: it stays, dying, until the unmap.
    expect_ret("destroydomain of d1", destroy_domain(1), 0);
    check("d1 dying while its page is mapped here", domain_flags(1).is_some_and(|f| f & guest_abi::domctl::info::DYING != 0));
    check("its page still readable", read64(va) == 0xD1D1_D1D1);
    check("the unmap works", unmap(va, 0, a.handle) == 0);
    check("d1 gone after the last unmap", domain_flags(1).is_none());
    check("the page is gone from here", read_faults(va));
}

static STARTED: AtomicBool = AtomicBool::new(false);
static STOP: AtomicBool = AtomicBool::new(false);
static STOPPED: AtomicBool = AtomicBool::new(false);
static FLIPS: AtomicU64 = AtomicU64::new(0);
/// The grant table's address, the granted frame, this domain's id (for vCPU 1).
static RACE: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];
static mut AP_STACK: [u8; 16384] = [0; 16384];
static mut CTX: [u8; guest_abi::vcpu::ctx::SIZE] = [0; guest_abi::vcpu::ctx::SIZE];

/// vCPU 1 of `race`: rewrites entry 8 until told to stop.
extern "C" fn flipper() -> ! {
    STARTED.store(true, SeqCst);
    let gt = Table { va: RACE[0].load(SeqCst) };
    let (f, me) = (RACE[1].load(SeqCst), RACE[2].load(SeqCst) as u16);
    let patterns = [(GTF_PERMIT_ACCESS, me), (GTF_PERMIT_ACCESS | GTF_READONLY, me), (GTF_INVALID, me), (GTF_PERMIT_ACCESS, 7)];
    let v2 = RACE[3].load(SeqCst) != 0;
    let mut i = 0;
    while !STOP.load(SeqCst) {
        let (flags, dom) = patterns[i % patterns.len()];
        if v2 {
            grant2(gt.va, 8, flags, dom, f);
        } else {
            gt.grant(8, flags, dom, f);
        }
        i += 1;
        FLIPS.store(i as u64, SeqCst);
        // On one CPU the two vCPUs take turns: a yield every 1001 rewrites leaves vCPU 0 a
        // different entry each turn.
        if i % 1001 == 0 {
            hc::yield_now();
        }
    }
    STOPPED.store(true, SeqCst);
    loop {
        hc::yield_now();
    }
}

fn race_test(si: &'static pv_runtime::StartInfo, me: u16, v2: bool) {
    use guest_abi::vcpu::{VCPUOP_INITIALISE, VCPUOP_UP};
    let vb = pv_runtime::virt_base();
    let mem = GuestMem::new(si, vb);
    let t = Tables::new(si);
    let gt = table_at(slot(&mem, 2));
    let m1 = slot(&mem, 3);
    let page = slot(&mem, 20);
    let f = t.mfn_of_va(page);
    // A zeroed frame: a valid L1 once nothing maps it writable.
    // SAFETY: the slot is this domain's page, mapped writable.
    unsafe { core::ptr::write_bytes(page as *mut u8, 0, 4096) };
    let m1_old = t.entry(t.table(m1, 1), (m1 >> 12) & 511);
    // v2: the status frame mapped read-only at slot 6, where the in-use flags are.
    let st_va = slot(&mem, 6);
    let st_old = t.entry(t.table(st_va, 1), (st_va >> 12) & 511);
    let in_use = |r: u32| if v2 { status2(st_va, r) } else { gt.flags(r) & (GTF_READING | GTF_WRITING) };
    if v2 {
        check("set_version 2", set_version(2) == (0, 2));
        let mut st = [0u64];
        check("its status frame", status_frames(SELF, 1, st.as_mut_ptr() as u64) == (0, 0));
        expect_ret("mapped read-only", hc::update_va_mapping(st_va, st[0] << 12 | P | A, 2), 0);
        grant2(gt.va, 8, GTF_PERMIT_ACCESS, me, f);
    } else {
        gt.grant(8, GTF_PERMIT_ACCESS, me, f);
    }
    for (slot, v) in RACE.iter().zip([gt.va, f, me as u64, v2 as u64]) {
        slot.store(v, SeqCst);
    }
    // SAFETY: vCPU 1 is not running; the buffer is used only here.
    let c = unsafe { &mut *core::ptr::addr_of_mut!(CTX) };
    let stack_top = core::ptr::addr_of_mut!(AP_STACK) as u64 + 16384 - 8;
    vcpu_context(c, flipper as *const () as u64, stack_top, mem.mfn((si.pt_base - vb) / 4096));
    // SAFETY: the context is valid for the call; up takes no pointer.
    unsafe {
        expect_ret("initialise vCPU 1", pv_runtime::events::vcpu_op(VCPUOP_INITIALISE, 1, c.as_ptr() as u64), 0);
        expect_ret("up(1)", pv_runtime::events::vcpu_op(VCPUOP_UP, 1, 0), 0);
    }
    let mut tries = 0;
    while !STARTED.load(SeqCst) && tries < 100_000 {
        hc::yield_now();
        tries += 1;
    }
    check("vCPU 1 flips the entry", STARTED.load(SeqCst));
    let (mut mapped, mut refused, mut bad) = (0u32, 0u32, 0u32);
    for i in 0..3000u32 {
        let ro = i % 2 == 1;
        let flags = GNTMAP_HOST_MAP | if ro { GNTMAP_READONLY } else { 0 };
        let (r, m) = map(m1, flags, 8, SELF);
        if r != 0 {
            bad += 1;
            continue;
        }
        if m.status != 0 {
            refused += 1;
            continue;
        }
        mapped += 1;
        // It reads; a writable one takes a (zero) store; a read-only one refuses it.
        let wrote = probe!("mov qword ptr [{a}], 0"; a = in(reg) m1).is_none();
        if read_faults(m1) || wrote == ro || unmap(m1, 0, m.handle) != 0 {
            bad += 1;
        }
        if i % 64 == 0 {
            hc::yield_now();
        }
    }
    STOP.store(true, SeqCst);
    while !STOPPED.load(SeqCst) {
        hc::yield_now();
    }
    println!("race: {} maps, {} refused, {} entry rewrites meanwhile", mapped, refused, FLIPS.load(SeqCst));
    check("every map mapped what it said, or was refused; every unmap worked", bad == 0 && mapped > 0);
    // (v1's flags are the flipper's to clobber; v2's status words are the hypervisor's.)
    check("no in-use flag left by the refused maps", !v2 || in_use(8) == 0);
    if v2 {
        grant2(gt.va, 8, GTF_PERMIT_ACCESS, me, f);
    } else {
        gt.grant(8, GTF_PERMIT_ACCESS, me, f);
    }
    let (r, m) = map(m1, GNTMAP_HOST_MAP, 8, SELF);
    check("afterwards a map of the entry works", r == 0 && m.status == 0 && in_use(8) == GTF_READING | GTF_WRITING && unmap(m1, 0, m.handle) == 0);
    check("and leaves no in-use flag", in_use(8) == 0);
    if v2 {
        expect_ret("the status frame unmapped", hc::update_va_mapping(st_va, st_old, 2), 0);
        check("back to v1", set_version(1) == (0, 1));
    }
    expect_ret("the slot's own page back", hc::update_va_mapping(m1, m1_old, 2), 0);
    // No reference of the race is left on the frame: with its own mapping made read-only
    // it pins as an L1 (a leaked writable reference would refuse that) and unpins.
    expect_ret("the page mapped read-only", hc::update_va_mapping(page, f << 12 | P | A, 2), 0);
    expect_ret("it pins as an L1", hc::mmuext1(ext::PIN_L1_TABLE, f, 0), 0);
    expect_ret("and unpins", hc::mmuext1(ext::UNPIN_TABLE, f, 0), 0);
}

#[no_mangle]
fn guest_main(si: &'static pv_runtime::StartInfo) -> ! {
    let line = core::str::from_utf8(si.cmdline_bytes()).unwrap_or("").trim();
    let mut words = line.split_whitespace();
    let mode = words.next().unwrap_or("");
    start(mode);
    match mode {
        "self" => self_test(si, words.next().and_then(|w| w.parse().ok()).unwrap_or(0)),
        "race" => race_test(si, words.next().and_then(|w| w.parse().ok()).unwrap_or(0), words.next() == Some("2")),
        "v2" => v2_test(si, words.next().and_then(|w| w.parse().ok()).unwrap_or(0)),
        "granter" => granter(si),
        "mapper" => mapper(si),
        _ => check("a known mode", false),
    }
    finish(mode)
}
