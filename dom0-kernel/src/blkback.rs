//! The block backend (Linux's blkback): each `disk = [...]` entry of a domain is a virtual
//! block device over dom0's disk, or a GPT partition of it, served over Xen's blkif ring.
//!
//! The toolstack part ([`attach`]) writes the backend's and the frontend's XenStore
//! directories as libxl does and watches the frontend's `state`. When the frontend says
//! `Initialised` the backend maps its ring, binds its event channel and says `Connected`;
//! `Closing`/`Closed` disconnect it, and a frontend may connect again. Requests are copied
//! out of the ring before they are looked at (`toolstack::blkif` checks them); a read or
//! write goes to the disk as one request whose data is copied from or to the frontend's
//! granted pages. With `feature-persistent` those grants stay mapped (up to
//! [`MAX_PERSISTENT`] per device), so a frontend reusing its pages costs no map per
//! request. Anything wrong in a request is answered with `BLKIF_RSP_ERROR` (or
//! `EOPNOTSUPP`); ring indexes that make no sense stop that ring, and nothing a frontend
//! writes can stop dom0 serving the others.

use crate::executor::{self, Task};
use crate::xs;
use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use guest_abi::evtchn::Port;
use guest_abi::io::blkif::*;
use pv_devices::blk::{Done, Op, SubmitError, S_OK};
use pv_runtime::foreign::Slots;
use pv_runtime::{events, println};
use toolstack::blkif::{self as bif, Request, Vbd};

const TOKEN: &str = "blkback";
/// Grants kept mapped per device when the frontend offers `feature-persistent`, and for
/// all devices together (half the data slots: the rest serve one-off mappings, freed as
/// requests complete, so a device waiting for a slot always gets one in the end).
pub const MAX_PERSISTENT: usize = 36;
const PERSISTENT_TOTAL: usize = pv_runtime::foreign::DATA_SLOTS / 2;
/// Requests taken from one ring per run of its task (the others are served in between).
const BUDGET: usize = 32;
/// One device's share of the disk: requests and data bytes in flight at most.
const DEV_INFLIGHT: usize = 8;
const DEV_INFLIGHT_BYTES: usize = 128 << 10;
/// `feature-max-indirect-segments`: 128 KiB requests.
pub const MAX_INDIRECT_SEGMENTS: u32 = 32;

/// A connected frontend.
struct Conn {
    ring: usize,
    ring_ref: u32,
    port: Port,
    req_cons: u32,
    rsp_prod_pvt: u32,
    persistent: bool,
    /// Persistent grants: reference → (data slot, mapped writable).
    grants: BTreeMap<u32, (usize, bool)>,
    /// The ring's indexes made no sense: it is read no more.
    broken: bool,
    /// Tells completions of this connection from those of an earlier one.
    gen: u64,
}

struct Dev {
    dom: u16,
    devid: u32,
    spec: bif::DiskSpec,
    vbd: Vbd,
    fe: String,
    be: String,
    conn: Option<Conn>,
    /// Tells this device from a later one of the same domain and number.
    uid: u64,
    /// Requests at the disk, and their data bytes.
    inflight: usize,
    inflight_bytes: usize,
    /// The frontend closed (or the device is detached by force): no more requests are
    /// read, and the state goes (`Closing` / `Closed`) once the disk has none in flight.
    close_to: Option<u32>,
    /// A connect failure was reported (once: a frontend flapping cannot flood the console).
    warned: bool,
    /// A failure of the disk was reported (once, likewise).
    told_disk: bool,
    /// `xl block-detach` asked: removed once the frontend closed.
    detaching: bool,
    /// A request waits for room at the disk: the ring is read again after a completion.
    stalled: bool,
    /// Requests refused, for `xl block-list`'s report and the tests.
    errors: u64,
    /// Responses written but not yet published (`push_all`).
    unpushed: bool,
}

/// A request at the disk.
struct Pending {
    key: (u16, u32),
    uid: u64,
    gen: u64,
    bytes: usize,
    id: u64,
    op: u8,
    write: bool,
    /// (data slot, first sector, last sector, mapped for this request only).
    segs: Vec<(usize, u8, u8, bool)>,
}

