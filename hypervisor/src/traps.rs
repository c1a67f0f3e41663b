//! Exceptions and interrupts: bouncing a guest's faults to its own handlers, crashing a
//! domain that cannot take them, and fatal traps inside the hypervisor.

use crate::domain::{vi, with_view, Domain, Vcpu};
use crate::Hv;
use guest_abi::harness::ExitCode;
use guest_abi::selectors::{FLAT_KERNEL_CS, FLAT_KERNEL_SS};
use guest_abi::traps::{has_error_code, vector, TI_MASK_EVENTS};
use hv_arch::entry::TrapFrame;
use hv_arch::physmem::DirectMap;
use hv_core::guest_access::copy_to_guest;

const RFLAGS_IF: u64 = 1 << 9;
const RFLAGS_IOPL: u64 = 3 << 12;
/// TF, NT, RF, VM, AC: cleared on delivery, as hardware does for an interrupt gate.
const RFLAGS_CLEAR_ON_ENTRY: u64 = (1 << 8) | (1 << 14) | (1 << 16) | (1 << 17) | (1 << 18);

/// Exception names for messages.
pub fn vector_name(v: u64) -> &'static str {
    const N: [&str; 32] = [
        "#DE", "#DB", "NMI", "#BP", "#OF", "#BR", "#UD", "#NM", "#DF", "#CSO", "#TS", "#NP",
        "#SS", "#GP", "#PF", "#SPV", "#MF", "#AC", "#MC", "#XM", "#VE", "#CP", "#22", "#23",
        "#24", "#25", "#26", "#27", "#HV", "#VC", "#SX", "#31",
    ];
    N.get(v as usize).copied().unwrap_or("IRQ")
}

/// Prints a register dump.
pub fn dump(f: &TrapFrame, cr2: u64) {
    use hv_arch::console::write_fmt as p;
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
    log::error!("d{}v{} crashed: {}", hv.cur.dom, hv.cur.id, why);
    dump(f, hv_arch::cpu::read_cr2());
    domain_ended(hv, guest_abi::sched::ShutdownReason::Crash);
}

