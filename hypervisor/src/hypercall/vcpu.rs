//! `vcpu_op` (bringing vCPUs up and down, their context, `vcpu_info` placement, timers,
//! runstate) and `set_timer_op`.

use super::{read_guest, write_guest, HcResult};
use crate::domain::{vi, VcpuInfoAt};
use crate::events::now;
use core::sync::atomic::Ordering;
use crate::Hv;
use guest_abi::errno::Errno;
use hv_arch::physmem::DirectMap;
use hv_core::mem::{Mfn, PhysMem};
pub use guest_abi::vcpu::*;

/// `VCPU_SSHOTTMR_future`: fail with -ETIME if the deadline has passed.
const SSHOT_FUTURE: u32 = 1;
/// Shortest periodic timer accepted (as Xen: 1 ms).
const MIN_PERIOD_NS: u64 = 1_000_000;
/// Longest periodic timer accepted (one day): keeps every deadline far from overflow.
const MAX_PERIOD_NS: u64 = 86_400 * 1_000_000_000;

pub fn vcpu_op(hv: &mut Hv, cmd: u64, vcpu: u64, arg: u64) -> HcResult {
    let d = hv.pc.cur.shared.clone();
    if vcpu >= d.nr_vcpus() as u64 {
        return Err(Errno::ENOENT);
    }
    let id = vcpu as u32;
    let sid = crate::vcpu::sched_id(d.id, id);
    match cmd {
        VCPUOP_INITIALISE => initialise(hv, id, arg),
        VCPUOP_UP => up(hv, &d, id).map(|()| 0),
        VCPUOP_DOWN => {
            // The last vCPU up going down powers the domain off (as Xen): the up mask loses
            // the bit only while another bit remains, so two vCPUs downing each other from
            // two CPUs cannot both go.
            enum Down {
                Already,
                Last,
                Stopped(Option<usize>),
            }
            let t = now();
            let r = crate::state::with_owner(&d, id, |rq| {
                let s = rq.payload_mut(sid).ok_or(Errno::ENOENT)?;
                if s.state.down {
                    return Ok::<_, Errno>(Down::Already);
                }
                let bit = 1u64 << id;
                let cleared = d.up.fetch_update(Ordering::AcqRel, Ordering::Acquire, |m| (m & !bit != 0).then_some(m & !bit));
                if cleared.is_err() {
                    return Ok(Down::Last);
                }
                s.state.down = true;
                Ok(Down::Stopped(crate::schedule::stop_locked(rq, sid, t)))
            })
            .ok_or(Errno::ENOENT)??;
            match r {
                Down::Already | Down::Stopped(None) => {}
                Down::Last => crate::bounce::domain_ended(hv, guest_abi::sched::ShutdownReason::Poweroff, None),
                Down::Stopped(Some(cpu)) => crate::schedule::stopped_on(hv.pc, &d, id, cpu),
            }
            Ok(0)
        }
        VCPUOP_GET_RUNSTATE_INFO => {
            let t = now();
            let (state, entry, times) = crate::state::with_owner(&d, id, |rq| rq.payload(sid).map(|s| s.state.runstate_at(t)))
                .flatten()
                .ok_or(Errno::ENOENT)?;
            let mut b = [0u8; 48];
            b[..4].copy_from_slice(&state.to_le_bytes());
            b[8..16].copy_from_slice(&entry.to_le_bytes());
            for (i, t) in times.iter().enumerate() {
                b[16 + 8 * i..24 + 8 * i].copy_from_slice(&t.to_le_bytes());
            }
            write_guest(hv, arg, &b)?;
            Ok(0)
        }
        VCPUOP_REGISTER_VCPU_INFO => register_vcpu_info(hv, id, arg),
        _ => match local_op(hv.pc, cmd, vcpu, arg) {
            Some((r, wake)) => {
                if wake {
                    crate::schedule::check_sleepers(hv);
                }
                r
            }
            None => Err(Errno::ENOSYS),
        },
    }
}

