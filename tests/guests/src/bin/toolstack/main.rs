//! dom0 uses the toolstack hypercalls directly (`domctl`, `sysctl`). Modes (the command
//! line):
//!
//! - `cycles N`: the interface checks (version, unknown commands, bad ids), then a domain
//!   created, limited, populated with memory by dom0, paused and unpaused, queried, its
//!   weight and cap changed and destroyed, then N create/populate/destroy cycles: the
//!   same id each time, and physinfo's free pages identical before and after.
//! - `bench`: prints `BENCH` figures for `cargo xtask bench`: createdomain + max_mem +
//!   populate + destroydomain of a 16 MiB domain (median of 5), and the destroy of a
//!   256 MiB domain (the hypervisor logs its longest stretch).
//! - `kill`: a boot-time domU (domain 1) runs; dom0 destroys it while it runs: it is gone,
//!   its frames back in the free pool, and its id is handed out by the next createdomain.
//! - `build`: dom0 builds domains itself, as a toolstack's domain builder does: creates
//!   and populates one, writes its page tables and a small kernel ([`mini`]) into its frames
//!   through foreign mappings (`update_va_mapping_otherdomain`, `mmu_update` with a
//!   foreign domain), pins its L4 (`mmuext_op` for it), fills its hypercall page
//!   (`hypercall_init`), gives it a vCPU context (`setvcpucontext`, read back with
//!   `getvcpucontext`) and unpauses it. The kernel prints a line (dom0 finds it with
//!   `readconsole`) and counts its timer ticks, which dom0 watches stop under
//!   `pausedomain` and resume after `unpausedomain`. Two spinning domains pinned to one
//!   CPU then share it as their credit weights and caps say. Everything is destroyed and
//!   physinfo shows every page back.
#![no_std]
#![no_main]

use guest_abi::domctl::*;
use guest_abi::errno::Errno::{self, *};
use guest_abi::hypercall as nr;
use pv_runtime::hypercall::hypercall5;
use test_guests::*;

fn raw(n: u64, a1: u64) -> i64 {
    // SAFETY: callers pass a pointer to a local buffer of the op's size.
    unsafe { hypercall5(n, a1, 0, 0, 0, 0) }
}

/// A `xen_domctl` for `cmd` on `dom` (and `sysctl`), as dom0 builds them.
use pv_runtime::ctl::{sysctl, Domctl as Op};

fn free_pages() -> u64 {
    let mut b = [0u8; SYSCTL_SIZE];
    let r = sysctl(sys::PHYSINFO, &mut b);
    check("physinfo", r == 0);
    let o = SYSCTL_U_OFFSET + physinfo::FREE_PAGES;
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}

/// A domain of rxen's ring-1 model (what this toolstack builds: rxen's own guests).
fn create(want: u16, vcpus: u32) -> (i64, u16) {
    let mut op = Op::new(CREATEDOMAIN, want)
        .u32(create::MAX_VCPUS, vcpus)
        .u32(create::MAX_EVTCHN_PORT, 1023)
        .u32(create::MAX_GRANT_FRAMES, u32::MAX)
        .u32(create::MAX_MAPTRACK_FRAMES, u32::MAX)
        .u32(create::FLAGS, create::CDF_RXEN_RING1);
    let r = op.call();
    (r, op.dom())
}

fn simple(cmd: u32, dom: u16) -> i64 {
    Op::new(cmd, dom).call()
}

fn destroy(dom: u16) -> i64 {
    simple(DESTROYDOMAIN, dom)
}

fn info_of(dom: u16) -> (i64, Op) {
    let mut op = Op::new(GETDOMAININFO, dom);
    let r = op.call();
    (r, op)
}

