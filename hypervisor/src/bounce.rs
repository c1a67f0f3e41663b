//! Delivering to a guest: its faults to its own handlers, upcalls to its event callback,
//! failed returns to its failsafe callback; crashing a domain that cannot take them.

use crate::domain::vi;
use crate::vcpu::Vcpu;
use crate::guest::OnCpu;
use guest_abi::errno::Errno;
use crate::Hv;
use guest_abi::harness::ExitCode;
use guest_abi::selectors::{kernel_cs, kernel_ss};
use guest_abi::traps::{has_error_code, vector, TI_MASK_EVENTS};
use hv_arch::entry::TrapFrame;

const RFLAGS_IF: u64 = 1 << 9;
const RFLAGS_IOPL: u64 = 3 << 12;
/// TF, NT, RF, VM, AC: cleared on delivery, as hardware does for an interrupt gate.
const RFLAGS_CLEAR_ON_ENTRY: u64 = (1 << 8) | (1 << 14) | (1 << 16) | (1 << 17) | (1 << 18);

/// Switches the current vCPU of a Xen pv64 domain between guest kernel and user mode: the
/// other root (its slots copied into this CPU's roots, the guest translations dropped) and
/// the GS bases swapped (the guest's kernel GS base is active in kernel mode, its user one
/// in user mode), as Xen's `toggle_guest_mode`.
pub fn toggle(pc: &mut crate::percpu::PerCpu) {
    use hv_arch::cpu::SegBase;
    let v = &mut pc.cur;
    core::mem::swap(&mut v.l4, &mut v.other_l4);
    v.user_mode = !v.user_mode;
    let (gs, shadow) = (hv_arch::cpu::segment_base(SegBase::Gs), hv_arch::cpu::segment_base(SegBase::KernelGs));
    hv_arch::cpu::set_segment_base(SegBase::Gs, shadow);
    hv_arch::cpu::set_segment_base(SegBase::KernelGs, gs);
    crate::shootdown::set_root(pc);
    hv_arch::paging::sync_guest_slots(&pc.tables, pc.cur.l4);
}

/// Exception names for messages.
pub fn vector_name(v: u64) -> &'static str {
    const N: [&str; 32] = [
        "#DE", "#DB", "NMI", "#BP", "#OF", "#BR", "#UD", "#NM", "#DF", "#CSO", "#TS", "#NP",
        "#SS", "#GP", "#PF", "#SPV", "#MF", "#AC", "#MC", "#XM", "#VE", "#CP", "#22", "#23",
        "#24", "#25", "#26", "#27", "#HV", "#VC", "#SX", "#31",
    ];
    N.get(v as usize).copied().unwrap_or("IRQ")
}

/// Prints a register dump (never blocking on the console lock: it serves fatal paths).
pub fn dump(f: &TrapFrame, cr2: u64) {
    use hv_arch::console::emergency_write_fmt as p;
    p(format_args!(
        "(XEN) vector {} ({}) error {:#06x}  CR2 {:#018x}\n",
        f.vector,
        vector_name(f.vector),
        f.error_code,
        cr2
    ));
    p(format_args!("(XEN) RIP {:04x}:{:#018x}  RFLAGS {:#018x}\n", f.cs, f.rip, f.rflags));
    p(format_args!("(XEN) RSP {:04x}:{:#018x}\n", f.ss, f.rsp));
    p(format_args!("(XEN) rax {:#018x} rbx {:#018x} rcx {:#018x}\n", f.rax, f.rbx, f.rcx));
    p(format_args!("(XEN) rdx {:#018x} rsi {:#018x} rdi {:#018x}\n", f.rdx, f.rsi, f.rdi));
    p(format_args!("(XEN) rbp {:#018x} r8  {:#018x} r9  {:#018x}\n", f.rbp, f.r8, f.r9));
    p(format_args!("(XEN) r10 {:#018x} r11 {:#018x} r12 {:#018x}\n", f.r10, f.r11, f.r12));
    p(format_args!("(XEN) r13 {:#018x} r14 {:#018x} r15 {:#018x}\n", f.r13, f.r14, f.r15));
}

