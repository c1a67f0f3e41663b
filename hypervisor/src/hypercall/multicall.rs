//! `multicall(list, nr)`: runs a batch of hypercalls, writing each entry's result.
//!
//! Nested multicalls get `-EINVAL`. An entry that changes the vCPU's privilege or stack
//! context (`iret`, `sched_op`, `stack_switch`) ends the batch after it runs (the XSA-213
//! lesson: later entries must not run in a context the guest no longer has). A Xen pv64
//! vCPU's `iret` entry returns as `HYPERVISOR_iret` would, there and then.
//!
//! Preemption, as Xen: the batch continues later (a continuation of `multicall` at the
//! current entry) when the hypercall's work budget is spent between entries or this CPU
//! must pick again (an entry took the vCPU down or ended its domain, a wake-up asked for the
//! CPU: a later entry must not run while the scheduler moves the vCPU off this CPU), and when an inner call is preempted itself:
//! its continuation arguments are written back into its entry, which the continued
//! multicall then runs again.

use super::{continuation, read_guest, write_guest, Args, HcResult, Mx};
use crate::domain::DomShared;
use crate::percpu::PerCpu;
use guest_abi::errno::Errno;
use guest_abi::hypercall as nr;
use hv_arch::entry::TrapFrame;

const ENTRY: u64 = 64;

fn ends_batch(op: u64) -> bool {
    matches!(op, nr::IRET | nr::SCHED_OP | nr::SCHED_OP_COMPAT | nr::STACK_SWITCH)
}

/// The domain's memory lock, when a batch holds it.
type MmGuard<'a> = crate::locks::Ordered<spin::mutex::TicketMutexGuard<'a, crate::domain::DomMm>>;

/// Runs on the fast path (`super::fast_path`). The batch holds the domain's memory lock (its
/// entries and the copies of the list then need no frame holds: every entry acts on the
/// current vCPU and its domain) except around an entry of the scheduler kind (`vcpu_op`,
/// `sched_op`), which takes run-queue locks: the memory lock is let go first (run-queue
/// locks come before it).
pub fn multicall(pc: &mut PerCpu, f: &mut TrapFrame, list: u64, count: u64) -> HcResult {
    if pc.in_multicall {
        return Err(Errno::EINVAL);
    }
    let shared = pc.cur.shared.clone();
    let mut mm: Option<MmGuard<'_>> = None;
    let mut inner = *f;
    for i in 0..count {
        let at = list.wrapping_add(ENTRY * i);
        let g = mm.get_or_insert_with(|| shared.mm());
        let mx = &mut Mx { pc: &mut *pc, mm: g };
        // As Xen's hypercall_preempt_check: the budget is spent, or this CPU must pick again
        // (an entry took the vCPU down or ended its domain, a wake-up asked for the CPU): the
        // rest of the batch is re-issued when the vCPU next runs.
        if i > 0 && (mx.pc.need_resched || mx.pc.yielded || super::preempt(mx, 1)) {
            return continuation(f, nr::MULTICALL, [at, count - i, 0, 0]);
        }
        let mut b = [0u8; 64];
        read_guest(mx, at, &mut b)?;
        let word = |k: usize| u64::from_le_bytes(b[8 * k..8 * k + 8].try_into().unwrap_or_default());
        let op = word(0);
        let args = Args([word(2), word(3), word(4), word(5), word(6)]);
        if op == nr::IRET && shared.pv64 {
            // Xen's `mc_exit`: the iret acts on the vCPU itself (the iret frame at its
            // stack, as the `iret` stub leaves it) and ends the batch; the multicall's
            // result is the frame's RAX, left in RAX. The entry's result is not written:
            // the vCPU may be in user mode now, on its user root.
            drop(mm);
            crate::pv64::iret(&mut crate::Hv { pc }, f);
            return Ok(f.rax as i64);
        }
        let r = if op == nr::MULTICALL {
            Err(Errno::EINVAL)
        } else {
            // The inner call's own frame: a continuation it makes lands here, not in `f`
            // (what a call reads or rewrites of it is reset for each entry).
            inner.rip = f.rip;
            (inner.rax, inner.rdi, inner.rsi, inner.rdx, inner.r10, inner.r8) = (op, args.0[0], args.0[1], args.0[2], args.0[3], args.0[4]);
            pc.in_multicall = true;
            let r = entry(pc, &mut mm, &shared, &mut inner, op, args);
            pc.in_multicall = false;
            if r == Err(Errno::ERESTART) {
                let mut a = [0u8; 32];
                for (k, v) in [inner.rdi, inner.rsi, inner.rdx, inner.r10].iter().enumerate() {
                    a[8 * k..8 * k + 8].copy_from_slice(&v.to_le_bytes());
                }
                let g = mm.get_or_insert_with(|| shared.mm());
                write_guest(&Mx { pc: &mut *pc, mm: g }, at.wrapping_add(16), &a)?;
                return continuation(f, nr::MULTICALL, [at, count - i, 0, 0]);
            }
            r
        };
        let v = match r {
            Ok(v) => v,
            Err(e) => e.to_ret(),
        };
        let g = mm.get_or_insert_with(|| shared.mm());
        write_guest(&Mx { pc: &mut *pc, mm: g }, at.wrapping_add(8), &v.to_le_bytes())?;
        if ends_batch(op) {
            break;
        }
    }
    Ok(0)
}

/// One entry of a batch: with the memory lock (`mm`, taken if the batch let it go) for the
/// domain-class and lock-free kinds; without it for the scheduler kind (whose run-queue
/// locks come before the memory lock).
fn entry<'s>(pc: &mut PerCpu, mm: &mut Option<MmGuard<'s>>, shared: &'s DomShared, f: &mut TrapFrame, n: u64, a: Args) -> HcResult {
    if super::class(n, a.0[0]) == super::Class::Sched {
        *mm = None;
        return super::call(&mut crate::Hv { pc }, f, n, a);
    }
    let g = mm.get_or_insert_with(|| shared.mm());
    super::call_unlocked(&mut Mx { pc, mm: g }, f, n, a)
}
