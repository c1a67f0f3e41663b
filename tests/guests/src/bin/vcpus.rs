//! Several vCPUs in one domain (booted as dom0 with `dom0_max_vcpus=2`): VCPUOP_initialise
//! with hostile contexts, up/down/is_up, per-vCPU event delivery and wake-up,
//! `register_vcpu_info`, the TLB shootdown (vCPU 0 remaps a page vCPU 1 keeps reading, then
//! TLB_FLUSH_ALL: vCPU 1 must see the new page at once), and the last vCPU going down powering
//! the domain off.
//!
//! With the command line `crash` (a domU with `vcpus=2`): brings vCPU 1 up spinning, then
//! crashes the domain; the hypervisor must take vCPU 1 off its CPU too.
#![no_std]
#![no_main]

use guest_abi::vcpu::{ctx, regs};
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::SeqCst};
use guest_abi::errno::Errno;
use pv_runtime::events::vcpu_op;
use pv_runtime::hypercall::{self as hc, MmuUpdate};
use pv_runtime::mm::{GuestMem, A, D, P, RW};
use test_guests::*;

const INITIALISE: u64 = 0;
const UP: u64 = 1;
const DOWN: u64 = 2;
const IS_UP: u64 = 3;
const RUNSTATE: u64 = 4;
const SINGLESHOT: u64 = 8;
const REGISTER_VCPU_INFO: u64 = 10;
const TLB_FLUSH_ALL: u32 = 10;
const CTX_SIZE: usize = ctx::SIZE;

/// What vCPU 1 does (set by vCPU 0).
static CMD: AtomicU32 = AtomicU32::new(SPIN);
const SPIN: u32 = 0;
const READ_X: u32 = 1;
const BLOCK: u32 = 2;
const DOWN_SELF: u32 = 3;
/// `tlbclock`: keep X's writable translation warm; once HOOK_MADDR's entry is present, store
/// ATTACK_PTE into X through it.
const ATTACK: u32 = 4;
static HOOK_VA: AtomicU64 = AtomicU64::new(0);
static ATTACKED: AtomicBool = AtomicBool::new(false);
static LANDED: AtomicU64 = AtomicU64::new(0);
/// A PTE naming a hypervisor frame (its image is at 1 MiB).
const ATTACK_PTE: u64 = 0x100 << 12 | P | A;
static STARTED: AtomicBool = AtomicBool::new(false);
static COUNTER: AtomicU64 = AtomicU64::new(0);
static X_VA: AtomicU64 = AtomicU64::new(0);
static READS: AtomicU64 = AtomicU64::new(0);
static FLUSHED: AtomicBool = AtomicBool::new(false);
static AFTER: AtomicU64 = AtomicU64::new(0);
static DONE: AtomicBool = AtomicBool::new(false);
static WOKE: AtomicU32 = AtomicU32::new(0);
static SELF_DOWN_RET: AtomicU64 = AtomicU64::new(1);
static SHARED_VA: AtomicU64 = AtomicU64::new(0);

static mut AP_STACK: [u8; 16384] = [0; 16384];
static mut CTX: [u8; CTX_SIZE] = [0; CTX_SIZE];

fn vi_byte(vcpu: u64, off: u64) -> &'static core::sync::atomic::AtomicU8 {
    // SAFETY: shared_info is mapped at SHARED_VA for the guest's life; the offset is in it.
    unsafe { core::sync::atomic::AtomicU8::from_ptr((SHARED_VA.load(SeqCst) + 64 * vcpu + off) as *mut u8) }
}

fn vi_sel(base: u64) -> &'static AtomicU64 {
    // SAFETY: as for `vi_byte`: a vcpu_info's pending_sel word, 8-aligned.
    unsafe { AtomicU64::from_ptr((base + 8) as *mut u64) }
}

