//! dom0's executor: its services are tasks woken by event channels. The upcall only marks
//! a port ready; the loop runs the task of each ready port, and sleeps in `SCHEDOP_block`
//! when nothing is ready (never polling). A task that had to leave work (a XenStore ring
//! with more requests than one round takes) is run again before dom0 sleeps.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};
use guest_abi::evtchn::Port;
use pv_runtime::events;

/// What a port wakes.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Task {
    /// Serial input for the shell (`VIRQ_CONSOLE`).
    Shell,
    /// A domain shut down or died (`VIRQ_DOM_EXC`).
    DomainExit,
    /// A domain's XenStore ring.
    Store(u16),
    /// A domain's console ring.
    Console(u16),
    /// The virtio disk's interrupt.
    Disk,
    /// The virtio network device's interrupt.
    Net,
    /// A domain's block device ring (domain, virtual device number).
    Blk(u16, u32),
    /// A domain's network interface rings (domain, device number).
    Vif(u16, u32),
    /// dom0's timer (`VIRQ_TIMER`): its own IP interface's deadlines.
    Timer,
}

const WORDS: usize = 16;
static READY: [AtomicU64; WORDS] = [const { AtomicU64::new(0) }; WORDS];
static TASKS: spin::Mutex<BTreeMap<Port, Task>> = spin::Mutex::new(BTreeMap::new());

fn mark(port: Port) {
    if let Some(w) = READY.get(port as usize / 64) {
        w.fetch_or(1 << (port % 64), Ordering::SeqCst);
    }
}

fn any_ready() -> bool {
    READY.iter().any(|w| w.load(Ordering::SeqCst) != 0)
}

/// Port `port` wakes `task` from now on (its events mark it ready); false for a port past
/// the ones the executor tracks.
#[must_use]
pub fn register(port: Port, task: Task) -> bool {
    if port as usize >= WORDS * 64 {
        return false;
    }
    TASKS.lock().insert(port, task);
    true
}

pub fn unregister(port: Port) {
    TASKS.lock().remove(&port);
}

/// Takes `port`'s readiness: was it marked since the last take?
pub fn take(port: Port) -> bool {
    READY.get(port as usize / 64).is_some_and(|w| w.fetch_and(!(1 << (port % 64)), Ordering::SeqCst) & (1 << (port % 64)) != 0)
}

/// Is `port` marked ready?
pub fn is_ready(port: Port) -> bool {
    READY.get(port as usize / 64).is_some_and(|w| w.load(Ordering::SeqCst) & (1 << (port % 64)) != 0)
}

/// Takes the upcall (events enabled by the caller once the first ports are registered).
pub fn init() {
    events::set_handler(mark);
}

/// Runs the tasks forever; `run(task)` is one run of a task, true if it left work.
pub fn run(mut run: impl FnMut(Task) -> bool) -> ! {
    let mut again: Vec<Task> = Vec::new();
    loop {
        let mut ready: Vec<Task> = core::mem::take(&mut again);
        for (w, word) in READY.iter().enumerate() {
            let mut bits = word.swap(0, Ordering::SeqCst);
            while bits != 0 {
                let port = (w * 64) as u32 + bits.trailing_zeros();
                bits &= bits - 1;
                if let Some(&t) = TASKS.lock().get(&port) {
                    if !ready.contains(&t) {
                        ready.push(t);
                    }
                }
            }
        }
        for t in ready {
            if run(t) && !again.contains(&t) {
                again.push(t);
            }
        }
        if again.is_empty() {
            events::block_until(any_ready);
        }
    }
}
