//! A domain's ring page (`xenstore_domain_interface`, `io/xs_wire.h`): requests flow in
//! through `req[1024]`, replies and watch events out through `rsp[1024]`; the four indexes
//! are free-running u32s (byte index mod 1024) the guest may set to anything.
//!
//! Everything the guest writes is hostile: an index pair that claims more than the ring
//! holds, or a message over the payload limit, is a broken connection, reported in the
//! page's `error` field as Xen does, and nothing past it is read.

use crate::wire::{Msg, Parsed};
use alloc::vec::Vec;

pub use guest_abi::io::xs::{CONNECTION, ERROR, ERROR_COMM, ERROR_PROTO, ERROR_RINGIDX, REQ, REQ_CONS, REQ_PROD, RING_SIZE, RSP, RSP_CONS, RSP_PROD, SERVER_FEATURES};

/// The ring page as the daemon reaches it (a mapped frame in dom0, an array in tests):
/// byte and u32 accesses at offsets within the page. Reads of guest-written words must be
/// single loads (the guest changes them concurrently).
pub trait Page {
    fn read_u32(&self, off: usize) -> u32;
    fn write_u32(&mut self, off: usize, v: u32);
    fn read(&self, off: usize, out: &mut [u8]);
    fn write(&mut self, off: usize, data: &[u8]);
}

/// Why a ring is broken.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum RingError {
    /// The indexes claim more than the ring holds.
    BadIndex,
    /// A message over the payload limit.
    Protocol,
}

impl RingError {
    pub fn code(self) -> u32 {
        match self {
            RingError::BadIndex => ERROR_RINGIDX,
            RingError::Protocol => ERROR_PROTO,
        }
    }
}

/// One domain's connection state on its ring: bytes of a request not complete yet, and
/// replies not sent yet for want of room.
#[derive(Debug, Default)]
pub struct Ring {
    partial: Vec<u8>,
    out: Vec<u8>,
    broken: Option<RingError>,
    dropped: u64,
}

/// Replies waiting for room past which no further request is taken.
pub const OUT_LIMIT: usize = 16 * 1024;
/// Bytes waiting past which watch events are dropped.
pub const EVENT_LIMIT: usize = 64 * 1024;

impl Ring {
    pub fn new() -> Ring {
        Ring::default()
    }

    pub fn broken(&self) -> Option<RingError> {
        self.broken
    }

    /// Takes what the guest produced and returns the whole requests in it (at most
    /// `max`; the rest stay for the next call). A broken ring yields nothing more, and
    /// its `error` field says why. Nothing is read while a whole request is still
    /// waiting, and no request is handed out while more than [`OUT_LIMIT`] bytes of
    /// replies wait for the guest to make room: a guest cannot make the daemon hold more
    /// than a request and a ring's worth of its input, nor pile up replies it does not
    /// read. Input is still read then, up to the end of the request it is writing: a guest
    /// waiting for room in `req` to finish a request is never left waiting while the daemon
    /// waits for it to read `rsp`.
    pub fn take(&mut self, page: &mut impl Page, max: usize) -> Vec<Msg> {
        if self.broken.is_some() {
            return Vec::new();
        }
        let paused = self.out.len() > OUT_LIMIT;
        if !matches!(Msg::parse(&self.partial), Parsed::Msg(..)) {
            let (cons, prod) = (page.read_u32(REQ_CONS), page.read_u32(REQ_PROD));
            let avail = prod.wrapping_sub(cons);
            if avail > RING_SIZE {
                return self.fail(page, RingError::BadIndex);
            }
            let mut c = cons;
            while c != prod {
                let at = (c % RING_SIZE) as usize;
                let n = ((prod.wrapping_sub(c)) as usize).min(RING_SIZE as usize - at);
                let start = self.partial.len();
                self.partial.resize(start + n, 0);
                page.read(REQ + at, &mut self.partial[start..]);
                c = c.wrapping_add(n as u32);
            }
            page.write_u32(REQ_CONS, c);
        }
        if paused {
            if Msg::parse(&self.partial) == Parsed::TooLong {
                return self.fail(page, RingError::Protocol);
            }
            return Vec::new();
        }
        self.parse(page, max)
    }

    /// The whole requests waiting in `partial` (at most `max`).
    fn parse(&mut self, page: &mut impl Page, max: usize) -> Vec<Msg> {
        let mut msgs = Vec::new();
        while msgs.len() < max {
            match Msg::parse(&self.partial) {
                Parsed::More => break,
                Parsed::TooLong => return self.fail(page, RingError::Protocol),
                Parsed::Msg(m, used) => {
                    self.partial.drain(..used);
                    msgs.push(m);
                }
            }
        }
        msgs
    }

    fn fail(&mut self, page: &mut impl Page, e: RingError) -> Vec<Msg> {
        self.broken = Some(e);
        self.partial.clear();
        self.out.clear();
        page.write_u32(ERROR, e.code());
        Vec::new()
    }

