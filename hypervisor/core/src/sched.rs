//! The credit scheduler (Xen's credit1 semantics) as pure logic, in pieces a CPU can own.
//!
//! - Each domain has a **weight** (default 256) and an optional **cap** (% of one CPU).
//! - Every accounting period (one 30 ms time slice) the CPUs' time is shared out as credit
//!   (in nanoseconds of CPU time) among the active vCPUs, in proportion to their domains'
//!   weights; a vCPU holds at most one period's worth.
//! - Credit is **debited from measured run time** at every scheduling decision, never
//!   sampled at a tick, so a vCPU that yields just before each tick still pays for every
//!   nanosecond it ran.
//! - Priorities: BOOST (woken with credit left: runs next, preempting, until its next
//!   tick), UNDER (credit left), OVER (none), IDLE (the idle vCPU). Within a priority,
//!   round robin.
//! - A capped domain that used its cap in a period is parked until the next period.
//! - Per-CPU run queues; an idle CPU steals any work, a CPU with only OVER work steals
//!   UNDER/BOOST work, from other CPUs, within each vCPU's hard affinity.
//! - A running vCPU keeps the CPU for at least the rate limit (1 ms) against a preemption.
//!
//! The state is split the way the hypervisor locks it (as Xen's credit1):
//! - a [`RunQueue`] per CPU **owns** its vCPUs: their scheduling state ([`VcpuSched`]) and
//!   whatever the hypervisor keeps with each (the payload `P`: saved registers, runstate).
//!   The hypervisor puts each queue under its own lock; a vCPU moves between queues only
//!   when a CPU steals it, holding both;
//! - a domain's weight and cap state ([`DomSched`]) are atomics every queue shares;
//! - the accounting period ([`Acct`]) is an atomic deadline: the CPU that moves it past a
//!   period's end shares that period out, visiting the queues one at a time.
//!
//! The arch layer supplies time (`now` in ns) and performs the context switches this
//! module decides on; `Credit` (test builds) runs every queue in one structure for the
//! deterministic simulator of the tests.

use alloc::collections::VecDeque;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};

/// Length of a time slice and of the accounting period.
pub const TSLICE_NS: u64 = 30_000_000;
/// Tick length (unboosting, cap checks); three ticks per slice.
pub const TICK_NS: u64 = 10_000_000;
/// Minimum run time before a running vCPU can be preempted.
pub const RATELIMIT_NS: u64 = 1_000_000;
/// Default domain weight.
pub const DEFAULT_WEIGHT: u32 = 256;

#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Prio {
    Idle = 0,
    Over = 1,
    Under = 2,
    Boost = 3,
}

/// A vCPU's handle (unique among all vCPUs; the hypervisor derives it from the domain and
/// vCPU ids).
pub type VcpuId = usize;

/// A domain's weight and cap state, shared by every CPU's queue.
#[derive(Debug)]
pub struct DomSched {
    weight: AtomicU32,
    cap: AtomicU32,
    /// CPU time left under the cap in this period (may go negative: the debt carries over).
    cap_budget: AtomicI64,
    parked: AtomicBool,
    /// The accounting period whose cap budget it has (refilled once per period).
    period: AtomicU64,
}

impl DomSched {
    /// A domain of `weight` (clamped to 1..=65535) and `cap`, a percentage of one CPU (0 =
    /// none).
    pub fn new(weight: u32, cap: u32) -> Arc<DomSched> {
        let d = DomSched {
            weight: AtomicU32::new(weight.clamp(1, 65535)),
            cap: AtomicU32::new(cap),
            cap_budget: AtomicI64::new(0),
            parked: AtomicBool::new(false),
            period: AtomicU64::new(0),
        };
        d.refill_cap();
        Arc::new(d)
    }

    /// Sets weight and cap (`sched-credit`).
    pub fn set_params(&self, weight: u32, cap: u32) {
        self.weight.store(weight.clamp(1, 65535), Ordering::Relaxed);
        self.cap.store(cap, Ordering::Relaxed);
        self.refill_cap();
    }

    pub fn weight(&self) -> u32 {
        self.weight.load(Ordering::Relaxed)
    }

    /// The cap (a percentage of one CPU; 0 = none).
    pub fn cap(&self) -> u32 {
        self.cap.load(Ordering::Relaxed)
    }

    fn refill_cap(&self) {
        let cap = self.cap.load(Ordering::Relaxed);
        if cap == 0 {
            self.parked.store(false, Ordering::Relaxed);
            return;
        }
        let per_period = (TSLICE_NS * cap as u64 / 100) as i64;
        // One atomic update: a charge on another CPU meanwhile is not lost.
        let refill = |b: i64| Some(b.min(0) + per_period);
        let old = self.cap_budget.fetch_update(Ordering::AcqRel, Ordering::Acquire, refill).unwrap_or(0);
        self.parked.store(old.min(0) + per_period <= 0, Ordering::Relaxed);
    }

    /// Refills the cap budget for `period` unless that was done already (several queues
    /// hold vCPUs of the domain: the first to get there refills).
    fn refill_for(&self, period: u64) {
        let seen = self.period.load(Ordering::Relaxed);
        if seen < period && self.period.compare_exchange(seen, period, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
            self.refill_cap();
        }
    }

    fn charge(&self, ran: u64) {
        if self.cap.load(Ordering::Relaxed) != 0 && self.cap_budget.fetch_sub(ran as i64, Ordering::Relaxed) - ran as i64 <= 0 {
            self.parked.store(true, Ordering::Relaxed);
        }
    }

    fn parked(&self) -> bool {
        self.parked.load(Ordering::Relaxed)
    }
}

/// What the scheduler knows of one vCPU; kept by the queue that owns it.
#[derive(Clone, Debug)]
pub struct VcpuSched {
    id: VcpuId,
    dom: Arc<DomSched>,
    credit: i64,
    prio: Prio,
    runnable: bool,
    affinity: u64,
    /// Takes part in the credit share-out (it used credit and has not saturated).
    active: bool,
    queued: bool,
}

