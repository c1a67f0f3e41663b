//! Guest timers firing: on this CPU's timer interrupt (and `set_timer_op`), every due
//! one-shot and periodic timer raises VIRQ_TIMER, pvclock records are refreshed, sleepers
//! whose time came are woken, and the scheduler's tick runs.

use crate::events;
use crate::Hv;
use guest_abi::evtchn::{VIRQ_CONSOLE, VIRQ_TIMER};

/// Fires due guest timers of every domain, polls console input, refreshes time, wakes
/// sleepers and re-arms the LAPIC.
pub fn process_timers(hv: &mut Hv) {
    let now = events::now();
    let mut fired = alloc::vec::Vec::new();
    for d in hv.g.domains.iter_mut().filter(|d| d.dead.is_none()) {
        let (dom, vcpus) = (d.id, &mut d.vcpus);
        for (id, v) in vcpus.iter_mut().enumerate().filter(|(_, v)| !v.down) {
            let id = id as u32;
            let mut fire = false;
            if v.single_deadline.is_some_and(|t| t <= now) {
                v.single_deadline = None;
                fire = true;
            }
            if v.period_ns != 0 && v.period_next <= now {
                fire = true;
                // Skip missed periods in one step (no loop a guest could stretch).
                let missed = (now - v.period_next) / v.period_ns + 1;
                v.period_next = v.period_next.saturating_add(missed.saturating_mul(v.period_ns));
            }
            if fire {
                fired.push((dom, id));
            }
        }
        for id in 0..d.nr_vcpus() {
            if !d.vcpus[id as usize].down {
                events::update_time(d, id);
            }
        }
    }
    for (dom, vcpu) in fired {
        crate::schedule::send_virq(hv, dom, VIRQ_TIMER, vcpu);
    }
    if hv.pc.id == 0 && hv_arch::cpu::serial_has_input() {
        crate::schedule::send_virq(hv, 0, VIRQ_CONSOLE, 0);
    }
    crate::schedule::check_sleepers(hv);
    if now >= hv.pc.next_tick {
        // The scheduler's tick: charges the running vCPU, ends a boost, runs accounting.
        hv.g.sched.tick(hv.pc.id, now);
        hv.pc.next_tick = now + hv_core::sched::TICK_NS;
    }
    if now >= hv.pc.slice_until {
        hv.pc.need_resched = true;
    }
    events::arm(hv, None);
}
