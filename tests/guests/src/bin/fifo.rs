//! FIFO event channels (`EVTCHNOP_init_control`, `expand_array`, `set_priority`) as a
//! domU: the error paths before and during the switch (nothing changes on a refused one),
//! a 2-level event pending at the switch carried over, IPIs, loopback channels, the timer
//! VIRQ and `SCHEDOP_poll` under FIFO, priority order and FIFO order within a priority,
//! masking, garbage in every event word and the control block (from vCPU 1 while vCPU 0
//! raises events, when the domain has two vCPUs), the frames held with a type the guest
//! cannot change, the array's limit, and `EVTCHNOP_reset` back to 2-level. It ends with
//! FIFO on: its teardown must give the frames back (the audit and the frame sweep check).
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering::SeqCst};
use guest_abi::errno::Errno::*;
use guest_abi::evtchn::fifo::{BUSY, LINKED, MASKED, MAX_ARRAY_PAGES};
use guest_abi::evtchn::*;
use guest_abi::mm::ext::{PIN_L1_TABLE, UNPIN_TABLE};
use pv_runtime::events::{self as ev, system_time, Page};
use pv_runtime::hypercall::{self as hc, yield_now};
use pv_runtime::mm::{self, GuestMem};
use test_guests::*;

const MS: u64 = 1_000_000;

static mut CTL: Page = Page::new();
static mut ARRAY: Page = Page::new();

/// The order the handler saw ports in.
static ORDER: [AtomicU32; 16] = [const { AtomicU32::new(0) }; 16];
static SEEN: AtomicUsize = AtomicUsize::new(0);

fn record(p: Port) {
    let i = SEEN.fetch_add(1, SeqCst);
    if let Some(s) = ORDER.get(i) {
        s.store(p, SeqCst);
    }
}

fn seen() -> ([u32; 16], usize) {
    let n = SEEN.swap(0, SeqCst).min(16);
    (core::array::from_fn(|i| if i < n { ORDER[i].load(SeqCst) } else { 0 }), n)
}


fn init_err(r: Result<u8, i64>) -> i64 {
    r.err().unwrap_or(0)
}

// vCPU 1's word scribbler.
static SCRIBBLE: AtomicBool = AtomicBool::new(false);
static SCRIBBLING: AtomicBool = AtomicBool::new(false);
static SCRIBBLES: AtomicU64 = AtomicU64::new(0);
static mut CTX: [u8; guest_abi::vcpu::ctx::SIZE] = [0; guest_abi::vcpu::ctx::SIZE];
static mut AP_STACK: [u8; 16384] = [0; 16384];

/// vCPU 1: writes garbage into every event word and the control block while SCRIBBLE is
/// set.
extern "C" fn scribbler() -> ! {
    let patterns = [LINKED | BUSY | 0x1ffff, LINKED | 5, BUSY, LINKED, u32::MAX, LINKED | MASKED | 3, 0];
    let mut i = 0u64;
    loop {
        if !SCRIBBLE.load(SeqCst) {
            SCRIBBLING.store(false, SeqCst);
            yield_now();
            continue;
        }
        SCRIBBLING.store(true, SeqCst);
        let pat = patterns[(i % patterns.len() as u64) as usize];
        for p in 0..1024 {
            ev::fifo_write_word(p, pat.wrapping_add(p));
        }
        ev::fifo_write_control(0, pat);
        ev::fifo_write_control(8 + 4 * 7, pat & 0x1ffff);
        i += 1;
        SCRIBBLES.store(i, SeqCst);
        if i.is_multiple_of(16) {
            yield_now();
        }
    }
}

/// Pins `mfn` as an L1 table and unpins it again: whether the pin worked.
fn pin_l1(mfn: u64) -> bool {
    let ok = hc::mmuext1(PIN_L1_TABLE, mfn, 0) == 0;
    if ok {
        expect_ret("unpin", hc::mmuext1(UNPIN_TABLE, mfn, 0), 0);
    }
    ok
}

