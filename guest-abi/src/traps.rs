//! Virtual IDT (`set_trap_table`), callbacks, and the bounce-frame format.
//!
//! Deviation from Xen: when the hypervisor bounces an exception to a guest handler, it builds
//! the frame the CPU itself would push for a ring-1 interrupt gate, from the new RSP upwards:
//! `[error code], RIP, CS, RFLAGS, RSP, SS`, with RSP first aligned down to 16 bytes. There
//! are no RCX/R11 words (Xen needs them because its 64-bit kernels return through a hypercall;
//! ours return with a native `iretq`). As in Xen, bits 32..39 of the CS word hold the vCPU's
//! saved `evtchn_upcall_mask`, and #PF puts the fault address in `vcpu_info.arch.cr2`.
//! The error code is pushed for vectors 8, 10–14, 17, 21, 29 and 30, exactly as hardware does.

/// One virtual IDT entry (`struct trap_info`, 16 bytes). A list ends at `address == 0`.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct TrapInfo {
    pub vector: u8,
    /// Bits 0-1: the lowest privilege allowed to raise it with `INT n`; bit 2: mask events.
    pub flags: u8,
    pub cs: u16,
    pub _pad: u32,
    pub address: u64,
}

const _: () = {
    assert!(core::mem::size_of::<TrapInfo>() == 16);
    assert!(core::mem::offset_of!(TrapInfo, address) == 8);
};

/// `TrapInfo::flags` bit: deliver with events masked (interrupt-gate semantics).
pub const TI_MASK_EVENTS: u8 = 1 << 2;
/// `TrapInfo::flags` mask: the DPL allowed to raise the vector with `INT n`.
pub const TI_DPL_MASK: u8 = 3;

/// Does hardware push an error code for this exception vector?
pub const fn has_error_code(vector: u8) -> bool {
    matches!(vector, 8 | 10..=14 | 17 | 21 | 29 | 30)
}

/// Exception vectors.
pub mod vector {
    pub const DE: u8 = 0;
    pub const DB: u8 = 1;
    pub const NMI: u8 = 2;
    pub const BP: u8 = 3;
    pub const OF: u8 = 4;
    pub const BR: u8 = 5;
    pub const UD: u8 = 6;
    pub const NM: u8 = 7;
    pub const DF: u8 = 8;
    pub const TS: u8 = 10;
    pub const NP: u8 = 11;
    pub const SS: u8 = 12;
    pub const GP: u8 = 13;
    pub const PF: u8 = 14;
    pub const MF: u8 = 16;
    pub const AC: u8 = 17;
    pub const MC: u8 = 18;
    pub const XM: u8 = 19;
}

/// `callback_op` commands.
pub const CALLBACKOP_REGISTER: u64 = 0;
pub const CALLBACKOP_UNREGISTER: u64 = 1;

/// Callback types.
pub const CALLBACKTYPE_EVENT: u16 = 0;
pub const CALLBACKTYPE_FAILSAFE: u16 = 1;
pub const CALLBACKTYPE_SYSCALL: u16 = 2;
pub const CALLBACKTYPE_SYSENTER_DEPRECATED: u16 = 3;
pub const CALLBACKTYPE_NMI: u16 = 4;
pub const CALLBACKTYPE_SYSENTER: u16 = 5;
pub const CALLBACKTYPE_SYSCALL32: u16 = 7;
/// `CallbackRegister::flags`: deliver with events masked.
pub const CALLBACKF_MASK_EVENTS: u16 = 1;

/// `struct callback_register` (16 bytes).
#[repr(C)]
#[derive(Copy, Clone, Debug, Default)]
pub struct CallbackRegister {
    pub ty: u16,
    pub flags: u16,
    pub _pad: u32,
    pub address: u64,
}

/// `struct callback_unregister` (4 bytes).
#[repr(C)]
#[derive(Copy, Clone, Debug, Default)]
pub struct CallbackUnregister {
    pub ty: u16,
    pub _pad: u16,
}

const _: () = {
    assert!(core::mem::size_of::<CallbackRegister>() == 16);
    assert!(core::mem::offset_of!(CallbackRegister, address) == 8);
    assert!(core::mem::size_of::<CallbackUnregister>() == 4);
};
