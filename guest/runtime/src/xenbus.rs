//! The XenStore client over the domain's ring (`io/xs_wire.h`), with no heap: requests are
//! written whole into `req`, replies read from `rsp` as they arrive; watch events that come
//! while a reply is awaited are kept (a few) for [`next_watch`]. Also the shutdown protocol:
//! `control/shutdown` watched, acknowledged, then `SCHEDOP_shutdown`.

use core::fmt::Write;
use crate::events;
use crate::pvio::{self, RingPage};
use crate::StartInfo;
use core::sync::atomic::{AtomicU32, Ordering};
use guest_abi::errno::Errno;
use guest_abi::io::xs::*;

static RING: pvio::Frontend = pvio::Frontend::new();
static REQ_ID: AtomicU32 = AtomicU32::new(1);

/// Longest watch event kept while a reply is awaited; events kept at most.
const EVENT_MAX: usize = 256;
const EVENTS_KEPT: usize = 8;

/// Watch events that arrived while a reply was awaited, and the client's lock (one request
/// at a time: replies come back in order on the one ring).
struct Client {
    kept: [([u8; EVENT_MAX], usize); EVENTS_KEPT],
    n: usize,
    /// Events dropped because `kept` was full.
    dropped: u32,
}

static CLIENT: spin::Mutex<Client> = spin::Mutex::new(Client { kept: [([0; EVENT_MAX], 0); EVENTS_KEPT], n: 0, dropped: 0 });

/// Takes the XenStore ring of a domU built by a toolstack (`start_info.store_mfn`). True
/// if the client can be used.
pub fn init(si: &StartInfo) -> bool {
    RING.take(si, si.store_mfn, si.store_evtchn)
}

fn ring() -> Option<(RingPage, u32)> {
    RING.get()
}

/// The ring's event port (0 before [`init`]).
pub fn port() -> u32 {
    RING.port()
}

/// Writes `bytes` into `req`; the daemon is told only when the ring is full (to make room)
/// — the caller tells it once the whole request is in.
fn put(r: RingPage, port: u32, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        let n = r.produce(REQ, RING_SIZE, REQ_PROD, REQ_CONS, bytes);
        if n == 0 {
            events::send(port);
            pvio::wait(&[port]);
        }
        bytes = &bytes[n..];
    }
}

/// Bytes of a reply waiting in `rsp`.
fn available(r: RingPage) -> u32 {
    r.read_u32(RSP_PROD).wrapping_sub(r.read_u32(RSP_CONS)).min(RING_SIZE)
}

/// Takes `out.len()` bytes of `rsp`, waiting for them; bytes past `keep` are dropped.
fn get(r: RingPage, port: u32, out: &mut [u8], len: usize) {
    let mut got = 0;
    while got < len {
        let avail = available(r) as usize;
        if avail == 0 {
            pvio::wait(&[port]);
            continue;
        }
        let cons = r.read_u32(RSP_CONS);
        let n = avail.min(len - got);
        for i in 0..n {
            let b = r.read_u8(RSP + (cons.wrapping_add(i as u32) % RING_SIZE) as usize);
            if let Some(slot) = out.get_mut(got + i) {
                *slot = b;
            }
        }
        r.write_u32(RSP_CONS, cons.wrapping_add(n as u32));
        // The daemon waits for room only when it found `rsp` full: tell it if the ring was
        // full before this read as far as it may have seen, its producer index read again
        // after the consumer moved (Linux's xenbus does the same). Looking at `avail` alone
        // misses a daemon that filled the ring while this read was under way.
        if r.read_u32(RSP_PROD).wrapping_sub(cons) >= RING_SIZE {
            events::send(port);
        }
        got += n;
    }
}

/// The next message header from `rsp`: (type, request id, payload length).
fn header(r: RingPage, port: u32) -> (u32, u32, usize) {
    let mut h = [0u8; HEADER];
    get(r, port, &mut h, HEADER);
    let w = |i: usize| u32::from_le_bytes([h[4 * i], h[4 * i + 1], h[4 * i + 2], h[4 * i + 3]]);
    (w(0), w(1), (w(3) as usize).min(PAYLOAD_MAX))
}

impl Client {
    fn keep(&mut self, ev: &[u8]) {
        if self.n == EVENTS_KEPT {
            self.dropped += 1;
            return;
        }
        let n = ev.len().min(EVENT_MAX);
        self.kept[self.n].0[..n].copy_from_slice(&ev[..n]);
        self.kept[self.n].1 = n;
        self.n += 1;
    }
}

