//! Entry dispatch: what happens when a guest traps into the hypervisor (a hypercall, an
//! exception, an interrupt), the way back to it, the idle loop, and traps inside the
//! hypervisor itself. The top layer: it calls the hypercall handlers, the bounces and the
//! scheduler; nothing calls it but the arch layer's entry stubs.

use crate::bounce::{self, crash_domain, dump, failed_return, is_syscall_at, resumable, syscall_bounce, vector_name};
use crate::Hv;
use guest_abi::traps::vector;
use hv_arch::entry::TrapFrame;

pub fn from_guest(f: &mut TrapFrame) -> bool {
    crate::shootdown::count_entry(f.vector);
    if f.vector == hv_arch::lapic::FLUSH_VECTOR as u64 {
        // Takes no lock: the CPU that sent it (perhaps holding locks) waits until this flushed.
        crate::shootdown::flush_ipi();
        return true;
    }
    crate::shootdown::left_guest();
    let mut pg = crate::percpu::this();
    let Some(pc) = pg.as_mut() else { panic!("guest trap on a CPU without its structure") };
    crate::shootdown::enter(pc);
    // The fast path: hypercalls that need only this CPU's structure run without a lock;
    // page-table hypercalls and exceptions bounced to the guest's own handlers under the
    // current domain's memory lock alone; and so does the way back when there is nothing
    // else to do on this CPU.
    // A timer interrupt fires this CPU's guest timers without any lock, and takes this
    // CPU's run-queue lock for the scheduler's tick (`crate::timers`). What is not local
    // takes the locks it needs on its own (there is no global lock).
    let mut tick = false;
    if f.vector == vector::UD as u64 && pc.cur.shared.pv64 && !pc.cur.user_mode && is_syscall_at(&*pc, f.rip) {
        crate::pv64::as_hypercall(f);
    }
    let local = if f.vector == guest_abi::hypercall::HYPERCALL_VECTOR as u64 {
        // (`HYPERVISOR_iret` is of the scheduler kind: the slow path takes it.)
        crate::hypercall::fast_path(pc, f)
    } else if f.vector == hv_arch::lapic::TIMER_VECTOR as u64 {
        hv_arch::lapic::eoi();
        pc.wake_pass |= crate::timers::fire(pc);
        tick = crate::timers::tick_due(pc);
        true
    } else {
        bounce::local_bounce(pc, f)
    };
    if local && !tick && bounce::exit_locally(pc, f) {
        crate::shootdown::leave_cpu(pc);
        return true;
    }
    let mut hv = Hv { pc };
    if core::mem::take(&mut hv.pc.wake_pass) {
        crate::schedule::check_sleepers(&mut hv);
    }
    if tick {
        crate::timers::tick(&mut hv);
    }
    let resume = if local { exit(&mut hv, f) } else { guest_trap(&mut hv, f) };
    crate::shootdown::leave_cpu(hv.pc);
    resume
}

/// A trap from guest context. Returns false when this CPU has nothing left to run.
pub fn guest_trap(hv: &mut Hv, f: &mut TrapFrame) -> bool {
    let v = f.vector;
    match v {
        v if v == guest_abi::hypercall::HYPERCALL_VECTOR as u64 && hv.pc.cur.shared.pv64 && f.rax == guest_abi::hypercall::IRET => crate::pv64::iret(hv, f),
        v if v == guest_abi::hypercall::HYPERCALL_VECTOR as u64 => crate::hypercall::dispatch(hv, f),
        v if v & hv_arch::entry::FAILED_RETURN != 0 => failed_return(hv, f),
        v if v == vector::NMI as u64 => nmi("guest"),
        v if v == vector::MC as u64 => {
            hv_arch::console::emergency_write_fmt(format_args!("(XEN) machine check in guest context\n"));
            dump(f, 0);
            crate::panic_exit()
        }
        v if v == vector::DF as u64 => {
            crash_domain(hv, f, format_args!("double fault"));
        }
        // A user-mode `syscall` (both modes: a pv64 kernel's is a hypercall already) goes
        // to the syscall callback; without one it stays a #UD.
        v if v == vector::UD as u64 && hv.pc.cur.in_user(f) && hv.pc.cur.callbacks.syscall != 0 && is_syscall_at(hv, f.rip) => {
            syscall_bounce(hv, f)
        }
        v if v == vector::UD as u64 && forced_cpuid(hv, f) => {}
        v if v == vector::GP as u64 && f.error_code == 0 && emulate_gp(hv, f) => {}
        v if v == vector::GP as u64 && f.error_code & 7 == 2 && soft_int(hv, f) => {}
        v if v < 32 => {
            if v == vector::DB as u64 {
                hv.pc.cur.debug.note_debug_exception(hv_arch::cpu::take_dr6());
            }
            let cr2 = if v == vector::PF as u64 { hv_arch::cpu::read_cr2() } else { 0 };
            bounce::bounce(hv, f, v as u8, f.error_code, cr2)
        }
        v if v == hv_arch::lapic::TIMER_VECTOR as u64 => {
            hv_arch::lapic::eoi();
            crate::timers::process_timers(hv);
        }
        v if v == hv_arch::lapic::SPURIOUS_VECTOR as u64 => {}
        v if v == hv_arch::lapic::IPI_VECTOR as u64 => {
            hv_arch::lapic::eoi();
            crate::debug_keys::dump_if_asked(hv.pc.id, f, Some((hv.pc.cur.dom, hv.pc.cur.id)));
        }
        v => match hv_core::irq::gsi_of_vector(v) {
            Some(gsi) => crate::irq::interrupt(hv, gsi),
            None => ack_other(v),
        },
    }
    exit(hv, f)
}