/// The current domain shut down or crashed: dom0 ends the run; a domU becomes a zombie (all
/// its vCPUs stop, on every CPU) and, as in Xen, dom0 hears of it through VIRQ_DOM_EXC once
/// the last of them is off its CPU (`schedule::park`; the current one is parked before this
/// section ends).
pub fn domain_ended(hv: &mut Hv, why: guest_abi::sched::ShutdownReason) {
    use guest_abi::sched::ShutdownReason::*;
    let dom = hv.cur.dom;
    if dom == 0 {
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
    if hv.dom().dead.is_some() {
        return;
    }
    log::info!("d{} is dead ({}); the others carry on", dom, why.name());
    hv.dom_mut().dead = Some(why);
    for v in 0..hv.dom().nr_vcpus() {
        crate::schedule::stop(hv, dom, v);
    }
}

/// Delivers exception `vec` to the guest's handler on its kernel stack, as a ring-1 interrupt
/// gate would: see `guest_abi::traps` for the frame. A guest that cannot take it (no handler,
/// unusable stack) is crashed.
pub fn bounce(hv: &mut Hv, f: &mut TrapFrame, vec: u8, error_code: u64, cr2: u64) {
    let ti = hv.cur.traps[vec as usize];
    if ti.address == 0 {
        return crash_domain(hv, f, format_args!("{} with no handler registered", vector_name(vec as u64)));
    }
    if vec == vector::PF {
        hv.dom().set_vi_u64(hv.cur.id, vi::CR2, cr2);
    }
    let err = has_error_code(vec).then_some(error_code);
    enter_guest_handler(hv, f, ti.address, err, ti.flags & TI_MASK_EVENTS != 0, vector_name(vec as u64));
}

/// Builds a hardware-shaped frame (`[error code], RIP, CS, RFLAGS, RSP, SS`, with the saved
/// upcall mask in CS bits 32–39 and RFLAGS.IF = !mask) on the guest kernel stack and points
/// `f` at `handler` in ring 1. Optionally masks events. A stack that cannot take the frame
/// crashes the domain.
pub fn enter_guest_handler(hv: &mut Hv, f: &mut TrapFrame, handler: u64, error_code: Option<u64>, mask_events: bool, what: &str) {
    let (d, v): (&Domain, &Vcpu) = (hv.dom(), &hv.cur);
    let from_user = f.cs & 3 == 3;
    let sp = if from_user { v.kernel_sp } else { f.rsp };
    let mask = d.upcall_mask(v.id);
    let mut words = [0u64; 6];
    let mut n = 0;
    if let Some(e) = error_code {
        words[n] = e;
        n += 1;
    }
    let rflags = (f.rflags & !RFLAGS_IF) | if mask == 0 { RFLAGS_IF } else { 0 };
    for w in [f.rip, (f.cs & 0xFFFF) | ((mask as u64) << 32), rflags, f.rsp, f.ss] {
        words[n] = w;
        n += 1;
    }
    let new_sp = (sp & !15).wrapping_sub(8 * n as u64);
    let mut bytes = [0u8; 48];
    for (i, w) in words[..n].iter().enumerate() {
        bytes[8 * i..8 * i + 8].copy_from_slice(&w.to_le_bytes());
    }
    let res = with_view(d.id, v.l4, &hv.mm.ft, |g| copy_to_guest(&mut DirectMap, g, new_sp, &bytes[..8 * n]));
    if let Err(e) = res {
        return crash_domain(hv, f, format_args!("cannot deliver {}: kernel stack {:#x} unusable ({:?})", what, new_sp, e));
    }
    if mask_events {
        d.set_vi_byte(v.id, vi::UPCALL_MASK, 1);
    }
    f.rip = handler;
    f.cs = FLAT_KERNEL_CS as u64;
    f.ss = FLAT_KERNEL_SS as u64;
    f.rsp = new_sp;
    f.rflags = (f.rflags & !(RFLAGS_CLEAR_ON_ENTRY | RFLAGS_IOPL)) | RFLAGS_IF;
}

/// Is the instruction at `rip` a `syscall` (0F 05)?
fn is_syscall_at(hv: &Hv, rip: u64) -> bool {
    let mut b = [0u8; 2];
    crate::hypercall::read_guest(hv, rip, &mut b).is_ok() && b == [0x0F, 0x05]
}

/// A guest's `syscall` from user mode (EFER.SCE is off, so it arrives as #UD): delivered to
/// the kernel's syscall callback with RCX and R11 as the instruction sets them (return RIP,
/// RFLAGS) and the usual hardware-shaped frame returning after the `syscall`.
fn syscall_bounce(hv: &mut Hv, f: &mut TrapFrame) {
    f.rip = f.rip.wrapping_add(2);
    f.rcx = f.rip;
    f.r11 = f.rflags;
    let cb = hv.cur.callbacks.syscall;
    enter_guest_handler(hv, f, cb, None, false, "syscall");
}

/// A trap from guest context. Returns false when this CPU has nothing left to run.
pub fn guest_trap(hv: &mut Hv, f: &mut TrapFrame) -> bool {
    let v = f.vector;
    match v {
        v if v == guest_abi::hypercall::HYPERCALL_VECTOR as u64 => crate::hypercall::dispatch(hv, f),
        v if v == vector::NMI as u64 => log::warn!("NMI while in guest context"),
        v if v == vector::MC as u64 => {
            log::error!("machine check");
            dump(f, 0);
            hv.end_run("machine check", ExitCode::HypervisorPanic)
        }
        v if v == vector::DF as u64 => {
            crash_domain(hv, f, format_args!("double fault"));
        }
        v if v == vector::UD as u64 && f.cs & 3 == 3 && hv.cur.callbacks.syscall != 0 && is_syscall_at(hv, f.rip) => {
            syscall_bounce(hv, f)
        }
        v if v < 32 => {
            let cr2 = if v == vector::PF as u64 { hv_arch::cpu::read_cr2() } else { 0 };
            bounce(hv, f, v as u8, f.error_code, cr2)
        }
        v if v == hv_arch::lapic::TIMER_VECTOR as u64 => {
            hv_arch::lapic::eoi();
            crate::events::process_timers(hv);
        }
        v if v == hv_arch::lapic::SPURIOUS_VECTOR as u64 => {}
        v if v == hv_arch::lapic::IPI_VECTOR as u64 => hv_arch::lapic::eoi(),
        _ => hv_arch::cpu::ack_legacy_irq(v as u8),
    }
    // Sleepers are woken where that can change (timer ticks, event-channel operations) and
    // the end of a slice arrives as a timer interrupt, so this path only tests flags.
    let yielded = core::mem::take(&mut hv.yielded);
    if (hv.need_resched || yielded || !hv.cur.runnable()) && !crate::schedule::reschedule(hv, f, yielded) {
        return false;
    }
    crate::events::deliver_upcall(hv, f);
    true
}

/// A trap while the hypervisor itself runs: fatal unless it is an NMI or a stray interrupt.
pub fn hypervisor_trap(f: &mut TrapFrame) {
    match f.vector {
        2 => log::warn!("NMI in hypervisor context"),
        // The idle loop (SCHEDOP_block/poll) processes timers itself once it wakes.
        // A flush owed is done at the end of this CPU's next locked section.
        v if v == hv_arch::lapic::TIMER_VECTOR as u64
            || v == hv_arch::lapic::IPI_VECTOR as u64
            || v == hv_arch::lapic::FLUSH_VECTOR as u64 =>
        {
            hv_arch::lapic::eoi()
        }
        v if v == hv_arch::lapic::SPURIOUS_VECTOR as u64 => {}
        v if v >= 32 => hv_arch::cpu::ack_legacy_irq(v as u8),
        _ => {
            let cr2 = hv_arch::cpu::read_cr2();
            hv_arch::console::write_fmt(format_args!(
                "(XEN) ----[ FATAL TRAP {} in hypervisor ]----\n",
                vector_name(f.vector)
            ));
            dump(f, cr2);
            crate::panic_exit()
        }
    }
}
