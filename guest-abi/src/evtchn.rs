//! Event channels (`public/event_channel.h`, VIRQ numbers from `public/xen.h`).

/// An event-channel port.
pub type Port = u32;

/// Ports of the 2-level ABI for 64-bit guests.
pub const NR_EVTCHN_2L: u32 = 4096;

pub const EVTCHNOP_BIND_INTERDOMAIN: u64 = 0;
pub const EVTCHNOP_BIND_VIRQ: u64 = 1;
pub const EVTCHNOP_BIND_PIRQ: u64 = 2;
pub const EVTCHNOP_CLOSE: u64 = 3;
pub const EVTCHNOP_SEND: u64 = 4;
pub const EVTCHNOP_STATUS: u64 = 5;
pub const EVTCHNOP_ALLOC_UNBOUND: u64 = 6;
pub const EVTCHNOP_BIND_IPI: u64 = 7;
pub const EVTCHNOP_BIND_VCPU: u64 = 8;
pub const EVTCHNOP_UNMASK: u64 = 9;
pub const EVTCHNOP_RESET: u64 = 10;

/// `EVTCHNSTAT_*` values reported by `status`.
pub const EVTCHNSTAT_CLOSED: u32 = 0;
pub const EVTCHNSTAT_UNBOUND: u32 = 1;
pub const EVTCHNSTAT_INTERDOMAIN: u32 = 2;
pub const EVTCHNSTAT_PIRQ: u32 = 3;
pub const EVTCHNSTAT_VIRQ: u32 = 4;
pub const EVTCHNSTAT_IPI: u32 = 5;

/// Virtual IRQs.
pub const VIRQ_TIMER: u32 = 0;
pub const VIRQ_DEBUG: u32 = 1;
pub const VIRQ_CONSOLE: u32 = 2;
pub const VIRQ_DOM_EXC: u32 = 3;
pub const NR_VIRQS: u32 = 24;

/// Is `virq` bound per vCPU (rather than per domain)?
pub const fn virq_is_per_vcpu(virq: u32) -> bool {
    matches!(virq, VIRQ_TIMER | VIRQ_DEBUG)
}

/// Is `virq` a global VIRQ (one domain at a time, bound on vCPU 0)?
pub const fn virq_is_global(virq: u32) -> bool {
    matches!(virq, VIRQ_CONSOLE | VIRQ_DOM_EXC) || (virq >= 4 && virq < 16 && virq != 11)
}

/// FIFO ABI (`public/event_channel.h`): register a vCPU's control block, add an event-array
/// page, set a port's priority.
pub const EVTCHNOP_INIT_CONTROL: u64 = 11;
pub const EVTCHNOP_EXPAND_ARRAY: u64 = 12;
pub const EVTCHNOP_SET_PRIORITY: u64 = 13;

/// FIFO event words: bit 31 PENDING, 30 MASKED, 29 LINKED, 28 BUSY, bits 0-16 the next
/// port in the queue.
pub mod fifo {
    pub const PENDING: u32 = 1 << 31;
    pub const MASKED: u32 = 1 << 30;
    pub const LINKED: u32 = 1 << 29;
    pub const BUSY: u32 = 1 << 28;
    pub const LINK_BITS: u8 = 17;
    pub const LINK_MASK: u32 = (1 << LINK_BITS) - 1;
    /// Ports the ABI can name.
    pub const NR_CHANNELS: u32 = 1 << LINK_BITS;
    /// Event words per array page, and the most pages.
    pub const WORDS_PER_PAGE: u32 = 1024;
    pub const MAX_ARRAY_PAGES: usize = (NR_CHANNELS / WORDS_PER_PAGE) as usize;
    /// Queues per vCPU: priority 0 (highest) to 15.
    pub const MAX_QUEUES: usize = 16;
    pub const PRIORITY_MIN: u32 = 15;
    pub const PRIORITY_DEFAULT: u8 = 7;
    /// The control block: `ready` u32 (a bit per queue), a reserved word, `head[16]` u32.
    pub const CONTROL_SIZE: u32 = 72;
    pub const CONTROL_READY: usize = 0;
    pub const CONTROL_HEAD: usize = 8;
}
