//! Xen PV ELF note types (`public/elfnote.h`). Notes have the name "Xen".

pub const NAME: &[u8] = b"Xen";

pub const INFO: u32 = 0;
pub const ENTRY: u32 = 1;
pub const HYPERCALL_PAGE: u32 = 2;
pub const VIRT_BASE: u32 = 3;
pub const PADDR_OFFSET: u32 = 4;
pub const XEN_VERSION: u32 = 5;
pub const GUEST_OS: u32 = 6;
pub const GUEST_VERSION: u32 = 7;
pub const LOADER: u32 = 8;
pub const PAE_MODE: u32 = 9;
pub const FEATURES: u32 = 10;
pub const BSD_SYMTAB: u32 = 11;
pub const HV_START_LOW: u32 = 12;
pub const L1_MFN_VALID: u32 = 13;
pub const SUSPEND_CANCEL: u32 = 14;
pub const INIT_P2M: u32 = 15;
pub const MOD_START_PFN: u32 = 16;
pub const SUPPORTED_FEATURES: u32 = 17;
/// PVH 32-bit physical entry point (used by QEMU `-kernel` to boot the hypervisor itself).
pub const PHYS32_ENTRY: u32 = 18;

/// rxen's own note: name [`RXEN_NAME`], type [`RXEN_ABI`], a 4-byte value. [`RXEN_ABI_RING1`]
/// declares that the kernel is written for rxen's ring-1 model (kernel at CPL 1,
/// `int 0x82` hypercalls, direct gates); an image without it runs in the Xen pv64 mode
/// (kernel at CPL 3 with Xen's flat ring-3 selectors, `syscall` hypercalls), as on Xen.
pub const RXEN_NAME: &[u8] = b"rxen";
pub const RXEN_ABI: u32 = 1;
pub const RXEN_ABI_RING1: u32 = 1;
