//! Hypercall dispatch: number in RAX, arguments in RDI, RSI, RDX, R10, R8, result in RAX.
//!
//! Every argument is hostile. Guest pointers go through `hv_core::guest_access` (→ `-EFAULT`),
//! unknown numbers and sub-ops return `-ENOSYS`.

mod bytes;
pub mod console;
mod context;
pub mod desc;
pub mod domctl;
mod evtchn;
mod grant;
mod memory;
pub mod mmu;
mod multicall;
mod physdev;
mod sched;
mod traps;
pub mod vcpu;
mod version;

pub(crate) use context::RFLAGS_GUEST;
pub use crate::guest::{check_translates, read_guest, translate_in, with_mm, write_guest, Mx, OnCpu};
use crate::percpu::PerCpu;
use crate::Hv;
use guest_abi::errno::Errno;
use guest_abi::hypercall as nr;
use hv_arch::entry::TrapFrame;

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

/// Hypercalls that need nothing but the current vCPU and its domain's memory (page tables,
/// guest copies): they run under the domain's memory lock alone ([`Class::Domain`]), so
/// different domains' page-table work runs at once.
fn domain_class(n: u64) -> bool {
    matches!(
        n,
        nr::MMU_UPDATE
            | nr::MMUEXT_OP
            | nr::UPDATE_VA_MAPPING
            | nr::UPDATE_VA_MAPPING_OTHERDOMAIN
            | nr::SET_GDT
            | nr::UPDATE_DESCRIPTOR
            | nr::XEN_VERSION
            | nr::SET_TRAP_TABLE
            | nr::CALLBACK_OP
            | nr::MEMORY_OP
            | nr::GRANT_TABLE_OP
    )
}

/// The hypercall table. A handler's `-ERESTART` without a continuation of its own means
/// "re-issue me unchanged".
pub(crate) fn call(hv: &mut Hv, f: &mut TrapFrame, n: u64, a: Args) -> HcResult {
    if let Some(r) = local_call(hv.pc, n, [a.0[0], a.0[1], a.0[2]]) {
        return r;
    }
    if domain_class(n) {
        return with_mm(hv, |mx| call_mm(mx, f, n, a));
    }
    let [a1, a2, a3, a4, _a5] = a.0;
    let rip = f.rip;
    let r = if touches_page_tables(n, a1) && with_mm(hv, mmu::drive).is_err() { Err(Errno::ERESTART) } else { call_one(hv, f, n, a) };
    if r == Err(Errno::ERESTART) && f.rip == rip {
        return continuation(f, n, [a1, a2, a3, a4]);
    }
    r
}

/// The domain-class hypercalls, the domain's memory lock held.
fn call_mm(mx: &mut Mx, f: &mut TrapFrame, n: u64, a: Args) -> HcResult {
    let [a1, a2, a3, a4, _a5] = a.0;
    let rip = f.rip;
    let r = if touches_page_tables(n, a1) && mmu::drive(mx).is_err() {
        Err(Errno::ERESTART)
    } else {
        match n {
            nr::MMU_UPDATE => mmu::mmu_update(mx, f, a1, a2, a3, a4),
            nr::MMUEXT_OP => mmu::mmuext_op(mx, f, a1, a2, a3, a4),
            nr::UPDATE_VA_MAPPING => mmu::update_va_mapping(mx, a1, a2, a3),
            nr::UPDATE_VA_MAPPING_OTHERDOMAIN => mmu::update_va_mapping_otherdomain(mx, a1, a2, a3, a4),
            nr::SET_GDT => desc::set_gdt(mx, a1, a2),
            nr::UPDATE_DESCRIPTOR => desc::update_descriptor(mx, a1, a2),
            nr::XEN_VERSION => version::xen_version(mx, a1, a2),
            nr::SET_TRAP_TABLE => traps::set_trap_table(mx, a1),
            nr::CALLBACK_OP => traps::callback_op(mx, a1, a2),
            nr::MEMORY_OP => memory::memory_op(mx, f, a1, a2),
            nr::GRANT_TABLE_OP => grant::grant_table_op(mx, f, a1, a2, a3),
            _ => Err(Errno::ENOSYS),
        }
    };
    // One load of a global while no domain lingers (the usual case).
    if crate::domain::LINGERING.load(core::sync::atomic::Ordering::Relaxed) != 0 && mx.pc.cur.shared.privileged && touches_page_tables(n, a1) {
        crate::teardown::reap_lingering();
    }
    if r == Err(Errno::ERESTART) && f.rip == rip {
        return continuation(f, n, [a1, a2, a3, a4]);
    }
    r
}

