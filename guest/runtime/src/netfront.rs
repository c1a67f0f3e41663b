//! The PV network frontend (Xen's netif, `io/netif.h`), with no heap: one device per guest,
//! a transmit and a receive ring of one page each, and pages of this image granted to the
//! backend once: [`RX_BUFFERS`] receive pages (writable: the backend copies frames into
//! them) and [`TX_BUFFERS`] transmit pages (read-only: it copies frames out). A frame
//! sent is copied into a free transmit page; a frame received is copied out of its page,
//! which goes back on the ring at once. Nothing here waits but [`Netfront::wait`] and the
//! XenStore handshake. The backend (dom0's netback) copies with `GNTTABOP_copy`, so the
//! pages are granted once and never mapped by it.

use crate::pvio::{self, RingPage};
use crate::xenbus::{read_u64, Path};
use crate::{events, gnttab, xenbus, StartInfo};
use guest_abi::io::blkif::{PROTOCOL_X86_64, STATE_CLOSED, STATE_CLOSING, STATE_CONNECTED, STATE_INITIALISED};
use guest_abi::io::netif::*;

/// Receive pages posted to the backend, and transmit pages (ids 0..TX_BUFFERS).
pub const RX_BUFFERS: usize = 64;
pub const TX_BUFFERS: usize = 64;

#[repr(C, align(4096))]
struct Pages<const N: usize>([[u8; 4096]; N]);
static mut RINGS: Pages<2> = Pages([[0; 4096]; 2]);
static mut RX: Pages<RX_BUFFERS> = Pages([[0; 4096]; RX_BUFFERS]);
static mut TX: Pages<TX_BUFFERS> = Pages([[0; 4096]; TX_BUFFERS]);
static TAKEN: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

fn page_va<const N: usize>(p: *const Pages<N>, i: usize) -> u64 {
    p as u64 + 4096 * (i % N) as u64
}

fn page(va: u64) -> RingPage {
    // SAFETY: every page handed here is one of this file's statics, used by nothing but
    // the one frontend (`TAKEN`) and the backend it granted them to.
    unsafe { RingPage::new(va) }
}

pub use crate::pvio::ConnectError;

/// A connected network device.
pub struct Netfront {
    devid: u32,
    be: Path,
    tx: RingPage,
    rx: RingPage,
    port: u32,
    pub mac: [u8; 6],
    tx_grefs: [u32; TX_BUFFERS],
    rx_grefs: [u32; RX_BUFFERS],
    /// Transmit pages not on the ring (bit set = free).
    tx_free: u64,
    tx_prod: u32,
    tx_cons: u32,
    rx_prod: u32,
    rx_cons: u32,
    /// Frames the backend refused or dropped, and receive responses in error.
    pub tx_errors: u64,
    pub rx_errors: u64,
    /// The backend closed (or the device is gone): nothing more is sent or received.
    pub closed: bool,
}

const _: () = assert!(TX_BUFFERS <= 64);

/// The token of the watch on the backend's state.
const TOKEN: &str = "netfront";

fn parse_mac(b: &[u8]) -> Option<[u8; 6]> {
    let s = core::str::from_utf8(b).ok()?.trim_end_matches('\0');
    let mut m = [0u8; 6];
    let mut it = s.split(':');
    for x in m.iter_mut() {
        *x = u8::from_str_radix(it.next()?, 16).ok()?;
    }
    it.next().is_none().then_some(m)
}