/// vCPU 1's code: started by VCPUOP_up with the stack from the context.
extern "C" fn ap_main() -> ! {
    STARTED.store(true, SeqCst);
    loop {
        match CMD.load(SeqCst) {
            READ_X => {
                let flushed = FLUSHED.load(SeqCst);
                // SAFETY: X is a mapped page of ours (vCPU 0 keeps a mapping there).
                let v = unsafe { (X_VA.load(SeqCst) as *const u64).read_volatile() };
                READS.fetch_add(1, SeqCst);
                if flushed {
                    AFTER.store(v, SeqCst);
                    DONE.store(true, SeqCst);
                    CMD.store(SPIN, SeqCst);
                }
            }
            BLOCK => {
                vi_byte(1, 0).store(0, SeqCst);
                vi_sel(SHARED_VA.load(SeqCst) + 64).store(0, SeqCst);
                CMD.store(SPIN, SeqCst);
                pv_runtime::events::block();
                WOKE.fetch_add(1, SeqCst);
            }
            ATTACK => {
                let x = X_VA.load(SeqCst);
                // SAFETY: the hook entry is in a bootstrap L2, mapped read-only.
                let hooked = unsafe { (HOOK_VA.load(SeqCst) as *const u64).read_volatile() } & P != 0;
                if !hooked {
                    // Keep the writable translation in this CPU's TLB.
                    let _ = pv_runtime::probe!("mov qword ptr [{a}], 0"; a = in(reg) x + 8 * 511);
                    continue;
                }
                // X is a validated L1 now: no write may reach it any more.
                for i in 0..8u64 {
                    let f = pv_runtime::probe!("mov qword ptr [{a}], {v}"; a = in(reg) x + 8 * i, v = in(reg) ATTACK_PTE);
                    if f.is_none() {
                        LANDED.fetch_add(1, SeqCst);
                    }
                }
                CMD.store(SPIN, SeqCst);
                ATTACKED.store(true, SeqCst);
            }
            DOWN_SELF => {
                CMD.store(SPIN, SeqCst);
                // SAFETY: takes no pointer.
                let r = unsafe { vcpu_op(DOWN, 1, 0) };
                SELF_DOWN_RET.store(r as u64, SeqCst);
            }
            _ => {
                COUNTER.fetch_add(1, SeqCst);
            }
        }
    }
}

fn op(cmd: u64, vcpu: u64, arg: u64) -> i64 {
    // SAFETY: every caller passes a pointer to a buffer of the size `cmd` reads or writes
    // (or a deliberately bad one, which the hypervisor must refuse with -EFAULT).
    unsafe { vcpu_op(cmd, vcpu, arg) }
}

fn runstate(vcpu: u64) -> i32 {
    let mut b = [0u64; 6];
    let r = op(RUNSTATE, vcpu, b.as_mut_ptr() as u64);
    if r != 0 {
        return -1;
    }
    b[0] as u32 as i32
}

/// Waits (yielding) until `f` holds; false after about 5 s of system time.
fn wait(f: impl Fn() -> bool) -> bool {
    let end = pv_runtime::events::system_time() + 5_000_000_000;
    while !f() {
        if pv_runtime::events::system_time() > end {
            return false;
        }
        hc::yield_now();
    }
    true
}

fn ctx() -> &'static mut [u8; CTX_SIZE] {
    // SAFETY: only vCPU 0 touches the context buffer, one call at a time.
    unsafe { &mut *core::ptr::addr_of_mut!(CTX) }
}

fn put(c: &mut [u8], off: usize, v: u64) {
    c[off..off + 8].copy_from_slice(&v.to_le_bytes());
}

/// A good context for vCPU 1 on root `l4_mfn`.
fn good_ctx(l4_mfn: u64) {
    let stack_top = core::ptr::addr_of_mut!(AP_STACK) as u64 + 16384 - 8;
    vcpu_context(ctx(), ap_main as *const () as u64, stack_top, l4_mfn);
}

fn init_with(what: &str, l4: u64, edit: impl FnOnce(&mut [u8]), want: Errno) {
    good_ctx(l4);
    edit(ctx());
    expect_err(what, op(INITIALISE, 1, ctx().as_ptr() as u64), want);
}