/// Which locks hypercall `n` (first argument `a1`) needs besides this CPU's structure.
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub enum Class {
    /// None ([`local_call`]): the current vCPU's own settings, its domain's atomics.
    Local,
    /// The domain's memory lock ([`domain_class`]).
    Domain,
    /// None of its own (event, console, timer locks inside; guest copies hold frames):
    /// event channels, `console_io`, `set_timer_op`, `vcpu_op`'s timer and `is_up`
    /// commands, and `multicall` (which takes the memory lock for its batch).
    LockFree,
    /// Run-queue locks (of this CPU, or of the queue owning the vCPU named): what changes
    /// the scheduler's view of a vCPU (`sched_op`, the rest of `vcpu_op`), and unknown
    /// numbers (`-ENOSYS` there). No lock is held on entry.
    Sched,
}

/// The class of hypercall `n` with first argument `a1`.
#[inline]
pub fn class(n: u64, a1: u64) -> Class {
    match n {
        nr::XEN_VERSION if version::local(a1).is_some() => Class::Local,
        nr::FPU_TASKSWITCH | nr::STACK_SWITCH | nr::SET_CALLBACKS | nr::SET_SEGMENT_BASE | nr::VM_ASSIST | nr::SET_DEBUGREG | nr::GET_DEBUGREG => Class::Local,
        _ if domain_class(n) => Class::Domain,
        nr::EVENT_CHANNEL_OP | nr::EVENT_CHANNEL_OP_COMPAT | nr::CONSOLE_IO | nr::SET_TIMER_OP | nr::MULTICALL | nr::PHYSDEV_OP => {
            Class::LockFree
        }
        nr::VCPU_OP if vcpu::is_local_op(a1) => Class::LockFree,
        _ => Class::Sched,
    }
}

/// The fast path: runs the hypercall in `f` unless it is of the scheduler kind (any
/// [`Class`] but `Sched`), with the locks its class takes, and stores its result in RAX.
/// Returns false, having done nothing, for the others. A sleeper a lock-free one may have
/// to wake is left for the slow path (`PerCpu::wake_pass`).
#[inline]
pub fn fast_path(pc: &mut PerCpu, f: &mut TrapFrame) -> bool {
    let n = f.rax;
    // The cheapest first: the null hypercalls need no class and no budget.
    if let Some(r) = local_call(pc, n, [f.rdi, f.rsi, f.rdx]) {
        store_result(f, r);
        return true;
    }
    if pc.cur.is_placeholder() {
        return false;
    }
    let args = Args([f.rdi, f.rsi, f.rdx, f.r10, f.r8]);
    let r = match class(n, f.rdi) {
        Class::Domain => {
            begin(pc);
            let shared = pc.cur.shared.clone();
            let mut mm = shared.mm();
            call_mm(&mut Mx { pc, mm: &mut mm }, f, n, args)
        }
        Class::LockFree => {
            begin(pc);
            if n == nr::MULTICALL {
                multicall::multicall(pc, f, args.0[0], args.0[1])
            } else {
                lock_free(pc, f, n, args).unwrap_or(Err(Errno::ENOSYS))
            }
        }
        Class::Local | Class::Sched => return false,
    };
    store_result(f, r);
    true
}

