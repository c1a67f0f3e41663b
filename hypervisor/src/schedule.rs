//! Running vCPUs on the CPUs: the glue between the credit scheduler (`hv_core::sched`,
//! pure policy) and the CPUs (saving and loading vCPU state).
//!
//! Each CPU keeps the vCPU it runs in its own structure (`percpu::PerCpu::cur`); the
//! others wait in their slots in the run queues that own them (`state`: a queue per CPU,
//! each under its own lock; a CPU with nothing better steals from another's by try-lock).
//! What other CPUs need of a vCPU (asleep or not, the CPU it is on) is its `VcpuState` in
//! its slot, and each CPU's `RUNNING` record says what it runs. An idle CPU holds a placeholder vCPU. A switch swaps another vCPU in
//! and loads its registers into the trap frame the exit path resumes. Per-vCPU state
//! switched: registers, XSAVE state, FS/GS bases, CR0.TS, the guest slots of this CPU's
//! roots, TSS.RSP1, the GDT/LDT frames mapped in the entry area, and the direct `int 0x80`
//! gate.
//! After a change to a domain's tables, `shootdown::shootdown` makes the other CPUs
//! running it resynchronise.

use crate::domain::DomShared;
use crate::vcpu::{sched_id, Vcpu, VcpuState};
use crate::events;
use crate::percpu::PerCpu;
use crate::state::{self, Rq};
use crate::Hv;
use alloc::boxed::Box;
use alloc::sync::Arc;
use core::sync::atomic::Ordering;
use guest_abi::DomId;
use hv_arch::cpu::{self, SegBase};
use hv_arch::entry::TrapFrame;
use hv_arch::paging;
use crate::shootdown::{running, set_running, Running};

/// Asks CPU `cpu` to look again (reschedule, deliver upcalls; an affinity change).
pub(crate) fn poke(pc: &mut PerCpu, cpu: usize) {
    if cpu == pc.id {
        pc.need_resched = true;
    } else if let Some(&apic) = crate::machine::get().apic_ids.get(cpu) {
        crate::percpu::poke(cpu, apic);
    }
}

/// Can the current vCPU of this CPU go on running (up, not blocked, its domain alive)?
pub fn current_can_run(pc: &PerCpu) -> bool {
    if pc.cur.is_placeholder() || pc.cur.shared.is_dead() || pc.cur.shared.is_paused() {
        return false;
    }
    let id = sched_id(pc.cur.dom, pc.cur.id);
    state::lock(pc.id).payload(id).is_some_and(|s| s.state.runnable())
}

/// A vCPU has a new event or was brought up: wakes it if it sleeps, or interrupts the CPU
/// it runs on so the upcall is delivered now.
pub fn wake(hv: &mut Hv<'_>, dom: DomId, vcpu: u32) {
    if let Some(d) = crate::domain::shared_of(dom) {
        wake_shared(hv.pc, &d, vcpu);
    }
}

/// [`wake`] for a domain at hand.
pub fn wake_shared(pc: &mut PerCpu, d: &DomShared, vcpu: u32) {
    if d.is_dead() {
        return;
    }
    let (me, now) = (pc.id, events::now());
    if let Some(cpus) = state::with_owner(d, vcpu, |rq| wake_locked(rq, sched_id(d.id, vcpu), me, now)) {
        pokes(pc, cpus);
    }
}

/// CPUs to poke after a wake-up (at most two).
type Pokes = [Option<usize>; 2];

fn pokes(pc: &mut PerCpu, cpus: Pokes) {
    for cpu in cpus.into_iter().flatten() {
        poke(pc, cpu);
    }
}

/// The wake-up itself, under the lock of the queue owning the vCPU: the CPUs to poke (the
/// one running it, when not this one; its queue's CPU when it should preempt there; and,
/// as Xen's tickle, an idle CPU of its affinity, which will steal it or the vCPU it
/// preempts).
fn wake_locked(rq: &mut Rq, id: usize, me: usize, now: u64) -> Pokes {
    let none = [None, None];
    let running = rq.current() == Some(id);
    let Some(slot) = rq.payload_mut(id) else { return none };
    // The sleeping bits go under this lock only, where the sleeper makes its last look
    // (`block_current`): a vCPU woken between its announcement and its sleep sees its bit
    // gone there and does not sleep.
    not_sleeping(&slot.shared, slot.vcpu);
    // Looked at under the lock: a domain's death stops each vCPU under this lock after it
    // is recorded, so a wake-up either comes before that stop or sees the death.
    if slot.state.down || slot.shared.is_dead() {
        return none;
    }
    slot.state.blocked = false;
    slot.state.poll_ports.clear();
    // A paused domain's vCPU is woken (no longer blocked) but runs only once unpaused
    // (`unpause`, which looks at it under this lock too).
    if slot.shared.is_paused() {
        return none;
    }
    place(rq, id, me, now, running)
}

