//! Shared rings of the split drivers: the PV console ring (`io/console.h`) and the XenStore
//! ring and wire protocol (`io/xs_wire.h`), as offsets into their one page.

/// `struct xencons_interface`: `in[1024]` (backend → guest), `out[2048]` (guest →
/// backend), then the four free-running u32 indexes.
pub mod console {
    pub const IN: usize = 0;
    pub const IN_SIZE: u32 = 1024;
    pub const OUT: usize = 1024;
    pub const OUT_SIZE: u32 = 2048;
    pub const IN_CONS: usize = 3072;
    pub const IN_PROD: usize = 3076;
    pub const OUT_CONS: usize = 3080;
    pub const OUT_PROD: usize = 3084;
}

/// `struct xenstore_domain_interface` and the message types of `xsd_sockmsg`.
pub mod xs {
    pub const RING_SIZE: u32 = 1024;
    pub const REQ: usize = 0;
    pub const RSP: usize = 1024;
    pub const REQ_CONS: usize = 2048;
    pub const REQ_PROD: usize = 2052;
    pub const RSP_CONS: usize = 2056;
    pub const RSP_PROD: usize = 2060;
    pub const SERVER_FEATURES: usize = 2064;
    pub const CONNECTION: usize = 2068;
    pub const ERROR: usize = 2072;

    /// `XENSTORE_SERVER_FEATURE_*` (in `server_features`).
    pub const SERVER_FEATURE_RECONNECTION: u32 = 1;
    pub const SERVER_FEATURE_ERROR: u32 = 2;

    /// `XENSTORE_ERROR_*`.
    pub const ERROR_COMM: u32 = 1;
    pub const ERROR_RINGIDX: u32 = 2;
    pub const ERROR_PROTO: u32 = 3;

    /// The message header: type, request id, transaction id, payload length.
    pub const HEADER: usize = 16;
    /// `XENSTORE_PAYLOAD_MAX`.
    pub const PAYLOAD_MAX: usize = 4096;

    /// `xsd_sockmsg_type`.
    #[derive(Copy, Clone, Debug, PartialEq, Eq)]
    #[repr(u32)]
    pub enum MsgType {
        Control = 0,
        Directory = 1,
        Read = 2,
        GetPerms = 3,
        Watch = 4,
        Unwatch = 5,
        TransactionStart = 6,
        TransactionEnd = 7,
        Introduce = 8,
        Release = 9,
        GetDomainPath = 10,
        Write = 11,
        Mkdir = 12,
        Rm = 13,
        SetPerms = 14,
        WatchEvent = 15,
        Error = 16,
        IsDomainIntroduced = 17,
        Resume = 18,
        SetTarget = 19,
        ResetWatches = 21,
        DirectoryPart = 22,
    }

    impl MsgType {
        pub fn from_u32(t: u32) -> Option<MsgType> {
            use MsgType::*;
            Some(match t {
                0 => Control,
                1 => Directory,
                2 => Read,
                3 => GetPerms,
                4 => Watch,
                5 => Unwatch,
                6 => TransactionStart,
                7 => TransactionEnd,
                8 => Introduce,
                9 => Release,
                10 => GetDomainPath,
                11 => Write,
                12 => Mkdir,
                13 => Rm,
                14 => SetPerms,
                15 => WatchEvent,
                16 => Error,
                17 => IsDomainIntroduced,
                18 => Resume,
                19 => SetTarget,
                21 => ResetWatches,
                22 => DirectoryPart,
                _ => return None,
            })
        }
    }
}

/// The PV block protocol (`io/blkif.h`, 64-bit layout) and the XenBus states
/// (`io/xenbus.h`).
pub mod blkif {
    /// Requests (`operation`).
    pub const OP_READ: u8 = 0;
    pub const OP_WRITE: u8 = 1;
    pub const OP_WRITE_BARRIER: u8 = 2;
    pub const OP_FLUSH_DISKCACHE: u8 = 3;
    pub const OP_DISCARD: u8 = 5;
    pub const OP_INDIRECT: u8 = 6;

    /// Response `status`.
    pub const RSP_OKAY: i16 = 0;
    pub const RSP_ERROR: i16 = -1;
    pub const RSP_EOPNOTSUPP: i16 = -2;

    /// Segments in a direct request, and their sectors per page.
    pub const MAX_SEGMENTS_PER_REQUEST: usize = 11;
    pub const SECTORS_PER_PAGE: u8 = 8;
    /// Indirect requests: pages of segments, segments per page.
    pub const MAX_INDIRECT_PAGES: usize = 8;
    pub const SEGS_PER_INDIRECT_FRAME: usize = 4096 / 8;

    /// The shared ring page: `req_prod`, `req_event`, `rsp_prod`, `rsp_event`, 48 bytes of
    /// padding, then the entries (a request or a response each).
    pub const REQ_PROD: usize = 0;
    pub const REQ_EVENT: usize = 4;
    pub const RSP_PROD: usize = 8;
    pub const RSP_EVENT: usize = 12;
    pub const RING_HEADER: usize = 64;
    pub const ENTRY_SIZE: usize = 112;
    /// Entries of a one-page ring: the largest power of two that fits.
    pub const RING_SIZE: u32 = 32;
    const _: () = assert!(RING_HEADER + ENTRY_SIZE * RING_SIZE as usize <= 4096);
    const _: () = assert!(RING_HEADER + ENTRY_SIZE * 2 * RING_SIZE as usize > 4096);

