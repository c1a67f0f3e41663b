//! The network backend's logic (`io/netif.h`), host-tested: `vif = [...]` entries, the
//! checks on what a frontend puts on its transmit ring, and the software switch (a
//! learning L2 bridge) that joins the vifs and dom0's own NIC.

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use guest_abi::io::netif::*;

/// A MAC address.
pub type Mac = [u8; 6];

/// One `vif = [...]` entry (xl's `key=value,...` syntax).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VifSpec {
    /// `mac=`; `None`: the toolstack makes one (Xen's OUI 00:16:3e).
    pub mac: Option<Mac>,
    /// `bridge=` (only `xenbr0`, dom0's switch, exists).
    pub bridge: String,
    /// The text as given, for messages.
    pub text: String,
}

/// The one switch dom0 runs.
pub const BRIDGE: &str = "xenbr0";

pub fn parse_mac(s: &str) -> Option<Mac> {
    let mut m = [0u8; 6];
    let mut parts = s.split(':');
    for b in m.iter_mut() {
        let p = parts.next()?;
        if p.is_empty() || p.len() > 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(m)
}

pub fn mac_text(m: &Mac) -> String {
    format!("{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5])
}

/// Parses a `vif` entry: `mac=`, `bridge=` and the keys xl takes that change nothing here
/// (`type=vif`, `model=`, `vifname=`, `script=vif-bridge`, `backend=0`/`Domain-0`).
pub fn parse_vif(s: &str) -> Result<VifSpec, String> {
    let mut v = VifSpec { mac: None, bridge: BRIDGE.into(), text: s.into() };
    for kv in s.split(',').map(str::trim).filter(|k| !k.is_empty()) {
        let (k, val) = kv.split_once('=').ok_or_else(|| format!("vif '{s}': '{kv}' is not key=value"))?;
        match (k.trim(), val.trim()) {
            ("mac", m) => {
                let mac = parse_mac(m).ok_or_else(|| format!("vif '{s}': invalid mac address '{m}'"))?;
                if mac[0] & 1 != 0 {
                    return Err(format!("vif '{s}': {m} is a multicast address"));
                }
                if mac == [0; 6] {
                    return Err(format!("vif '{s}': {m} is no address"));
                }
                v.mac = Some(mac);
            }
            ("bridge", b) if b == BRIDGE => {}
            ("bridge", b) => return Err(format!("vif '{s}': no bridge '{b}' (dom0 has {BRIDGE} only)")),
            ("type", "vif") | ("type", "ioemu") | ("script", "vif-bridge") | ("backend", "0") | ("backend", "Domain-0") => {}
            ("model", _) | ("vifname", _) => {}
            (k, val) => return Err(format!("vif '{s}': {k}={val} is not supported")),
        }
    }
    Ok(v)
}

/// The MAC the toolstack gives a vif with none in its config: Xen's OUI, then the domain
/// and the device (so a domain built again from its config keeps it).
pub fn default_mac(dom: u16, devid: u32) -> Mac {
    [0x00, 0x16, 0x3e, (dom >> 8) as u8 & 0x7f, dom as u8, devid as u8]
}

pub use crate::blkif::BadIndexes;

/// Requests between `req_cons` and the frontend's `req_prod`, or `Err` when the frontend
/// claims more than the ring can hold beyond the responses not yet pushed.
pub fn pending(req_prod: u32, req_cons: u32, rsp_prod_pvt: u32) -> Result<u32, BadIndexes> {
    crate::blkif::ring_pending(RING_SIZE, req_prod, req_cons, rsp_prod_pvt)
}

pub fn tx_offset(idx: u32) -> usize {
    RING_HEADER + TX_ENTRY * (idx % RING_SIZE) as usize
}

pub fn rx_offset(idx: u32) -> usize {
    RING_HEADER + RX_ENTRY * (idx % RING_SIZE) as usize
}

fn u16at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}

/// A transmit request slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxSlot {
    pub gref: u32,
    pub offset: u16,
    pub flags: u16,
    pub id: u16,
    pub size: u16,
}