/// Sends request `ty` (payload: `parts` one after the other) in transaction `tx` (0: none)
/// and waits for its reply: the reply's payload length in `out` (cut to fit), or the error
/// the daemon answered.
pub fn request(ty: MsgType, tx: u32, parts: &[&[u8]], out: &mut [u8]) -> Result<usize, Errno> {
    let (r, port) = ring().ok_or(Errno::ENODEV)?;
    let len: usize = parts.iter().map(|p| p.len()).sum();
    if len > PAYLOAD_MAX {
        return Err(Errno::E2BIG);
    }
    // One request at a time (replies come back in order); a handler that interrupted a
    // request of its own vCPU gets EBUSY rather than a deadlock.
    let Some(mut c) = CLIENT.try_lock() else { return Err(Errno::EBUSY) };
    let id = REQ_ID.fetch_add(1, Ordering::SeqCst);
    let mut h = [0u8; HEADER];
    for (i, v) in [ty as u32, id, tx, len as u32].into_iter().enumerate() {
        h[4 * i..4 * i + 4].copy_from_slice(&v.to_le_bytes());
    }
    put(r, port, &h);
    for p in parts {
        put(r, port, p);
    }
    // One notification for the whole request (each wakes the daemon).
    events::send(port);
    loop {
        let (t, rid, n) = header(r, port);
        if t == MsgType::WatchEvent as u32 {
            let mut ev = [0u8; EVENT_MAX];
            get(r, port, &mut ev, n);
            c.keep(&ev[..n.min(EVENT_MAX)]);
            continue;
        }
        if rid != id {
            get(r, port, &mut [], n);
            continue;
        }
        if t == MsgType::Error as u32 {
            let mut e = [0u8; 16];
            get(r, port, &mut e, n);
            let name = e.split(|&b| b == 0).next().unwrap_or(&[]);
            return Err(core::str::from_utf8(name).ok().and_then(Errno::from_name).unwrap_or(Errno::EIO));
        }
        get(r, port, out, n);
        return Ok(n.min(out.len()));
    }
}

/// `READ path`: the value's length in `out`.
pub fn read(path: &str, out: &mut [u8]) -> Result<usize, Errno> {
    request(MsgType::Read, 0, &[path.as_bytes(), b"\0"], out)
}

/// `WRITE path value`.
pub fn write(path: &str, value: &[u8]) -> Result<(), Errno> {
    request(MsgType::Write, 0, &[path.as_bytes(), b"\0", value], &mut [0u8; 4]).map(|_| ())
}

/// `WRITE path value` inside transaction `tx`.
pub fn write_tx(tx: u32, path: &str, value: &[u8]) -> Result<(), Errno> {
    request(MsgType::Write, tx, &[path.as_bytes(), b"\0", value], &mut [0u8; 4]).map(|_| ())
}

/// `RM path`.
pub fn rm(path: &str) -> Result<(), Errno> {
    request(MsgType::Rm, 0, &[path.as_bytes(), b"\0"], &mut [0u8; 4]).map(|_| ())
}

/// `DIRECTORY path`: the children's names, each NUL-terminated, in `out`.
pub fn directory(path: &str, out: &mut [u8]) -> Result<usize, Errno> {
    request(MsgType::Directory, 0, &[path.as_bytes(), b"\0"], out)
}

/// `WATCH path token`.
pub fn watch(path: &str, token: &str) -> Result<(), Errno> {
    request(MsgType::Watch, 0, &[path.as_bytes(), b"\0", token.as_bytes(), b"\0"], &mut [0u8; 4]).map(|_| ())
}

/// `TRANSACTION_START`: the transaction's id.
pub fn transaction_start() -> Result<u32, Errno> {
    let mut b = [0u8; 16];
    let n = request(MsgType::TransactionStart, 0, &[b"\0"], &mut b)?;
    core::str::from_utf8(&b[..n]).ok().and_then(|s| s.trim_end_matches('\0').parse().ok()).ok_or(Errno::EIO)
}

/// `TRANSACTION_END`: committed (`commit`) or abandoned; `EAGAIN` on a conflict.
pub fn transaction_end(tx: u32, commit: bool) -> Result<(), Errno> {
    request(MsgType::TransactionEnd, tx, &[if commit { b"T\0" } else { b"F\0" }], &mut [0u8; 4]).map(|_| ())
}

/// The next watch event (`path\0token\0`) without waiting: one kept while a reply was
/// awaited, else one waiting in the ring. Its length in `out`.
pub fn next_watch(out: &mut [u8]) -> Option<usize> {
    let (r, port) = ring()?;
    let mut c = CLIENT.try_lock()?;
    if c.n > 0 {
        let (ev, n) = c.kept[0];
        c.kept.copy_within(1.., 0);
        c.n -= 1;
        let n = n.min(out.len());
        out[..n].copy_from_slice(&ev[..n]);
        return Some(n);
    }
    while available(r) as usize >= HEADER {
        let (t, _, n) = header(r, port);
        if t == MsgType::WatchEvent as u32 {
            get(r, port, out, n);
            return Some(n.min(out.len()));
        }
        // A reply nobody waits for (cannot happen: requests wait for theirs).
        get(r, port, &mut [], n);
    }
    None
}

