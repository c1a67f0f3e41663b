//! Running vCPUs on the CPUs: the glue between the credit scheduler (`hv_core::sched`,
//! pure policy) and the CPUs (saving and loading vCPU state).
//!
//! All hypervisor work happens under one lock (`HV`). During a locked section on CPU `k`,
//! `hv.cur` holds the vCPU CPU `k` runs (swapped in from `hv.running[k]` by [`enter`] and
//! back by [`leave`]), and `hv.cpu` its tables; the rest of the hypervisor therefore always
//! works on "the current vCPU" (and `hv.dom()`, its domain) without knowing about other
//! CPUs. An idle CPU holds a placeholder vCPU. A switch swaps another vCPU in and loads its
//! registers into the trap frame the exit path resumes. Per-vCPU state switched: registers,
//! XSAVE state, FS/GS bases, CR0.TS, the guest slots of this CPU's roots, TSS.RSP1, the
//! GDT/LDT frames mapped in the entry area, and the direct `int 0x80` gate.
//!
//! Several vCPUs of one domain may run at once on different CPUs, sharing its page tables:
//! after a change to a domain's tables [`shootdown`] makes every other CPU running that
//! domain resynchronise its roots and flush its TLB before it runs another guest
//! instruction (see `hv_core::shootdown` for the protocol, model-checked on the host).

use crate::domain::Vcpu;
use crate::events;
use crate::Hv;
use alloc::boxed::Box;
use guest_abi::DomId;
use hv_arch::cpu::{self, SegBase};
use hv_arch::entry::TrapFrame;
use hv_arch::paging;
use core::sync::atomic::AtomicU64;
use hv_core::shootdown::{CpuFlags, Ticket};

/// Per CPU: the TLB-shootdown handshake (`hv_core::shootdown`, model-checked on the host):
/// whether it runs guest code, and the flushes asked of it and done.
static SHOOTDOWN: [CpuFlags; hv_core::acpi::MAX_CPUS] = [const { CpuFlags::new() }; hv_core::acpi::MAX_CPUS];
/// Hypervisor entries from guests, by vector (every CPU).
static ENTRIES: [AtomicU64; 256] = [const { AtomicU64::new(0) }; 256];

/// Counts a hypervisor entry from a guest through `vector`.
pub fn count_entry(vector: u64) {
    ENTRIES[vector as usize & 255].fetch_add(1, core::sync::atomic::Ordering::Relaxed);
}

/// Hypervisor entries from guests through `vector` since boot, and through any vector.
pub fn entries(vector: u8) -> (u64, u64) {
    let r = core::sync::atomic::Ordering::Relaxed;
    (ENTRIES[vector as usize].load(r), ENTRIES.iter().map(|c| c.load(r)).sum())
}

/// This CPU left guest context (a guest entry, before taking the lock).
pub fn left_guest() {
    SHOOTDOWN[hv_arch::percpu::cpu_id()].left_guest();
}

/// The TLB-shootdown IPI, in guest context and without the lock: the CPU that sent it holds
/// the lock and waits for this CPU to drop its guest translations. Without PCID the CR3
/// load on the way back to the guest flushes; with PCID the guest tags are invalidated.
pub fn flush_ipi() {
    SHOOTDOWN[hv_arch::percpu::cpu_id()].on_flush_ipi(paging::flush_guest_tlb);
    hv_arch::lapic::eoi();
}

/// After a change to the page tables of the domains `doms`: every other CPU running a vCPU
/// of one of them resynchronises its roots and drops its guest translations before it runs
/// another guest instruction. CPUs in guest context are sent the flush IPI and waited for;
/// CPUs inside the hypervisor flush at the end of their next locked section ([`leave`]).
/// CPUs running other domains need nothing: loading a vCPU always flushes.
pub fn shootdown(hv: &Hv, doms: &[DomId]) {
    if hv.cpus.len() == 1 {
        return;
    }
    // Built at the first target only: most calls find none, and this runs after every
    // page-table hypercall.
    let mut wait: Option<Waits> = None;
    for (k, v) in hv.running.iter().enumerate() {
        if k == hv.this || v.is_placeholder() || !doms.contains(&v.dom) {
            continue;
        }
        paging::copy_guest_slots(&hv.cpus[k], v.l4);
        wait.get_or_insert_with(Waits::default).ask(k, hv.apic_ids.get(k).copied());
    }
    if let Some(w) = wait {
        w.finish();
    }
}