impl TxSlot {
    pub fn parse(b: &[u8; TX_ENTRY]) -> TxSlot {
        TxSlot {
            gref: u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            offset: u16at(b, tx_req::OFFSET),
            flags: u16at(b, tx_req::FLAGS),
            id: u16at(b, tx_req::ID),
            size: u16at(b, tx_req::SIZE),
        }
    }
    pub fn bytes(&self) -> [u8; TX_ENTRY] {
        let mut b = [0u8; TX_ENTRY];
        b[0..4].copy_from_slice(&self.gref.to_le_bytes());
        b[4..6].copy_from_slice(&self.offset.to_le_bytes());
        b[6..8].copy_from_slice(&self.flags.to_le_bytes());
        b[8..10].copy_from_slice(&self.id.to_le_bytes());
        b[10..12].copy_from_slice(&self.size.to_le_bytes());
        b
    }
}

/// A piece of a packet to copy: from grant `gref` at `offset`, `len` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    pub gref: u32,
    pub offset: u16,
    pub len: u16,
}

/// The ids of a packet's slots, each with whether it held extra info.
pub type SlotIds = Vec<(u16, bool)>;

/// What the slots at the head of the transmit ring hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxPacket {
    /// A packet of `len` bytes in `pieces`; `slots` slots taken, each answered with the
    /// packet's status except the extra-info ones (`extras`: answered `RSP_NULL`).
    Frame { pieces: Vec<Piece>, len: usize, ids: SlotIds },
    /// A packet refused (`why`): its slots answered `RSP_ERROR` (extras `RSP_NULL`).
    Refused { ids: SlotIds, why: &'static str },
    /// Not all of the packet's slots are on the ring yet.
    Incomplete,
    /// Slots no frontend can mean (a chain too long, sizes that cannot add up): the ring
    /// is read no more (Linux's netback: `xenvif_fatal_tx_err`).
    Fatal(&'static str),
}

impl TxPacket {
    /// Ring slots the packet took.
    pub fn slots(&self) -> usize {
        match self {
            TxPacket::Frame { ids, .. } | TxPacket::Refused { ids, .. } => ids.len(),
            _ => 0,
        }
    }
}

/// The packet whose first slot is `slot(0)`, `avail` slots being on the ring. Extra-info
/// slots (GSO and the like) are taken and answered, but this backend offers no GSO, so a
/// packet with one is refused. Data slots must each lie inside one page; the first slot's
/// `size` is the packet's, the others' their own; a packet is at most [`MAX_FRAME`] bytes
/// and at least [`MIN_FRAME`], in at most [`NR_SLOTS_MIN`] data slots.
pub fn tx_packet(avail: u32, slot: impl Fn(u32) -> TxSlot) -> TxPacket {
    if avail == 0 {
        return TxPacket::Incomplete;
    }
    let first = slot(0);
    let mut ids: SlotIds = alloc::vec![(first.id, false)];
    let mut at = 1u32;
    let mut refuse: Option<&'static str> = None;
    if first.flags & NETTXF_EXTRA_INFO != 0 {
        // Extra-info slots follow while their MORE flag is set.
        loop {
            if at >= avail {
                return TxPacket::Incomplete;
            }
            let e = slot(at).bytes();
            ids.push((0, true));
            at += 1;
            let (ty, fl) = (e[0], e[1]);
            refuse.get_or_insert(if ty == EXTRA_TYPE_GSO { "GSO was not offered" } else { "unknown extra info" });
            if fl & EXTRA_FLAG_MORE == 0 {
                break;
            }
            if ids.len() > NR_SLOTS_MIN {
                return TxPacket::Fatal("too many extra-info slots");
            }
        }
        // An extra slot's id is its own (a `netif_extra_info` has none): answered as 0.
    }
    let mut data = alloc::vec![first];
    let mut flags = first.flags;
    while flags & NETTXF_MORE_DATA != 0 {
        if data.len() == NR_SLOTS_MIN {
            return TxPacket::Fatal("a packet in more slots than allowed");
        }
        if at >= avail {
            return TxPacket::Incomplete;
        }
        let s = slot(at);
        at += 1;
        ids.push((s.id, false));
        flags = s.flags;
        data.push(s);
    }
    let rest: usize = data[1..].iter().map(|s| s.size as usize).sum();
    let total = first.size as usize;
    if rest > total {
        return TxPacket::Fatal("the first slot's size is less than the rest");
    }
    let mut pieces = Vec::with_capacity(data.len());
    for (i, s) in data.iter().enumerate() {
        let len = if i == 0 { total - rest } else { s.size as usize };
        if s.offset as usize + len > 4096 {
            return TxPacket::Fatal("a slot crosses its page");
        }
        if len > 0 {
            pieces.push(Piece { gref: s.gref, offset: s.offset, len: len as u16 });
        }
    }
    if let Some(why) = refuse {
        return TxPacket::Refused { ids, why };
    }
    if total < MIN_FRAME {
        return TxPacket::Refused { ids, why: "shorter than an Ethernet header" };
    }
    if total > MAX_FRAME {
        return TxPacket::Refused { ids, why: "longer than the MTU (no GSO)" };
    }
    TxPacket::Frame { pieces, len: total, ids }
}

pub fn tx_response(id: u16, status: i16) -> [u8; 4] {
    let mut r = [0u8; 4];
    r[0..2].copy_from_slice(&id.to_le_bytes());
    r[2..4].copy_from_slice(&status.to_le_bytes());
    r
}

pub fn rx_response(id: u16, offset: u16, flags: u16, status: i16) -> [u8; RX_ENTRY] {
    let mut r = [0u8; RX_ENTRY];
    r[0..2].copy_from_slice(&id.to_le_bytes());
    r[2..4].copy_from_slice(&offset.to_le_bytes());
    r[4..6].copy_from_slice(&flags.to_le_bytes());
    r[6..8].copy_from_slice(&status.to_le_bytes());
    r
}

/// A receive request: (id, gref).
pub fn rx_request(b: &[u8; RX_ENTRY]) -> (u16, u32) {
    (u16at(b, rx_req::ID), u32::from_le_bytes([b[4], b[5], b[6], b[7]]))
}

/// Where the switch sends a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Out<P> {
    To(P),
    /// Every port but the one it came in on.
    Flood,
    /// Nowhere (a spoofed or invalid source, a destination on the ingress port).
    Drop(&'static str),
}

/// Why a frame from a port bound to a MAC is dropped when its source is another.
pub const SPOOFED: &str = "source is not the port's MAC";
/// Why a DHCP server's frame from a bound port (a vif) is dropped.
pub const ROGUE_DHCP: &str = "a DHCP server's answer from a vif";

/// Is `frame` an IPv4 UDP datagram from port 67 (a DHCP server's offer or ack)?
pub fn is_dhcp_server(frame: &[u8]) -> bool {
    if frame.len() < 14 + 20 + 8 || frame[12..14] != [0x08, 0x00] || frame[14] >> 4 != 4 || frame[23] != 17 {
        return false;
    }
    let ihl = (frame[14] & 0x0F) as usize * 4;
    let udp = 14 + ihl;
    ihl >= 20 && frame.len() >= udp + 8 && frame[udp..udp + 2] == [0, 67]
}

/// The software switch: a learning L2 bridge. A port may be bound to one MAC (a vif: it
/// may send with that source only, and that MAC is never learned elsewhere, so no port can
/// take another's traffic; nor may it answer as a DHCP server); the others (the uplink) learn the sources they bring, in a
/// table of at most [`Bridge::CAPACITY`] entries where the oldest goes first and entries
/// older than [`Bridge::AGE_NS`] do not count.
#[derive(Debug)]
pub struct Bridge<P: Copy + Ord> {
    bound: BTreeMap<Mac, P>,
    bound_of: BTreeMap<P, Mac>,
    learned: BTreeMap<Mac, (P, u64)>,
}

impl<P: Copy + Ord> Default for Bridge<P> {
    fn default() -> Self {
        Bridge { bound: BTreeMap::new(), bound_of: BTreeMap::new(), learned: BTreeMap::new() }
    }
}

impl<P: Copy + Ord> Bridge<P> {
    pub const CAPACITY: usize = 1024;
    pub const AGE_NS: u64 = 300_000_000_000;

    /// Port `p` sends from `mac` only: false if another port has that MAC.
    pub fn bind(&mut self, p: P, mac: Mac) -> bool {
        if self.bound.get(&mac).is_some_and(|&q| q != p) {
            return false;
        }
        self.remove(p);
        self.bound.insert(mac, p);
        self.bound_of.insert(p, mac);
        self.learned.remove(&mac);
        true
    }

    /// Port `p` leaves the switch.
    pub fn remove(&mut self, p: P) {
        if let Some(m) = self.bound_of.remove(&p) {
            self.bound.remove(&m);
        }
        self.learned.retain(|_, (q, _)| *q != p);
    }

    /// The port `frame` (from port `from`, at time `now` in ns) goes to; its source
    /// learned.
    pub fn forward(&mut self, from: P, frame: &[u8], now: u64) -> Out<P> {
        if frame.len() < MIN_FRAME {
            return Out::Drop("runt");
        }
        let dst: Mac = frame[0..6].try_into().unwrap_or([0; 6]);
        let src: Mac = frame[6..12].try_into().unwrap_or([0; 6]);
        if src[0] & 1 != 0 || src == [0; 6] {
            return Out::Drop("multicast or zero source");
        }
        match self.bound_of.get(&from) {
            Some(m) if *m != src => return Out::Drop(SPOOFED),
            // Addresses come from the uplink's network: a vif cannot hand them out.
            Some(_) if is_dhcp_server(frame) => return Out::Drop(ROGUE_DHCP),
            Some(_) => {}
            None => {
                if self.bound.contains_key(&src) {
                    return Out::Drop("source is another port's MAC");
                }
                self.learn(src, from, now);
            }
        }
        if dst[0] & 1 != 0 {
            return Out::Flood;
        }
        let to = self.bound.get(&dst).copied().or_else(|| self.learned.get(&dst).filter(|(_, t)| now.saturating_sub(*t) < Self::AGE_NS).map(|(p, _)| *p));
        match to {
            Some(p) if p == from => Out::Drop("destination is on the ingress port"),
            Some(p) => Out::To(p),
            None => Out::Flood,
        }
    }

    fn learn(&mut self, src: Mac, p: P, now: u64) {
        if !self.learned.contains_key(&src) && self.learned.len() >= Self::CAPACITY {
            if let Some(oldest) = self.learned.iter().min_by_key(|(_, (_, t))| *t).map(|(m, _)| *m) {
                self.learned.remove(&oldest);
            }
        }
        self.learned.insert(src, (p, now));
    }

    /// Entries learned (for `xl network-list`'s report and the tests).
    pub fn learned(&self) -> usize {
        self.learned.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn vifs() {
        let v = parse_vif("mac=00:16:3e:01:02:03, bridge=xenbr0,type=vif").unwrap();
        assert_eq!(v.mac, Some([0, 0x16, 0x3e, 1, 2, 3]));
        assert_eq!(parse_vif("").unwrap().mac, None);
        assert!(parse_vif("mac=01:16:3e:01:02:03").unwrap_err().contains("multicast"));
        assert!(parse_vif("mac=00:16:3e:01:02").is_err());
        assert!(parse_vif("mac=00:16:3e:01:02:03:04").is_err());
        assert!(parse_vif("mac=00:16:3e:01:02:1ff").is_err());
        assert!(parse_vif("bridge=br1").unwrap_err().contains("no bridge"));
        assert!(parse_vif("rate=10Mb/s").unwrap_err().contains("not supported"));
        assert!(parse_vif("mac").is_err());
        assert_eq!(mac_text(&default_mac(3, 0)), "00:16:3e:00:03:00");
    }

    fn s(gref: u32, offset: u16, flags: u16, id: u16, size: u16) -> TxSlot {
        TxSlot { gref, offset, flags, id, size }
    }

    #[test]
    fn packets() {
        let one = [s(9, 0, 0, 1, 60)];
        assert_eq!(tx_packet(1, |i| one[i as usize]), TxPacket::Frame { pieces: alloc::vec![Piece { gref: 9, offset: 0, len: 60 }], len: 60, ids: alloc::vec![(1, false)] });
        // A chain: the first slot's size is the whole packet's.
        let chain = [s(1, 4000, NETTXF_MORE_DATA, 1, 200), s(2, 0, 0, 2, 104)];
        let p = tx_packet(2, |i| chain[i as usize]);
        assert_eq!(p, TxPacket::Frame { pieces: alloc::vec![Piece { gref: 1, offset: 4000, len: 96 }, Piece { gref: 2, offset: 0, len: 104 }], len: 200, ids: alloc::vec![(1, false), (2, false)] });
        assert_eq!(tx_packet(1, |i| chain[i as usize]), TxPacket::Incomplete);
        assert!(matches!(tx_packet(1, |_| s(1, 0, 0, 1, 13)), TxPacket::Refused { .. }));
        assert!(matches!(tx_packet(1, |_| s(1, 0, 0, 1, 1515)), TxPacket::Refused { .. }));
        assert!(matches!(tx_packet(1, |_| s(1, 4000, 0, 1, 100)), TxPacket::Fatal(_)));
        let bad = [s(1, 0, NETTXF_MORE_DATA, 1, 10), s(2, 0, 0, 2, 100)];
        assert!(matches!(tx_packet(2, |i| bad[i as usize]), TxPacket::Fatal(_)));
        // Endless chains end at 18 slots.
        assert!(matches!(tx_packet(256, |i| s(i, 0, NETTXF_MORE_DATA, i as u16, 60)), TxPacket::Fatal(_)));
        // GSO extra info: taken, answered, the packet refused.
        let gso = [s(1, 0, NETTXF_EXTRA_INFO, 7, 100), TxSlot { gref: 1, offset: 0, flags: 0, id: 0, size: 0 }];
        match tx_packet(2, |i| gso[i as usize]) {
            TxPacket::Refused { ids, .. } => assert_eq!(ids, alloc::vec![(7, false), (0, true)]),
            p => panic!("{p:?}"),
        }
    }

    fn frame(dst: Mac, src: Mac) -> Vec<u8> {
        let mut f = alloc::vec![0u8; 60];
        f[0..6].copy_from_slice(&dst);
        f[6..12].copy_from_slice(&src);
        f
    }

    #[test]
    fn bridge() {
        let (a, b, gw) = ([0, 0x16, 0x3e, 0, 1, 0], [0, 0x16, 0x3e, 0, 2, 0], [0x52, 0x55, 10, 0, 2, 2]);
        let mut br: Bridge<u32> = Bridge::default();
        assert!(br.bind(1, a));
        assert!(br.bind(2, b));
        assert!(!br.bind(3, a));
        assert_eq!(br.forward(1, &frame([0xff; 6], a), 0), Out::Flood);
        assert_eq!(br.forward(1, &frame(b, a), 0), Out::To(2));
        assert_eq!(br.forward(1, &frame(gw, a), 0), Out::Flood);
        assert_eq!(br.forward(0, &frame(a, gw), 0), Out::To(1));
        assert_eq!(br.forward(1, &frame(gw, a), 1), Out::To(0));
        // Spoofing: a vif sending as another, the uplink claiming a vif's MAC.
        assert!(matches!(br.forward(1, &frame(gw, b), 2), Out::Drop(_)));
        assert!(matches!(br.forward(0, &frame(b, a), 2), Out::Drop(_)));
        assert_eq!(br.forward(2, &frame(a, b), 3), Out::To(1));
        // A DHCP offer from a vif: dropped; from the uplink: switched.
        let mut offer = frame([0xff; 6], a);
        offer[12..14].copy_from_slice(&[0x08, 0x00]);
        offer[14] = 0x45;
        offer[23] = 17;
        offer[34..36].copy_from_slice(&[0, 67]);
        assert!(is_dhcp_server(&offer));
        assert_eq!(br.forward(1, &offer, 3), Out::Drop(ROGUE_DHCP));
        offer[6..12].copy_from_slice(&gw);
        assert_eq!(br.forward(0, &offer, 3), Out::Flood);
        // Aged out: flooded again.
        assert_eq!(br.forward(1, &frame(gw, a), Bridge::<u32>::AGE_NS + 10), Out::Flood);
        br.remove(1);
        assert_eq!(br.forward(2, &frame(a, b), 4), Out::Flood);
    }

    proptest! {
        /// No slots make `tx_packet` panic; what it accepts is inside pages and sized as
        /// it says.
        #[test]
        fn any_slots(raw in proptest::collection::vec(any::<[u8; TX_ENTRY]>(), 1..40), avail in 0u32..40) {
            let slots: Vec<TxSlot> = raw.iter().map(TxSlot::parse).collect();
            let p = tx_packet(avail.min(slots.len() as u32), |i| slots[i as usize]);
            if let TxPacket::Frame { pieces, len, ids } = &p {
                prop_assert!(*len >= MIN_FRAME && *len <= MAX_FRAME);
                prop_assert_eq!(pieces.iter().map(|q| q.len as usize).sum::<usize>(), *len);
                prop_assert!(pieces.iter().all(|q| q.offset as usize + q.len as usize <= 4096));
                prop_assert!(ids.len() <= avail as usize);
            }
            prop_assert!(p.slots() <= avail as usize);
        }

        /// Whatever frames come in: none goes back out of its ingress port, a bound port's
        /// frames carry its MAC, a bound MAC's traffic reaches its port only, and the table
        /// stays bounded.
        #[test]
        fn switch(frames in proptest::collection::vec((0u32..4, any::<[u8; 6]>(), any::<[u8; 6]>(), 0u8..4, 0u8..4), 1..300)) {
            let macs = [[0, 0x16, 0x3e, 0, 1, 0], [0, 0x16, 0x3e, 0, 2, 0], [0, 0x16, 0x3e, 0, 3, 0]];
            let mut br: Bridge<u32> = Bridge::default();
            for (i, m) in macs.iter().enumerate() {
                prop_assert!(br.bind(i as u32 + 1, *m));
            }
            for (t, (from, rs, rd, pick_s, pick_d)) in frames.iter().enumerate() {
                let src = if *pick_s < 3 { macs[*pick_s as usize] } else { *rs };
                let dst = if *pick_d < 3 { macs[*pick_d as usize] } else { *rd };
                let out = br.forward(*from, &frame(dst, src), t as u64);
                match out {
                    Out::To(p) => {
                        prop_assert_ne!(p, *from);
                        if let Some(i) = macs.iter().position(|m| *m == dst) {
                            prop_assert_eq!(p, i as u32 + 1);
                        }
                    }
                    Out::Flood => prop_assert!(dst[0] & 1 != 0 || !macs.contains(&dst)),
                    Out::Drop(_) => {}
                }
                if *from != 0 && !matches!(out, Out::Drop(_)) {
                    prop_assert_eq!(src, macs[*from as usize - 1]);
                }
                prop_assert!(br.learned() <= Bridge::<u32>::CAPACITY);
            }
        }
    }
}
