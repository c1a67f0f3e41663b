//! Running domains on the CPUs: the glue between the credit scheduler (`hv_core::sched`,
//! pure policy) and the CPUs (saving and loading vCPU state).
//!
//! All hypervisor work happens under one lock (`HV`). During a locked section on CPU `k`,
//! `hv.cur` holds the domain CPU `k` runs (swapped in from `hv.running[k]` by [`enter`] and
//! back by [`leave`]), and `hv.cpu` its tables; the rest of the hypervisor therefore always
//! works on "the current domain" without knowing about other CPUs. An idle CPU holds a
//! placeholder domain. A switch swaps another domain in and loads its vCPU's registers into
//! the trap frame the exit path resumes. Per-vCPU state switched: registers, XSAVE state,
//! FS/GS bases, CR0.TS, the guest slots of this CPU's roots, TSS.RSP1, the GDT/LDT frames
//! mapped in the entry area, and the direct `int 0x80` gate.
//!
//! Only one vCPU per domain exists so far, so a domain runs on at most one CPU at a time and
//! needs no TLB shootdown: every CPU flushes guest translations when it loads a domain.

use crate::domain::Domain;
use crate::events;
use crate::Hv;
use alloc::boxed::Box;
use guest_abi::DomId;
use hv_arch::cpu::{self, SegBase};
use hv_arch::entry::TrapFrame;
use hv_arch::paging;

/// Begins a locked section on this CPU. With a single CPU the current domain simply stays
/// in `hv.cur` between sections (nothing to swap).
pub fn enter(hv: &mut Hv) {
    if hv.cpus.len() == 1 {
        hv.this = 0;
        return;
    }
    let k = hv_arch::percpu::cpu_id();
    hv.this = k;
    core::mem::swap(&mut hv.cur, &mut hv.running[k]);
    hv.cpu = hv.cpus[k];
    hv.slice_until = hv.slices[k];
    hv.next_tick = hv.ticks[k];
    hv.need_resched |= core::mem::take(&mut hv.resched[k]);
}

/// Ends a locked section on this CPU.
pub fn leave(hv: &mut Hv) {
    if hv.cpus.len() == 1 {
        hv.need_resched = false;
        return;
    }
    let k = hv.this;
    hv.slices[k] = hv.slice_until;
    hv.ticks[k] = hv.next_tick;
    hv.need_resched = false;
    core::mem::swap(&mut hv.cur, &mut hv.running[k]);
}

/// Every real domain, wherever it is.
pub fn domains(hv: &Hv) -> impl Iterator<Item = &Domain> {
    core::iter::once(&*hv.cur)
        .chain(hv.others.iter().map(|d| &**d))
        .chain(hv.running.iter().map(|d| &**d))
        .filter(|d| !d.is_placeholder())
}

/// The CPU a domain is running on (other than this one), if any.
fn running_on(hv: &Hv, dom: DomId) -> Option<usize> {
    hv.running.iter().position(|d| d.id == dom && !d.is_placeholder())
}

/// Asks CPU `cpu` to look again (reschedule, deliver upcalls).
fn poke(hv: &mut Hv, cpu: usize) {
    if cpu == hv.this {
        hv.need_resched = true;
    } else if let Some(&apic) = hv.apic_ids.get(cpu) {
        hv.resched[cpu] = true;
        hv_arch::lapic::send_vector(apic, hv_arch::lapic::IPI_VECTOR);
    }
}