impl VcpuSched {
    /// A blocked vCPU of `dom` that may run on the CPUs in `affinity` (a bit mask) of
    /// `nr_cpus`; an affinity naming none of them means all.
    pub fn new(id: VcpuId, dom: Arc<DomSched>, affinity: u64, nr_cpus: usize) -> VcpuSched {
        let mask = if nr_cpus >= 64 { u64::MAX } else { (1u64 << nr_cpus) - 1 };
        let affinity = if affinity & mask == 0 { mask } else { affinity & mask };
        VcpuSched { id, dom, credit: 0, prio: Prio::Under, runnable: false, affinity, active: false, queued: false }
    }

    /// The CPU whose queue it starts on: the first of its affinity.
    pub fn first_cpu(&self) -> usize {
        self.affinity.trailing_zeros() as usize
    }

    pub fn id(&self) -> VcpuId {
        self.id
    }

    pub fn affinity(&self) -> u64 {
        self.affinity
    }

    pub fn runnable(&self) -> bool {
        self.runnable
    }

    /// Does it take part in a share-out? Active or runnable, and not holding more than half
    /// a period's credit: such a vCPU is not using its share (a mostly idle dom0 woken by
    /// its timer every few ms, often runnable just when the tick shares out, since the same
    /// interrupt woke it), and its weight would take the busy vCPUs' credit only to lose it
    /// at the ceiling, leaving them all OVER and sharing the CPU round robin whatever their
    /// weights. It takes part again once it has spent it (Xen likewise drops a vCPU whose
    /// credit passed the ceiling from its active list).
    fn takes_part(&self, unbilled: u64) -> bool {
        (self.active || self.runnable) && self.credit.saturating_sub(unbilled as i64) <= TSLICE_NS as i64 / 2
    }

    fn eligible(&self) -> bool {
        self.runnable && !self.dom.parked()
    }
}

/// The accounting period: its end, moved on by whichever CPU gets there first.
#[derive(Debug)]
pub struct Acct {
    next: AtomicU64,
}

impl Default for Acct {
    fn default() -> Acct {
        Acct::new()
    }
}

impl Acct {
    pub const fn new() -> Acct {
        Acct { next: AtomicU64::new(TSLICE_NS) }
    }

    /// The end of the current period.
    pub fn next(&self) -> u64 {
        self.next.load(Ordering::Acquire)
    }

    /// Claims the share-out of the periods that ended by `now`: how many (0 when none ended
    /// or another CPU claimed them), and the number of the last one.
    pub fn claim(&self, now: u64) -> (u64, u64) {
        loop {
            let next = self.next.load(Ordering::Acquire);
            if now < next {
                return (0, 0);
            }
            let n = (now - next) / TSLICE_NS + 1;
            let to = next + n * TSLICE_NS;
            if self.next.compare_exchange(next, to, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                return (n, to / TSLICE_NS);
            }
        }
    }
}

/// One period's share-out, in two visits of every queue: [`RunQueue::weigh`] sums the
/// weights of the active vCPUs, [`RunQueue::share`] gives each its part (a vCPU that moves
/// between the visits may miss or get one period's credit twice; credit is bounded anyway).
#[derive(Copy, Clone, Debug, Default)]
pub struct Shareout {
    pub weight_total: u64,
    pub total_ns: u64,
    pub period: u64,
    pub periods: u64,
    /// When it runs: a running vCPU's credit is judged net of the time it ran since it was
    /// last charged.
    pub now: u64,
}

/// What a CPU should run next, and until when at the latest (absolute ns).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub next: Option<VcpuId>,
    pub until: u64,
}

/// One CPU's run queue and the vCPUs it owns (queued, running, or not runnable), each with
/// the hypervisor's payload.
#[derive(Debug)]
pub struct RunQueue<P> {
    cpu: usize,
    owned: Vec<(VcpuSched, P)>,
    runq: VecDeque<VcpuId>,
    current: Option<VcpuId>,
    since: u64,
}

impl<P> RunQueue<P> {
    pub const fn new(cpu: usize) -> RunQueue<P> {
        RunQueue { cpu, owned: Vec::new(), runq: VecDeque::new(), current: None, since: 0 }
    }

    pub fn cpu(&self) -> usize {
        self.cpu
    }

    /// Takes ownership of vCPU `s` (at creation, or after stealing it: queued if runnable).
    pub fn adopt(&mut self, mut s: VcpuSched, p: P) {
        let (runnable, id) = (s.runnable, s.id);
        s.queued = false;
        self.owned.push((s, p));
        if runnable {
            self.enqueue(id);
        }
    }

    fn index(&self, v: VcpuId) -> Option<usize> {
        self.owned.iter().position(|(s, _)| s.id == v)
    }

    fn s(&self, v: VcpuId) -> Option<&VcpuSched> {
        self.owned.iter().find(|(s, _)| s.id == v).map(|(s, _)| s)
    }

    fn s_mut(&mut self, v: VcpuId) -> Option<&mut VcpuSched> {
        self.owned.iter_mut().find(|(s, _)| s.id == v).map(|(s, _)| s)
    }

    /// Does this queue own `v`?
    pub fn owns(&self, v: VcpuId) -> bool {
        self.index(v).is_some()
    }

    pub fn payload(&self, v: VcpuId) -> Option<&P> {
        self.owned.iter().find(|(s, _)| s.id == v).map(|(_, p)| p)
    }

    pub fn payload_mut(&mut self, v: VcpuId) -> Option<&mut P> {
        self.owned.iter_mut().find(|(s, _)| s.id == v).map(|(_, p)| p)
    }

    /// Every owned vCPU's handle and payload.
    pub fn payloads(&self) -> impl Iterator<Item = (VcpuId, &P)> {
        self.owned.iter().map(|(s, p)| (s.id, p))
    }

