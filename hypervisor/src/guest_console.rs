//! An unprivileged domain's console state (its behaviour is `hypercall::console`).

use hv_core::ratelimit::TokenBucket;

/// An unprivileged domain's console: the line being gathered, its rate limit, what was
/// dropped (and when the hypervisor last said so).
#[derive(Debug)]
pub struct GuestConsole {
    pub line: [u8; DOMU_LINE + 1],
    pub len: usize,
    pub bucket: TokenBucket,
    pub dropped: u64,
    pub noted: Option<u64>,
}

impl Default for GuestConsole {
    fn default() -> GuestConsole {
        GuestConsole { line: [0; DOMU_LINE + 1], len: 0, bucket: TokenBucket::new(DOMU_BURST, DOMU_RATE), dropped: 0, noted: None }
    }
}

/// A domU's console burst and sustained rate (bytes that reach the UART, bytes per second).
pub const DOMU_BURST: u64 = 4096;

pub const DOMU_RATE: u64 = 4096;

/// Longest line a domU's output is gathered into before it goes out.
pub const DOMU_LINE: usize = 128;