/// A domain has a new event: wakes its vCPU if it sleeps, or interrupts the CPU it runs on
/// so the upcall is delivered now.
pub fn wake(hv: &mut Hv, dom: DomId) {
    if let Some(cpu) = running_on(hv, dom) {
        poke(hv, cpu);
        return;
    }
    let now = events::now();
    let d: &mut Domain = if hv.cur.id == dom {
        &mut hv.cur
    } else {
        match hv.others.iter_mut().find(|d| d.id == dom) {
            Some(d) => d,
            None => return,
        }
    };
    if !d.vcpu.blocked || d.dead.is_some() {
        return;
    }
    d.vcpu.blocked = false;
    d.vcpu.poll_ports.clear();
    d.vcpu.set_runstate(crate::domain::RUNSTATE_RUNNABLE, now);
    let id = d.vcpu.sched_id;
    if let Some(cpu) = hv.sched.wake(id, now) {
        poke(hv, cpu);
    }
}

/// Takes the current vCPU off the CPU (it blocks, polls or died).
pub fn block_current(hv: &mut Hv) {
    hv.cur.vcpu.blocked = true;
    hv.sched.block(hv.this, events::now());
    hv.need_resched = true;
}

/// Wakes pollers whose port became pending or whose deadline passed, and blocked vCPUs with
/// a due upcall.
pub fn check_sleepers(hv: &mut Hv) {
    let now = events::now();
    let mut to_wake = [0 as DomId; 16];
    let mut n = 0;
    let bits = events::bits(hv);
    for d in domains(hv) {
        let v = &d.vcpu;
        if !v.blocked || d.dead.is_some() {
            continue;
        }
        let ready = if v.poll_ports.is_empty() {
            events::upcall_due(d)
        } else {
            v.poll_ports.iter().any(|&p| hv_core::evtchn::Bits::is_pending(&bits, d.id, p))
                || (v.poll_deadline != 0 && now >= v.poll_deadline)
        };
        if ready && n < to_wake.len() {
            to_wake[n] = d.id;
            n += 1;
        }
    }
    for &id in &to_wake[..n] {
        wake(hv, id);
    }
}

fn save_state(d: &mut Domain) {
    use crate::domain::{RUNSTATE_BLOCKED, RUNSTATE_OFFLINE, RUNSTATE_RUNNABLE};
    let state = if d.dead.is_some() {
        RUNSTATE_OFFLINE
    } else if d.vcpu.blocked {
        RUNSTATE_BLOCKED
    } else {
        RUNSTATE_RUNNABLE
    };
    d.vcpu.set_runstate(state, events::now());
    let v = &mut d.vcpu;
    v.fs_base = cpu::segment_base(SegBase::Fs);
    v.gs_base = cpu::segment_base(SegBase::Gs);
    v.kernel_gs_base = cpu::segment_base(SegBase::KernelGs);
    cpu::fxsave(&mut v.fpu);
}

/// What a CPU's entry area maps of a guest's descriptor tables.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct MappedDesc {
    pub gdt: [Option<hv_core::mem::Mfn>; 14],
    pub ldt: [Option<hv_core::mem::Mfn>; 16],
    pub ldt_ents: u32,
}

fn load_state(hv: &mut Hv) {
    // Descriptor-table windows: remap only the pages that differ from what this CPU maps.
    let want = MappedDesc { gdt: hv.cur.gdt, ldt: hv.cur.ldt, ldt_ents: hv.cur.ldt_ents };
    let have = hv.mapped_desc[hv.this];
    for i in 0..want.gdt.len() {
        if want.gdt[i] != have.gdt[i] {
            paging::map_gdt_page(&hv.cpu, i, want.gdt[i]);
        }
    }
    for i in 0..want.ldt.len() {
        if want.ldt[i] != have.ldt[i] {
            paging::map_ldt_page(&hv.cpu, i, want.ldt[i]);
        }
    }
    if want.ldt_ents != have.ldt_ents || want.ldt != have.ldt {
        paging::load_ldt(&hv.cpu, want.ldt_ents);
    }
    hv.mapped_desc[hv.this] = want;
    hv.cur.vcpu.set_runstate(crate::domain::RUNSTATE_RUNNING, events::now());
    let d = &hv.cur;
    let v = &d.vcpu;
    cpu::fxrstor(&v.fpu);
    cpu::set_ts(d.fpu_ts);
    cpu::set_segment_base(SegBase::Fs, v.fs_base);
    cpu::set_segment_base(SegBase::Gs, v.gs_base);
    cpu::set_segment_base(SegBase::KernelGs, v.kernel_gs_base);
    paging::sync_guest_slots(&hv.cpu, v.l4);
    paging::set_rsp1(&hv.cpu, v.kernel_sp);
    load_direct_gates(hv);
}

