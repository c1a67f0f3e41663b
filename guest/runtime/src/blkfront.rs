//! The PV block frontend (Xen's blkif, `io/blkif.h`), with no heap: one device per guest,
//! a one-page ring and 32 data pages of this image granted to the backend once
//! (`feature-persistent`), so a request only copies. Requests of up to 11 segments go in
//! the ring entry, longer ones (up to the backend's `feature-max-indirect-segments`, at
//! most 32) through an indirect page. The plain calls wait for their response on the
//! device's event channel (`SCHEDOP_poll`); [`Blkfront::start`] and
//! [`Blkfront::next_response`] keep several in flight. XenStore states are awaited through
//! a watch.

use crate::pvio::{self, RingPage};
use crate::xenbus::{read_u64, Path};
use crate::{events, gnttab, xenbus, StartInfo};
use guest_abi::io::blkif::*;

/// Data pages (each a segment of 8 sectors).
pub const DATA_PAGES: usize = 32;
const SECTOR: usize = 512;

#[repr(C, align(4096))]
struct Pages<const N: usize>([[u8; 4096]; N]);
static mut RING_PAGE: Pages<1> = Pages([[0; 4096]; 1]);
static mut DATA: Pages<DATA_PAGES> = Pages([[0; 4096]; DATA_PAGES]);
/// Indirect pages: one per indirect request in flight.
pub const INDIRECT_PAGES: usize = 4;
static mut INDIRECT: Pages<INDIRECT_PAGES> = Pages([[0; 4096]; INDIRECT_PAGES]);
static TAKEN: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

fn data_va(i: usize) -> u64 {
    core::ptr::addr_of!(DATA) as u64 + 4096 * (i % DATA_PAGES) as u64
}

fn data(i: usize) -> RingPage {
    // SAFETY: the data pages are this image's, used by nothing but the one frontend
    // (`TAKEN`) and the backend it granted them to.
    unsafe { RingPage::new(data_va(i)) }
}

pub use crate::pvio::ConnectError;

/// A connected block device.
pub struct Blkfront {
    devid: u32,
    be: Path,
    ring: RingPage,
    port: u32,
    data_grefs: [u32; DATA_PAGES],
    indirect_grefs: [u32; INDIRECT_PAGES],
    req_prod_pvt: u32,
    rsp_cons: u32,
    next_id: u64,
    pub sectors: u64,
    pub readonly: bool,
    pub flush: bool,
    /// Segments an indirect request may carry (0: the backend has none).
    pub max_indirect: u32,
}