/// Drops the guest translations of every CPU (this one included) before this one carries
/// on: the [`hv_core::pt::TlbFlush`] of page-table operations (a frame changing its kind of
/// type, see the TLB clock in `hv_core::frame`). CPUs in guest context get the flush IPI and
/// are waited for; the others flush before they next run guest code ([`leave`]); idle CPUs
/// and CPUs switching vCPUs flush when they load one anyway.
pub struct FlushAll<'a> {
    pub apic_ids: &'a [u32],
    pub this: usize,
}

impl hv_core::pt::TlbFlush for FlushAll<'_> {
    fn flush_all(&mut self) {
        paging::flush_guest_tlb();
        let mut wait = Waits::default();
        for (k, &apic) in self.apic_ids.iter().enumerate() {
            if k != self.this {
                wait.ask(k, Some(apic));
            }
        }
        wait.finish();
    }
}

/// The CPUs a shootdown asked to flush that were in guest context, and their tickets.
struct Waits {
    cpus: u64,
    tickets: [Ticket; hv_core::acpi::MAX_CPUS],
}

impl Default for Waits {
    fn default() -> Self {
        Waits { cpus: 0, tickets: [Ticket::default(); hv_core::acpi::MAX_CPUS] }
    }
}

impl Waits {
    /// Asks CPU `k` (APIC id `apic`) for a flush: one in guest context gets the flush IPI.
    fn ask(&mut self, k: usize, apic: Option<u32>) {
        let (t, in_guest) = SHOOTDOWN[k].request();
        if let (true, Some(apic)) = (in_guest, apic) {
            hv_arch::lapic::send_vector(apic, hv_arch::lapic::FLUSH_VECTOR);
            self.cpus |= 1 << k;
            self.tickets[k] = t;
        }
    }

    /// Waits until every CPU asked flushed or entered the hypervisor (it then flushes in
    /// [`leave`] before resuming; it may be spinning for the lock with interrupts off).
    fn finish(mut self) {
        while self.cpus != 0 {
            let k = self.cpus.trailing_zeros() as usize;
            if SHOOTDOWN[k].flushed_or_left(self.tickets[k]) {
                self.cpus &= !(1 << k);
            } else {
                core::hint::spin_loop();
            }
        }
    }
}

/// Begins a locked section on this CPU. With a single CPU the current vCPU simply stays
/// in `hv.cur` between sections (nothing to swap).
#[inline]
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
#[inline]
pub fn leave(hv: &mut Hv) {
    if hv.cpus.len() == 1 {
        hv.need_resched = false;
        return;
    }
    let k = hv.this;
    // A flush asked before this is done now; from here until the guest runs, a shootdown
    // sends this CPU the flush IPI (it arrives once the guest runs with interrupts on).
    SHOOTDOWN[k].before_resume(!hv.cur.is_placeholder(), paging::flush_guest_tlb);
    hv.slices[k] = hv.slice_until;
    hv.ticks[k] = hv.next_tick;
    hv.need_resched = false;
    core::mem::swap(&mut hv.cur, &mut hv.running[k]);
}

/// Every real vCPU, wherever it is.
pub fn vcpus(hv: &Hv) -> impl Iterator<Item = &Vcpu> {
    core::iter::once(&*hv.cur)
        .chain(hv.others.iter().map(|v| &**v))
        .chain(hv.running.iter().map(|v| &**v))
        .filter(|v| !v.is_placeholder())
}

/// vCPU `vcpu` of `dom`, wherever it is.
pub fn vcpu_mut(hv: &mut Hv, dom: DomId, vcpu: u32) -> Option<&mut Vcpu> {
    core::iter::once(&mut hv.cur)
        .chain(hv.others.iter_mut())
        .chain(hv.running.iter_mut())
        .map(|v| &mut **v)
        .find(|v| v.dom == dom && v.id == vcpu && !v.is_placeholder())
}

