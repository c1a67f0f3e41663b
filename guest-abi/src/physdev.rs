//! `physdev_op` (`public/physdev.h`): physical interrupts for a domain that drives devices.

pub const PHYSDEVOP_IRQ_STATUS_QUERY: u64 = 5;
pub const PHYSDEVOP_SET_IOPL: u64 = 6;
pub const PHYSDEVOP_EOI: u64 = 12;
pub const PHYSDEVOP_MAP_PIRQ: u64 = 13;
pub const PHYSDEVOP_UNMAP_PIRQ: u64 = 14;

/// `irq_status_query` flags.
pub const XENIRQSTAT_NEEDS_EOI: u32 = 1;
pub const XENIRQSTAT_SHARED: u32 = 2;

/// `map_pirq` types.
pub const MAP_PIRQ_TYPE_MSI: u32 = 0;
pub const MAP_PIRQ_TYPE_GSI: u32 = 1;

/// `struct physdev_map_pirq`: domid u16 @0, type i32 @4, index i32 @8, pirq i32 @12 (in:
/// wanted or -1; out: given), bus @16, devfn @20, entry_nr @24, table_base u64 @32.
pub mod map_pirq {
    pub const DOMID: usize = 0;
    pub const TYPE: usize = 4;
    pub const INDEX: usize = 8;
    pub const PIRQ: usize = 12;
    pub const SIZE: usize = 40;
}

/// `struct physdev_unmap_pirq`: domid u16 @0, pirq i32 @4.
pub const UNMAP_PIRQ_SIZE: usize = 8;
/// `struct physdev_eoi`: irq u32 @0.
pub const EOI_SIZE: usize = 4;
/// `struct physdev_irq_status_query`: irq u32 @0, flags u32 @4 (out).
pub const IRQ_STATUS_QUERY_SIZE: usize = 8;

/// `EVTCHNOP_bind_pirq` flag: the line may be shared with other domains.
pub const BIND_PIRQ_WILL_SHARE: u32 = 1;
