//! What CPUs tell each other without locks: what each runs (its `RUNNING` record, written
//! only by that CPU), the TLB-shootdown handshake after a change to a domain's tables
//! (`hv_core::shootdown`, model-checked on the host), and counts of guest entries.
//!
//! Several vCPUs of one domain may run at once on different CPUs, sharing its page tables:
//! after a change to a domain's tables [`shootdown`] makes every other CPU running that
//! domain resynchronise its roots and flush its TLB before it runs another guest
//! instruction.

use crate::line::Line;
use crate::percpu::PerCpu;
use core::sync::atomic::AtomicU64;
use guest_abi::DomId;
use hv_arch::paging;
use hv_core::shootdown::{CpuFlags, Ticket};

/// Per CPU: the TLB-shootdown handshake (`hv_core::shootdown`, model-checked on the host):
/// whether it runs guest code, and the flushes asked of it and done. One cache line each.
static SHOOTDOWN: [Line<CpuFlags>; hv_core::acpi::MAX_CPUS] = [const { Line(CpuFlags::new()) }; hv_core::acpi::MAX_CPUS];

/// Per CPU: hypervisor entries from guests, in all, through #GP and through `int 0x80`.
static ENTRIES: [Line<[AtomicU64; 3]>; hv_core::acpi::MAX_CPUS] =
    [const { Line([const { AtomicU64::new(0) }; 3]) }; hv_core::acpi::MAX_CPUS];

/// Per CPU: what it runs, 0 for nothing, else `(domain + 1) << 48 | vCPU << 40 | root`.
/// Written only by that CPU (when it loads or parks a vCPU, or its root changes), read by
/// shootdowns and wakeups on any CPU.
static RUNNING: [Line<AtomicU64>; hv_core::acpi::MAX_CPUS] = [const { Line(AtomicU64::new(0)) }; hv_core::acpi::MAX_CPUS];

/// What CPU `k` runs.
pub fn running(k: usize) -> Option<Running> {
    let w = RUNNING.get(k)?.load(core::sync::atomic::Ordering::SeqCst);
    (w != 0).then(|| Running { dom: ((w >> 48) - 1) as DomId, id: ((w >> 40) & 0xFF) as u32, l4: hv_core::mem::Mfn(w & ((1 << 40) - 1)) })
}

/// The CPU running vCPU `vcpu` of `dom` now, from the `RUNNING` records (no lock: the
/// answer may be stale by the time it is used).
pub fn cpu_running(dom: DomId, vcpu: u32) -> Option<usize> {
    (0..crate::machine::get().cpus.len()).find(|&k| running(k).is_some_and(|r| r.dom == dom && r.id == vcpu))
}

/// Records what this CPU (`k`) runs. A full barrier: whatever page tables the CPU reads
/// after this (its root's slots, its TLB refill), a shootdown that missed the record was
/// ordered before it (see [`shootdown`]).
pub fn set_running(k: usize, r: Option<Running>) {
    let w = r.map_or(0, |r| ((r.dom as u64 + 1) << 48) | ((r.id as u64 & 0xFF) << 40) | (r.l4.0 & ((1 << 40) - 1)));
    if let Some(c) = RUNNING.get(k) {
        c.store(w, core::sync::atomic::Ordering::SeqCst);
    }
}

/// Drops this CPU's guest translations after a shootdown asked for it, and takes its root's
/// guest slots again from the root it runs (the guest's L4 may have changed).
fn resync_and_flush(k: usize) {
    match (running(k), crate::machine::get().cpus.get(k)) {
        (Some(r), Some(t)) => paging::sync_guest_slots(t, r.l4),
        _ => paging::flush_guest_tlb(),
    }
}

/// Counts a hypervisor entry from a guest through `vector`.
#[inline]
pub fn count_entry(vector: u64) {
    let c = &ENTRIES[hv_arch::percpu::cpu_id() % hv_core::acpi::MAX_CPUS];
    let r = core::sync::atomic::Ordering::Relaxed;
    c[0].fetch_add(1, r);
    match vector {
        13 => c[1].fetch_add(1, r),
        0x80 => c[2].fetch_add(1, r),
        _ => 0,
    };
}