fn call_one(hv: &mut Hv, f: &mut TrapFrame, n: u64, a: Args) -> HcResult {
    let [a1, a2, a3, _a4, _a5] = a.0;
    match n {
        nr::VCPU_OP => vcpu::vcpu_op(hv, a1, a2, a3),
        nr::SCHED_OP_COMPAT => sched::sched_op_compat(hv, f, a1, a2),
        nr::SCHED_OP => sched::sched_op(hv, f, a1, a2),
        nr::DOMCTL => domctl::domctl(hv, f, a1),
        nr::SYSCTL => domctl::sysctl(hv, a1),
        _ => Err(Errno::ENOSYS),
    }
}

/// A hypercall not of the scheduler kind, its domain's memory lock held (a multicall
/// entry): the local, domain-class and lock-free kinds.
fn call_unlocked(mx: &mut Mx, f: &mut TrapFrame, n: u64, a: Args) -> HcResult {
    let [a1, a2, a3, _a4, _a5] = a.0;
    if let Some(r) = local_call(mx.pc, n, [a1, a2, a3]) {
        return r;
    }
    if domain_class(n) {
        return call_mm(mx, f, n, a);
    }
    lock_free(mx, f, n, a).unwrap_or(Err(Errno::ENOSYS))
}

/// The lock-free kinds (see [`unlocked`]), on whatever `c` holds; `None` for any other.
fn lock_free(c: &mut impl OnCpu, f: &mut TrapFrame, n: u64, a: Args) -> Option<HcResult> {
    let [a1, a2, a3, _a4, _a5] = a.0;
    Some(match n {
        nr::CONSOLE_IO => console::console_io(c, f, a1, a2, a3),
        nr::SET_TIMER_OP => {
            let (r, wake) = vcpu::set_timer_op(c.pc_mut(), a1);
            c.pc_mut().wake_pass |= wake;
            r
        }
        nr::EVENT_CHANNEL_OP | nr::EVENT_CHANNEL_OP_COMPAT => {
            let (r, wake) = if n == nr::EVENT_CHANNEL_OP { evtchn::event_channel_op(c, a1, a2) } else { evtchn::event_channel_op_compat(c, a1) };
            c.pc_mut().wake_pass |= wake;
            r
        }
        nr::PHYSDEV_OP => physdev::physdev_op(c, a1, a2),
        nr::VCPU_OP if vcpu::is_local_op(a1) => {
            let (r, wake) = vcpu::local_op(c.pc_mut(), a1, a2, a3)?;
            c.pc_mut().wake_pass |= wake;
            r
        }
        _ => return None,
    })
}


/// Hypercall `n` if it needs only this CPU's structure ([`Class::Local`]; see [`fast_path`]).
#[inline(always)]
fn local_call(pc: &mut PerCpu, n: u64, [a1, a2, a3]: [u64; 3]) -> Option<HcResult> {
    Some(match n {
        nr::XEN_VERSION => return version::local(a1),
        nr::FPU_TASKSWITCH => desc::fpu_taskswitch(pc, a1),
        nr::STACK_SWITCH => traps::stack_switch(pc, a1, a2),
        nr::SET_CALLBACKS => traps::set_callbacks(pc, a1, a2, a3),
        nr::SET_SEGMENT_BASE => desc::set_segment_base(a1, a2),
        nr::VM_ASSIST => vm_assist(pc, a1, a2),
        nr::SET_DEBUGREG => set_debugreg(pc, a1, a2),
        nr::GET_DEBUGREG => get_debugreg(pc, a1),
        _ => return None,
    })
}



/// A new hypercall on this CPU: its work and time budgets start.
pub(crate) fn begin(pc: &mut PerCpu) {
    pc.budget = hv_core::budget::Budget::begin(hv_arch::cpu::rdtsc());
    pc.pt_budget = PT_BUDGET;
}

/// Puts a hypercall's result in RAX (a continuation already set RAX, the arguments and RIP).
fn store_result(f: &mut TrapFrame, r: HcResult) {
    match r {
        Ok(v) => f.rax = v as u64,
        Err(Errno::ERESTART) => {}
        Err(e) => f.rax = e.to_ret() as u64,
    }
}

