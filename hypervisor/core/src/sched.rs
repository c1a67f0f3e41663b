//! The credit scheduler (Xen's credit1 semantics) as pure logic.
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
//! - Per-CPU run queues; an idle CPU (or one with only OVER work) steals UNDER/BOOST work
//!   from other CPUs, within each vCPU's hard affinity.
//! - A running vCPU keeps the CPU for at least the rate limit (1 ms) against a preemption.
//!
//! The arch layer supplies time (`now` in ns) and performs the context switches this
//! module decides on; a deterministic simulator drives it in the tests.

use alloc::collections::VecDeque;
use alloc::vec::Vec;

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

/// A vCPU's handle.
pub type VcpuId = usize;

#[derive(Clone, Debug)]
struct Vcpu {
    dom: usize,
    credit: i64,
    prio: Prio,
    runnable: bool,
    affinity: u64,
    cpu: usize,
    /// Takes part in the credit share-out (it used credit and has not saturated).
    active: bool,
    queued: bool,
}

#[derive(Clone, Debug)]
struct Dom {
    weight: u32,
    cap: u32,
    /// CPU time left under the cap in this period (may go negative: the debt carries over).
    cap_budget: i64,
    parked: bool,
}

#[derive(Clone, Debug, Default)]
struct Cpu {
    runq: VecDeque<VcpuId>,
    current: Option<VcpuId>,
    since: u64,
}

/// What a CPU should run next, and until when at the latest (absolute ns).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub next: Option<VcpuId>,
    pub until: u64,
}

/// The scheduler.
#[derive(Clone, Debug)]
pub struct Credit {
    vcpus: Vec<Vcpu>,
    doms: Vec<Dom>,
    cpus: Vec<Cpu>,
    next_acct: u64,
}

impl Credit {
    pub fn new(nr_cpus: usize) -> Credit {
        Credit { vcpus: Vec::new(), doms: Vec::new(), cpus: alloc::vec![Cpu::default(); nr_cpus], next_acct: TSLICE_NS }
    }

    /// Adds a domain; `cap` is a percentage of one CPU (0 = none).
    pub fn add_domain(&mut self, weight: u32, cap: u32) -> usize {
        self.doms.push(Dom { weight: weight.clamp(1, 65535), cap, cap_budget: 0, parked: false });
        let d = self.doms.len() - 1;
        self.refill_cap(d);
        d
    }

    /// Sets weight and cap (`sched-credit`).
    pub fn set_params(&mut self, dom: usize, weight: u32, cap: u32) {
        if let Some(d) = self.doms.get_mut(dom) {
            d.weight = weight.clamp(1, 65535);
            d.cap = cap;
        }
    }

    /// Adds a blocked vCPU of `dom` that may run on the CPUs in `affinity` (bit mask).
    pub fn add_vcpu(&mut self, dom: usize, affinity: u64) -> VcpuId {
        let mask = if self.cpus.len() >= 64 { u64::MAX } else { (1u64 << self.cpus.len()) - 1 };
        let affinity = if affinity & mask == 0 { mask } else { affinity & mask };
        let cpu = affinity.trailing_zeros() as usize;
        self.vcpus.push(Vcpu { dom, credit: 0, prio: Prio::Under, runnable: false, affinity, cpu, active: false, queued: false });
        self.vcpus.len() - 1
    }

    pub fn current(&self, cpu: usize) -> Option<VcpuId> {
        self.cpus[cpu].current
    }

    pub fn prio(&self, v: VcpuId) -> Prio {
        self.vcpus[v].prio
    }

    pub fn credit(&self, v: VcpuId) -> i64 {
        self.vcpus[v].credit
    }

    fn refill_cap(&mut self, d: usize) {
        let dom = &mut self.doms[d];
        if dom.cap == 0 {
            dom.parked = false;
            return;
        }
        let per_period = (TSLICE_NS * dom.cap as u64 / 100) as i64;
        dom.cap_budget = dom.cap_budget.min(0) + per_period;
        dom.parked = dom.cap_budget <= 0;
    }

    fn eligible(&self, v: VcpuId) -> bool {
        self.vcpus[v].runnable && !self.doms[self.vcpus[v].dom].parked
    }

    fn enqueue(&mut self, v: VcpuId) {
        if self.vcpus[v].queued {
            return;
        }
        let cpu = self.vcpus[v].cpu;
        self.vcpus[v].queued = true;
        self.cpus[cpu].runq.push_back(v);
    }