/// `populate_physmap` of `n` pages (at pfns 0..n) for `dom`; how many it got.
fn populate(dom: u16, n: usize, list: &mut [u64]) -> i64 {
    for (i, e) in list.iter_mut().enumerate().take(n) {
        *e = i as u64;
    }
    let mut r = [0u8; 32];
    r[..8].copy_from_slice(&(list.as_mut_ptr() as u64).to_le_bytes());
    r[8..16].copy_from_slice(&(n as u64).to_le_bytes());
    r[24..26].copy_from_slice(&dom.to_le_bytes());
    // SAFETY: the reservation and its extent list are local buffers.
    unsafe { pv_runtime::hypercall::memory_op(guest_abi::memory::XENMEM_POPULATE_PHYSMAP, r.as_mut_ptr() as u64) }
}

fn expect(what: &str, got: i64, want: Errno) {
    expect_err(what, got, want)
}

fn cycles(n: u32) {
    // The interface.
    let mut bad = Op::new(GETDOMAININFO, 0);
    bad.0[4..8].copy_from_slice(&0x18u32.to_le_bytes());
    expect("domctl with another interface version", bad.call(), EACCES);
    let mut sb = [0u8; SYSCTL_SIZE];
    sb[..4].copy_from_slice(&sys::PHYSINFO.to_le_bytes());
    expect("sysctl with another interface version", raw(nr::SYSCTL, sb.as_mut_ptr() as u64), EACCES);
    expect("unknown domctl", simple(99, 0), ENOSYS);
    expect("unknown sysctl", sysctl(99, &mut sb), ENOSYS);
    expect("domctl on no domain", simple(PAUSEDOMAIN, 77), ESRCH);
    expect("domctl on DOMID_SELF", simple(PAUSEDOMAIN, guest_abi::DOMID_SELF), ESRCH);
    expect("pause self", simple(PAUSEDOMAIN, 0), EINVAL);
    expect("destroy self", destroy(0), EINVAL);
    expect("domctl with a bad pointer", raw(nr::DOMCTL, 0xFFFF_8000_0000_0000), EFAULT);
    expect("createdomain with 0 vCPUs", create(0, 0).0, EINVAL);
    expect("createdomain with 33 vCPUs", create(0, 33).0, EINVAL);
    let mut hvm = Op::new(CREATEDOMAIN, 0).u32(create::MAX_VCPUS, 1).u32(create::FLAGS, create::CDF_HVM);
    expect("createdomain of an HVM guest", hvm.call(), EINVAL);
    expect_ret("sched_id", sysctl(sys::SCHED_ID, &mut sb), 0);
    check("credit scheduler", u32::from_le_bytes(sb[8..12].try_into().unwrap()) == sched::CREDIT);

    let free0 = free_pages();
    println!("free pages before: {}", free0);
    // One domain, step by step.
    let (r, d) = create(0, 2);
    expect_ret("createdomain", r, 0);
    check("the lowest free id", d == 1);
    expect("createdomain of a taken id", create(d, 1).0, EEXIST);
    let (r, i) = info_of(d);
    expect_ret("getdomaininfo", r, 0);
    let flags = i.get32(info::FLAGS);
    check("new domain paused, not dying, not shut down", flags & info::PAUSED != 0 && flags & (info::DYING | info::SHUTDOWN) == 0);
    check("no shutdown code", flags >> 16 == 0xFFFF);
    check("no pages yet, max_vcpu_id 1, no vCPU online", i.get64(info::TOT_PAGES) == 0 && i.get32(info::MAX_VCPU_ID) == 1 && i.get32(info::NR_ONLINE_VCPUS) == 0);
    let (r, i2) = info_of(d + 1);
    check("getdomaininfo past the last domain: ESRCH", r == ESRCH.to_ret() && i2.dom() == d + 1);
    let (r, i0) = info_of(0);
    check("getdomaininfo of dom0: running", r == 0 && i0.get32(info::FLAGS) & info::RUNNING != 0 && i0.get64(info::TOT_PAGES) > 0);
    expect_ret("max_vcpus as created", Op::new(MAX_VCPUS, d).u32(0, 2).call(), 0);
    expect("max_vcpus otherwise", Op::new(MAX_VCPUS, d).u32(0, 3).call(), EINVAL);
    let mut list = [0u64; 512];
    expect_ret("populate without max_mem", populate(d, 16, &mut list), 0);
    expect_ret("max_mem 1 MiB", Op::new(MAX_MEM, d).u64(0, 1024).call(), 0);
    expect_ret("populate 300 pages under a 256-page limit", populate(d, 300, &mut list), 256);
    check("the frames are the new domain's", list[..256].iter().all(|&m| Tables::m2p(m) < 256));
    let (_, i) = info_of(d);
    check("tot_pages 256, max_pages 256", i.get64(info::TOT_PAGES) == 256 && i.get64(info::MAX_PAGES) == 256);
    expect_ret("unpause", simple(UNPAUSEDOMAIN, d), 0);
    expect("unpause an unpaused domain", simple(UNPAUSEDOMAIN, d), EINVAL);
    check("unpaused", info_of(d).1.get32(info::FLAGS) & info::PAUSED == 0);
    expect_ret("pause", simple(PAUSEDOMAIN, d), 0);
    expect_ret("pause again (nested)", simple(PAUSEDOMAIN, d), 0);
    expect_ret("unpause once", simple(UNPAUSEDOMAIN, d), 0);
    check("still paused", info_of(d).1.get32(info::FLAGS) & info::PAUSED != 0);
    let mut s = Op::new(SCHEDULER_OP, d).u32(sched::SCHED_ID, sched::CREDIT).u32(sched::CMD, sched::PUTINFO);
    s.0[U_OFFSET + sched::WEIGHT..U_OFFSET + sched::WEIGHT + 2].copy_from_slice(&512u16.to_le_bytes());
    s.0[U_OFFSET + sched::CAP..U_OFFSET + sched::CAP + 2].copy_from_slice(&50u16.to_le_bytes());
    expect_ret("scheduler_op putinfo weight 512 cap 50", s.call(), 0);
    let mut g = Op::new(SCHEDULER_OP, d).u32(sched::SCHED_ID, sched::CREDIT).u32(sched::CMD, sched::GETINFO);
    expect_ret("scheduler_op getinfo", g.call(), 0);
    check("weight 512, cap 50", g.get16(sched::WEIGHT) == 512 && g.get16(sched::CAP) == 50);
    let mut g2 = Op::new(SCHEDULER_OP, d).u32(sched::SCHED_ID, 6).u32(sched::CMD, sched::GETINFO);
    expect("scheduler_op for credit2", g2.call(), EINVAL);
    let mut h = Op::new(SETDOMAINHANDLE, d);
    h.0[U_OFFSET..U_OFFSET + 16].copy_from_slice(b"0123456789abcdef");
    expect_ret("setdomainhandle", h.call(), 0);
    check("the handle reads back", &info_of(d).1 .0[U_OFFSET + info::HANDLE..U_OFFSET + info::HANDLE + 16] == b"0123456789abcdef");
    // vCPUs: their state, and hard affinity.
    let mut vi = Op::new(GETVCPUINFO, d).u32(vcpuinfo::VCPU, 1);
    expect_ret("getvcpuinfo", vi.call(), 0);
    check("vCPU 1 offline, not running", vi.0[U_OFFSET + vcpuinfo::ONLINE] == 0 && vi.0[U_OFFSET + vcpuinfo::RUNNING] == 0);
    expect("getvcpuinfo of vCPU 2 (max_vcpus 2)", Op::new(GETVCPUINFO, d).u32(vcpuinfo::VCPU, 2).call(), EINVAL);
    let mut map = [1u8, 0, 0, 0, 0, 0, 0, 0];
    let aff = |cmd: u32, flags: u32, map: &mut [u8; 8], bits: u32| {
        Op::new(cmd, d).u32(affinity::VCPU, 0).u32(affinity::FLAGS, flags).u64(affinity::HARD, map.as_mut_ptr() as u64).u32(affinity::HARD + 8, bits).call()
    };
    expect_ret("setvcpuaffinity to CPU 0", aff(SETVCPUAFFINITY, affinity::HARD_FLAG, &mut map, 8), 0);
    map = [0xFF; 8];
    expect_ret("getvcpuaffinity", aff(GETVCPUAFFINITY, affinity::HARD_FLAG, &mut map, 64), 0);
    check("CPU 0 alone, the rest zeroed", map == [1, 0, 0, 0, 0, 0, 0, 0]);
    map = [0; 8];
    expect("an empty affinity", aff(SETVCPUAFFINITY, affinity::HARD_FLAG, &mut map, 64), EINVAL);
    expect("no flags", aff(SETVCPUAFFINITY, 0, &mut map, 64), EINVAL);
    expect("no bitmap", Op::new(SETVCPUAFFINITY, d).u32(affinity::FLAGS, affinity::HARD_FLAG).call(), EINVAL);
    // I/O permissions (recorded).
    let mut io = Op::new(IOPORT_PERMISSION, d).u32(0, 0x3F8).u32(4, 8);
    io.0[U_OFFSET + perm::IOPORT_ALLOW] = 1;
    expect_ret("ioport_permission 0x3f8-0x3ff", io.call(), 0);
    expect("ioport_permission past 0xffff", Op::new(IOPORT_PERMISSION, d).u32(0, 0xFFF8).u32(4, 9).call(), EINVAL);
    expect("ioport_permission of none", Op::new(IOPORT_PERMISSION, d).u32(0, 0x60).u32(4, 0).call(), EINVAL);
    expect("iomem_permission wrapping", Op::new(IOMEM_PERMISSION, d).u64(0, u64::MAX).u64(8, 2).call(), EINVAL);
    expect_ret("iomem_permission", Op::new(IOMEM_PERMISSION, d).u64(0, 0xFEE00).u64(8, 1).call(), 0);
    expect("irq_permission of pirq 256", Op::new(IRQ_PERMISSION, d).u32(0, 256).call(), EINVAL);
    expect_ret("irq_permission of pirq 4", Op::new(IRQ_PERMISSION, d).u32(0, 4).call(), 0);
    let mut list_b = [0u8; SYSCTL_SIZE];
    let mut recs = [0u8; 4 * info::SIZE];
    let o = SYSCTL_U_OFFSET;
    list_b[o + infolist::MAX_DOMAINS..o + infolist::MAX_DOMAINS + 4].copy_from_slice(&4u32.to_le_bytes());
    list_b[o + infolist::BUFFER..o + infolist::BUFFER + 8].copy_from_slice(&(recs.as_mut_ptr() as u64).to_le_bytes());
    expect_ret("getdomaininfolist", sysctl(sys::GETDOMAININFOLIST, &mut list_b), 0);
    let num = u32::from_le_bytes(list_b[o + infolist::NUM_DOMAINS..o + infolist::NUM_DOMAINS + 4].try_into().unwrap());
    check("two domains listed: 0 and the new one", num == 2 && recs[0] == 0 && recs[info::SIZE] as u16 == d);
    expect_ret("destroydomain", destroy(d), 0);
    let (r, _) = info_of(d);
    expect("gone after destroy", r, ESRCH);
    let free1 = free_pages();
    expect_ret("every page back", free1 as i64, free0 as i64);

    // Cycles.
    let mut ok = true;
    for k in 0..n {
        let (r, id) = create(0, 1);
        let m = Op::new(MAX_MEM, id).u64(0, 256).call();
        let p = populate(id, 64, &mut list);
        let u = simple(UNPAUSEDOMAIN, id);
        let x = destroy(id);
        if r != 0 || id != 1 || m != 0 || p != 64 || u != 0 || x != 0 {
            println!("cycle {}: create {} id {} max_mem {} populate {} unpause {} destroy {}", k, r, id, m, p, u, x);
            ok = false;
            break;
        }
    }
    check("every cycle: id 1 again, 64 pages, destroyed", ok);
    let free2 = free_pages();
    println!("{} create/destroy cycles: free pages {} before, {} after", n, free0, free2);
    expect_ret("no frame leaked", free2 as i64, free0 as i64);
}