impl Blkfront {
    /// Connects to virtual device `devid` (`device/vbd/<devid>`): ring and data pages
    /// granted, an event channel for the backend, `Initialised`, then the backend's
    /// `Connected` awaited and the disk's size read.
    pub fn connect(si: &StartInfo, devid: u32) -> Result<Blkfront, ConnectError> {
        let pvio::Device { fe, be, backend } = pvio::open_device(si, &TAKEN, "vbd", devid)?;
        let mfn = |va: u64| pvio::region_mfn(si, va).ok_or(ConnectError::NoGrants);
        let ring_va = core::ptr::addr_of!(RING_PAGE) as u64;
        // SAFETY: the pages are this image's and nothing else uses them (`TAKEN`); the
        // backend may change them while granted, and they are only reached as `RingPage`s.
        let ring_g = unsafe { gnttab::grant_access(backend, mfn(ring_va)?, false) }.ok_or(ConnectError::NoGrants)?;
        let mut data_grefs = [0u32; DATA_PAGES];
        for (i, g) in data_grefs.iter_mut().enumerate() {
            // SAFETY: as above.
            *g = unsafe { gnttab::grant_access(backend, mfn(data_va(i))?, false) }.ok_or(ConnectError::NoGrants)?.gref();
        }
        let mut indirect_grefs = [0u32; INDIRECT_PAGES];
        for (i, g) in indirect_grefs.iter_mut().enumerate() {
            let va = core::ptr::addr_of!(INDIRECT) as u64 + 4096 * i as u64;
            // SAFETY: as above (read-only for the backend).
            *g = unsafe { gnttab::grant_access(backend, mfn(va)?, true) }.ok_or(ConnectError::NoGrants)?.gref();
        }
        let port = events::alloc_unbound(guest_abi::DOMID_SELF, backend).map_err(|_| ConnectError::NoPort)?;
        pvio::take_port(port);
        // SAFETY: as above.
        let ring = unsafe { RingPage::new(ring_va) };
        // SHARED_RING_INIT: both sides ask for an event at the first entry.
        for (o, v) in [(REQ_PROD, 0), (REQ_EVENT, 1), (RSP_PROD, 0), (RSP_EVENT, 1)] {
            ring.write_u32(o, v);
        }
        let w = |k: &str, v: core::fmt::Arguments<'_>| xenbus::write(Path::of(format_args!("{}/{}", fe.as_str(), k)).as_str(), Path::of(v).as_str().as_bytes());
        let ok = w("ring-ref", format_args!("{}", ring_g.gref())).is_ok()
            && w("event-channel", format_args!("{port}")).is_ok()
            && w("protocol", format_args!("{PROTOCOL_X86_64}")).is_ok()
            && w("feature-persistent", format_args!("1")).is_ok();
        if !ok {
            return Err(ConnectError::Refused("writing the frontend's keys"));
        }
        let mut f = Blkfront { devid, be, ring, port, data_grefs, indirect_grefs, req_prod_pvt: 0, rsp_cons: 0, next_id: 1, sectors: 0, readonly: false, flush: false, max_indirect: 0 };
        let _ = xenbus::watch(Path::of(format_args!("{}/state", f.be.as_str())).as_str(), "blkfront");
        f.set_state(STATE_INITIALISED)?;
        match f.await_backend(|s| s == STATE_CONNECTED || s >= STATE_CLOSING) {
            STATE_CONNECTED => {}
            _ => return Err(ConnectError::Refused("the backend did not connect")),
        }
        let rd = |k: &str| read_u64(Path::of(format_args!("{}/{}", f.be.as_str(), k)).as_str());
        f.sectors = rd("sectors").unwrap_or(0);
        f.readonly = rd("info").unwrap_or(0) as u32 & VDISK_READONLY != 0;
        f.flush = rd("feature-flush-cache") == Some(1);
        f.max_indirect = (rd("feature-max-indirect-segments").unwrap_or(0) as u32).min(DATA_PAGES as u32);
        f.set_state(STATE_CONNECTED)?;
        Ok(f)
    }

    fn set_state(&self, s: u32) -> Result<(), ConnectError> {
        xenbus::write(Path::of(format_args!("device/vbd/{}/state", self.devid)).as_str(), Path::of(format_args!("{s}")).as_str().as_bytes())
            .map_err(|_| ConnectError::Refused("writing the frontend's state"))
    }

    /// The backend's state once `done` holds for it (woken by the watch on it).
    fn await_backend(&self, done: impl Fn(u32) -> bool) -> u32 {
        xenbus::await_state(Path::of(format_args!("{}/state", self.be.as_str())).as_str(), done)
    }

    /// The event channel (for tests that drive the ring themselves).
    pub fn port(&self) -> u32 {
        self.port
    }

    /// Grant reference of data page `i`.
    pub fn data_gref(&self, i: usize) -> u32 {
        self.data_grefs[i % DATA_PAGES]
    }

    /// The ring page (for tests that write it themselves).
    pub fn ring(&self) -> RingPage {
        self.ring
    }

    /// Puts `entry` on the ring (its id replaced by a fresh one), tells the backend and
    /// waits for the response: its status.
    pub fn raw(&mut self, entry: &[u8; ENTRY_SIZE]) -> i16 {
        let id = self.push(entry);
        self.response(id)
    }

    /// Puts `entry` on the ring with a fresh id and publishes it: the id.
    fn push(&mut self, entry: &[u8; ENTRY_SIZE]) -> u64 {
        let id = self.queue(entry);
        self.publish();
        id
    }