/// Vectors a guest may take directly from user mode (no hypervisor entry).
pub const DIRECT_VECTORS: [u8; 1] = [0x80];

/// Programs this CPU's direct gates for the current vCPU's trap table: a vector registered
/// with DPL 3 goes straight to the guest kernel.
pub fn load_direct_gates(hv: &Hv) {
    for v in DIRECT_VECTORS {
        let t = hv.cur.vcpu.traps[v as usize];
        let direct = (t.address != 0 && t.flags & guest_abi::traps::TI_DPL_MASK == 3).then_some(t.address);
        paging::set_direct_gate(&hv.cpu, v, direct);
    }
}

/// Chooses what this CPU runs next and makes `f` resume it. Returns false when there is
/// nothing to run: the caller leaves the section and idles.
pub fn reschedule(hv: &mut Hv, f: &mut TrapFrame, yielding: bool) -> bool {
    hv.need_resched = false;
    let d = hv.sched.schedule(hv.this, events::now(), yielding, false);
    let idle = hv.cur.is_placeholder();
    match d.next {
        Some(next) if !idle && next == hv.cur.vcpu.sched_id => {}
        Some(next) => {
            let Some(i) = hv.others.iter().position(|o| o.vcpu.sched_id == next) else {
                log::error!("scheduler chose vCPU {} that is not waiting", next);
                return !idle;
            };
            let incoming = hv.others.swap_remove(i);
            let outgoing = core::mem::replace(&mut hv.cur, incoming);
            park(hv, outgoing, f);
            load_state(hv);
            *f = hv.cur.vcpu.frame;
            log::trace!("CPU {} runs d{}", hv.this, hv.cur.id);
        }
        None => {
            if !idle {
                let ph = placeholder(hv);
                let outgoing = core::mem::replace(&mut hv.cur, ph);
                park(hv, outgoing, f);
            }
            hv.slice_until = 0;
            return false;
        }
    }
    hv.slice_until = d.until;
    events::arm(hv, None);
    true
}

/// Puts the domain that was running into the waiting list (its registers are `f`).
fn park(hv: &mut Hv, mut d: Box<Domain>, f: &TrapFrame) {
    if d.is_placeholder() {
        hv.spare[hv.this] = Some(d);
        return;
    }
    d.vcpu.frame = *f;
    save_state(&mut d);
    hv.others.push(d);
}

fn placeholder(hv: &mut Hv) -> Box<Domain> {
    hv.spare[hv.this].take().unwrap_or_else(|| Box::new(Domain::placeholder()))
}

/// This CPU's idle loop: halts until an interrupt, then looks for work; resumes the chosen
/// vCPU. Runs outside the lock while halted.
pub fn idle_loop() -> ! {
    loop {
        let mut frame = TrapFrame::default();
        let mut resume = false;
        {
            let mut g = crate::HV.lock();
            if let Some(hv) = g.as_mut() {
                enter(hv);
                events::process_timers(hv); // also wakes sleepers
                if reschedule(hv, &mut frame, false) {
                    events::deliver_upcall(hv, &mut frame);
                    resume = true;
                } else {
                    let t = if hv.slice_until != 0 { hv.slice_until } else { events::now() + hv_core::sched::TICK_NS };
                    events::arm(hv, Some(t));
                }
                leave(hv);
            }
        }
        if resume {
            hv_arch::entry::exit_to_guest(&frame);
        }
        cpu::wait_for_interrupt();
    }
}