/// Makes vCPU `id` (runnable, its domain alive and not paused) run: queued here or moved
/// to an idle CPU of its affinity. The CPUs to poke.
fn place(rq: &mut Rq, id: usize, me: usize, now: u64, running: bool) -> Pokes {
    let cpu = rq.cpu();
    if !running {
        if let Some(slot) = rq.payload_mut(id) {
            slot.state.set_runstate(crate::vcpu::RUNSTATE_RUNNABLE, now);
        }
    }
    // A no-op for the scheduler if it already counts the vCPU runnable.
    let tickle = rq.wake(id, now);
    if running {
        return [(cpu != me).then_some(cpu), None];
    }
    let Some(idler) = rq.queued_affinity(id).and_then(|aff| state::idle_cpu_in(aff, cpu)) else {
        return [tickle.then_some(cpu), None];
    };
    if rq.current().is_some() {
        // Its CPU is busy and an idle one may run it: it moves there now (that queue taken
        // by try-lock; if it is busy, the idle CPU is poked and steals instead).
        if let Some(mut other) = state::try_lock_other(idler) {
            if let Some((s, slot)) = rq.take(id, idler) {
                slot.moved_to(idler);
                other.adopt(s, slot);
                return [Some(idler), None];
            }
        }
    }
    [tickle.then_some(cpu), Some(idler)]
}

/// `pausedomain`: a pause more of domain `d` (not the caller's). The first one takes each
/// of its vCPUs off the run queues and off the CPUs (each under its queue's lock, so a
/// wake-up comes before and is undone, or after and sees the pause) and waits until no
/// CPU runs any of them, as Xen's `domain_pause` does. False when the count would
/// overflow.
pub fn pause(hv: &mut Hv<'_>, d: &DomShared) -> bool {
    {
        let _g = d.pause_lock.lock();
        let n = d.pause_count().load(Ordering::Acquire);
        if n == u32::MAX {
            return false;
        }
        d.pause_count().store(n + 1, Ordering::Release);
        if n == 0 {
            for v in 0..d.nr_vcpus() {
                let id = sched_id(d.id, v);
                let on = state::with_owner(d, v, |rq| {
                    let running = rq.current() == Some(id);
                    rq.sleep(id);
                    running.then(|| rq.cpu())
                });
                if let Some(Some(cpu)) = on {
                    stopped_on(hv.pc, d, v, cpu);
                }
            }
        }
    }
    // The CPUs running it were poked: each takes it off at its next entry, which no lock
    // of this CPU's holds up.
    let ncpus = crate::machine::get().cpus.len();
    // (Until an unpause from another vCPU of the caller's makes it run again.)
    while d.is_paused() && (0..ncpus).any(|k| k != hv.pc.id && running(k).is_some_and(|r| r.dom == d.id)) {
        core::hint::spin_loop();
    }
    true
}

/// `unpausedomain`: a pause less of domain `d`; the last one makes its runnable vCPUs run.
/// False when it was not paused.
pub fn unpause(hv: &mut Hv<'_>, d: &DomShared) -> bool {
    let _g = d.pause_lock.lock();
    let n = d.pause_count().load(Ordering::Acquire);
    if n == 0 {
        return false;
    }
    d.pause_count().store(n - 1, Ordering::Release);
    if n == 1 {
        let (me, now) = (hv.pc.id, events::now());
        for v in 0..d.nr_vcpus() {
            let id = sched_id(d.id, v);
            let cpus = state::with_owner(d, v, |rq| {
                let go = rq.payload(id).is_some_and(|s| s.state.runnable() && !s.shared.is_dead());
                if !go {
                    return [None, None];
                }
                place(rq, id, me, now, rq.current() == Some(id))
            });
            if let Some(cpus) = cpus {
                pokes(hv.pc, cpus);
            }
        }
    }
    true
}