/// A #UD at Xen's forced-emulation `cpuid` (`ud2; .ascii "xen"; cpuid`, its bytes read
/// through the checked guest access path): emulated with the PV policy
/// (`hv_core::cpuid`), RIP past the seven bytes. False for any other #UD (bounced).
fn forced_cpuid(hv: &Hv, f: &mut TrapFrame) -> bool {
    let mut b = [0u8; hv_core::cpuid::FORCED_CPUID.len()];
    if crate::guest::read_guest(hv, f.rip, &mut b).is_err() || !hv_core::cpuid::is_forced_cpuid(&b) {
        return false;
    }
    let version = guest_abi::version::VERSION_MAJOR << 16 | guest_abi::version::VERSION_MINOR;
    let (a, bx, c, d) = hv_core::cpuid::pv_leaf(f.rax as u32, f.rcx as u32, version, hv_arch::cpu::cpuid);
    (f.rax, f.rbx, f.rcx, f.rdx) = (a as u64, bx as u64, c as u64, d as u64);
    f.rip = f.rip.wrapping_add(b.len() as u64);
    true
}

/// A #GP at a software `int N` (the IDT gate's DPL refused it: the bytes at RIP, read
/// through the checked guest access path, are `CD N`, and the error code names N)
/// to a vector whose trap-table entry lets the caller raise it (DPL 3 from user mode; 1 or
/// more from kernel mode, as Xen): delivered to that handler, returning after the
/// instruction. False otherwise (the #GP is bounced).
fn soft_int(hv: &mut Hv, f: &mut TrapFrame) -> bool {
    let mut b = [0u8; 2];
    if crate::guest::read_guest(hv, f.rip, &mut b).is_err() || b[0] != 0xCD {
        return false;
    }
    // The vector is the instruction's; the error code must name it (QEMU 7.2's TCG gives
    // vector × 16 + 2 instead of vector × 8 + 2: both are taken).
    let vec = b[1];
    if f.error_code != (vec as u64) << 3 | 2 && f.error_code != (vec as u64) << 4 | 2 {
        return false;
    }
    let ti = hv.pc.cur.traps[vec as usize];
    let need = if hv.pc.cur.in_user(f) { 3 } else { 1 };
    if ti.address == 0 || ti.flags & guest_abi::traps::TI_DPL_MASK < need {
        // Bounced as the #GP it is, with the architectural error code (vector × 8 + 2,
        // whichever form the CPU reported), as Xen shows it.
        f.error_code = (vec as u64) << 3 | 2;
        return false;
    }
    f.rip = f.rip.wrapping_add(2);
    let mask = ti.flags & guest_abi::traps::TI_MASK_EVENTS != 0;
    bounce::enter_guest_handler(hv, f, ti.address, &[], mask, "int N");
    true
}