    /// Charges the running vCPU of `cpu` for the time since it started or was last charged.
    fn burn(&mut self, cpu: usize, now: u64) {
        let c = &mut self.cpus[cpu];
        let ran = now.saturating_sub(c.since);
        c.since = now;
        if let Some(v) = c.current {
            let vc = &mut self.vcpus[v];
            vc.credit -= ran as i64;
            vc.active = true;
            let d = &mut self.doms[vc.dom];
            if d.cap != 0 {
                d.cap_budget -= ran as i64;
                if d.cap_budget <= 0 {
                    d.parked = true;
                }
            }
            // Out of credit means OVER, boosted or not: a vCPU that blocks before every tick
            // must not keep the boost it woke with.
            if vc.credit <= 0 {
                vc.prio = Prio::Over;
            } else if vc.prio != Prio::Boost {
                vc.prio = Prio::Under;
            }
        }
    }

    /// A vCPU became runnable. Returns the CPU to reschedule now (a "tickle") if the vCPU
    /// should preempt what runs there.
    pub fn wake(&mut self, v: VcpuId, now: u64) -> Option<usize> {
        if self.vcpus[v].runnable {
            return None;
        }
        if self.cpus.iter().any(|c| c.current == Some(v)) {
            // Blocked or put to sleep but not switched away from yet (its CPU reschedules
            // soon): runnable again where it is, never queued for a second CPU.
            let vc = &mut self.vcpus[v];
            vc.runnable = true;
            vc.active = true;
            return None;
        }
        let vc = &mut self.vcpus[v];
        vc.runnable = true;
        vc.active = true;
        // As in Xen: an UNDER vCPU (credit left, or new) is boosted on wake.
        vc.prio = if vc.prio >= Prio::Under { Prio::Boost } else { Prio::Over };
        // Prefer an idle CPU in the affinity mask, else the last one.
        let aff = vc.affinity;
        if let Some(idle) = (0..self.cpus.len()).find(|&c| aff & (1 << c) != 0 && self.cpus[c].current.is_none()) {
            self.vcpus[v].cpu = idle;
        }
        self.enqueue(v);
        let cpu = self.vcpus[v].cpu;
        match self.cpus[cpu].current {
            None => Some(cpu),
            Some(cur) => {
                self.burn(cpu, now);
                (self.vcpus[v].prio > self.vcpus[cur].prio).then_some(cpu)
            }
        }
    }

    /// `cpu` could not run `v`, the vCPU [`Credit::schedule`] chose for it (its context was
    /// not to be had): it runs nothing now, and `v`, if still runnable, is queued again.
    pub fn unpick(&mut self, cpu: usize, v: VcpuId) {
        if self.cpus[cpu].current == Some(v) {
            self.cpus[cpu].current = None;
        }
        if self.vcpus[v].runnable {
            self.enqueue(v);
        }
    }

    /// The running vCPU of `cpu` blocks (it is no longer runnable).
    pub fn block(&mut self, cpu: usize, now: u64) {
        self.burn(cpu, now);
        if let Some(v) = self.cpus[cpu].current {
            let vc = &mut self.vcpus[v];
            vc.runnable = false;
            // A boost lasts until the vCPU stops running.
            if vc.prio == Prio::Boost {
                vc.prio = Prio::Under;
            }
        }
    }

    /// A vCPU stops being runnable wherever it is (taken down, or its domain died): off its
    /// run queue; a CPU running it must call [`Credit::schedule`] soon (the caller asks it).
    pub fn sleep(&mut self, v: VcpuId) {
        let vc = &mut self.vcpus[v];
        vc.runnable = false;
        if vc.prio == Prio::Boost {
            vc.prio = Prio::Under;
        }
        if vc.queued {
            vc.queued = false;
            for c in self.cpus.iter_mut() {
                c.runq.retain(|&q| q != v);
            }
        }
    }

