//! Running vCPUs on the CPUs: the glue between the credit scheduler (`hv_core::sched`,
//! pure policy) and the CPUs (saving and loading vCPU state).
//!
//! Each CPU keeps the vCPU it runs in its own structure (`percpu::PerCpu::cur`); the
//! others wait in `Global::others`. What other CPUs need of a vCPU (asleep or not, its
//! timers, the CPU it is on) is its `VcpuState` in its domain, and each CPU's `RUNNING`
//! record says what it runs. An idle CPU holds a placeholder vCPU. A switch swaps another vCPU in
//! and loads its registers into the trap frame the exit path resumes. Per-vCPU state
//! switched: registers, XSAVE state, FS/GS bases, CR0.TS, the guest slots of this CPU's
//! roots, TSS.RSP1, the GDT/LDT frames mapped in the entry area, and the direct `int 0x80`
//! gate.
//! After a change to a domain's tables, `shootdown::shootdown` makes the other CPUs
//! running it resynchronise.

use crate::domain::{Vcpu, VcpuState};
use crate::events;
use crate::percpu::PerCpu;
use crate::{Global, Hv};
use alloc::boxed::Box;
use guest_abi::DomId;
use hv_arch::cpu::{self, SegBase};
use hv_arch::entry::TrapFrame;
use hv_arch::paging;
use crate::shootdown::{running, set_running, Running};

/// The context of vCPU `vcpu` of `dom` if it is on this CPU or waiting (a vCPU running on
/// another CPU belongs to that CPU).
pub fn ctx_mut<'a>(hv: &'a mut Hv<'_>, dom: DomId, vcpu: u32) -> Option<&'a mut Vcpu> {
    core::iter::once(&mut *hv.pc.cur)
        .chain(hv.g.others.iter_mut().map(|v| &mut **v))
        .find(|v| v.dom == dom && v.id == vcpu && !v.is_placeholder())
}

/// The CPU (other than this one) running vCPU `vcpu` of `dom`, if any.
fn running_on(hv: &Hv<'_>, dom: DomId, vcpu: u32) -> Option<usize> {
    hv.g.domains.vcpu(dom, vcpu)?.on_cpu.filter(|&c| c != hv.pc.id)
}

/// Asks CPU `cpu` to look again (reschedule, deliver upcalls).
fn poke(hv: &mut Hv<'_>, cpu: usize) {
    if cpu == hv.pc.id {
        hv.pc.need_resched = true;
    } else if let Some(&apic) = crate::machine::get().apic_ids.get(cpu) {
        crate::percpu::poke(cpu, apic);
    }
}

/// Can vCPU `vcpu` of `dom` run (it is runnable and its domain alive)? Never a placeholder.
pub fn can_run(g: &Global, dom: DomId, vcpu: u32) -> bool {
    g.domains.vcpu(dom, vcpu).is_some_and(VcpuState::runnable) && g.domains.get(dom).is_some_and(|d| d.dead.is_none())
}

/// A vCPU has a new event or was brought up: wakes it if it sleeps, or interrupts the CPU
/// it runs on so the upcall is delivered now.
pub fn wake(hv: &mut Hv<'_>, dom: DomId, vcpu: u32) {
    let now = events::now();
    let alive = hv.g.domains.get(dom).is_some_and(|d| d.dead.is_none());
    let running = running_on(hv, dom, vcpu);
    let here = hv.pc.cur.dom == dom && hv.pc.cur.id == vcpu;
    let shared = hv.g.domains.get(dom).map(|d| d.shared.clone());
    if let Some(d) = &shared {
        not_sleeping(d, vcpu);
    }
    let Some(v) = hv.g.domains.vcpu_mut(dom, vcpu) else { return };
    if !alive || v.down {
        return;
    }
    v.blocked = false;
    v.poll_ports.clear();
    if running.is_none() && !here {
        v.set_runstate(crate::domain::RUNSTATE_RUNNABLE, now);
    }
    let id = v.sched_id;
    // A no-op for the scheduler if it already counts the vCPU runnable.
    let tickle = hv.g.sched.wake(id, now);
    if let Some(cpu) = running.or(tickle) {
        poke(hv, cpu);
    }
}

/// Takes the current vCPU off the CPU (it blocks, polls, went down or died).
pub fn block_current(hv: &mut Hv<'_>) {
    let alive = hv.dom().dead.is_none();
    let mut sleeps = false;
    if let Some(v) = hv.vs() {
        if !v.down && alive {
            v.blocked = true;
            sleeps = true;
        }
    }
    if !sleeps {
        // Down or dead: it will not be woken as a sleeper, so it is not one.
        not_sleeping(&hv.pc.cur.shared, hv.pc.cur.id);
    }
    hv.g.sched.block(hv.pc.id, events::now());
    hv.pc.need_resched = true;
}

