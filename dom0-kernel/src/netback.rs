//! The network backend (Linux's netback) and dom0's software switch.
//!
//! Each `vif = [...]` entry of a domain is a virtual interface served over Xen's netif
//! rings (`io/netif.h`): a transmit ring the frontend fills with frames to send and a
//! receive ring it fills with empty granted pages. Both directions move data with
//! `GNTTABOP_copy` only: a frame sent is copied out of the frontend's pages into a buffer of
//! dom0's, a frame received is copied from a buffer of dom0's into a page the frontend
//! posted; nothing of a frontend is ever mapped but its two rings.
//!
//! The switch ([`toolstack::netif::Bridge`], `xenbr0`) joins every vif and dom0's own
//! virtio-net device (the uplink, `crate::net`): it learns where the uplink's MACs are,
//! floods broadcasts and unknown destinations, and binds each vif to its MAC, so a domain
//! can neither send as another nor draw another's traffic to itself.
//!
//! Robustness: every transmit slot is checked (`toolstack::netif::tx_packet`) before its
//! data is touched; a refused packet is answered `NETIF_RSP_ERROR`; slots no frontend can
//! mean, and ring indexes out of range, stop that ring (the device is closed). Each run of
//! a vif's task takes at most [`BUDGET`] packets, so a flooding frontend gets its share of
//! dom0 and no more; a vif whose frontend posts no receive pages has at most
//! [`RX_QUEUE`] frames queued (and all vifs together [`QUEUED_MAX`]), the rest dropped
//! and counted.

use crate::executor::{self, Task};
use alloc::boxed::Box;
use alloc::collections::{BTreeMap, VecDeque};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};
use guest_abi::evtchn::Port;
use guest_abi::io::blkif::{STATE_CLOSED, STATE_CLOSING, STATE_CONNECTED, STATE_INITIALISED, STATE_INITIALISING, STATE_INIT_WAIT};
use guest_abi::io::netif::*;
use pv_runtime::gnttab::{self, Copy, Side};
use pv_runtime::{events, println};
use toolstack::netif::{self as nif, Bridge, Mac, Out, TxPacket, TxSlot};

const TOKEN: &str = "netback";
/// Packets taken from one transmit ring per run of its task.
pub const BUDGET: usize = 64;
/// Frames waiting for a vif's receive pages at most.
pub const RX_QUEUE: usize = 128;
/// Packets copied per batch (one `GNTTABOP_copy` for all their pieces).
const BATCH: usize = 16;

#[repr(C, align(2048))]
struct Buf([u8; 2048]);

/// A frame in a buffer that never crosses a page (2 KiB, 2 KiB-aligned), so each copy
/// touches one page of dom0's.
pub struct Frame {
    b: Box<Buf>,
    len: usize,
}

impl Frame {
    pub fn new() -> Frame {
        Frame { b: Box::new(Buf([0; 2048])), len: 0 }
    }
    pub fn from(data: &[u8]) -> Option<Frame> {
        if data.len() > MAX_FRAME {
            return None;
        }
        let mut f = Frame::new();
        f.b.0[..data.len()].copy_from_slice(data);
        f.len = data.len();
        Some(f)
    }
    pub fn bytes(&self) -> &[u8] {
        &self.b.0[..self.len]
    }
    /// The machine frame and offset of byte `off` (`None` if the buffer is not in the
    /// bootstrap region, which holds dom0's heap: then the frame is not copied).
    fn local(&self, off: usize) -> Option<Side> {
        let va = self.b.0.as_ptr() as u64 + off as u64;
        let mfn = START.get().and_then(|si| pv_runtime::pvio::region_mfn(si, va & !0xFFF))?;
        Some(Side::Local { mfn, offset: (va & 0xFFF) as u16 })
    }
}

/// Frames waiting in all vifs' receive queues at most (2 KiB each: 1.5 MiB of dom0's 8 MiB
/// heap), so frontends that post no receive pages cannot run dom0 out of memory ...
pub const QUEUED_MAX: usize = 768;
/// ... beyond a reserve of this many per vif, which the cap never takes: vifs that post no
/// pages cannot take receive away from the others.
const RX_RESERVE: usize = 16;
static QUEUED: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);

/// A frame in a vif's receive queue: counted in [`QUEUED`] until it is dropped (delivered,
/// or its queue gone).
struct Queued(Frame);

