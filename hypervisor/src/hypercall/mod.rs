//! Hypercall dispatch: number in RAX, arguments in RDI, RSI, RDX, R10, R8, result in RAX.
//!
//! Every argument is hostile. Guest pointers go through `hv_core::guest_access` (→ `-EFAULT`),
//! unknown numbers and sub-ops return `-ENOSYS`.

pub mod console;
mod desc;
mod evtchn;
mod memory;
pub mod mmu;
mod multicall;
mod sched;
mod traps;
pub mod vcpu;
mod version;

use crate::domain::with_view;
use crate::Hv;
use guest_abi::errno::Errno;
use guest_abi::hypercall as nr;
use hv_arch::entry::TrapFrame;
use hv_arch::physmem::DirectMap;
use hv_core::guest_access::{copy_from_guest, copy_to_guest};

/// A hypercall's result: a non-negative value or a Xen error.
pub type HcResult = Result<i64, Errno>;

/// Arguments as the guest passed them.
#[derive(Copy, Clone, Debug)]
pub struct Args(pub [u64; 5]);

/// Page-table entries one hypercall may validate or devalidate before it continues later.
pub const PT_BUDGET: u64 = 16384;

/// Hypercalls that change page tables or page types: they first advance the domain's
/// preempted (de)validation, and wait for it (are re-issued) while it is not done.
fn touches_page_tables(n: u64, a1: u64) -> bool {
    matches!(n, nr::MMU_UPDATE | nr::MMUEXT_OP | nr::UPDATE_VA_MAPPING | nr::UPDATE_VA_MAPPING_OTHERDOMAIN)
        || (n == nr::VCPU_OP && a1 == vcpu::VCPUOP_INITIALISE)
}

/// The hypercall table. A handler's `-ERESTART` without a continuation of its own means
/// "re-issue me unchanged".
pub(crate) fn call(hv: &mut Hv, f: &mut TrapFrame, n: u64, a: Args) -> HcResult {
    let [a1, a2, a3, a4, _a5] = a.0;
    let rip = f.rip;
    let r = if touches_page_tables(n, a1) && mmu::drive(hv).is_err() { Err(Errno::ERESTART) } else { call_one(hv, f, n, a) };
    if r == Err(Errno::ERESTART) && f.rip == rip {
        return continuation(f, n, [a1, a2, a3, a4]);
    }
    r
}

fn call_one(hv: &mut Hv, f: &mut TrapFrame, n: u64, a: Args) -> HcResult {
    let [a1, a2, a3, a4, _a5] = a.0;
    match n {
        nr::SET_TRAP_TABLE => traps::set_trap_table(hv, a1),
        nr::MMU_UPDATE => mmu::mmu_update(hv, f, a1, a2, a3, a4),
        nr::SET_GDT => desc::set_gdt(hv, a1, a2),
        nr::FPU_TASKSWITCH => desc::fpu_taskswitch(hv.pc, a1),
        nr::UPDATE_DESCRIPTOR => desc::update_descriptor(hv, a1, a2),
        nr::MEMORY_OP => memory::memory_op(hv, f, a1, a2),
        nr::MULTICALL => multicall::multicall(hv, f, a1, a2),
        nr::UPDATE_VA_MAPPING => mmu::update_va_mapping(hv, a1, a2, a3),
        nr::UPDATE_VA_MAPPING_OTHERDOMAIN => mmu::update_va_mapping_otherdomain(hv, a1, a2, a3, a4),
        nr::SET_SEGMENT_BASE => desc::set_segment_base(hv, a1, a2),
        nr::MMUEXT_OP => mmu::mmuext_op(hv, f, a1, a2, a3, a4),
        nr::EVENT_CHANNEL_OP => evtchn::event_channel_op(hv, a1, a2),
        nr::EVENT_CHANNEL_OP_COMPAT => evtchn::event_channel_op_compat(hv, a1),
        nr::VCPU_OP => vcpu::vcpu_op(hv, a1, a2, a3),
        nr::SET_TIMER_OP => vcpu::set_timer_op(hv, a1),
        nr::STACK_SWITCH => traps::stack_switch(hv.pc, a1, a2),
        nr::SET_CALLBACKS => traps::set_callbacks(hv.pc, a1, a2, a3),
        nr::SCHED_OP_COMPAT => sched::sched_op_compat(hv, f, a1, a2),
        nr::XEN_VERSION => version::xen_version(hv, a1, a2),
        nr::CONSOLE_IO => console::console_io(hv, f, a1, a2, a3),
        nr::VM_ASSIST => vm_assist(hv, a1, a2),
        nr::SCHED_OP => sched::sched_op(hv, f, a1, a2),
        nr::CALLBACK_OP => traps::callback_op(hv, a1, a2),
        _ => Err(Errno::ENOSYS),
    }
}

/// Runs the hypercall in `f` if it needs nothing but this CPU's structure (the current
/// vCPU's own registers and settings): without the hypervisor lock, so such hypercalls of
/// different CPUs run at once. Returns false, having done nothing, for every other one.
#[inline]
pub fn local(pc: &mut crate::percpu::PerCpu, f: &mut TrapFrame) -> bool {
    let r = match f.rax {
        nr::XEN_VERSION => match version::local(f.rdi) {
            Some(r) => r,
            None => return false,
        },
        nr::FPU_TASKSWITCH => desc::fpu_taskswitch(pc, f.rdi),
        nr::STACK_SWITCH => traps::stack_switch(pc, f.rdi, f.rsi),
        nr::SET_CALLBACKS => traps::set_callbacks(pc, f.rdi, f.rsi, f.rdx),
        _ => return false,
    };
    f.rax = match r {
        Ok(v) => v as u64,
        Err(e) => e.to_ret() as u64,
    };
    true
}