/// vCPU `vcpu` of `d` neither sleeps nor polls (woken, taken down, or its domain died): its
/// bits go, so that senders stop taking the scheduler lock for it.
fn not_sleeping(d: &crate::domain::DomShared, vcpu: u32) {
    if vcpu < 64 {
        d.sleeping.fetch_and(!(1 << vcpu), core::sync::atomic::Ordering::SeqCst);
        d.polling.fetch_and(!(1 << vcpu), core::sync::atomic::Ordering::SeqCst);
    }
    if let Some(t) = d.timers.get(vcpu as usize) {
        t.poll.store(0, core::sync::atomic::Ordering::Relaxed);
    }
}

/// Stops vCPU `vcpu` of `dom` wherever it is (it went down, or its domain died): off the
/// run queues, and the CPU running it is interrupted to deschedule it.
pub fn stop(hv: &mut Hv<'_>, dom: DomId, vcpu: u32) {
    if let Some(d) = hv.g.domains.get(dom) {
        not_sleeping(&d.shared, vcpu);
    }
    if hv.pc.cur.dom == dom && hv.pc.cur.id == vcpu {
        return block_current(hv);
    }
    let now = events::now();
    let running = running_on(hv, dom, vcpu);
    let Some(v) = hv.g.domains.vcpu_mut(dom, vcpu) else { return };
    let id = v.sched_id;
    if running.is_none() {
        v.set_runstate(crate::domain::RUNSTATE_OFFLINE, now);
    }
    hv.g.sched.sleep(id);
    if let Some(cpu) = running {
        log::info!("d{}v{}: taken off CPU {}", dom, vcpu, cpu);
        poke(hv, cpu);
    }
}

/// Wakes pollers whose port became pending or whose deadline passed, and blocked vCPUs with
/// a due upcall.
pub fn check_sleepers(hv: &mut Hv<'_>) {
    let now = events::now();
    let mut to_wake = alloc::vec::Vec::new();
    // A domain with no sleeping bit has no vCPU blocked or polling (the bit is set before a
    // vCPU blocks and cleared only once it is woken or stopped): not looked at.
    let sleeps = |d: &crate::domain::Domain| d.shared.sleeping.load(core::sync::atomic::Ordering::SeqCst) != 0;
    for d in hv.g.domains.iter().filter(|d| d.dead.is_none() && sleeps(d)) {
        let bits = crate::ports::PortBits::one(&d.shared);
        for (id, v) in d.vcpus.iter().enumerate() {
            if !v.blocked || v.down {
                continue;
            }
            let id = id as u32;
            let ready = if v.poll_ports.is_empty() {
                events::upcall_due(d, id)
            } else {
                v.poll_ports.iter().any(|&p| hv_core::evtchn::Bits::is_pending(&bits, d.id, p))
                    || d.shared.timers.get(id as usize).is_some_and(|t| {
                        let p = t.poll.load(core::sync::atomic::Ordering::Relaxed);
                        p != 0 && now >= p
                    })
            };
            if ready {
                to_wake.push((d.id, id));
            }
        }
    }
    for (dom, vcpu) in to_wake {
        wake(hv, dom, vcpu);
    }
}

fn save_state(v: &mut Vcpu, vs: Option<&mut VcpuState>, dead: bool) {
    use crate::domain::{RUNSTATE_BLOCKED, RUNSTATE_OFFLINE, RUNSTATE_RUNNABLE};
    if let Some(vs) = vs {
        let state = if dead || vs.down {
            RUNSTATE_OFFLINE
        } else if vs.blocked {
            RUNSTATE_BLOCKED
        } else {
            RUNSTATE_RUNNABLE
        };
        vs.set_runstate(state, events::now());
        vs.on_cpu = None;
    }
    v.sel = cpu::data_selectors();
    v.fs_base = cpu::segment_base(SegBase::Fs);
    v.gs_base = cpu::segment_base(SegBase::Gs);
    v.kernel_gs_base = cpu::segment_base(SegBase::KernelGs);
    cpu::fxsave(&mut v.fpu);
}