/// How the current vCPU sleeps ([`block_current`]).
pub enum Sleep {
    /// `SCHEDOP_block`: until an upcall is due.
    Block,
    /// `SCHEDOP_poll`: until one of the ports is pending or the poll's deadline passes.
    Poll(alloc::vec::Vec<u32>),
}

/// Is a sleeper of `d` (vCPU `v`, polling `ports` if any) ready to be woken? A due upcall
/// wakes a poller too (as Xen, whose poller is a blocked vCPU that any event kick unblocks).
fn sleeper_ready(d: &DomShared, v: u32, ports: &[u32], now: u64) -> bool {
    if events::upcall_due(d, v) {
        return true;
    }
    if ports.is_empty() {
        return false;
    }
    crate::ports::any_pending(d, ports)
        || d.timers.get(v as usize).is_some_and(|t| {
            let p = t.poll.load(Ordering::Relaxed);
            p != 0 && now >= p
        })
}

/// Takes the current vCPU off the CPU to sleep (it blocks or polls). It has
/// announced itself in its domain's sleeping mask already; the last look for its wake-up
/// condition is made here, under the lock a waker takes too (`check_sleepers`), so that a
/// wake-up cannot fall between the look and the sleep.
pub fn block_current(hv: &mut Hv<'_>, how: Sleep) {
    let (d, v) = (hv.pc.cur.shared.clone(), hv.pc.cur.id);
    let id = sched_id(d.id, v);
    let now = events::now();
    let mut rq = state::lock(hv.pc.id);
    let sleeps = !d.is_dead() && rq.payload(id).is_some_and(|s| !s.state.down);
    if sleeps {
        let ports: &[u32] = if let Sleep::Poll(p) = &how { p } else { &[] };
        // A waker clears the sleeping bit under this lock (`wake_locked`): a bit gone means
        // the vCPU was woken since it announced itself (an up, a VIRQ), and it does not
        // sleep.
        let woken = v >= 64 || d.sleeping.load(Ordering::SeqCst) & (1 << v) == 0;
        if woken || sleeper_ready(&d, v, ports, now) {
            drop(rq);
            return not_sleeping(&d, v);
        }
        if let Some(s) = rq.payload_mut(id) {
            s.state.blocked = true;
            if let Sleep::Poll(p) = how {
                s.state.poll_ports = p;
            }
        }
    }
    rq.block(now);
    drop(rq);
    if !sleeps {
        // Down or dead: it will not be woken as a sleeper, so it is not one.
        not_sleeping(&d, v);
    }
    hv.pc.need_resched = true;
}

/// vCPU `vcpu` of `d` neither sleeps nor polls (woken, taken down, or its domain died): its
/// bits go, so that senders stop looking for it.
fn not_sleeping(d: &DomShared, vcpu: u32) {
    if vcpu < 64 {
        d.sleeping.fetch_and(!(1 << vcpu), Ordering::SeqCst);
        d.polling.fetch_and(!(1 << vcpu), Ordering::SeqCst);
    }
    if let Some(t) = d.timers.get(vcpu as usize) {
        t.poll.store(0, Ordering::Relaxed);
    }
}

/// Stops vCPU `vcpu` of `d` wherever it is (it went down, or its domain died): off its run
/// queue, and the CPU running it (this one included) is asked to deschedule it.
pub fn stop(hv: &mut Hv<'_>, d: &DomShared, vcpu: u32) {
    let now = events::now();
    if let Some(Some(cpu)) = state::with_owner(d, vcpu, |rq| stop_locked(rq, sched_id(d.id, vcpu), now)) {
        stopped_on(hv.pc, d, vcpu, cpu);
    }
}

/// [`stop`] under the lock of the queue owning the vCPU (`VCPUOP_down` changes its state
/// and stops it in one go, so that an up from another CPU comes before or after, never in
/// between): the CPU running it, if any.
pub fn stop_locked(rq: &mut Rq, id: usize, now: u64) -> Option<usize> {
    let running = rq.current() == Some(id);
    if let Some(s) = rq.payload_mut(id) {
        not_sleeping(&s.shared, s.vcpu);
        s.state.blocked = false;
        if !running {
            s.state.set_runstate(crate::vcpu::RUNSTATE_OFFLINE, now);
        }
    }
    rq.sleep(id);
    running.then(|| rq.cpu())
}