/// Crashes the current domain: reports why with a register dump and takes it off the CPU;
/// the other domains carry on. dom0 crashing ends the run.
pub fn crash_domain(hv: &mut Hv, f: &TrapFrame, why: core::fmt::Arguments<'_>) {
    log::error!("d{}v{} crashed: {}", hv.pc.cur.dom, hv.pc.cur.id, why);
    domain_ended(hv, guest_abi::sched::ShutdownReason::Crash, Some((f, hv_arch::cpu::read_cr2())));
}

/// The current domain shut down or crashed: dom0 ends the run; a domU becomes a zombie (all
/// its vCPUs stop, on every CPU) and, as in Xen, dom0 hears of it through VIRQ_DOM_EXC once
/// the last of them is off its CPU (`schedule::park`; the current one is parked before this
/// section ends). `regs` (a frame and CR2) are dumped: for dom0 before the run ends, for a
/// domU once it is stopped on every CPU (the dump is slow, the serial line, and its other
/// vCPUs must not run on meanwhile).
pub fn domain_ended(hv: &mut Hv, why: guest_abi::sched::ShutdownReason, regs: Option<(&TrapFrame, u64)>) {
    use guest_abi::sched::ShutdownReason::*;
    let dom = hv.pc.cur.dom;
    if dom == 0 {
        if let Some((f, cr2)) = regs {
            dump(f, cr2);
        }
        let code = match why {
            Poweroff => ExitCode::Poweroff,
            Reboot => ExitCode::Reboot,
            Suspend => ExitCode::Suspend,
            Crash => ExitCode::Crash,
            _ => ExitCode::OtherShutdown,
        };
        let msg = if why == Crash { "Domain 0 crashed" } else { "Domain 0 shut down" };
        hv.end_run(msg, code)
    }
    let d = hv.pc.cur.shared.clone();
    if d.end(why) {
        log::info!("d{} is dead ({}); the others carry on", dom, why.name());
        for v in 0..d.nr_vcpus() {
            crate::schedule::stop(hv, &d, v);
        }
    }
    if let Some((f, cr2)) = regs {
        dump(f, cr2);
    }
}

/// Delivers exception `vec` to the guest's handler on its kernel stack, as a ring-1 interrupt
/// gate would: see `guest_abi::traps` for the frame. A guest that cannot take it (no handler,
/// unusable stack) is crashed.
pub fn bounce(hv: &mut Hv, f: &mut TrapFrame, vec: u8, error_code: u64, cr2: u64) {
    let ti = hv.pc.cur.traps[vec as usize];
    if ti.address == 0 {
        return crash_domain(hv, f, format_args!("{} with no handler registered", vector_name(vec as u64)));
    }
    if vec == vector::PF {
        hv.dom().vcpu_info.write_u64(hv.pc.cur.id, vi::CR2, cr2);
    }
    let err = [guest_error_code(&hv.pc.cur, f, vec, error_code)];
    let below = if has_error_code(vec) { &err[..] } else { &[] };
    enter_guest_handler(hv, f, ti.address, below, ti.flags & TI_MASK_EVENTS != 0, vector_name(vec as u64));
}

/// The error code the guest sees: a #PF's User bit says guest user mode, not the CPU's ring
/// (a Xen pv64 kernel runs in ring 3, so the CPU sets it for the kernel's faults too).
fn guest_error_code(v: &Vcpu, f: &TrapFrame, vec: u8, code: u64) -> u64 {
    const PF_USER: u64 = 1 << 2;
    if vec == vector::PF && v.shared.pv64 && !v.in_user(f) {
        code & !PF_USER
    } else {
        code
    }
}