    /// The vCPU this CPU runs.
    pub fn current(&self) -> Option<VcpuId> {
        self.current
    }

    /// The priority of what this CPU runs (IDLE when nothing).
    pub fn current_prio(&self) -> Prio {
        self.current.and_then(|v| self.s(v)).map_or(Prio::Idle, |s| s.prio)
    }

    pub fn prio(&self, v: VcpuId) -> Option<Prio> {
        self.s(v).map(|s| s.prio)
    }

    pub fn credit(&self, v: VcpuId) -> Option<i64> {
        self.s(v).map(|s| s.credit)
    }

    fn enqueue(&mut self, v: VcpuId) {
        let Some(s) = self.s_mut(v) else { return };
        if s.queued {
            return;
        }
        s.queued = true;
        self.runq.push_back(v);
    }

    fn dequeue(&mut self, v: VcpuId) {
        if let Some(s) = self.s_mut(v) {
            if core::mem::take(&mut s.queued) {
                self.runq.retain(|&q| q != v);
            }
        }
    }

    /// Charges the running vCPU for the time since it started or was last charged.
    fn burn(&mut self, now: u64) {
        // `now` may be older than `since` (read before the caller got the lock): never
        // backwards, so no time is charged twice.
        let ran = now.saturating_sub(self.since);
        self.since = self.since.max(now);
        let Some(v) = self.current else { return };
        let Some(vc) = self.s_mut(v) else { return };
        vc.credit -= ran as i64;
        vc.active = true;
        vc.dom.charge(ran);
        // Out of credit means OVER, boosted or not: a vCPU that blocks before every tick
        // must not keep the boost it woke with.
        if vc.credit <= 0 {
            vc.prio = Prio::Over;
        } else if vc.prio != Prio::Boost {
            vc.prio = Prio::Under;
        }
    }

    /// Owned vCPU `v` became runnable. Returns whether this CPU should reschedule now (a
    /// "tickle": it is idle, or `v` should preempt what runs). When it returns false and `v`
    /// was queued, an idle CPU of its affinity could take it: [`RunQueue::queued_affinity`].
    pub fn wake(&mut self, v: VcpuId, now: u64) -> bool {
        let current = self.current;
        let Some(vc) = self.s_mut(v) else { return false };
        if vc.runnable {
            return false;
        }
        vc.runnable = true;
        vc.active = true;
        if current == Some(v) {
            // Blocked or put to sleep but not switched away from yet (its CPU reschedules
            // soon): runnable again where it is, never queued for a second CPU.
            return false;
        }
        // As in Xen: an UNDER vCPU (credit left, or new) is boosted on wake.
        vc.prio = if vc.prio >= Prio::Under { Prio::Boost } else { Prio::Over };
        let prio = vc.prio;
        self.enqueue(v);
        match current {
            None => true,
            Some(_) => {
                self.burn(now);
                prio > self.current_prio()
            }
        }
    }

    /// The affinity of `v` if it waits in this queue (for the caller to tickle an idle CPU
    /// that may steal it).
    pub fn queued_affinity(&self, v: VcpuId) -> Option<u64> {
        self.s(v).filter(|s| s.queued).map(|s| s.affinity)
    }

    /// The CPUs some queued, eligible vCPU may run on (an OR of their affinities): after a
    /// decision, an idle one of them should come and steal.
    pub fn waiting_affinity(&self) -> u64 {
        self.runq.iter().filter_map(|&v| self.s(v)).filter(|s| s.eligible()).fold(0, |m, s| m | s.affinity)
    }

    /// This CPU could not run `v`, the vCPU [`RunQueue::schedule`] chose (its context was not
    /// to be had): it runs nothing now, and `v`, if still runnable, is queued again.
    pub fn unpick(&mut self, v: VcpuId) {
        if self.current == Some(v) {
            self.current = None;
        }
        if self.s(v).is_some_and(|s| s.runnable) {
            self.enqueue(v);
        }
    }

    /// The running vCPU blocks (it is no longer runnable).
    pub fn block(&mut self, now: u64) {
        self.burn(now);
        if let Some(v) = self.current {
            if let Some(vc) = self.s_mut(v) {
                vc.runnable = false;
                // A boost lasts until the vCPU stops running.
                if vc.prio == Prio::Boost {
                    vc.prio = Prio::Under;
                }
            }
        }
    }

    /// Owned vCPU `v` stops being runnable wherever it is (taken down, or its domain died):
    /// off the run queue; if this CPU runs it, it must call [`RunQueue::schedule`] soon (the
    /// caller asks it).
    pub fn sleep(&mut self, v: VcpuId) {
        let Some(vc) = self.s_mut(v) else { return };
        vc.runnable = false;
        if vc.prio == Prio::Boost {
            vc.prio = Prio::Under;
        }
        self.dequeue(v);
    }

    /// Gives up owned vCPU `v` for good (its domain is torn down): it must not be the one
    /// this CPU runs. Its scheduling state and payload leave the queue.
    pub fn remove(&mut self, v: VcpuId) -> Option<(VcpuSched, P)> {
        if self.current == Some(v) {
            return None;
        }
        self.dequeue(v);
        let at = self.index(v)?;
        Some(self.owned.swap_remove(at))
    }

    /// Owned vCPU `v`'s hard affinity.
    pub fn affinity_of(&self, v: VcpuId) -> Option<u64> {
        self.s(v).map(|s| s.affinity)
    }

    /// Sets owned vCPU `v`'s hard affinity (a CPU mask; never empty: a mask with no CPU
    /// of the machine is refused by the caller). A queued vCPU that may no longer run here
    /// stays queued until a CPU of its affinity steals it; the running one moves at its
    /// next reschedule (the caller asks for it). Returns whether this CPU is outside it.
    pub fn set_affinity(&mut self, v: VcpuId, affinity: u64) -> bool {
        let cpu = self.cpu;
        let Some(s) = self.s_mut(v) else { return false };
        s.affinity = affinity;
        affinity & (1u64.checked_shl(cpu as u32).unwrap_or(0)) == 0
    }