    /// Puts `entry` on the ring with a fresh id, not yet published ([`Blkfront::publish`]).
    fn queue(&mut self, entry: &[u8; ENTRY_SIZE]) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let mut e = *entry;
        let at = if e[0] == OP_INDIRECT { indirect::ID } else { req::ID };
        e[at..at + 8].copy_from_slice(&id.to_le_bytes());
        self.ring.write(RING_HEADER + ENTRY_SIZE * (self.req_prod_pvt % RING_SIZE) as usize, &e);
        self.req_prod_pvt = self.req_prod_pvt.wrapping_add(1);
        id
    }

    /// Publishes the requests queued and tells the backend if it asked to be told
    /// (`req_event` among the new ones: `RING_PUSH_REQUESTS_AND_CHECK_NOTIFY`).
    pub fn publish(&mut self) {
        let old = self.ring.read_u32(REQ_PROD);
        let new = self.req_prod_pvt;
        if old == new {
            return;
        }
        self.ring.write_u32(REQ_PROD, new);
        let ev = self.ring.read_u32(REQ_EVENT);
        if pvio::needs_notify(new, old, ev) {
            events::send(self.port);
        }
    }

    /// Waits for the response to request `id` (responses to others are dropped).
    fn response(&mut self, id: u64) -> i16 {
        loop {
            let (got, st) = self.next_response();
            if got == id {
                return st;
            }
        }
    }

    /// Waits for the next response: its request's id and status.
    /// Requests queued ([`Blkfront::start`]) are published first.
    pub fn next_response(&mut self) -> (u64, i16) {
        self.publish();
        loop {
            if self.ring.read_u32(RSP_PROD) != self.rsp_cons {
                let mut r = [0u8; 16];
                self.ring.read(RING_HEADER + ENTRY_SIZE * (self.rsp_cons % RING_SIZE) as usize, &mut r);
                self.rsp_cons = self.rsp_cons.wrapping_add(1);
                return (u64::from_le_bytes(r[..8].try_into().unwrap_or([0; 8])), i16::from_le_bytes([r[rsp::STATUS], r[rsp::STATUS + 1]]));
            }
            // Ask for an event at the next response, then look once more before sleeping
            // (RING_FINAL_CHECK_FOR_RESPONSES).
            self.ring.write_u32(RSP_EVENT, self.rsp_cons.wrapping_add(1));
            if self.ring.read_u32(RSP_PROD) == self.rsp_cons {
                pvio::wait(&[self.port]);
            }
        }
    }

    /// Starts a read or write of `sectors` sectors at `sector` through data pages
    /// `first_page..` (direct up to 11 pages, indirect beyond, with indirect page `ind`),
    /// without waiting (queued: published with the next [`Blkfront::publish`] or
    /// [`Blkfront::next_response`]): its id ([`Blkfront::next_response`] brings its status). The data
    /// pages are the caller's to fill before a write and read after a read
    /// ([`Blkfront::page_write`], [`Blkfront::page_read`]).
    pub fn start(&mut self, write: bool, sector: u64, sectors: usize, first_page: usize, ind: usize) -> u64 {
        let pages = sectors.div_ceil(8);
        let seg = |k: usize| {
            let last = if k + 1 == pages && !sectors.is_multiple_of(8) { (sectors % 8 - 1) as u8 } else { 7 };
            let mut s = [0u8; 8];
            s[..4].copy_from_slice(&self.data_grefs[(first_page + k) % DATA_PAGES].to_le_bytes());
            s[5] = last;
            s
        };
        let op = if write { OP_WRITE } else { OP_READ };
        let mut e = [0u8; ENTRY_SIZE];
        if pages <= MAX_SEGMENTS_PER_REQUEST {
            e[req::OPERATION] = op;
            e[req::NR_SEGMENTS] = pages as u8;
            e[req::SECTOR..req::SECTOR + 8].copy_from_slice(&sector.to_le_bytes());
            for k in 0..pages {
                e[req::SEG + 8 * k..req::SEG + 8 * k + 8].copy_from_slice(&seg(k));
            }
        } else {
            let ind = ind % INDIRECT_PAGES;
            // SAFETY: the indirect pages are this image's, granted read-only to the backend.
            let page = unsafe { RingPage::new(core::ptr::addr_of!(INDIRECT) as u64 + 4096 * ind as u64) };
            for k in 0..pages {
                page.write(8 * k, &seg(k));
            }
            e[0] = OP_INDIRECT;
            e[indirect::OP] = op;
            e[indirect::NR_SEGMENTS..indirect::NR_SEGMENTS + 2].copy_from_slice(&(pages as u16).to_le_bytes());
            e[indirect::SECTOR..indirect::SECTOR + 8].copy_from_slice(&sector.to_le_bytes());
            e[indirect::GREFS..indirect::GREFS + 4].copy_from_slice(&self.indirect_grefs[ind].to_le_bytes());
        }
        self.queue(&e)
    }

    /// Copies `data` into data pages from `first_page` on.
    pub fn page_write(&self, first_page: usize, data: &[u8]) {
        for (p, part) in data.chunks(4096).enumerate() {
            self::data(first_page + p).write(0, part);
        }
    }

    /// Copies data pages from `first_page` on into `out`.
    pub fn page_read(&self, first_page: usize, out: &mut [u8]) {
        for (p, part) in out.chunks_mut(4096).enumerate() {
            self::data(first_page + p).read(0, part);
        }
    }

    /// A read or write of `sectors` sectors at `sector` through data pages 0.., waited for.
    fn io(&mut self, write: bool, sector: u64, sectors: usize) -> i16 {
        let id = self.start(write, sector, sectors, 0, 0);
        self.response(id)
    }

    /// The most sectors one request carries.
    pub fn max_sectors(&self) -> usize {
        8 * (self.max_indirect as usize).max(MAX_SEGMENTS_PER_REQUEST)
    }

    /// Reads `buf.len()` bytes (whole sectors) from `sector`: the first failing
    /// response's status, if any.
    pub fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), i16> {
        let per = self.max_sectors() * SECTOR;
        for (k, chunk) in buf.chunks_mut(per).enumerate() {
            let st = self.io(false, sector + (k * per / SECTOR) as u64, chunk.len().div_ceil(SECTOR));
            if st != RSP_OKAY {
                return Err(st);
            }
            self.page_read(0, chunk);
        }
        Ok(())
    }

    /// Writes `buf` (whole sectors) at `sector`.
    pub fn write(&mut self, sector: u64, buf: &[u8]) -> Result<(), i16> {
        let per = self.max_sectors() * SECTOR;
        for (k, chunk) in buf.chunks(per).enumerate() {
            self.page_write(0, chunk);
            let st = self.io(true, sector + (k * per / SECTOR) as u64, chunk.len().div_ceil(SECTOR));
            if st != RSP_OKAY {
                return Err(st);
            }
        }
        Ok(())
    }

    /// `BLKIF_OP_FLUSH_DISKCACHE`.
    pub fn flush(&mut self) -> Result<(), i16> {
        let mut e = [0u8; ENTRY_SIZE];
        e[req::OPERATION] = OP_FLUSH_DISKCACHE;
        match self.raw(&e) {
            RSP_OKAY => Ok(()),
            st => Err(st),
        }
    }

    /// Waits until the backend asks to close (`xl block-detach`), then closes.
    pub fn await_close(&mut self) -> u32 {
        let s = self.await_backend(|s| s >= STATE_CLOSING);
        let _ = self.set_state(STATE_CLOSING);
        let _ = self.set_state(STATE_CLOSED);
        s
    }

    /// Waits until `device/vbd/<devid>` exists (a device attached while the guest runs).
    pub fn await_device(si: &StartInfo, devid: u32) -> bool {
        xenbus::await_device(si, "vbd", devid)
    }

    /// Closes the device: `Closing`, the backend's `Closing` or `Closed` awaited, `Closed`.
    pub fn close(&mut self) -> u32 {
        let _ = self.set_state(STATE_CLOSING);
        let s = self.await_backend(|s| s >= STATE_CLOSING);
        let _ = self.set_state(STATE_CLOSED);
        s
    }
}
