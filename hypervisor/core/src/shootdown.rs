//! The TLB-shootdown handshake between a CPU that changed guest page tables (an initiator)
//! and a CPU that may still hold translations of them (the target): per CPU a flag and two
//! counters.
//!
//! - `in_guest`: the target runs (or is about to resume) guest code, so interrupts reach it
//!   there: cleared first thing on every entry from a guest, set on the way back.
//! - `req` / `ack`: flushes asked of the target, and the last request it has flushed for.
//!
//! Initiator, after changing tables: [`CpuFlags::request`] takes a ticket and tells whether
//! the target is in guest context; if so it sends the flush IPI and spins until
//! [`CpuFlags::flushed_or_left`] with that ticket. Target: the IPI handler
//! ([`CpuFlags::on_flush_ipi`]) reads `req`, flushes, then acknowledges what it read; every
//! return to a guest goes through [`CpuFlags::before_resume`], which sets `in_guest`
//! *first* and then flushes for any unacknowledged request. With sequentially consistent
//! accesses either the initiator sees `in_guest` (and waits for the acknowledgement) or the
//! target sees the request (and flushes before resuming), so no lock is needed between
//! them, and any number of initiators may ask at once: an acknowledgement covers exactly
//! the requests made before the flush that it follows.
//!
//! `tests/shootdown_loom.rs` model-checks this (one and two initiators, a target that
//! spins on a lock while a flush is owed), and shows that the opposite order in
//! `before_resume` lets a stale translation through.
//!
//! Built with `--cfg loom` the atomics are loom's, for the model checker.

#[cfg(loom)]
use loom::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering::SeqCst};
#[cfg(not(loom))]
use core::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering::SeqCst};

/// One CPU's shootdown state.
#[derive(Debug)]
pub struct CpuFlags {
    in_guest: AtomicBool,
    req: AtomicU64,
    ack: AtomicU64,
}

/// A flush request: the target has done it once its acknowledgement reaches the ticket.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Ticket(u64);


impl CpuFlags {
    #[cfg(not(loom))]
    pub const fn new() -> CpuFlags {
        CpuFlags { in_guest: AtomicBool::new(false), req: AtomicU64::new(0), ack: AtomicU64::new(0) }
    }

    #[cfg(loom)]
    pub fn new() -> CpuFlags {
        CpuFlags { in_guest: AtomicBool::new(false), req: AtomicU64::new(0), ack: AtomicU64::new(0) }
    }

    /// Target: this CPU entered the hypervisor from a guest (first thing, before any lock).
    #[inline]
    pub fn left_guest(&self) {
        self.in_guest.store(false, SeqCst);
    }

    /// Target (only the CPU itself calls this and [`CpuFlags::before_resume`]): flushes with
    /// `flush_tlb` if a request is unacknowledged, then acknowledges every request made
    /// before the flush.
    #[inline]
    fn flush_owed(&self, flush_tlb: impl FnOnce()) {
        let r = self.req.load(SeqCst);
        if r != self.ack.load(SeqCst) {
            flush_tlb();
            self.ack.store(r, SeqCst);
        }
    }

    /// Target: the flush IPI arrived in guest context.
    #[inline]
    pub fn on_flush_ipi(&self, flush_tlb: impl FnOnce()) {
        self.flush_owed(flush_tlb)
    }

    /// Target: the last step before returning to a guest (`resuming`) or idling. A flush
    /// requested before this is done here by `flush_tlb`; one requested from here on sees
    /// `in_guest` and is done by the IPI handler once the guest runs with interrupts on.
    #[inline]
    pub fn before_resume(&self, resuming: bool, flush_tlb: impl FnOnce()) {
        self.in_guest.store(resuming, SeqCst);
        // Store, then load another location: the fence is what forbids both sides reading
        // the other's old value (all-SeqCst accesses do already; the fence also makes the
        // model checker, which treats SeqCst accesses as acquire/release, see it).
        fence(SeqCst);
        self.flush_owed(flush_tlb)
    }

    /// Initiator (after its table change is written): asks for a flush; returns the ticket
    /// and whether the target is in guest context (then send it the flush IPI and wait for
    /// [`CpuFlags::flushed_or_left`]).
    #[inline]
    pub fn request(&self) -> (Ticket, bool) {
        let t = self.req.fetch_add(1, SeqCst) + 1;
        fence(SeqCst);
        (Ticket(t), self.in_guest.load(SeqCst))
    }

    /// Initiator: the target flushed since `t` was taken, or is in the hypervisor (and
    /// flushes in [`CpuFlags::before_resume`] before it runs guest code again).
    #[inline]
    pub fn flushed_or_left(&self, t: Ticket) -> bool {
        self.ack.load(SeqCst) >= t.0 || !self.in_guest.load(SeqCst)
    }

    /// [`CpuFlags::before_resume`] with its two steps the other way round, for the model
    /// checker to show why the order matters.
    #[cfg(loom)]
    pub fn before_resume_wrong_order(&self, resuming: bool, flush_tlb: impl FnOnce()) {
        self.flush_owed(flush_tlb);
        fence(SeqCst);
        self.in_guest.store(resuming, SeqCst);
    }
}

#[cfg(not(loom))]
impl Default for CpuFlags {
    fn default() -> Self {
        Self::new()
    }
}
