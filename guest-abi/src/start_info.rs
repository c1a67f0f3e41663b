//! `start_info`: what the builder tells a PV guest at entry (pointer in RSI).

/// Magic for 64-bit guests.
pub const MAGIC: &[u8] = b"xen-3.0-x86_64";
/// Maximum command-line length including the NUL.
pub const MAX_GUEST_CMDLINE: usize = 1024;

/// The guest is privileged.
pub const SIF_PRIVILEGED: u32 = 1 << 0;
/// The guest is the initial domain.
pub const SIF_INITDOMAIN: u32 = 1 << 1;

/// Console information: a domU's ring, or dom0's video info location.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default)]
pub struct ConsoleInfo {
    /// domU: console ring MFN; dom0: `info_off` (low 32 bits) and `info_size` (high 32 bits).
    pub mfn_or_info: u64,
    /// domU: console event channel.
    pub evtchn: u32,
    pub _pad: u32,
}

/// Xen's `start_info` for 64-bit guests (1168 bytes).
#[repr(C)]
#[derive(Copy, Clone, Debug)]
pub struct StartInfo {
    pub magic: [u8; 32],
    pub nr_pages: u64,
    /// Machine address of the shared-info page.
    pub shared_info: u64,
    pub flags: u32,
    pub _pad0: u32,
    pub store_mfn: u64,
    pub store_evtchn: u32,
    pub _pad1: u32,
    pub console: ConsoleInfo,
    /// Virtual address of the bootstrap L4.
    pub pt_base: u64,
    pub nr_pt_frames: u64,
    /// Virtual address of the P2M list (one u64 MFN per PFN).
    pub mfn_list: u64,
    pub mod_start: u64,
    pub mod_len: u64,
    pub cmd_line: [u8; MAX_GUEST_CMDLINE],
    pub first_p2m_pfn: u64,
    pub nr_p2m_frames: u64,
}

impl StartInfo {
    /// The command line up to its NUL.
    pub fn cmdline_bytes(&self) -> &[u8] {
        let n = self.cmd_line.iter().position(|&b| b == 0).unwrap_or(self.cmd_line.len());
        &self.cmd_line[..n]
    }
}

const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(size_of::<StartInfo>() == 1168);
    assert!(offset_of!(StartInfo, nr_pages) == 32);
    assert!(offset_of!(StartInfo, shared_info) == 40);
    assert!(offset_of!(StartInfo, flags) == 48);
    assert!(offset_of!(StartInfo, store_mfn) == 56);
    assert!(offset_of!(StartInfo, store_evtchn) == 64);
    assert!(offset_of!(StartInfo, console) == 72);
    assert!(offset_of!(StartInfo, pt_base) == 88);
    assert!(offset_of!(StartInfo, nr_pt_frames) == 96);
    assert!(offset_of!(StartInfo, mfn_list) == 104);
    assert!(offset_of!(StartInfo, mod_start) == 112);
    assert!(offset_of!(StartInfo, mod_len) == 120);
    assert!(offset_of!(StartInfo, cmd_line) == 128);
    assert!(offset_of!(StartInfo, first_p2m_pfn) == 1152);
    assert!(offset_of!(StartInfo, nr_p2m_frames) == 1160);
};
