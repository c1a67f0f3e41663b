//! `multicall(list, nr)`: runs a batch of hypercalls, writing each entry's result.
//!
//! Nested multicalls get `-EINVAL`. An entry that changes the vCPU's privilege or stack
//! context (`iret`, `sched_op`, `stack_switch`) ends the batch after it runs (the XSA-213
//! lesson: later entries must not run in a context the guest no longer has).
//!
//! Preemption, as Xen: the batch continues later (a continuation of `multicall` at the
//! current entry) when the hypercall's work budget is spent between entries, and when an
//! inner call is preempted itself: its continuation arguments are written back into its
//! entry, which the continued multicall then runs again.

use super::{continuation, read_guest, write_guest, Args, HcResult};
use crate::Hv;
use guest_abi::errno::Errno;
use guest_abi::hypercall as nr;
use hv_arch::entry::TrapFrame;

const ENTRY: u64 = 64;

fn ends_batch(op: u64) -> bool {
    matches!(op, nr::IRET | nr::SCHED_OP | nr::SCHED_OP_COMPAT | nr::STACK_SWITCH)
}

pub fn multicall(hv: &mut Hv, f: &mut TrapFrame, list: u64, count: u64) -> HcResult {
    if hv.pc.in_multicall {
        return Err(Errno::EINVAL);
    }
    // The domain's memory lock for the whole batch if it is free: its entries and the
    // copies of the list then need no frame holds (every entry acts on the current vCPU and
    // its domain). Never waited for here, under the hypervisor lock: a sibling vCPU's
    // page-table work may hold it for a while; the batch then runs with holds instead.
    let shared = hv.pc.cur.shared.clone();
    let mut mm = shared.try_mm();
    let hv = &mut Hv { pc: &mut *hv.pc, g: &mut *hv.g, mm: mm.as_deref_mut() };
    for i in 0..count {
        let at = list.wrapping_add(ENTRY * i);
        if i > 0 && super::preempt(hv, 1) {
            return continuation(f, nr::MULTICALL, [at, count - i, 0, 0]);
        }
        let mut b = [0u8; 64];
        read_guest(hv, at, &mut b)?;
        let word = |k: usize| u64::from_le_bytes(b[8 * k..8 * k + 8].try_into().unwrap_or_default());
        let op = word(0);
        let args = Args([word(2), word(3), word(4), word(5), word(6)]);
        let r = if op == nr::MULTICALL {
            Err(Errno::EINVAL)
        } else {
            // The inner call's own frame: a continuation it makes lands here, not in `f`.
            let mut g = *f;
            hv.pc.in_multicall = true;
            let r = super::call(hv, &mut g, op, args);
            hv.pc.in_multicall = false;
            if r == Err(Errno::ERESTART) {
                let mut a = [0u8; 32];
                for (k, v) in [g.rdi, g.rsi, g.rdx, g.r10].iter().enumerate() {
                    a[8 * k..8 * k + 8].copy_from_slice(&v.to_le_bytes());
                }
                write_guest(hv, at.wrapping_add(16), &a)?;
                return continuation(f, nr::MULTICALL, [at, count - i, 0, 0]);
            }
            r
        };
        let v = match r {
            Ok(v) => v,
            Err(e) => e.to_ret(),
        };
        write_guest(hv, at.wrapping_add(8), &v.to_le_bytes())?;
        if ends_batch(op) {
            break;
        }
    }
    Ok(0)
}