    /// The best eligible queued vCPU of at least `min` that may run on `for_cpu`, by
    /// priority then FIFO: its place in the run queue.
    fn best(&self, min: Prio, for_cpu: usize) -> Option<usize> {
        let mut best: Option<(usize, Prio)> = None;
        for (i, &v) in self.runq.iter().enumerate() {
            let Some(s) = self.s(v) else { continue };
            if !s.eligible() || s.affinity & (1 << for_cpu) == 0 {
                continue;
            }
            if s.prio >= min && best.is_none_or(|(_, bp)| s.prio > bp) {
                best = Some((i, s.prio));
            }
        }
        best.map(|(i, _)| i)
    }

    fn take_best(&mut self, min: Prio) -> Option<VcpuId> {
        let i = self.best(min, self.cpu)?;
        let v = self.runq.remove(i)?;
        if let Some(s) = self.s_mut(v) {
            s.queued = false;
        }
        Some(v)
    }

    /// Gives up the best queued vCPU of at least `min` that may run on CPU `thief` (a steal):
    /// it leaves this queue with its payload.
    pub fn take_for(&mut self, thief: usize, min: Prio) -> Option<(VcpuSched, P)> {
        let i = self.best(min, thief)?;
        let v = self.runq.remove(i)?;
        let at = self.index(v)?;
        let (mut s, p) = self.owned.swap_remove(at);
        s.queued = false;
        Some((s, p))
    }

    /// Gives up queued vCPU `v` if it may run on CPU `to` (a wake-up placing it on an idle
    /// CPU, as Xen's wake prefers an idle CPU): it leaves this queue with its payload.
    pub fn take(&mut self, v: VcpuId, to: usize) -> Option<(VcpuSched, P)> {
        let s = self.s(v)?;
        if !s.queued || s.affinity & (1u64.checked_shl(to as u32).unwrap_or(0)) == 0 {
            return None;
        }
        self.dequeue(v);
        let at = self.index(v)?;
        Some(self.owned.swap_remove(at))
    }

    /// Chooses what this CPU runs from `now`. `yield_current` puts the running vCPU behind
    /// its peers; `preempt` is a tickle (subject to the rate limit). `steal(min)` offers a
    /// vCPU of at least `min` from another CPU's queue (taken with [`RunQueue::take_for`])
    /// when the local choice is worse than UNDER; `acct_next` is the end of the accounting
    /// period ([`Acct::next`]).
    pub fn schedule(
        &mut self,
        now: u64,
        yield_current: bool,
        preempt: bool,
        acct_next: u64,
        steal: &mut dyn FnMut(Prio) -> Option<(VcpuSched, P)>,
    ) -> Decision {
        let started = self.since;
        self.burn(now);
        let cur = self.current;
        if let Some(c) = cur {
            let ran = now.saturating_sub(started);
            let (eligible, runnable) = self.s(c).map_or((false, false), |s| (s.eligible(), s.runnable));
            if preempt && !yield_current && eligible && ran < RATELIMIT_NS {
                self.since = self.since.max(now);
                return Decision { next: Some(c), until: now + (RATELIMIT_NS - ran) };
            }
            self.current = None;
            if yield_current {
                // A vCPU that yields asks for nothing urgent: it gives up a boost, so that
                // a peer of its credit runs before it (a boosted yielder would otherwise
                // be picked again until the next tick).
                if let Some(s) = self.s_mut(c) {
                    if s.prio == Prio::Boost {
                        s.prio = Prio::Under;
                    }
                }
            }
            if eligible || runnable {
                self.enqueue(c);
            }
        }
        // Local best; then steal UNDER/BOOST work if the local choice is worse (any work
        // when there is none here).
        let mut next = self.take_best(Prio::Over);
        let local_prio = next.and_then(|v| self.prio(v)).unwrap_or(Prio::Idle);
        if local_prio < Prio::Under {
            let min = if next.is_none() { Prio::Over } else { Prio::Under };
            if let Some((s, p)) = steal(min) {
                if let Some(n) = next.take() {
                    self.enqueue(n);
                }
                let id = s.id;
                self.owned.push((s, p));
                next = Some(id);
            }
        }
        // A yielding vCPU that is the only candidate runs again.
        if next.is_none() && yield_current {
            let here = 1u64.checked_shl(self.cpu as u32).unwrap_or(0);
            if let Some(c) = cur.filter(|&c| self.s(c).is_some_and(|s| s.eligible() && s.affinity & here != 0)) {
                next = self.take_best(Prio::Over).or_else(|| {
                    self.dequeue(c);
                    Some(c)
                });
            }
        }
        self.current = next;
        self.since = self.since.max(now);
        let until = (now + TSLICE_NS).min(acct_next.max(now + RATELIMIT_NS));
        Decision { next, until }
    }

    /// The periodic tick: a running BOOST vCPU drops to UNDER/OVER.
    pub fn tick(&mut self, now: u64) {
        self.burn(now);
        if let Some(v) = self.current {
            if let Some(vc) = self.s_mut(v) {
                if vc.prio == Prio::Boost {
                    vc.prio = if vc.credit > 0 { Prio::Under } else { Prio::Over };
                }
            }
        }
    }

    /// Run time of `v` not charged yet at `now` (it is the running vCPU).
    fn unbilled(&self, v: VcpuId, now: u64) -> u64 {
        unbilled(self.current, self.since, v, now)
    }

    /// First visit of a share-out: adds the weights of this queue's active vCPUs.
    pub fn weigh(&self, out: &mut Shareout) {
        for (v, _) in &self.owned {
            if v.takes_part(self.unbilled(v.id, out.now)) {
                out.weight_total += v.dom.weight() as u64;
            }
        }
    }

