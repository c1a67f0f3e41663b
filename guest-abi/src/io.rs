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
