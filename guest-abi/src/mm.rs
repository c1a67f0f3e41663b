//! The PV MMU hypercalls' numbers: `mmu_update` request types, `mmuext_op` commands and
//! `update_va_mapping` flags (Xen's `public/xen.h`).

/// `mmu_update` request types (the low two bits of `ptr`).
pub const MMU_NORMAL_PT_UPDATE: u64 = 0;
pub const MMU_MACHPHYS_UPDATE: u64 = 1;
pub const MMU_PT_UPDATE_PRESERVE_AD: u64 = 2;
/// `count` flag of a preempted `mmu_update`/`mmuext_op` (a continuation).
pub const MMU_UPDATE_PREEMPTED: u64 = 1 << 31;

/// `MMUEXT_*` commands.
pub mod ext {
    pub const PIN_L1_TABLE: u32 = 0;
    pub const PIN_L4_TABLE: u32 = 3;
    pub const UNPIN_TABLE: u32 = 4;
    pub const NEW_BASEPTR: u32 = 5;
    pub const TLB_FLUSH_LOCAL: u32 = 6;
    pub const INVLPG_LOCAL: u32 = 7;
    pub const TLB_FLUSH_MULTI: u32 = 8;
    pub const INVLPG_MULTI: u32 = 9;
    pub const TLB_FLUSH_ALL: u32 = 10;
    pub const INVLPG_ALL: u32 = 11;
    pub const FLUSH_CACHE: u32 = 12;
    pub const SET_LDT: u32 = 13;
    pub const NEW_USER_BASEPTR: u32 = 15;
    pub const CLEAR_PAGE: u32 = 16;
    pub const COPY_PAGE: u32 = 17;
    pub const FLUSH_CACHE_GLOBAL: u32 = 18;
    pub const MARK_SUPER: u32 = 19;
    pub const UNMARK_SUPER: u32 = 20;
}

/// `update_va_mapping` flags: the flush type in the low two bits (a vCPU-mask pointer when
/// neither value), `UVMF_ALL` to flush every vCPU of the domain.
pub const UVMF_NONE: u64 = 0;
pub const UVMF_TLB_FLUSH: u64 = 1;
pub const UVMF_INVLPG: u64 = 2;
pub const UVMF_FLUSHTYPE_MASK: u64 = 3;
pub const UVMF_LOCAL: u64 = 0;
pub const UVMF_ALL: u64 = 4;