/// Hypervisor entries from guests since boot (every CPU): (in all, #GP, `int 0x80`).
pub fn entries() -> (u64, u64, u64) {
    let r = core::sync::atomic::Ordering::Relaxed;
    let sum = |i: usize| ENTRIES.iter().map(|c| c[i].load(r)).sum();
    (sum(0), sum(1), sum(2))
}

/// This CPU left guest context (a guest entry, before taking any lock).
pub fn left_guest() {
    SHOOTDOWN[hv_arch::percpu::cpu_id()].left_guest();
}

/// The TLB-shootdown IPI, in guest context and without any lock: the CPU that sent it waits
/// for this CPU to take its root's guest slots again and drop its guest translations. Without PCID the CR3
/// load on the way back to the guest flushes; with PCID the guest tags are invalidated.
pub fn flush_ipi() {
    let k = hv_arch::percpu::cpu_id();
    SHOOTDOWN[k].on_flush_ipi(|| resync_and_flush(k));
    hv_arch::lapic::eoi();
}

/// After a change to the page tables of the domains `doms`: every other CPU running a vCPU
/// of one of them resynchronises its roots and drops its guest translations before it runs
/// another guest instruction. CPUs in guest context are sent the flush IPI and waited for;
/// CPUs inside the hypervisor do it before they resume their guest. CPUs running other
/// domains need nothing: loading a vCPU always resynchronises and flushes. Needs no lock:
/// what each CPU runs is read from its record (`RUNNING`), after a full barrier that orders
/// the caller's table writes before it (a CPU that starts running one of `doms` after that
/// read loads the new tables itself).
pub fn shootdown(this: usize, doms: &[DomId]) {
    let m = crate::machine::get();
    if m.cpus.len() == 1 {
        return;
    }
    core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
    // Built at the first target only: most calls find none, and this runs after every
    // page-table hypercall.
    let mut wait: Option<Waits> = None;
    for k in 0..m.cpus.len() {
        if k == this || !running(k).is_some_and(|r| doms.contains(&r.dom)) {
            continue;
        }
        wait.get_or_insert_with(Waits::default).ask(k, m.apic_ids.get(k).copied());
    }
    if let Some(w) = wait {
        w.finish();
    }
}

/// What a CPU runs, as other CPUs see it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Running {
    pub dom: DomId,
    pub id: u32,
    /// Its root: a shootdown copies the guest slots into that CPU's roots.
    pub l4: hv_core::mem::Mfn,
}

/// Begins a hypervisor entry on this CPU: takes the reschedule requests of other CPUs.
#[inline]
pub fn enter(pc: &mut PerCpu) {
    if crate::percpu::take_resched(pc.id) {
        pc.need_resched = true;
    }
}

/// Ends a hypervisor entry on this CPU.
#[inline]
pub fn leave_cpu(pc: &mut PerCpu) {
    // A flush asked before this is done now; from here until the guest runs, a shootdown
    // sends this CPU the flush IPI (it arrives once the guest runs with interrupts on).
    let (k, t, l4) = (pc.id, &pc.tables, pc.cur.l4);
    SHOOTDOWN[k].before_resume(!pc.cur.is_placeholder(), || paging::sync_guest_slots(t, l4));
    pc.need_resched = false;
}

/// The current vCPU switched to root `l4` (other CPUs' shootdowns copy from it).
pub fn set_root(pc: &PerCpu) {
    let (dom, id, l4) = (pc.cur.dom, pc.cur.id, pc.cur.l4);
    set_running(pc.id, Some(Running { dom, id, l4 }));
}

/// Drops the guest translations of every CPU (this one included) before this one carries
/// on: the [`hv_core::pt::TlbFlush`] of page-table operations (a frame changing its kind of
/// type, see the TLB clock in `hv_core::frame`). CPUs in guest context get the flush IPI and
/// are waited for; the others flush before they next run guest code ([`leave_cpu`]); idle CPUs
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
    /// [`leave_cpu`] before resuming; it may be spinning for a lock with interrupts off).
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