/// Loads the current vCPU's state onto this CPU. Returns the data selectors the CPU refused
/// (bit n for DS, ES, FS, GS; those were replaced by the null selector).
fn load_state(hv: &mut Hv<'_>) -> u8 {
    // Descriptor-table windows: remap only the pages that differ from what this CPU maps.
    let want = crate::percpu::MappedDesc { gdt: hv.pc.cur.gdt, ldt: hv.pc.cur.ldt, ldt_ents: hv.pc.cur.ldt_ents };
    let have = hv.pc.mapped_desc;
    for i in 0..want.gdt.len() {
        if want.gdt[i] != have.gdt[i] {
            paging::map_gdt_page(&hv.pc.tables, i, want.gdt[i]);
        }
    }
    for i in 0..want.ldt.len() {
        if want.ldt[i] != have.ldt[i] {
            paging::map_ldt_page(&hv.pc.tables, i, want.ldt[i]);
        }
    }
    if want.ldt_ents != have.ldt_ents || want.ldt != have.ldt {
        paging::load_ldt(&hv.pc.tables, want.ldt_ents);
    }
    hv.pc.mapped_desc = want;
    let (k, dom, id, l4) = (hv.pc.id, hv.pc.cur.dom, hv.pc.cur.id, hv.pc.cur.l4);
    if let Some(vs) = hv.vs() {
        vs.set_runstate(crate::domain::RUNSTATE_RUNNING, events::now());
        vs.on_cpu = Some(k);
    }
    set_running(k, Some(Running { dom, id, l4 }));
    let v = &hv.pc.cur;
    // Its timers are fired here from now on; its time record is fresh.
    if let Some(t) = v.shared.timers.get(id as usize) {
        t.home.store(k, core::sync::atomic::Ordering::Relaxed);
    }
    events::update_time(&v.shared, id);
    cpu::fxrstor(&v.fpu);
    cpu::set_ts(v.fpu_ts);
    // Selectors first: loading FS or GS overwrites its base. The LDT is loaded already.
    let refused = cpu::load_data_selectors(v.sel);
    cpu::set_segment_base(SegBase::Fs, v.fs_base);
    cpu::set_segment_base(SegBase::Gs, v.gs_base);
    cpu::set_segment_base(SegBase::KernelGs, v.kernel_gs_base);
    paging::sync_guest_slots(&hv.pc.tables, v.l4);
    paging::set_rsp1(&hv.pc.tables, v.kernel_sp);
    load_direct_gates(hv.pc);
    refused
}

/// Vectors a guest may take directly from user mode (no hypervisor entry).
pub const DIRECT_VECTORS: [u8; 1] = [0x80];

/// Programs this CPU's direct gates for the current vCPU's trap table: a vector registered
/// with DPL 3 goes straight to the guest kernel.
pub fn load_direct_gates(pc: &PerCpu) {
    for v in DIRECT_VECTORS {
        let t = pc.cur.traps[v as usize];
        let direct = (t.address != 0 && t.flags & guest_abi::traps::TI_DPL_MASK == 3).then_some(t.address);
        paging::set_direct_gate(&pc.tables, v, direct);
    }
}

/// Chooses what this CPU runs next and makes `f` resume it. Returns `None` when there is
/// nothing to run (the caller leaves the section and idles), else the data selectors of the
/// incoming vCPU the CPU refused (a mask, 0 for none: `bounce::switch` gives them to the
/// guest's failsafe callback, as Xen's `load_segments`).
pub fn reschedule(hv: &mut Hv<'_>, f: &mut TrapFrame, yielding: bool) -> Option<u8> {
    hv.pc.need_resched = false;
    let idle = hv.pc.cur.is_placeholder();
    if !idle && !can_run(hv.g, hv.pc.cur.dom, hv.pc.cur.id) {
        // Blocked, down, or its domain died (perhaps on another CPU): off the CPU.
        hv.g.sched.block(hv.pc.id, events::now());
    }
    let d = hv.g.sched.schedule(hv.pc.id, events::now(), yielding, false);
    let mut refused = 0;
    let sched_id = |g: &Global, v: &Vcpu| g.domains.vcpu(v.dom, v.id).map(|s| s.sched_id);
    match d.next {
        Some(next) if !idle && Some(next) == sched_id(hv.g, &hv.pc.cur) => {}
        Some(next) => {
            let g = &*hv.g;
            let Some(i) = g.others.iter().position(|o| sched_id(g, o) == Some(next)) else {
                // Never expected (a vCPU woken before its CPU switched away stays that
                // CPU's): the choice goes back to the scheduler and this CPU idles (the vCPU
                // it ran waits, queued if runnable), said once.
                static SAID: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);
                if !SAID.swap(true, core::sync::atomic::Ordering::Relaxed) {
                    log::error!("scheduler chose vCPU {} that is not waiting", next);
                }
                hv.g.sched.unpick(hv.pc.id, next);
                go_idle(hv, f, idle);
                return None;
            };
            let incoming = hv.g.others.swap_remove(i);
            let outgoing = core::mem::replace(&mut hv.pc.cur, incoming);
            park(hv, outgoing, f);
            refused = load_state(hv);
            *f = hv.pc.cur.frame;
            log::trace!("CPU {} runs d{}v{}", hv.pc.id, hv.pc.cur.dom, hv.pc.cur.id);
        }
        None => {
            go_idle(hv, f, idle);
            return None;
        }
    }
    hv.pc.slice_until = d.until;
    crate::events::arm(hv.pc, None);
    Some(refused)
}

