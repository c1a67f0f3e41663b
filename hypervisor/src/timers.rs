//! Guest timers, per CPU and without locks: each vCPU's one-shot and periodic
//! timers (and a poll's timeout) are atomics in its domain (`domain::VcpuTimer`), fired by
//! the CPU the vCPU last ran on (its home), which also arms its LAPIC for them. A timer
//! interrupt fires what is due on this CPU (VIRQ_TIMER through the event locks), refreshes
//! the running vCPU's pvclock record and polls console input on CPU 0; run-queue locks are
//! taken only when that is not all: a sleeper to wake (its owner queue's), the scheduler's
//! tick (this CPU's), the end of a slice.

use crate::domain::{shared_of, DomShared};
use crate::events::{arm, domains, homed};
use crate::events;
use crate::percpu::PerCpu;
use crate::Hv;
use core::sync::atomic::Ordering;
use guest_abi::evtchn::{VIRQ_CONSOLE, VIRQ_TIMER};




/// Did this CPU win expiry `t` of one-shot timer `w` (clearing it)?
fn take_single(w: &core::sync::atomic::AtomicU64, now: u64) -> bool {
    let t = w.load(Ordering::Acquire);
    t != 0 && t <= now && w.compare_exchange(t, 0, Ordering::AcqRel, Ordering::Relaxed).is_ok()
}

/// Did this CPU win the due expiry of periodic timer `t` (moving it past `now` in one step:
/// no loop a guest could stretch)?
fn take_period(t: &crate::domain::VcpuTimer, now: u64) -> bool {
    let p = t.period.load(Ordering::Relaxed);
    let next = t.period_next.load(Ordering::Acquire);
    if p == 0 || next > now {
        return false;
    }
    let missed = (now - next) / p + 1;
    let to = next.saturating_add(missed.saturating_mul(p));
    t.period_next.compare_exchange(next, to, Ordering::AcqRel, Ordering::Relaxed).is_ok()
}

/// Raises `virq` on vCPU `v` of `d` (under its event lock alone); whether a sleeper may need
/// waking (`ports::notify_lockfree`).
pub fn raise(cpu: usize, d: &DomShared, virq: u32, v: u32) -> bool {
    let k = crate::ports::raise(d, crate::ports::Source::Virq { virq, vcpu: v });
    crate::ports::notify_lockfree(cpu, k, &[d])
}

/// On this CPU's timer interrupt (or after `set_timer_op`), without a run-queue lock:
/// fires the due timers of the vCPUs homed here, refreshes the running vCPU's time record,
/// polls console input (CPU 0), marks the end of the slice, and re-arms the LAPIC. Returns
/// whether a sleeper may need waking (or a poll timed out): that takes run-queue locks
/// (`schedule::check_sleepers`).
pub fn fire(pc: &mut PerCpu) -> bool {
    let now = events::now();
    let mut need = false;
    for d in domains() {
        for (v, t) in homed(&d, pc.id) {
            let single = take_single(&t.single, now);
            if take_period(t, now) | single {
                need |= raise(pc.id, &d, VIRQ_TIMER, v);
            }
            let poll = t.poll.load(Ordering::Relaxed);
            need |= poll != 0 && poll <= now;
        }
    }
    if !pc.cur.is_placeholder() {
        events::update_time(&pc.cur.shared, pc.cur.id);
    }
    if pc.id == 0 {
        // What a writer's budget left undrawn (`hv_arch::screen`).
        hv_arch::console::draw_screen();
    }
    if pc.id == 0 && (hv_arch::cpu::serial_has_input() || hv_arch::kbd::has_input()) && crate::serial_input::pump() {
        if let Some(d0) = shared_of(0) {
            need |= raise(pc.id, &d0, VIRQ_CONSOLE, 0);
        }
    }
    if pc.slice_until != 0 && now >= pc.slice_until {
        pc.need_resched = true;
    }
    arm(pc, None);
    need
}

/// Is the scheduler's tick due on this CPU (it takes this CPU's run-queue lock)?
pub fn tick_due(pc: &PerCpu) -> bool {
    events::now() >= pc.next_tick
}

/// [`fire`], then what needs run-queue locks: waking sleepers and the scheduler's tick.
pub fn process_timers(hv: &mut Hv) {
    fire(hv.pc);
    crate::schedule::check_sleepers(hv);
    tick(hv);
}

/// The scheduler's tick if it is due, and the end of the slice; re-arms the LAPIC.
pub fn tick(hv: &mut Hv) {
    let now = events::now();
    if now >= hv.pc.next_tick {
        // The scheduler's tick: charges the running vCPU, ends a boost, runs accounting.
        crate::schedule::tick(hv.pc, now);
        hv.pc.next_tick = now + hv_core::sched::TICK_NS;
    }
    if hv.pc.slice_until != 0 && now >= hv.pc.slice_until {
        hv.pc.need_resched = true;
    }
    arm(hv.pc, None);
}


/// Asks vCPU `v`'s home CPU to arm its LAPIC again (its timers changed from another CPU).
pub fn rearm_home(pc: &PerCpu, d: &DomShared, v: u32) {
    let Some(t) = d.timers.get(v as usize) else { return };
    let home = t.home.load(Ordering::Relaxed);
    if home == pc.id {
        arm(pc, None);
    } else if let Some(&apic) = crate::machine::get().apic_ids.get(home) {
        crate::percpu::poke(home, apic);
    }
}
