//! `sched_op`: yield, block, poll and shutdown of the calling vCPU (shutdown: its domain).

use super::{read_guest, HcResult};
use crate::Hv;
use guest_abi::errno::Errno;
use guest_abi::sched::*;
use core::sync::atomic::Ordering;
use hv_arch::entry::TrapFrame;
use hv_core::evtchn::Table;

fn shutdown(hv: &mut Hv, f: &TrapFrame, reason: u64) -> HcResult {
    let r = u32::try_from(reason).ok().and_then(ShutdownReason::from_u32).ok_or(Errno::EINVAL)?;
    let crash = r == ShutdownReason::Crash;
    if crash {
        log::error!("d{}v{} requested a crash shutdown", hv.pc.cur.dom, hv.pc.cur.id);
    }
    log::info!("d{}: shutdown: reason {}", hv.pc.cur.dom, r.name());
    crate::bounce::domain_ended(hv, r, crash.then_some((f, 0)));
    Ok(0)
}

/// Most ports one `SCHEDOP_poll` may name.
const MAX_POLL_PORTS: u32 = 128;

/// `SCHEDOP_block`: re-enables events and sleeps until one is pending (returns at once if
/// one already is: no lost wake-up).
fn block(hv: &mut Hv) -> HcResult {
    let (d, v) = (hv.pc.cur.shared.clone(), hv.pc.cur.id);
    crate::events::set_upcall_mask(&d, v, 0);
    // Announced before the last look (made under the run-queue lock a waker takes:
    // `schedule::block_current`): an event sent without that lock sees the bit, or the
    // look sees the event (`ports::notify_lockfree`).
    d.sleeping.fetch_or(1 << v, Ordering::SeqCst);
    crate::schedule::block_current(hv, crate::schedule::Sleep::Block);
    Ok(0)
}

/// `SCHEDOP_poll`: sleeps until one of the ports is pending or the timeout (absolute system
/// time, 0 = none) passes. Works with events masked.
fn poll(hv: &mut Hv, arg: u64) -> HcResult {
    let mut b = [0u8; 24];
    read_guest(hv, arg, &mut b)?;
    let ports = u64::from_le_bytes(b[..8].try_into().unwrap_or_default());
    let nr = u32::from_le_bytes(b[8..12].try_into().unwrap_or_default());
    let timeout = u64::from_le_bytes(b[16..24].try_into().unwrap_or_default());
    if nr > MAX_POLL_PORTS {
        return Err(Errno::EINVAL);
    }
    let mut list = alloc::vec::Vec::with_capacity(nr as usize);
    let (d, me, v) = (hv.pc.cur.shared.clone(), hv.pc.cur.dom, hv.pc.cur.id);
    for i in 0..nr as u64 {
        let mut w = [0u8; 4];
        read_guest(hv, ports.wrapping_add(4 * i), &mut w)?;
        let p = u32::from_le_bytes(w);
        crate::ports::Locked::new(&d, None).pair().status(me, p)?;
        list.push(p);
    }
    if list.is_empty() || (timeout != 0 && crate::events::now() >= timeout) {
        return Ok(0);
    }
    // Announced before the last look (see `block`).
    d.polling.fetch_or(1 << v, Ordering::SeqCst);
    d.sleeping.fetch_or(1 << v, Ordering::SeqCst);
    if crate::ports::any_pending(&d, &list) {
        d.polling.fetch_and(!(1 << v), Ordering::SeqCst);
        d.sleeping.fetch_and(!(1 << v), Ordering::SeqCst);
        return Ok(0);
    }
    if let Some(t) = d.timers.get(v as usize) {
        t.poll.store(timeout, Ordering::Relaxed);
    }
    crate::schedule::block_current(hv, crate::schedule::Sleep::Poll(list));
    Ok(0)
}

pub fn sched_op(hv: &mut Hv, f: &TrapFrame, cmd: u64, arg: u64) -> HcResult {
    match cmd {
        SCHEDOP_YIELD => {
            hv.pc.yielded = true;
            Ok(0)
        }
        SCHEDOP_BLOCK => block(hv),
        SCHEDOP_POLL => poll(hv, arg),
        SCHEDOP_SHUTDOWN => {
            let mut b = [0u8; 4];
            read_guest(hv, arg, &mut b)?;
            shutdown(hv, f, u32::from_le_bytes(b) as u64)
        }
        _ => Err(Errno::ENOSYS),
    }
}

/// Legacy `sched_op_compat(cmd, arg)`: the shutdown reason is the argument itself.
pub fn sched_op_compat(hv: &mut Hv, f: &TrapFrame, cmd: u64, arg: u64) -> HcResult {
    match cmd {
        SCHEDOP_YIELD => {
            hv.pc.yielded = true;
            Ok(0)
        }
        SCHEDOP_BLOCK => block(hv),
        SCHEDOP_SHUTDOWN => shutdown(hv, f, arg),
        _ => Err(Errno::ENOSYS),
    }
}