/// Brings up vCPU `id` of `d`, which has a context (-EINVAL if not); nothing if it is up.
pub fn up(hv: &mut Hv, d: &crate::domain::DomShared, id: u32) -> Result<(), Errno> {
    let sid = crate::vcpu::sched_id(d.id, id);
    // Under the lock of the queue owning the vCPU: an up and a down of one vCPU from two
    // CPUs happen one after the other.
    let r = crate::state::with_owner(d, id, |rq| {
        let s = rq.payload_mut(sid).ok_or(Errno::ENOENT)?;
        if !s.state.initialised {
            return Err(Errno::EINVAL);
        }
        if !s.state.down {
            return Ok(false);
        }
        s.state.down = false;
        d.set_up(id, true);
        Ok(true)
    })
    .ok_or(Errno::ENOENT)??;
    if r {
        crate::schedule::wake_shared(hv.pc, d, id);
    }
    Ok(())
}

/// Does `vcpu_op(cmd, ..)` run without a run-queue lock ([`local_op`])?
pub fn is_local_op(cmd: u64) -> bool {
    matches!(
        cmd,
        VCPUOP_IS_UP | VCPUOP_SET_PERIODIC_TIMER | VCPUOP_STOP_PERIODIC_TIMER | VCPUOP_SET_SINGLESHOT_TIMER | VCPUOP_STOP_SINGLESHOT_TIMER
    )
}

/// The `vcpu_op` commands that need no run-queue lock: timers (atomics in the domain,
/// `crate::timers`) and `is_up` (the domain's up mask). `None` for the others. With the
/// result, whether a sleeper may need waking.
pub fn local_op(pc: &mut crate::percpu::PerCpu, cmd: u64, vcpu: u64, arg: u64) -> Option<(HcResult, bool)> {
    if !is_local_op(cmd) {
        return None;
    }
    let d = pc.cur.shared.clone();
    if vcpu >= d.vcpu_info.len() as u64 {
        return Some((Err(Errno::ENOENT), false));
    }
    let id = vcpu as u32;
    let is_me = id == pc.cur.id;
    Some(match cmd {
        VCPUOP_IS_UP => (Ok(i64::from(d.is_up(id))), false),
        VCPUOP_SET_PERIODIC_TIMER => {
            let mut b = [0u8; 8];
            if let Err(e) = read_guest(&*pc, arg, &mut b) {
                return Some((Err(e), false));
            }
            let p = u64::from_le_bytes(b);
            if !(MIN_PERIOD_NS..=MAX_PERIOD_NS).contains(&p) {
                return Some((Err(Errno::EINVAL), false));
            }
            if let Some(t) = d.timers.get(id as usize) {
                t.period.store(0, Ordering::SeqCst);
                t.period_next.store(now() + p, Ordering::SeqCst);
                t.period.store(p, Ordering::SeqCst);
            }
            crate::timers::rearm_home(pc, &d, id);
            (Ok(0), false)
        }
        VCPUOP_STOP_PERIODIC_TIMER => {
            if let Some(t) = d.timers.get(id as usize) {
                t.period.store(0, Ordering::SeqCst);
            }
            (Ok(0), false)
        }
        // As Xen: one-shot timers only on the calling vCPU.
        _ if !is_me => (Err(Errno::EINVAL), false),
        VCPUOP_SET_SINGLESHOT_TIMER => {
            let mut b = [0u8; 16];
            if let Err(e) = read_guest(&*pc, arg, &mut b[..12]) {
                return Some((Err(e), false));
            }
            let t = u64::from_le_bytes(b[..8].try_into().unwrap_or_default());
            let flags = u32::from_le_bytes(b[8..12].try_into().unwrap_or_default());
            if flags & SSHOT_FUTURE != 0 && t < now() {
                return Some((Err(Errno::ETIME), false));
            }
            (Ok(0), set_timer(pc, t.max(1)))
        }
        _ => (Ok(0), set_timer(pc, 0)),
    })
}

/// `set_timer_op(timeout)`: a one-shot VIRQ_TIMER at absolute system time; 0 cancels; a time
/// in the past fires at once. Needs no lock (`crate::timers`); returns whether a sleeper may
/// need waking.
pub fn set_timer_op(pc: &mut crate::percpu::PerCpu, timeout: u64) -> (HcResult, bool) {
    (Ok(0), set_timer(pc, timeout))
}