fn kill() {
    let (r, i) = info_of(1);
    check("domain 1 runs", r == 0 && i.dom() == 1 && i.get64(info::TOT_PAGES) > 0);
    let pages = i.get64(info::TOT_PAGES);
    let free0 = free_pages();
    // Let it run a while first.
    for _ in 0..20 {
        pv_runtime::hypercall::yield_now();
    }
    expect_ret("destroy the running domU", destroy(1), 0);
    expect("gone", info_of(1).0, ESRCH);
    let free1 = free_pages();
    println!("domU of {} pages destroyed: free pages {} -> {}", pages, free0, free1);
    check("its pages (and its shared_info and tables) back", free1 >= free0 + pages);
    let (r, id) = create(0, 1);
    check("its id is handed out again", r == 0 && id == 1);
    expect_ret("and destroyed", destroy(id), 0);
}

/// Extent lists of the benchmarks (one 16 MiB batch).
static mut LIST: [u64; 4096] = [0; 4096];

fn bench() {
    // SAFETY: dom0 runs this on one vCPU; nothing else uses the list.
    let list = unsafe { &mut *core::ptr::addr_of_mut!(LIST) };
    let mut v = [0u64; 5];
    for t in v.iter_mut() {
        let t0 = rdtsc();
        let (r, id) = create(0, 1);
        let m = Op::new(MAX_MEM, id).u64(0, 16 << 10).call();
        let p = populate(id, 4096, list);
        let x = destroy(id);
        *t = rdtsc() - t0;
        check("16 MiB domain created, populated, destroyed", r == 0 && m == 0 && p == 4096 && x == 0);
    }
    v.sort_unstable();
    println!("BENCH ts_create_destroy_16m_tsc={}", v[2]);
    let (r, id) = create(0, 1);
    let m = Op::new(MAX_MEM, id).u64(0, 256 << 10).call();
    let mut got = 0;
    for _ in 0..16 {
        got += populate(id, 4096, list);
    }
    check("256 MiB domain populated", r == 0 && m == 0 && got == 65536);
    let t0 = rdtsc();
    expect_ret("256 MiB domain destroyed", destroy(id), 0);
    println!("BENCH ts_destroy_256m_tsc={}", rdtsc() - t0);
}