/// The bytes of the instruction at `rip`, read once through the checked guest access path:
/// 15 (the longest an instruction can be), or those up to its page's end when the next
/// page cannot be read (none if even those cannot).
fn fetch_insn(hv: &Hv, rip: u64, b: &mut [u8; 15]) -> usize {
    if crate::guest::read_guest(hv, rip, b).is_ok() {
        return b.len();
    }
    let n = (4096 - (rip & 0xFFF)) as usize;
    if n < b.len() && crate::guest::read_guest(hv, rip, &mut b[..n]).is_ok() {
        n
    } else {
        0
    }
}

/// A #GP(0) the hypervisor may emulate, its instruction fetched once: the virtual IOPL's
/// and UMIP's instructions of a Xen pv64 vCPU (kernel or user mode), the privileged ones
/// of a guest kernel. False for everything else (the #GP is bounced).
fn emulate_gp(hv: &mut Hv, f: &mut TrapFrame) -> bool {
    let mut b = [0u8; 15];
    let n = fetch_insn(hv, f.rip, &mut b);
    let b = &b[..n];
    if hv.pc.cur.shared.pv64 && (io_op(hv, f, b) || umip_op(hv, f, b)) {
        return true;
    }
    !hv.pc.cur.in_user(f) && privileged_op(hv, f, b)
}

/// A #GP from a Xen pv64 vCPU (kernel or user mode) at `cli`, `sti`, `in` or `out` that its
/// virtual IOPL allows (`hv_core::emul::iopl_ok`): `cli`/`sti` set or clear its upcall
/// mask; port I/O reaches a port the domain has rights to (the privileged domain's, all but
/// the hypervisor's), anything else reads as all ones and drops writes (Xen's behaviour
/// without `ioports_access_permitted`). RIP past it. False otherwise (the #GP is bounced).
fn io_op(hv: &mut Hv, f: &mut TrapFrame, b: &[u8]) -> bool {
    use hv_core::emul::{self, IoOp};
    let Some((op, len)) = emul::decode_io(b) else { return false };
    let v = &hv.pc.cur;
    if !emul::iopl_ok(v.iopl, v.in_user(f), v.shared.architectural_iopl()) {
        return false;
    }
    let rights = |port: u16, size: u8| {
        v.shared.privileged && (0..size as u16).all(|i| port.checked_add(i).is_some_and(hv_core::ioperm::port_permitted))
    };
    match op {
        IoOp::Cli | IoOp::Sti => v.shared.vcpu_info.set_byte(v.id, crate::domain::vi::UPCALL_MASK, (op == IoOp::Cli) as u8),
        IoOp::In { size, port } => {
            let port = port.map_or(f.rdx as u16, u16::from);
            let val = if rights(port, size) { hv_arch::cpu::port_in(port, size) } else { u32::MAX };
            // As the CPU writes them: AL and AX keep the rest of RAX, EAX zero-extends.
            f.rax = match size {
                1 => (f.rax & !0xFF) | (val as u64 & 0xFF),
                2 => (f.rax & !0xFFFF) | (val as u64 & 0xFFFF),
                _ => val as u64,
            };
        }
        IoOp::Out { size, port } => {
            let port = port.map_or(f.rdx as u16, u16::from);
            if rights(port, size) {
                hv_arch::cpu::port_out(port, size, f.rax as u32);
            }
        }
    }
    f.rip = f.rip.wrapping_add(len as u64);
    true
}

