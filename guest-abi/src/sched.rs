//! `sched_op` commands and shutdown reasons (`public/sched.h`).

pub const SCHEDOP_YIELD: u64 = 0;
pub const SCHEDOP_BLOCK: u64 = 1;
pub const SCHEDOP_SHUTDOWN: u64 = 2;
pub const SCHEDOP_POLL: u64 = 3;
pub const SCHEDOP_REMOTE_SHUTDOWN: u64 = 4;
pub const SCHEDOP_SHUTDOWN_CODE: u64 = 5;
pub const SCHEDOP_WATCHDOG: u64 = 6;

/// Why a domain shut down.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ShutdownReason {
    Poweroff = 0,
    Reboot = 1,
    Suspend = 2,
    Crash = 3,
    Watchdog = 4,
    SoftReset = 5,
}

impl ShutdownReason {
    /// Decodes a guest-supplied reason.
    pub fn from_u32(v: u32) -> Option<Self> {
        use ShutdownReason::*;
        [Poweroff, Reboot, Suspend, Crash, Watchdog, SoftReset].into_iter().find(|r| *r as u32 == v)
    }

    /// Xen's name for the reason.
    pub fn name(self) -> &'static str {
        match self {
            ShutdownReason::Poweroff => "poweroff",
            ShutdownReason::Reboot => "reboot",
            ShutdownReason::Suspend => "suspend",
            ShutdownReason::Crash => "crash",
            ShutdownReason::Watchdog => "watchdog",
            ShutdownReason::SoftReset => "soft_reset",
        }
    }
}

/// `struct sched_shutdown`.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default)]
pub struct SchedShutdown {
    pub reason: u32,
}

const _: () = assert!(core::mem::size_of::<SchedShutdown>() == 4);