impl Netfront {
    /// Connects to virtual interface `devid` (`device/vif/<devid>`): rings and pages
    /// granted, an event channel for the backend, receive pages posted, `Initialised`, then
    /// the backend's `Connected` awaited.
    pub fn connect(si: &StartInfo, devid: u32) -> Result<Netfront, ConnectError> {
        let pvio::Device { fe, be, backend } = pvio::open_device(si, &TAKEN, "vif", devid)?;
        let mut mb = [0u8; 32];
        let n = xenbus::read(Path::of(format_args!("{}/mac", fe.as_str())).as_str(), &mut mb).map_err(|_| ConnectError::Refused("no mac"))?;
        let mac = parse_mac(&mb[..n]).ok_or(ConnectError::Refused("a mac that is not one"))?;
        let mfn = |va: u64| pvio::region_mfn(si, va).ok_or(ConnectError::NoGrants);
        let grant = |va: u64, ro: bool| -> Result<u32, ConnectError> {
            // SAFETY: the pages are this image's statics, used by nothing else of the guest
            // (`TAKEN`), reached only as `RingPage`s while granted.
            Ok(unsafe { gnttab::grant_access(backend, mfn(va)?, ro) }.ok_or(ConnectError::NoGrants)?.gref())
        };
        let rings = core::ptr::addr_of!(RINGS);
        let (tx_va, rx_va) = (page_va(rings, 0), page_va(rings, 1));
        let (tx_ref, rx_ref) = (grant(tx_va, false)?, grant(rx_va, false)?);
        let mut rx_grefs = [0u32; RX_BUFFERS];
        for (i, g) in rx_grefs.iter_mut().enumerate() {
            *g = grant(page_va(core::ptr::addr_of!(RX), i), false)?;
        }
        let mut tx_grefs = [0u32; TX_BUFFERS];
        for (i, g) in tx_grefs.iter_mut().enumerate() {
            *g = grant(page_va(core::ptr::addr_of!(TX), i), true)?;
        }
        let port = events::alloc_unbound(guest_abi::DOMID_SELF, backend).map_err(|_| ConnectError::NoPort)?;
        pvio::take_port(port);
        let (tx, rx) = (page(tx_va), page(rx_va));
        for r in [tx, rx] {
            for (o, v) in [(REQ_PROD, 0), (REQ_EVENT, 1), (RSP_PROD, 0), (RSP_EVENT, 1)] {
                r.write_u32(o, v);
            }
        }
        let mut f = Netfront {
            devid,
            be,
            tx,
            rx,
            port,
            mac,
            tx_grefs,
            rx_grefs,
            tx_free: if TX_BUFFERS == 64 { !0 } else { (1 << TX_BUFFERS) - 1 },
            tx_prod: 0,
            tx_cons: 0,
            rx_prod: 0,
            rx_cons: 0,
            tx_errors: 0,
            rx_errors: 0,
            closed: false,
        };
        // Every receive page on the ring before the backend looks.
        for i in 0..RX_BUFFERS {
            f.post_rx(i as u16);
        }
        f.rx.write_u32(REQ_PROD, f.rx_prod);
        let w = |k: &str, v: core::fmt::Arguments<'_>| xenbus::write(Path::of(format_args!("{}/{}", fe.as_str(), k)).as_str(), Path::of(v).as_str().as_bytes());
        let ok = w("tx-ring-ref", format_args!("{tx_ref}")).is_ok()
            && w("rx-ring-ref", format_args!("{rx_ref}")).is_ok()
            && w("event-channel", format_args!("{port}")).is_ok()
            && w("request-rx-copy", format_args!("1")).is_ok()
            && w("feature-rx-notify", format_args!("1")).is_ok()
            && w("feature-sg", format_args!("0")).is_ok()
            && w("protocol", format_args!("{PROTOCOL_X86_64}")).is_ok();
        if !ok {
            return Err(ConnectError::Refused("writing the frontend's keys"));
        }
        let _ = xenbus::watch(Path::of(format_args!("{}/state", f.be.as_str())).as_str(), TOKEN);
        f.set_state(STATE_INITIALISED)?;
        match xenbus::await_state(Path::of(format_args!("{}/state", f.be.as_str())).as_str(), |s| s == STATE_CONNECTED || s >= STATE_CLOSING) {
            STATE_CONNECTED => {}
            _ => return Err(ConnectError::Refused("the backend did not connect")),
        }
        f.set_state(STATE_CONNECTED)?;
        Ok(f)
    }

    fn set_state(&self, s: u32) -> Result<(), ConnectError> {
        xenbus::write(Path::of(format_args!("device/vif/{}/state", self.devid)).as_str(), Path::of(format_args!("{s}")).as_str().as_bytes())
            .map_err(|_| ConnectError::Refused("writing the frontend's state"))
    }

    /// The event channel.
    pub fn port(&self) -> u32 {
        self.port
    }

    fn post_rx(&mut self, id: u16) {
        let mut e = [0u8; RX_ENTRY];
        e[rx_req::ID..rx_req::ID + 2].copy_from_slice(&id.to_le_bytes());
        e[rx_req::GREF..rx_req::GREF + 4].copy_from_slice(&self.rx_grefs[id as usize % RX_BUFFERS].to_le_bytes());
        self.rx.write(RING_HEADER + RX_ENTRY * (self.rx_prod % RING_SIZE) as usize, &e);
        self.rx_prod = self.rx_prod.wrapping_add(1);
    }