static DEVS: spin::Mutex<BTreeMap<(u16, u32), Dev>> = spin::Mutex::new(BTreeMap::new());
static DATA: spin::Mutex<Option<Slots>> = spin::Mutex::new(None);
static PENDING: spin::Mutex<BTreeMap<u64, Pending>> = spin::Mutex::new(BTreeMap::new());
static NEXT: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(1);
/// Persistent grants held by all devices.
static PERSISTENT: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);
/// The device `retry` served first last time (it starts after it: round robin).
static LAST: spin::Mutex<(u16, u32)> = spin::Mutex::new((0, 0));

fn next() -> u64 {
    NEXT.fetch_add(1, core::sync::atomic::Ordering::Relaxed)
}

/// Sets the data slots up (once, at start).
pub fn init(si: &pv_runtime::StartInfo) {
    *DATA.lock() = Some(Slots::new_data(si));
}

/// The sectors a target names: the whole disk, or a GPT partition of it.
fn resolve(spec: &bif::DiskSpec) -> Result<Vbd, String> {
    let (disk, part) = bif::target_disk(&spec.target).ok_or("bad target")?;
    let (sectors, flush, ro) = crate::disk::geometry().filter(|_| disk == 0).ok_or_else(|| format!("dom0 has no disk {}", spec.target))?;
    let vbd = |start, n| Vbd { start, sectors: n, readonly: spec.readonly || ro, flush, max_indirect: MAX_INDIRECT_SEGMENTS };
    if part == 0 {
        return Ok(vbd(0, sectors));
    }
    let read = |lba: u64, n: usize| crate::disk::io(Op::Read, lba, alloc::vec![0u8; n * 512]).map_err(|e| format!("reading {}'s partition table: {:?}", spec.target, e));
    let h = read(1, 1)?;
    let (n, size, at) = bif::gpt_array(&h).map_err(|e| format!("{}: {}", spec.target, e))?;
    let entries = read(at, (n * size).div_ceil(512))?;
    let parts = bif::gpt(&h, &entries, sectors).map_err(|e| format!("{}: {}", spec.target, e))?;
    match parts.get(part - 1).copied().flatten() {
        Some(p) => Ok(vbd(p.first, p.last - p.first + 1)),
        None => Err(format!("{} has no partition {}", spec.target, part)),
    }
}

/// `disk = [...]` entry `spec` for domain `dom` (not yet running): the device's XenStore
/// directories, the backend waiting for its frontend.
pub fn attach(dom: u16, spec: &str) -> Result<u32, String> {
    let err = |e: String| format!("libxl: error: disk '{spec}': {e}");
    let spec = bif::parse_disk(spec).map_err(|e| format!("libxl: error: {e}"))?;
    let devid = spec.devid;
    if DEVS.lock().contains_key(&(dom, devid)) {
        return Err(err(format!("domain {dom} has {} already", spec.vdev)));
    }
    let vbd = resolve(&spec).map_err(err)?;
    // A range another device has too, where either may write: refused (libxl's "in use").
    if let Some(o) = DEVS.lock().values().find(|o| {
        o.vbd.start < vbd.start + vbd.sectors && vbd.start < o.vbd.start + o.vbd.sectors && !(o.vbd.readonly && vbd.readonly)
    }) {
        return Err(err(format!("{} overlaps domain {}'s {} ({}), and one of them may write", spec.target, o.dom, o.spec.vdev, o.spec.target)));
    }
    let (fe, be) = crate::backend::paths("vbd", dom, devid);
    let info = if vbd.readonly { VDISK_READONLY } else { 0 };
    let be_keys: Vec<(&str, String)> = alloc::vec![
        ("frontend", fe.clone()),
        ("frontend-id", format!("{dom}")),
        ("params", spec.target.clone()),
        ("mode", (if vbd.readonly { "r" } else { "w" }).into()),
        ("type", "phy".into()),
        ("online", "1".into()),
        ("removable", "0".into()),
        ("bootable", "1".into()),
        ("dev", spec.vdev.clone()),
        ("device-type", "disk".into()),
        ("feature-flush-cache", (if vbd.flush { "1" } else { "0" }).into()),
        ("feature-persistent", "1".into()),
        ("feature-max-indirect-segments", format!("{MAX_INDIRECT_SEGMENTS}")),
        ("sectors", format!("{}", vbd.sectors)),
        ("info", format!("{info}")),
        ("sector-size", "512".into()),
        ("physical-sector-size", "512".into()),
        ("state", format!("{STATE_INIT_WAIT}")),
    ];
    let fe_keys: Vec<(&str, String)> = alloc::vec![
        ("backend", be.clone()),
        ("backend-id", "0".into()),
        ("virtual-device", format!("{devid}")),
        ("device-type", "disk".into()),
        ("state", format!("{STATE_INITIALISING}")),
    ];
    crate::backend::create(dom, &fe, &be, &be_keys, &fe_keys, TOKEN).map_err(err)?;
    let dev = Dev {
        dom,
        devid,
        spec,
        vbd,
        fe: fe.clone(),
        be,
        conn: None,
        uid: next(),
        inflight: 0,
        inflight_bytes: 0,
        close_to: None,
        warned: false,
        told_disk: false,
        detaching: false,
        stalled: false,
        errors: 0,
        unpushed: false,
    };
    DEVS.lock().insert((dom, devid), dev);
    on_watches();
    Ok(devid)
}