/// `big N`: an N MiB domain created, populated and destroyed (`cargo xtask bench --only
/// destroy-4g`: the teardown's longest stretch for a large domain).
fn big(mib: u64) {
    // SAFETY: dom0 runs this on one vCPU; nothing else uses the list.
    let list = unsafe { &mut *core::ptr::addr_of_mut!(LIST) };
    let pages = mib << 8;
    let (r, id) = create(0, 1);
    let m = Op::new(MAX_MEM, id).u64(0, mib << 10).call();
    let mut got = 0;
    while got < pages {
        let n = populate(id, 4096.min((pages - got) as usize), list);
        if n <= 0 {
            break;
        }
        got += n as u64;
    }
    check("the domain populated", r == 0 && m == 0 && got == pages);
    println!("{} MiB domain populated", mib);
    let t0 = rdtsc();
    expect_ret("the domain destroyed", destroy(id), 0);
    println!("BENCH ts_destroy_big_tsc={}", rdtsc() - t0);
}

#[no_mangle]
fn guest_main(si: &'static pv_runtime::StartInfo) -> ! {
    let cmd = core::str::from_utf8(si.cmdline_bytes()).unwrap_or("").trim();
    start("toolstack");
    match cmd.split_once(' ') {
        Some(("cycles", n)) => cycles(n.parse().unwrap_or(10)),
        _ if cmd == "kill" => kill(),
        _ if cmd == "bench" => bench(),
        Some(("big", n)) => big(n.parse().unwrap_or(64)),
        _ if cmd == "build" => build::run(si),
        _ => check("a known mode", false),
    }
    finish("toolstack")
}

mod build;
