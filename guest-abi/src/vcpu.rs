//! `vcpu_op` commands (Xen's `public/vcpu.h`).

pub const VCPUOP_INITIALISE: u64 = 0;
pub const VCPUOP_UP: u64 = 1;
pub const VCPUOP_DOWN: u64 = 2;
pub const VCPUOP_IS_UP: u64 = 3;
pub const VCPUOP_GET_RUNSTATE_INFO: u64 = 4;
pub const VCPUOP_SET_PERIODIC_TIMER: u64 = 6;
pub const VCPUOP_STOP_PERIODIC_TIMER: u64 = 7;
pub const VCPUOP_SET_SINGLESHOT_TIMER: u64 = 8;
pub const VCPUOP_STOP_SINGLESHOT_TIMER: u64 = 9;
pub const VCPUOP_REGISTER_VCPU_INFO: u64 = 10;

/// `RUNSTATE_*`: the states of `vcpu_runstate_info.state`.
pub const RUNSTATE_RUNNING: u32 = 0;
pub const RUNSTATE_RUNNABLE: u32 = 1;
pub const RUNSTATE_BLOCKED: u32 = 2;
pub const RUNSTATE_OFFLINE: u32 = 3;

/// `struct vcpu_guest_context` (x86_64) byte offsets, as `VCPUOP_initialise` reads it.
pub mod ctx {
    pub const SIZE: usize = 5168;
    pub const FLAGS: usize = 512;
    /// `struct cpu_user_regs` (see [`regs`]).
    pub const USER_REGS: usize = 520;
    /// 256 `struct trap_info` of 16 bytes.
    pub const TRAP_CTXT: usize = 720;
    pub const LDT_BASE: usize = 4816;
    pub const LDT_ENTS: usize = 4824;
    pub const GDT_FRAMES: usize = 4832;
    pub const GDT_ENTS: usize = 4960;
    pub const KERNEL_SS: usize = 4968;
    pub const KERNEL_SP: usize = 4976;
    /// `ctrlreg[8]`; CR3 is `ctrlreg[3]`.
    pub const CTRLREG: usize = 4984;
    pub const CR3: usize = CTRLREG + 3 * 8;
    /// `ctrlreg[1]`: the root of the user-mode tables (x86_64 PV; rxen has one root).
    pub const USER_CR3: usize = CTRLREG + 8;
    pub const DEBUGREG: usize = 5048;
    pub const EVENT_CALLBACK: usize = 5112;
    pub const FAILSAFE_CALLBACK: usize = 5120;
    pub const SYSCALL_CALLBACK: usize = 5128;
    pub const FS_BASE: usize = 5144;
    pub const GS_BASE_KERNEL: usize = 5152;
    pub const GS_BASE_USER: usize = 5160;
    /// `VGCF_i387_valid`.
    pub const VGCF_I387_VALID: u64 = 1;
    /// `VGCF_in_kernel`, `VGCF_online` (public/arch-x86/xen.h).
    pub const VGCF_IN_KERNEL: u64 = 1 << 2;
    pub const VGCF_ONLINE: u64 = 1 << 5;
}

/// `struct cpu_user_regs` (x86_64) byte offsets.
pub mod regs {
    pub const R15: usize = 0;
    pub const R14: usize = 8;
    pub const R13: usize = 16;
    pub const R12: usize = 24;
    pub const RBP: usize = 32;
    pub const RBX: usize = 40;
    pub const R11: usize = 48;
    pub const R10: usize = 56;
    pub const R9: usize = 64;
    pub const R8: usize = 72;
    pub const RAX: usize = 80;
    pub const RCX: usize = 88;
    pub const RDX: usize = 96;
    pub const RSI: usize = 104;
    pub const RDI: usize = 112;
    pub const RIP: usize = 128;
    pub const CS: usize = 136;
    pub const RFLAGS: usize = 144;
    pub const RSP: usize = 152;
    pub const SS: usize = 160;
}
