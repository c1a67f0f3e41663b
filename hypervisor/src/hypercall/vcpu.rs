//! `vcpu_op` (bringing vCPUs up and down, their context, `vcpu_info` placement, timers,
//! runstate) and `set_timer_op`.

use super::bytes::u64at;
use super::{read_guest, write_guest, HcResult};
use crate::domain::{vi, VcpuInfoAt};
use crate::events::now;
use core::sync::atomic::Ordering;
use crate::Hv;
use guest_abi::errno::Errno;
use guest_abi::layout::is_canonical;
use guest_abi::selectors::{FLAT_KERNEL_CS, FLAT_KERNEL_SS, FLAT_USER_CS, FLAT_USER_SS};
use guest_abi::traps::TrapInfo;
use hv_arch::entry::TrapFrame;
use hv_arch::physmem::DirectMap;
use hv_core::mem::{Mfn, PhysMem};
pub use guest_abi::vcpu::*;

/// `VCPU_SSHOTTMR_future`: fail with -ETIME if the deadline has passed.
const SSHOT_FUTURE: u32 = 1;
/// Shortest periodic timer accepted (as Xen: 1 ms).
const MIN_PERIOD_NS: u64 = 1_000_000;
/// Longest periodic timer accepted (one day): keeps every deadline far from overflow.
const MAX_PERIOD_NS: u64 = 86_400 * 1_000_000_000;

pub fn vcpu_op(hv: &mut Hv, cmd: u64, vcpu: u64, arg: u64) -> HcResult {
    let d = hv.pc.cur.shared.clone();
    if vcpu >= d.nr_vcpus() as u64 {
        return Err(Errno::ENOENT);
    }
    let id = vcpu as u32;
    let sid = crate::vcpu::sched_id(d.id, id);
    match cmd {
        VCPUOP_INITIALISE => initialise(hv, id, arg),
        VCPUOP_UP => {
            // Under the lock of the queue owning the vCPU: an up and a down of one vCPU
            // from two CPUs happen one after the other.
            let r = crate::state::with_owner(&d, id, |rq| {
                let s = rq.payload_mut(sid).ok_or(Errno::ENOENT)?;
                if !s.state.initialised {
                    return Err(Errno::EINVAL);
                }
                if !s.state.down {
                    return Ok(false);
                }
                s.state.down = false;
                d.set_up(id, true);
                Ok(true)
            })
            .ok_or(Errno::ENOENT)??;
            if r {
                crate::schedule::wake_shared(hv.pc, &d, id);
            }
            Ok(0)
        }
        VCPUOP_DOWN => {
            // The last vCPU up going down powers the domain off (as Xen): the up mask loses
            // the bit only while another bit remains, so two vCPUs downing each other from
            // two CPUs cannot both go.
            enum Down {
                Already,
                Last,
                Stopped(Option<usize>),
            }
            let t = now();
            let r = crate::state::with_owner(&d, id, |rq| {
                let s = rq.payload_mut(sid).ok_or(Errno::ENOENT)?;
                if s.state.down {
                    return Ok::<_, Errno>(Down::Already);
                }
                let bit = 1u64 << id;
                let cleared = d.up.fetch_update(Ordering::AcqRel, Ordering::Acquire, |m| (m & !bit != 0).then_some(m & !bit));
                if cleared.is_err() {
                    return Ok(Down::Last);
                }
                s.state.down = true;
                Ok(Down::Stopped(crate::schedule::stop_locked(rq, sid, t)))
            })
            .ok_or(Errno::ENOENT)??;
            match r {
                Down::Already | Down::Stopped(None) => {}
                Down::Last => crate::bounce::domain_ended(hv, guest_abi::sched::ShutdownReason::Poweroff, None),
                Down::Stopped(Some(cpu)) => crate::schedule::stopped_on(hv.pc, &d, id, cpu),
            }
            Ok(0)
        }
        VCPUOP_GET_RUNSTATE_INFO => {
            let t = now();
            let (state, entry, times) = crate::state::with_owner(&d, id, |rq| rq.payload(sid).map(|s| s.state.runstate_at(t)))
                .flatten()
                .ok_or(Errno::ENOENT)?;
            let mut b = [0u8; 48];
            b[..4].copy_from_slice(&state.to_le_bytes());
            b[8..16].copy_from_slice(&entry.to_le_bytes());
            for (i, t) in times.iter().enumerate() {
                b[16 + 8 * i..24 + 8 * i].copy_from_slice(&t.to_le_bytes());
            }
            write_guest(hv, arg, &b)?;
            Ok(0)
        }
        VCPUOP_REGISTER_VCPU_INFO => register_vcpu_info(hv, id, arg),
        _ => match local_op(hv.pc, cmd, vcpu, arg) {
            Some((r, wake)) => {
                if wake {
                    crate::schedule::check_sleepers(hv);
                }
                r
            }
            None => Err(Errno::ENOSYS),
        },
    }
}

