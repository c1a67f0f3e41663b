//! The scheduler's state under the hypervisor lock (what is left of it: see `locks`), and
//! what an entry that takes it works with.

use crate::{domain, locks, percpu};
use guest_abi::harness::ExitCode;

/// What the hypervisor lock guards (see `locks` for the order): the credit scheduler, every
/// vCPU's scheduling state and the contexts of the vCPUs no CPU runs. What belongs to one
/// CPU is in its `percpu::PerCpu`; what a domain's vCPUs reach without this lock is in its
/// `domain::DomShared`.
pub struct Global {
    /// Every vCPU context that is not on a CPU: runnable, blocked or down.
    pub others: alloc::vec::Vec<alloc::boxed::Box<domain::Vcpu>>,
    /// Every domain, by id, and the idle domain behind placeholders.
    pub domains: domain::Domains,
    /// The credit scheduler (run queues per CPU, all under this lock).
    pub sched: hv_core::sched::Credit,
}

/// What an entry under the hypervisor lock works with: this CPU's structure (the current
/// vCPU in it) and the lock's state.
pub struct Hv<'a> {
    pub pc: &'a mut percpu::PerCpu,
    pub g: &'a mut Global,
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
