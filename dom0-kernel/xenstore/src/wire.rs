//! The wire protocol (`io/xs_wire.h`): a 16-byte header (type, request id, transaction id,
//! payload length, little-endian u32s) and at most 4096 bytes of payload.

use alloc::vec::Vec;

pub const HEADER: usize = 16;
/// `XENSTORE_PAYLOAD_MAX`: a longer message ends the connection (as Xen).
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

/// One message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Msg {
    pub ty: u32,
    pub req_id: u32,
    pub tx_id: u32,
    pub payload: Vec<u8>,
}

/// What a byte stream holds at its start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A whole message and the bytes it took.
    Msg(Msg, usize),
    /// Not all of it yet.
    More,
    /// A length over [`PAYLOAD_MAX`]: the connection is to be closed.
    TooLong,
}

impl Msg {
    pub fn new(ty: MsgType, req_id: u32, tx_id: u32, payload: Vec<u8>) -> Msg {
        Msg { ty: ty as u32, req_id, tx_id, payload }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(HEADER + self.payload.len());
        for w in [self.ty, self.req_id, self.tx_id, self.payload.len() as u32] {
            b.extend_from_slice(&w.to_le_bytes());
        }
        b.extend_from_slice(&self.payload);
        b
    }

    pub fn parse(b: &[u8]) -> Parsed {
        if b.len() < HEADER {
            return Parsed::More;
        }
        let w = |i: usize| u32::from_le_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]]);
        let len = w(3) as usize;
        if len > PAYLOAD_MAX {
            return Parsed::TooLong;
        }
        if b.len() < HEADER + len {
            return Parsed::More;
        }
        Parsed::Msg(Msg { ty: w(0), req_id: w(1), tx_id: w(2), payload: b[HEADER..HEADER + len].to_vec() }, HEADER + len)
    }
}

/// The NUL-terminated strings of a payload: `None` if it does not end in a NUL or a string
/// is not UTF-8 (every well-formed request's payload ends in one, except WRITE's value).
pub fn strings(p: &[u8]) -> Option<Vec<&str>> {
    if p.last() != Some(&0) {
        return None;
    }
    p[..p.len() - 1].split(|&b| b == 0).map(|s| core::str::from_utf8(s).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let m = Msg::new(MsgType::Write, 7, 3, b"a\0b".to_vec());
        let e = m.encode();
        assert_eq!(Msg::parse(&e[..10]), Parsed::More);
        assert_eq!(Msg::parse(&e), Parsed::Msg(m, e.len()));
        let mut big = e.clone();
        big[12..16].copy_from_slice(&4097u32.to_le_bytes());
        assert_eq!(Msg::parse(&big), Parsed::TooLong);
        assert_eq!(strings(b"a\0bc\0"), Some(alloc::vec!["a", "bc"]));
        assert_eq!(strings(b"a"), None);
    }
}
