//! Grant tables v1 and v2 (Xen's `public/grant_table.h`): entry flags, map flags, status codes,
//! `grant_table_op` commands and defaults.

/// `grant_table_op` commands.
pub const GNTTABOP_MAP_GRANT_REF: u64 = 0;
pub const GNTTABOP_UNMAP_GRANT_REF: u64 = 1;
pub const GNTTABOP_SETUP_TABLE: u64 = 2;
pub const GNTTABOP_DUMP_TABLE: u64 = 3;
pub const GNTTABOP_TRANSFER: u64 = 4;
pub const GNTTABOP_COPY: u64 = 5;
pub const GNTTABOP_QUERY_SIZE: u64 = 6;
pub const GNTTABOP_UNMAP_AND_REPLACE: u64 = 7;
pub const GNTTABOP_SET_VERSION: u64 = 8;
pub const GNTTABOP_GET_STATUS_FRAMES: u64 = 9;
pub const GNTTABOP_GET_VERSION: u64 = 10;
pub const GNTTABOP_SWAP_GRANT_REF: u64 = 11;

/// A v1 entry: flags u16 at 0, grantee domid u16 at 2, frame (GFN) u32 at 4.
pub const ENTRY_V1_SIZE: usize = 8;
pub const ENTRIES_PER_FRAME_V1: u32 = 4096 / ENTRY_V1_SIZE as u32;
/// A v2 entry: header (flags u16 at 0, grantee domid u16 at 2), then the frame (GFN) u64
/// at 8 of a full-page grant (`sub_page`: offset u16 at 4, length u16 at 6; `transitive`:
/// domid u16 at 4, ref u32 at 8).
pub const ENTRY_V2_SIZE: usize = 16;
pub const ENTRIES_PER_FRAME_V2: u32 = 4096 / ENTRY_V2_SIZE as u32;
/// v2 keeps `GTF_reading`/`GTF_writing` in separate status frames, one u16 per entry.
pub const STATUS_PER_FRAME: u32 = 4096 / 2;

/// The status frames a v2 table of `grant_frames` grant frames has (Xen's
/// `grant_to_status_frames`).
pub const fn status_frames(grant_frames: u32) -> u32 {
    (grant_frames * ENTRIES_PER_FRAME_V2).div_ceil(STATUS_PER_FRAME)
}

/// Refs 0-7 are reserved (0: console, 1: XenStore, filled by the domain builder).
pub const NR_RESERVED_ENTRIES: u32 = 8;
pub const RESERVED_CONSOLE: u32 = 0;
pub const RESERVED_XENSTORE: u32 = 1;

/// Entry flags (`GTF_*`): the type in bits 0-1, then subflags.
pub const GTF_INVALID: u16 = 0;
pub const GTF_PERMIT_ACCESS: u16 = 1;
pub const GTF_ACCEPT_TRANSFER: u16 = 2;
pub const GTF_TRANSITIVE: u16 = 3;
pub const GTF_TYPE_MASK: u16 = 3;
/// Set by the guest: the grantee may only read.
pub const GTF_READONLY: u16 = 1 << 2;
/// Set by Xen while the frame is mapped (or pinned for a copy) for reading / writing.
pub const GTF_READING: u16 = 1 << 3;
pub const GTF_WRITING: u16 = 1 << 4;
pub const GTF_PWT: u16 = 1 << 5;
pub const GTF_PCD: u16 = 1 << 6;
pub const GTF_PAT: u16 = 1 << 7;
pub const GTF_SUB_PAGE: u16 = 1 << 8;

/// `map_grant_ref` flags (`GNTMAP_*`).
pub const GNTMAP_DEVICE_MAP: u32 = 1 << 0;
pub const GNTMAP_HOST_MAP: u32 = 1 << 1;
pub const GNTMAP_READONLY: u32 = 1 << 2;
pub const GNTMAP_APPLICATION_MAP: u32 = 1 << 3;
pub const GNTMAP_CONTAINS_PTE: u32 = 1 << 4;

/// Per-operation status codes (`GNTST_*`).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[repr(i16)]
pub enum GntSt {
    Okay = 0,
    GeneralError = -1,
    BadDomain = -2,
    BadGntref = -3,
    BadHandle = -4,
    BadVirtAddr = -5,
    BadDevAddr = -6,
    NoDeviceSpace = -7,
    PermissionDenied = -8,
    BadPage = -9,
    BadCopyArg = -10,
    AddressTooBig = -11,
    Eagain = -12,
    NoSpace = -13,
}

/// Default limits per domain (overridable at `createdomain`).
pub const DEFAULT_MAX_GRANT_FRAMES: u32 = 64;
pub const DEFAULT_MAX_MAPTRACK_FRAMES: u32 = 1024;