    /// Publishes `prod` on `ring` and tells the backend if it asked to be told.
    fn push(&self, ring: RingPage, prod: u32) {
        let old = ring.read_u32(REQ_PROD);
        if old == prod {
            return;
        }
        ring.write_u32(REQ_PROD, prod);
        let ev = ring.read_u32(REQ_EVENT);
        if pvio::needs_notify(prod, old, ev) {
            events::send(self.port);
        }
    }

    /// Transmit pages the backend is done with, made free again.
    fn reclaim(&mut self) {
        let prod = self.tx.read_u32(RSP_PROD);
        // A backend claiming more responses than requests: nothing is taken from it.
        if prod.wrapping_sub(self.tx_cons) > self.tx_prod.wrapping_sub(self.tx_cons) {
            return;
        }
        while self.tx_cons != prod {
            let mut r = [0u8; 4];
            self.tx.read(RING_HEADER + TX_ENTRY * (self.tx_cons % RING_SIZE) as usize, &mut r);
            self.tx_cons = self.tx_cons.wrapping_add(1);
            let (id, st) = (u16::from_le_bytes([r[0], r[1]]), i16::from_le_bytes([r[2], r[3]]));
            if st != RSP_OKAY && st != RSP_NULL {
                self.tx_errors += 1;
            }
            // Only a page on the ring comes back (a repeated or made-up id frees nothing).
            if (id as usize) < TX_BUFFERS && self.tx_free & (1 << id) == 0 {
                self.tx_free |= 1 << id;
            }
        }
    }

    /// Can a frame be sent now (a transmit page free)?
    pub fn can_send(&mut self) -> bool {
        self.reclaim();
        self.tx_free != 0 && !self.closed
    }

    /// Sends `frame` (an Ethernet frame, at most a page): false if no transmit page is
    /// free (or the device is closed).
    pub fn send(&mut self, frame: &[u8]) -> bool {
        if !self.can_send() || frame.len() > 4096 {
            return false;
        }
        let id = self.tx_free.trailing_zeros() as u16;
        self.tx_free &= !(1 << id);
        page(page_va(core::ptr::addr_of!(TX), id as usize)).write(0, frame);
        self.queue_tx(self.tx_grefs[id as usize], 0, 0, id, frame.len() as u16);
        self.push(self.tx, self.tx_prod);
        true
    }

    /// Puts a transmit request on the ring, unpublished (the hostile tests write their own).
    pub fn queue_tx(&mut self, gref: u32, offset: u16, flags: u16, id: u16, size: u16) {
        let mut e = [0u8; TX_ENTRY];
        e[tx_req::GREF..tx_req::GREF + 4].copy_from_slice(&gref.to_le_bytes());
        e[tx_req::OFFSET..tx_req::OFFSET + 2].copy_from_slice(&offset.to_le_bytes());
        e[tx_req::FLAGS..tx_req::FLAGS + 2].copy_from_slice(&flags.to_le_bytes());
        e[tx_req::ID..tx_req::ID + 2].copy_from_slice(&id.to_le_bytes());
        e[tx_req::SIZE..tx_req::SIZE + 2].copy_from_slice(&size.to_le_bytes());
        self.tx.write(RING_HEADER + TX_ENTRY * (self.tx_prod % RING_SIZE) as usize, &e);
        self.tx_prod = self.tx_prod.wrapping_add(1);
    }

    /// Publishes the transmit requests queued.
    pub fn publish_tx(&mut self) {
        self.push(self.tx, self.tx_prod);
    }

    /// The transmit ring (for tests that write its indexes themselves).
    pub fn tx_ring(&self) -> RingPage {
        self.tx
    }

    /// The receive ring (likewise).
    pub fn rx_ring(&self) -> RingPage {
        self.rx
    }

    /// Grant of transmit page `i` (for the hostile tests).
    pub fn tx_gref(&self, i: usize) -> u32 {
        self.tx_grefs[i % TX_BUFFERS]
    }