fn read_u32(path: &str) -> Option<u32> {
    crate::backend::read_u32(path)
}

fn set_state(d: &Dev, s: u32) {
    crate::backend::set_state(&d.be, s)
}

/// The frontends' state changes since the last call.
pub fn on_watches() {
    for path in xs::take_events(TOKEN) {
        let key = DEVS.lock().iter().find(|(_, d)| format!("{}/state", d.fe) == path).map(|(k, _)| *k);
        if let Some(k) = key {
            frontend_changed(k);
        }
    }
}

fn frontend_changed(key: (u16, u32)) {
    let mut devs = DEVS.lock();
    let Some(d) = devs.get_mut(&key) else { return };
    let Some(fs) = read_u32(&format!("{}/state", d.fe)) else { return };
    match fs {
        STATE_INITIALISED | STATE_CONNECTED if d.conn.is_none() && !d.detaching && d.close_to.is_none() && d.inflight == 0 => match connect(d) {
            Ok(()) => set_state(d, STATE_CONNECTED),
            Err(e) => {
                if !core::mem::replace(&mut d.warned, true) {
                    println!("blkback: d{} {}: {}", d.dom, d.spec.vdev, e);
                }
                let _ = xs::write(0, &format!("{}/error", d.be), e.as_bytes());
                set_state(d, STATE_CLOSING);
            }
        },
        STATE_CLOSING | STATE_CLOSED => {
            // No more requests are read; the state follows once the disk is done with
            // the ones in flight (`settle`).
            d.close_to = Some(fs);
            if settle(d) {
                let d = devs.remove(&key);
                drop(devs);
                if let Some(d) = d {
                    forget(&d);
                }
            }
        }
        // A frontend that starts again after closing: the backend waits for it anew.
        STATE_INITIALISING if d.conn.is_none() && !d.detaching && d.close_to.is_none() => {
            let be = read_u32(&format!("{}/state", d.be));
            if be == Some(STATE_CLOSED) || be == Some(STATE_CLOSING) {
                set_state(d, STATE_INIT_WAIT);
            }
        }
        _ => {}
    }
}

/// A closing device with nothing in flight: disconnected, its state set. True if it is
/// to be forgotten (detached and closed).
fn settle(d: &mut Dev) -> bool {
    let Some(to) = d.close_to else { return false };
    if d.inflight != 0 {
        return false;
    }
    disconnect(d);
    set_state(d, to);
    d.close_to = None;
    d.detaching && to == STATE_CLOSED
}