/// After [`stop_locked`] found vCPU `vcpu` of `d` running on `cpu`: that CPU picks again.
pub fn stopped_on(pc: &mut PerCpu, d: &DomShared, vcpu: u32, cpu: usize) {
    if cpu == pc.id && pc.cur.dom == d.id && pc.cur.id == vcpu {
        pc.need_resched = true;
    } else {
        log::info!("d{}v{}: taken off CPU {}", d.id, vcpu, cpu);
        poke(pc, cpu);
    }
}

/// Wakes pollers whose port became pending or whose deadline passed, and blocked vCPUs with
/// a due upcall: only those with a bit in their domain's sleeping mask (set before a vCPU
/// blocks, cleared once it is woken or stopped), each under its owner queue's lock.
pub fn check_sleepers(hv: &mut Hv<'_>) {
    let (me, now) = (hv.pc.id, events::now());
    for d in events::domains() {
        let mut bits = d.sleeping.load(Ordering::SeqCst);
        while bits != 0 {
            let v = bits.trailing_zeros();
            bits &= bits - 1;
            let id = sched_id(d.id, v);
            let poke_cpu = state::with_owner(&d, v, |rq| {
                let Some(s) = rq.payload(id) else { return [None, None] };
                if !s.state.blocked || s.state.down || !sleeper_ready(&d, v, &s.state.poll_ports, now) {
                    return [None, None];
                }
                wake_locked(rq, id, me, now)
            });
            if let Some(cpus) = poke_cpu {
                pokes(hv.pc, cpus);
            }
        }
    }
}

