//! The scheduler's shared state: one run queue per CPU, each under its own lock, owning
//! the vCPUs that queue there (their scheduling state, runstate and saved context: a
//! `vcpu::Slot` each), the idle CPUs' mask, and the accounting period. Nothing else is
//! shared between CPUs here: what belongs to one CPU is its `percpu::PerCpu`, what a
//! domain's vCPUs reach is its `domain::DomShared`.

use crate::domain::DomShared;
use crate::vcpu::Slot;
use crate::{locks, percpu};
use core::sync::atomic::{AtomicU64, Ordering};
use guest_abi::harness::ExitCode;
use hv_core::acpi::MAX_CPUS;
use hv_core::sched::{Acct, RunQueue};

/// A CPU's run queue, as the hypervisor keeps it.
pub type Rq = RunQueue<Slot>;

/// Every CPU's run queue. A ticket lock each: a CPU reschedules under its own; a wake-up,
/// a `VCPUOP_up`/`down` or a sleeper check takes the lock of the queue owning the vCPU
/// ([`with_owner`]); a CPU that steals holds its own and try-locks the other's.
static RQS: [crate::line::Line<spin::mutex::TicketMutex<Rq>>; MAX_CPUS] =
    [const { crate::line::Line(spin::mutex::TicketMutex::new(RunQueue::new(0))) }; MAX_CPUS];

/// CPUs that run nothing (a bit each): a wake-up that queues a vCPU pokes one of them in its
/// affinity, which then steals it.
static IDLE: AtomicU64 = AtomicU64::new(0);

/// The credit accounting period (an atomic deadline: no lock).
pub static ACCT: Acct = Acct::new();

pub type RqGuard = locks::Ordered<spin::mutex::TicketMutexGuard<'static, Rq>>;

/// Sets up CPU `k`'s queue (at boot, before any CPU schedules).
pub fn init_queue(k: usize) {
    *lock(k) = RunQueue::new(k);
}

/// Takes CPU `k`'s run-queue lock.
pub fn lock(k: usize) -> RqGuard {
    locks::Ordered::new(locks::Level::RunQueue, || RQS[k % MAX_CPUS].lock())
}

/// Takes CPU `k`'s run-queue lock if it is free, while holding this CPU's own (a steal).
pub fn try_lock_other(k: usize) -> Option<locks::Ordered<spin::mutex::TicketMutexGuard<'static, Rq>>> {
    locks::Ordered::try_new(locks::Level::RunQueue2, || RQS[k % MAX_CPUS].try_lock())
}

/// Runs `f` on the run queue owning vCPU `v` of `d`, with its lock held (the owner may
/// change until the lock is held: looked up again then). `None` for no such vCPU.
pub fn with_owner<R>(d: &DomShared, v: u32, f: impl FnOnce(&mut Rq) -> R) -> Option<R> {
    let owner = d.owner.get(v as usize)?;
    let id = crate::vcpu::sched_id(d.id, v);
    // A vCPU moves only to the stealing CPU, under both locks: a few tries at most.
    loop {
        let k = owner.load(Ordering::Acquire);
        let mut rq = lock(k);
        if rq.owns(id) {
            return Some(f(&mut rq));
        }
        if owner.load(Ordering::Acquire) == k {
            // Owned by no queue: never the case for a vCPU of a built domain.
            return None;
        }
    }
}

/// Records whether CPU `k` runs nothing (only CPU `k` itself calls this), and accounts the
/// time it spends so (`sysctl getcpuinfo`).
pub fn set_idle(k: usize, idle: bool) {
    let bit = 1u64 << (k % 64);
    let was = IDLE.load(Ordering::Relaxed) & bit != 0;
    if idle == was {
        return;
    }
    let t = &IDLE_TIME[k % MAX_CPUS].0;
    let now = crate::events::now();
    // A sequence count makes the two words one reading for `idle_ns` (a single writer).
    t.seq.fetch_add(1, Ordering::AcqRel);
    if idle {
        t.since.store(now, Ordering::Release);
        IDLE.fetch_or(bit, Ordering::SeqCst);
    } else {
        let since = t.since.load(Ordering::Acquire);
        t.total.fetch_add(now.saturating_sub(since), Ordering::AcqRel);
        IDLE.fetch_and(!bit, Ordering::SeqCst);
    }
    t.seq.fetch_add(1, Ordering::AcqRel);
}

/// A CPU's idle time: the sum of its finished idle stretches and when the current one (if
/// it idles) began; `seq` is odd while CPU k changes them.
struct IdleTime {
    seq: AtomicU64,
    total: AtomicU64,
    since: AtomicU64,
}

static IDLE_TIME: [crate::line::Line<IdleTime>; MAX_CPUS] =
    [const { crate::line::Line(IdleTime { seq: AtomicU64::new(0), total: AtomicU64::new(0), since: AtomicU64::new(0) }) }; MAX_CPUS];

/// Nanoseconds CPU `k` has spent with nothing to run since boot (its current idle stretch
/// included).
pub fn idle_ns(k: usize) -> u64 {
    let t = &IDLE_TIME[k % MAX_CPUS].0;
    loop {
        let s = t.seq.load(Ordering::Acquire);
        if s % 2 == 1 {
            core::hint::spin_loop();
            continue;
        }
        let (total, since) = (t.total.load(Ordering::Acquire), t.since.load(Ordering::Acquire));
        let idle = IDLE.load(Ordering::Acquire) & (1u64 << (k % 64)) != 0;
        if t.seq.load(Ordering::Acquire) == s {
            return total + if idle { crate::events::now().saturating_sub(since) } else { 0 };
        }
    }
}

/// An idle CPU in `affinity` other than `not`, if any.
pub fn idle_cpu_in(affinity: u64, not: usize) -> Option<usize> {
    let m = IDLE.load(Ordering::SeqCst) & affinity & !(1u64.checked_shl(not as u32).unwrap_or(0));
    (m != 0).then(|| m.trailing_zeros() as usize)
}

/// What an entry works with: this CPU's structure (the current vCPU in it). Every other
/// lock is taken where it is needed, in the order of `locks`.
pub struct Hv<'a> {
    pub pc: &'a mut percpu::PerCpu,
}

impl Hv<'_> {
    /// The current vCPU's domain.
    pub fn dom(&self) -> &DomShared {
        &self.pc.cur.shared
    }

    /// Ends the run: under QEMU with `debug-exit`, through isa-debug-exit with `code`.
    pub fn end_run(&self, why: &str, code: ExitCode) -> ! {
        crate::halt::end(why, code)
    }
}
