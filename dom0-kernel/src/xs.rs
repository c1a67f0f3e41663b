//! The XenStore daemon in dom0: the `xenstore` crate's store, served to dom0's own
//! toolstack directly (a privileged local connection) and to every introduced domain over
//! its ring page (`xenstore_domain_interface`), woken by the ring's event channel.
//!
//! A domain's requests are taken a few at a time ([`BUDGET`]) and the rings served in
//! turn, so a guest that floods its ring cannot hold up the others; what it leaves waits
//! for the next round.

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use guest_abi::evtchn::Port;
use pv_runtime::events;
use xenstore::ring::Ring;
use xenstore::{ConnId, DomId, Event, Msg, MsgType, Store};

/// Requests taken from one ring per round.
pub const BUDGET: usize = 16;

/// Heap kept for dom0's own work: while less than this is free, a domain's requests get
/// `ENOMEM` (what Xen's daemon answers when an allocation fails) instead of being handled,
/// so no guest can run dom0 out of memory; those that free memory (abandoning a
/// transaction, removing nodes outside one, dropping watches) are still handled.
pub fn reserve() -> usize {
    (pv_heap::size() / 4).max(512 << 10)
}

struct DomRing {
    conn: ConnId,
    slot: usize,
    port: Port,
    ring: Ring,
}

struct Daemon {
    store: Store,
    local: ConnId,
    /// Watch events for dom0's own watches, oldest first.
    local_events: Vec<Msg>,
    rings: BTreeMap<DomId, DomRing>,
    next_req: u32,
    /// Introduced domains `@releaseDomain` already fired for (they shut down or died);
    /// forgotten at their release.
    reported: alloc::collections::BTreeSet<DomId>,
}

static XS: spin::Mutex<Option<Daemon>> = spin::Mutex::new(None);

/// Starts the daemon (once).
pub fn init() {
    let mut store = Store::new();
    let local = store.connect(0, true);
    *XS.lock() = Some(Daemon { store, local, local_events: Vec::new(), rings: BTreeMap::new(), next_req: 1, reported: Default::default() });
    // dom0's own entries, as xen-init-dom0 writes them.
    let _ = write(0, "/local/domain/0/name", b"Domain-0");
    let _ = write(0, "/local/domain/0/domid", b"0");
    // Where the toolstack keeps each domain's /vm/<uuid> entries.
    let _ = write(0, "/vm", b"");
}

fn with<T>(f: impl FnOnce(&mut Daemon) -> T) -> Option<T> {
    XS.lock().as_mut().map(f)
}

impl Daemon {
    /// Routes what the store answered: dom0's reply back, the rest into the rings, each
    /// flushed and notified once.
    fn deliver(&mut self, events: Vec<Event>, reply_for: Option<u32>) -> Option<Msg> {
        self.deliver_but(events, reply_for, None)
    }

    /// [`Daemon::deliver`], except for `serving` (the ring a round is serving): it is
    /// flushed and notified once at the round's end.
    fn deliver_but(&mut self, events: Vec<Event>, reply_for: Option<u32>, serving: Option<DomId>) -> Option<Msg> {
        let mut reply = None;
        let mut touched = Vec::new();
        for e in events {
            if e.conn == self.local {
                if Some(e.msg.req_id) == reply_for && e.msg.ty != MsgType::WatchEvent as u32 && reply.is_none() {
                    reply = Some(e.msg);
                } else if self.local_events.len() < 256 {
                    self.local_events.push(e.msg);
                }
                continue;
            }
            if let Some((dom, r)) = self.rings.iter_mut().find(|(_, r)| r.conn == e.conn) {
                if e.msg.ty == MsgType::WatchEvent as u32 {
                    r.ring.send_event(&e.msg);
                } else {
                    r.ring.send(&e.msg);
                }
                if !touched.contains(dom) {
                    touched.push(*dom);
                }
            }
        }
        for dom in touched.into_iter().filter(|&d| Some(d) != serving) {
            self.flush(dom);
        }
        reply
    }