#[no_mangle]
fn guest_main(si: &'static pv_runtime::StartInfo) -> ! {
    start("vcpus");
    let vb = pv_runtime::virt_base();
    let mem = GuestMem::new(si, vb);
    let l4 = mem.mfn((si.pt_base - vb) / 4096);
    let slack = |n: u64| (vb + (mem.region_end_pfn - n) * 4096, mem.mfn(mem.region_end_pfn - n));
    if core::str::from_utf8(si.cmdline_bytes()).unwrap_or("").trim() == "crash" {
        settle(); // dom0 binds VIRQ_DOM_EXC first
        good_ctx(l4);
        expect_ret("initialise vCPU 1", op(INITIALISE, 1, ctx().as_ptr() as u64), 0);
        expect_ret("up(1)", op(UP, 1, 0), 0);
        let c0 = COUNTER.load(SeqCst);
        check("vCPU 1 spins", wait(|| COUNTER.load(SeqCst) > c0 + 1000));
        // On a CPU right now (not waiting in a queue, e.g. behind dom0 for a moment): the
        // crash then finds it running.
        check("vCPU 1 on a CPU", wait(|| runstate(1) == guest_abi::vcpu::RUNSTATE_RUNNING as i32));
        println!("vcpus: crashing with vCPU 1 running");
        hc::shutdown(guest_abi::sched::ShutdownReason::Crash)
    }
    if core::str::from_utf8(si.cmdline_bytes()).unwrap_or("").trim() == "tlbclock" {
        tlb_clock(si, l4, &slack);
    }
    let (shared_va, _) = slack(1);
    check("shared_info mapped", pv_runtime::mm::map_shared_info(si, shared_va).is_ok());
    SHARED_VA.store(shared_va, SeqCst);

    // Which vCPUs exist.
    expect_ret("is_up(0)", op(IS_UP, 0, 0), 1);
    expect_ret("is_up(1) before up", op(IS_UP, 1, 0), 0);
    expect_err("is_up(2): no such vCPU", op(IS_UP, 2, 0), Errno::ENOENT);
    expect_err("is_up(2^40)", op(IS_UP, 1 << 40, 0), Errno::ENOENT);
    expect_ret("vCPU 1 offline", runstate(1) as i64, 3);
    expect_err("up(1) before initialise", op(UP, 1, 0), Errno::EINVAL);
    expect_err("bind_ipi to vCPU 2", pv_runtime::events::bind_ipi(2).err().unwrap_or(0), Errno::ENOENT);
    expect_err("bind_virq TIMER on vCPU 9", pv_runtime::events::bind_virq(0, 9).err().unwrap_or(0), Errno::ENOENT);
    let t = [0u64; 2];
    expect_err("singleshot timer of another vCPU", op(SINGLESHOT, 1, t.as_ptr() as u64), Errno::EINVAL);

    // Hostile contexts: each refused, nothing kept.
    expect_err("initialise: context unmapped", op(INITIALISE, 1, 0xdead_0000_0000), Errno::EFAULT);
    expect_err("initialise: context straddles the hypervisor", op(INITIALISE, 1, 0xFFFF_8000_0000_0000 - 100), Errno::EFAULT);
    expect_err("initialise: no vCPU 5", op(INITIALISE, 5, ctx().as_ptr() as u64), Errno::ENOENT);
    init_with("initialise: non-canonical rip", l4, |c| put(c, ctx::USER_REGS + regs::RIP, 0x0000_8000_0000_0000), Errno::EINVAL);
    init_with("initialise: hypervisor CS", l4, |c| put(c, ctx::USER_REGS + regs::CS, 0xE008), Errno::EINVAL);
    // The other mode's kernel CS with this mode's kernel SS (the user CS in the ring-1
    // model; the ring-1 kernel CS in the Xen pv64 mode).
    let other_cs = if pv_runtime::PV64 { guest_abi::selectors::FLAT_KERNEL_CS } else { 0xE033 };
    init_with("initialise: the other mode's kernel CS", l4, |c| put(c, ctx::USER_REGS + regs::CS, other_cs as u64), Errno::EINVAL);
    init_with("initialise: root is a data page", l4, |c| put(c, ctx::CR3, slack(4).1 << 12), Errno::EINVAL);
    init_with("initialise: root not ours", l4, |c| put(c, ctx::CR3, 0x1000), Errno::EINVAL);
    // A user root of its own (docs/abi-deviations.md: in both modes, a context's is not taken).
    init_with("initialise: user root differs", l4, |c| put(c, ctx::USER_CR3, slack(4).1 << 12), Errno::EOPNOTSUPP);
    init_with("initialise: breakpoint enabled in DR7", l4, |c| put(c, ctx::DEBUGREG + 7 * 8, 1), Errno::EINVAL);
    init_with(
        "initialise: MXCSR reserved bits",
        l4,
        |c| {
            put(c, 512, 1);
            c[24..28].copy_from_slice(&0xFFFF_FFFFu32.to_le_bytes());
        },
        Errno::EINVAL,
    );
    init_with("initialise: 8000 GDT entries", l4, |c| put(c, ctx::GDT_ENTS, 8000), Errno::EINVAL);
    init_with("initialise: GDT frame is a page table", l4, |c| {
        put(c, ctx::GDT_ENTS, 16);
        put(c, ctx::GDT_FRAMES, l4);
    }, Errno::EINVAL);
    init_with("initialise: LDT base unaligned", l4, |c| {
        put(c, ctx::LDT_BASE, 0x1008);
        put(c, ctx::LDT_ENTS, 4);
    }, Errno::EINVAL);
    init_with("initialise: non-canonical trap handler", l4, |c| put(c, 720 + 16 * 14 + 8, 0x0000_9000_0000_0000), Errno::EINVAL);
    init_with("initialise: event callback in the hypervisor", l4, |c| put(c, ctx::EVENT_CALLBACK, 0xFFFF_8300_0000_0000), Errno::EINVAL);
    init_with("initialise: non-canonical FS base", l4, |c| put(c, ctx::FS_BASE, 0x0001_0000_0000_0000), Errno::EINVAL);
    expect_ret("vCPU 1 still not up", op(IS_UP, 1, 0), 0);

    // The real thing.
    good_ctx(l4);
    expect_ret("initialise vCPU 1", op(INITIALISE, 1, ctx().as_ptr() as u64), 0);
    expect_err("initialise twice", op(INITIALISE, 1, ctx().as_ptr() as u64), Errno::EEXIST);
    expect_err("initialise vCPU 0", op(INITIALISE, 0, ctx().as_ptr() as u64), Errno::EEXIST);
    expect_ret("up(1)", op(UP, 1, 0), 0);
    check("vCPU 1 runs", wait(|| STARTED.load(SeqCst)));
    expect_ret("is_up(1)", op(IS_UP, 1, 0), 1);
    expect_ret("up(1) again", op(UP, 1, 0), 0);
    let c0 = COUNTER.load(SeqCst);
    check("vCPU 1 makes progress", wait(|| COUNTER.load(SeqCst) > c0 + 1000));

    // TLB shootdown: vCPU 1 keeps reading X (mapped to page A); vCPU 0 remaps X to page B
    // and flushes all vCPUs' TLBs; vCPU 1's first read afterwards must see B.
    let (x, _) = slack(4);
    let (b_va, b_mfn) = slack(6);
    // SAFETY: both are slack pages of ours, mapped writable.
    unsafe {
        (x as *mut u64).write_volatile(0xAAAA_AAAA);
        (b_va as *mut u64).write_volatile(0xBBBB_BBBB);
    }
    X_VA.store(x, SeqCst);
    for round in 0..20u64 {
        let (new_mfn, want) = if round % 2 == 0 { (b_mfn, 0xBBBB_BBBB) } else { (slack(4).1, 0xAAAA_AAAA) };
        DONE.store(false, SeqCst);
        FLUSHED.store(false, SeqCst);
        let r0 = READS.load(SeqCst);
        CMD.store(READ_X, SeqCst);
        check("vCPU 1 reads X", wait(|| READS.load(SeqCst) > r0 + 100));
        expect_ret("remap X", hc::update_va_mapping(x, new_mfn << 12 | P | RW | A | D, 0), 0);
        expect_ret("TLB_FLUSH_ALL", hc::mmuext1(TLB_FLUSH_ALL, 0, 0), 0);
        FLUSHED.store(true, SeqCst);
        check("vCPU 1 read after the flush", wait(|| DONE.load(SeqCst)));
        let got = AFTER.load(SeqCst);
        if got != want {
            println!("  round {}: vCPU 1 read {:#x} through the old mapping (want {:#x})", round, got, want);
        }
        check("no stale translation on vCPU 1", got == want);
    }

    // Events for vCPU 1: an IPI port bound to it marks its vcpu_info and wakes it.
    let ipi = pv_runtime::events::bind_ipi(1).unwrap_or(0);
    check("bind_ipi(1)", ipi != 0);
    CMD.store(BLOCK, SeqCst);
    check("vCPU 1 blocked", wait(|| runstate(1) == 2));
    let w0 = WOKE.load(SeqCst);
    expect_ret("send to vCPU 1's port", pv_runtime::events::send(ipi), 0);
    check("vCPU 1 woke", wait(|| WOKE.load(SeqCst) > w0));
    check("vCPU 1's upcall pending", vi_byte(1, 0).load(SeqCst) == 1);
    check("vCPU 1's selector bit", vi_sel(shared_va + 64).load(SeqCst) & (1 << (ipi / 64)) != 0);

    // register_vcpu_info for vCPU 1.
    let (area_va, area_mfn) = slack(5);
    let reg = |mfn: u64, off: u32| {
        let a = [mfn, off as u64];
        op(REGISTER_VCPU_INFO, 1, a.as_ptr() as u64)
    };
    expect_err("vcpu_info crossing the page", reg(area_mfn, 4096 - 32), Errno::EINVAL);
    expect_err("vcpu_info in a page table", reg(l4, 0), Errno::EINVAL);
    expect_err("vcpu_info in a frame not ours", reg(1, 0), Errno::EINVAL);
    expect_err("vcpu_info for vCPU 3", op(REGISTER_VCPU_INFO, 3, [area_mfn, 0].as_ptr() as u64), Errno::ENOENT);
    expect_ret("vcpu_info moved", reg(area_mfn, 128), 0);
    expect_err("vcpu_info moved twice", reg(area_mfn, 256), Errno::EINVAL);
    let area = area_va + 128;
    // SAFETY: the registered area is in our own mapped page.
    let pending = || unsafe { (area as *const u8).read_volatile() };
    check("moved vcpu_info marked pending", pending() == 1 && vi_sel(area).load(SeqCst) == u64::MAX);
    // SAFETY: as above.
    unsafe { (area as *mut u8).write_volatile(0) };
    vi_sel(area).store(0, SeqCst);
    vi_byte(1, 0).store(0, SeqCst);
    // The port is still pending from before (nobody handled it on vCPU 1): clear it so the
    // send notifies again.
    // SAFETY: evtchn_pending words of the mapped shared_info page.
    let pend = unsafe { AtomicU64::from_ptr((shared_va + 2048 + 8 * (ipi as u64 / 64)) as *mut u64) };
    pend.fetch_and(!(1 << (ipi % 64)), SeqCst);
    expect_ret("send after the move", pv_runtime::events::send(ipi), 0);
    check("new vcpu_info gets the event", pending() == 1 && vi_sel(area).load(SeqCst) != 0);
    check("legacy slot no longer used", vi_byte(1, 0).load(SeqCst) == 0);
    // SAFETY: as above; version word of the time info at +32.
    let tver = || unsafe { ((area + 32) as *const u32).read_volatile() };
    let (v1, _) = (tver(), hc::yield_now());
    check("time info kept in the new area", wait(|| tver() != v1));
    // Down and up from outside.
    expect_ret("down(1)", op(DOWN, 1, 0), 0);
    expect_ret("is_up(1) after down", op(IS_UP, 1, 0), 0);
    check("vCPU 1 offline", wait(|| runstate(1) == 3));
    let c1 = COUNTER.load(SeqCst);
    for _ in 0..200 {
        hc::yield_now();
    }
    check("vCPU 1 stopped", COUNTER.load(SeqCst) == c1);
    expect_ret("down(1) again", op(DOWN, 1, 0), 0);
    expect_ret("up(1) after down", op(UP, 1, 0), 0);
    check("vCPU 1 resumed", wait(|| COUNTER.load(SeqCst) > c1 + 1000));

    // vCPU 1 takes itself down; up makes its hypercall return 0.
    CMD.store(DOWN_SELF, SeqCst);
    check("vCPU 1 went down itself", wait(|| op(IS_UP, 1, 0) == 0 && runstate(1) == 3));
    expect_ret("up(1) after its own down", op(UP, 1, 0), 0);
    check("its down returned 0", wait(|| SELF_DOWN_RET.load(SeqCst) == 0));

    // The end: vCPU 1 down, then vCPU 0: the last vCPU going down powers the domain off.
    expect_ret("down(1) at the end", op(DOWN, 1, 0), 0);
    println!("vcpus: the last vCPU goes down next");
    finish_by_down()
}

