//! A vCPU's `vcpu_guest_context`: checked and installed (`VCPUOP_initialise` for the
//! caller's own vCPUs, `DOMCTL_setvcpucontext` for another domain's), and read back
//! (`DOMCTL_getvcpucontext`).

use super::bytes::{put64, u64at};
use super::HcResult;
use crate::domain::DomShared;
use crate::guest::{pt, DomPt};
use crate::Hv;
use guest_abi::errno::Errno;
use guest_abi::layout::is_canonical;
use guest_abi::selectors::{FLAT_KERNEL_CS, FLAT_KERNEL_SS, FLAT_USER_CS, FLAT_USER_SS};
use guest_abi::traps::TrapInfo;
use guest_abi::vcpu::{ctx, regs as g};
use hv_arch::entry::TrapFrame;
use hv_arch::physmem::DirectMap;
use hv_core::mem::Mfn;

pub use guest_abi::vcpu::ctx::{VGCF_IN_KERNEL, VGCF_ONLINE};

/// Status flags a guest may set; IF is always on (events are masked virtually), IOPL 0.
pub(crate) const RFLAGS_GUEST: u64 = 0x0001 | 0x0004 | 0x0010 | 0x0040 | 0x0080 | 0x0100 | 0x0400 | 0x0800 | (1 << 18) | (1 << 21);

/// Offsets of DS, ES, FS, GS in `cpu_user_regs`.
const SEL_OFFSETS: [usize; 4] = [176, 168, 184, 192];

/// A context whose every field passed the check of the hypercall that would set it; the
/// references it needs (root, GDT and LDT frames) are not taken yet.
pub struct Context {
    frame: TrapFrame,
    traps: [TrapInfo; 256],
    callbacks: crate::vcpu::Callbacks,
    kernel_ss: u16,
    kernel_sp: u64,
    fs_base: u64,
    gs_kernel: u64,
    gs_user: u64,
    l4: Mfn,
    fpu: hv_arch::cpu::FxArea,
    gdt_frames: [u64; 14],
    gdt_ents: u64,
    ldt_base: u64,
    ldt_ents: u64,
    sel: [u16; 4],
    /// The Xen pv64 mode's virtual IOPL, from the context's RFLAGS (as Xen's
    /// `arch_set_info_guest`); 0 in the ring-1 model.
    iopl: u8,
    pub flags: u64,
}

