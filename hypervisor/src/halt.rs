//! Ending the run: through isa-debug-exit under QEMU (the `debug-exit` option), else as
//! dom0 asked: ACPI poweroff, a reboot, or after a crash a reboot five seconds later
//! (`crate::power`).

use core::sync::atomic::{AtomicBool, Ordering};
use guest_abi::harness::ExitCode;
use hv_arch::cpu;

pub static DEBUG_EXIT: AtomicBool = AtomicBool::new(false);

pub fn end(why: &str, code: ExitCode) -> ! {
    // A guest system call through a direct gate never enters: with a DPL-0 gate `int 0x80`
    // from ring 3 would arrive as #GP, with a hypervisor DPL-3 gate as vector 0x80.
    let (total, gp, v80) = crate::shootdown::entries();
    log::info!("hypervisor entries from guests: total={} gp={} int80={}", total, gp, v80);
    for (gsi, n) in hv_core::irq::TAKEN.iter().enumerate() {
        let n = n.load(Ordering::Relaxed);
        if n != 0 {
            log::info!("device interrupts: GSI {}: {}", gsi, n);
        }
    }
    log::info!("{}: halting ({:?})", why, code);
    if DEBUG_EXIT.load(Ordering::Relaxed) {
        cpu::debug_exit(code);
    }
    match code {
        ExitCode::Poweroff => crate::power::poweroff(),
        ExitCode::Reboot => crate::power::reboot(),
        // dom0 cannot be suspended: the machine stays as it is.
        ExitCode::Suspend => cpu::halt_forever(),
        ExitCode::Crash | ExitCode::OtherShutdown | ExitCode::BootRefused | ExitCode::HypervisorPanic => crate::power::after_crash(),
    }
}

/// After a fatal hypervisor error.
pub fn panic_exit() -> ! {
    if DEBUG_EXIT.load(Ordering::Relaxed) {
        cpu::debug_exit(ExitCode::HypervisorPanic);
    }
    crate::power::after_crash()
}