    /// `struct blkif_request`: operation u8 @0, nr_segments u8 @1, handle u16 @2, id u64
    /// @8, sector_number u64 @16, seg[11] @24 (gref u32, first_sect u8, last_sect u8, pad).
    pub mod req {
        pub const OPERATION: usize = 0;
        pub const NR_SEGMENTS: usize = 1;
        pub const HANDLE: usize = 2;
        pub const ID: usize = 8;
        pub const SECTOR: usize = 16;
        pub const SEG: usize = 24;
        pub const SEG_SIZE: usize = 8;
    }

    /// `struct blkif_request_indirect`: operation u8 @0 (`OP_INDIRECT`), indirect_op u8 @1,
    /// nr_segments u16 @2, id u64 @8, sector_number u64 @16, handle u16 @24,
    /// indirect_grefs[8] u32 @28.
    pub mod indirect {
        pub const OP: usize = 1;
        pub const NR_SEGMENTS: usize = 2;
        pub const ID: usize = 8;
        pub const SECTOR: usize = 16;
        pub const HANDLE: usize = 24;
        pub const GREFS: usize = 28;
    }

    /// `struct blkif_response`: id u64 @0, operation u8 @8, status i16 @10.
    pub mod rsp {
        pub const ID: usize = 0;
        pub const OPERATION: usize = 8;
        pub const STATUS: usize = 10;
    }

    /// `info` bits.
    pub const VDISK_CDROM: u32 = 1;
    pub const VDISK_REMOVABLE: u32 = 2;
    pub const VDISK_READONLY: u32 = 4;

    /// `XenbusState*`.
    pub const STATE_UNKNOWN: u32 = 0;
    pub const STATE_INITIALISING: u32 = 1;
    pub const STATE_INIT_WAIT: u32 = 2;
    pub const STATE_INITIALISED: u32 = 3;
    pub const STATE_CONNECTED: u32 = 4;
    pub const STATE_CLOSING: u32 = 5;
    pub const STATE_CLOSED: u32 = 6;

    /// The protocol a 64-bit frontend names.
    pub const PROTOCOL_X86_64: &str = "x86_64-abi";
}

/// The PV network protocol (`io/netif.h`): a transmit and a receive ring of one page each
/// (the generic 64-byte header, then 256 entries), one event channel for both.
pub mod netif {
    pub use super::blkif::{REQ_EVENT, REQ_PROD, RING_HEADER, RSP_EVENT, RSP_PROD};

    /// Entries of each ring (TX: 12-byte slots, RX: 8-byte slots; 256 of either fit).
    pub const RING_SIZE: u32 = 256;
    pub const TX_ENTRY: usize = 12;
    pub const RX_ENTRY: usize = 8;
    const _: () = assert!(RING_HEADER + TX_ENTRY * RING_SIZE as usize <= 4096);
    const _: () = assert!(RING_HEADER + TX_ENTRY * 2 * RING_SIZE as usize > 4096);
    const _: () = assert!(RING_HEADER + RX_ENTRY * RING_SIZE as usize <= 4096);

    /// `struct netif_tx_request`: gref u32 @0, offset u16 @4, flags u16 @6, id u16 @8,
    /// size u16 @10 (the first slot of a packet: the whole packet's size).
    pub mod tx_req {
        pub const GREF: usize = 0;
        pub const OFFSET: usize = 4;
        pub const FLAGS: usize = 6;
        pub const ID: usize = 8;
        pub const SIZE: usize = 10;
    }
    /// `struct netif_tx_response`: id u16 @0, status i16 @2.
    pub mod tx_rsp {
        pub const ID: usize = 0;
        pub const STATUS: usize = 2;
    }
    /// `struct netif_rx_request`: id u16 @0, gref u32 @4.
    pub mod rx_req {
        pub const ID: usize = 0;
        pub const GREF: usize = 4;
    }
    /// `struct netif_rx_response`: id u16 @0, offset u16 @2, flags u16 @4, status i16 @6
    /// (the byte count when not negative).
    pub mod rx_rsp {
        pub const ID: usize = 0;
        pub const OFFSET: usize = 2;
        pub const FLAGS: usize = 4;
        pub const STATUS: usize = 6;
    }

    /// TX request flags.
    pub const NETTXF_CSUM_BLANK: u16 = 1;
    pub const NETTXF_DATA_VALIDATED: u16 = 2;
    pub const NETTXF_MORE_DATA: u16 = 4;
    pub const NETTXF_EXTRA_INFO: u16 = 8;
    /// RX response flags.
    pub const NETRXF_DATA_VALIDATED: u16 = 1;
    pub const NETRXF_CSUM_BLANK: u16 = 2;
    pub const NETRXF_MORE_DATA: u16 = 4;
    pub const NETRXF_EXTRA_INFO: u16 = 8;

    /// `struct netif_extra_info` (a slot of its own): type u8 @0, flags u8 @1.
    pub const EXTRA_TYPE_GSO: u8 = 1;
    pub const EXTRA_FLAG_MORE: u8 = 1;

    /// Response status.
    pub const RSP_DROPPED: i16 = -2;
    pub const RSP_ERROR: i16 = -1;
    pub const RSP_OKAY: i16 = 0;
    /// A slot that held extra info.
    pub const RSP_NULL: i16 = 1;

    /// The fewest slots of one packet a backend must take (`XEN_NETIF_NR_SLOTS_MIN`).
    pub const NR_SLOTS_MIN: usize = 18;
    /// The largest Ethernet frame without GSO: 1500 bytes of payload, the 14-byte header.
    pub const MAX_FRAME: usize = 1514;
    /// The smallest: an Ethernet header.
    pub const MIN_FRAME: usize = 14;
}