    /// Picks the best eligible vCPU from `cpu`'s queue (removing it), by priority then FIFO.
    fn take_best(&mut self, cpu: usize, min: Prio, for_cpu: usize) -> Option<VcpuId> {
        let mut best: Option<(usize, Prio)> = None;
        for (i, &v) in self.cpus[cpu].runq.iter().enumerate() {
            if !self.eligible(v) || self.vcpus[v].affinity & (1 << for_cpu) == 0 {
                continue;
            }
            let p = self.vcpus[v].prio;
            if p >= min && best.is_none_or(|(_, bp)| p > bp) {
                best = Some((i, p));
            }
        }
        let (i, _) = best?;
        let v = self.cpus[cpu].runq.remove(i)?;
        self.vcpus[v].queued = false;
        Some(v)
    }

    /// Chooses what `cpu` runs from `now`. `yield_current` puts the running vCPU behind its
    /// peers; `preempt` is a tickle (subject to the rate limit).
    pub fn schedule(&mut self, cpu: usize, now: u64, yield_current: bool, preempt: bool) -> Decision {
        self.account_if_due(now);
        let started = self.cpus[cpu].since;
        self.burn(cpu, now);
        let cur = self.cpus[cpu].current;
        if let Some(c) = cur {
            let ran = now.saturating_sub(started);
            if preempt && !yield_current && self.eligible(c) && ran < RATELIMIT_NS {
                self.cpus[cpu].since = now;
                return Decision { next: Some(c), until: now + (RATELIMIT_NS - ran) };
            }
            self.cpus[cpu].current = None;
            if self.eligible(c) || self.vcpus[c].runnable {
                self.vcpus[c].cpu = cpu;
                self.enqueue(c);
            }
        }
        // Local best; then steal UNDER/BOOST work if the local choice is worse.
        let mut next = self.take_best(cpu, Prio::Over, cpu);
        let local_prio = next.map(|v| self.vcpus[v].prio).unwrap_or(Prio::Idle);
        if local_prio < Prio::Under {
            for other in (0..self.cpus.len()).filter(|&o| o != cpu) {
                if let Some(v) = self.take_best(other, Prio::Under, cpu) {
                    if let Some(n) = next.take() {
                        self.enqueue(n);
                    }
                    self.vcpus[v].cpu = cpu;
                    next = Some(v);
                    break;
                }
            }
        }
        // A yielding vCPU that is the only candidate runs again.
        if next.is_none() && yield_current {
            if let Some(c) = cur.filter(|&c| self.eligible(c)) {
                next = self.take_best(cpu, Prio::Over, cpu).or(Some(c));
            }
        }
        self.cpus[cpu].current = next;
        self.cpus[cpu].since = now;
        let until = (now + TSLICE_NS).min(self.next_acct.max(now + RATELIMIT_NS));
        Decision { next, until }
    }

    /// The periodic tick of `cpu`: a running BOOST vCPU drops to UNDER/OVER.
    pub fn tick(&mut self, cpu: usize, now: u64) {
        self.burn(cpu, now);
        if let Some(v) = self.cpus[cpu].current {
            let vc = &mut self.vcpus[v];
            if vc.prio == Prio::Boost {
                vc.prio = if vc.credit > 0 { Prio::Under } else { Prio::Over };
            }
        }
        self.account_if_due(now);
    }

    /// Shares out one period of credit if the period has ended.
    fn account_if_due(&mut self, now: u64) {
        while now >= self.next_acct {
            self.next_acct += TSLICE_NS;
            self.account();
        }
    }

    fn account(&mut self) {
        let total = (TSLICE_NS * self.cpus.len() as u64) as i64;
        let mut active_per_dom = alloc::vec![0u64; self.doms.len()];
        for v in &self.vcpus {
            if v.active || v.runnable {
                active_per_dom[v.dom] += 1;
            }
        }
        let weight_total: u64 = self.doms.iter().enumerate().map(|(d, dom)| dom.weight as u64 * active_per_dom[d]).sum();
        if weight_total > 0 {
            for v in self.vcpus.iter_mut() {
                if !(v.active || v.runnable) {
                    continue;
                }
                let share = total as i128 * self.doms[v.dom].weight as i128 / weight_total as i128;
                v.credit = (v.credit + share as i64).clamp(-(TSLICE_NS as i64), TSLICE_NS as i64);
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
        for d in 0..self.doms.len() {
            self.refill_cap(d);
        }
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

    #[test]
    fn a_lone_vcpu_gets_the_whole_cpu() {
        let mut s = Sim::new(1);
        let d = s.s.add_domain(256, 0);
        let v = s.vcpu(d, Hog);
        s.run(SEC);
        assert!(share(&s, v, SEC) > 0.999);
    }
}
