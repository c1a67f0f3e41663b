//! Hypercall numbers (`public/xen.h`) and the hypercall-page stub format.
//!
//! Register convention (as Xen x86-64): number in RAX; arguments in RDI, RSI, RDX, R10, R8;
//! result in RAX. Deviation: the transfer instruction is `int 0x82` through a DPL-1 gate, so
//! only the ring-1 guest kernel can make a hypercall.

/// The interrupt vector used for hypercalls.
pub const HYPERCALL_VECTOR: u8 = 0x82;

pub const SET_TRAP_TABLE: u64 = 0;
pub const MMU_UPDATE: u64 = 1;
pub const SET_GDT: u64 = 2;
pub const STACK_SWITCH: u64 = 3;
pub const SET_CALLBACKS: u64 = 4;
pub const FPU_TASKSWITCH: u64 = 5;
pub const SCHED_OP_COMPAT: u64 = 6;
pub const PLATFORM_OP: u64 = 7;
pub const SET_DEBUGREG: u64 = 8;
pub const GET_DEBUGREG: u64 = 9;
pub const UPDATE_DESCRIPTOR: u64 = 10;
pub const MEMORY_OP: u64 = 12;
pub const MULTICALL: u64 = 13;
pub const UPDATE_VA_MAPPING: u64 = 14;
pub const SET_TIMER_OP: u64 = 15;
pub const EVENT_CHANNEL_OP_COMPAT: u64 = 16;
pub const XEN_VERSION: u64 = 17;
pub const CONSOLE_IO: u64 = 18;
pub const GRANT_TABLE_OP: u64 = 20;
pub const VM_ASSIST: u64 = 21;
pub const UPDATE_VA_MAPPING_OTHERDOMAIN: u64 = 22;
pub const IRET: u64 = 23;
pub const VCPU_OP: u64 = 24;
pub const SET_SEGMENT_BASE: u64 = 25;
pub const MMUEXT_OP: u64 = 26;
pub const XSM_OP: u64 = 27;
pub const NMI_OP: u64 = 28;
pub const SCHED_OP: u64 = 29;
pub const CALLBACK_OP: u64 = 30;
pub const EVENT_CHANNEL_OP: u64 = 32;
pub const PHYSDEV_OP: u64 = 33;
pub const SYSCTL: u64 = 35;
pub const DOMCTL: u64 = 36;

/// Number of 32-byte stubs in the hypercall page.
pub const NR_STUBS: usize = 128;
/// Size of one stub.
pub const STUB_SIZE: usize = 32;

/// The bytes of hypercall stub `nr`: `mov eax, nr; int 0x82; ret`, padded with `int3`.
pub fn stub(nr: u32) -> [u8; STUB_SIZE] {
    let mut s = [0xCCu8; STUB_SIZE];
    s[0] = 0xB8; // mov eax, imm32
    s[1..5].copy_from_slice(&nr.to_le_bytes());
    s[5] = 0xCD; // int imm8
    s[6] = HYPERCALL_VECTOR;
    s[7] = 0xC3; // ret
    s
}

/// The bytes of Xen's 64-bit PV stub `nr` (the Xen pv64 mode): `push rcx; push r11;
/// mov eax, nr; syscall; pop r11; pop rcx; ret`; the `iret` stub (jumped to, never
/// called) is `push rcx; push r11; push rax; mov eax, 23; syscall`. Padded with `int3`.
pub fn stub_pv64(nr: u32) -> [u8; STUB_SIZE] {
    let mut s = [0xCCu8; STUB_SIZE];
    let mov = |s: &mut [u8], at: usize| {
        s[at] = 0xB8;
        s[at + 1..at + 5].copy_from_slice(&nr.to_le_bytes());
    };
    if nr as u64 == IRET {
        s[..3].copy_from_slice(&[0x51, 0x41, 0x53]);
        s[3] = 0x50;
        mov(&mut s, 4);
        s[9..11].copy_from_slice(&[0x0F, 0x05]);
    } else {
        s[..3].copy_from_slice(&[0x51, 0x41, 0x53]);
        mov(&mut s, 3);
        s[8..10].copy_from_slice(&[0x0F, 0x05]);
        s[10..14].copy_from_slice(&[0x41, 0x5B, 0x59, 0xC3]);
    }
    s
}

/// `iret_context` (the `iret` hypercall's frame at the guest's RSP): RAX, R11, RCX, flags,
/// RIP, CS, RFLAGS, RSP, SS, 8 bytes each.
pub mod iret {
    pub const WORDS: usize = 9;
    /// `VGCF_in_syscall`: R11 and RCX are not restored (a return from a system call).
    pub const VGCF_IN_SYSCALL: u64 = 1 << 8;
}

/// `console_io` commands.
pub mod console_io {
    pub const WRITE: u64 = 0;
    pub const READ: u64 = 1;
}

/// `vm_assist` commands and types valid for 64-bit guests.
pub mod vm_assist {
    pub const ENABLE: u64 = 0;
    pub const DISABLE: u64 = 1;
    pub const TYPE_4GB_SEGMENTS: u64 = 0;
    pub const TYPE_4GB_SEGMENTS_NOTIFY: u64 = 1;
    pub const TYPE_WRITABLE_PAGETABLES: u64 = 2;
    pub const TYPE_PAE_EXTENDED_CR3: u64 = 3;
    pub const TYPE_ARCHITECTURAL_IOPL: u64 = 4;
    pub const TYPE_RUNSTATE_UPDATE_FLAG: u64 = 5;
    pub const TYPE_M2P_STRICT: u64 = 32;
    /// The set of types a 64-bit guest may enable (Xen's `VM_ASSIST_VALID`).
    pub const VALID_MASK: u64 = 0x3F | (1 << 32);
}

#[cfg(test)]
mod tests {
    #[test]
    fn stub_bytes() {
        let s = super::stub(17);
        assert_eq!(&s[..8], &[0xB8, 17, 0, 0, 0, 0xCD, 0x82, 0xC3]);
        assert!(s[8..].iter().all(|&b| b == 0xCC));
    }

    #[test]
    fn pv64_stub_bytes() {
        let s = super::stub_pv64(29);
        assert_eq!(&s[..14], &[0x51, 0x41, 0x53, 0xB8, 29, 0, 0, 0, 0x0F, 0x05, 0x41, 0x5B, 0x59, 0xC3]);
        let i = super::stub_pv64(23);
        assert_eq!(&i[..11], &[0x51, 0x41, 0x53, 0x50, 0xB8, 23, 0, 0, 0, 0x0F, 0x05]);
        assert!(i[11..].iter().all(|&b| b == 0xCC));
    }
}