/// This CPU runs nothing from now: the vCPU it ran (unless `idle`) waits with the others.
fn go_idle(hv: &mut Hv<'_>, f: &TrapFrame, idle: bool) {
    if !idle {
        let ph = placeholder(hv);
        let outgoing = core::mem::replace(&mut hv.pc.cur, ph);
        park(hv, outgoing, f);
    }
    hv.pc.slice_until = 0;
}

/// Puts the vCPU that was running into the waiting list (its registers are `f`).
fn park(hv: &mut Hv<'_>, mut v: Box<Vcpu>, f: &TrapFrame) {
    if v.is_placeholder() {
        hv.pc.spare = Some(v);
        return;
    }
    set_running(hv.pc.id, None);
    v.frame = *f;
    let dead = hv.g.domains.get(v.dom).is_none_or(|d| d.dead.is_some());
    let (dom, id) = (v.dom, v.id);
    save_state(&mut v, hv.g.domains.vcpu_mut(dom, id), dead);
    hv.g.others.push(v);
    if dead && !(0..crate::machine::get().cpus.len()).any(|k| running(k).is_some_and(|r| r.dom == dom)) {
        // The domain is fully stopped: now tell dom0 (Xen's shutdown finalisation).
        log::info!("d{}: every vCPU is off the CPUs", dom);
        if crate::machine::get().audit {
            audit(hv.g, dom);
        }
        send_virq(hv, 0, guest_abi::evtchn::VIRQ_DOM_EXC, 0);
    }
}

/// Recomputes every count of a stopped domain's frames from its tables and the references
/// the hypervisor holds for it (`hv_core::audit`), and logs the verdict.
fn audit(g: &Global, dom: DomId) {
    use hv_core::audit::Hold;
    let Some(d) = g.domains.get(dom) else { return };
    let _mm = d.shared.mm();
    let mut holds = alloc::vec![Hold { mfn: d.shared.shared_info, typed: true }];
    for v in 0..d.nr_vcpus() {
        if d.vcpu_info_registered & (1 << v) != 0 {
            holds.extend(d.vi_at(v).map(|at| Hold { mfn: at.frame, typed: true }));
        }
    }
    for v in g.others.iter().filter(|v| v.dom == dom) {
        if d.vcpus.get(v.id as usize).is_some_and(|s| s.initialised) {
            holds.push(Hold { mfn: v.l4, typed: true });
        }
        holds.extend(v.gdt.iter().chain(v.ldt.iter()).flatten().map(|&mfn| Hold { mfn, typed: true }));
    }
    let r = hv_core::audit::audit(&hv_arch::physmem::DirectMap, crate::machine::frames(), dom, &holds);
    if r.no_memory {
        log::warn!("audit d{}: skipped (no memory for the recomputed counts)", dom);
    } else if r.consistent() {
        log::info!("audit d{}: {} frames, {} tables: counts consistent", dom, r.frames, r.tables);
    } else {
        log::error!("audit d{}: INCONSISTENT: {:?}", dom, r);
    }
}

fn placeholder(hv: &mut Hv<'_>) -> Box<Vcpu> {
    hv.pc.spare.take().unwrap_or_else(|| Box::new(Vcpu::placeholder()))
}

/// Acts on a vCPU that has a new event: wakes it if it sleeps.
pub fn kick(hv: &mut Hv, k: Option<hv_core::evtchn::Kick>) {
    if let Some(k) = k {
        wake(hv, k.dom, k.vcpu);
    }
}

/// Raises a VIRQ on vCPU `vcpu` of `dom` (dropped if unbound), under `dom`'s event lock.
pub fn send_virq(hv: &mut Hv, dom: DomId, virq: u32, vcpu: u32) {
    let k = events::virq(&hv.g.domains, dom, virq, vcpu);
    kick(hv, k);
    // A poller may wait on the port even when it is masked (no kick then).
    if hv.g.domains.get(dom).is_some_and(|d| d.shared.polling.load(core::sync::atomic::Ordering::SeqCst) != 0) {
        check_sleepers(hv);
    }
}