    fn flush(&mut self, dom: DomId) {
        if let Some(r) = self.rings.get_mut(&dom) {
            let mut page = crate::rings::page(r.slot);
            if r.ring.flush(&mut page) {
                events::send(r.port);
            }
        }
    }

    fn local(&mut self, ty: MsgType, tx: u32, payload: Vec<u8>) -> Result<Vec<u8>, String> {
        let id = self.next_req;
        self.next_req = self.next_req.wrapping_add(1);
        let m = Msg::new(ty, id, tx, payload);
        let events = self.store.handle(self.local, &m);
        match self.deliver(events, Some(id)) {
            Some(r) if r.ty == MsgType::Error as u32 => Err(String::from_utf8_lossy(&r.payload).trim_end_matches('\0').into()),
            Some(r) => Ok(r.payload),
            None => Err("EIO".into()),
        }
    }

    /// One round for `dom`'s ring: replies moved on, then up to [`BUDGET`] requests
    /// handled. True if requests were left for another round.
    fn serve(&mut self, dom: DomId) -> bool {
        let Some(r) = self.rings.get_mut(&dom) else { return false };
        let mut page = crate::rings::page(r.slot);
        let was_broken = r.ring.broken().is_some();
        // The guest is told once, at the end of the round, of everything it did: replies
        // moved, room made in `req` (a guest waiting to write the rest of a request needs
        // that even when no reply can move, its `rsp` being full), or its ring broken. One
        // notification, not one per step: each wakes the guest.
        let mut notify = r.ring.flush(&mut page);
        let cons = xenstore::ring::Page::read_u32(&page, xenstore::ring::REQ_CONS);
        let msgs = r.ring.take(&mut page, BUDGET);
        notify |= xenstore::ring::Page::read_u32(&page, xenstore::ring::REQ_CONS) != cons;
        if !was_broken {
            if let Some(e) = r.ring.broken() {
                pv_runtime::println!("xenstored: d{}: ring broken ({:?}); its requests are ignored from now on", dom, e);
                notify = true;
            }
        }
        let more = msgs.len() == BUDGET;
        let conn = r.conn;
        for m in msgs {
            // Requests that let go of memory are always handled.
            // (A removal inside a transaction and a commit allocate: they must wait.)
            let frees = (m.ty == MsgType::Rm as u32 && m.tx_id == 0)
                || (m.ty == MsgType::TransactionEnd as u32 && m.payload.first() != Some(&b'T'))
                || m.ty == MsgType::Unwatch as u32
                || m.ty == MsgType::ResetWatches as u32;
            if !frees && pv_heap::free() < reserve() {
                let e = Msg { ty: MsgType::Error as u32, req_id: m.req_id, tx_id: m.tx_id, payload: b"ENOMEM\0".to_vec() };
                self.deliver_but(alloc::vec![Event { conn, msg: e }], None, Some(dom));
                continue;
            }
            let ev = self.store.handle(conn, &m);
            self.deliver_but(ev, None, Some(dom));
        }
        if let Some(r) = self.rings.get_mut(&dom) {
            let mut page = crate::rings::page(r.slot);
            notify |= r.ring.flush(&mut page);
            if notify {
                events::send(r.port);
            }
        }
        more
    }
}

/// A request of dom0's own (privileged): the reply's payload, or the error's name.
pub fn request(ty: MsgType, tx: u32, args: &[&[u8]], value: Option<&[u8]>) -> Result<Vec<u8>, String> {
    let mut p = Vec::new();
    for a in args {
        p.extend_from_slice(a);
        p.push(0);
    }
    if let Some(v) = value {
        p.extend_from_slice(v);
    }
    with(|d| d.local(ty, tx, p)).unwrap_or_else(|| Err("ENODEV".into()))
}

pub fn read(path: &str) -> Result<Vec<u8>, String> {
    request(MsgType::Read, 0, &[path.as_bytes()], None)
}

pub fn write(tx: u32, path: &str, value: &[u8]) -> Result<(), String> {
    request(MsgType::Write, tx, &[path.as_bytes()], Some(value)).map(|_| ())
}

