//! `vcpu_op` and `set_timer_op` (one vCPU per domain so far).

use super::{read_guest, write_guest, HcResult};
use crate::events::{arm, now};
use crate::Hv;
use guest_abi::errno::Errno;

pub const VCPUOP_IS_UP: u64 = 3;
pub const VCPUOP_GET_RUNSTATE_INFO: u64 = 4;
pub const VCPUOP_SET_PERIODIC_TIMER: u64 = 6;
pub const VCPUOP_STOP_PERIODIC_TIMER: u64 = 7;
pub const VCPUOP_SET_SINGLESHOT_TIMER: u64 = 8;
pub const VCPUOP_STOP_SINGLESHOT_TIMER: u64 = 9;
/// `VCPU_SSHOTTMR_future`: fail with -ETIME if the deadline has passed.
const SSHOT_FUTURE: u32 = 1;
/// Shortest periodic timer accepted (as Xen: 1 ms).
const MIN_PERIOD_NS: u64 = 1_000_000;
/// Longest periodic timer accepted (one day): keeps every deadline far from overflow.
const MAX_PERIOD_NS: u64 = 86_400 * 1_000_000_000;

pub fn vcpu_op(hv: &mut Hv, cmd: u64, vcpu: u64, arg: u64) -> HcResult {
    if vcpu != hv.cur.vcpu.id as u64 {
        return Err(Errno::ENOENT);
    }
    match cmd {
        VCPUOP_IS_UP => Ok(1),
        VCPUOP_GET_RUNSTATE_INFO => {
            let (state, entry, times) = hv.cur.vcpu.runstate_at(now());
            let mut b = [0u8; 48];
            b[..4].copy_from_slice(&state.to_le_bytes());
            b[8..16].copy_from_slice(&entry.to_le_bytes());
            for (i, t) in times.iter().enumerate() {
                b[16 + 8 * i..24 + 8 * i].copy_from_slice(&t.to_le_bytes());
            }
            write_guest(hv, arg, &b)?;
            Ok(0)
        }
        VCPUOP_SET_PERIODIC_TIMER => {
            let mut b = [0u8; 8];
            read_guest(hv, arg, &mut b)?;
            let p = u64::from_le_bytes(b);
            if !(MIN_PERIOD_NS..=MAX_PERIOD_NS).contains(&p) {
                return Err(Errno::EINVAL);
            }
            let v = &mut hv.cur.vcpu;
            v.period_ns = p;
            v.period_next = now() + p;
            arm(hv, None);
            Ok(0)
        }
        VCPUOP_STOP_PERIODIC_TIMER => {
            hv.cur.vcpu.period_ns = 0;
            Ok(0)
        }
        VCPUOP_SET_SINGLESHOT_TIMER => {
            let mut b = [0u8; 16];
            read_guest(hv, arg, &mut b[..12])?;
            let t = u64::from_le_bytes(b[..8].try_into().unwrap_or_default());
            let flags = u32::from_le_bytes(b[8..12].try_into().unwrap_or_default());
            if flags & SSHOT_FUTURE != 0 && t < now() {
                return Err(Errno::ETIME);
            }
            hv.cur.vcpu.single_deadline = Some(t);
            crate::events::process_timers(hv);
            Ok(0)
        }
        VCPUOP_STOP_SINGLESHOT_TIMER => {
            hv.cur.vcpu.single_deadline = None;
            Ok(0)
        }
        _ => Err(Errno::ENOSYS),
    }
}

/// `set_timer_op(timeout)`: a one-shot VIRQ_TIMER at absolute system time; 0 cancels; a time
/// in the past fires at once.
pub fn set_timer_op(hv: &mut Hv, timeout: u64) -> HcResult {
    hv.cur.vcpu.single_deadline = (timeout != 0).then_some(timeout);
    crate::events::process_timers(hv);
    Ok(0)
}
