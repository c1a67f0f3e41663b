//! `xen_version` sub-commands and feature bits (`public/version.h`, `public/features.h`).

pub const XENVER_VERSION: u64 = 0;
pub const XENVER_EXTRAVERSION: u64 = 1;
pub const XENVER_COMPILE_INFO: u64 = 2;
pub const XENVER_CAPABILITIES: u64 = 3;
pub const XENVER_CHANGESET: u64 = 4;
pub const XENVER_PLATFORM_PARAMETERS: u64 = 5;
pub const XENVER_GET_FEATURES: u64 = 6;
pub const XENVER_PAGESIZE: u64 = 7;
pub const XENVER_GUEST_HANDLE: u64 = 8;
pub const XENVER_COMMANDLINE: u64 = 9;

/// `xen_extraversion_t` length.
pub const EXTRAVERSION_LEN: usize = 16;
/// `xen_capabilities_info_t` length.
pub const CAPABILITIES_LEN: usize = 1024;
/// `xen_changeset_info_t` length.
pub const CHANGESET_LEN: usize = 64;
/// `xen_commandline_t` length.
pub const COMMANDLINE_LEN: usize = 1024;
/// `xen_domain_handle_t` length.
pub const GUEST_HANDLE_LEN: usize = 16;

/// `xen_compile_info_t` (144 bytes).
#[repr(C)]
#[derive(Copy, Clone, Debug)]
pub struct CompileInfo {
    pub compiler: [u8; 64],
    pub compile_by: [u8; 16],
    pub compile_domain: [u8; 32],
    pub compile_date: [u8; 32],
}

/// `xen_platform_parameters_t`.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default)]
pub struct PlatformParameters {
    pub virt_start: u64,
}

/// `xen_feature_info_t`: IN `submap_idx`, OUT `submap`.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default)]
pub struct FeatureInfo {
    pub submap_idx: u32,
    pub submap: u32,
}

const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(size_of::<CompileInfo>() == 144);
    assert!(offset_of!(CompileInfo, compile_by) == 64);
    assert!(offset_of!(CompileInfo, compile_domain) == 80);
    assert!(offset_of!(CompileInfo, compile_date) == 112);
    assert!(size_of::<FeatureInfo>() == 8);
};

/// XENFEAT bit numbers (submap 0).
pub mod feat {
    pub const WRITABLE_PAGE_TABLES: u32 = 0;
    pub const WRITABLE_DESCRIPTOR_TABLES: u32 = 1;
    pub const AUTO_TRANSLATED_PHYSMAP: u32 = 2;
    pub const SUPERVISOR_MODE_KERNEL: u32 = 3;
    pub const PAE_PGDIR_ABOVE_4GB: u32 = 4;
    pub const MMU_PT_UPDATE_PRESERVE_AD: u32 = 5;
    pub const HIGHMEM_ASSIST: u32 = 6;
    pub const GNTTAB_MAP_AVAIL_BITS: u32 = 7;
    pub const DOM0: u32 = 11;
}

/// The version this hypervisor reports: Xen-compatible interface 4.19.
pub const VERSION_MAJOR: u32 = 4;
pub const VERSION_MINOR: u32 = 19;