/// Builds a hardware-shaped frame (`[below...], RIP, CS, RFLAGS, RSP, SS`, with the saved
/// upcall mask in CS bits 32–39 and RFLAGS.IF = !mask) on the guest kernel stack and points
/// `f` at `handler` in the kernel. `below` holds the words under RIP: an error code, or the
/// data selectors of a failsafe frame. Optionally masks events. A stack that cannot take the
/// frame crashes the domain. In the Xen pv64 mode the frame is Xen's: RCX and R11 below the
/// rest, CS with RPL 0 when kernel mode was interrupted; from user mode the vCPU first
/// switches to kernel mode (its root) and the kernel stack of `stack_switch`.
pub fn enter_guest_handler(hv: &mut Hv, f: &mut TrapFrame, handler: u64, below: &[u64], mask_events: bool, what: &str) {
    if let Err((sp, e)) = push_handler_frame(&mut *hv, f, handler, below, mask_events) {
        crash_domain(hv, f, format_args!("cannot deliver {}: kernel stack {:#x} unusable ({:?})", what, sp, e));
    }
}

/// [`enter_guest_handler`] without the crash: a stack that cannot take the frame is the
/// error (the stack pointer tried, and why), and `f` (and the vCPU's mode) is left as it was.
fn push_handler_frame(c: &mut impl OnCpu, f: &mut TrapFrame, handler: u64, below: &[u64], mask_events: bool) -> Result<(), (u64, Errno)> {
    let pv64 = c.pc().cur.shared.pv64;
    let from_user = c.pc().cur.in_user(f);
    if pv64 && from_user {
        toggle(c.pc_mut());
    }
    let v: &Vcpu = &c.pc().cur;
    let infos = &v.shared.vcpu_info;
    let sp = if from_user { v.kernel_sp } else { f.rsp };
    let mask = infos.byte(v.id, vi::UPCALL_MASK);
    let mut words = [0u64; 11];
    let mut n = 0;
    // Xen shows an interrupted pv64 kernel its CS with RPL 0 (SS as it was).
    let cs = if pv64 && !from_user { f.cs & 0xFFFC } else { f.cs & 0xFFFF };
    let ss = f.ss;
    let xen = if pv64 { &[f.rcx, f.r11][..] } else { &[] };
    for &w in xen.iter().chain(below.iter().take(4)) {
        words[n] = w;
        n += 1;
    }
    let mut rflags = (f.rflags & !RFLAGS_IF) | if mask == 0 { RFLAGS_IF } else { 0 };
    if pv64 && v.shared.architectural_iopl() {
        // Xen shows the virtual IOPL in the frame when the guest takes it from its iret.
        rflags = (rflags & !RFLAGS_IOPL) | (v.iopl as u64) << 12;
    }
    for w in [f.rip, cs | ((mask as u64) << 32), rflags, f.rsp, ss] {
        words[n] = w;
        n += 1;
    }
    let new_sp = (sp & !15).wrapping_sub(8 * n as u64);
    if let Err(e) = crate::guest::write_guest_words(c, new_sp, &words[..n]) {
        if pv64 && from_user {
            toggle(c.pc_mut());
        }
        return Err((new_sp, e));
    }
    let v: &Vcpu = &c.pc().cur;
    if mask_events {
        v.shared.vcpu_info.set_byte(v.id, vi::UPCALL_MASK, 1);
    }
    f.rip = handler;
    f.cs = kernel_cs(pv64) as u64;
    f.ss = kernel_ss(pv64) as u64;
    f.rsp = new_sp;
    f.rflags = (f.rflags & !(RFLAGS_CLEAR_ON_ENTRY | RFLAGS_IOPL)) | RFLAGS_IF;
    Ok(())
}