/// Maps the frontend's ring and binds its event channel (its `ring-ref`,
/// `event-channel`, `protocol`).
fn connect(d: &mut Dev) -> Result<(), String> {
    let ring_ref = read_u32(&format!("{}/ring-ref", d.fe)).ok_or("no ring-ref")?;
    let evtchn = read_u32(&format!("{}/event-channel", d.fe)).ok_or("no event-channel")?;
    if let Ok(p) = xs::read(&format!("{}/protocol", d.fe)) {
        let p = String::from_utf8_lossy(&p);
        if p.trim_end_matches('\0') != PROTOCOL_X86_64 {
            return Err(format!("protocol {:?} not served (only {})", p.chars().take(32).collect::<String>(), PROTOCOL_X86_64));
        }
    }
    if read_u32(&format!("{}/ring-page-order", d.fe)).is_some_and(|o| o != 0) {
        return Err("multi-page rings are not served".into());
    }
    let persistent = read_u32(&format!("{}/feature-persistent", d.fe)) == Some(1);
    let (ring, port) = crate::rings::connect(d.dom, ring_ref, evtchn, "block")?;
    if !executor::register(port, Task::Blk(d.dom, d.devid)) {
        events::close(port);
        crate::rings::unmap(ring);
        return Err(format!("port {port} is past what dom0 serves"));
    }
    d.conn = Some(Conn { ring, ring_ref, port, req_cons: 0, rsp_prod_pvt: 0, persistent, grants: BTreeMap::new(), broken: false, gen: next() });
    Ok(())
}

/// Lets go of the frontend's ring, port and persistent grants. Requests still at the disk
/// complete without touching its pages.
fn disconnect(d: &mut Dev) {
    let Some(c) = d.conn.take() else { return };
    executor::unregister(c.port);
    events::close(c.port);
    PERSISTENT.fetch_sub(c.grants.len(), core::sync::atomic::Ordering::Relaxed);
    if let Some(s) = DATA.lock().as_mut() {
        for (_, (slot, _)) in c.grants {
            if s.unmap(slot) != 0 {
                println!("blkback: d{}: unmapping a persistent grant failed: the domain lingers once destroyed", d.dom);
            }
        }
    }
    if crate::rings::unmap(c.ring) != 0 {
        println!("blkback: d{}: unmapping its ring failed: the domain lingers once destroyed", d.dom);
    }
}

/// Removes what the toolstack wrote for a device gone.
fn forget(d: &Dev) {
    crate::backend::remove(&d.fe, &d.be, TOKEN);
}

/// The frontend's ring of `dom`'s device `devid` had an event: its new requests taken.
/// True if it left requests for the next run (its budget was spent).
pub fn on_event(dom: u16, devid: u32) -> bool {
    let mut devs = DEVS.lock();
    devs.get_mut(&(dom, devid)).is_some_and(serve)
}

/// Reads the ring until it is empty, the device has its share of the disk, or the budget
/// is spent (then true: run again).
fn serve(d: &mut Dev) -> bool {
    let be = d.be.clone();
    if d.close_to.is_some() {
        return false;
    }
    let Some(c) = d.conn.as_mut() else { return false };
    if c.broken {
        return false;
    }
    let page = crate::rings::page(c.ring);
    let mut answered = false;
    let mut more = false;
    for taken in 0.. {
        if taken == BUDGET {
            more = true;
            break;
        }
        if d.inflight >= DEV_INFLIGHT || d.inflight_bytes >= DEV_INFLIGHT_BYTES {
            d.stalled = true;
            break;
        }
        let rp = page.u32(REQ_PROD);
        let n = match bif::pending(rp, c.req_cons, c.rsp_prod_pvt) {
            Ok(n) => n,
            Err(bif::BadIndexes) => {
                c.broken = true;
                d.errors += 1;
                println!("blkback: d{} {}: ring indexes out of range (req_prod {}, req_cons {}): the ring is read no more", d.dom, d.spec.vdev, rp, c.req_cons);
                // The frontend is told: the backend closes the device.
                crate::backend::fail(&be, "ring indexes out of range");
                break;
            }
        };
        if n == 0 {
            // Ask for an event at the next request, then look once more (RING_FINAL_CHECK).
            page.set_u32(REQ_EVENT, c.req_cons.wrapping_add(1));
            if page.u32(REQ_PROD) == c.req_cons {
                break;
            }
            continue;
        }
        let mut e = [0u8; ENTRY_SIZE];
        crate::rings::read(c.ring, bif::entry_offset(c.req_cons), &mut e);
        match take(d.dom, d.devid, d.uid, &d.vbd, c, &e) {
            Taken::Answered(id, op, st) => {
                if st != RSP_OKAY {
                    d.errors += 1;
                }
                respond(c, id, op, st);
                answered = true;
            }
            Taken::Submitted(bytes) => {
                d.inflight += 1;
                d.inflight_bytes += bytes;
            }
            Taken::Full => {
                d.stalled = true;
                break;
            }
        }
        c.req_cons = c.req_cons.wrapping_add(1);
    }
    if answered {
        push(c);
    }
    more
}