/// Takes the watch events of `token` (kept, or waiting in the ring), leaving the others
/// for [`next_watch`]: whether there was one. A driver that shares the client with others
/// (netfront beside the balloon, say) looks for its own events only.
pub fn take_watch(token: &str) -> bool {
    let Some((r, port)) = ring() else { return false };
    let Some(mut c) = CLIENT.try_lock() else { return false };
    while available(r) as usize >= HEADER {
        let (t, _, n) = header(r, port);
        if t != MsgType::WatchEvent as u32 {
            get(r, port, &mut [], n);
            continue;
        }
        let mut ev = [0u8; EVENT_MAX];
        get(r, port, &mut ev, n);
        c.keep(&ev[..n.min(EVENT_MAX)]);
    }
    let mine = |ev: &[u8]| ev.split(|&b| b == 0).nth(1) == Some(token.as_bytes());
    let mut found = false;
    let mut i = 0;
    while i < c.n {
        let (ev, n) = c.kept[i];
        if mine(&ev[..n]) {
            c.kept.copy_within(i + 1.., i);
            c.n -= 1;
            found = true;
        } else {
            i += 1;
        }
    }
    found
}

/// Is a watch event waiting (kept, or in the ring)? A guest that sleeps on the XenStore
/// port must ask this first: an event kept while it awaited a reply left the port quiet.
pub fn watch_pending() -> bool {
    let Some((r, _)) = ring() else { return false };
    CLIENT.try_lock().is_none_or(|c| c.n > 0) || available(r) as usize >= HEADER
}

/// Sleeps on the XenStore port unless a watch event is waiting already.
pub fn wait_for_watch() {
    if !watch_pending() {
        crate::pvio::wait(&[port()]);
    }
}

/// Watch events dropped because too many arrived while replies were awaited.
pub fn dropped_events() -> u32 {
    CLIENT.lock().dropped
}

/// The token of the watch on `control/shutdown` ([`watch_shutdown`]).
pub const SHUTDOWN_TOKEN: &str = "shutdown";

/// Starts the shutdown protocol: `control/shutdown` watched, and the `feature-poweroff` /
/// `feature-reboot` keys a toolstack looks for.
pub fn watch_shutdown() -> Result<(), Errno> {
    write("control/feature-poweroff", b"1")?;
    write("control/feature-reboot", b"1")?;
    watch("control/shutdown", SHUTDOWN_TOKEN)
}

/// After a watch event on `control/shutdown`: the request it holds, acknowledged (the node
/// emptied, as Linux does); `None` if it holds none.
pub fn take_shutdown_request() -> Option<guest_abi::sched::ShutdownReason> {
    use guest_abi::sched::ShutdownReason;
    let mut b = [0u8; 32];
    let n = read("control/shutdown", &mut b).ok()?;
    let reason = match &b[..n] {
        b"poweroff" | b"halt" => ShutdownReason::Poweroff,
        b"reboot" => ShutdownReason::Reboot,
        _ => return None,
    };
    write("control/shutdown", b"").ok()?;
    Some(reason)
}

/// A XenStore path built without a heap.
pub struct Path {
    pub b: [u8; 128],
    pub n: usize,
}

impl Write for Path {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let end = self.n + s.len();
        if end > self.b.len() {
            return Err(core::fmt::Error);
        }
        self.b[self.n..end].copy_from_slice(s.as_bytes());
        self.n = end;
        Ok(())
    }
}

impl Path {
    pub fn of(args: core::fmt::Arguments<'_>) -> Path {
        let mut p = Path { b: [0; 128], n: 0 };
        let _ = p.write_fmt(args);
        p
    }
    pub fn as_str(&self) -> &str {
        core::str::from_utf8(&self.b[..self.n]).unwrap_or("")
    }
}

/// A number XenStore holds at `path`.
pub fn read_u64(path: &str) -> Option<u64> {
    let mut b = [0u8; 32];
    let n = read(path, &mut b).ok()?;
    core::str::from_utf8(&b[..n]).ok()?.trim_end_matches('\0').parse().ok()
}

/// A device's peer `state` (at `path`) once `done` holds for it, woken by a watch on it
/// (set by the caller).
pub fn await_state(path: &str, done: impl Fn(u32) -> bool) -> u32 {
    loop {
        let s = read_u64(path).unwrap_or(0) as u32;
        if done(s) {
            return s;
        }
        let mut ev = [0u8; 160];
        if next_watch(&mut ev).is_none() {
            wait_for_watch();
        }
    }
}

/// Reads the path a device directory's `backend` key names (trailing NULs dropped).
pub fn read_path(path: &str) -> Option<Path> {
    let mut p = Path { b: [0; 128], n: 0 };
    p.n = read(path, &mut p.b).ok()?;
    while p.n > 0 && p.b[p.n - 1] == 0 {
        p.n -= 1;
    }
    Some(p)
}

/// Waits until `device/<class>/<devid>` exists (a device attached while the guest runs).
pub fn await_device(si: &StartInfo, class: &str, devid: u32) -> bool {
    if !init(si) {
        return false;
    }
    let path = Path::of(format_args!("device/{class}/{devid}/backend"));
    let _ = watch(Path::of(format_args!("device/{class}")).as_str(), "device-new");
    loop {
        if read(path.as_str(), &mut [0u8; 128]).is_ok() {
            return true;
        }
        let mut ev = [0u8; 160];
        if next_watch(&mut ev).is_none() {
            wait_for_watch();
        }
    }
}