impl Drop for Queued {
    fn drop(&mut self) {
        QUEUED.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A switch port.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum SwitchPort {
    Uplink,
    /// dom0's own interface (`crate::ip`).
    Local,
    Vif(u16, u32),
}

struct Conn {
    tx: usize,
    rx: usize,
    refs: (u32, u32),
    port: Port,
    tx_cons: u32,
    tx_rsp: u32,
    rx_cons: u32,
    rx_rsp: u32,
    broken: bool,
    queue: VecDeque<Queued>,
}

struct Vif {
    dom: u16,
    devid: u32,
    mac: Mac,
    fe: String,
    be: String,
    conn: Option<Conn>,
    detaching: bool,
    /// What dom0 said about this vif already ([`TOLD_CONNECT`], ...): each once, so a
    /// frontend that keeps doing it cannot flood dom0's console (the counters count).
    told: u8,
    /// Counters for `xl network-list` and the tests.
    tx_packets: u64,
    rx_packets: u64,
    refused: u64,
    dropped: u64,
}

const TOLD_CONNECT: u8 = 1;
const TOLD_SPOOF: u8 = 2;
const TOLD_DHCP: u8 = 4;
const TOLD_BROKEN: u8 = 8;

/// First time `what` happens to `v`: to be said.
fn first(v: &mut Vif, what: u8) -> bool {
    let new = v.told & what == 0;
    v.told |= what;
    new
}

static VIFS: spin::Mutex<BTreeMap<(u16, u32), Vif>> = spin::Mutex::new(BTreeMap::new());
static BRIDGE: spin::Mutex<Option<Bridge<SwitchPort>>> = spin::Mutex::new(None);
static START: spin::Once<&'static pv_runtime::StartInfo> = spin::Once::new();
/// The grant-copy paths' cost: TSC ticks spent taking frames off transmit rings (checks,
/// copy, responses) and putting them into receive pages, and the frames each moved (for
/// `xl network-list` and the benchmark, which runs under `-icount`: ticks then count
/// instructions).
static TX_COST: (AtomicU64, AtomicU64) = (AtomicU64::new(0), AtomicU64::new(0));
static RX_COST: (AtomicU64, AtomicU64) = (AtomicU64::new(0), AtomicU64::new(0));

fn account(c: &(AtomicU64, AtomicU64), t0: u64, frames: u64) {
    if frames > 0 {
        c.0.fetch_add(pv_runtime::rdtsc().wrapping_sub(t0), Ordering::Relaxed);
        c.1.fetch_add(frames, Ordering::Relaxed);
    }
}

/// (TSC ticks, frames) of the transmit and receive paths so far.
pub fn costs() -> ((u64, u64), (u64, u64)) {
    let get = |c: &(AtomicU64, AtomicU64)| (c.0.load(Ordering::Relaxed), c.1.load(Ordering::Relaxed));
    (get(&TX_COST), get(&RX_COST))
}

/// Frames the uplink could not take (said once, counted).
static UPLINK_DROPS: AtomicU64 = AtomicU64::new(0);

pub fn init(si: &'static pv_runtime::StartInfo) {
    START.call_once(|| si);
    *BRIDGE.lock() = Some(Bridge::default());
}

/// `vif = [...]` entry `spec` for domain `dom`: the device's XenStore directories, the
/// backend waiting for its frontend.
pub fn attach(dom: u16, spec: &str) -> Result<u32, String> {
    let v = nif::parse_vif(spec).map_err(|e| format!("libxl: error: {e}"))?;
    let devid = (0..).find(|d| !VIFS.lock().contains_key(&(dom, *d))).unwrap_or(0);
    let mac = v.mac.unwrap_or_else(|| nif::default_mac(dom, devid));
    if mac == [0; 6] || crate::net::mac() == Some(mac) {
        return Err(format!("libxl: error: vif '{spec}': MAC {} cannot be a vif's", nif::mac_text(&mac)));
    }
    if VIFS.lock().values().any(|o| o.mac == mac) {
        return Err(format!("libxl: error: vif '{spec}': MAC {} is another vif's", nif::mac_text(&mac)));
    }
    let (fe, be) = crate::backend::paths("vif", dom, devid);
    let mac_s = nif::mac_text(&mac);
    let be_keys: Vec<(&str, String)> = alloc::vec![
        ("frontend", fe.clone()),
        ("frontend-id", format!("{dom}")),
        ("online", "1".into()),
        ("script", "vif-bridge".into()),
        ("bridge", nif::BRIDGE.into()),
        ("mac", mac_s.clone()),
        ("handle", format!("{devid}")),
        ("type", "vif".into()),
        ("feature-sg", "0".into()),
        ("feature-gso-tcpv4", "0".into()),
        ("feature-gso-tcpv6", "0".into()),
        ("feature-rx-copy", "1".into()),
        ("feature-rx-flip", "0".into()),
        ("feature-split-event-channels", "0".into()),
        ("state", format!("{STATE_INIT_WAIT}")),
    ];
    let fe_keys: Vec<(&str, String)> = alloc::vec![
        ("backend", be.clone()),
        ("backend-id", "0".into()),
        ("handle", format!("{devid}")),
        ("mac", mac_s),
        ("state", format!("{STATE_INITIALISING}")),
    ];
    crate::backend::create(dom, &fe, &be, &be_keys, &fe_keys, TOKEN).map_err(|e| format!("libxl: error: vif '{spec}': {e}"))?;
    let vif = Vif { dom, devid, mac, fe, be, conn: None, detaching: false, told: 0, tx_packets: 0, rx_packets: 0, refused: 0, dropped: 0 };
    VIFS.lock().insert((dom, devid), vif);
    on_watches();
    Ok(devid)
}

/// The frontends' state changes since the last call.
pub fn on_watches() {
    for path in crate::xs::take_events(TOKEN) {
        let key = VIFS.lock().iter().find(|(_, v)| format!("{}/state", v.fe) == path).map(|(k, _)| *k);
        if let Some(k) = key {
            frontend_changed(k);
        }
    }
}

fn frontend_changed(key: (u16, u32)) {
    let mut vifs = VIFS.lock();
    let Some(v) = vifs.get_mut(&key) else { return };
    let Some(fs) = crate::backend::read_u32(&format!("{}/state", v.fe)) else { return };
    match fs {
        STATE_INITIALISED | STATE_CONNECTED if v.conn.is_none() && !v.detaching => match connect(v) {
            Ok(()) if BRIDGE.lock().as_mut().is_some_and(|b| b.bind(SwitchPort::Vif(v.dom, v.devid), v.mac)) => {
                crate::backend::set_state(&v.be, STATE_CONNECTED);
            }
            Ok(()) => {
                // Not reached (`attach` keeps MACs unique): an unbound port would be open to
                // spoofing, so it is not connected.
                disconnect(v);
                crate::backend::fail(&v.be, "its MAC is another port's on the switch");
            }
            Err(e) => {
                if first(v, TOLD_CONNECT) {
                    println!("netback: d{} vif{}: {}", v.dom, v.devid, e);
                }
                crate::backend::fail(&v.be, &e);
            }
        },
        STATE_CLOSING | STATE_CLOSED => {
            disconnect(v);
            crate::backend::set_state(&v.be, fs);
            if v.detaching && fs == STATE_CLOSED {
                if let Some(v) = vifs.remove(&key) {
                    crate::backend::remove(&v.fe, &v.be, TOKEN);
                }
            }
        }
        STATE_INITIALISING if v.conn.is_none() && !v.detaching => {
            let be = crate::backend::read_u32(&format!("{}/state", v.be));
            if be == Some(STATE_CLOSED) || be == Some(STATE_CLOSING) {
                crate::backend::set_state(&v.be, STATE_INIT_WAIT);
            }
        }
        _ => {}
    }
}

/// Maps the frontend's two rings and binds its event channel.
fn connect(v: &mut Vif) -> Result<(), String> {
    let rd = |k: &str| crate::backend::read_u32(&format!("{}/{k}", v.fe));
    let tx_ref = rd("tx-ring-ref").ok_or("no tx-ring-ref")?;
    let rx_ref = rd("rx-ring-ref").ok_or("no rx-ring-ref")?;
    let evtchn = rd("event-channel").ok_or("no event-channel (split event channels are not offered)")?;
    if rd("request-rx-copy") != Some(1) {
        return Err("the frontend does not ask for request-rx-copy (page flipping is not served)".into());
    }
    if rd("multi-queue-num-queues").is_some_and(|n| n > 1) {
        return Err("multi-queue is not offered".into());
    }
    let (tx, port) = crate::rings::connect(v.dom, tx_ref, evtchn, "network tx")?;
    let rx = match crate::rings::map(v.dom, rx_ref) {
        Ok(s) => s,
        Err(e) => {
            events::close(port);
            crate::rings::unmap(tx);
            return Err(format!("mapping d{}'s network rx ring failed: {}", v.dom, crate::xl::errno(e)));
        }
    };
    if !executor::register(port, Task::Vif(v.dom, v.devid)) {
        events::close(port);
        crate::rings::unmap(tx);
        crate::rings::unmap(rx);
        return Err(format!("port {port} is past what dom0 serves"));
    }
    v.conn = Some(Conn { tx, rx, refs: (tx_ref, rx_ref), port, tx_cons: 0, tx_rsp: 0, rx_cons: 0, rx_rsp: 0, broken: false, queue: VecDeque::new() });
    Ok(())
}

fn disconnect(v: &mut Vif) {
    if let Some(b) = BRIDGE.lock().as_mut() {
        b.remove(SwitchPort::Vif(v.dom, v.devid));
    }
    let Some(c) = v.conn.take() else { return };
    executor::unregister(c.port);
    events::close(c.port);
    for r in [c.tx, c.rx] {
        if crate::rings::unmap(r) != 0 {
            println!("netback: d{}: unmapping a ring failed: the domain lingers once destroyed", v.dom);
        }
    }
}

/// `dom`'s vif `devid` had an event: frames it sent taken and switched, frames queued for
/// it delivered into the pages it posted. True if it left packets for the next run.
pub fn on_event(dom: u16, devid: u32) -> bool {
    let mut vifs = VIFS.lock();
    let Some(v) = vifs.get_mut(&(dom, devid)) else { return false };
    let (frames, more) = take_tx(v);
    let from = SwitchPort::Vif(dom, devid);
    deliver(&mut vifs, from, frames);
    if let Some(v) = vifs.get_mut(&(dom, devid)) {
        flush_rx(v);
    }
    more
}

/// Frames from the uplink (dom0's NIC) into the switch.
pub fn from_uplink(frames: Vec<Vec<u8>>) {
    let frames: Vec<Frame> = frames.iter().filter_map(|f| Frame::from(f)).collect();
    if frames.is_empty() {
        return;
    }
    let mut vifs = VIFS.lock();
    deliver(&mut vifs, SwitchPort::Uplink, frames);
}

/// dom0's own interface joins the switch with MAC `mac`.
pub fn bind_local(mac: Mac) {
    if let Some(b) = BRIDGE.lock().as_mut() {
        b.bind(SwitchPort::Local, mac);
    }
}

/// Frames from dom0's own interface into the switch.
pub fn from_local(frames: Vec<Vec<u8>>) {
    let frames: Vec<Frame> = frames.iter().filter_map(|f| Frame::from(f)).collect();
    if frames.is_empty() {
        return;
    }
    let mut vifs = VIFS.lock();
    deliver(&mut vifs, SwitchPort::Local, frames);
}

/// Switches `frames` (from port `from`) to their ports.
fn deliver(vifs: &mut BTreeMap<(u16, u32), Vif>, from: SwitchPort, frames: Vec<Frame>) {
    let now = events::system_time();
    let mut touched: Vec<(u16, u32)> = Vec::new();
    for f in frames {
        let out = match BRIDGE.lock().as_mut() {
            Some(b) => b.forward(from, f.bytes(), now),
            None => Out::Drop("no switch"),
        };
        match out {
            Out::To(SwitchPort::Uplink) => uplink_send(&f),
            Out::To(SwitchPort::Local) => crate::ip::input(f.bytes()),
            Out::To(SwitchPort::Vif(d, n)) => to_vif(vifs, (d, n), f, &mut touched),
            Out::Flood => {
                if from != SwitchPort::Uplink {
                    uplink_send(&f);
                }
                if from != SwitchPort::Local && crate::ip::on() {
                    crate::ip::input(f.bytes());
                }
                let keys: Vec<(u16, u32)> = vifs.keys().copied().filter(|k| SwitchPort::Vif(k.0, k.1) != from).collect();
                for k in keys {
                    if let Some(copy) = Frame::from(f.bytes()) {
                        to_vif(vifs, k, copy, &mut touched);
                    }
                }
            }
            Out::Drop(why) => {
                if let SwitchPort::Vif(d, n) = from {
                    if let Some(v) = vifs.get_mut(&(d, n)) {
                        v.dropped += 1;
                        // A frame not from the vif's own MAC, or a DHCP server's, is said
                        // once per vif (the rest are counted in `xl network-list`).
                        if why == nif::SPOOFED && first(v, TOLD_SPOOF) {
                            let src: Mac = f.bytes()[6..12].try_into().unwrap_or([0; 6]);
                            println!("netback: d{d} vif{n}: a frame from {}, not the vif's MAC: dropped", nif::mac_text(&src));
                        }
                        if why == nif::ROGUE_DHCP && first(v, TOLD_DHCP) {
                            println!("netback: d{d} vif{n}: {}: dropped", nif::ROGUE_DHCP);
                        }
                    }
                }
            }
        }
    }
    for k in touched {
        if let Some(v) = vifs.get_mut(&k) {
            flush_rx(v);
        }
    }
}

/// Queues `f` for vif `k` (dropped, and counted, when its queue is full).
fn to_vif(vifs: &mut BTreeMap<(u16, u32), Vif>, k: (u16, u32), f: Frame, touched: &mut Vec<(u16, u32)>) {
    let Some(v) = vifs.get_mut(&k) else { return };
    let Some(c) = v.conn.as_mut() else { return };
    // (Under the VIFS lock: the count cannot move between the test and the add.)
    let full = c.queue.len() >= RX_QUEUE || c.broken || (c.queue.len() >= RX_RESERVE && QUEUED.load(Ordering::Relaxed) >= QUEUED_MAX);
    if full {
        v.dropped += 1;
        return;
    }
    QUEUED.fetch_add(1, Ordering::Relaxed);
    c.queue.push_back(Queued(f));
    if !touched.contains(&k) {
        touched.push(k);
    }
}

fn uplink_send(f: &Frame) {
    if !crate::net::send(f.bytes()) && UPLINK_DROPS.fetch_add(1, Ordering::Relaxed) == 0 {
        println!("netback: the uplink's queue is full (or there is no uplink): frames to it are dropped");
    }
}

/// The ring broke: read no more, the frontend told.
fn broke(v: &mut Vif, why: &str) {
    if let Some(c) = v.conn.as_mut() {
        c.broken = true;
        c.queue.clear();
    }
    v.refused += 1;
    if first(v, TOLD_BROKEN) {
        println!("netback: d{} vif{}: {}: the ring is read no more", v.dom, v.devid, why);
    }
    crate::backend::fail(&v.be, why);
}

/// Takes up to [`BUDGET`] packets off the transmit ring, copies them into dom0's frames
/// and answers their slots: the good frames, and whether the budget ran out.
fn take_tx(v: &mut Vif) -> (Vec<Frame>, bool) {
    let mut out = Vec::new();
    let dom = v.dom;
    let Some(c) = v.conn.as_mut().filter(|c| !c.broken) else { return (out, false) };
    let t0 = pv_runtime::rdtsc();
    let page = crate::rings::page(c.tx);
    let mut taken = 0;
    let mut more = false;
    let mut fatal: Option<String> = None;
    let mut refused = 0u64;
    let mut rechecks = 0;
    loop {
        // One batch: up to BATCH packets' pieces in one copy.
        let mut batch: Vec<(Frame, nif::SlotIds)> = Vec::new();
        let mut ops: Vec<Copy> = Vec::new();
        let mut owner: Vec<usize> = Vec::new();
        while batch.len() < BATCH {
            if taken == BUDGET {
                more = true;
                break;
            }
            let rp = page.u32(REQ_PROD);
            let avail = match nif::pending(rp, c.tx_cons, c.tx_rsp) {
                Ok(n) => n,
                Err(nif::BadIndexes) => {
                    fatal = Some(format!("transmit ring indexes out of range (req_prod {rp}, req_cons {})", c.tx_cons));
                    break;
                }
            };
            if avail == 0 {
                // Ask for an event at the next request, then look once more; a producer
                // that moves again after that is served at the next run (a frontend
                // flipping `req_prod` cannot hold dom0 here).
                page.set_u32(REQ_EVENT, c.tx_cons.wrapping_add(1));
                if page.u32(REQ_PROD) == c.tx_cons {
                    break;
                }
                rechecks += 1;
                if rechecks > 2 {
                    more = true;
                    break;
                }
                continue;
            }
            let slot = |i: u32| {
                let mut e = [0u8; TX_ENTRY];
                crate::rings::read(c.tx, nif::tx_offset(c.tx_cons.wrapping_add(i)), &mut e);
                TxSlot::parse(&e)
            };
            match nif::tx_packet(avail, slot) {
                TxPacket::Incomplete => {
                    // Told when the rest of the packet is there; if it came meanwhile, the
                    // next run takes it.
                    page.set_u32(REQ_EVENT, c.tx_cons.wrapping_add(avail + 1));
                    more = page.u32(REQ_PROD) != rp;
                    break;
                }
                TxPacket::Fatal(why) => {
                    fatal = Some(why.into());
                    break;
                }
                TxPacket::Refused { ids, .. } => {
                    c.tx_cons = c.tx_cons.wrapping_add(ids.len() as u32);
                    respond_tx(c, &ids, RSP_ERROR);
                    refused += 1;
                    taken += 1;
                }
                TxPacket::Frame { pieces, len, ids } => {
                    c.tx_cons = c.tx_cons.wrapping_add(ids.len() as u32);
                    let mut f = Frame::new();
                    f.len = len;
                    // Where each piece lands in dom0's buffer (the heap is in the bootstrap
                    // region, so this is never `None`; if it were, the packet is refused).
                    let mut at = 0;
                    let dsts: Option<Vec<Side>> = pieces
                        .iter()
                        .map(|p| {
                            let d = f.local(at);
                            at += p.len as usize;
                            d
                        })
                        .collect();
                    let Some(dsts) = dsts else {
                        respond_tx(c, &ids, RSP_ERROR);
                        refused += 1;
                        taken += 1;
                        continue;
                    };
                    for (p, dst) in pieces.iter().zip(dsts) {
                        ops.push(Copy { src: Side::Grant { dom, gref: p.gref, offset: p.offset }, dst, len: p.len });
                        owner.push(batch.len());
                    }
                    batch.push((f, ids));
                    taken += 1;
                }
            }
        }
        let full = batch.len() == BATCH;
        if !batch.is_empty() {
            let mut st = alloc::vec![0i16; ops.len()];
            let rc = gnttab::copy(&ops, &mut st);
            for (i, (f, ids)) in batch.into_iter().enumerate() {
                let ok = rc == 0 && owner.iter().zip(&st).all(|(&o, &s)| o != i || s == 0);
                respond_tx(c, &ids, if ok { RSP_OKAY } else { RSP_ERROR });
                if ok {
                    out.push(f);
                } else {
                    refused += 1;
                }
            }
        }
        if fatal.is_some() || more || !full {
            break;
        }
    }
    push(c, c.tx, c.tx_rsp);
    account(&TX_COST, t0, out.len() as u64);
    v.tx_packets += out.len() as u64;
    v.refused += refused;
    if let Some(why) = fatal {
        broke(v, &why);
    }
    (out, more)
}

fn respond_tx(c: &mut Conn, ids: &[(u16, bool)], status: i16) {
    for &(id, extra) in ids {
        let r = nif::tx_response(id, if extra { RSP_NULL } else { status });
        crate::rings::write(c.tx, nif::tx_offset(c.tx_rsp), &r);
        c.tx_rsp = c.tx_rsp.wrapping_add(1);
    }
}

/// Publishes responses up to `rsp` on ring slot `ring` and notifies the frontend if it
/// asked to be (`RING_PUSH_RESPONSES_AND_CHECK_NOTIFY`).
fn push(c: &Conn, ring: usize, rsp: u32) {
    crate::rings::push_responses(ring, rsp, c.port);
}

/// Frames queued for `v` copied into the receive pages its frontend posted.
fn flush_rx(v: &mut Vif) {
    let dom = v.dom;
    let Some(c) = v.conn.as_mut().filter(|c| !c.broken) else { return };
    let t0 = pv_runtime::rdtsc();
    let page = crate::rings::page(c.rx);
    let mut delivered = 0u64;
    let mut fatal = None;
    let mut rechecks = 0;
    while !c.queue.is_empty() {
        let rp = page.u32(REQ_PROD);
        let avail = match nif::pending(rp, c.rx_cons, c.rx_rsp) {
            Ok(n) => n as usize,
            Err(nif::BadIndexes) => {
                fatal = Some(format!("receive ring indexes out of range (req_prod {rp}, req_cons {})", c.rx_cons));
                break;
            }
        };
        if avail == 0 {
            // Told when the frontend posts its next page (looked at once more, at most
            // twice: the next delivery or event tries again).
            page.set_u32(REQ_EVENT, c.rx_cons.wrapping_add(1));
            rechecks += 1;
            if page.u32(REQ_PROD) == c.rx_cons || rechecks > 2 {
                break;
            }
            continue;
        }
        // Progress: the frontend posting pages as they are filled is not a recheck.
        rechecks = 0;
        let n = avail.min(c.queue.len()).min(BATCH);
        let mut ops = Vec::with_capacity(n);
        let mut ids = Vec::with_capacity(n);
        // Each frame with its buffer (a frame without one, never expected, is dropped).
        let frames: Vec<(Queued, Side)> = c.queue.drain(..n).filter_map(|q| q.0.local(0).map(|src| (q, src))).collect();
        let n = frames.len();
        for (q, src) in &frames {
            let mut e = [0u8; RX_ENTRY];
            crate::rings::read(c.rx, nif::rx_offset(c.rx_cons), &mut e);
            c.rx_cons = c.rx_cons.wrapping_add(1);
            let (id, gref) = nif::rx_request(&e);
            ids.push(id);
            ops.push(Copy { src: *src, dst: Side::Grant { dom, gref, offset: 0 }, len: q.0.len as u16 });
        }
        let mut st = alloc::vec![0i16; n];
        let rc = gnttab::copy(&ops, &mut st);
        for (i, (q, _)) in frames.iter().enumerate() {
            let f = &q.0;
            let ok = rc == 0 && st[i] == 0;
            let r = nif::rx_response(ids[i], 0, 0, if ok { f.len as i16 } else { RSP_ERROR });
            crate::rings::write(c.rx, nif::rx_offset(c.rx_rsp), &r);
            c.rx_rsp = c.rx_rsp.wrapping_add(1);
            if ok {
                delivered += 1;
            }
        }
    }
    push(c, c.rx, c.rx_rsp);
    account(&RX_COST, t0, delivered);
    v.rx_packets += delivered;
    if let Some(why) = fatal {
        broke(v, &why);
    }
}

/// `xl destroy` (and every end of a domain): its vifs disconnected and forgotten.
pub fn remove(dom: u16) {
    let mut vifs = VIFS.lock();
    let keys: Vec<(u16, u32)> = vifs.keys().filter(|k| k.0 == dom).copied().collect();
    for k in keys {
        if let Some(mut v) = vifs.remove(&k) {
            disconnect(&mut v);
            crate::backend::remove(&v.fe, &v.be, TOKEN);
        }
    }
}

/// `xl network-detach`: the backend asks the frontend to close; the vif goes when it has
/// (at once if it never connected, or with `force`).
pub fn detach(dom: u16, which: &str, force: bool) -> Result<(), String> {
    let mut vifs = VIFS.lock();
    let key = vifs
        .values()
        .find(|v| v.dom == dom && (which.parse::<u32>().ok() == Some(v.devid) || nif::parse_mac(which) == Some(v.mac)))
        .map(|v| (v.dom, v.devid))
        .ok_or_else(|| format!("libxl: error: domain {dom} has no vif {which}"))?;
    let Some(v) = vifs.get_mut(&key) else { return Ok(()) };
    v.detaching = true;
    if force || v.conn.is_none() {
        if let Some(mut v) = vifs.remove(&key) {
            disconnect(&mut v);
            crate::backend::remove(&v.fe, &v.be, TOKEN);
        }
        return Ok(());
    }
    crate::backend::set_state(&v.be, STATE_CLOSING);
    Ok(())
}

/// One line of `xl network-list`.
#[derive(Debug)]
pub struct Listed {
    pub devid: u32,
    pub mac: String,
    pub state: u32,
    pub port: Option<Port>,
    pub refs: Option<(u32, u32)>,
    pub be: String,
    pub counters: (u64, u64, u64, u64),
}

pub fn list(dom: u16) -> Vec<Listed> {
    VIFS.lock()
        .values()
        .filter(|v| v.dom == dom)
        .map(|v| Listed {
            devid: v.devid,
            mac: nif::mac_text(&v.mac),
            state: crate::backend::read_u32(&format!("{}/state", v.be)).unwrap_or(0),
            port: v.conn.as_ref().map(|c| c.port),
            refs: v.conn.as_ref().map(|c| c.refs),
            be: v.be.clone(),
            counters: (v.tx_packets, v.rx_packets, v.refused, v.dropped),
        })
        .collect()
}