    /// Second visit: each active vCPU gets its part of `out.periods` periods, and each
    /// domain's cap budget is refilled (once).
    pub fn share(&mut self, out: &Shareout) {
        let (current, since) = (self.current, self.since);
        for (v, _) in self.owned.iter_mut() {
            v.dom.refill_for(out.period);
            if !v.takes_part(unbilled(current, since, v.id, out.now)) || out.weight_total == 0 {
                continue;
            }
            let share = out.total_ns as i128 * v.dom.weight() as i128 / out.weight_total as i128;
            for _ in 0..out.periods.min(2) {
                v.credit = (v.credit + share as i64).clamp(-(TSLICE_NS as i64), TSLICE_NS as i64);
            }
            if v.prio != Prio::Boost {
                v.prio = if v.credit > 0 { Prio::Under } else { Prio::Over };
            }
            // As in Xen: a vCPU leaves the share-out only once its credit is full (it is
            // not using its share); running again makes it active.
            if v.credit >= TSLICE_NS as i64 && !v.runnable {
                v.active = false;
            }
        }
    }
}

/// Every CPU's queue in one structure, as the tests' simulator drives them (the hypervisor
/// locks each queue instead, and steals with a try-lock).
#[cfg(test)]
#[derive(Debug)]
pub struct Credit {
    rqs: Vec<RunQueue<()>>,
    doms: Vec<Arc<DomSched>>,
    acct: Acct,
    /// Per vCPU: the CPU whose queue owns it.
    home: Vec<usize>,
}

#[cfg(test)]
impl Credit {
    pub fn new(nr_cpus: usize) -> Credit {
        Credit { rqs: (0..nr_cpus).map(RunQueue::new).collect(), doms: Vec::new(), acct: Acct::new(), home: Vec::new() }
    }

    /// Adds a domain; `cap` is a percentage of one CPU (0 = none).
    pub fn add_domain(&mut self, weight: u32, cap: u32) -> usize {
        self.doms.push(DomSched::new(weight, cap));
        self.doms.len() - 1
    }

    pub fn set_params(&mut self, dom: usize, weight: u32, cap: u32) {
        if let Some(d) = self.doms.get(dom) {
            d.set_params(weight, cap);
        }
    }

    /// Adds a blocked vCPU of `dom` that may run on the CPUs in `affinity` (bit mask).
    pub fn add_vcpu(&mut self, dom: usize, affinity: u64) -> VcpuId {
        let id = self.home.len();
        let s = VcpuSched::new(id, self.doms[dom].clone(), affinity, self.rqs.len());
        let cpu = s.first_cpu();
        self.rqs[cpu].adopt(s, ());
        self.home.push(cpu);
        id
    }

    pub fn current(&self, cpu: usize) -> Option<VcpuId> {
        self.rqs[cpu].current()
    }

    pub fn prio(&self, v: VcpuId) -> Prio {
        self.rqs[self.home[v]].prio(v).unwrap_or(Prio::Idle)
    }

    pub fn credit(&self, v: VcpuId) -> i64 {
        self.rqs[self.home[v]].credit(v).unwrap_or(0)
    }

    /// A vCPU became runnable. Returns the CPU to reschedule now (a "tickle"): its own if it
    /// should preempt there, else an idle CPU of its affinity that will steal it.
    pub fn wake(&mut self, v: VcpuId, now: u64) -> Option<usize> {
        let h = self.home[v];
        if self.rqs[h].wake(v, now) {
            return Some(h);
        }
        let aff = self.rqs[h].queued_affinity(v)?;
        (0..self.rqs.len()).find(|&c| aff & (1 << c) != 0 && self.rqs[c].current().is_none())
    }

    pub fn unpick(&mut self, cpu: usize, v: VcpuId) {
        self.rqs[cpu].unpick(v)
    }

    pub fn block(&mut self, cpu: usize, now: u64) {
        self.rqs[cpu].block(now)
    }

    pub fn sleep(&mut self, v: VcpuId) {
        let h = self.home[v];
        self.rqs[h].sleep(v)
    }

    /// Runs the share-out of the periods that ended by `now`, if any.
    fn account_if_due(&mut self, now: u64) {
        let (periods, period) = self.acct.claim(now);
        if periods == 0 {
            return;
        }
        let mut out = Shareout { total_ns: TSLICE_NS * self.rqs.len() as u64, period, periods, weight_total: 0, now };
        for rq in &self.rqs {
            rq.weigh(&mut out);
        }
        for rq in self.rqs.iter_mut() {
            rq.share(&out);
        }
    }

    pub fn schedule(&mut self, cpu: usize, now: u64, yield_current: bool, preempt: bool) -> Decision {
        self.account_if_due(now);
        let mut mine = core::mem::replace(&mut self.rqs[cpu], RunQueue::new(cpu));
        let acct_next = self.acct.next();
        let (rqs, home) = (&mut self.rqs, &mut self.home);
        let d = mine.schedule(now, yield_current, preempt, acct_next, &mut |min| {
            for other in (0..rqs.len()).filter(|&o| o != cpu) {
                if let Some((s, p)) = rqs[other].take_for(cpu, min) {
                    home[s.id()] = cpu;
                    return Some((s, p));
                }
            }
            None
        });
        self.rqs[cpu] = mine;
        d
    }

    pub fn tick(&mut self, cpu: usize, now: u64) {
        self.rqs[cpu].tick(now);
        self.account_if_due(now);
    }

