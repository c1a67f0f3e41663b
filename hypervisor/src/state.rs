//! The hypervisor's shared state under the hypervisor lock, and what an entry works with.

use crate::{domain, locks, percpu};
use guest_abi::harness::ExitCode;

/// The hypervisor's shared state, under the hypervisor lock (see `locks` for the order).
/// What belongs to one CPU is in its `percpu::PerCpu` instead.
pub struct Global {
    /// Every vCPU context that is not on a CPU: runnable, blocked or down.
    pub others: alloc::vec::Vec<alloc::boxed::Box<domain::Vcpu>>,
    /// Every domain, by id, and the idle domain behind placeholders.
    pub domains: domain::Domains,
    /// The console rate limit all unprivileged domains share.
    pub sched: hv_core::sched::Credit,
}

/// What a hypervisor entry works with: this CPU's structure (the current vCPU in it) and
/// the shared state; and the current domain's memory, when its lock is held for a stretch
/// (a multicall).
pub struct Hv<'a> {
    pub pc: &'a mut percpu::PerCpu,
    pub g: &'a mut Global,
    pub mm: Option<&'a mut domain::DomMm>,
}

/// The hypervisor lock: a ticket lock, so CPUs get it in the order they asked (a plain spin
/// lock let a CPU re-issuing continuations back to back starve the others for hundreds of
/// milliseconds under TCG).
static HV: spin::mutex::TicketMutex<Option<Global>> = spin::mutex::TicketMutex::new(None);

/// Takes the hypervisor lock (after this CPU's own structure, if at all: `locks`).
pub fn global() -> locks::Ordered<spin::mutex::TicketMutexGuard<'static, Option<Global>>> {
    locks::Ordered::new(locks::Level::Global, || HV.lock())
}

impl Hv<'_> {
    /// The current vCPU's domain.
    pub fn dom(&self) -> &domain::Domain {
        self.g.domains.of(self.pc.cur.dom)
    }

    pub fn dom_mut(&mut self) -> &mut domain::Domain {
        self.g.domains.of_mut(self.pc.cur.dom)
    }

    /// What the rest of the hypervisor sees of the current vCPU (`None` when idle).
    pub fn vs(&mut self) -> Option<&mut domain::VcpuState> {
        self.g.domains.vcpu_mut(self.pc.cur.dom, self.pc.cur.id)
    }

    /// Ends the run: under QEMU with `debug-exit`, through isa-debug-exit with `code`.
    pub fn end_run(&self, why: &str, code: ExitCode) -> ! {
        crate::halt::end(why, code)
    }
}
