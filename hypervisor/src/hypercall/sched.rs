//! `sched_op`: so far yield and shutdown (one vCPU, no events yet).

use super::{read_guest, HcResult};
use crate::Hv;
use guest_abi::errno::Errno;
use guest_abi::harness::ExitCode;
use guest_abi::sched::*;
use hv_arch::entry::TrapFrame;

fn shutdown(hv: &mut Hv, f: &TrapFrame, reason: u64) -> HcResult {
    let r = u32::try_from(reason).ok().and_then(ShutdownReason::from_u32).ok_or(Errno::EINVAL)?;
    let code = match r {
        ShutdownReason::Poweroff => ExitCode::Poweroff,
        ShutdownReason::Reboot => ExitCode::Reboot,
        ShutdownReason::Suspend => ExitCode::Suspend,
        ShutdownReason::Crash => ExitCode::Crash,
        _ => ExitCode::OtherShutdown,
    };
    if r == ShutdownReason::Crash {
        log::error!("d{} requested a crash shutdown", hv.dom0.id);
        crate::traps::dump(f, 0);
    }
    log::info!("d{}: shutdown: reason {}", hv.dom0.id, r.name());
    hv.end_run("Domain 0 shut down", code)
}

pub fn sched_op(hv: &mut Hv, f: &TrapFrame, cmd: u64, arg: u64) -> HcResult {
    match cmd {
        SCHEDOP_YIELD => Ok(0),
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
        SCHEDOP_YIELD => Ok(0),
        SCHEDOP_SHUTDOWN => shutdown(hv, f, arg),
        _ => Err(Errno::ENOSYS),
    }
}