enum Taken {
    Answered(u64, u8, i16),
    /// At the disk, with this many data bytes.
    Submitted(usize),
    /// No room (at the disk, or no free grant slot): the request stays on the ring for
    /// later.
    Full,
}

/// One request: checked, its pages mapped, sent to the disk (or answered at once).
fn take(dom: u16, devid: u32, uid: u64, vbd: &Vbd, c: &mut Conn, e: &[u8; ENTRY_SIZE]) -> Taken {
    let (id, op, r) = bif::parse(e);
    let (write, sector, segs, indirect) = match r {
        Err(st) => return Taken::Answered(id, op, st),
        Ok(Request::Unsupported(o)) => return Taken::Answered(id, o, RSP_EOPNOTSUPP),
        Ok(Request::Flush) => {
            if !vbd.flush {
                return Taken::Answered(id, op, RSP_EOPNOTSUPP);
            }
            let tag = next();
            return match crate::disk::submit(Op::Flush, 0, Vec::new(), tag) {
                Ok(()) => {
                    PENDING.lock().insert(tag, Pending { key: (dom, devid), uid, gen: c.gen, bytes: 0, id, op, write: false, segs: Vec::new() });
                    Taken::Submitted(0)
                }
                Err(SubmitError::Full(_)) => Taken::Full,
                Err(SubmitError::Invalid(_)) => Taken::Answered(id, op, RSP_ERROR),
            };
        }
        Ok(Request::Io { write, sector, segs }) => (write, sector, segs, false),
        Ok(Request::Indirect { write, sector, nr_segments, pages }) => {
            if nr_segments > vbd.max_indirect {
                return Taken::Answered(id, op, RSP_ERROR);
            }
            let mut bytes: Vec<Vec<u8>> = Vec::new();
            for g in pages {
                match map(dom, c, g, false) {
                    Ok((slot, temp)) => {
                        let mut b = alloc::vec![0u8; 4096];
                        page_of(slot).read(0, &mut b);
                        bytes.push(b);
                        if temp {
                            unmap(slot);
                        }
                    }
                    Err(MapErr::NoSlot) => return Taken::Full,
                    Err(MapErr::Refused) => return Taken::Answered(id, op, RSP_ERROR),
                }
            }
            let refs: Vec<&[u8]> = bytes.iter().map(|b| b.as_slice()).collect();
            (write, sector, bif::indirect_segments(&refs, nr_segments), true)
        }
    };
    let (at, n) = match bif::check(vbd, write, sector, &segs, indirect) {
        Ok(x) => x,
        Err(st) => return Taken::Answered(id, op, st),
    };
    let mut mapped: Vec<(usize, u8, u8, bool)> = Vec::new();
    for s in &segs {
        // A read writes into the frontend's page; a write only reads it.
        match map(dom, c, s.gref, !write) {
            Ok((slot, temp)) => mapped.push((slot, s.first, s.last, temp)),
            Err(e) => {
                release(&mapped);
                return if e == MapErr::NoSlot { Taken::Full } else { Taken::Answered(id, op, RSP_ERROR) };
            }
        }
    }
    let mut data = alloc::vec![0u8; n as usize * 512];
    if write {
        let mut o = 0;
        for &(slot, f, l, _) in &mapped {
            let len = (l - f + 1) as usize * 512;
            page_of(slot).read(f as usize * 512, &mut data[o..o + len]);
            o += len;
        }
    }
    let tag = next();
    let bytes = data.len();
    match crate::disk::submit(if write { Op::Write } else { Op::Read }, at, data, tag) {
        Ok(()) => {
            PENDING.lock().insert(tag, Pending { key: (dom, devid), uid, gen: c.gen, bytes, id, op, write, segs: mapped });
            Taken::Submitted(bytes)
        }
        Err(SubmitError::Full(_)) => {
            release(&mapped);
            Taken::Full
        }
        Err(SubmitError::Invalid(_)) => {
            release(&mapped);
            Taken::Answered(id, op, RSP_ERROR)
        }
    }
}

fn page_of(slot: usize) -> pv_runtime::pvio::RingPage {
    match DATA.lock().as_ref() {
        Some(s) => s.page(slot),
        // Not reached: slots exist before any device (`init`).
        None => panic!("blkback: no data slots"),
    }
}

