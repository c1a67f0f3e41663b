//! dom0 side of multi-domain scenarios.
//! - `domexc`: waits (at most 5 s) for VIRQ_DOM_EXC: a domU shut down or crashed, and dom0
//!   runs on.
//! - `slices`: sleeps 10 ms five times; it can only wake if the hypervisor preempts a domU
//!   that spins with events masked.
//! - `shares`: sleeps 3 s while CPU-hog domUs compete (for the share benchmark).
#![no_std]
#![no_main]

use guest_abi::evtchn::{VIRQ_DOM_EXC, VIRQ_TIMER};
use pv_runtime::events as ev;
use test_guests::*;

const MS: u64 = 1_000_000;

#[no_mangle]
fn guest_main(si: &'static pv_runtime::StartInfo) -> ! {
    let mode = core::str::from_utf8(si.cmdline_bytes()).unwrap_or("").trim();
    start(mode);
    check("events up", events_up(si));
    let exc = ev::bind_virq(VIRQ_DOM_EXC, 0).unwrap_or(0);
    let tmr = ev::bind_virq(VIRQ_TIMER, 0).unwrap_or(0);
    check("VIRQs bound", exc != 0 && tmr != 0);
    // SAFETY: stop_periodic_timer takes no argument.
    unsafe { ev::vcpu_op(guest_abi::vcpu::VCPUOP_STOP_PERIODIC_TIMER, 0, 0) };
    ev::enable();
    // A tick of the default periodic timer may already be pending: let it arrive first.
    pv_runtime::hypercall::yield_now();
    match mode {
        "domexc" => {
            // Acting on the domU (which exists) reaches the operation's own checks; a
            // missing domain is -ESRCH.
            use guest_abi::errno::Errno::{EINVAL, ESRCH};
            use pv_runtime::hypercall::{self as hc, MmuUpdate};
            let req = MmuUpdate { ptr: 0, val: 0 };
            // SAFETY: `req` is valid for the call; the domain argument is the point.
            let mmu = |d: u64| unsafe { hc::hypercall5(guest_abi::hypercall::MMU_UPDATE, &req as *const _ as u64, 1, 0, d, 0) };
            expect_err("mmu_update naming the domU's frames, on a frame that is no table of dom0's", mmu(1), EINVAL);
            expect_err("mmu_update for domain 9", mmu(9), ESRCH);
            // Frame 0 is not the domU's: refused before any entry changes.
            // SAFETY: takes no pointer.
            let uvmo = |d: u64| unsafe { hc::hypercall5(guest_abi::hypercall::UPDATE_VA_MAPPING_OTHERDOMAIN, 0x40_0000, 1, 2, d, 0) };
            expect_err("update_va_mapping_otherdomain of a frame the domU does not own", uvmo(1), EINVAL);
            expect_err("update_va_mapping_otherdomain of domain 9", uvmo(9), ESRCH);
            check("alloc_unbound in the domU (for dom0)", ev::alloc_unbound(1, 0).is_ok());
            // On one CPU the domU may have run to its end before this domain bound the VIRQ.
            let ended_before = domain_has_ended(1);
            if ended_before {
                println!("the domU had ended before VIRQ_DOM_EXC was bound");
            }
            let t = ev::count(tmr);
            ev::set_timer(ev::system_time() + 5000 * MS);
            ev::block_until(|| ended_before || ev::count(exc) != 0 || ev::count(tmr) != t);
            check("VIRQ_DOM_EXC arrived before the 5 s timeout", ended_before || ev::count(exc) > 0);
            // The dead domU is torn down: every frame back, its id free.
            expect_ret("destroydomain of the dead domU", destroy_domain(1), 0);
            check("the domU is gone", domain_flags(1).is_none());
        }
        "slices" => {
            let start_t = ev::system_time();
            for _ in 0..5 {
                let t = ev::count(tmr);
                let d = ev::system_time() + 10 * MS;
                ev::set_timer(d);
                ev::block_until(|| ev::count(tmr) != t);
                check("woke no earlier than asked", ev::system_time() >= d);
            }
            let took = ev::system_time() - start_t;
            println!("five 10 ms sleeps took {} ms", took / MS);
            check("dom0 kept getting the CPU", took < 2000 * MS);
        }
        "shares" => {
            // Sleep 3 s while the hog domUs compete, then end the run.
            let t = ev::count(tmr);
            ev::set_timer(ev::system_time() + 3000 * MS);
            ev::block_until(|| ev::count(tmr) != t);
        }
        _ => check("known mode", false),
    }
    check("hypercalls still work", pv_runtime::hypercall::yield_now() == 0);
    finish(mode)
}