/// The registers of a `cpu_user_regs` image, checked: canonical RIP/RSP, the flat kernel or
/// user selectors (a kernel selector's RPL 0 is raised to the kernel's: 1, or 3 in the Xen
/// pv64 mode, whose kernel and user share Xen's ring-3 selectors), safe RFLAGS.
fn user_regs(r: &[u8], pv64: bool) -> Result<TrapFrame, Errno> {
    let at = |o: usize| u64at(r, o);
    let (rip, rsp) = (at(g::RIP), at(g::RSP));
    let mut cs = at(g::CS) as u16;
    let mut ss = at(g::SS) as u16;
    let rpl = guest_abi::selectors::kernel_rpl(pv64) as u16;
    if cs & 3 == 0 {
        cs |= rpl;
    }
    if ss & 3 == 0 {
        ss |= rpl;
    }
    let ok_sel = (cs == FLAT_KERNEL_CS && ss == FLAT_KERNEL_SS && !pv64) || (cs == FLAT_USER_CS && ss == FLAT_USER_SS);
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

/// Checks a `vcpu_guest_context` image (`ctx::SIZE` bytes): every field as the hypercall
/// that would set it checks it.
pub fn parse(c: &[u8], pv64: bool) -> Result<alloc::boxed::Box<Context>, Errno> {
    if c.len() < ctx::SIZE {
        return Err(Errno::EINVAL);
    }
    let frame = user_regs(&c[ctx::USER_REGS..ctx::TRAP_CTXT], pv64)?;
    // A Xen pv64 vCPU starts in kernel mode (its user root comes with NEW_USER_BASEPTR).
    if pv64 && u64at(c, ctx::FLAGS) & VGCF_IN_KERNEL == 0 {
        return Err(Errno::EINVAL);
    }
    let mut traps = [TrapInfo::default(); 256];
    for (i, t) in traps.iter_mut().enumerate() {
        let e = &c[ctx::TRAP_CTXT + 16 * i..][..16];
        let address = u64at(e, 8);
        if address == 0 {
            continue;
        }
        super::traps::check_handler(address)?;
        let cs = super::traps::fixup_cs(u16::from_le_bytes([e[2], e[3]]), pv64)?;
        *t = TrapInfo { vector: i as u8, flags: e[1], cs, _pad: 0, address };
    }
    let callbacks = crate::vcpu::Callbacks {
        event: u64at(c, ctx::EVENT_CALLBACK),
        failsafe: u64at(c, ctx::FAILSAFE_CALLBACK),
        syscall: u64at(c, ctx::SYSCALL_CALLBACK),
        ..Default::default()
    };
    for a in [callbacks.event, callbacks.failsafe, callbacks.syscall] {
        super::traps::check_handler(a)?;
    }
    let (fs_base, gs_kernel, gs_user) = (u64at(c, ctx::FS_BASE), u64at(c, ctx::GS_BASE_KERNEL), u64at(c, ctx::GS_BASE_USER));
    let kernel_sp = u64at(c, ctx::KERNEL_SP);
    // The kernel stack becomes TSS.RSP1 (as `stack_switch`): a guest address.
    if ![fs_base, gs_kernel, gs_user].iter().all(|&a| is_canonical(a)) || !guest_abi::layout::is_guest_va(kernel_sp) {
        return Err(Errno::EINVAL);
    }
    // Debug registers are not virtualised: no breakpoint may be enabled.
    let dr = |n: usize| u64at(c, ctx::DEBUGREG + 8 * n);
    if (0..4).any(|n| dr(n) != 0) || dr(7) & 0xFF != 0 {
        return Err(Errno::EINVAL);
    }
    let cr3 = u64at(c, ctx::CR3);
    let user_cr3 = u64at(c, ctx::USER_CR3);
    if cr3 & 0xFFF != 0 || cr3 == 0 {
        return Err(Errno::EINVAL);
    }
    // Guest kernel and user share one root in the ring-1 model (as NEW_USER_BASEPTR).
    // A Xen pv64 context's user root is not taken here (NEW_USER_BASEPTR sets it).
    if user_cr3 != 0 && (user_cr3 != cr3 || pv64) {
        return Err(Errno::EOPNOTSUPP);
    }
    let flags = u64at(c, ctx::FLAGS);
    let fpu = if flags & ctx::VGCF_I387_VALID != 0 {
        let img: &[u8; 512] = c[..512].try_into().map_err(|_| Errno::EINVAL)?;
        hv_arch::cpu::FxArea::from_legacy(img).ok_or(Errno::EINVAL)?
    } else {
        hv_arch::cpu::FxArea::initial()
    };
    let gdt_ents = u64at(c, ctx::GDT_ENTS);
    if gdt_ents > guest_abi::selectors::FIRST_RESERVED_GDT_ENTRY as u64 {
        return Err(Errno::EINVAL);
    }
    let mut gdt_frames = [0u64; 14];
    for (i, f) in gdt_frames.iter_mut().enumerate() {
        *f = u64at(c, ctx::GDT_FRAMES + 8 * i);
    }
    let r = &c[ctx::USER_REGS..ctx::TRAP_CTXT];
    // Boxed: the callers pass around a pointer, not 8 KiB of trap table and FPU image (it
    // is built on this stack first: the hypervisor stacks have 64 KiB).
    let iopl = if pv64 { (u64at(r, g::RFLAGS) >> 12 & 3) as u8 } else { 0 };
    Ok(alloc::boxed::Box::new(Context {
        iopl,
        frame,
        traps,
        callbacks,
        kernel_ss: super::traps::fixup_ss(u64at(c, ctx::KERNEL_SS) as u16, pv64),
        kernel_sp,
        fs_base,
        gs_kernel,
        gs_user,
        l4: Mfn(cr3 >> 12),
        fpu,
        gdt_frames,
        gdt_ents,
        ldt_base: u64at(c, ctx::LDT_BASE),
        ldt_ents: u64at(c, ctx::LDT_ENTS),
        sel: SEL_OFFSETS.map(|o| u64at(r, o) as u16),
        flags,
    }))
}

/// The frames behind a GDT and an LDT, by page.
type GdtFrames = [Option<Mfn>; 14];
type LdtFrames = [Option<Mfn>; 16];

/// Takes the references context `k` needs in domain `dom` (root, GDT frames, LDT frames
/// through the new root: all or none) through `pt`, a page-table context over `dom`'s
/// jobs under its memory lock.
fn acquire(pt: &mut DomPt<'_>, dom: guest_abi::DomId, k: &Context) -> Result<(GdtFrames, LdtFrames), Errno> {
    pt.get_root(k.l4, dom)?;
    let gdt = match super::desc::acquire_gdt_in(pt, dom, &k.gdt_frames[..k.gdt_ents.div_ceil(512) as usize]) {
        Ok(g) => g,
        Err(e) => {
            pt.put_root(k.l4);
            return Err(e);
        }
    };
    match super::mmu::acquire_ldt_in(pt, dom, k.l4, k.ldt_base, k.ldt_ents) {
        Ok(l) => Ok((gdt, l)),
        Err(e) => {
            super::desc::release_in(pt, &gdt);
            pt.put_root(k.l4);
            Err(e)
        }
    }
}

/// Installs `k` as vCPU `id` of domain `d`, a vCPU that never had a context (the caller
/// claimed it: `DomShared::claimed`). The references are taken under `d`'s memory lock,
/// in its jobs under `owner` (the calling vCPU's id for the caller's own domain, else
/// `guest::foreign_owner`: a preempted validation of the root waits there for the re-issued
/// call, `-ERESTART`). On any failure nothing is kept.
pub fn install(hv: &mut Hv, d: &DomShared, id: u32, owner: u32, k: &Context) -> HcResult {
    let dom = d.id;
    let (gdt, ldt) = {
        let mut mm = d.mm();
        let mut dm = DirectMap;
        // Under its lock: a domain being torn down takes no new references.
        if d.is_dying() {
            return Err(Errno::ESRCH);
        }
        let mut pt = pt!(hv.pc, dm, mm.jobs, owner);
        if dom != hv.pc.cur.dom && pt.jobs.is_pending() {
            // Another operation's work on this domain's tables: finished first.
            super::mmu::adopt_if_stalled(d, pt.jobs, owner);
            pt.drive().map_err(Errno::from)?;
        }
        acquire(&mut pt, dom, k)?
    };
    // Never initialised, so never run: its context waits in its slot.
    let installed = crate::state::with_owner(d, id, |rq| {
        let s = rq.payload_mut(crate::vcpu::sched_id(dom, id))?;
        let v = s.ctx.as_mut()?;
        v.frame = k.frame;
        v.traps = k.traps;
        v.callbacks = k.callbacks;
        v.kernel_ss = k.kernel_ss;
        v.kernel_sp = k.kernel_sp;
        v.l4 = k.l4;
        v.gdt = gdt;
        v.gdt_ents = k.gdt_ents as u32;
        v.ldt = ldt;
        v.ldt_base = k.ldt_base;
        v.ldt_ents = k.ldt_ents as u32;
        v.fpu_ts = false;
        v.iopl = k.iopl;
        // A vCPU brought up again starts as a new one: CR4.FSGSBASE clear, debug registers
        // at their reset values (a context's own are refused unless inert: `parse`).
        v.fsgsbase = false;
        v.debug = Default::default();
        *v.fpu = hv_arch::cpu::FxArea(k.fpu.0);
        // DS, ES, FS, GS of cpu_user_regs: loaded (and refused to the failsafe callback, as
        // Xen) when the vCPU first runs.
        v.sel = k.sel;
        v.fs_base = k.fs_base;
        v.gs_base = k.gs_kernel;
        v.kernel_gs_base = k.gs_user;
        s.state.initialised = true;
        Some(())
    })
    .flatten();
    if installed.is_none() {
        // Never expected (an uninitialised vCPU never ran): the references go back.
        let mut mm = d.mm();
        let mut dm = DirectMap;
        let mut pt = pt!(hv.pc, dm, mm.jobs, owner);
        super::desc::release_in(&mut pt, &gdt);
        super::desc::release_in(&mut pt, &ldt);
        pt.put_root(k.l4);
        return Err(Errno::ENOENT);
    }
    log::debug!("d{}v{} initialised: rip {:#x} rsp {:#x} root {:?}", dom, id, k.frame.rip, k.frame.rsp, k.l4);
    Ok(0)
}

/// Writes vCPU `v`'s context as a `vcpu_guest_context` into `c` (`ctx::SIZE` bytes);
/// `online`: whether it is up.
pub fn write(v: &crate::vcpu::Vcpu, online: bool, c: &mut [u8]) {
    c.fill(0);
    c[..512].copy_from_slice(&v.fpu.0[..512]);
    let f = &v.frame;
    let mut flags = ctx::VGCF_I387_VALID;
    if !v.in_user(f) {
        flags |= VGCF_IN_KERNEL;
    }
    if online {
        flags |= VGCF_ONLINE;
    }
    put64(c, ctx::FLAGS, flags);
    let r = ctx::USER_REGS;
    for (o, val) in [
        (g::R15, f.r15),
        (g::R14, f.r14),
        (g::R13, f.r13),
        (g::R12, f.r12),
        (g::RBP, f.rbp),
        (g::RBX, f.rbx),
        (g::R11, f.r11),
        (g::R10, f.r10),
        (g::R9, f.r9),
        (g::R8, f.r8),
        (g::RAX, f.rax),
        (g::RCX, f.rcx),
        (g::RDX, f.rdx),
        (g::RSI, f.rsi),
        (g::RDI, f.rdi),
        (g::RIP, f.rip),
        (g::CS, f.cs),
        (g::RFLAGS, f.rflags),
        (g::RSP, f.rsp),
        (g::SS, f.ss),
    ] {
        put64(c, r + o, val);
    }
    for (o, s) in SEL_OFFSETS.iter().zip(v.sel) {
        c[r + o..r + o + 2].copy_from_slice(&s.to_le_bytes());
    }
    for (i, t) in v.traps.iter().enumerate().filter(|(_, t)| t.address != 0) {
        let e = &mut c[ctx::TRAP_CTXT + 16 * i..][..16];
        e[0] = i as u8;
        e[1] = t.flags;
        e[2..4].copy_from_slice(&t.cs.to_le_bytes());
        e[8..16].copy_from_slice(&t.address.to_le_bytes());
    }
    put64(c, ctx::LDT_BASE, v.ldt_base);
    put64(c, ctx::LDT_ENTS, v.ldt_ents as u64);
    for (i, m) in v.gdt.iter().enumerate() {
        put64(c, ctx::GDT_FRAMES + 8 * i, m.map_or(0, |m| m.0));
    }
    put64(c, ctx::GDT_ENTS, v.gdt_ents as u64);
    put64(c, ctx::KERNEL_SS, v.kernel_ss as u64);
    put64(c, ctx::KERNEL_SP, v.kernel_sp);
    // The kernel root in ctrlreg[3], the user root (Xen pv64 mode) in ctrlreg[1].
    let (kernel, user) = if v.user_mode { (v.other_l4, v.l4) } else { (v.l4, v.other_l4) };
    put64(c, ctx::CR3, kernel.0 << 12);
    put64(c, ctx::USER_CR3, user.0 << 12);
    put64(c, ctx::EVENT_CALLBACK, v.callbacks.event);
    put64(c, ctx::FAILSAFE_CALLBACK, v.callbacks.failsafe);
    put64(c, ctx::SYSCALL_CALLBACK, v.callbacks.syscall);
    put64(c, ctx::FS_BASE, v.fs_base);
    // The active GS base is the kernel's in kernel mode; a Xen pv64 vCPU in user mode has
    // the two swapped.
    let (gs_kernel, gs_user) = if v.user_mode { (v.kernel_gs_base, v.gs_base) } else { (v.gs_base, v.kernel_gs_base) };
    put64(c, ctx::GS_BASE_KERNEL, gs_kernel);
    put64(c, ctx::GS_BASE_USER, gs_user);
}
