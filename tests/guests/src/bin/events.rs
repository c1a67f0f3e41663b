//! Event channels, timers and blocking for one domain: VIRQ_TIMER from one-shot and periodic
//! timers (in order, never early), SCHEDOP_block (no lost wake-up when an event is already
//! pending), SCHEDOP_poll with a timeout and with events masked, IPIs and loopback
//! interdomain channels, masking, and Xen's error codes for bad ports, vCPUs and VIRQs.
#![no_std]
#![no_main]

use guest_abi::errno::Errno::{self, *};
use guest_abi::evtchn::*;
use pv_runtime::events::{self as ev, system_time};
use pv_runtime::mm::{self, GuestMem};
use test_guests::*;

const MS: u64 = 1_000_000;

fn e(what: &str, got: i64, want: Errno) {
    expect_err(what, got, want)
}


#[no_mangle]
fn guest_main(si: &'static pv_runtime::StartInfo) -> ! {
    start("events");
    let vb = pv_runtime::virt_base();
    let mem = GuestMem::new(si, vb);
    let shared = match mm::map_shared_info(si, vb + (mem.region_end_pfn - 1) * 4096) {
        Ok(s) => s,
        Err(r) => {
            expect_ret("map shared_info", r, 0);
            finish("events")
        }
    };
    expect_ret("register the event callback", ev::init(&shared), 0);
    // pvclock: time advances across 1000 yields (a hypervisor that never refreshed it, or a
    // zero scale, fails here).
    let t0 = system_time();
    for _ in 0..1000 {
        pv_runtime::hypercall::yield_now();
    }
    let t1 = system_time();
    if t1 <= t0 {
        println!("  system time {} then {}", t0, t1);
    }
    check("system time runs", t1 > t0);

    // Timer VIRQ: a one-shot 5 ms ahead, then block.
    let tp = expect_port("bind VIRQ_TIMER", ev::bind_virq(VIRQ_TIMER, 0));
    // SAFETY: stop_periodic_timer takes no argument.
    expect_ret("stop the default periodic timer", unsafe { ev::vcpu_op(guest_abi::vcpu::VCPUOP_STOP_PERIODIC_TIMER, 0, 0) }, 0);
    ev::enable();
    // A tick of the default periodic timer may have been pending: let it arrive first.
    pv_runtime::hypercall::yield_now();
    let before = ev::count(tp);
    let deadline = system_time() + 5 * MS;
    expect_ret("set_timer_op", ev::set_timer(deadline), 0);
    ev::block_until(|| ev::count(tp) != before);
    let now = system_time();
    check("one-shot fired, not early", now >= deadline);
    // Lateness depends on the host (TCG threads can be descheduled): only gross delays fail.
    check("one-shot fired within 500 ms", now < deadline + 500 * MS);

    // Two one-shots in a row fire in order (each re-arm replaces the previous one).
    let mut last = 0;
    let mut in_order = true;
    for k in 1..=3u64 {
        let d = system_time() + k * MS;
        let c = ev::count(tp);
        ev::set_timer(d);
        ev::block_until(|| ev::count(tp) != c);
        let t = system_time();
        in_order &= t >= d && t > last;
        last = t;
    }
    check("one-shots fire in order and not early", in_order);

    // Periodic timer: 2 ms period, five ticks at least 2 ms apart on average.
    let p = 2 * MS;
    // Time taken before the timer is set: the first tick comes one period after that at
    // the earliest, however long the host keeps this vCPU from running in between.
    let c0 = ev::count(tp);
    let s = system_time();
    // SAFETY: set_periodic_timer reads a u64 period.
    expect_ret("set_periodic_timer 2 ms", unsafe { ev::vcpu_op(guest_abi::vcpu::VCPUOP_SET_PERIODIC_TIMER, 0, &p as *const u64 as u64) }, 0);
    ev::block_until(|| ev::count(tp) >= c0 + 5);
    check("periodic ticks not early", system_time() - s >= 5 * p - p / 2);
    // SAFETY: as above.
    expect_ret("stop_periodic_timer", unsafe { ev::vcpu_op(guest_abi::vcpu::VCPUOP_STOP_PERIODIC_TIMER, 0, 0) }, 0);
    let tiny = 10_000u64;
    // SAFETY: as above.
    e("periodic timer of 10 us", unsafe { ev::vcpu_op(guest_abi::vcpu::VCPUOP_SET_PERIODIC_TIMER, 0, &tiny as *const u64 as u64) }, EINVAL);
    let huge = u64::MAX;
    // SAFETY: as above.
    e("periodic timer of 2^64-1 ns", unsafe { ev::vcpu_op(guest_abi::vcpu::VCPUOP_SET_PERIODIC_TIMER, 0, &huge as *const u64 as u64) }, EINVAL);
    // A far-future one-shot is accepted and simply never fires; the hypervisor stays alive.
    let far = [u64::MAX, 0u64];
    // SAFETY: set_singleshot_timer reads {u64 timeout, u32 flags}.
    expect_ret("singleshot at 2^64-1 ns", unsafe { ev::vcpu_op(guest_abi::vcpu::VCPUOP_SET_SINGLESHOT_TIMER, 0, far.as_ptr() as u64) }, 0);
    expect_ret("set_timer_op 2^64-1", ev::set_timer(u64::MAX), 0);
    check("hypervisor alive after absurd timers", pv_runtime::hypercall::yield_now() == 0);
    let past = [system_time() - MS, 1u64];
    // SAFETY: set_singleshot_timer reads {u64 timeout, u32 flags}.
    e("singleshot in the past with FUTURE", unsafe { ev::vcpu_op(guest_abi::vcpu::VCPUOP_SET_SINGLESHOT_TIMER, 0, past.as_ptr() as u64) }, ETIME);
    // SAFETY: vcpu 5 does not exist; nothing is read.
    e("vcpu_op on vCPU 5", unsafe { ev::vcpu_op(guest_abi::vcpu::VCPUOP_IS_UP, 5, 0) }, ENOENT);
    // SAFETY: is_up takes no argument.
    expect_ret("vCPU 0 is up", unsafe { ev::vcpu_op(guest_abi::vcpu::VCPUOP_IS_UP, 0, 0) }, 1);
    // Runstate: we are running, and the sleeps above count as blocked time.
    let mut rs = [0u64; 6];
    // SAFETY: get_runstate_info writes 48 bytes.
    expect_ret("get_runstate_info", unsafe { ev::vcpu_op(guest_abi::vcpu::VCPUOP_GET_RUNSTATE_INFO, 0, rs.as_mut_ptr() as u64) }, 0);
    check("runstate: running", rs[0] as u32 == 0);
    check("runstate: blocked time from the timer waits (> 10 ms)", rs[4] > 10 * MS);
    check("runstate: running time counted", rs[2] > 0);
    check("runstate: entry time not in the future", rs[1] <= system_time());

    // No lost wake-up: an event already pending makes block return at once.
    let ipi = expect_port("bind_ipi", ev::bind_ipi(0));
    ev::disable();
    let c = ev::count(ipi);
    expect_ret("send IPI to self", ev::send(ipi), 0);
    check("masked: not delivered yet", ev::count(ipi) == c);
    ev::block(); // re-enables events; the pending IPI must end the block immediately
    check("IPI delivered after block", ev::count(ipi) == c + 1);

    // Port masking: a masked port stays pending until unmask.
    ev::set_port_mask(ipi, true);
    ev::send(ipi);
    check("masked port pending, not delivered", ev::is_pending(ipi) && ev::count(ipi) == c + 1);
    expect_ret("unmask", ev::unmask(ipi), 0);
    // The next hypervisor entry delivers it.
    pv_runtime::hypercall::yield_now();
    check("delivered after unmask", ev::count(ipi) == c + 2);

    // Loopback interdomain channel.
    let a = expect_port("alloc_unbound(self, self)", ev::alloc_unbound(guest_abi::DOMID_SELF, guest_abi::DOMID_SELF));
    check("status unbound", ev::status(guest_abi::DOMID_SELF, a).map(|s| s.0) == Ok(EVTCHNSTAT_UNBOUND));
    let b = expect_port("bind_interdomain to it", ev::bind_interdomain(guest_abi::DOMID_SELF, a));
    pv_runtime::hypercall::yield_now();
    let ca = ev::count(a);
    expect_ret("send on b", ev::send(b), 0);
    pv_runtime::hypercall::yield_now();
    check("event arrives on a", ev::count(a) == ca + 1);
    check("status interdomain", ev::status(guest_abi::DOMID_SELF, a).map(|s| (s.0, s.3)) == Ok((EVTCHNSTAT_INTERDOMAIN, b)));
    expect_ret("close b", ev::close(b), 0);
    check("a back to unbound", ev::status(guest_abi::DOMID_SELF, a).map(|s| s.0) == Ok(EVTCHNSTAT_UNBOUND));
    e("send on a closed port", ev::send(b), EINVAL);
    e("close twice", ev::close(b), EINVAL);

    // SCHEDOP_poll: a timeout with events masked, and an already-pending port.
    ev::disable();
    let q = expect_port("bind a second IPI", ev::bind_ipi(0));
    let t = system_time();
    expect_ret("poll with timeout", ev::poll(&[q], t + 4 * MS), 0);
    check("poll waited for the timeout", system_time() >= t + 4 * MS);
    ev::send(q);
    let t = system_time();
    expect_ret("poll on a pending port", ev::poll(&[q], t + 500 * MS), 0);
    check("poll returned at once (well before its 500 ms timeout)", system_time() < t + 400 * MS);
    ev::enable();
    pv_runtime::hypercall::yield_now();

    // Error codes.
    e("bind VIRQ 99", ev::bind_virq(99, 0).err().unwrap_or(0), EINVAL);
    e("bind VIRQ_TIMER on vCPU 40 (none such)", ev::bind_virq(VIRQ_TIMER, 40).err().unwrap_or(0), ENOENT);
    e("bind VIRQ_TIMER twice", ev::bind_virq(VIRQ_TIMER, 0).err().unwrap_or(0), EEXIST);
    e("global VIRQ on vCPU 1", ev::bind_virq(VIRQ_DOM_EXC, 1).err().unwrap_or(0), EINVAL);
    e("send on port 0", ev::send(0), EINVAL);
    e("send on port 5000", ev::send(5000), EINVAL);
    e("send on a VIRQ port", ev::send(tp), EINVAL);
    e("status of port 4096", ev::status(guest_abi::DOMID_SELF, 4096).err().unwrap_or(0), EINVAL);
    e("alloc_unbound for domain 7", ev::alloc_unbound(7, guest_abi::DOMID_SELF).err().unwrap_or(0), ESRCH);
    e("bind_ipi on vCPU 40 (none such)", ev::bind_ipi(40).err().unwrap_or(0), ENOENT);
    e("bind_vcpu of an IPI", ev::bind_vcpu(ipi, 0), EINVAL);
    e("poll with 1000 ports", ev::poll(&[0u32; 1000], 0), EINVAL);
    e("poll on a bad port", ev::poll(&[9999], 0), EINVAL);
    e("unknown event_channel_op", {
        // SAFETY: unknown command; nothing is read.
        unsafe { pv_runtime::hypercall::hypercall5(guest_abi::hypercall::EVENT_CHANNEL_OP, 77, 0, 0, 0, 0) }
    }, ENOSYS);
    check("upcalls were taken", ev::UPCALLS.load(core::sync::atomic::Ordering::SeqCst) > 5);
    finish("events")
}