/// A #GP from a Xen pv64 vCPU (kernel or user mode) at `sgdt`, `sidt`, `sldt`, `str` or
/// `smsw`, which UMIP makes fault (Xen leaves UMIP off, so its PV guests run them): done
/// as the CPU would, with this CPU's descriptor-table registers and the guest's CR0 view,
/// a memory operand written through the current root (user mode writes only where it
/// could itself). RIP past it. False otherwise (a write that fails included: the #GP is
/// bounced).
fn umip_op(hv: &mut Hv, f: &mut TrapFrame, b: &[u8]) -> bool {
    use hv_core::emul::{self, Operand, UmipOp};
    let Some((op, operand, len)) = emul::decode_umip(b) else { return false };
    let ([gdtr, idtr], ldt, tr) = hv_arch::cpu::descriptor_registers();
    let msw = emul::cr0_view(hv.pc.cur.fpu_ts);
    let (value, table) = match op {
        UmipOp::Sgdt => (0, Some(gdtr)),
        UmipOp::Sidt => (0, Some(idtr)),
        UmipOp::Sldt => (ldt as u64, None),
        UmipOp::Str => (tr as u64, None),
        UmipOp::Smsw => (msw, None),
    };
    match operand {
        Operand::Reg { reg: r, size } => {
            let dst = reg(f, r);
            *dst = match size {
                2 => (*dst & !0xFFFF) | (value & 0xFFFF),
                // A 32-bit write zero-extends; SMSW r32/r64 stores CR0 (its low word is the
                // machine status word).
                4 => value & 0xFFFF_FFFF,
                _ => value,
            };
        }
        Operand::Mem { base, index, disp, rip_relative } => {
            let mut ea = disp as u64;
            if rip_relative {
                ea = ea.wrapping_add(f.rip).wrapping_add(len as u64);
            }
            if let Some(b) = base {
                ea = ea.wrapping_add(*reg(f, b));
            }
            if let Some((i, s)) = index {
                ea = ea.wrapping_add(reg(f, i).wrapping_mul(s as u64));
            }
            let mut out = [0u8; 10];
            let bytes = match table {
                Some((limit, base)) => {
                    out[..2].copy_from_slice(&limit.to_le_bytes());
                    out[2..].copy_from_slice(&base.to_le_bytes());
                    &out[..10]
                }
                None => {
                    out[..2].copy_from_slice(&(value as u16).to_le_bytes());
                    &out[..2]
                }
            };
            if crate::guest::write_guest(hv, ea, bytes).is_err() {
                return false;
            }
        }
    }
    f.rip = f.rip.wrapping_add(len as u64);
    true
}

/// A #GP from guest kernel mode at a privileged instruction the hypervisor emulates
/// (`hv_core::emul`: control-register reads, a CR0 write of TS, a CR3 write as
/// `MMUEXT_NEW_BASEPTR`, the segment-base MSRs and EFER), decoded from its bytes read
/// through the checked guest access path: done, RIP past it. False for everything else (the
/// #GP is bounced as before), including an operand the operation refuses. True with RIP
/// unchanged when a CR3 load must go on (its validation preempted).
fn privileged_op(hv: &mut Hv, f: &mut TrapFrame, b: &[u8]) -> bool {
    use hv_core::emul::{self, Op};
    let Some((op, len)) = emul::decode(b) else { return false };
    let done = match op {
        Op::ReadCr { cr, gpr } => {
            let v = match cr {
                0 => emul::cr0_view(hv.pc.cur.fpu_ts),
                2 => hv.dom().vcpu_info.read_u64(hv.pc.cur.id, crate::domain::vi::CR2),
                3 => hv.pc.cur.l4.0 << 12,
                4 if hv.pc.cur.shared.pv64 => emul::cr4_view_pv64(hv_arch::cpu::read_cr4(), hv.pc.cur.fsgsbase),
                4 => emul::cr4_view(hv_arch::cpu::read_cr4()),
                _ => return false,
            };
            *reg(f, gpr) = v;
            true
        }
        Op::WriteCr { cr: 0, gpr } => match emul::cr0_write(hv.pc.cur.fpu_ts, *reg(f, gpr)) {
            Some(ts) => crate::hypercall::desc::fpu_taskswitch(hv.pc, ts as u64).is_ok(),
            None => false,
        },
        Op::WriteCr { cr: 3, gpr } => {
            let mfn = hv_core::mem::Mfn(*reg(f, gpr) >> 12);
            let shared = hv.pc.cur.shared.clone();
            let mut mm = shared.mm();
            // A fresh page-table budget, as a hypercall gets: validating a new tree may take
            // more than one; then the instruction is run again (RIP unchanged) and the
            // validation goes on where it stopped, as Xen retries it.
            crate::hypercall::begin(hv.pc);
            match crate::hypercall::mmu::new_baseptr(&mut crate::guest::Mx { pc: hv.pc, mm: &mut mm }, mfn) {
                Ok(()) => true,
                Err(guest_abi::errno::Errno::ERESTART) => return true,
                Err(_) => false,
            }
        }
        Op::WriteCr { cr: 4, gpr } if hv.pc.cur.shared.pv64 => {
            let on = emul::cr4_write_pv64(crate::machine::get().fsgsbase, *reg(f, gpr));
            hv.pc.cur.fsgsbase = on;
            if crate::machine::get().fsgsbase {
                hv_arch::cpu::set_fsgsbase(on);
            }
            true
        }
        Op::WriteCr { .. } => false,
        Op::ReadDr { dr, gpr } => match hv.pc.cur.debug.get(dr) {
            Ok(v) => {
                *reg(f, gpr) = v;
                true
            }
            Err(_) => false,
        },
        Op::WriteDr { dr, gpr } => {
            let v = *reg(f, gpr);
            hv.pc.cur.debug.set(dr, v).is_ok()
        }
        Op::Rdmsr => {
            let msr = f.rcx as u32;
            let v = match msr {
                emul::MSR_EFER => emul::EFER_VIEW,
                m => match emul::base_msr(m) {
                    Some(0) => hv_arch::cpu::segment_base(hv_arch::cpu::SegBase::Fs),
                    Some(1) => hv_arch::cpu::segment_base(hv_arch::cpu::SegBase::KernelGs),
                    Some(_) => hv_arch::cpu::segment_base(hv_arch::cpu::SegBase::Gs),
                    None => return false,
                },
            };
            (f.rax, f.rdx) = (v & 0xFFFF_FFFF, v >> 32);
            true
        }
        Op::Wrmsr => match emul::base_msr(f.rcx as u32) {
            Some(which) => crate::hypercall::desc::set_segment_base(which, (f.rdx & 0xFFFF_FFFF) << 32 | (f.rax & 0xFFFF_FFFF)).is_ok(),
            None => false,
        },
    };
    if done {
        f.rip = f.rip.wrapping_add(len as u64);
    }
    done
}

