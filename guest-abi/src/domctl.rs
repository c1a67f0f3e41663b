//! The toolstack hypercalls `domctl` (#36) and `sysctl` (#35) as Xen 4.17 defines them
//! (`public/domctl.h`, `public/sysctl.h`): command numbers, the outer structs' layout, and
//! the payload offsets this hypervisor reads and writes. Offsets are within the 128-byte
//! union `u` (at [`U_OFFSET`] of `xen_domctl`, [`SYSCTL_U_OFFSET`] of `xen_sysctl`).

/// `XEN_DOMCTL_INTERFACE_VERSION` of Xen 4.17.
pub const DOMCTL_INTERFACE_VERSION: u32 = 0x15;
/// `XEN_SYSCTL_INTERFACE_VERSION` of Xen 4.17.
pub const SYSCTL_INTERFACE_VERSION: u32 = 0x15;

/// `struct xen_domctl`: cmd u32 @0, interface_version u32 @4, domain u16 @8, union @16.
pub const DOMCTL_SIZE: usize = 144;
pub const U_OFFSET: usize = 16;
/// `struct xen_sysctl`: cmd u32 @0, interface_version u32 @4, union @8.
pub const SYSCTL_SIZE: usize = 136;
pub const SYSCTL_U_OFFSET: usize = 8;

pub const CREATEDOMAIN: u32 = 1;
pub const DESTROYDOMAIN: u32 = 2;
pub const PAUSEDOMAIN: u32 = 3;
pub const UNPAUSEDOMAIN: u32 = 4;
pub const GETDOMAININFO: u32 = 5;
pub const SETVCPUAFFINITY: u32 = 9;
pub const MAX_MEM: u32 = 11;
pub const SETVCPUCONTEXT: u32 = 12;
pub const GETVCPUCONTEXT: u32 = 13;
pub const GETVCPUINFO: u32 = 14;
pub const MAX_VCPUS: u32 = 15;
pub const SCHEDULER_OP: u32 = 16;
pub const SETDOMAINHANDLE: u32 = 17;
pub const IRQ_PERMISSION: u32 = 19;
pub const IOMEM_PERMISSION: u32 = 20;
pub const IOPORT_PERMISSION: u32 = 21;
pub const HYPERCALL_INIT: u32 = 22;
pub const SETTIMEOFFSET: u32 = 24;
pub const GETVCPUAFFINITY: u32 = 25;
pub const SET_MAX_EVTCHN: u32 = 70;
/// `vcpucontext` {vcpu u32 @0, ctxt ptr @8}; `hypercall_init` {gmfn u64 @0};
/// `set_max_evtchn` {max_port u32 @0}.
pub mod vcpucontext {
    pub const VCPU: usize = 0;
    pub const CTXT: usize = 8;
}

/// `xen_domctl_createdomain` (64 bytes).
pub mod create {
    pub const SSIDREF: usize = 0;
    pub const HANDLE: usize = 4;
    pub const FLAGS: usize = 20;
    pub const IOMMU_OPTS: usize = 24;
    pub const MAX_VCPUS: usize = 28;
    pub const MAX_EVTCHN_PORT: usize = 32;
    pub const MAX_GRANT_FRAMES: usize = 36;
    pub const MAX_MAPTRACK_FRAMES: usize = 40;
    pub const GRANT_OPTS: usize = 44;
    pub const VMTRACE_SIZE: usize = 48;
    pub const CPUPOOL_ID: usize = 52;
    pub const EMULATION_FLAGS: usize = 56;
    pub const MISC_FLAGS: usize = 60;
    /// `XEN_DOMCTL_CDF_*` bits (any set is refused here: only plain PV domains exist).
    pub const CDF_HVM: u32 = 1 << 0;
    pub const CDF_MASK: u32 = 0xFF;
    /// rxen's own bit: the domain runs in rxen's ring-1 model (its image carries the
    /// `rxen` ABI note); without it a PV domain runs in the Xen pv64 mode, as on Xen.
    pub const CDF_RXEN_RING1: u32 = 1 << 31;
}