pub fn rm(tx: u32, path: &str) -> Result<(), String> {
    request(MsgType::Rm, tx, &[path.as_bytes()], None).map(|_| ())
}

/// `SET_PERMS path perms...` (`n0`, `r5`, ...: the first is the owner's and the default).
pub fn set_perms(tx: u32, path: &str, perms: &[&str]) -> Result<(), String> {
    let mut args: Vec<&[u8]> = alloc::vec![path.as_bytes()];
    args.extend(perms.iter().map(|p| p.as_bytes()));
    request(MsgType::SetPerms, tx, &args, None).map(|_| ())
}

pub fn directory(path: &str) -> Result<Vec<String>, String> {
    let b = request(MsgType::Directory, 0, &[path.as_bytes()], None)?;
    Ok(b.split(|&c| c == 0).filter(|s| !s.is_empty()).map(|s| String::from_utf8_lossy(s).into()).collect())
}

pub fn transaction_start() -> Result<u32, String> {
    let b = request(MsgType::TransactionStart, 0, &[b""], None)?;
    core::str::from_utf8(&b).ok().and_then(|s| s.trim_end_matches('\0').parse().ok()).ok_or_else(|| "EIO".into())
}

/// Runs `body` in a transaction, committed; a conflict (`EAGAIN`) runs it again, up to 8
/// times. An error of `body` abandons the transaction.
pub fn in_transaction(mut body: impl FnMut(u32) -> Result<(), String>) -> Result<(), String> {
    for attempt in 0.. {
        let tx = transaction_start()?;
        if let Err(e) = body(tx) {
            let _ = transaction_end(tx, false);
            return Err(e);
        }
        match transaction_end(tx, true) {
            Ok(()) => return Ok(()),
            Err(e) if e == "EAGAIN" && attempt < 8 => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

pub fn transaction_end(tx: u32, commit: bool) -> Result<(), String> {
    request(MsgType::TransactionEnd, tx, &[if commit { b"T" } else { b"F" }], None).map(|_| ())
}

/// `XS_INTRODUCE`: `dom`'s ring (machine frame `mfn`, granted to dom0 as reference
/// `GNTTAB_RESERVED_XENSTORE`; its unbound port `remote_port` for dom0) is served from now
/// on.
pub fn introduce(dom: DomId, mfn: u64, remote_port: Port) -> Result<(), String> {
    let (slot, port) = crate::rings::connect(dom, guest_abi::grant::RESERVED_XENSTORE, remote_port, "XenStore")?;
    let (d, m, p) = (format!("{}", dom), format!("{}", mfn), format!("{}", remote_port));
    if let Err(e) = request(MsgType::Introduce, 0, &[d.as_bytes(), m.as_bytes(), p.as_bytes()], None) {
        crate::rings::unmap(slot);
        events::close(port);
        return Err(format!("introducing d{} failed: {}", dom, e));
    }
    // What the daemon offers (`XENSTORE_SERVER_FEATURE_ERROR`: a broken ring is reported in
    // `error`); no reconnection.
    let mut page = crate::rings::page(slot);
    xenstore::ring::Page::write_u32(&mut page, xenstore::ring::SERVER_FEATURES, guest_abi::io::xs::SERVER_FEATURE_ERROR);
    with(|x| {
        let conn = x.store.connect(dom, false);
        x.rings.insert(dom, DomRing { conn, slot, port, ring: Ring::new() });
    });
    if !crate::executor::register(port, crate::executor::Task::Store(dom)) {
        release(dom);
        return Err(format!("d{}'s XenStore port {} is past what dom0 serves", dom, port));
    }
    // Anything it wrote before its port was bound.
    with(|x| x.serve(dom));
    Ok(())
}

/// `XS_RELEASE` of `dom`, its ring unmapped and its port closed; then its
/// `/local/domain/<dom>` and `/vm/<uuid>` subtrees removed, as the toolstack does at
/// destroy.
pub fn release(dom: DomId) {
    let d = format!("{}", dom);
    if let Ok(vm) = read(&format!("/local/domain/{}/vm", dom)) {
        let vm = String::from_utf8_lossy(&vm).into_owned();
        if vm.starts_with("/vm/") {
            let _ = rm(0, &vm);
        }
    }
    let _ = request(MsgType::Release, 0, &[d.as_bytes()], None);
    // The store's list of released domains is for transports that close sockets; here the
    // ring goes below. A later domain with its id may be reported again.
    with(|x| {
        x.store.take_released();
        x.reported.remove(&dom);
    });
    if let Some(Some(r)) = with(|x| x.rings.remove(&dom)) {
        crate::executor::unregister(r.port);
        events::close(r.port);
        let rc = crate::rings::unmap(r.slot);
        if rc != 0 {
            pv_runtime::println!("xenstored: d{}: unmapping its ring failed ({}): it lingers once destroyed", dom, rc);
        }
    }
    let _ = rm(0, &format!("/local/domain/{}", dom));
}

/// The ring of `dom` had an event: one round of it. True if it has more waiting.
pub fn on_event(dom: DomId) -> bool {
    with(|x| x.serve(dom)).unwrap_or(false)
}

/// Nodes in the store (leak checks).
pub fn nodes() -> usize {
    with(|x| x.store.node_count()).unwrap_or(0)
}

/// The token of dom0's toolstack watch on `@releaseDomain`.
pub const RELEASE_TOKEN: &str = "xl-release";

/// dom0's toolstack watches `@releaseDomain` (as libxl does) to act on domains that ended.
pub fn watch_release() -> Result<(), String> {
    request(MsgType::Watch, 0, &[b"@releaseDomain", RELEASE_TOKEN.as_bytes()], None).map(|_| ())
}

/// `VIRQ_DOM_EXC` reached the daemon: as Xen's, it looks for introduced domains that shut
/// down or died (or are gone) since it last looked, and fires `@releaseDomain` once if there
/// is one. True if dom0's toolstack watch saw an event (its first, the one at registration,
/// included).
pub fn domain_exited() -> bool {
    use guest_abi::domctl::{info, GETDOMAININFO};
    let doms = with(|x| x.store.introduced_domains()).unwrap_or_default();
    let ended: Vec<DomId> = doms
        .into_iter()
        .filter(|&d| {
            let mut op = pv_runtime::ctl::Domctl::new(GETDOMAININFO, d);
            op.call() != 0 || op.dom() != d || op.get32(info::FLAGS) & (info::SHUTDOWN | info::DYING) != 0
        })
        .collect();
    with(|x| {
        let new: Vec<DomId> = ended.iter().copied().filter(|d| !x.reported.contains(d)).collect();
        if !new.is_empty() {
            x.reported.extend(new);
            let ev = x.store.domain_exited();
            x.deliver(ev, None);
        }
    });
    !take_events(RELEASE_TOKEN).is_empty()
}

/// `WATCH path token` for dom0's own connection.
pub fn watch(path: &str, token: &str) -> Result<(), String> {
    request(MsgType::Watch, 0, &[path.as_bytes(), token.as_bytes()], None).map(|_| ())
}

pub fn unwatch(path: &str, token: &str) -> Result<(), String> {
    request(MsgType::Unwatch, 0, &[path.as_bytes(), token.as_bytes()], None).map(|_| ())
}

/// The paths of dom0's own watch events with `token` since the last call (other events
/// stay for their takers).
pub fn take_events(token: &str) -> Vec<String> {
    let tail = format!("\0{}\0", token);
    with(|x| {
        let (mine, rest): (Vec<Msg>, Vec<Msg>) =
            core::mem::take(&mut x.local_events).into_iter().partition(|m| m.ty == MsgType::WatchEvent as u32 && m.payload.ends_with(tail.as_bytes()));
        x.local_events = rest;
        mine.iter().filter_map(|m| m.payload.split(|&b| b == 0).next().map(|p| String::from_utf8_lossy(p).into_owned())).collect()
    })
    .unwrap_or_default()
}