    /// Waits for the responses to every transmit request queued; how many were errors.
    pub fn drain_tx(&mut self, deadline: u64) -> u64 {
        let before = self.tx_errors;
        while self.tx_cons != self.tx_prod && !self.closed && events::system_time() < deadline {
            self.reclaim();
            if self.tx_cons == self.tx_prod {
                break;
            }
            self.tx.write_u32(RSP_EVENT, self.tx_cons.wrapping_add(1));
            self.reclaim();
            if self.tx_cons != self.tx_prod {
                self.wait(deadline);
            }
        }
        self.tx_errors - before
    }

    /// Copies the next frame received into `out`: its length (cut to `out`'s), or `None`
    /// when none is waiting. Its page goes back on the ring.
    pub fn recv(&mut self, out: &mut [u8]) -> Option<usize> {
        // At most a ring's worth of responses per call, and none past the requests posted:
        // a backend writing endless errors cannot keep the guest here.
        for _ in 0..RING_SIZE {
            let prod = self.rx.read_u32(RSP_PROD);
            if prod == self.rx_cons || prod.wrapping_sub(self.rx_cons) > self.rx_prod.wrapping_sub(self.rx_cons) {
                return None;
            }
            let mut r = [0u8; RX_ENTRY];
            self.rx.read(RING_HEADER + RX_ENTRY * (self.rx_cons % RING_SIZE) as usize, &mut r);
            self.rx_cons = self.rx_cons.wrapping_add(1);
            let id = u16::from_le_bytes([r[rx_rsp::ID], r[rx_rsp::ID + 1]]);
            let off = u16::from_le_bytes([r[rx_rsp::OFFSET], r[rx_rsp::OFFSET + 1]]) as usize;
            let flags = u16::from_le_bytes([r[rx_rsp::FLAGS], r[rx_rsp::FLAGS + 1]]);
            let st = i16::from_le_bytes([r[rx_rsp::STATUS], r[rx_rsp::STATUS + 1]]);
            let id = id % RX_BUFFERS as u16;
            let got = if st > 0 && flags & (NETRXF_MORE_DATA | NETRXF_EXTRA_INFO) == 0 && off + st as usize <= 4096 {
                let n = (st as usize).min(out.len());
                page(page_va(core::ptr::addr_of!(RX), id as usize)).read(off, &mut out[..n]);
                Some(n)
            } else {
                self.rx_errors += 1;
                None
            };
            self.post_rx(id);
            self.push(self.rx, self.rx_prod);
            if got.is_some() {
                return got;
            }
        }
        None
    }

    /// Sleeps until the backend has news (a frame, a transmit page back, a state change)
    /// or `deadline` (system time, ns; 0: none) passes. The backend closing marks the
    /// device closed.
    pub fn wait(&mut self, deadline: u64) {
        self.rx.write_u32(RSP_EVENT, self.rx_cons.wrapping_add(1));
        if self.tx_cons != self.tx_prod {
            self.tx.write_u32(RSP_EVENT, self.tx_cons.wrapping_add(1));
        }
        if self.rx.read_u32(RSP_PROD) == self.rx_cons && !self.backend_changed() && !xenbus::watch_pending() {
            pvio::wait_until(&[self.port, xenbus::port()], deadline);
        }
        self.backend_changed();
    }

    /// A watch event on the backend's state came (others are left to their drivers): the
    /// state read, the device marked closed if it is closing. Whether one came.
    fn backend_changed(&mut self) -> bool {
        let any = xenbus::take_watch(TOKEN);
        if any && read_u64(Path::of(format_args!("{}/state", self.be.as_str())).as_str()).is_none_or(|s| s as u32 >= STATE_CLOSING) {
            self.closed = true;
        }
        any
    }

    /// Closes the device: `Closing`, the backend's `Closing` or `Closed` awaited, `Closed`.
    pub fn close(&mut self) -> u32 {
        self.closed = true;
        let _ = self.set_state(STATE_CLOSING);
        let s = xenbus::await_state(Path::of(format_args!("{}/state", self.be.as_str())).as_str(), |s| s >= STATE_CLOSING);
        let _ = self.set_state(STATE_CLOSED);
        s
    }

    /// Waits until `device/vif/<devid>` exists (a device attached while the guest runs).
    pub fn await_device(si: &StartInfo, devid: u32) -> bool {
        xenbus::await_device(si, "vif", devid)
    }
}