#[no_mangle]
fn guest_main(si: &'static pv_runtime::StartInfo) -> ! {
    start("fifo");
    let vb = pv_runtime::virt_base();
    let mut mem = GuestMem::new(si, vb);
    let t = Tables::new(si);
    let shared = match mm::map_shared_info(si, vb + (mem.region_end_pfn - 1) * 4096) {
        Ok(s) => s,
        Err(r) => {
            expect_ret("map shared_info", r, 0);
            finish("fifo")
        }
    };
    expect_ret("register the event callback", ev::init(&shared), 0);
    ev::set_handler(record);
    // SAFETY: stop_periodic_timer takes no argument.
    expect_ret("stop the default periodic timer", unsafe { ev::vcpu_op(guest_abi::vcpu::VCPUOP_STOP_PERIODIC_TIMER, 0, 0) }, 0);
    // SAFETY: is_up takes no argument.
    let two_vcpus = unsafe { ev::vcpu_op(guest_abi::vcpu::VCPUOP_IS_UP, 1, 0) } == 0;
    let (ctl_va, arr_va) = (core::ptr::addr_of!(CTL) as u64, core::ptr::addr_of!(ARRAY) as u64);
    let (ctl_mfn, arr_mfn) = (t.mfn_of_va(ctl_va), t.mfn_of_va(arr_va));
    // A frame nothing maps: it can become a page table, or be given to the FIFO state.
    let Some(spare) = mem.alloc_mfn() else {
        check("a spare frame", false);
        finish("fifo")
    };
    check("the spare frame can be pinned as an L1", pin_l1(spare));

    // 2-level: no priorities, no array.
    let ipi = expect_port("bind_ipi", ev::bind_ipi(0));
    expect_err("set_priority under 2-level", ev::set_priority(ipi, 3), ENOSYS);
    expect_err("expand_array before init_control", ev::expand_array(arr_mfn), EOPNOTSUPP);
    // An event pending at the switch must survive it.
    ev::disable();
    expect_ret("send IPI (events masked)", ev::send(ipi), 0);
    check("pending in the 2-level bitmap", ev::is_pending(ipi));

    // init_control's refusals leave the domain 2-level.
    expect_err("init_control for vCPU 5", init_err(ev::init_control(ctl_mfn, 0, 5)), ENOENT);
    expect_err("init_control for vCPU 2^32-1", init_err(ev::init_control(ctl_mfn, 0, u32::MAX)), ENOENT);
    expect_err("init_control at offset 4 (unaligned)", init_err(ev::init_control(ctl_mfn, 4, 0)), EINVAL);
    expect_err("init_control at offset 4096-64 (crosses the page)", init_err(ev::init_control(ctl_mfn, 4096 - 64, 0)), EINVAL);
    expect_err("init_control of a frame past RAM", init_err(ev::init_control(1 << 40, 0, 0)), EINVAL);
    expect_err("init_control of a hypervisor frame", init_err(ev::init_control(0x100, 0, 0)), EINVAL);
    check("pin the spare frame as an L1", hc::mmuext1(PIN_L1_TABLE, spare, 0) == 0);
    expect_err("init_control of a pinned page table", init_err(ev::init_control(spare, 0, 0)), EINVAL);
    expect_ret("unpin it", hc::mmuext1(UNPIN_TABLE, spare, 0), 0);
    expect_err("init_control of the bootstrap L4", init_err(ev::init_control(t.l4, 0, 0)), EINVAL);
    expect_err("still 2-level: set_priority", ev::set_priority(ipi, 3), ENOSYS);
    expect_err("still 2-level: expand_array", ev::expand_array(arr_mfn), EOPNOTSUPP);

    // The switch.
    // SAFETY: the two statics are used only through the runtime from here on; the MFNs are
    // theirs (read from the tables that map them).
    let r = unsafe { ev::use_fifo(&mut *core::ptr::addr_of_mut!(CTL), ctl_mfn, &mut *core::ptr::addr_of_mut!(ARRAY), arr_mfn) };
    check("init_control + expand_array", r == Ok(17));
    if r != Ok(17) {
        println!("  use_fifo: {:?}", r);
        finish("fifo")
    }
    expect_err("a second init_control for vCPU 0", init_err(ev::init_control(ctl_mfn, 128, 0)), EINVAL);
    if two_vcpus {
        // vCPU 1's block in the same page (Xen allows it; the page is held twice).
        check("init_control for vCPU 1 in the same page", ev::init_control(ctl_mfn, 128, 1) == Ok(17));
    }
    check("the 2-level event is pending in its FIFO word", ev::is_pending(ipi));
    ev::enable();
    yield_now();
    check("masked by the switch: not delivered yet", ev::count(ipi) == 0);
    expect_ret("unmask the IPI", ev::unmask(ipi), 0);
    yield_now();
    check("the carried-over event is delivered once unmasked", ev::count(ipi) == 1);
    seen();

    // IPIs.
    for _ in 0..5 {
        ev::send(ipi);
        yield_now();
    }
    check("five IPIs, five deliveries", ev::count(ipi) == 6);
    ev::disable();
    for _ in 0..5 {
        ev::send(ipi);
    }
    ev::enable();
    yield_now();
    check("five IPIs while masked, one delivery", ev::count(ipi) == 7);

    // A loopback interdomain channel.
    let a = expect_port("alloc_unbound(self, self)", ev::alloc_unbound(guest_abi::DOMID_SELF, guest_abi::DOMID_SELF));
    let b = expect_port("bind_interdomain to it", ev::bind_interdomain(guest_abi::DOMID_SELF, a));
    ev::unmask(a);
    ev::unmask(b);
    yield_now();
    let ca = ev::count(a);
    expect_ret("send on b", ev::send(b), 0);
    yield_now();
    check("the event arrives on a", ev::count(a) == ca + 1);

    // The timer VIRQ.
    let tp = expect_port("bind VIRQ_TIMER", ev::bind_virq(VIRQ_TIMER, 0));
    ev::unmask(tp);
    let c = ev::count(tp);
    let deadline = system_time() + 3 * MS;
    ev::set_timer(deadline);
    ev::block_until(|| ev::count(tp) != c);
    check("a one-shot timer under FIFO, not early", system_time() >= deadline);

    // SCHEDOP_poll: a timeout, a pending port, and a wake-up by the timer with the upcall
    // masked (only the FIFO word says it is pending).
    ev::disable();
    let q = expect_port("bind a second IPI", ev::bind_ipi(0));
    let t0 = system_time();
    expect_ret("poll with timeout", ev::poll(&[q], t0 + 4 * MS), 0);
    check("poll waited for the timeout", system_time() >= t0 + 4 * MS);
    ev::send(q);
    let t0 = system_time();
    expect_ret("poll on a pending port", ev::poll(&[q], t0 + 2000 * MS), 0);
    check("poll returned at once", system_time() < t0 + 1000 * MS);
    ev::clear_pending(q);
    check("clear_pending clears the word", !ev::is_pending(q));
    let t0 = system_time();
    ev::set_timer(t0 + 3 * MS);
    expect_ret("poll on the timer port", ev::poll(&[tp], t0 + 2000 * MS), 0);
    let t1 = system_time();
    check("the timer's event woke the poller", t1 >= t0 + 3 * MS && t1 < t0 + 1000 * MS);
    ev::enable();
    yield_now();
    seen();

    // Priorities: highest first; within one, in raise order.
    let ps: [Port; 6] = core::array::from_fn(|_| expect_port("bind an IPI", ev::bind_ipi(0)));
    for &p in &ps {
        ev::unmask(p);
    }
    expect_ret("set_priority 2", ev::set_priority(ps[4], 2), 0);
    expect_ret("set_priority 2", ev::set_priority(ps[5], 2), 0);
    expect_ret("set_priority 12", ev::set_priority(ps[0], 12), 0);
    expect_ret("set_priority 0 (highest)", ev::set_priority(ps[2], 0), 0);
    ev::disable();
    for &p in &[ps[0], ps[3], ps[1], ps[5], ps[2], ps[4]] {
        ev::send(p);
    }
    ev::enable();
    yield_now();
    let (order, n) = seen();
    let want = [ps[2], ps[5], ps[4], ps[3], ps[1], ps[0]];
    if order[..n] != want {
        println!("  order {:?}, want {:?}", &order[..n], want);
    }
    check("priority order, FIFO within a priority", order[..n] == want);
    expect_err("set_priority 16", ev::set_priority(ps[0], 16), EINVAL);
    expect_err("set_priority of port 0", ev::set_priority(0, 3), EINVAL);
    expect_err("set_priority of port 5000", ev::set_priority(5000, 3), EINVAL);

    // Masking.
    ev::set_port_mask(ipi, true);
    let c = ev::count(ipi);
    ev::send(ipi);
    yield_now();
    check("masked: pending, not delivered", ev::is_pending(ipi) && ev::count(ipi) == c);
    expect_ret("unmask", ev::unmask(ipi), 0);
    yield_now();
    check("delivered after unmask", ev::count(ipi) == c + 1);
    seen();

    // Garbage in every word and the control block, from this vCPU (events masked) or from
    // vCPU 1 while this one raises events: the hypervisor keeps going.
    let mut scribbles = 0;
    if two_vcpus {
        use guest_abi::vcpu::{VCPUOP_INITIALISE, VCPUOP_UP};
        // SAFETY: vCPU 1 is not running; the buffer is used only here.
        let cx = unsafe { &mut *core::ptr::addr_of_mut!(CTX) };
        let stack_top = core::ptr::addr_of_mut!(AP_STACK) as u64 + 16384 - 8;
        vcpu_context(cx, scribbler as *const () as u64, stack_top, mem.mfn((si.pt_base - vb) / 4096));
        // SAFETY: the context is valid for the call; up takes no pointer.
        unsafe {
            expect_ret("initialise vCPU 1", ev::vcpu_op(VCPUOP_INITIALISE, 1, cx.as_ptr() as u64), 0);
            expect_ret("up(1)", ev::vcpu_op(VCPUOP_UP, 1, 0), 0);
        }
    }
    ev::disable();
    SCRIBBLE.store(true, SeqCst);
    let patterns = [LINKED | BUSY | 0x1ffff, LINKED | 5, BUSY, LINKED, u32::MAX, LINKED | MASKED | 3];
    for round in 0..60u32 {
        if !two_vcpus {
            for p in 0..1024 {
                ev::fifo_write_word(p, patterns[round as usize % patterns.len()].wrapping_add(p));
            }
            ev::fifo_write_control(0, u32::MAX);
            ev::fifo_write_control(8 + 4 * (round as usize % 16), round.wrapping_mul(7919));
        }
        for &p in ps.iter().chain([ipi, a, b, q].iter()) {
            ev::send(p);
            ev::unmask(p);
            let _ = ev::set_priority(p, round % 16);
        }
        yield_now();
    }
    SCRIBBLE.store(false, SeqCst);
    if two_vcpus {
        while SCRIBBLING.load(SeqCst) {
            yield_now();
        }
        scribbles = SCRIBBLES.load(SeqCst);
        check("vCPU 1 scribbled meanwhile", scribbles > 0);
    }
    println!("garbage: 60 rounds of 10 ports raised, {} rewrites from vCPU 1", scribbles);
    check("the hypervisor survived the garbage", yield_now() == 0);
    // The guest tidies up: every word masked, the control block zeroed; then it unmasks
    // its ports again and events flow.
    for p in 0..1024 {
        ev::fifo_write_word(p, MASKED);
    }
    for off in (0..72).step_by(4) {
        ev::fifo_write_control(off, 0);
    }
    ev::fifo_restart();
    for &p in ps.iter().chain([ipi, a, b, q, tp].iter()) {
        expect_ret("set_priority 7", ev::set_priority(p, 7), 0);
        ev::unmask(p);
    }
    ev::enable();
    yield_now();
    seen();
    let c = ev::count(ipi);
    ev::send(ipi);
    yield_now();
    let ca = ev::count(a);
    ev::send(b);
    yield_now();
    check("events flow again after the cleanup", ev::count(ipi) == c + 1 && ev::count(a) == ca + 1);

    // The array: bad frames refused, the spare frame held (no page table while it is),
    // then up to the limit.
    expect_err("expand_array with a frame past RAM", ev::expand_array(1 << 40), EINVAL);
    expect_err("expand_array with a hypervisor frame", ev::expand_array(0x100), EINVAL);
    check("pin the spare frame as an L1", hc::mmuext1(PIN_L1_TABLE, spare, 0) == 0);
    expect_err("expand_array with a pinned page table", ev::expand_array(spare), EINVAL);
    expect_ret("unpin it", hc::mmuext1(UNPIN_TABLE, spare, 0), 0);
    expect_ret("expand_array with the spare frame", ev::expand_array(spare), 0);
    check("a held array page cannot be pinned as a page table", !pin_l1(spare));
    let mut added = 2;
    while added < MAX_ARRAY_PAGES {
        if ev::expand_array(spare) != 0 {
            break;
        }
        added += 1;
    }
    check("128 array pages", added == MAX_ARRAY_PAGES);
    expect_err("a 129th array page", ev::expand_array(spare), ENOSPC);

    // Reset: back to 2-level, every frame given back.
    expect_ret("EVTCHNOP_reset", ev::reset(), 0);
    ev::fifo_off();
    let p = expect_port("bind_ipi after reset", ev::bind_ipi(0));
    expect_err("2-level again: set_priority of a bound port", ev::set_priority(p, 3), ENOSYS);
    expect_err("2-level again: expand_array", ev::expand_array(arr_mfn), EOPNOTSUPP);
    check("the spare frame can be pinned again", pin_l1(spare));
    ev::send(p);
    yield_now();
    check("a 2-level IPI after reset", ev::count(p) >= 1);

    // FIFO once more, left on for the teardown.
    // SAFETY: as above.
    let r = unsafe { ev::use_fifo(&mut *core::ptr::addr_of_mut!(CTL), ctl_mfn, &mut *core::ptr::addr_of_mut!(ARRAY), arr_mfn) };
    check("FIFO again after reset", r == Ok(17));
    expect_ret("expand_array with the spare frame", ev::expand_array(spare), 0);
    let c = ev::count(p);
    ev::unmask(p);
    ev::send(p);
    yield_now();
    if ev::count(p) != c + 1 {
        println!("  port {}: {} deliveries, then {}; word pending {}", p, c, ev::count(p), ev::is_pending(p));
    }
    check("an IPI under the new FIFO state", ev::count(p) == c + 1);
    check("upcalls were taken", ev::UPCALLS.load(SeqCst) > 10);
    finish("fifo")
}
