//! What belongs to one CPU: the vCPU it runs, its tables, its scheduling deadlines and the
//! state of the hypercall it is in. Each CPU reaches only its own [`PerCpu`] (through its
//! fixed per-CPU area's CPU number); other CPUs talk to it through atomics (a reschedule
//! request, the TLB-shootdown handshake) and interrupts, never through its structure.

use crate::vcpu::Vcpu;
use crate::locks::{Level, Ordered};
use alloc::boxed::Box;
use core::sync::atomic::{AtomicBool, Ordering};
use hv_arch::paging::CpuTables;
use hv_core::acpi::MAX_CPUS;

/// What a CPU's entry area maps of a guest's descriptor tables.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct MappedDesc {
    pub gdt: [Option<hv_core::mem::Mfn>; 14],
    pub ldt: [Option<hv_core::mem::Mfn>; 16],
    pub ldt_ents: u32,
}

pub struct PerCpu {
    /// The CPU's number (its index in `Machine::cpus`).
    pub id: usize,
    pub tables: CpuTables,
    /// The vCPU it runs (or last ran), or a placeholder when idle; and a spare placeholder.
    pub cur: Box<Vcpu>,
    pub spare: Option<Box<Vcpu>>,
    /// The guest GDT and LDT frames its entry area maps now.
    pub mapped_desc: MappedDesc,
    /// End of the current vCPU's slice (system time; 0 when idle) and the scheduler's next
    /// tick.
    pub slice_until: u64,
    pub next_tick: u64,
    /// Pick again before resuming (a higher-priority vCPU woke, the current one stopped).
    pub need_resched: bool,
    /// A fast-path hypercall may have to wake a sleeper: the way back takes the slow path,
    /// which looks (`schedule::check_sleepers`).
    pub wake_pass: bool,
    /// The current vCPU yielded.
    pub yielded: bool,
    /// The current hypercall: inside a multicall (nested ones are refused), its work budget
    /// (`hypercall::preempt`) and the page-table entries it may still (de)validate.
    pub in_multicall: bool,
    pub budget: hv_core::budget::Budget,
    pub pt_budget: u64,
}

impl PerCpu {
    pub fn new(id: usize, tables: CpuTables) -> PerCpu {
        PerCpu {
            id,
            tables,
            cur: Box::new(Vcpu::placeholder()),
            spare: None,
            mapped_desc: MappedDesc::default(),
            slice_until: 0,
            next_tick: hv_core::sched::TICK_NS,
            need_resched: false,
            wake_pass: false,
            yielded: false,
            in_multicall: false,
            budget: hv_core::budget::Budget::default(),
            pt_budget: 0,
        }
    }
}

/// Every CPU's structure. CPU `k` locks only `CPUS[k]` (uncontended: the lock only makes
/// the exclusive access checkable), before anything else (see `locks`).
static CPUS: [spin::Mutex<Option<PerCpu>>; MAX_CPUS] = [const { spin::Mutex::new(None) }; MAX_CPUS];
/// Per CPU: another CPU asked it to look again (it then sends `IPI_VECTOR`).
static RESCHED: [crate::line::Line<AtomicBool>; MAX_CPUS] = [const { crate::line::Line(AtomicBool::new(false)) }; MAX_CPUS];

/// Installs CPU `k`'s structure (at boot, before that CPU runs guests).
pub fn install(pc: PerCpu) {
    let k = pc.id;
    *CPUS[k].lock() = Some(pc);
}

/// This CPU's structure. Panics if it has none (a CPU that never came up does not run).
#[inline]
pub fn this() -> Ordered<spin::MutexGuard<'static, Option<PerCpu>>> {
    Ordered::new(Level::PerCpu, || CPUS[hv_arch::percpu::cpu_id()].lock())
}

/// CPU `k`'s tables (an application processor reads its own before it runs).
pub fn tables_of(k: usize) -> Option<CpuTables> {
    CPUS.get(k)?.lock().as_ref().map(|p| p.tables)
}

/// Asks CPU `k` (APIC id `apic`) to reschedule and deliver upcalls: it looks at the flag
/// on its next entry, which the interrupt makes happen now.
pub fn poke(k: usize, apic: u32) {
    RESCHED[k].store(true, Ordering::Release);
    hv_arch::lapic::send_vector(apic, hv_arch::lapic::IPI_VECTOR);
}

/// Takes the reschedule request other CPUs left for CPU `k`.
#[inline]
pub fn take_resched(k: usize) -> bool {
    // Looked at first: the line is written only when a request is there.
    RESCHED[k].load(Ordering::Acquire) && RESCHED[k].swap(false, Ordering::AcqRel)
}