/// Work units one hypercall may do before it continues later: page-table entries, mmuext
/// operations, extents, multicall entries, console chunks.
pub const WORK_LIMIT: u64 = 256;
/// Time one hypercall may take before it continues later (whatever its units cost).
pub const TIME_LIMIT_NS: u64 = 1_000_000;

/// Records `units` of work done by the current hypercall and says whether it should stop
/// here and continue later (a continuation, or a multicall continuing at this entry).
/// Callers ask only after making progress, so every call moves forward. The clock is read
/// every 8 units (raw TSC: this runs once per page-table entry); slow work (a console chunk)
/// counts 8 units, so the clock is read after each. Once it says stop, it keeps saying so
/// for the rest of the hypercall (a multicall stops after an entry that ran out of time).
pub fn preempt(hv: &mut Hv, units: u64) -> bool {
    let before = hv.pc.work;
    hv.pc.work = hv.pc.work.saturating_add(units);
    if hv.pc.work >= WORK_LIMIT {
        return true;
    }
    if before / 8 == hv.pc.work / 8 {
        return false;
    }
    // tsc_khz is ticks per millisecond.
    let limit = hv_arch::time::tsc_khz().saturating_mul(TIME_LIMIT_NS) / 1_000_000;
    if hv_arch::cpu::rdtsc().saturating_sub(hv.pc.hc_start) < limit {
        return false;
    }
    hv.pc.work = WORK_LIMIT;
    true
}

/// Runs the hypercall in `f` and stores its result in RAX.
pub fn dispatch(hv: &mut Hv, f: &mut TrapFrame) {
    hv.pc.work = 0;
    hv.pc.hc_start = hv_arch::cpu::rdtsc();
    hv.pc.pt_budget = PT_BUDGET;
    let args = Args([f.rdi, f.rsi, f.rdx, f.r10, f.r8]);
    let n = f.rax;
    match call(hv, f, n, args) {
        Ok(v) => f.rax = v as u64,
        // A continuation already set RAX, the arguments and RIP.
        Err(Errno::ERESTART) => {}
        Err(e) => f.rax = e.to_ret() as u64,
    }
}

/// Makes the guest re-issue hypercall `n` with new first arguments: RIP goes back over the
/// 2-byte `int 0x82`, exactly as Xen rewinds over `syscall`.
pub fn continuation(f: &mut TrapFrame, n: u64, a: [u64; 4]) -> HcResult {
    f.rax = n;
    f.rdi = a[0];
    f.rsi = a[1];
    f.rdx = a[2];
    f.r10 = a[3];
    f.rip = f.rip.wrapping_sub(2);
    Err(Errno::ERESTART)
}

/// The domain a hypercall names: `DOMID_SELF` or the caller's id. Acting on another domain
/// (foreign page-table updates, another domain's reservation or event channels) needs
/// privilege and is not implemented yet: `-EOPNOTSUPP` for an existing domain, `-ESRCH`
/// for none, `-EPERM` without privilege (docs/abi-deviations.md).
pub fn resolve_dom(hv: &Hv, d: u16) -> Result<u16, Errno> {
    if d == guest_abi::DOMID_SELF || d == hv.pc.cur.dom {
        Ok(hv.pc.cur.dom)
    } else if !hv.dom().privileged {
        Err(Errno::EPERM)
    } else if (d as usize) < hv.g.domains.len() {
        Err(Errno::EOPNOTSUPP)
    } else {
        Err(Errno::ESRCH)
    }
}

/// Translates a guest address through the current tables.
pub fn translate(hv: &Hv, va: u64, write: bool) -> Result<hv_core::mem::Mfn, Errno> {
    translate_in(hv, hv.pc.cur.l4, va, write)
}

/// Translates a guest address of the current domain through root `l4`.
pub fn translate_in(hv: &Hv, l4: hv_core::mem::Mfn, va: u64, write: bool) -> Result<hv_core::mem::Mfn, Errno> {
    let cache = (l4 == hv.pc.cur.l4).then_some(&hv.pc.cur.xlat);
    with_view(hv.pc.cur.dom, l4, &hv.g.mm.ft, cache, |v| hv_core::guest_access::translate(&DirectMap, v, va, write)).map_err(Errno::from)
}

/// Copies bytes from the current domain's memory.
pub fn read_guest(hv: &Hv, va: u64, out: &mut [u8]) -> Result<(), Errno> {
    with_view(hv.pc.cur.dom, hv.pc.cur.l4, &hv.g.mm.ft, Some(&hv.pc.cur.xlat), |v| copy_from_guest(&DirectMap, v, va, out)).map_err(Errno::from)
}

/// Copies bytes into the current domain's memory.
pub fn write_guest(hv: &Hv, va: u64, data: &[u8]) -> Result<(), Errno> {
    with_view(hv.pc.cur.dom, hv.pc.cur.l4, &hv.g.mm.ft, Some(&hv.pc.cur.xlat), |v| copy_to_guest(&mut DirectMap, v, va, data)).map_err(Errno::from)
}

/// `vm_assist(cmd, type)`.
fn vm_assist(hv: &mut Hv, cmd: u64, ty: u64) -> HcResult {
    use guest_abi::hypercall::vm_assist::*;
    if ty >= 64 || VALID_MASK & (1 << ty) == 0 {
        return Err(Errno::EINVAL);
    }
    match cmd {
        ENABLE => hv.dom_mut().vm_assist |= 1 << ty,
        DISABLE => hv.dom_mut().vm_assist &= !(1 << ty),
        _ => return Err(Errno::ENOSYS),
    }
    Ok(0)
}