/// Does `vcpu_op(cmd, ..)` run without a run-queue lock ([`local_op`])?
pub fn is_local_op(cmd: u64) -> bool {
    matches!(
        cmd,
        VCPUOP_IS_UP | VCPUOP_SET_PERIODIC_TIMER | VCPUOP_STOP_PERIODIC_TIMER | VCPUOP_SET_SINGLESHOT_TIMER | VCPUOP_STOP_SINGLESHOT_TIMER
    )
}

/// The `vcpu_op` commands that need no run-queue lock: timers (atomics in the domain,
/// `crate::timers`) and `is_up` (the domain's up mask). `None` for the others. With the
/// result, whether a sleeper may need waking.
pub fn local_op(pc: &mut crate::percpu::PerCpu, cmd: u64, vcpu: u64, arg: u64) -> Option<(HcResult, bool)> {
    if !is_local_op(cmd) {
        return None;
    }
    let d = pc.cur.shared.clone();
    if vcpu >= d.vcpu_info.len() as u64 {
        return Some((Err(Errno::ENOENT), false));
    }
    let id = vcpu as u32;
    let is_me = id == pc.cur.id;
    Some(match cmd {
        VCPUOP_IS_UP => (Ok(i64::from(d.is_up(id))), false),
        VCPUOP_SET_PERIODIC_TIMER => {
            let mut b = [0u8; 8];
            if let Err(e) = read_guest(&*pc, arg, &mut b) {
                return Some((Err(e), false));
            }
            let p = u64::from_le_bytes(b);
            if !(MIN_PERIOD_NS..=MAX_PERIOD_NS).contains(&p) {
                return Some((Err(Errno::EINVAL), false));
            }
            if let Some(t) = d.timers.get(id as usize) {
                t.period.store(0, Ordering::SeqCst);
                t.period_next.store(now() + p, Ordering::SeqCst);
                t.period.store(p, Ordering::SeqCst);
            }
            crate::timers::rearm_home(pc, &d, id);
            (Ok(0), false)
        }
        VCPUOP_STOP_PERIODIC_TIMER => {
            if let Some(t) = d.timers.get(id as usize) {
                t.period.store(0, Ordering::SeqCst);
            }
            (Ok(0), false)
        }
        // As Xen: one-shot timers only on the calling vCPU.
        _ if !is_me => (Err(Errno::EINVAL), false),
        VCPUOP_SET_SINGLESHOT_TIMER => {
            let mut b = [0u8; 16];
            if let Err(e) = read_guest(&*pc, arg, &mut b[..12]) {
                return Some((Err(e), false));
            }
            let t = u64::from_le_bytes(b[..8].try_into().unwrap_or_default());
            let flags = u32::from_le_bytes(b[8..12].try_into().unwrap_or_default());
            if flags & SSHOT_FUTURE != 0 && t < now() {
                return Some((Err(Errno::ETIME), false));
            }
            (Ok(0), set_timer(pc, t.max(1)))
        }
        _ => (Ok(0), set_timer(pc, 0)),
    })
}

/// `set_timer_op(timeout)`: a one-shot VIRQ_TIMER at absolute system time; 0 cancels; a time
/// in the past fires at once. Needs no lock (`crate::timers`); returns whether a sleeper may
/// need waking.
pub fn set_timer_op(pc: &mut crate::percpu::PerCpu, timeout: u64) -> (HcResult, bool) {
    (Ok(0), set_timer(pc, timeout))
}