fn save_state(v: &mut Vcpu, vs: Option<&mut VcpuState>, dead: bool) {
    use crate::vcpu::{RUNSTATE_BLOCKED, RUNSTATE_OFFLINE, RUNSTATE_RUNNABLE};
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

/// Loads the current vCPU's state onto this CPU (its slot, `vs`, in this CPU's queue).
/// Returns the data selectors the CPU refused (bit n for DS, ES, FS, GS; those were
/// replaced by the null selector).
fn load_state(pc: &mut PerCpu, vs: Option<&mut VcpuState>) -> u8 {
    // Descriptor-table windows: remap only the pages that differ from what this CPU maps.
    let want = crate::percpu::MappedDesc { gdt: pc.cur.gdt, ldt: pc.cur.ldt, ldt_ents: pc.cur.ldt_ents };
    let have = pc.mapped_desc;
    for i in 0..want.gdt.len() {
        if want.gdt[i] != have.gdt[i] {
            paging::map_gdt_page(&pc.tables, i, want.gdt[i]);
        }
    }
    for i in 0..want.ldt.len() {
        if want.ldt[i] != have.ldt[i] {
            paging::map_ldt_page(&pc.tables, i, want.ldt[i]);
        }
    }
    if want.ldt_ents != have.ldt_ents || want.ldt != have.ldt {
        paging::load_ldt(&pc.tables, want.ldt_ents);
    }
    pc.mapped_desc = want;
    let (k, dom, id, l4) = (pc.id, pc.cur.dom, pc.cur.id, pc.cur.l4);
    if let Some(vs) = vs {
        vs.set_runstate(crate::vcpu::RUNSTATE_RUNNING, events::now());
        vs.on_cpu = Some(k);
    }
    set_running(k, Some(Running { dom, id, l4 }));
    let v = &pc.cur;
    // Its timers are fired here from now on; its time record is fresh.
    if let Some(t) = v.shared.timers.get(id as usize) {
        t.home.store(k, Ordering::Relaxed);
    }
    events::update_time(&v.shared, id);
    cpu::fxrstor(&v.fpu);
    cpu::set_ts(v.fpu_ts);
    if crate::machine::get().fsgsbase {
        cpu::set_fsgsbase(!v.shared.pv64 || v.fsgsbase);
    }
    // Selectors first: loading FS or GS overwrites its base. The LDT is loaded already.
    let refused = cpu::load_data_selectors(v.sel);
    cpu::set_segment_base(SegBase::Fs, v.fs_base);
    cpu::set_segment_base(SegBase::Gs, v.gs_base);
    cpu::set_segment_base(SegBase::KernelGs, v.kernel_gs_base);
    paging::set_m2p_user(&pc.tables, v.shared.pv64);
    paging::sync_guest_slots(&pc.tables, v.l4);
    paging::set_rsp1(&pc.tables, v.kernel_sp);
    // Only the privileged domain has I/O rights (ports; its MMIO is checked per mapping).
    // A Xen pv64 domain's port I/O always traps, for its virtual IOPL (`entry::io_op`).
    paging::set_io_ports(&pc.tables, v.shared.privileged && !v.shared.pv64);
    load_direct_gates(pc);
    refused
}

/// Vectors a guest may take directly from user mode (no hypervisor entry).
pub const DIRECT_VECTORS: [u8; 1] = [0x80];

/// Programs this CPU's direct gates for the current vCPU's trap table: a vector registered
/// with DPL 3 goes straight to the guest kernel. None in the Xen pv64 mode: entering its
/// kernel from user mode switches roots (its `int N` goes through the hypervisor).
pub fn load_direct_gates(pc: &PerCpu) {
    for v in DIRECT_VECTORS {
        let t = pc.cur.traps[v as usize];
        let direct = (t.address != 0 && t.flags & guest_abi::traps::TI_DPL_MASK == 3 && !pc.cur.shared.pv64).then_some(t.address);
        paging::set_direct_gate(&pc.tables, v, direct);
    }
}

/// Shares out the credit of the accounting periods that ended, if this CPU is the first to
/// see them end: each queue visited in turn under its own lock (`hv_core::sched::Shareout`).
fn account(now: u64) {
    let (periods, period) = state::ACCT.claim(now);
    if periods == 0 {
        return;
    }
    let ncpus = crate::machine::get().cpus.len();
    let mut out = hv_core::sched::Shareout { total_ns: hv_core::sched::TSLICE_NS * ncpus as u64, period, periods, weight_total: 0, now };
    for k in 0..ncpus {
        state::lock(k).weigh(&mut out);
    }
    for k in 0..ncpus {
        state::lock(k).share(&out);
    }
}

/// The scheduler's tick on this CPU: charges the running vCPU, ends a boost, and runs the
/// share-out when a period ended.
pub fn tick(pc: &PerCpu, now: u64) {
    account(now);
    state::lock(pc.id).tick(now);
}

/// Steals for CPU `me` (its queue's lock held) a queued vCPU of at least `min` from another
/// CPU's queue that is free right now (a try-lock: never waiting with a queue held).
fn steal(me: usize, min: hv_core::sched::Prio) -> Option<(hv_core::sched::VcpuSched, crate::vcpu::Slot)> {
    let n = crate::machine::get().cpus.len();
    for k in (1..n).map(|i| (me + i) % n) {
        // A queue busy right now (its CPU rescheduling, a wake-up) is tried a few times:
        // bounded, so two CPUs trying each other's queue never wait for each other.
        let Some(mut other) = (0..64).find_map(|_| state::try_lock_other(k).or_else(|| {
            core::hint::spin_loop();
            None
        })) else {
            continue;
        };
        if let Some((s, slot)) = other.take_for(me, min) {
            slot.moved_to(me);
            return Some((s, slot));
        }
    }
    None
}

/// Chooses what this CPU runs next and makes `f` resume it. Returns `None` when there is
/// nothing to run (the caller leaves the section and idles), else the data selectors of the
/// incoming vCPU the CPU refused (a mask, 0 for none: `bounce::switch` gives them to the
/// guest's failsafe callback, as Xen's `load_segments`).
pub fn reschedule(hv: &mut Hv<'_>, f: &mut TrapFrame, yielding: bool) -> Option<u8> {
    hv.pc.need_resched = false;
    let now = events::now();
    account(now);
    let me = hv.pc.id;
    let idle = hv.pc.cur.is_placeholder();
    let cur_id = (!idle).then(|| sched_id(hv.pc.cur.dom, hv.pc.cur.id));
    let mut rq = state::lock(me);
    let mut going = idle;
    if let Some(c) = cur_id {
        let d = &hv.pc.cur.shared;
        if d.is_dead() || d.is_paused() || !rq.payload(c).is_some_and(|s| s.state.runnable()) {
            // Blocked, down, paused, or its domain died (perhaps on another CPU): off the CPU.
            rq.block(now);
            going = true;
        }
    }
    if going {
        // Counted idle before it tries to steal: a waker that queues work on a queue whose
        // try-lock fails below then pokes this CPU rather than nobody.
        state::set_idle(me, true);
    }
    let d = rq.schedule(now, yielding, false, state::ACCT.next(), &mut |min| steal(me, min));
    let mut refused = 0;
    let mut stopped = None;
    match d.next {
        Some(next) if Some(next) == cur_id => state::set_idle(me, false),
        Some(next) => {
            let Some(incoming) = rq.payload_mut(next).and_then(|s| s.ctx.take()) else {
                // Never expected (a queued vCPU's context waits in its slot): the choice goes
                // back to the scheduler and this CPU idles (the vCPU it ran waits, queued if
                // runnable), said once.
                static SAID: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);
                if !SAID.swap(true, Ordering::Relaxed) {
                    log::error!("scheduler chose vCPU {} that is not waiting", next);
                }
                rq.unpick(next);
                let stopped = go_idle(hv.pc, &mut rq, f, idle);
                drop(rq);
                finish(hv, stopped);
                return None;
            };
            state::set_idle(me, false);
            let outgoing = core::mem::replace(&mut hv.pc.cur, incoming);
            stopped = park(hv.pc, &mut rq, outgoing, f);
            refused = load_state(hv.pc, rq.payload_mut(next).map(|s| &mut s.state));
            *f = hv.pc.cur.frame;
            log::trace!("CPU {} runs d{}v{}", me, hv.pc.cur.dom, hv.pc.cur.id);
        }
        None => {
            let stopped = go_idle(hv.pc, &mut rq, f, idle);
            drop(rq);
            finish(hv, stopped);
            return None;
        }
    }
    // Work left queued here that an idle CPU could run: it is told (it steals), rather
    // than finding it at its next tick.
    let idler = state::idle_cpu_in(rq.waiting_affinity(), me);
    drop(rq);
    if let Some(k) = idler {
        poke(hv.pc, k);
    }
    hv.pc.slice_until = d.until;
    crate::events::arm(hv.pc, None);
    finish(hv, stopped);
    Some(refused)
}