/// An exception the current vCPU takes to its own handler, bounced without the hypervisor
/// lock: under its domain's memory lock (the frame goes onto its kernel stack). Returns
/// false, having changed nothing, for everything else (no handler, a stack that cannot
/// take the frame, NMI, #DF, #MC, a user-mode `syscall`): the slow path handles those.
pub fn local_bounce(pc: &mut crate::percpu::PerCpu, f: &mut TrapFrame) -> bool {
    let v = f.vector;
    let cur = &pc.cur;
    if v >= 32 || cur.is_placeholder() || matches!(v as u8, vector::NMI | vector::DF | vector::MC) {
        return false;
    }
    // A #UD may be a user-mode `syscall` or the forced-emulation `cpuid`: the slow path
    // looks at its bytes. A #DB's status goes into the vCPU's DR6 there.
    if v == vector::UD as u64 || v == vector::DB as u64 {
        return false;
    }
    // A kernel-mode #GP may be a privileged instruction the hypervisor emulates (in the
    // Xen pv64 mode also a user-mode one: the virtual IOPL's); one with an IDT error code
    // may be a software `int N` to a vector the guest lets its caller raise.
    if v == vector::GP as u64 && ((f.error_code == 0 && (!cur.in_user(f) || cur.shared.pv64)) || f.error_code & 7 == 2) {
        return false;
    }
    let ti = cur.traps[v as usize];
    if ti.address == 0 {
        return false;
    }
    let shared = cur.shared.clone();
    let mut mm = shared.mm();
    let mut mx = crate::guest::Mx { pc, mm: &mut mm };
    let vec = v as u8;
    let err = [guest_error_code(&mx.pc.cur, f, vec, f.error_code)];
    let below = if has_error_code(vec) { &err[..] } else { &[] };
    if push_handler_frame(&mut mx, f, ti.address, below, ti.flags & TI_MASK_EVENTS != 0).is_err() {
        return false;
    }
    if vec == vector::PF {
        shared.vcpu_info.write_u64(mx.pc.cur.id, vi::CR2, hv_arch::cpu::read_cr2());
    }
    true
}

/// After an entry handled on the fast path: resumes the current vCPU with `f`,
/// first delivering an owed upcall to its event callback (under its domain's memory lock:
/// the frame goes onto its kernel stack). Returns false, for the slow path, when another
/// CPU asked this one to pick again (a wakeup, the vCPU stopped or its domain died: those
/// come with a reschedule request), the vCPU yielded or blocked (a multicall entry), a
/// sleeper may need waking, the upcall's stack cannot
/// take the frame (nothing changed: the slow path crashes the domain), or the frame needs
/// the refusal path.
#[inline]
pub fn exit_locally(pc: &mut crate::percpu::PerCpu, f: &mut TrapFrame) -> bool {
    if pc.need_resched || pc.yielded || pc.wake_pass || !resumable(f) {
        return false;
    }
    if !crate::events::upcall_owed(&pc.cur, f) {
        return true;
    }
    let shared = pc.cur.shared.clone();
    let mut mm = shared.mm();
    let mut mx = crate::guest::Mx { pc, mm: &mut mm };
    let cb = mx.pc.cur.callbacks.event;
    push_handler_frame(&mut mx, f, cb, &[], true).is_ok() && resumable(f)
}

/// The CPU refused to resume the current vCPU with `f` (its exit `iretq` faulted: a selector
/// whose descriptor the guest removed, a non-canonical RIP, ...; `f.vector` carries the fault
/// and [`hv_arch::entry::FAILED_RETURN`]). As Xen: the guest's failsafe callback gets the
/// frame, or the domain is crashed when it has none.
pub fn failed_return(hv: &mut Hv, f: &mut TrapFrame) {
    let vec = f.vector & 0xFF;
    f.vector = vec;
    // The Xen pv64 mode: a return to a non-canonical RIP (on good selectors) is the guest's
    // own #GP(0) at that RIP, as Xen's fix-up of its faulting `iretq` makes it (XSA-7: a
    // `syscall` at the end of the lower half returns to 0x800000000000).
    if hv.pc.cur.shared.pv64 && !guest_abi::layout::is_canonical(f.rip) && f.cs & 3 == 3 && f.ss & 3 == 3 && hv.pc.cur.traps[vector::GP as usize].address != 0 {
        return bounce(hv, f, vector::GP, 0, 0);
    }
    let (cs, rip, ss, err) = (f.cs & 0xFFFF, f.rip, f.ss & 0xFFFF, f.error_code);
    let sels = hv_arch::cpu::data_selectors();
    failsafe(hv, f, sels, format_args!("cannot resume {:#x}:{:#x} (ss {:#x}): {} error {:#x}", cs, rip, ss, vector_name(vec), err));
}

