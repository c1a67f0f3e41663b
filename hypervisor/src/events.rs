//! Events for domains: the 2-level bits in shared_info, time (pvclock, wallclock), guest
//! timers, and upcall delivery on the way back to a guest.

use crate::domain::{vi, Domain};
use crate::Hv;
use guest_abi::evtchn::{VIRQ_CONSOLE, VIRQ_TIMER};
use guest_abi::DomId;
use hv_arch::entry::TrapFrame;
use hv_arch::physmem::DirectMap;
use hv_core::evtchn::Table;
use hv_core::mem::{Mfn, PhysMem};

/// Housekeeping period (console input polling).
const HOUSEKEEPING_NS: u64 = 10_000_000;

/// Nanoseconds since boot.
pub fn now() -> u64 {
    hv_arch::time::now_ns()
}

/// Writes `fields` at byte `at` of a guest page under the 32-bit version word at byte `ver`,
/// seqlock-style as Xen's time records: version odd, the fields, version even (volatile
/// stores in program order; x86 keeps store order).
fn write_versioned(page: Mfn, ver: usize, at: usize, fields: &[u8]) {
    let mut dm = DirectMap;
    let mut v = [0u8; 4];
    if dm.read(page, ver, &mut v).is_none() {
        return;
    }
    let odd = u32::from_le_bytes(v).wrapping_add(1) | 1;
    dm.write(page, ver, &odd.to_le_bytes());
    dm.write(page, at, fields);
    dm.write(page, ver, &odd.wrapping_add(1).to_le_bytes());
}

/// Writes vCPU `v`'s `vcpu_time_info` (pvclock).
pub fn update_time(d: &Domain, v: u32) {
    let (tsc, ns) = hv_arch::time::now_pair();
    let (mul, shift) = hv_arch::time::scale();
    let Some(at) = d.vi_at(v) else { return };
    let mut f = [0u8; 22];
    f[..8].copy_from_slice(&tsc.to_le_bytes());
    f[8..16].copy_from_slice(&ns.to_le_bytes());
    f[16..20].copy_from_slice(&mul.to_le_bytes());
    f[20] = shift as u8;
    f[21] = 1; // TSC_STABLE
    let base = at.offset + vi::TIME;
    write_versioned(at.frame, base, base + 8, &f);
}

/// Writes the wallclock (Unix time of system time 0) into shared_info.
pub fn set_wallclock(d: &Domain, boot_unix: u64) {
    let mut f = [0u8; 12];
    f[..4].copy_from_slice(&(boot_unix as u32).to_le_bytes());
    f[8..12].copy_from_slice(&((boot_unix >> 32) as u32).to_le_bytes());
    write_versioned(d.shared.shared_info, 3072, 3076, &f);
}

/// Raises a VIRQ on vCPU `vcpu` of `dom` (dropped if unbound), under `dom`'s event lock.
pub fn send_virq(hv: &mut Hv, dom: DomId, virq: u32, vcpu: u32) {
    let Some(d) = hv.g.domains.get(dom).filter(|d| !d.is_idle()).map(|d| d.shared.clone()) else { return };
    let k = {
        let mut l = crate::ports::Locked::new(&d, None);
        let mut bits = l.bits();
        l.pair().send_virq(dom, virq, vcpu, &mut bits)
    };
    kick(hv, k);
}

/// Fires due guest timers of every domain, polls console input, refreshes time, wakes
/// sleepers and re-arms the LAPIC.
pub fn process_timers(hv: &mut Hv) {
    let now = now();
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
                update_time(d, id);
            }
        }
    }
    for (dom, vcpu) in fired {
        send_virq(hv, dom, VIRQ_TIMER, vcpu);
    }
    if hv.pc.id == 0 && hv_arch::cpu::serial_has_input() {
        send_virq(hv, 0, VIRQ_CONSOLE, 0);
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
    arm(hv, None);
}

/// Programs the LAPIC for the earliest of: any guest timer or poll deadline, the end of the
/// current slice, `extra`, and one housekeeping period from now.
pub fn arm(hv: &Hv<'_>, extra: Option<u64>) {
    let mut next = now() + HOUSEKEEPING_NS;
    // Timers of down vCPUs and dead domains never fire (their deadlines are not advanced):
    // they must not arm the LAPIC either.
    let live = hv.g.domains.iter().filter(|d| d.dead.is_none()).flat_map(|d| d.vcpus.iter()).filter(|v| !v.down);
    for v in live {
        let poll = (v.blocked && v.poll_deadline != 0).then_some(v.poll_deadline);
        for t in [v.single_deadline, (v.period_ns != 0).then_some(v.period_next), poll].into_iter().flatten() {
            next = next.min(t);
        }
    }
    if hv.pc.slice_until != 0 {
        next = next.min(hv.pc.slice_until);
    }
    next = next.min(hv.pc.next_tick.max(now() + 1));
    if let Some(t) = extra {
        next = next.min(t);
    }
    hv_arch::lapic::arm(hv_arch::time::ns_to_tsc(next));
}

/// Acts on a vCPU that has a new event: wakes it if it sleeps.
pub fn kick(hv: &mut Hv, k: Option<hv_core::evtchn::Kick>) {
    if let Some(k) = k {
        crate::schedule::wake(hv, k.dom, k.vcpu);
    }
}

/// Is an upcall due for vCPU `v` (pending and not masked)?
pub fn upcall_due(d: &Domain, v: u32) -> bool {
    d.shared.vcpu_info.upcall_due(v)
}

/// On the way back to the guest: delivers a due upcall to the event callback (events are
/// masked on delivery, as Xen does).
#[inline]
pub fn deliver_upcall(hv: &mut Hv, f: &mut TrapFrame) {
    if upcall_owed(&hv.pc.cur, f) {
        let cb = hv.pc.cur.callbacks.event;
        crate::traps::enter_guest_handler(hv, f, cb, &[], true, "event upcall");
    }
}

/// Must vCPU `v`, about to resume with `f`, first take an upcall (it has an event callback,
/// it resumes in the guest, and an upcall is pending and not masked)? Needs no lock.
#[inline]
pub fn upcall_owed(v: &crate::domain::Vcpu, f: &TrapFrame) -> bool {
    f.cs & 3 != 0 && v.callbacks.event != 0 && v.shared.vcpu_info.upcall_due(v.id)
}

/// Sets vCPU `v`'s upcall mask.
pub fn set_upcall_mask(d: &Domain, v: u32, val: u8) {
    d.set_vi_byte(v, vi::UPCALL_MASK, val);
}