/// After a switch, outside the queue lock: a domain whose last vCPU just left the CPUs is
/// audited (if asked) and dom0 hears of it (Xen's shutdown finalisation).
fn finish(hv: &mut Hv<'_>, stopped: Option<Arc<DomShared>>) {
    let Some(d) = stopped else { return };
    log::info!("d{}: every vCPU is off the CPUs", d.id);
    // A bounded part here (this is the scheduler's path); the rest, if any, is released by
    // its destroydomain, preemptibly.
    let (n, done) = crate::teardown::release_grant_maps(&d, FINISH_RELEASES);
    if n > 0 || !done {
        log::info!("d{}: {n} grant mapping(s) released{}", d.id, if done { "" } else { ", more at its destruction" });
    }
    if crate::machine::get().audit {
        audit(&d);
    }
    d.finished.store(true, Ordering::Release);
    send_virq(hv, 0, guest_abi::evtchn::VIRQ_DOM_EXC, 0);
}

/// Maptrack handles a CPU looks at when a dead domain's last vCPU leaves it.
const FINISH_RELEASES: u32 = 1024;

/// This CPU runs nothing from now: the vCPU it ran (unless `idle`) waits in its slot.
fn go_idle(pc: &mut PerCpu, rq: &mut Rq, f: &TrapFrame, idle: bool) -> Option<Arc<DomShared>> {
    state::set_idle(pc.id, true);
    pc.slice_until = 0;
    if idle {
        return None;
    }
    let ph = pc.spare.take().unwrap_or_else(|| Box::new(Vcpu::placeholder()));
    let outgoing = core::mem::replace(&mut pc.cur, ph);
    // Its tables may be freed while this CPU idles (its domain destroyed): the roots keep
    // no copy of its slots (loading a vCPU copies that vCPU's anyway).
    paging::clear_guest_slots(&pc.tables);
    park(pc, rq, outgoing, f)
}

/// Puts the vCPU that was running back into its slot in this CPU's queue (its registers
/// are `f`). Returns its domain if that is dead and this was the last of its vCPUs on a CPU.
fn park(pc: &mut PerCpu, rq: &mut Rq, mut v: Box<Vcpu>, f: &TrapFrame) -> Option<Arc<DomShared>> {
    if v.is_placeholder() {
        pc.spare = Some(v);
        return None;
    }
    set_running(pc.id, None);
    v.frame = *f;
    let dead = v.shared.is_dead();
    let d = v.shared.clone();
    let Some(slot) = rq.payload_mut(sched_id(v.dom, v.id)) else {
        // Never expected: the running vCPU is its CPU's queue's.
        log::error!("d{}v{}: not in CPU {}'s queue; its context is lost", v.dom, v.id, pc.id);
        return None;
    };
    save_state(&mut v, Some(&mut slot.state), dead);
    slot.ctx = Some(v);
    let ncpus = crate::machine::get().cpus.len();
    if dead && !(0..ncpus).any(|k| running(k).is_some_and(|r| r.dom == d.id)) && !d.exc_sent.swap(true, Ordering::SeqCst) {
        return Some(d);
    }
    None
}