/// Why a grant could not be mapped.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum MapErr {
    /// Every data slot is taken: wait for requests to complete.
    NoSlot,
    /// The hypervisor refused it (no such grant, not for dom0, read-only for a write).
    Refused,
}

/// Grant `gref` of `dom` mapped (writable if `need_write`): the persistent mapping if there
/// is one that will do, or a new one kept if the device and everyone together are under
/// their share, else one for this request alone (`true`). A page only read from may be
/// granted read-only.
fn map(dom: u16, c: &mut Conn, gref: u32, need_write: bool) -> Result<(usize, bool), MapErr> {
    if let Some(&(slot, w)) = c.grants.get(&gref) {
        if w || !need_write {
            return Ok((slot, false));
        }
    }
    let mut g = DATA.lock();
    let s = g.as_mut().ok_or(MapErr::NoSlot)?;
    if s.free() == 0 {
        return Err(MapErr::NoSlot);
    }
    // Writable when it can be (a persistent mapping may serve reads later); read-only when
    // only that is granted and it will do.
    let (slot, writable) = match s.map_with(dom, gref, false) {
        Ok(slot) => (slot, true),
        Err(_) if !need_write => (s.map_with(dom, gref, true).map_err(|_| MapErr::Refused)?, false),
        Err(_) => return Err(MapErr::Refused),
    };
    let total = PERSISTENT.load(core::sync::atomic::Ordering::Relaxed);
    if c.persistent && !c.grants.contains_key(&gref) && c.grants.len() < MAX_PERSISTENT && total < PERSISTENT_TOTAL {
        c.grants.insert(gref, (slot, writable));
        PERSISTENT.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
        return Ok((slot, false));
    }
    Ok((slot, true))
}

fn unmap(slot: usize) {
    if let Some(s) = DATA.lock().as_mut() {
        if s.unmap(slot) != 0 {
            println!("blkback: unmapping a grant failed: its domain lingers once destroyed");
        }
    }
}

/// The one-off mappings of a request.
fn release(segs: &[(usize, u8, u8, bool)]) {
    for &(slot, _, _, temp) in segs {
        if temp {
            unmap(slot);
        }
    }
}

fn respond(c: &mut Conn, id: u64, op: u8, status: i16) {
    let r = bif::response(id, op, status);
    crate::rings::write(c.ring, bif::entry_offset(c.rsp_prod_pvt), &r);
    c.rsp_prod_pvt = c.rsp_prod_pvt.wrapping_add(1);
}

/// Publishes the responses written and notifies the frontend if it asked to be
/// (`rsp_event` among the new ones: `RING_PUSH_RESPONSES_AND_CHECK_NOTIFY`).
fn push(c: &Conn) {
    crate::rings::push_responses(c.ring, c.rsp_prod_pvt, c.port);
}

/// A request of the backend's finished at the disk: a read's data copied into the
/// frontend's pages, the response written (unless the frontend went away meanwhile).
pub fn completed(done: Done) {
    let Some(p) = PENDING.lock().remove(&(done.tag & !crate::disk::BACKEND_TAG)) else { return };
    let mut devs = DEVS.lock();
    let d = devs.get_mut(&p.key);
    let live = d.as_ref().filter(|d| d.uid == p.uid && d.close_to.is_none()).and_then(|d| d.conn.as_ref()).is_some_and(|c| c.gen == p.gen);
    if live && !p.write && done.status == S_OK {
        let mut o = 0;
        for &(slot, f, l, _) in &p.segs {
            let len = (l - f + 1) as usize * 512;
            if let Some(b) = done.data.get(o..o + len) {
                page_of(slot).write(f as usize * 512, b);
            }
            o += len;
        }
    }
    release(&p.segs);
    let Some(d) = d.filter(|d| d.uid == p.uid) else { return };
    d.inflight = d.inflight.saturating_sub(1);
    d.inflight_bytes = d.inflight_bytes.saturating_sub(p.bytes);
    if d.close_to.is_some() {
        // The frontend closed meanwhile: no answer; the close completes with the last one.
        if settle(d) {
            let k = p.key;
            if let Some(d) = devs.remove(&k) {
                drop(devs);
                forget(&d);
            }
        }
        return;
    }
    if let Some(c) = d.conn.as_mut().filter(|c| c.gen == p.gen) {
        let st = if done.status == S_OK { RSP_OKAY } else { RSP_ERROR };
        if st != RSP_OKAY {
            // Said once per device (a frontend reading a bad sector in a loop cannot flood
            // dom0's console); `xl block-list` counts them all.
            if !core::mem::replace(&mut d.told_disk, true) {
                println!("blkback: d{} {}: the disk failed a request (status {}); further failures are counted in xl block-list", d.dom, d.spec.vdev, done.status);
            }
            d.errors += 1;
        }
        respond(c, p.id, p.op, st);
        d.unpushed = true;
    }
}