/// `xen_domctl_getdomaininfo_t` (112 bytes; also the element of `getdomaininfolist`).
pub mod info {
    pub const SIZE: usize = 112;
    pub const DOMAIN: usize = 0;
    pub const FLAGS: usize = 4;
    pub const TOT_PAGES: usize = 8;
    pub const MAX_PAGES: usize = 16;
    pub const SHARED_INFO_FRAME: usize = 48;
    pub const CPU_TIME: usize = 56;
    pub const NR_ONLINE_VCPUS: usize = 64;
    pub const MAX_VCPU_ID: usize = 68;
    pub const SSIDREF: usize = 72;
    pub const HANDLE: usize = 76;
    pub const CPUPOOL: usize = 92;
    pub const GPADDR_BITS: usize = 96;
    /// `XEN_DOMINF_*`.
    pub const DYING: u32 = 1 << 0;
    pub const SHUTDOWN: u32 = 1 << 2;
    pub const PAUSED: u32 = 1 << 3;
    pub const BLOCKED: u32 = 1 << 4;
    pub const RUNNING: u32 = 1 << 5;
    pub const SHUTDOWN_SHIFT: u32 = 16;
    pub const SHUTDOWN_MASK: u32 = 0xFF;
}

/// `xen_domctl_vcpuaffinity` (40 bytes): vcpu u32 @0, flags u32 @4, hard bitmap @8, soft
/// bitmap @24 (each `xenctl_bitmap`: handle u64 @0, nr_bits u32 @8).
pub mod affinity {
    pub const VCPU: usize = 0;
    pub const FLAGS: usize = 4;
    pub const HARD: usize = 8;
    pub const SOFT: usize = 24;
    pub const HARD_FLAG: u32 = 1 << 0;
    pub const SOFT_FLAG: u32 = 1 << 1;
}

/// `xen_domctl_ioport_permission` (first u32 @0, nr u32 @4, allow u8 @8),
/// `xen_domctl_iomem_permission` (first_mfn u64 @0, nr_mfns u64 @8, allow u8 @16),
/// `xen_domctl_irq_permission` (pirq u32 @0, allow u8 @4).
pub mod perm {
    pub const IOPORT_ALLOW: usize = 8;
    pub const IOMEM_ALLOW: usize = 16;
    pub const IRQ_ALLOW: usize = 4;
    /// PIRQs a domain may be given (dom0's `nr_pirqs` here).
    pub const NR_PIRQS: u32 = 256;
}

/// `xen_domctl_getvcpuinfo` (24 bytes).
pub mod vcpuinfo {
    pub const VCPU: usize = 0;
    pub const ONLINE: usize = 4;
    pub const BLOCKED: usize = 5;
    pub const RUNNING: usize = 6;
    pub const CPU_TIME: usize = 8;
    pub const CPU: usize = 16;
}

/// `xen_domctl_scheduler_op` (24 bytes): sched_id u32 @0, cmd u32 @4, credit weight u16 @8,
/// cap u16 @10.
pub mod sched {
    pub const SCHED_ID: usize = 0;
    pub const CMD: usize = 4;
    pub const WEIGHT: usize = 8;
    pub const CAP: usize = 10;
    pub const PUTINFO: u32 = 0;
    pub const GETINFO: u32 = 1;
    /// `XEN_SCHEDULER_CREDIT`.
    pub const CREDIT: u32 = 5;
}

/// sysctl commands.
pub mod sys {
    pub const READCONSOLE: u32 = 1;
    pub const PHYSINFO: u32 = 3;
    pub const SCHED_ID: u32 = 4;
    pub const GETDOMAININFOLIST: u32 = 6;
    pub const GETCPUINFO: u32 = 8;
}

/// `xen_sysctl_physinfo` (112 bytes).
pub mod physinfo {
    pub const THREADS_PER_CORE: usize = 0;
    pub const CORES_PER_SOCKET: usize = 4;
    pub const NR_CPUS: usize = 8;
    pub const MAX_CPU_ID: usize = 12;
    pub const NR_NODES: usize = 16;
    pub const MAX_NODE_ID: usize = 20;
    pub const CPU_KHZ: usize = 24;
    pub const CAPABILITIES: usize = 28;
    pub const TOTAL_PAGES: usize = 40;
    pub const FREE_PAGES: usize = 48;
    pub const SCRUB_PAGES: usize = 56;
    pub const MAX_MFN: usize = 72;
    /// `XEN_SYSCTL_PHYSCAP_pv` and `_gnttab_v1`.
    pub const CAP_PV: u32 = 1 << 1;
    pub const CAP_GNTTAB_V1: u32 = 1 << 8;
}

/// `xen_sysctl_getdomaininfolist` (24 bytes): first_domain u16 @0, max_domains u32 @4,
/// buffer @8, num_domains u32 @16 (OUT).
pub mod infolist {
    pub const FIRST_DOMAIN: usize = 0;
    pub const MAX_DOMAINS: usize = 4;
    pub const BUFFER: usize = 8;
    pub const NUM_DOMAINS: usize = 16;
}