/// Records `units` of work done by the current hypercall and says whether it should stop
/// here and continue later (`hv_core::budget`: at most 256 units or 1 ms, the clock read
/// every 8 units).
pub fn preempt(c: &mut impl OnCpu, units: u64) -> bool {
    spend(&mut c.pc_mut().budget, units)
}

/// [`preempt`] on a budget itself (for a caller that holds other parts of the CPU's
/// structure borrowed).
pub fn spend(b: &mut hv_core::budget::Budget, units: u64) -> bool {
    // tsc_khz is ticks per millisecond (worked out only when the clock is read).
    let limit = || hv_arch::time::tsc_khz().saturating_mul(hv_core::budget::TIME_LIMIT_NS) / 1_000_000;
    b.spend(units, hv_arch::cpu::rdtsc, limit)
}

/// Runs the hypercall in `f` and stores its result in RAX.
pub fn dispatch(hv: &mut Hv, f: &mut TrapFrame) {
    begin(hv.pc);
    let args = Args([f.rdi, f.rsi, f.rdx, f.r10, f.r8]);
    let n = f.rax;
    let r = call(hv, f, n, args);
    store_result(f, r);
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

/// The domain an argument names: the caller itself (its id or `DOMID_SELF`) or, for a
/// privileged caller, another domain that exists, is not being destroyed and is not
/// privileged itself (-EPERM for an unprivileged caller or a privileged target, -ESRCH for
/// a missing or dying one). Operations on such a domain's page tables take its memory lock
/// as a second one (`DomShared::foreign_mm`), which these rules keep deadlock-free.
pub fn foreign_dom(c: &impl OnCpu, d: u16) -> Result<alloc::sync::Arc<crate::domain::DomShared>, Errno> {
    let cur = &c.pc().cur;
    if d == guest_abi::DOMID_SELF || d == cur.dom {
        return Ok(cur.shared.clone());
    }
    if !cur.shared.privileged {
        return Err(Errno::EPERM);
    }
    let t = crate::domain::shared_of(d).filter(|t| !t.is_dying()).ok_or(Errno::ESRCH)?;
    if t.privileged {
        return Err(Errno::EPERM);
    }
    Ok(t)
}

/// [`foreign_dom`]'s id.
pub fn resolve_dom(c: &impl OnCpu, d: u16) -> Result<u16, Errno> {
    foreign_dom(c, d).map(|t| t.id)
}

/// `set_debugreg(reg, value)` of the current vCPU (`hv_core::emul::DebugRegs`): -ENODEV for
/// a register that does not exist, -EPERM for a value refused.
fn set_debugreg(pc: &mut PerCpu, reg: u64, value: u64) -> HcResult {
    use hv_core::emul::DrError;
    let reg = u8::try_from(reg).map_err(|_| Errno::ENODEV)?;
    match pc.cur.debug.set(reg, value) {
        Ok(()) => Ok(0),
        Err(DrError::NoSuchRegister) => Err(Errno::ENODEV),
        Err(DrError::Refused) => Err(Errno::EPERM),
    }
}

/// `get_debugreg(reg)`: the value as the result (Xen's ABI: one that looks like an error
/// number is indistinguishable from one), -ENODEV for a register that does not exist.
fn get_debugreg(pc: &PerCpu, reg: u64) -> HcResult {
    let reg = u8::try_from(reg).map_err(|_| Errno::ENODEV)?;
    pc.cur.debug.get(reg).map(|v| v as i64).map_err(|_| Errno::ENODEV)
}

/// `vm_assist(cmd, type)`.
fn vm_assist(pc: &PerCpu, cmd: u64, ty: u64) -> HcResult {
    use guest_abi::hypercall::vm_assist::*;
    if ty >= 64 || VALID_MASK & (1 << ty) == 0 {
        return Err(Errno::EINVAL);
    }
    match cmd {
        ENABLE => pc.cur.shared.vm_assist.fetch_or(1 << ty, core::sync::atomic::Ordering::Relaxed),
        DISABLE => pc.cur.shared.vm_assist.fetch_and(!(1 << ty), core::sync::atomic::Ordering::Relaxed),
        _ => return Err(Errno::ENOSYS),
    };
    Ok(0)
}