/// Recomputes every count of a stopped domain's frames from its tables and the references
/// the hypervisor holds for it (`hv_core::audit`), and logs the verdict.
fn audit(d: &DomShared) {
    use hv_core::audit::Hold;
    let mut holds = alloc::vec![Hold { mfn: d.shared_info, typed: true }];
    let registered = d.vcpu_info_registered.load(Ordering::Acquire);
    for v in 0..d.nr_vcpus() {
        if registered & (1 << v) != 0 {
            holds.extend(d.vcpu_info.get(v).map(|at| Hold { mfn: at.frame, typed: true }));
        }
        // Every vCPU is off the CPUs: each context waits in its slot.
        let id = sched_id(d.id, v);
        state::with_owner(d, v, |rq| {
            let Some(s) = rq.payload(id) else { return };
            let Some(c) = &s.ctx else { return };
            if s.state.initialised {
                holds.push(Hold { mfn: c.l4, typed: true });
                // A Xen pv64 vCPU's other root (user or kernel) holds one too.
                if c.other_l4 != hv_core::mem::Mfn(0) {
                    holds.push(Hold { mfn: c.other_l4, typed: true });
                }
            }
            holds.extend(c.gdt.iter().chain(c.ldt.iter()).flatten().map(|&mfn| Hold { mfn, typed: true }));
        });
    }
    // The FIFO event-channel frames (control blocks, event-array pages): writable references.
    let fifo = crate::ports::Locked::new(d, None).ports(d.id).map(|t| t.fifo_frames()).unwrap_or_default();
    holds.extend(fifo.into_iter().map(|mfn| Hold { mfn, typed: true }));
    let _mm = d.mm();
    // Its grant and status frames (each held with a type reference), and the pins of its
    // grants mapped or being copied by any domain: under its grant lock, as they change.
    let g = d.grant();
    holds.extend(g.frames.iter().chain(&g.status).map(|&mfn| Hold { mfn, typed: true }));
    holds.extend(g.active.holds().map(|(mfn, typed)| Hold { mfn, typed }));
    let r = hv_core::audit::audit(&hv_arch::physmem::DirectMap, crate::machine::frames(), d.id, &holds);
    if r.no_memory {
        log::warn!("audit d{}: skipped (no memory for the recomputed counts)", d.id);
    } else if r.consistent() {
        log::info!("audit d{}: {} frames, {} tables: counts consistent", d.id, r.frames, r.tables);
    } else {
        log::error!("audit d{}: INCONSISTENT: {:?}", d.id, r);
    }
}

/// Acts on a vCPU that has a new event: wakes it if it sleeps.
pub fn kick(hv: &mut Hv, k: Option<hv_core::evtchn::Kick>) {
    if let Some(k) = k {
        wake(hv, k.dom, k.vcpu);
    }
}

/// Raises a VIRQ on vCPU `vcpu` of `dom` (dropped if unbound), under `dom`'s event lock.
pub fn send_virq(hv: &mut Hv, dom: DomId, virq: u32, vcpu: u32) {
    raise(hv, dom, crate::ports::Source::Virq { virq, vcpu });
}

/// Raises PIRQ `pirq` of `dom` (a device interrupt; dropped if no port is bound to it).
pub fn send_pirq(hv: &mut Hv, dom: DomId, pirq: u32) {
    raise(hv, dom, crate::ports::Source::Pirq(pirq));
}

fn raise(hv: &mut Hv, dom: DomId, what: crate::ports::Source) {
    let Some(d) = crate::domain::shared_of(dom) else { return };
    let k = crate::ports::raise(&d, what);
    kick(hv, k);
    // A poller may wait on the port even when it is masked (no kick then).
    if d.polling.load(Ordering::SeqCst) != 0 {
        check_sleepers(hv);
    }
}