/// General-purpose register `i` (the ModRM numbering: RAX, RCX, RDX, RBX, RSP, RBP, RSI,
/// RDI, R8–R15) of the trapped context.
fn reg(f: &mut TrapFrame, i: u8) -> &mut u64 {
    match i & 15 {
        0 => &mut f.rax,
        1 => &mut f.rcx,
        2 => &mut f.rdx,
        3 => &mut f.rbx,
        4 => &mut f.rsp,
        5 => &mut f.rbp,
        6 => &mut f.rsi,
        7 => &mut f.rdi,
        8 => &mut f.r8,
        9 => &mut f.r9,
        10 => &mut f.r10,
        11 => &mut f.r11,
        12 => &mut f.r12,
        13 => &mut f.r13,
        14 => &mut f.r14,
        _ => &mut f.r15,
    }
}

/// The way back to the guest after an entry: picks again if asked to (or if the current
/// vCPU cannot go on), delivers a due upcall and checks the frame. Returns false when this
/// CPU has nothing left to run.
pub fn exit(hv: &mut Hv, f: &mut TrapFrame) -> bool {
    // Sleepers are woken where that can change (timer ticks, event-channel operations) and
    // the end of a slice arrives as a timer interrupt, so this path only tests flags.
    // A vCPU that blocks, goes down or dies here asks for the switch (`need_resched`); one
    // stopped from another CPU gets a reschedule request with it.
    let yielded = core::mem::take(&mut hv.pc.yielded);
    if (hv.pc.need_resched || yielded || hv.pc.cur.shared.is_dead()) && !bounce::switch(hv, f, yielded) {
        return false;
    }
    bounce::deliver_upcall(hv, f);
    check_resume(hv, f)
}

/// The last check before `f` is resumed: a RIP that is not canonical cannot be returned to
/// (real CPUs fault on the `iretq`, which the exit path catches as well; QEMU's TCG resumes and
/// faults at the guest's first fetch), so it is a failed return right away. Returns false
/// when this CPU has nothing left to run.
#[inline]
pub fn check_resume(hv: &mut Hv, f: &mut TrapFrame) -> bool {
    // (A frame returning to ring 0 would be a hypervisor bug: treated as a failed return,
    // before `exit_to_guest`'s last-resort refusal.) The common case costs a few
    // instructions on every exit; the rest is out of line.
    if resumable(f) {
        return true;
    }
    refuse_resume(hv, f)
}

#[inline(never)]
fn refuse_resume(hv: &mut Hv, f: &mut TrapFrame) -> bool {
    while !resumable(f) {
        f.vector = vector::GP as u64 | hv_arch::entry::FAILED_RETURN;
        f.error_code = 0;
        failed_return(hv, f);
        if !crate::schedule::current_can_run(hv.pc) {
            if !bounce::switch(hv, f, false) {
                return false;
            }
            bounce::deliver_upcall(hv, f);
        }
    }
    true
}

