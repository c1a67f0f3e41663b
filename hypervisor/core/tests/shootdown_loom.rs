//! Model checking of the TLB-shootdown handshake (`hv_core::shootdown`) with loom: every
//! interleaving of an initiator and a target CPU (and of two initiators) is explored.
//! Run with `RUSTFLAGS="--cfg loom" cargo test -p hv-core --release --test shootdown_loom`
//! (`cargo xtask test` does).
//!
//! The model: the target's TLB is a flag `stale[i]` set when initiator `i` changes the tables
//! (before it asks for the flush) and cleared by the target's flush. The flush IPI is a
//! pending flag the target takes at guest instruction boundaries (interrupts are off in the
//! hypervisor). Safety: once an initiator's shootdown has returned, the target never runs a
//! guest instruction with a translation that initiator removed. Progress: once the target
//! has taken every IPI sent to it, every initiator's wait is over. (Spins are bounded so
//! that the model stays finite: an initiator that gives up waiting never counts as done,
//! which only weakens what the safety check sees.)
#![cfg(loom)]

use hv_core::shootdown::CpuFlags;
use loom::sync::atomic::{AtomicBool, Ordering::SeqCst};
use loom::sync::{Arc, Mutex};
use loom::thread;

struct World {
    target: CpuFlags,
    /// The target's TLB still holds a translation initiator `i` removed.
    stale: [AtomicBool; 2],
    /// Initiator `i`'s shootdown returned.
    done: [AtomicBool; 2],
    ipi: AtomicBool,
    /// The lock a target may spin on while a flush is owed (held by initiator 0).
    lock: Mutex<()>,
}

impl World {
    fn new() -> Arc<World> {
        let w = World {
            target: CpuFlags::new(),
            stale: [AtomicBool::new(false), AtomicBool::new(false)],
            done: [AtomicBool::new(false), AtomicBool::new(false)],
            ipi: AtomicBool::new(false),
            lock: Mutex::new(()),
        };
        // The target starts in guest context.
        w.target.before_resume(true, || {});
        Arc::new(w)
    }

    fn flush_tlb(&self) {
        for s in &self.stale {
            s.store(false, SeqCst);
        }
    }

    /// One guest instruction on the target: a pending flush IPI is taken first.
    fn guest_instruction(&self) {
        if self.ipi.swap(false, SeqCst) {
            self.target.on_flush_ipi(|| self.flush_tlb());
        }
        for i in 0..2 {
            if self.done[i].load(SeqCst) {
                assert!(!self.stale[i].load(SeqCst), "guest ran on a translation initiator {i} removed");
            }
        }
    }

    /// Initiator `i`: changes the tables, then shoots down the target's translations.
    fn shootdown(&self, i: usize) {
        self.stale[i].store(true, SeqCst);
        let (t, in_guest) = self.target.request();
        if in_guest {
            self.ipi.store(true, SeqCst);
            let mut waited = 0;
            while !self.target.flushed_or_left(t) {
                waited += 1;
                if waited == SPINS {
                    return;
                }
                thread::yield_now();
            }
        }
        self.done[i].store(true, SeqCst);
    }
}

/// The target: guest code, an entry that spins on the lock, the return to the guest (with
/// `resume`, the protocol's step or a broken one), then guest code until the `n` initiators
/// are done (a CPU in guest context keeps running it and keeps taking interrupts).
fn target(w: &World, resume: fn(&CpuFlags, &dyn Fn()), n: usize) {
    w.guest_instruction();
    w.target.left_guest();
    {
        let _g = w.lock.lock().unwrap();
    }
    resume(&w.target, &|| w.flush_tlb());
    for _ in 0..SPINS {
        w.guest_instruction();
        if w.done[..n].iter().all(|d| d.load(SeqCst)) {
            break;
        }
        thread::yield_now();
    }
}

/// Bound on every spin of the model.
const SPINS: usize = 3;

/// Every interleaving up to a preemption bound (the handshake's races need at most two).
fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(3);
    b.check(f);
}

fn good_resume(f: &CpuFlags, flush: &dyn Fn()) {
    f.before_resume(true, flush)
}

#[test]
fn one_initiator_holding_the_lock_the_target_spins_on() {
    model(|| {
        let w = World::new();
        let w2 = w.clone();
        let t = thread::spawn(move || target(&w2, good_resume, 1));
        {
            let _g = w.lock.lock().unwrap();
            w.shootdown(0);
        }
        t.join().unwrap();
    });
}

#[test]
fn one_initiator_without_a_lock() {
    model(|| {
        let w = World::new();
        let w2 = w.clone();
        let t = thread::spawn(move || target(&w2, good_resume, 1));
        w.shootdown(0);
        t.join().unwrap();
    });
}

#[test]
fn two_initiators_at_once() {
    model(|| {
        let w = World::new();
        let (w1, w2) = (w.clone(), w.clone());
        let a = thread::spawn(move || w1.shootdown(1));
        let t = thread::spawn(move || target(&w2, good_resume, 2));
        w.shootdown(0);
        a.join().unwrap();
        t.join().unwrap();
    });
}

/// The checker does find the bug the order in `before_resume` prevents: taking the flush
/// before announcing the guest lets an initiator see neither and go on while the target
/// resumes with the stale translation.
#[test]
#[should_panic(expected = "guest ran on a translation")]
fn checking_for_a_flush_before_announcing_the_guest_is_caught() {
    model(|| {
        let w = World::new();
        let w2 = w.clone();
        let t = thread::spawn(move || target(&w2, |f, flush| f.before_resume_wrong_order(true, flush), 1));
        w.shootdown(0);
        t.join().unwrap();
    });
}
