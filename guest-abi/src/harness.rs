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

/// The disk benchmark's passes (`cargo xtask bench --only disk`), the same for dom0 on its
/// disk and for the domU through PV block: (name, write, KiB per request, random places).
pub const DISK_BENCH: [(&str, bool, u64, bool); 5] = [
    ("seq_write_4k", true, 4, false),
    ("seq_read_4k", false, 4, false),
    ("seq_write_64k", true, 64, false),
    ("seq_read_64k", false, 64, false),
    ("rand_read_4k", false, 4, true),
];

/// The sector of request `i` of `sectors` sectors in a pass over `span` sectors: in order,
/// or at a place drawn from `seed` (xorshift) for a random pass.
pub fn disk_bench_sector(random: bool, seed: &mut u64, i: u64, sectors: u64, span: u64) -> u64 {
    if !random {
        return i * sectors;
    }
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    (*seed % (span / sectors).max(1)) * sectors
}

/// The seed of the random pass.
pub const DISK_BENCH_SEED: u64 = 0x2545_F491_4F6C_DD1D;

/// Byte `i` of the data the network tests move (the test guests, dom0's TCP sink and the
/// host's test server all make and check it), so every byte is checked where it lands.
pub fn net_pattern(i: u64) -> u8 {
    (i.wrapping_mul(7) ^ (i >> 10) ^ (i >> 19)) as u8
}

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