    /// The structure's invariants (for the tests): every vCPU is owned by exactly the queue
    /// its home names; a queue's run queue holds exactly its queued vCPUs, once each; a
    /// running vCPU is not queued.
    pub fn check(&self) -> Result<(), alloc::string::String> {
        use alloc::format;
        for (v, &h) in self.home.iter().enumerate() {
            let owners: Vec<usize> = (0..self.rqs.len()).filter(|&c| self.rqs[c].owns(v)).collect();
            if owners != [h] {
                return Err(format!("vCPU {v}: home {h}, owned by {owners:?}"));
            }
        }
        for rq in &self.rqs {
            for (s, _) in &rq.owned {
                let n = rq.runq.iter().filter(|&&q| q == s.id).count();
                if n != usize::from(s.queued) {
                    return Err(format!("CPU {}: vCPU {} queued {} but {} times in the queue", rq.cpu, s.id, s.queued, n));
                }
            }
            if rq.runq.iter().any(|&q| !rq.owns(q)) {
                return Err(format!("CPU {}: queues a vCPU it does not own", rq.cpu));
            }
            if let Some(c) = rq.current {
                if !rq.owns(c) || rq.s(c).is_some_and(|s| s.queued) {
                    return Err(format!("CPU {}: runs vCPU {c}, not owned or also queued", rq.cpu));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
pub mod sim {
    //! A deterministic discrete-event simulator of CPUs running vCPUs with simple behaviours.
    use super::*;
    use std::vec;

    #[derive(Copy, Clone, Debug)]
    pub enum Behaviour {
        /// Always runnable.
        Hog,
        /// Runs `run` ns, then sleeps `sleep` ns.
        Io { run: u64, sleep: u64 },
        /// The yield-before-tick attacker: runs until `margin` ns before each tick, sleeps
        /// across the tick and wakes `margin` ns after it (so a tick-sampling scheduler would
        /// never see it running, and would boost it on every wake).
        TickDodger { margin: u64 },
    }

    pub struct Sim {
        pub s: Credit,
        pub beh: Vec<Behaviour>,
        pub ran: Vec<u64>,
        /// Per vCPU: when it woke (for latency), worst wake→run latency, last run start.
        woke_at: Vec<Option<u64>>,
        pub worst_latency: Vec<u64>,
        pub last_ran: Vec<u64>,
        pub max_gap: Vec<u64>,
        /// Per vCPU: remaining run time of the current burst (Io), wake time if asleep.
        burst_left: Vec<u64>,
        wake_at: Vec<Option<u64>>,
        cpu_until: Vec<u64>,
        cpu_tick: Vec<u64>,
        pub now: u64,
        /// Latencies and gaps are recorded from this time on (after start-up, when every
        /// vCPU wakes at once).
        pub record_from: u64,
    }

    impl Sim {
        pub fn new(cpus: usize) -> Sim {
            Sim {
                s: Credit::new(cpus),
                beh: vec![],
                ran: vec![],
                woke_at: vec![],
                worst_latency: vec![],
                last_ran: vec![],
                max_gap: vec![],
                burst_left: vec![],
                wake_at: vec![],
                cpu_until: vec![0; cpus],
                cpu_tick: vec![TICK_NS; cpus],
                now: 0,
                record_from: 0,
            }
        }

        pub fn vcpu(&mut self, dom: usize, b: Behaviour) -> VcpuId {
            let v = self.s.add_vcpu(dom, u64::MAX);
            self.beh.push(b);
            self.ran.push(0);
            self.woke_at.push(None);
            self.worst_latency.push(0);
            self.last_ran.push(0);
            self.max_gap.push(0);
            self.burst_left.push(match b {
                Behaviour::Io { run, .. } => run,
                _ => 0,
            });
            self.wake_at.push(Some(0));
            v
        }

        fn reschedule(&mut self, cpu: usize, yield_: bool, preempt: bool) {
            let before = self.s.current(cpu);
            let d = self.s.schedule(cpu, self.now, yield_, preempt);
            self.cpu_until[cpu] = d.until;
            if let Some(v) = d.next {
                if before != Some(v) {
                    let w = self.woke_at[v].take();
                    if self.now >= self.record_from {
                        if let Some(w) = w {
                            self.worst_latency[v] = self.worst_latency[v].max(self.now - w);
                        }
                        self.max_gap[v] = self.max_gap[v].max(self.now - self.last_ran[v]);
                    }
                }
            }
        }

        /// When the running vCPU `v` next does something by itself (blocks or yields).
        fn own_event(&self, v: VcpuId) -> u64 {
            match self.beh[v] {
                Behaviour::Hog => u64::MAX,
                Behaviour::Io { .. } => self.now + self.burst_left[v],
                Behaviour::TickDodger { margin } => {
                    let next_tick = (self.now / TICK_NS + 1) * TICK_NS;
                    if next_tick - self.now >= margin { next_tick - margin } else { next_tick + TICK_NS - margin }
                }
            }
        }

        pub fn run(&mut self, until: u64) {
            let n = self.cpu_until.len();
            while self.now < until {
                // Next event: a CPU's slice end or tick, a sleeper's wake-up, a running
                // vCPU's own action.
                let mut t = until;
                for c in 0..n {
                    t = t.min(self.cpu_until[c]).min(self.cpu_tick[c]);
                    if let Some(v) = self.s.current(c) {
                        t = t.min(self.own_event(v));
                    }
                }
                for w in self.wake_at.iter().flatten() {
                    t = t.min(*w);
                }
                let t = t.max(self.now);
                // Account run time.
                for c in 0..n {
                    if let Some(v) = self.s.current(c) {
                        self.ran[v] += t - self.now;
                        self.last_ran[v] = t;
                        if let Behaviour::Io { .. } = self.beh[v] {
                            self.burst_left[v] = self.burst_left[v].saturating_sub(t - self.now);
                        }
                    }
                }
                self.now = t;
                // Wake-ups.
                for v in 0..self.wake_at.len() {
                    if self.wake_at[v].is_some_and(|w| w <= t) {
                        self.wake_at[v] = None;
                        self.woke_at[v] = Some(t);
                        if let Some(c) = self.s.wake(v, t) {
                            let idle = self.s.current(c).is_none();
                            self.reschedule(c, false, !idle);
                        }
                    }
                }
                for c in 0..n {
                    if let Some(v) = self.s.current(c) {
                        if self.own_event(v) <= t {
                            match self.beh[v] {
                                Behaviour::Io { run, sleep } => {
                                    self.burst_left[v] = run;
                                    self.wake_at[v] = Some(t + sleep);
                                    self.s.block(c, t);
                                    self.reschedule(c, false, false);
                                }
                                Behaviour::TickDodger { margin } => {
                                    let next_tick = (t / TICK_NS + 1) * TICK_NS;
                                    self.wake_at[v] = Some(next_tick + margin);
                                    self.s.block(c, t);
                                    self.reschedule(c, false, false);
                                }
                                Behaviour::Hog => {}
                            }
                        }
                    }
                    if self.cpu_tick[c] <= t {
                        self.cpu_tick[c] += TICK_NS;
                        self.s.tick(c, t);
                    }
                    if self.cpu_until[c] <= t || self.s.current(c).is_none() {
                        self.reschedule(c, false, false);
                    }
                }
            }
        }
    }
}

/// The time vCPU `v` ran on a queue whose current vCPU is `current` since `since`, not yet
/// billed at `now`.
fn unbilled(current: Option<VcpuId>, since: u64, v: VcpuId, now: u64) -> u64 {
    if current == Some(v) {
        now.saturating_sub(since)
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use std::vec;
    use std::vec::Vec;
    use super::sim::{Behaviour::*, Sim};
    use super::*;

    const SEC: u64 = 1_000_000_000;

    fn share(s: &Sim, v: VcpuId, total: u64) -> f64 {
        s.ran[v] as f64 / total as f64
    }

    #[test]
    fn weights_give_proportional_shares() {
        let mut s = Sim::new(1);
        let d: Vec<_> = [256, 512, 1024].iter().map(|&w| s.s.add_domain(w, 0)).collect();
        let v: Vec<_> = d.iter().map(|&d| s.vcpu(d, Hog)).collect();
        s.run(10 * SEC);
        for (i, want) in [1.0 / 7.0, 2.0 / 7.0, 4.0 / 7.0].iter().enumerate() {
            let got = share(&s, v[i], 10 * SEC);
            assert!((got - want).abs() < 0.02, "domain {i}: share {got:.4}, want {want:.4}");
        }
    }

    /// What `toolstack-build` measures: two hogs of weights 512 and 256 on one CPU beside
    /// a dom0 that wakes every 10 ms for a few microseconds (its periodic timer). The
    /// almost idle domain must not soak up a weight's worth of credit it never uses.
    #[test]
    fn weights_hold_beside_a_mostly_idle_domain() {
        let mut s = Sim::new(1);
        let idle = s.s.add_domain(256, 0);
        // Awake for 20 us of every 10 ms, so often just when a tick shares out.
        s.vcpu(idle, Io { run: 20_000, sleep: 9_980_000 });
        let a = s.s.add_domain(512, 0);
        let b = s.s.add_domain(256, 0);
        let (va, vb) = (s.vcpu(a, Hog), s.vcpu(b, Hog));
        s.run(10 * SEC);
        let (fa, fb) = (share(&s, va, 10 * SEC), share(&s, vb, 10 * SEC));
        assert!((fa / fb - 2.0).abs() < 0.2, "weights 512:256 gave {fa:.4} : {fb:.4}");
    }

    #[test]
    fn weights_hold_on_two_cpus_with_several_vcpus() {
        let mut s = Sim::new(2);
        let a = s.s.add_domain(256, 0);
        let b = s.s.add_domain(768, 0);
        let va: Vec<_> = (0..2).map(|_| s.vcpu(a, Hog)).collect();
        let vb: Vec<_> = (0..2).map(|_| s.vcpu(b, Hog)).collect();
        s.run(10 * SEC);
        let ta: u64 = va.iter().map(|&v| s.ran[v]).sum();
        let tb: u64 = vb.iter().map(|&v| s.ran[v]).sum();
        let fa = ta as f64 / (20 * SEC) as f64;
        assert!((fa - 0.25).abs() < 0.02, "domain a got {fa:.4} of two CPUs");
        assert!(((tb as f64 / (20 * SEC) as f64) - 0.75).abs() < 0.02);
    }

    /// A vCPU that blocks and is woken before its CPU switched away from it (a multicall's
    /// `VCPUOP_down` then `VCPUOP_up` on itself) stays that CPU's: another CPU never picks it.
    #[test]
    fn woken_before_switching_away_stays_on_its_cpu() {
        let mut c = Credit::new(2);
        let d = c.add_domain(256, 0);
        let v = c.add_vcpu(d, u64::MAX);
        c.wake(v, 0);
        assert_eq!(c.schedule(0, 0, false, false).next, Some(v));
        c.block(0, 10);
        assert_eq!(c.wake(v, 20), None, "no other CPU is tickled for it");
        assert_eq!(c.schedule(1, 30, false, false).next, None, "CPU 1 must not take CPU 0's vCPU");
        assert_eq!(c.schedule(0, 40, false, false).next, Some(v), "it goes on where it was");
        assert_eq!(c.current(1), None);
        // A choice a CPU could not take goes back to the queue: chosen again later.
        c.block(0, 50);
        let _ = c.schedule(0, 60, false, false);
        c.wake(v, 70);
        assert_eq!(c.schedule(0, 80, false, false).next, Some(v));
        c.unpick(0, v);
        assert_eq!(c.current(0), None);
        assert_eq!(c.schedule(0, 90, false, false).next, Some(v), "an unpicked vCPU is not lost");
    }

    #[test]
    fn a_vcpu_put_to_sleep_is_never_chosen_until_woken() {
        let mut c = Credit::new(2);
        let d = c.add_domain(256, 0);
        let (v0, v1, v2) = (c.add_vcpu(d, 1), c.add_vcpu(d, 1), c.add_vcpu(d, 1));
        for v in [v0, v1, v2] {
            c.wake(v, 0);
        }
        let first = c.schedule(0, 0, false, false).next.unwrap();
        // Sleep one queued vCPU and the running one (as VCPUOP_down / domain death do).
        let queued = [v0, v1, v2].into_iter().find(|&v| v != first).unwrap();
        c.sleep(queued);
        c.sleep(first);
        let mut t = 0;
        for _ in 0..100 {
            t += TICK_NS;
            c.tick(0, t);
            let n = c.schedule(0, t, false, false).next;
            assert!(n != Some(queued) && n != Some(first), "a sleeping vCPU ran");
            assert!(n.is_some(), "the runnable vCPU must run");
        }
        c.wake(queued, t);
        let mut seen = false;
        for _ in 0..10 {
            t += TICK_NS;
            seen |= c.schedule(0, t, true, false).next == Some(queued);
        }
        assert!(seen, "woken again, it runs");
    }

    #[test]
    fn cap_holds() {
        let mut s = Sim::new(1);
        let d = s.s.add_domain(256, 50);
        let v = s.vcpu(d, Hog);
        s.run(10 * SEC);
        let got = share(&s, v, 10 * SEC);
        assert!((got - 0.5).abs() < 0.02, "capped share {got:.4}");
    }

    #[test]
    fn yielding_before_the_tick_earns_nothing_extra() {
        let mut s = Sim::new(1);
        let a = s.s.add_domain(256, 0);
        let b = s.s.add_domain(256, 0);
        let dodger = s.vcpu(a, TickDodger { margin: 100_000 });
        let hog = s.vcpu(b, Hog);
        s.run(10 * SEC);
        let got = share(&s, dodger, 10 * SEC);
        assert!(got <= 0.52, "tick dodger got {got:.4}");
        assert!(share(&s, hog, 10 * SEC) >= 0.48);
    }

    #[test]
    fn woken_io_vcpu_runs_within_a_millisecond() {
        let mut s = Sim::new(2);
        let hogs = s.s.add_domain(256, 0);
        for _ in 0..8 {
            s.vcpu(hogs, Hog);
        }
        let io = s.s.add_domain(256, 0);
        let v = s.vcpu(io, Io { run: 200_000, sleep: 5_000_000 });
        s.record_from = SEC;
        s.run(5 * SEC);
        assert!(s.worst_latency[v] <= 1_000_000, "worst wake-to-run latency {} ns", s.worst_latency[v]);
        assert!(s.ran[v] > 0);
    }

    #[test]
    fn nobody_starves() {
        let mut s = Sim::new(2);
        let heavy = s.s.add_domain(65535, 0);
        let light = s.s.add_domain(1, 0);
        let mut all = vec![];
        for _ in 0..3 {
            all.push(s.vcpu(heavy, Hog));
            all.push(s.vcpu(light, Hog));
        }
        all.push(s.vcpu(light, Io { run: 1_000_000, sleep: 3_000_000 }));
        s.run(10 * SEC);
        for &v in &all {
            assert!(s.ran[v] > 0, "vCPU {v} never ran");
            assert!(s.max_gap[v] < 2 * SEC, "vCPU {v} waited {} ms", s.max_gap[v] / 1_000_000);
        }
    }

    /// Random wakes, blocks, sleeps, schedules (with and without yields, steals) and ticks on
    /// 1-4 CPUs keep the queues' structure sound, and every runnable vCPU is somewhere a CPU
    /// can find it (running or queued).
    #[test]
    fn random_operations_keep_the_queues_sound() {
        use proptest::prelude::*;
        proptest!(ProptestConfig::with_cases(256), |(cpus in 1usize..5, affs in proptest::collection::vec(any::<u64>(), 1..8),
            ops in proptest::collection::vec((0u8..6, any::<usize>(), any::<bool>()), 1..200))| {
            let mut c = Credit::new(cpus);
            let d = c.add_domain(256, 0);
            let e = c.add_domain(512, 30);
            let vs: Vec<_> = affs.iter().enumerate().map(|(i, &a)| c.add_vcpu(if i % 2 == 0 { d } else { e }, a)).collect();
            let mut now = 0;
            for (op, x, b) in ops {
                now += 700_000;
                let v = vs[x % vs.len()];
                let cpu = x % cpus;
                match op {
                    0 | 1 => { c.wake(v, now); }
                    2 => c.block(cpu, now),
                    3 => c.sleep(v),
                    4 => { c.schedule(cpu, now, b, !b); }
                    _ => c.tick(cpu, now),
                }
                prop_assert!(c.check().is_ok(), "{:?}", c.check());
            }
            // Nothing runnable is lost: every runnable vCPU runs or waits in a queue.
            for &v in &vs {
                let rq = &c.rqs[c.home[v]];
                let s = rq.s(v).unwrap();
                prop_assert!(!s.runnable || s.queued || rq.current == Some(v), "vCPU {} runnable but nowhere", v);
            }
        });
    }

    /// A CPU with nothing of its own steals queued work within the vCPU's affinity, and the
    /// payload moves with it.
    #[test]
    fn an_idle_cpu_steals_within_affinity() {
        let mut c = Credit::new(3);
        let d = c.add_domain(256, 0);
        let a = c.add_vcpu(d, 0b001);
        let b = c.add_vcpu(d, 0b011);
        c.wake(a, 0);
        assert_eq!(c.schedule(0, 0, false, false).next, Some(a));
        c.wake(b, 10);
        assert_eq!(c.schedule(2, 20, false, false).next, None, "CPU 2 is outside b's affinity");
        assert_eq!(c.schedule(1, 30, false, false).next, Some(b));
        assert_eq!(c.home[b], 1);
        c.check().unwrap();
    }

    #[test]
    fn a_lone_vcpu_gets_the_whole_cpu() {
        let mut s = Sim::new(1);
        let d = s.s.add_domain(256, 0);
        let v = s.vcpu(d, Hog);
        s.run(SEC);
        assert!(share(&s, v, SEC) > 0.999);
    }
}
