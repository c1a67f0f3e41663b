//! The contract between the hypervisor and the QEMU test harness.
//!
//! With the `debug-exit` boot option the hypervisor ends a QEMU run by writing one of these
//! values to the isa-debug-exit port; QEMU then exits with `(value << 1) | 1`. Value 0 is never
//! used: its exit status, 1, is QEMU's own error code.

/// I/O port of QEMU's isa-debug-exit device (`-device isa-debug-exit,iobase=0xf4,iosize=0x04`).
pub const DEBUG_EXIT_PORT: u16 = 0xF4;

/// Why the run ended.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ExitCode {
    /// dom0 shut down with `SHUTDOWN_poweroff`.
    Poweroff = 0x10,
    /// dom0 shut down with `SHUTDOWN_reboot`.
    Reboot = 0x11,
    /// dom0 shut down with `SHUTDOWN_suspend` (not supported for dom0: treated as an end).
    Suspend = 0x12,
    /// dom0 crashed: it asked for `SHUTDOWN_crash`, or the hypervisor crashed it.
    Crash = 0x13,
    /// dom0 shut down with `SHUTDOWN_watchdog` or `SHUTDOWN_soft_reset`.
    OtherShutdown = 0x14,
    /// The hypervisor refused to build dom0 (bad image, bad options) and halted cleanly.
    BootRefused = 0x15,
    /// The hypervisor itself panicked or took an unexpected exception.
    HypervisorPanic = 0x20,
}

impl ExitCode {
    /// QEMU's process exit status for this code.
    pub const fn qemu_status(self) -> i32 {
        ((self as i32) << 1) | 1
    }

    /// Decodes a QEMU exit status.
    pub fn from_qemu_status(status: i32) -> Option<ExitCode> {
        use ExitCode::*;
        [Poweroff, Reboot, Suspend, Crash, OtherShutdown, BootRefused, HypervisorPanic]
            .into_iter()
            .find(|c| c.qemu_status() == status)
    }
}

/// The XTF-style verdict a test guest prints as its last line: `Test result: <VERDICT>`.
pub const VERDICT_PREFIX: &str = "Test result: ";

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn codes_avoid_qemu_error_status() {
        assert_eq!(ExitCode::Poweroff.qemu_status(), 33);
        assert_eq!(ExitCode::from_qemu_status(33), Some(ExitCode::Poweroff));
        assert_eq!(ExitCode::from_qemu_status(1), None);
        assert_eq!(ExitCode::from_qemu_status(0), None);
    }
}
