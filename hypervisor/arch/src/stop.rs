//! Stopping the other CPUs before the machine is switched off or reset (Xen's
//! `smp_send_stop`): an NMI to each CPU that came up, which halts it for good; once all
//! of them said so, the console's locks (which a stopped CPU may have held) are forced
//! free, so the last words reach COM1 and the screen.

use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

const MAX: usize = hv_core::acpi::MAX_CPUS;

/// APIC id + 1 of each CPU that came up (0: none), by CPU number.
static ONLINE: [AtomicU32; MAX] = [const { AtomicU32::new(0) }; MAX];
/// CPU number + 1 of the CPU stopping the others (0: none).
static STOPPER: AtomicUsize = AtomicUsize::new(0);
/// CPUs that took the stop NMI and halted.
static HALTED: AtomicUsize = AtomicUsize::new(0);

/// CPU `cpu` (APIC id `apic`) is up and may be sent the stop NMI.
pub fn mark_online(cpu: usize, apic: u32) {
    if let Some(s) = ONLINE.get(cpu) {
        s.store(apic.saturating_add(1), Ordering::SeqCst);
    }
}

/// Is a stop under way, started by another CPU than this one?
fn stopping_others() -> bool {
    let s = STOPPER.load(Ordering::SeqCst);
    s != 0 && s - 1 != crate::percpu::cpu_id()
}

/// From the NMI handler: if another CPU is stopping this one, says so and halts for good.
pub fn on_nmi() {
    if stopping_others() {
        HALTED.fetch_add(1, Ordering::SeqCst);
        crate::cpu::halt_forever()
    }
}

/// Stops every other CPU that came up: an NMI each (never the all-but-self shorthand, which
/// would also reach CPUs that never started and sit in the trampoline without an IDT),
/// then up to 100 ms for them to halt. When they all did, the console and screen locks are
/// forced free. Returns how many halted, of how many were sent the NMI; (0, 0) when a
/// stop was already under way (another CPU's: this one then halts at its NMI).
pub fn stop_others() -> (usize, usize) {
    let me = crate::percpu::cpu_id();
    if STOPPER.compare_exchange(0, me + 1, Ordering::SeqCst, Ordering::SeqCst).is_err() {
        return (0, 0);
    }
    let mut sent = 0;
    for (k, s) in ONLINE.iter().enumerate() {
        let a = s.load(Ordering::SeqCst);
        if k != me && a != 0 {
            crate::lapic::send_nmi(a - 1);
            sent += 1;
        }
    }
    let end = crate::time::tsc_after_us(100_000);
    while HALTED.load(Ordering::SeqCst) < sent && crate::cpu::rdtsc() < end {
        core::hint::spin_loop();
    }
    let halted = HALTED.load(Ordering::SeqCst);
    if halted == sent {
        // SAFETY: every other CPU that ever ran hypervisor code is halted for good (it took
        // the NMI and counted itself in `HALTED` on the way to `halt_forever`), and CPUs that
        // never came up never took these locks. A holder on this CPU is code that will not
        // resume (this path does not return to it). So nothing holds them any more.
        unsafe {
            crate::console::force_unlock();
            crate::screen::force_unlock();
        }
    }
    (halted, sent)
}
