//! `shared_info` and `vcpu_info` (one page shared between the hypervisor and a domain).

/// Legacy vcpu_info slots in shared_info.
pub const MAX_VIRT_CPUS: usize = 32;

/// `vcpu_time_info` (pvclock), 32 bytes.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default)]
pub struct VcpuTimeInfo {
    pub version: u32,
    pub _pad0: u32,
    pub tsc_timestamp: u64,
    pub system_time: u64,
    pub tsc_to_system_mul: u32,
    pub tsc_shift: i8,
    pub flags: u8,
    pub _pad1: [u8; 2],
}

/// x86 part of vcpu_info.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default)]
pub struct ArchVcpuInfo {
    /// Address of the last page fault bounced to this vCPU.
    pub cr2: u64,
    pub _pad: u64,
}

/// `vcpu_info`, 64 bytes.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default)]
pub struct VcpuInfo {
    pub evtchn_upcall_pending: u8,
    /// The guest's virtual interrupt flag: 1 = events masked.
    pub evtchn_upcall_mask: u8,
    pub _pad: [u8; 6],
    pub evtchn_pending_sel: u64,
    pub arch: ArchVcpuInfo,
    pub time: VcpuTimeInfo,
}

/// x86 part of shared_info, 48 bytes.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default)]
pub struct ArchSharedInfo {
    pub max_pfn: u64,
    pub pfn_to_mfn_frame_list_list: u64,
    pub nmi_reason: u64,
    pub p2m_cr3: u64,
    pub p2m_vaddr: u64,
    pub p2m_generation: u64,
}

/// `shared_info`, 3136 bytes on 64-bit.
#[repr(C)]
#[derive(Copy, Clone, Debug)]
pub struct SharedInfo {
    pub vcpu_info: [VcpuInfo; MAX_VIRT_CPUS],
    pub evtchn_pending: [u64; 64],
    pub evtchn_mask: [u64; 64],
    pub wc_version: u32,
    pub wc_sec: u32,
    pub wc_nsec: u32,
    pub wc_sec_hi: u32,
    pub arch: ArchSharedInfo,
}

/// Byte offset of vCPU `n`'s upcall-mask byte inside the shared-info page.
pub const fn upcall_mask_offset(vcpu: usize) -> usize {
    vcpu * core::mem::size_of::<VcpuInfo>() + core::mem::offset_of!(VcpuInfo, evtchn_upcall_mask)
}

/// Byte offset of vCPU `n`'s `arch.cr2` inside the shared-info page.
pub const fn cr2_offset(vcpu: usize) -> usize {
    vcpu * core::mem::size_of::<VcpuInfo>() + core::mem::offset_of!(VcpuInfo, arch)
}

const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(size_of::<VcpuTimeInfo>() == 32);
    assert!(offset_of!(VcpuTimeInfo, tsc_timestamp) == 8);
    assert!(offset_of!(VcpuTimeInfo, system_time) == 16);
    assert!(offset_of!(VcpuTimeInfo, tsc_to_system_mul) == 24);
    assert!(offset_of!(VcpuTimeInfo, tsc_shift) == 28);
    assert!(offset_of!(VcpuTimeInfo, flags) == 29);
    assert!(size_of::<VcpuInfo>() == 64);
    assert!(offset_of!(VcpuInfo, evtchn_upcall_mask) == 1);
    assert!(offset_of!(VcpuInfo, evtchn_pending_sel) == 8);
    assert!(offset_of!(VcpuInfo, arch) == 16);
    assert!(offset_of!(VcpuInfo, time) == 32);
    assert!(size_of::<ArchSharedInfo>() == 48);
    assert!(size_of::<SharedInfo>() == 3136);
    assert!(offset_of!(SharedInfo, evtchn_pending) == 2048);
    assert!(offset_of!(SharedInfo, evtchn_mask) == 2560);
    assert!(offset_of!(SharedInfo, wc_version) == 3072);
    assert!(offset_of!(SharedInfo, wc_sec_hi) == 3084);
    assert!(offset_of!(SharedInfo, arch) == 3088);
};