    /// Queues a reply for the guest (requests stop being taken while too many wait).
    pub fn send(&mut self, m: &Msg) {
        if self.broken.is_none() {
            self.out.extend_from_slice(&m.encode());
        }
    }

    /// Queues a watch event; dropped (and counted) while more than [`EVENT_LIMIT`] bytes
    /// wait already: a guest that does not read cannot make the daemon hold events without
    /// bound (Xen drops them too).
    pub fn send_event(&mut self, m: &Msg) {
        if self.out.len() > EVENT_LIMIT {
            self.dropped += 1;
        } else {
            self.send(m);
        }
    }

    /// Watch events dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Bytes queued but not in the ring yet.
    pub fn pending(&self) -> usize {
        self.out.len()
    }

    /// Moves queued bytes into `rsp` as far as the guest has made room; true if any moved
    /// (the guest is then to be notified).
    pub fn flush(&mut self, page: &mut impl Page) -> bool {
        let mut moved = false;
        // Until everything is out, or the ring is full as of a consumer index the guest has
        // not moved since: a guest that read while this wrote (its consumer index moved after
        // it was read here) may not have seen the ring full, and would not say it made room.
        // The guest only notifies after reading a ring this left full.
        for _ in 0..RING_SIZE {
            if self.broken.is_some() || self.out.is_empty() {
                break;
            }
            let (cons, prod) = (page.read_u32(RSP_CONS), page.read_u32(RSP_PROD));
            let used = prod.wrapping_sub(cons);
            if used > RING_SIZE {
                self.fail(page, RingError::BadIndex);
                return false;
            }
            let mut room = (RING_SIZE - used) as usize;
            let mut p = prod;
            let mut sent = 0;
            while room > 0 && sent < self.out.len() {
                let at = (p % RING_SIZE) as usize;
                let n = room.min(RING_SIZE as usize - at).min(self.out.len() - sent);
                page.write(RSP + at, &self.out[sent..sent + n]);
                sent += n;
                room -= n;
                p = p.wrapping_add(n as u32);
            }
            self.out.drain(..sent);
            page.write_u32(RSP_PROD, p);
            moved |= sent > 0;
            if page.read_u32(RSP_CONS) == cons {
                break;
            }
        }
        moved
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::MsgType;
    use alloc::vec;
    use proptest::prelude::*;

    struct Arr(Vec<u8>);

    impl Page for Arr {
        fn read_u32(&self, off: usize) -> u32 {
            u32::from_le_bytes(self.0[off..off + 4].try_into().unwrap())
        }
        fn write_u32(&mut self, off: usize, v: u32) {
            self.0[off..off + 4].copy_from_slice(&v.to_le_bytes());
        }
        fn read(&self, off: usize, out: &mut [u8]) {
            out.copy_from_slice(&self.0[off..off + out.len()]);
        }
        fn write(&mut self, off: usize, data: &[u8]) {
            self.0[off..off + data.len()].copy_from_slice(data);
        }
    }

    /// The guest's side: puts bytes in `req` as far as there is room.
    fn produce(p: &mut Arr, bytes: &[u8]) -> usize {
        let (cons, prod) = (p.read_u32(REQ_CONS), p.read_u32(REQ_PROD));
        let room = (RING_SIZE - prod.wrapping_sub(cons)) as usize;
        let n = room.min(bytes.len());
        for (i, &b) in bytes[..n].iter().enumerate() {
            p.0[REQ + (prod.wrapping_add(i as u32) % RING_SIZE) as usize] = b;
        }
        p.write_u32(REQ_PROD, prod.wrapping_add(n as u32));
        n
    }

    /// The guest's side: takes what `rsp` holds.
    fn consume(p: &mut Arr) -> Vec<u8> {
        let (cons, prod) = (p.read_u32(RSP_CONS), p.read_u32(RSP_PROD));
        let v: Vec<u8> = (0..prod.wrapping_sub(cons)).map(|i| p.0[RSP + (cons.wrapping_add(i) % RING_SIZE) as usize]).collect();
        p.write_u32(RSP_CONS, prod);
        v
    }

    proptest! {
        /// Messages of any size up to the limit, written by the guest in chunks of any size
        /// from any starting index, come out whole and in order; replies likewise.
        #[test]
        fn messages_cross_the_ring(sizes in proptest::collection::vec(0usize..4096, 1..6), chunk in 1usize..1500, start in any::<u32>()) {
            let mut p = Arr(vec![0; 4096]);
            for off in [REQ_CONS, REQ_PROD, RSP_CONS, RSP_PROD] {
                p.write_u32(off, start);
            }
            let msgs: Vec<Msg> = sizes.iter().enumerate().map(|(i, &n)| Msg::new(MsgType::Write, i as u32, 0, vec![i as u8; n])).collect();
            let stream: Vec<u8> = msgs.iter().flat_map(|m| m.encode()).collect();
            let mut r = Ring::new();
            let (mut sent, mut got) = (0, Vec::new());
            let mut back = Vec::new();
            while got.len() < msgs.len() {
                sent += produce(&mut p, &stream[sent..(sent + chunk).min(stream.len())]);
                for m in r.take(&mut p, usize::MAX) {
                    r.send(&m);
                    got.push(m);
                }
                r.flush(&mut p);
                back.extend(consume(&mut p));
                prop_assert!(r.broken().is_none());
            }
            while r.pending() > 0 {
                r.flush(&mut p);
                back.extend(consume(&mut p));
            }
            prop_assert_eq!(got, msgs);
            prop_assert_eq!(back, stream);
        }

        /// Garbage indexes and bytes never panic; indexes claiming more than the ring are a
        /// ring error, an oversized header a protocol error, and nothing is read after.
        #[test]
        fn garbage_never_breaks_the_daemon(bytes in proptest::collection::vec(any::<u8>(), 4096), take in 0usize..10) {
            let mut p = Arr(bytes);
            p.write_u32(ERROR, 0);
            let mut r = Ring::new();
            for _ in 0..take + 1 {
                let _ = r.take(&mut p, 8);
                r.send(&Msg::new(MsgType::Read, 1, 0, vec![1; 10]));
                r.flush(&mut p);
            }
            let (cons, prod) = (p.read_u32(REQ_CONS), p.read_u32(REQ_PROD));
            match r.broken() {
                Some(e) => prop_assert_eq!(p.read_u32(ERROR), e.code()),
                None => prop_assert!(prod.wrapping_sub(cons) <= RING_SIZE),
            }
        }
    }

    /// A guest whose `rsp` is full of events it has not read yet, writing a request longer
    /// than the room left in `req`: its bytes are still taken (it is waiting for room, not
    /// reading `rsp`), and the request is handed out once the replies drained.
    #[test]
    fn a_long_request_is_read_while_replies_wait() {
        let mut p = Arr(vec![0; 4096]);
        let mut r = Ring::new();
        for _ in 0..1000 {
            r.send_event(&Msg::new(MsgType::WatchEvent, 0, 0, b"/some/path\0tok\0".to_vec()));
        }
        r.flush(&mut p);
        assert!(r.pending() > OUT_LIMIT);
        let long = Msg::new(MsgType::Write, 9, 0, vec![b'x'; 3000]).encode();
        let mut sent = 0;
        for _ in 0..8 {
            sent += produce(&mut p, &long[sent..]);
            assert!(r.take(&mut p, 8).is_empty(), "no request while the replies wait");
        }
        assert_eq!(sent, long.len(), "the guest could write all of it");
        while r.pending() > 0 {
            consume(&mut p);
            r.flush(&mut p);
        }
        let got = r.take(&mut p, 8);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].payload.len(), 3000);
    }

    /// A guest that floods small requests while the daemon takes few at a time, and never
    /// reads its replies, makes it hold a bounded amount.
    #[test]
    fn a_flooding_guest_is_bounded() {
        let mut p = Arr(vec![0; 4096]);
        let mut r = Ring::new();
        let req = Msg::new(MsgType::Read, 1, 0, b"a\0".to_vec()).encode();
        let room = |p: &Arr| (RING_SIZE - p.read_u32(REQ_PROD).wrapping_sub(p.read_u32(REQ_CONS))) as usize;
        for _ in 0..10_000 {
            while room(&p) >= req.len() {
                produce(&mut p, &req);
            }
            for m in r.take(&mut p, 2) {
                r.send(&m);
                r.send_event(&m);
            }
            r.flush(&mut p);
            assert!(r.partial.len() <= 4112 + 1024, "input held: {}", r.partial.len());
            assert!(r.pending() <= EVENT_LIMIT + 2 * 4112 + OUT_LIMIT, "output held: {}", r.pending());
        }
        // Events from others' changes, to a guest that never reads: dropped past the limit.
        for _ in 0..10_000 {
            r.send_event(&Msg::new(MsgType::WatchEvent, 0, 0, b"/x\0t\0".to_vec()));
        }
        assert!(r.dropped() > 0 && r.pending() <= EVENT_LIMIT + 4112, "dropped {} pending {} broken {:?}", r.dropped(), r.pending(), r.broken());
    }

    #[test]
    fn a_claim_past_the_ring_breaks_it() {
        let mut p = Arr(vec![0; 4096]);
        p.write_u32(REQ_PROD, 5000);
        let mut r = Ring::new();
        assert!(r.take(&mut p, 8).is_empty());
        assert_eq!(r.broken(), Some(RingError::BadIndex));
        assert_eq!(p.read_u32(ERROR), ERROR_RINGIDX);
        let mut p = Arr(vec![0; 4096]);
        let mut big = Msg::new(MsgType::Write, 1, 0, vec![]).encode();
        big[12..16].copy_from_slice(&5000u32.to_le_bytes());
        produce(&mut p, &big);
        let mut r = Ring::new();
        assert!(r.take(&mut p, 8).is_empty());
        assert_eq!(p.read_u32(ERROR), ERROR_PROTO);
    }
}