/// After a round of completions: each device's responses published at once.
pub fn push_all() {
    let mut devs = DEVS.lock();
    for d in devs.values_mut().filter(|d| d.unpushed) {
        d.unpushed = false;
        if let Some(c) = d.conn.as_ref() {
            push(c);
        }
    }
}

/// After completions: rings that waited for room at the disk are read again.
pub fn retry() {
    let mut devs = DEVS.lock();
    let mut last = LAST.lock();
    let keys: Vec<(u16, u32)> = devs.iter().filter(|(_, d)| d.stalled).map(|(k, _)| *k).collect();
    // Round robin: the one after the device served first last time goes first.
    let split = keys.iter().position(|k| *k > *last).unwrap_or(0);
    for k in keys[split..].iter().chain(&keys[..split]) {
        if let Some(d) = devs.get_mut(k) {
            d.stalled = false;
            serve(d);
        }
    }
    if let Some(&k) = keys.get(split) {
        *last = k;
    }
}

/// `xl destroy` (and every end of a domain): its devices disconnected and forgotten.
pub fn remove(dom: u16) {
    let gone: Vec<Dev> = {
        let mut devs = DEVS.lock();
        let keys: Vec<(u16, u32)> = devs.keys().filter(|k| k.0 == dom).copied().collect();
        keys.iter().filter_map(|k| devs.remove(k)).collect()
    };
    for mut d in gone {
        disconnect(&mut d);
        forget(&d);
    }
    // Its writes at the disk land before anything else may use those sectors (a
    // re-created domain, another device): the destroy waits for them.
    crate::disk::wait_until(|| !PENDING.lock().values().any(|p| p.key.0 == dom));
}

/// `xl block-detach`: the backend asks the frontend to close (`Closing`); the device goes
/// when it has (at once if it never connected).
pub fn detach(dom: u16, devid: u32, force: bool) -> Result<(), String> {
    let mut devs = DEVS.lock();
    let d = devs.get_mut(&(dom, devid)).ok_or_else(|| format!("libxl: error: domain {dom} has no device {devid}"))?;
    d.detaching = true;
    if force {
        // As if the frontend had closed: gone once the disk is done with its requests.
        d.close_to = Some(STATE_CLOSED);
        if settle(d) {
            let d = devs.remove(&(dom, devid));
            drop(devs);
            if let Some(d) = d {
                forget(&d);
            }
        }
        return Ok(());
    }
    if d.conn.is_none() {
        let d = devs.remove(&(dom, devid));
        drop(devs);
        if let Some(d) = d {
            forget(&d);
        }
        return Ok(());
    }
    set_state(d, STATE_CLOSING);
    Ok(())
}

/// One line of `xl block-list`.
#[derive(Debug)]
pub struct Listed {
    pub devid: u32,
    pub vdev: String,
    pub state: u32,
    pub port: Option<Port>,
    pub ring_ref: Option<u32>,
    pub be: String,
    pub errors: u64,
}

/// `dom`'s devices.
pub fn list(dom: u16) -> Vec<Listed> {
    DEVS.lock()
        .values()
        .filter(|d| d.dom == dom)
        .map(|d| Listed {
            devid: d.devid,
            vdev: d.spec.vdev.clone(),
            state: read_u32(&format!("{}/state", d.be)).unwrap_or(0),
            port: d.conn.as_ref().map(|c| c.port),
            ring_ref: d.conn.as_ref().map(|c| c.ring_ref),
            be: d.be.clone(),
            errors: d.errors,
        })
        .collect()
}
