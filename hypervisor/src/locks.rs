//! The hypervisor's locks, their order, and its check.
//!
//! A CPU takes locks only in increasing [`Level`]: its own [`crate::percpu::PerCpu`], then
//! one run queue's lock (`state`: its own when it schedules, the owner's of a vCPU it wakes
//! or changes) and, only when stealing, a second one by try-lock; then one domain's memory
//! lock (`DomShared::mm`) and, for a privileged domain's operation on an unprivileged one's
//! page tables, that domain's memory lock as a second ([`Level::ForeignMm`]: only
//! privileged domains take it, only on unprivileged ones, so no two CPUs can wait on each
//! other's), then one domain's grant-table lock, then one or two domains'
//! event-channel locks
//! (`DomShared::ports`, lower id first), then a console lock. There is no global lock.
//! Leaf locks inside the layers below (the frame allocator's, the domain registry, the
//! UART) are taken last and hold nothing else. Every CPU keeps a record of the levels it holds; taking
//! a level at or below one already held panics, so an order violation shows on the first
//! run that reaches it rather than as a rare deadlock (a few instructions per lock: the check
//! is always on).

use core::sync::atomic::{AtomicU16, Ordering};
use hv_core::acpi::MAX_CPUS;

/// Lock levels, lowest first.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u16)]
pub enum Level {
    /// A CPU's own structure (`percpu`).
    PerCpu = 0,
    /// A CPU's run queue (`state::lock`) ...
    RunQueue = 1,
    /// ... and a second one, only ever try-locked (`state::try_lock_other`: a steal).
    RunQueue2 = 2,
    /// A domain's memory lock (`DomShared::mm`): page-table operations, owner changes.
    DomainMm = 3,
    /// An unprivileged domain's memory lock taken by a privileged one holding its own: a
    /// foreign page-table operation (`DomShared::foreign_mm`).
    ForeignMm = 4,
    /// A domain's grant table (`DomShared::grant`): its grant frames and active entries.
    Grant = 5,
    /// A domain's event-channel lock (`DomShared::ports`); when two are held (an
    /// interdomain operation), the lower domain id's first at this level ...
    Events = 6,
    /// ... and the higher one's at this (`ports::Locked`).
    Events2 = 7,
    /// A domU's console (`DomShared::console`): inside it only the shared rate limit and
    /// the UART, leaf locks.
    Console = 8,
    /// The PIRQ mappings (`crate::irq`): inside it only the I/O APIC's leaf lock.
    Irq = 9,
}

/// Per CPU: bit n set while level n is held.
static HELD: [crate::line::Line<AtomicU16>; MAX_CPUS] = [const { crate::line::Line(AtomicU16::new(0)) }; MAX_CPUS];

#[inline]
fn held() -> &'static AtomicU16 {
    &HELD[hv_arch::percpu::cpu_id() % MAX_CPUS]
}

/// A lock guard of a known level: taken through [`Ordered::new`], which checks the order.
pub struct Ordered<G> {
    level: Level,
    guard: G,
}

impl<G> Ordered<G> {
    /// Checks that this CPU holds no lock at `level` or above, then runs `take`.
    #[inline]
    pub fn new(level: Level, take: impl FnOnce() -> G) -> Ordered<G> {
        match Self::try_new(level, || Some(take())) {
            Some(o) => o,
            None => unreachable!(),
        }
    }

    /// As [`Ordered::new`], for a lock taken only if it is free (`take` returns `None`
    /// when not).
    #[inline]
    pub fn try_new(level: Level, take: impl FnOnce() -> Option<G>) -> Option<Ordered<G>> {
        let h = held();
        let bits = h.load(Ordering::Relaxed);
        let bit = 1u16 << level as u16;
        if bits & !(bit - 1) != 0 {
            panic!("lock order: taking {:?} while holding levels {:#b}", level, bits);
        }
        let guard = take()?;
        h.store(bits | bit, Ordering::Relaxed);
        Some(Ordered { level, guard })
    }
}

impl<G> Drop for Ordered<G> {
    fn drop(&mut self) {
        let h = held();
        h.store(h.load(Ordering::Relaxed) & !(1 << self.level as u16), Ordering::Relaxed);
    }
}

impl<G: core::ops::Deref> core::ops::Deref for Ordered<G> {
    type Target = G::Target;
    fn deref(&self) -> &G::Target {
        &self.guard
    }
}

impl<G: core::ops::DerefMut> core::ops::DerefMut for Ordered<G> {
    fn deref_mut(&mut self) -> &mut G::Target {
        &mut self.guard
    }
}