/// Within one `mmu_update` batch, frame X loses its last writable mapping and becomes an L1
/// (hooked into an L2), followed by 250 no-op entries; vCPU 1, on the other CPU, keeps
/// X's writable translation warm and stores a PTE naming a hypervisor frame into X as soon as
/// the hook is visible. The hypervisor must flush vCPU 1's TLB before validating X (Xen's TLB
/// clock), so none of those stores may land in the validated table.
fn tlb_clock(si: &pv_runtime::StartInfo, l4: u64, slack: &dyn Fn(u64) -> (u64, u64)) -> ! {
    let t = Tables::new(si);
    good_ctx(l4);
    // vCPU 1 takes its own (recovered) page faults: the runtime's handlers in its trap table.
    for v in 0..32u8 {
        let e = 720 + 16 * v as usize;
        ctx()[e] = v;
        ctx()[e + 2..e + 4].copy_from_slice(&guest_abi::selectors::FLAT_KERNEL_CS.to_le_bytes());
        put(ctx(), e + 8, pv_runtime::traps::vector_stub(v));
    }
    expect_ret("initialise vCPU 1", op(INITIALISE, 1, ctx().as_ptr() as u64), 0);
    expect_ret("up(1)", op(UP, 1, 0), 0);
    check("vCPU 1 runs", wait(|| STARTED.load(SeqCst)));
    let (x_va, x) = slack(4);
    let (ro_va, own_ro) = slack(5);
    let (noop_va, noop_mfn) = slack(6);
    let l2 = t.table(0, 2);
    let hook = (l2 << 12) | (8 * 100);
    HOOK_VA.store(t.vb + 4096 * Tables::m2p(l2) + 8 * 100, SeqCst);
    X_VA.store(x_va, SeqCst);
    let x_pte = t.entry_maddr(x_va, 1);
    let noop = MmuUpdate { ptr: t.entry_maddr(noop_va, 1), val: noop_mfn << 12 | P | RW | A | D };
    let mut bad = 0;
    for _round in 0..10 {
        expect_ret("map X writable", hc::update_va_mapping(x_va, x << 12 | P | RW | A | D, 2), 0);
        // SAFETY: X is ours and mapped writable at x_va.
        unsafe { core::ptr::write_bytes(x_va as *mut u8, 0, 4096) };
        ATTACKED.store(false, SeqCst);
        CMD.store(ATTACK, SeqCst);
        for _ in 0..2000 {
            core::hint::spin_loop();
        }
        let mut reqs = [noop; 252];
        reqs[0] = MmuUpdate { ptr: x_pte, val: 0 };
        reqs[1] = MmuUpdate { ptr: hook, val: x << 12 | P | RW | A };
        let (r, done) = hc::mmu_update(&reqs);
        expect_ret("one batch: unmap X, hook it as an L1, 250 no-ops", r, 0);
        expect_ret("all done", done as i64, 252);
        check("vCPU 1 saw the hook", wait(|| ATTACKED.load(SeqCst)));
        // Read X back through a read-only mapping.
        expect_ret("map X read-only", hc::update_va_mapping(ro_va, x << 12 | P | A, 2), 0);
        for i in 0..512u64 {
            // SAFETY: mapped read-only just above.
            let e = unsafe { ((ro_va + 8 * i) as *const u64).read_volatile() };
            bad += u64::from(e != 0);
        }
        expect_ret("unmap the read-only view", hc::update_va_mapping(ro_va, own_ro << 12 | P | RW | A | D, 2), 0);
        expect_ret("unhook X", hc::mmu_update(&[MmuUpdate { ptr: hook, val: 0 }]).0, 0);
    }
    println!("tlbclock: {} stores of vCPU 1 landed after the hook, {} entries of validated X were not ours", LANDED.load(SeqCst), bad);
    check("no unvalidated entry in the validated L1", bad == 0);
    check("no store through the stale translation", LANDED.load(SeqCst) == 0);
    finish("tlbclock")
}

/// Prints the verdict, then takes the last vCPU down, which must power the domain off.
fn finish_by_down() -> ! {
    check("vCPU 1 down before the end", wait(|| runstate(1) == 3));
    // Same verdict lines as `finish`, then the down instead of a shutdown.
    if verdict_ok("vcpus") {
        println!("Test result: SUCCESS");
        op(DOWN, 0, 0);
        println!("FAIL: down of the last vCPU returned");
    } else {
        println!("Test result: FAILURE");
    }
    hc::shutdown(guest_abi::sched::ShutdownReason::Crash)
}
