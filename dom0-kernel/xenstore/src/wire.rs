//! The wire protocol (`io/xs_wire.h`): a 16-byte header (type, request id, transaction id,
//! payload length, little-endian u32s) and at most 4096 bytes of payload.

use alloc::vec::Vec;

pub use guest_abi::io::xs::{MsgType, HEADER, PAYLOAD_MAX};

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