/// Sets the current vCPU's one-shot timer (0: none) and fires it if due.
fn set_timer(pc: &mut crate::percpu::PerCpu, deadline: u64) -> bool {
    let (d, v) = (pc.cur.shared.clone(), pc.cur.id);
    let Some(t) = d.timers.get(v as usize) else { return false };
    t.home.store(pc.id, Ordering::Relaxed);
    if deadline != 0 && deadline <= now() {
        // Due already: it fires here and now (as Xen's `set_timer` of a past time), and
        // is not left set. The LAPIC keeps whatever it was armed for (a deadline that
        // passes with nothing due just re-arms it).
        t.single.store(0, Ordering::Release);
        return crate::timers::raise(pc.id, &d, guest_abi::evtchn::VIRQ_TIMER, v);
    }
    t.single.store(deadline, Ordering::Release);
    crate::events::arm(pc, None);
    false
}

/// `VCPUOP_register_vcpu_info {mfn, offset}`: moves vCPU `id`'s `vcpu_info` into a page of
/// the domain's own (held with a writable type reference, so it can never become a page
/// table or descriptor page). Once per vCPU; the area must not cross the page.
fn register_vcpu_info(hv: &mut Hv, id: u32, arg: u64) -> HcResult {
    let mut b = [0u8; 16];
    read_guest(hv, arg, &mut b)?;
    let mfn = Mfn(u64::from_le_bytes(b[..8].try_into().unwrap_or_default()));
    let offset = u32::from_le_bytes(b[8..12].try_into().unwrap_or_default()) as usize;
    // Claimed once (as Xen): a second call, or one racing it from another CPU, fails.
    let bit = 1u64 << id;
    if offset > 4096 - vi::SIZE || hv.dom().vcpu_info_registered.fetch_or(bit, Ordering::AcqRel) & bit != 0 {
        return Err(Errno::EINVAL);
    }
    let dom = hv.pc.cur.dom;
    let mut dm = DirectMap;
    // The move happens under the memory lock: a bounce of vCPU `id` on another CPU writes its
    // vcpu_info (event mask, CR2) under that lock alone, and must land in the area that is
    // current.
    super::with_mm(hv, |mx| {
        crate::guest::pt!(mx, dm).get_writable_page(mfn, dom)?;
        // Carry the current contents over; then mark everything pending so that nothing
        // raised around the move is lost (as Xen does).
        let infos = &mx.pc.cur.shared.vcpu_info;
        let mut c = [0u8; vi::SIZE];
        if let Some(at) = infos.get(id) {
            DirectMap.read(at.frame, at.offset, &mut c);
        }
        c[vi::UPCALL_PENDING] = 1;
        c[vi::PENDING_SEL..vi::PENDING_SEL + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        DirectMap.write(mfn, offset, &c);
        infos.set(id, VcpuInfoAt { frame: mfn, offset });
        Ok::<(), hv_core::pt::PtError>(())
    })
    .map_err(|_| {
        hv.dom().vcpu_info_registered.fetch_and(!bit, Ordering::AcqRel);
        Errno::EINVAL
    })?;
    crate::schedule::wake(hv, dom, id);
    Ok(0)
}



/// `VCPUOP_initialise(vcpu, vcpu_guest_context)`: gives a vCPU that has never run its
/// registers, trap table, callbacks, kernel stack, page-table root, GDT and LDT; it stays
/// down until `VCPUOP_up`. Once only (-EEXIST). Every field is checked as the hypercall
/// that would set it checks it; on any failure nothing is kept. Never inlined: its 4 KiB
/// trap table must not enlarge the stack frame of the hypercall dispatch.
#[inline(never)]
fn initialise(hv: &mut Hv, id: u32, arg: u64) -> HcResult {
    // Claimed once: a second call, or one racing it from another CPU, gets -EEXIST; a
    // failure below gives the claim back.
    let d = hv.pc.cur.shared.clone();
    let bit = 1u64 << id;
    if d.claimed.fetch_or(bit, Ordering::AcqRel) & bit != 0 {
        return Err(Errno::EEXIST);
    }
    let r = initialise_claimed(hv, id, arg);
    if r.is_err() {
        d.claimed.fetch_and(!bit, Ordering::AcqRel);
    }
    r
}

fn initialise_claimed(hv: &mut Hv, id: u32, arg: u64) -> HcResult {
    let mut c = alloc::vec![0u8; ctx::SIZE];
    read_guest(hv, arg, &mut c)?;
    let k = super::context::parse(&c, hv.pc.cur.shared.pv64)?;
    let d = hv.pc.cur.shared.clone();
    let owner = hv.pc.cur.id;
    super::context::install(hv, &d, id, owner, &k)
}
