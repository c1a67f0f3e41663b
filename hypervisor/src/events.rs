//! Time and event state of domains: system time, pvclock and wallclock records, the LAPIC
//! deadline from guest timers, whether an upcall is due, and VIRQs (which return the vCPU to
//! wake, `schedule::send_virq` wakes it).

use crate::domain::{vi, DomShared};
use crate::percpu::PerCpu;
use alloc::sync::Arc;
use core::sync::atomic::Ordering;
use hv_arch::entry::TrapFrame;
use hv_arch::physmem::DirectMap;
use hv_core::mem::{Mfn, PhysMem};


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
pub fn update_time(d: &crate::domain::DomShared, v: u32) {
    let (tsc, ns) = hv_arch::time::now_pair();
    let (mul, shift) = hv_arch::time::scale();
    let Some(at) = d.vcpu_info.get(v) else { return };
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
pub fn set_wallclock(d: &DomShared, boot_unix: u64) {
    let mut f = [0u8; 12];
    f[..4].copy_from_slice(&(boot_unix as u32).to_le_bytes());
    f[8..12].copy_from_slice(&((boot_unix >> 32) as u32).to_le_bytes());
    use guest_abi::shared_info::SharedInfo;
    let (version, data) = (core::mem::offset_of!(SharedInfo, wc_version), core::mem::offset_of!(SharedInfo, wc_sec));
    write_versioned(d.shared_info, version, data, &f);
}



/// Is an upcall due for vCPU `v` (pending and not masked)?
pub fn upcall_due(d: &DomShared, v: u32) -> bool {
    d.vcpu_info.upcall_due(v)
}


/// Must vCPU `v`, about to resume with `f`, first take an upcall (it has an event callback,
/// it resumes in the guest, and an upcall is pending and not masked)? Needs no lock.
#[inline]
pub fn upcall_owed(v: &crate::vcpu::Vcpu, f: &TrapFrame) -> bool {
    f.cs & 3 != 0 && v.callbacks.event != 0 && v.shared.vcpu_info.upcall_due(v.id)
}

/// Sets vCPU `v`'s upcall mask.
pub fn set_upcall_mask(d: &DomShared, v: u32, val: u8) {
    d.vcpu_info.set_byte(v, vi::UPCALL_MASK, val);
}

/// Housekeeping period (console input polling).
const HOUSEKEEPING_NS: u64 = 10_000_000;

/// Every live domain (a snapshot).
pub fn domains() -> impl Iterator<Item = Arc<DomShared>> {
    crate::domain::all().filter(|d| !d.is_dead())
}

/// The vCPUs of `d` whose timers this CPU fires (up, and last run here).
pub fn homed<'a>(d: &'a DomShared, cpu: usize) -> impl Iterator<Item = (u32, &'a crate::domain::VcpuTimer)> + 'a {
    d.timers.iter().enumerate().map(|(v, t)| (v as u32, t)).filter(move |&(v, t)| t.home.load(Ordering::Relaxed) == cpu && d.is_up(v))
}

/// Programs this CPU's LAPIC for the earliest of: a timer or poll timeout of a vCPU homed
/// here, the end of the current slice, the scheduler's next tick, `extra`, and one
/// housekeeping period from now. (Timers of down vCPUs and dead domains never fire: they
/// arm nothing either.)
pub fn arm(pc: &PerCpu, extra: Option<u64>) {
    let now = now();
    let mut next = now + HOUSEKEEPING_NS;
    for d in domains() {
        for (_, t) in homed(&d, pc.id) {
            let period = (t.period.load(Ordering::Relaxed) != 0).then(|| t.period_next.load(Ordering::Relaxed));
            let single = Some(t.single.load(Ordering::Relaxed)).filter(|&x| x != 0);
            let poll = Some(t.poll.load(Ordering::Relaxed)).filter(|&x| x != 0);
            for x in [single, period, poll].into_iter().flatten() {
                next = next.min(x);
            }
        }
    }
    if pc.slice_until != 0 {
        next = next.min(pc.slice_until);
    }
    next = next.min(pc.next_tick.max(now + 1));
    if let Some(t) = extra {
        next = next.min(t);
    }
    hv_arch::lapic::arm(hv_arch::time::ns_to_tsc(next));
}