/// The CPU (other than this one) running vCPU `vcpu` of `dom`, if any.
fn running_on(hv: &Hv, dom: DomId, vcpu: u32) -> Option<usize> {
    hv.running.iter().position(|v| v.dom == dom && v.id == vcpu && !v.is_placeholder())
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

/// Can `v` run (it is runnable and its domain alive)?
pub fn can_run(hv: &Hv, v: &Vcpu) -> bool {
    v.runnable() && hv.domains.get(v.dom).is_some_and(|d| d.dead.is_none())
}

/// A vCPU has a new event or was brought up: wakes it if it sleeps, or interrupts the CPU
/// it runs on so the upcall is delivered now.
pub fn wake(hv: &mut Hv, dom: DomId, vcpu: u32) {
    let now = events::now();
    let alive = hv.domains.get(dom).is_some_and(|d| d.dead.is_none());
    let running = running_on(hv, dom, vcpu);
    let here = hv.cur.dom == dom && hv.cur.id == vcpu;
    let Some(v) = vcpu_mut(hv, dom, vcpu) else { return };
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
    let tickle = hv.sched.wake(id, now);
    if let Some(cpu) = running.or(tickle) {
        poke(hv, cpu);
    }
}

/// Takes the current vCPU off the CPU (it blocks, polls, went down or died).
pub fn block_current(hv: &mut Hv) {
    if !hv.cur.down && hv.dom().dead.is_none() {
        hv.cur.blocked = true;
    }
    hv.sched.block(hv.this, events::now());
    hv.need_resched = true;
}

/// Stops vCPU `vcpu` of `dom` wherever it is (it went down, or its domain died): off the
/// run queues, and the CPU running it is interrupted to deschedule it.
pub fn stop(hv: &mut Hv, dom: DomId, vcpu: u32) {
    if hv.cur.dom == dom && hv.cur.id == vcpu {
        return block_current(hv);
    }
    let now = events::now();
    let running = running_on(hv, dom, vcpu);
    let Some(v) = vcpu_mut(hv, dom, vcpu) else { return };
    let id = v.sched_id;
    if running.is_none() {
        v.set_runstate(crate::domain::RUNSTATE_OFFLINE, now);
    }
    hv.sched.sleep(id);
    if let Some(cpu) = running {
        log::info!("d{}v{}: taken off CPU {}", dom, vcpu, cpu);
        poke(hv, cpu);
    }
}

/// Wakes pollers whose port became pending or whose deadline passed, and blocked vCPUs with
/// a due upcall.
pub fn check_sleepers(hv: &mut Hv) {
    let now = events::now();
    let mut to_wake = alloc::vec::Vec::new();
    let bits = events::bits(hv);
    for v in vcpus(hv) {
        if !v.blocked || v.down {
            continue;
        }
        let Some(d) = hv.domains.get(v.dom).filter(|d| d.dead.is_none()) else { continue };
        let ready = if v.poll_ports.is_empty() {
            events::upcall_due(d, v.id)
        } else {
            v.poll_ports.iter().any(|&p| hv_core::evtchn::Bits::is_pending(&bits, d.id, p))
                || (v.poll_deadline != 0 && now >= v.poll_deadline)
        };
        if ready {
            to_wake.push((v.dom, v.id));
        }
    }
    for (dom, vcpu) in to_wake {
        wake(hv, dom, vcpu);
    }
}

fn save_state(v: &mut Vcpu, dead: bool) {
    use crate::domain::{RUNSTATE_BLOCKED, RUNSTATE_OFFLINE, RUNSTATE_RUNNABLE};
    let state = if dead || v.down {
        RUNSTATE_OFFLINE
    } else if v.blocked {
        RUNSTATE_BLOCKED
    } else {
        RUNSTATE_RUNNABLE
    };
    v.set_runstate(state, events::now());
    v.sel = cpu::data_selectors();
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

/// Loads the current vCPU's state onto this CPU. Returns the data selectors the CPU refused
/// (bit n for DS, ES, FS, GS; those were replaced by the null selector).
fn load_state(hv: &mut Hv) -> u8 {
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
    hv.cur.set_runstate(crate::domain::RUNSTATE_RUNNING, events::now());
    let v = &hv.cur;
    cpu::fxrstor(&v.fpu);
    cpu::set_ts(v.fpu_ts);
    // Selectors first: loading FS or GS overwrites its base. The LDT is loaded already.
    let refused = cpu::load_data_selectors(v.sel);
    cpu::set_segment_base(SegBase::Fs, v.fs_base);
    cpu::set_segment_base(SegBase::Gs, v.gs_base);
    cpu::set_segment_base(SegBase::KernelGs, v.kernel_gs_base);
    paging::sync_guest_slots(&hv.cpu, v.l4);
    paging::set_rsp1(&hv.cpu, v.kernel_sp);
    load_direct_gates(hv);
    refused
}

/// Vectors a guest may take directly from user mode (no hypervisor entry).
pub const DIRECT_VECTORS: [u8; 1] = [0x80];

/// Programs this CPU's direct gates for the current vCPU's trap table: a vector registered
/// with DPL 3 goes straight to the guest kernel.
pub fn load_direct_gates(hv: &Hv) {
    for v in DIRECT_VECTORS {
        let t = hv.cur.traps[v as usize];
        let direct = (t.address != 0 && t.flags & guest_abi::traps::TI_DPL_MASK == 3).then_some(t.address);
        paging::set_direct_gate(&hv.cpu, v, direct);
    }
}

/// Chooses what this CPU runs next and makes `f` resume it. Returns false when there is
/// nothing to run: the caller leaves the section and idles.
pub fn reschedule(hv: &mut Hv, f: &mut TrapFrame, yielding: bool) -> bool {
    hv.need_resched = false;
    let idle = hv.cur.is_placeholder();
    if !idle && !can_run(hv, &hv.cur) {
        // Blocked, down, or its domain died (perhaps on another CPU): off the CPU.
        hv.sched.block(hv.this, events::now());
    }
    let d = hv.sched.schedule(hv.this, events::now(), yielding, false);
    match d.next {
        Some(next) if !idle && next == hv.cur.sched_id => {}
        Some(next) => {
            let Some(i) = hv.others.iter().position(|o| o.sched_id == next) else {
                log::error!("scheduler chose vCPU {} that is not waiting", next);
                return !idle;
            };
            let incoming = hv.others.swap_remove(i);
            let outgoing = core::mem::replace(&mut hv.cur, incoming);
            park(hv, outgoing, f);
            let refused = load_state(hv);
            *f = hv.cur.frame;
            if refused != 0 {
                // As Xen's load_segments: the failsafe callback hears of the selectors.
                let sels = hv.cur.sel;
                crate::traps::failsafe(hv, f, sels, format_args!("data selectors {:x?} refused (mask {:#x})", sels, refused));
                if !can_run(hv, &hv.cur) {
                    return reschedule(hv, f, false);
                }
            }
            log::trace!("CPU {} runs d{}v{}", hv.this, hv.cur.dom, hv.cur.id);
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

/// Puts the vCPU that was running into the waiting list (its registers are `f`).
fn park(hv: &mut Hv, mut v: Box<Vcpu>, f: &TrapFrame) {
    if v.is_placeholder() {
        hv.spare[hv.this] = Some(v);
        return;
    }
    v.frame = *f;
    let dead = hv.domains.get(v.dom).is_none_or(|d| d.dead.is_some());
    save_state(&mut v, dead);
    let dom = v.dom;
    hv.others.push(v);
    if dead && !hv.running.iter().any(|r| r.dom == dom) {
        // The domain is fully stopped: now tell dom0 (Xen's shutdown finalisation).
        log::info!("d{}: every vCPU is off the CPUs", dom);
        events::send_virq(hv, 0, guest_abi::evtchn::VIRQ_DOM_EXC, 0);
    }
}

fn placeholder(hv: &mut Hv) -> Box<Vcpu> {
    hv.spare[hv.this].take().unwrap_or_else(|| Box::new(Vcpu::placeholder()))
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
                    resume = crate::traps::check_resume(hv, &mut frame);
                }
                if !resume {
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
