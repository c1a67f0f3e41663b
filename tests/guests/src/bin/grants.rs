//! `grant_table_op` set-up and queries (v1), and their hostile uses: the table grows on
//! `setup_table` up to its limit and never shrinks; its frames are the domain's, mappable
//! writable and never usable as page tables; bad counts, pointers, domains, versions and
//! commands get Xen's answers.
#![no_std]
#![no_main]

use guest_abi::errno::Errno;
use guest_abi::grant::*;
use guest_abi::mm::ext;
use pv_runtime::mm::{GuestMem, A, D, P, RW};
use pv_runtime::hypercall as hc;
use test_guests::grant::{op, Setup};
use test_guests::*;

#[repr(C)]
#[derive(Default)]
struct Query {
    dom: u16,
    _pad: u16,
    nr_frames: u32,
    max_nr_frames: u32,
    status: i16,
    _pad2: u16,
}

fn setup(dom: u16, n: u32, list: u64) -> (i64, i16) {
    test_guests::grant::setup(dom, n, list)
}

fn query(dom: u16) -> (i64, Query) {
    let mut q = Query { dom, status: 0x5A5A, ..Default::default() };
    let r = op(GNTTABOP_QUERY_SIZE, &mut q as *mut Query as u64, 1);
    (r, q)
}

#[no_mangle]
fn guest_main(si: &'static pv_runtime::StartInfo) -> ! {
    start("grants");
    let me = guest_abi::DOMID_SELF;
    let (r, q) = query(me);
    expect_ret("query_size", r, 0);
    check("no grant frames before set-up", q.status == 0 && q.nr_frames == 0 && q.max_nr_frames == DEFAULT_MAX_GRANT_FRAMES);

    let mut frames = [0u64; 4];
    let (r, s) = setup(me, 2, frames.as_mut_ptr() as u64);
    check("setup_table of 2 frames", r == 0 && s == GntSt::Okay as i16);
    check("two distinct frames", frames[0] != 0 && frames[1] != 0 && frames[0] != frames[1]);
    let (_, q) = query(me);
    check("query_size counts them", q.nr_frames == 2);
    let first = frames[0];
    let (r, s) = setup(me, 1, frames.as_mut_ptr() as u64);
    check("the table never shrinks; the same first frame", r == 0 && s == 0 && frames[0] == first && query(me).1.nr_frames == 2);

    // Hostile set-ups: each refused in `status`, the call itself returning 0.
    let (r, s) = setup(me, DEFAULT_MAX_GRANT_FRAMES + 1, frames.as_mut_ptr() as u64);
    check("more frames than the limit: GNTST_general_error", r == 0 && s == GntSt::GeneralError as i16);
    let (r, s) = setup(me, 2, 0xFFFF_8300_0000_0000);
    check("a frame list in hypervisor memory: GNTST_bad_virt_addr", r == 0 && s == GntSt::BadVirtAddr as i16);
    let (r, s) = setup(me, 2, 0x7FFF_0000_0000);
    check("an unmapped frame list: GNTST_bad_virt_addr", r == 0 && s == GntSt::BadVirtAddr as i16);
    let (r, s) = setup(me, 2, frames.as_mut_ptr() as u64 | 1 << 63);
    check("a non-canonical frame list: GNTST_bad_virt_addr", r == 0 && s == GntSt::BadVirtAddr as i16);
    let (r, s) = setup(0x7FEE, 1, frames.as_mut_ptr() as u64);
    check("no such domain: GNTST_bad_domain", r == 0 && s == GntSt::BadDomain as i16);
    let (_, q) = query(0x7FEE);
    check("query_size of no such domain: GNTST_bad_domain", q.status == GntSt::BadDomain as i16);
    // Malformed calls.
    let mut s = Setup { dom: me, nr_frames: 1, frame_list: frames.as_mut_ptr() as u64, ..Default::default() };
    expect_err("setup_table with a count of 2", op(GNTTABOP_SETUP_TABLE, &mut s as *mut Setup as u64, 2), Errno::EINVAL);
    expect_err("setup_table with a count of 0", op(GNTTABOP_SETUP_TABLE, &mut s as *mut Setup as u64, 0), Errno::EINVAL);
    expect_err("setup_table from hypervisor memory", op(GNTTABOP_SETUP_TABLE, 0xFFFF_8300_0000_0000, 1), Errno::EFAULT);
    expect_err("query_size from an unmapped address", op(GNTTABOP_QUERY_SIZE, 0x7FFF_0000_0000, 1), Errno::EFAULT);

    // Versions (grant_hostile's `v2` mode tests v2 itself).
    let mut v = [0u32; 2];
    expect_ret("get_version", op(GNTTABOP_GET_VERSION, v.as_mut_ptr() as u64, 1), 0);
    check("version 1", v[1] == 1);
    let mut sv = [1u32];
    expect_ret("set_version 1", op(GNTTABOP_SET_VERSION, sv.as_mut_ptr() as u64, 1), 0);
    sv[0] = 2;
    expect_ret("set_version 2", op(GNTTABOP_SET_VERSION, sv.as_mut_ptr() as u64, 1), 0);
    check("version 2 written back", sv[0] == 2);
    sv[0] = 7;
    expect_err("set_version 7", op(GNTTABOP_SET_VERSION, sv.as_mut_ptr() as u64, 1), Errno::EINVAL);
    check("the version in force written back", sv[0] == 2);
    sv[0] = 1;
    expect_ret("set_version 1 again", op(GNTTABOP_SET_VERSION, sv.as_mut_ptr() as u64, 1), 0);
    expect_ret("get_version", op(GNTTABOP_GET_VERSION, v.as_mut_ptr() as u64, 1), 0);
    check("version 1 again", v[1] == 1);
    expect_err("an unknown command", op(99, frames.as_mut_ptr() as u64, 1), Errno::ENOSYS);

    // The frames are the domain's: mappable writable, and never a page table.
    let vb = pv_runtime::virt_base();
    let mem = GuestMem::new(si, vb);
    let va = vb + (mem.region_end_pfn - 2) * 4096;
    let old = mem.mfn(mem.region_end_pfn - 2);
    expect_ret("map a grant frame writable", hc::update_va_mapping(va, first << 12 | P | RW | A | D, 2), 0);
    // SAFETY: `va` now maps the grant frame, a page of this domain's.
    unsafe {
        check("a fresh grant frame is zeroed", (va as *const u64).read_volatile() == 0);
        (va as *mut u64).write_volatile(u64::from(GTF_PERMIT_ACCESS) | 1 << 16 | 0x1234 << 32);
        check("entries written through the mapping stay", (va as *const u64).read_volatile() >> 32 == 0x1234);
        (va as *mut u64).write_volatile(0);
    }
    expect_ret("unmap it", hc::update_va_mapping(va, old << 12 | P | RW | A | D, 2), 0);
    expect_err("a grant frame pinned as an L1", hc::mmuext1(ext::PIN_L1_TABLE, frames[1], 0), Errno::EINVAL);
    finish("grants")
}