/// An interrupt nobody asked for: a legacy PIC's (masked, so spurious), or a vector a device
/// was pointed at behind the hypervisor's back (dom0 owns PCI configuration space): the
/// LAPIC is acknowledged, so the vector cannot block the ones below it.
fn ack_other(v: u64) {
    if (hv_arch::cpu::PIC_VECTOR_BASE as u64..hv_arch::cpu::PIC_VECTOR_BASE as u64 + 16).contains(&v) {
        hv_arch::cpu::ack_legacy_irq(v as u8)
    } else {
        hv_arch::lapic::eoi()
    }
}

/// NMIs seen (any CPU, any context).
static NMIS: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// An NMI: counted, and reported (at the 1st, 2nd, 4th, 8th, ...) without blocking on the
/// console lock, which the interrupted code may hold. NMIs are not delivered to guests
/// (`CALLBACKTYPE_NMI` is refused).
fn nmi(context: &str) {
    // Another CPU is switching the machine off or resetting it (`crate::power`).
    hv_arch::stop::on_nmi();
    let n = NMIS.fetch_add(1, core::sync::atomic::Ordering::Relaxed) + 1;
    if n.is_power_of_two() {
        hv_arch::console::emergency_write_fmt(format_args!("(XEN) NMI in {} context ({} so far)\n", context, n));
    }
}

/// A trap while the hypervisor itself runs: fatal unless it is an NMI or a stray interrupt.
/// Runs with whatever locks the interrupted code holds: nothing here may take one.
pub fn hypervisor_trap(f: &mut TrapFrame) {
    match f.vector {
        2 => nmi("hypervisor"),
        // The idle loop (SCHEDOP_block/poll) processes timers itself once it wakes.
        // A flush owed is done before this CPU next resumes a guest (`crate::shootdown::leave_cpu`).
        v if v == hv_arch::lapic::TIMER_VECTOR as u64 || v == hv_arch::lapic::FLUSH_VECTOR as u64 => hv_arch::lapic::eoi(),
        v if v == hv_arch::lapic::IPI_VECTOR as u64 => {
            hv_arch::lapic::eoi();
            crate::debug_keys::dump_if_asked(hv_arch::percpu::cpu_id(), f, None);
        }
        v if v == hv_arch::lapic::SPURIOUS_VECTOR as u64 => {}
        // A device interrupt: handled by the idle loop once it wakes (its EOI held back).
        v if v >= 32 => match hv_core::irq::gsi_of_vector(v) {
            Some(gsi) => crate::irq::defer(gsi),
            None => ack_other(v),
        },
        // A guest selector the CPU refused while the hypervisor loaded it for the guest.
        v if (10..=13).contains(&v) && hv_arch::cpu::fixup(f.rip).is_some() => {
            f.rip = hv_arch::cpu::fixup(f.rip).unwrap_or(f.rip);
        }
        _ => {
            let cr2 = hv_arch::cpu::read_cr2();
            hv_arch::console::emergency_write_fmt(format_args!(
                "(XEN) ----[ FATAL TRAP {} in hypervisor ]----\n",
                vector_name(f.vector)
            ));
            dump(f, cr2);
            crate::backtrace::print_from(Some(f.rip), f.rbp);
            crate::panic_exit()
        }
    }
}

/// This CPU's idle loop: halts until an interrupt, then looks for work; resumes the chosen
/// vCPU. Holds no lock while halted.
pub fn idle_loop() -> ! {
    loop {
        let mut frame = TrapFrame::default();
        let mut resume = false;
        {
            let mut pg = crate::percpu::this();
            if let Some(pc) = pg.as_mut() {
                crate::shootdown::enter(pc);
                let mut hv = Hv { pc };
                crate::irq::service_deferred(&mut hv);
                crate::timers::process_timers(&mut hv); // also wakes sleepers
                if bounce::switch(&mut hv, &mut frame, false) {
                    bounce::deliver_upcall(&mut hv, &mut frame);
                    resume = check_resume(&mut hv, &mut frame);
                }
                if !resume {
                    let t = if hv.pc.slice_until != 0 { hv.pc.slice_until } else { crate::events::now() + hv_core::sched::TICK_NS };
                    crate::events::arm(hv.pc, Some(t));
                }
                crate::shootdown::leave_cpu(hv.pc);
            }
        }
        if resume {
            hv_arch::entry::exit_to_guest(&frame);
        }
        hv_arch::cpu::wait_for_interrupt();
    }
}