/// Sets the current vCPU's one-shot timer (0: none) and fires it if due.
fn set_timer(pc: &mut crate::percpu::PerCpu, deadline: u64) -> bool {
    let (d, v) = (pc.cur.shared.clone(), pc.cur.id);
    let Some(t) = d.timers.get(v as usize) else { return false };
    t.home.store(pc.id, Ordering::Relaxed);
    if deadline != 0 && deadline <= now() {
        // Due already: it fires here and now (as Xen's `set_timer` of a past time), and
        // is not left set. The LAPIC keeps whatever it was armed for (a deadline that
        // passes with nothing due just re-arms it).
        t.single.store(0, Ordering::Release);
        return crate::timers::raise(pc.id, &d, guest_abi::evtchn::VIRQ_TIMER, v);
    }
    t.single.store(deadline, Ordering::Release);
    crate::events::arm(pc, None);
    false
}

/// `VCPUOP_register_vcpu_info {mfn, offset}`: moves vCPU `id`'s `vcpu_info` into a page of
/// the domain's own (held with a writable type reference, so it can never become a page
/// table or descriptor page). Once per vCPU; the area must not cross the page.
fn register_vcpu_info(hv: &mut Hv, id: u32, arg: u64) -> HcResult {
    let mut b = [0u8; 16];
    read_guest(hv, arg, &mut b)?;
    let mfn = Mfn(u64::from_le_bytes(b[..8].try_into().unwrap_or_default()));
    let offset = u32::from_le_bytes(b[8..12].try_into().unwrap_or_default()) as usize;
    // Claimed once (as Xen): a second call, or one racing it from another CPU, fails.
    let bit = 1u64 << id;
    if offset > 4096 - vi::SIZE || hv.dom().vcpu_info_registered.fetch_or(bit, Ordering::AcqRel) & bit != 0 {
        return Err(Errno::EINVAL);
    }
    let dom = hv.pc.cur.dom;
    let mut dm = DirectMap;
    // The move happens under the memory lock: a bounce of vCPU `id` on another CPU writes its
    // vcpu_info (event mask, CR2) under that lock alone, and must land in the area that is
    // current.
    super::with_mm(hv, |mx| {
        crate::guest::pt!(mx, dm).get_writable_page(mfn, dom)?;
        // Carry the current contents over; then mark everything pending so that nothing
        // raised around the move is lost (as Xen does).
        let infos = &mx.pc.cur.shared.vcpu_info;
        let mut c = [0u8; vi::SIZE];
        if let Some(at) = infos.get(id) {
            DirectMap.read(at.frame, at.offset, &mut c);
        }
        c[vi::UPCALL_PENDING] = 1;
        c[vi::PENDING_SEL..vi::PENDING_SEL + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        DirectMap.write(mfn, offset, &c);
        infos.set(id, VcpuInfoAt { frame: mfn, offset });
        Ok::<(), hv_core::pt::PtError>(())
    })
    .map_err(|_| {
        hv.dom().vcpu_info_registered.fetch_and(!bit, Ordering::AcqRel);
        Errno::EINVAL
    })?;
    crate::schedule::wake(hv, dom, id);
    Ok(0)
}



/// Status flags a guest may set; IF is always on (events are masked virtually), IOPL 0.
const RFLAGS_GUEST: u64 = 0x0001 | 0x0004 | 0x0010 | 0x0040 | 0x0080 | 0x0100 | 0x0400 | 0x0800 | (1 << 18) | (1 << 21);

/// The registers of a `cpu_user_regs` image, checked: canonical RIP/RSP, the flat kernel or
/// user selectors (a kernel selector's RPL 0 is raised to 1), safe RFLAGS.
fn user_regs(r: &[u8]) -> Result<TrapFrame, Errno> {
    use guest_abi::vcpu::regs as g;
    let at = |o: usize| u64at(r, o);
    let (rip, rsp) = (at(g::RIP), at(g::RSP));
    let mut cs = at(g::CS) as u16;
    let mut ss = at(g::SS) as u16;
    if cs & 3 == 0 {
        cs |= 1;
    }
    if ss & 3 == 0 {
        ss |= 1;
    }
    let ok_sel = (cs == FLAT_KERNEL_CS && ss == FLAT_KERNEL_SS) || (cs == FLAT_USER_CS && ss == FLAT_USER_SS);
    if !ok_sel || !is_canonical(rip) || !is_canonical(rsp) {
        return Err(Errno::EINVAL);
    }
    Ok(TrapFrame {
        r15: at(g::R15),
        r14: at(g::R14),
        r13: at(g::R13),
        r12: at(g::R12),
        rbp: at(g::RBP),
        rbx: at(g::RBX),
        r11: at(g::R11),
        r10: at(g::R10),
        r9: at(g::R9),
        r8: at(g::R8),
        rax: at(g::RAX),
        rcx: at(g::RCX),
        rdx: at(g::RDX),
        rsi: at(g::RSI),
        rdi: at(g::RDI),
        vector: 0,
        error_code: 0,
        rip,
        cs: cs as u64,
        rflags: (at(g::RFLAGS) & RFLAGS_GUEST) | 0x202,
        rsp,
        ss: ss as u64,
    })
}

/// `VCPUOP_initialise(vcpu, vcpu_guest_context)`: gives a vCPU that has never run its
/// registers, trap table, callbacks, kernel stack, page-table root, GDT and LDT; it stays
/// down until `VCPUOP_up`. Once only (-EEXIST). Every field is checked as the hypercall
/// that would set it checks it; on any failure nothing is kept. Never inlined: its 4 KiB
/// trap table must not enlarge the stack frame of the hypercall dispatch.
#[inline(never)]
fn initialise(hv: &mut Hv, id: u32, arg: u64) -> HcResult {
    // Claimed once: a second call, or one racing it from another CPU, gets -EEXIST; a
    // failure below gives the claim back.
    let d = hv.pc.cur.shared.clone();
    let bit = 1u64 << id;
    if d.claimed.fetch_or(bit, Ordering::AcqRel) & bit != 0 {
        return Err(Errno::EEXIST);
    }
    let r = initialise_claimed(hv, id, arg);
    if r.is_err() {
        d.claimed.fetch_and(!bit, Ordering::AcqRel);
    }
    r
}

fn initialise_claimed(hv: &mut Hv, id: u32, arg: u64) -> HcResult {
    let dom = hv.pc.cur.dom;
    let mut c = alloc::vec![0u8; ctx::SIZE];
    read_guest(hv, arg, &mut c)?;
    let frame = user_regs(&c[ctx::USER_REGS..ctx::TRAP_CTXT])?;
    let mut traps = [TrapInfo::default(); 256];
    for (i, t) in traps.iter_mut().enumerate() {
        let e = &c[ctx::TRAP_CTXT + 16 * i..][..16];
        let address = u64at(e, 8);
        if address == 0 {
            continue;
        }
        super::traps::check_handler(address)?;
        let cs = super::traps::fixup_cs(u16::from_le_bytes([e[2], e[3]]))?;
        *t = TrapInfo { vector: i as u8, flags: e[1], cs, _pad: 0, address };
    }
    let callbacks = crate::vcpu::Callbacks {
        event: u64at(&c, ctx::EVENT_CALLBACK),
        failsafe: u64at(&c, ctx::FAILSAFE_CALLBACK),
        syscall: u64at(&c, ctx::SYSCALL_CALLBACK),
        ..Default::default()
    };
    for a in [callbacks.event, callbacks.failsafe, callbacks.syscall] {
        super::traps::check_handler(a)?;
    }
    let (fs, gs_kernel, gs_user) = (u64at(&c, ctx::FS_BASE), u64at(&c, ctx::GS_BASE_KERNEL), u64at(&c, ctx::GS_BASE_USER));
    let kernel_sp = u64at(&c, ctx::KERNEL_SP);
    // The kernel stack becomes TSS.RSP1 (as `stack_switch`): a guest address.
    if ![fs, gs_kernel, gs_user].iter().all(|&a| is_canonical(a)) || !guest_abi::layout::is_guest_va(kernel_sp) {
        return Err(Errno::EINVAL);
    }
    // Debug registers are not virtualised: no breakpoint may be enabled.
    let dr = |n: usize| u64at(&c, ctx::DEBUGREG + 8 * n);
    if (0..4).any(|n| dr(n) != 0) || dr(7) & 0xFF != 0 {
        return Err(Errno::EINVAL);
    }
    let cr3 = u64at(&c, ctx::CR3);
    let user_cr3 = u64at(&c, ctx::USER_CR3);
    if cr3 & 0xFFF != 0 {
        return Err(Errno::EINVAL);
    }
    // Guest kernel and user share one root in the ring-1 model (as NEW_USER_BASEPTR).
    if user_cr3 != 0 && user_cr3 != cr3 {
        return Err(Errno::EOPNOTSUPP);
    }
    let fpu = if u64at(&c, ctx::FLAGS) & ctx::VGCF_I387_VALID != 0 {
        let img: &[u8; 512] = c[..512].try_into().map_err(|_| Errno::EINVAL)?;
        hv_arch::cpu::FxArea::from_legacy(img).ok_or(Errno::EINVAL)?
    } else {
        hv_arch::cpu::FxArea::initial()
    };
    let gdt_ents = u64at(&c, ctx::GDT_ENTS);
    if gdt_ents > guest_abi::selectors::FIRST_RESERVED_GDT_ENTRY as u64 {
        return Err(Errno::EINVAL);
    }
    let mut gdt_frames = [0u64; 14];
    for (i, f) in gdt_frames.iter_mut().enumerate() {
        *f = u64at(&c, ctx::GDT_FRAMES + 8 * i);
    }
    let (ldt_base, ldt_ents) = (u64at(&c, ctx::LDT_BASE), u64at(&c, ctx::LDT_ENTS));

    // Take the references: root, GDT frames, LDT frames (through the new root).
    let l4 = Mfn(cr3 >> 12);
    let (gdt, ldt) = super::with_mm(hv, |mx| {
        let mut dm = DirectMap;
        crate::guest::pt!(mx, dm).get_root(l4, dom)?;
        let gdt = match super::desc::acquire_gdt(mx, &gdt_frames[..gdt_ents.div_ceil(512) as usize]) {
            Ok(g) => g,
            Err(e) => {
                crate::guest::pt!(mx, dm).put_root(l4);
                return Err(e);
            }
        };
        match super::mmu::acquire_ldt(mx, l4, ldt_base, ldt_ents) {
            Ok(l) => Ok((gdt, l)),
            Err(e) => {
                super::desc::release(mx, &gdt);
                crate::guest::pt!(mx, dm).put_root(l4);
                Err(e)
            }
        }
    })?;
    // Never initialised, so never run: its context waits in its slot.
    let d = hv.pc.cur.shared.clone();
    let installed = crate::state::with_owner(&d, id, |rq| {
        let s = rq.payload_mut(crate::vcpu::sched_id(dom, id))?;
        let v = s.ctx.as_mut()?;
        v.frame = frame;
        v.traps = traps;
        v.callbacks = callbacks;
        v.kernel_ss = super::traps::fixup_ss(u64at(&c, ctx::KERNEL_SS) as u16);
        v.kernel_sp = kernel_sp;
        v.l4 = l4;
        v.gdt = gdt;
        v.ldt = ldt;
        v.ldt_ents = ldt_ents as u32;
        v.fpu_ts = false;
        *v.fpu = fpu;
        // DS, ES, FS, GS of cpu_user_regs: loaded (and refused to the failsafe callback, as
        // Xen) when the vCPU first runs.
        let r = &c[ctx::USER_REGS..ctx::TRAP_CTXT];
        v.sel = [176, 168, 184, 192].map(|o| u64at(r, o) as u16);
        v.fs_base = fs;
        v.gs_base = gs_kernel;
        v.kernel_gs_base = gs_user;
        s.state.initialised = true;
        Some(())
    })
    .flatten();
    if installed.is_none() {
        // Never expected (an uninitialised vCPU never ran): the references go back.
        super::with_mm(hv, |mx| {
            let mut dm = DirectMap;
            super::desc::release(mx, &gdt);
            super::desc::release(mx, &ldt);
            crate::guest::pt!(mx, dm).put_root(l4);
        });
        return Err(Errno::ENOENT);
    }
    log::debug!("d{}v{} initialised: rip {:#x} rsp {:#x} root {:?}", dom, id, frame.rip, frame.rsp, l4);
    Ok(0)
}