/// Delivers the failsafe callback (frame `DS, ES, FS, GS, RIP, CS, RFLAGS, RSP, SS`: Xen's
/// without RCX/R11 in the ring-1 mode, as rxen's other frames; Xen's own in the pv64 mode),
/// or crashes the domain when it has none or when the failure is the failsafe handler's own.
pub fn failsafe(hv: &mut Hv, f: &mut TrapFrame, sels: hv_arch::cpu::DataSelectors, why: core::fmt::Arguments<'_>) {
    let cb = hv.pc.cur.callbacks.failsafe;
    if cb == 0 || (f.rip == cb && f.cs == kernel_cs(hv.pc.cur.shared.pv64) as u64 && !hv.pc.cur.in_user(f)) {
        return crash_domain(hv, f, format_args!("{} (no failsafe callback)", why));
    }
    log::warn!("d{}v{}: {}: failsafe callback", hv.pc.cur.dom, hv.pc.cur.id, why);
    let below = sels.map(u64::from);
    enter_guest_handler(hv, f, cb, &below, false, "failsafe callback");
}

/// Is the instruction at `rip` a `syscall` (0F 05)?
pub fn is_syscall_at(hv: &impl OnCpu, rip: u64) -> bool {
    let mut b = [0u8; 2];
    crate::guest::read_guest(hv, rip, &mut b).is_ok() && b == [0x0F, 0x05]
}

/// A guest's `syscall` from user mode (EFER.SCE is off, so it arrives as #UD): delivered to
/// the kernel's syscall callback with RCX and R11 as the instruction sets them (return RIP,
/// RFLAGS) and the mode's frame returning after the `syscall` (a Xen pv64 vCPU switches to
/// its kernel root and stack first, as for any entry from user mode).
pub fn syscall_bounce(hv: &mut Hv, f: &mut TrapFrame) {
    f.rip = f.rip.wrapping_add(2);
    f.rcx = f.rip;
    f.r11 = f.rflags;
    let cb = hv.pc.cur.callbacks.syscall;
    enter_guest_handler(hv, f, cb, &[], false, "syscall");
}




/// Can `f` be resumed as it is (canonical RIP, CS and SS not ring 0)? Branch-free.
#[inline]
pub fn resumable(f: &TrapFrame) -> bool {
    let canonical = ((f.rip as i64) << 16 >> 16) as u64 == f.rip;
    canonical & (f.cs & 3 != 0) & (f.ss & 3 != 0)
}

/// On the way back to the guest: delivers a due upcall to the event callback (events are
/// masked on delivery, as Xen does).
#[inline]
pub fn deliver_upcall(hv: &mut Hv, f: &mut TrapFrame) {
    if crate::events::upcall_owed(&hv.pc.cur, f) {
        let cb = hv.pc.cur.callbacks.event;
        enter_guest_handler(hv, f, cb, &[], true, "event upcall");
    }
}

/// Picks what this CPU runs next ([`crate::schedule::reschedule`]) and, when the incoming
/// vCPU's data selectors were refused, gives them to its failsafe callback (which may
/// crash it: then picks again). Returns false when there is nothing to run.
pub fn switch(hv: &mut Hv, f: &mut TrapFrame, yielding: bool) -> bool {
    let mut yielding = yielding;
    // Switching may itself wake a vCPU for this CPU (dom0 hears of a domain's death as the
    // domain's last vCPU is parked here): then pick again at once, a few times at most,
    // rather than leave it waiting for the next interrupt.
    let mut again = 0;
    loop {
        let r = crate::schedule::reschedule(hv, f, yielding);
        if matches!(r, None | Some(0)) && hv.pc.need_resched && again < 4 {
            again += 1;
            yielding = false;
            continue;
        }
        match r {
            None => return false,
            Some(0) => return true,
            Some(refused) => {
                let sels = hv.pc.cur.sel;
                failsafe(hv, f, sels, format_args!("data selectors {:x?} refused (mask {:#x})", sels, refused));
                if crate::schedule::current_can_run(hv.pc) {
                    return true;
                }
                yielding = false;
            }
        }
    }
}
