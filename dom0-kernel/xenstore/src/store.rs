//! The store: connections, the operations of every request type, watches, transactions and
//! quotas.

use crate::path::{self, canonical, is_under, parent};
use crate::perms::{Access, Perms};
use crate::tree::Tree;
use crate::wire::{strings, Msg, MsgType, PAYLOAD_MAX};
use crate::{DomId, Error};
use alloc::collections::{BTreeMap, BTreeSet};
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

/// A client connection (a domain's ring, or a socket).
pub type ConnId = u32;

/// Per-domain limits (Xen 4.17's defaults); privileged clients have none.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Quota {
    /// Nodes a domain may own (`-ENOSPC` past it).
    pub entries_per_domain: usize,
    /// Longest value a domain may write (`-ENOSPC`).
    pub entry_size: usize,
    /// Watches per connection (`-E2BIG`).
    pub watches: usize,
    /// Open transactions per connection (`-ENOSPC`).
    pub transactions: usize,
    /// Permission entries per node (`-ENOSPC`).
    pub perms_per_node: usize,
    /// Nodes a transaction may look at plus operations it may make (`-ENOSPC`).
    pub transaction_nodes: usize,
    /// Bytes of values and paths a transaction may hold: its operations' and the paths it
    /// looked at (`-ENOSPC`; not a quota of Xen's: an open transaction holds its writes
    /// twice, in its record and in its copy of the tree, and the daemon's memory is dom0's).
    pub transaction_bytes: usize,
}

impl Default for Quota {
    fn default() -> Quota {
        Quota { entries_per_domain: 1000, entry_size: 2048, watches: 128, transactions: 10, perms_per_node: 5, transaction_nodes: 1024, transaction_bytes: 32 << 10 }
    }
}

/// A message for a connection: the reply to its request, or a watch event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub conn: ConnId,
    pub msg: Msg,
}

#[derive(Clone, Debug)]
struct Watch {
    /// Absolute, or special (`@...`).
    path: String,
    token: String,
    /// Registered with a relative path: its events carry relative paths.
    relative: bool,
}

/// A change a watch may see: the node's path, its permissions (after the change, or before
/// it went), and for a removal the subtree that went.
struct Change {
    path: String,
    perms: Perms,
    removed: Option<alloc::sync::Arc<crate::tree::Node>>,
}

#[derive(Clone, Debug)]
enum Op {
    Write(String, Vec<u8>),
    Mkdir(String),
    Rm(String),
    SetPerms(String, Perms),
}

#[derive(Clone, Debug)]
struct Tx {
    tree: Tree,
    counts: BTreeMap<DomId, usize>,
    /// Every node the transaction looked at or changed, with its generation when it first
    /// did (`None`: absent).
    accessed: BTreeMap<String, Option<u64>>,
    /// What its own operations decide, whatever the live tree holds: nodes it wrote or
    /// whose permissions it set (`.0`), and subtrees it created or removed (`.1`). A look
    /// at those is not noted.
    own: (BTreeSet<String>, BTreeSet<String>),
    ops: Vec<Op>,
    /// Bytes it holds: its operations' values and paths, and the paths it noted.
    op_bytes: usize,
}

/// What a transaction records while it works.
struct Record<'a> {
    accessed: &'a mut BTreeMap<String, Option<u64>>,
    own: &'a mut (BTreeSet<String>, BTreeSet<String>),
    /// The transaction's byte count (`Tx::op_bytes`): each path noted adds its length.
    bytes: &'a mut usize,
}

#[derive(Debug)]
struct Conn {
    dom: DomId,
    privileged: bool,
    watches: Vec<Watch>,
    txs: BTreeMap<u32, Tx>,
    next_tx: u32,
}

/// Who makes an operation.
#[derive(Copy, Clone)]
struct Who {
    dom: DomId,
    privileged: bool,
    target: Option<DomId>,
}

impl Who {
    fn may(&self, p: &Perms, a: Access) -> bool {
        self.privileged || p.allows(self.dom, self.target, a)
    }
}

/// The state an operation works on: the live tree, or a transaction's copy (which then
/// records what it looks at).
struct View<'a> {
    tree: &'a mut Tree,
    counts: &'a mut BTreeMap<DomId, usize>,
    gen: &'a mut u64,
    rec: Option<Record<'a>>,
    changes: &'a mut Vec<Change>,
    quota: Quota,
}

impl View<'_> {
    /// Notes `path` as looked at (the first time, unless the transaction's own operations
    /// decide it) with its node's generation.
    fn touch(&mut self, path: &str) {
        let Some(r) = self.rec.as_mut() else { return };
        if r.accessed.contains_key(path) || r.own.0.contains(path) || r.own.1.iter().any(|t| is_under(path, t)) {
            return;
        }
        r.accessed.insert(path.to_string(), self.tree.get(path).map(|n| n.gen));
        *r.bytes += path.len();
    }

    /// Marks `path` (`subtree`: and everything below it) as decided by the transaction.
    fn own(&mut self, path: &str, subtree: bool) {
        if let Some(r) = self.rec.as_mut() {
            let new = if subtree { r.own.1.insert(path.to_string()) } else { r.own.0.insert(path.to_string()) };
            if new {
                *r.bytes += path.len();
            }
        }
    }

    fn next_gen(&mut self) -> u64 {
        *self.gen += 1;
        *self.gen
    }

    /// The error for a node that is not there: `ENOENT` if the caller may read its nearest
    /// existing ancestor, else `EACCES` (as Xen's `errno_from_parents`: what a domain may
    /// not read, it may not learn the absence of either).
    fn absent(&mut self, who: Who, p: &str) -> Error {
        let mut at = p;
        while self.tree.get(at).is_none() {
            at = parent(at);
        }
        self.touch(at);
        match self.tree.get(at) {
            Some(n) if who.may(&n.perms, Access::Read) => Error::ENOENT,
            _ => Error::EACCES,
        }
    }

    fn node_or_absent(&mut self, who: Who, p: &str) -> Result<&crate::tree::Node, Error> {
        self.touch(p);
        if self.tree.get(p).is_none() {
            return Err(self.absent(who, p));
        }
        self.tree.get(p).ok_or(Error::ENOENT)
    }

    fn read(&mut self, who: Who, p: &str) -> Result<Vec<u8>, Error> {
        let n = self.node_or_absent(who, p)?;
        if !who.may(&n.perms, Access::Read) {
            return Err(Error::EACCES);
        }
        Ok(n.value.clone())
    }

    /// The children's names, NUL-terminated, from byte `skip` of that list, at most `room`
    /// bytes of whole names (`None` for no limit: then `E2BIG` if the whole list would not
    /// fit a message). Nothing is built past what is returned: a node with many long
    /// children costs the daemon no more than one message per request.
    fn directory(&mut self, who: Who, p: &str, skip: usize, room: Option<usize>) -> Result<(u64, Vec<u8>, bool), Error> {
        let n = self.node_or_absent(who, p)?;
        if !who.may(&n.perms, Access::Read) {
            return Err(Error::EACCES);
        }
        if room.is_none() && n.children.keys().map(|k| k.len() + 1).sum::<usize>() > PAYLOAD_MAX {
            return Err(Error::E2BIG);
        }
        let mut out = Vec::new();
        let (mut at, mut complete) = (0usize, true);
        for k in n.children.keys() {
            let len = k.len() + 1;
            if at + len <= skip {
                at += len;
                continue;
            }
            if room.is_some_and(|r| out.len() + len > r) {
                complete = false;
                break;
            }
            out.extend_from_slice(k.as_bytes());
            out.push(0);
            at += len;
        }
        Ok((n.gen, out, complete))
    }

    fn get_perms(&mut self, who: Who, p: &str) -> Result<Perms, Error> {
        let n = self.node_or_absent(who, p)?;
        if !who.may(&n.perms, Access::Read) {
            return Err(Error::EACCES);
        }
        Ok(n.perms.clone())
    }

    /// Creates `p` and its missing ancestors (the last with `value`): each inherits its
    /// parent's permissions, owned by the creator if it is unprivileged. The nearest
    /// existing ancestor must be writable.
    fn create(&mut self, who: Who, p: &str, value: &[u8]) -> Result<(), Error> {
        // The missing part of the path, top first.
        let mut missing = Vec::new();
        let mut at = p;
        while self.tree.get(at).is_none() {
            missing.push(at);
            at = parent(at);
        }
        self.touch(at);
        let base = self.tree.get(at).ok_or(Error::ENOENT)?;
        if !who.may(&base.perms, Access::Write) {
            return Err(Error::EACCES);
        }
        let mut perms = base.perms.clone();
        if !who.privileged {
            perms.0[0].dom = who.dom;
        }
        let owner = perms.owner();
        if !who.privileged && self.counts.get(&owner).copied().unwrap_or(0) + missing.len() > self.quota.entries_per_domain {
            return Err(Error::ENOSPC);
        }
        for node in missing.iter() {
            self.touch(node);
        }
        if let Some(top) = missing.last() {
            self.own(top, true);
        }
        for (i, node) in missing.iter().rev().enumerate() {
            let gen = self.next_gen();
            let name = node.rsplit('/').next().unwrap_or("");
            let last = i + 1 == missing.len();
            self.tree.create(parent(node), name, if last { value } else { b"" }, perms.clone(), gen);
            *self.counts.entry(owner).or_insert(0) += 1;
        }
        // One change, the node asked for (as Xen): watches above see it once.
        self.changes.push(Change { path: p.to_string(), perms, removed: None });
        Ok(())
    }

    fn write(&mut self, who: Who, p: &str, value: &[u8]) -> Result<(), Error> {
        if !who.privileged && value.len() > self.quota.entry_size {
            return Err(Error::ENOSPC);
        }
        self.touch(p);
        match self.tree.get(p) {
            Some(n) => {
                if !who.may(&n.perms, Access::Write) {
                    return Err(Error::EACCES);
                }
                let perms = n.perms.clone();
                let gen = self.next_gen();
                self.tree.set_value(p, value, gen);
                self.own(p, false);
                self.changes.push(Change { path: p.to_string(), perms, removed: None });
                Ok(())
            }
            None => self.create(who, p, value),
        }
    }

    fn mkdir(&mut self, who: Who, p: &str) -> Result<(), Error> {
        self.touch(p);
        match self.tree.get(p) {
            // As Xen: an existing node is no error, if the caller may write it.
            Some(n) => {
                if who.may(&n.perms, Access::Write) {
                    Ok(())
                } else {
                    Err(Error::EACCES)
                }
            }
            None => self.create(who, p, b""),
        }
    }

    fn rm(&mut self, who: Who, p: &str) -> Result<(), Error> {
        if p == "/" {
            return Err(Error::EINVAL);
        }
        self.touch(p);
        let Some(n) = self.tree.get(p) else {
            // As Xen: removing what is not there is fine if its parent is (and may be read).
            self.touch(parent(p));
            return match self.tree.get(parent(p)) {
                Some(q) if who.may(&q.perms, Access::Read) => Ok(()),
                Some(_) => Err(Error::EACCES),
                None => Err(self.absent(who, p)),
            };
        };
        if !who.may(&n.perms, Access::Write) {
            return Err(Error::EACCES);
        }
        let perms = n.perms.clone();
        self.touch(parent(p));
        let gen = self.next_gen();
        let name = p.rsplit('/').next().unwrap_or("");
        let removed = self.tree.remove(parent(p), name, gen);
        self.own(p, true);
        if let Some(r) = &removed {
            // (What was below it need not be noted: the commit replays the removal on the
            // live tree, whatever is below it then.)
            let counts = &mut *self.counts;
            r.each(|n| {
                if let Some(c) = counts.get_mut(&n.perms.owner()) {
                    *c = c.saturating_sub(1);
                }
            });
        }
        self.changes.push(Change { path: p.to_string(), perms, removed });
        Ok(())
    }

    fn set_perms(&mut self, who: Who, p: &str, perms: Perms) -> Result<(), Error> {
        let n = self.node_or_absent(who, p)?;
        if !who.may(&n.perms, Access::Owner) {
            return Err(Error::EACCES);
        }
        let old = n.perms.owner();
        // As Xen: an unprivileged domain may not give its nodes away.
        if !who.privileged && perms.owner() != old {
            return Err(Error::EPERM);
        }
        // (The root is nobody's count.)
        if perms.owner() != old && p != "/" {
            if let Some(c) = self.counts.get_mut(&old) {
                *c = c.saturating_sub(1);
            }
            *self.counts.entry(perms.owner()).or_insert(0) += 1;
        }
        let gen = self.next_gen();
        self.tree.set_perms(p, perms.clone(), gen);
        self.own(p, false);
        self.changes.push(Change { path: p.to_string(), perms, removed: None });
        Ok(())
    }

    fn apply(&mut self, who: Who, op: &Op) -> Result<(), Error> {
        match op {
            Op::Write(p, v) => self.write(who, p, v),
            Op::Mkdir(p) => self.mkdir(who, p),
            Op::Rm(p) => self.rm(who, p),
            Op::SetPerms(p, perms) => self.set_perms(who, p, perms.clone()),
        }
    }
}

/// Bytes of watch events one request may fire for one unprivileged connection; the rest are
/// dropped (and counted): a domain's watches times a transaction's changes must not turn
/// one request into an unbounded amount of daemon memory. (dom0's own connections get every
/// event: they have no watch quota to bound them, and they are trusted.)
pub const EVENT_BYTES_PER_REQUEST: usize = 128 << 10;

/// The store.
#[derive(Debug)]
pub struct Store {
    tree: Tree,
    /// Nodes owned, per domain.
    counts: BTreeMap<DomId, usize>,
    gen: u64,
    conns: BTreeMap<ConnId, Conn>,
    next_conn: ConnId,
    /// Introduced domains: their ring's frame and event channel.
    introduced: BTreeMap<DomId, (u64, u32)>,
    /// `SET_TARGET`: a domain acting for another (a device model for its guest).
    targets: BTreeMap<DomId, DomId>,
    released: Vec<DomId>,
    dropped_events: u64,
    pub quota: Quota,
}

impl Default for Store {
    fn default() -> Self {
        Store::new()
    }
}

fn ok() -> Vec<u8> {
    b"OK\0".to_vec()
}

fn cstr(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

fn num<T: core::str::FromStr>(s: &str) -> Result<T, Error> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit() || b == b'-') {
        return Err(Error::EINVAL);
    }
    s.parse().map_err(|_| Error::EINVAL)
}

impl Store {
    pub fn new() -> Store {
        Store {
            tree: Tree::new(),
            counts: BTreeMap::new(),
            gen: 0,
            conns: BTreeMap::new(),
            next_conn: 1,
            introduced: BTreeMap::new(),
            targets: BTreeMap::new(),
            released: Vec::new(),
            dropped_events: 0,
            quota: Quota::default(),
        }
    }

    /// A new connection of domain `dom` (`privileged`: dom0's own clients, the toolstack).
    pub fn connect(&mut self, dom: DomId, privileged: bool) -> ConnId {
        let mut id = self.next_conn;
        while id == 0 || self.conns.contains_key(&id) {
            id = id.wrapping_add(1);
        }
        self.next_conn = id.wrapping_add(1);
        self.conns.insert(id, Conn { dom, privileged, watches: Vec::new(), txs: BTreeMap::new(), next_tx: 1 });
        id
    }

    /// A connection went: its watches and transactions with it.
    pub fn disconnect(&mut self, c: ConnId) {
        self.conns.remove(&c);
    }

    /// Domain `dom`'s ring frame and event channel, if it was introduced.
    pub fn introduced(&self, dom: DomId) -> Option<(u64, u32)> {
        self.introduced.get(&dom).copied()
    }

    /// The domains introduced (and not released).
    pub fn introduced_domains(&self) -> Vec<DomId> {
        self.introduced.keys().copied().collect()
    }

    /// The domains released since the last call (their transports are to go).
    pub fn take_released(&mut self) -> Vec<DomId> {
        core::mem::take(&mut self.released)
    }

    /// Nodes in the tree (for tests and leak checks).
    pub fn node_count(&self) -> usize {
        self.counts.values().sum::<usize>() + 1
    }

    /// Handles request `m` of connection `c`: the reply to `c` first, then the watch
    /// events its changes fire. A connection that does not exist gets nothing.
    pub fn handle(&mut self, c: ConnId, m: &Msg) -> Vec<Event> {
        let Some(conn) = self.conns.get(&c) else { return Vec::new() };
        let who = Who { dom: conn.dom, privileged: conn.privileged, target: self.targets.get(&conn.dom).copied() };
        let mut changes = Vec::new();
        let mut specials = Vec::new();
        let mut out = Vec::new();
        let r = self.request(c, who, m, &mut changes, &mut specials, &mut out);
        let (ty, payload) = match r {
            // A reply that would not fit a message (a long directory, many permissions):
            // E2BIG, as Xen (clients then page through DIRECTORY_PART).
            Ok((_, payload)) if payload.len() > PAYLOAD_MAX => (MsgType::Error as u32, cstr(Error::E2BIG.name())),
            Ok((ty, payload)) => (ty, payload),
            Err(e) => (MsgType::Error as u32, cstr(e.name())),
        };
        let mut events = alloc::vec![Event { conn: c, msg: Msg { ty, req_id: m.req_id, tx_id: m.tx_id, payload } }];
        events.extend(out);
        events.extend(self.fire(&changes));
        for s in specials {
            events.extend(self.fire_special(s));
        }
        events
    }

    #[allow(clippy::too_many_arguments)]
    fn request(&mut self, c: ConnId, who: Who, m: &Msg, changes: &mut Vec<Change>, specials: &mut Vec<&'static str>, out: &mut Vec<Event>) -> Result<(u32, Vec<u8>), Error> {
        let Some(ty) = MsgType::from_u32(m.ty) else { return Err(Error::ENOSYS) };
        let tx = m.tx_id;
        // WRITE's value is the rest of the payload after the path's NUL (no NUL of its own).
        let args: Vec<&str> = if ty == MsgType::Write {
            let i = m.payload.iter().position(|&b| b == 0).ok_or(Error::EINVAL)?;
            alloc::vec![core::str::from_utf8(&m.payload[..i]).map_err(|_| Error::EINVAL)?]
        } else {
            strings(&m.payload).ok_or(Error::EINVAL)?
        };
        // As Xen's `onearg`: the one-argument requests take exactly one string.
        if matches!(ty, MsgType::Read | MsgType::Directory | MsgType::GetPerms | MsgType::Mkdir | MsgType::Rm | MsgType::Release | MsgType::GetDomainPath | MsgType::IsDomainIntroduced | MsgType::Resume | MsgType::TransactionEnd) && args.len() != 1 {
            return Err(Error::EINVAL);
        }
        let arg = |i: usize| args.get(i).copied().ok_or(Error::EINVAL);
        let path = |i: usize| canonical(who.dom, arg(i)?, false);
        let reply = |t: MsgType, p: Vec<u8>| Ok((t as u32, p));
        match ty {
            MsgType::Read => {
                let p = path(0)?;
                let v = self.on(c, tx, who, changes, |v| v.read(who, &p))?;
                reply(ty, v)
            }
            MsgType::Directory => {
                let p = path(0)?;
                let (_, kids, _) = self.on(c, tx, who, changes, |v| v.directory(who, &p, 0, None))?;
                reply(ty, kids)
            }
            MsgType::DirectoryPart => {
                // `path|offset|` → `generation|child|...|`, what fits; an empty string ends
                // the list.
                let p = path(0)?;
                let off: usize = num(arg(1)?)?;
                // The generation first: 20 digits at most, then its NUL.
                let room = PAYLOAD_MAX - 21 - 1;
                let (gen, kids, complete) = self.on(c, tx, who, changes, |v| v.directory(who, &p, off, Some(room)))?;
                let mut b = cstr(&format!("{}", gen));
                b.extend_from_slice(&kids);
                if complete {
                    b.push(0);
                }
                reply(ty, b)
            }
            MsgType::GetPerms => {
                let p = path(0)?;
                let perms = self.on(c, tx, who, changes, |v| v.get_perms(who, &p))?;
                let mut b = Vec::new();
                for e in perms.0 {
                    b.extend_from_slice(&cstr(&e.format()));
                }
                reply(ty, b)
            }
            MsgType::Write => {
                let p = path(0)?;
                let value = m.payload[args[0].len() + 1..].to_vec();
                self.change(c, tx, who, changes, Op::Write(p, value))?;
                reply(ty, ok())
            }
            MsgType::Mkdir => {
                let op = Op::Mkdir(path(0)?);
                self.change(c, tx, who, changes, op)?;
                reply(ty, ok())
            }
            MsgType::Rm => {
                let op = Op::Rm(path(0)?);
                self.change(c, tx, who, changes, op)?;
                reply(ty, ok())
            }
            MsgType::SetPerms => {
                let p = path(0)?;
                let max = if who.privileged { usize::MAX } else { self.quota.perms_per_node };
                let perms = Perms::parse_list(args[1..].iter().copied(), max)?;
                self.change(c, tx, who, changes, Op::SetPerms(p, perms))?;
                reply(ty, ok())
            }
            MsgType::Watch => {
                let raw = arg(0)?;
                let p = canonical(who.dom, raw, true)?;
                let token = arg(1)?.to_string();
                let quota = self.quota.watches;
                let conn = self.conns.get_mut(&c).ok_or(Error::EINVAL)?;
                if conn.watches.iter().any(|w| w.path == p && w.token == token) {
                    return Err(Error::EEXIST);
                }
                if !who.privileged && conn.watches.len() >= quota {
                    return Err(Error::E2BIG);
                }
                let relative = !raw.starts_with('/') && !raw.starts_with('@');
                let w = Watch { path: p, token, relative };
                // As Xen: a new watch fires once at once (after the reply).
                out.push(Event { conn: c, msg: watch_event(who.dom, &w, &w.path) });
                conn.watches.push(w);
                reply(ty, ok())
            }
            MsgType::Unwatch => {
                let p = canonical(who.dom, arg(0)?, true)?;
                let token = arg(1)?;
                let conn = self.conns.get_mut(&c).ok_or(Error::EINVAL)?;
                let n = conn.watches.len();
                conn.watches.retain(|w| !(w.path == p && w.token == token));
                if conn.watches.len() == n {
                    return Err(Error::ENOENT);
                }
                reply(ty, ok())
            }
            MsgType::TransactionStart => {
                if tx != 0 {
                    return Err(Error::EBUSY);
                }
                let quota = self.quota.transactions;
                let snapshot = Tx { tree: self.tree.clone(), counts: self.counts.clone(), accessed: BTreeMap::new(), own: Default::default(), ops: Vec::new(), op_bytes: 0 };
                let conn = self.conns.get_mut(&c).ok_or(Error::EINVAL)?;
                if !who.privileged && conn.txs.len() >= quota {
                    return Err(Error::ENOSPC);
                }
                let mut id = conn.next_tx;
                while id == 0 || conn.txs.contains_key(&id) {
                    id = id.wrapping_add(1);
                }
                conn.next_tx = id.wrapping_add(1);
                conn.txs.insert(id, snapshot);
                reply(ty, cstr(&format!("{}", id)))
            }
            MsgType::TransactionEnd => {
                let commit = match arg(0)? {
                    "T" => true,
                    "F" => false,
                    _ => return Err(Error::EINVAL),
                };
                let t = self.conns.get_mut(&c).and_then(|conn| conn.txs.remove(&tx)).ok_or(Error::ENOENT)?;
                if commit {
                    self.commit(who, t, changes)?;
                }
                reply(ty, ok())
            }
            MsgType::Introduce => {
                if !who.privileged {
                    return Err(Error::EACCES);
                }
                let dom: DomId = num(arg(0)?)?;
                let gfn: i64 = num(arg(1)?)?;
                let port: u32 = num(arg(2)?)?;
                if dom == 0 || dom >= 0x7FF0 {
                    return Err(Error::EINVAL);
                }
                // Introduced again: its ring and port replaced, nobody told (as Xen).
                if self.introduced.insert(dom, (gfn as u64, port)).is_none() {
                    specials.push("@introduceDomain");
                }
                reply(ty, ok())
            }
            MsgType::Release => {
                if !who.privileged {
                    return Err(Error::EACCES);
                }
                let dom: DomId = num(arg(0)?)?;
                if self.introduced.remove(&dom).is_none() {
                    return Err(Error::ENOENT);
                }
                // Its connections go, with their watches and transactions; what it owned
                // passes to dom0 and its permission entries go (XSA-322: the next domain
                // with its id inherits nothing).
                self.conns.retain(|_, k| k.privileged || k.dom != dom);
                self.targets.retain(|&d, &mut t| d != dom && t != dom);
                let gen = self.gen + 1;
                let moved = self.tree.forget_domain(dom, gen);
                self.gen = gen;
                if let Some(n) = self.counts.remove(&dom) {
                    *self.counts.entry(0).or_insert(0) += n.min(moved);
                }
                self.released.push(dom);
                specials.push("@releaseDomain");
                reply(ty, ok())
            }
            MsgType::GetDomainPath => {
                let dom: DomId = num(arg(0)?)?;
                reply(ty, cstr(&path::domain_path(dom)))
            }
            MsgType::IsDomainIntroduced => {
                if !who.privileged {
                    return Err(Error::EACCES);
                }
                let dom: DomId = num(arg(0)?)?;
                reply(ty, cstr(if self.introduced.contains_key(&dom) || dom == 0 { "T" } else { "F" }))
            }
            MsgType::Resume => {
                if !who.privileged {
                    return Err(Error::EACCES);
                }
                let dom: DomId = num(arg(0)?)?;
                if !self.introduced.contains_key(&dom) {
                    return Err(Error::ENOENT);
                }
                reply(ty, ok())
            }
            MsgType::SetTarget => {
                if !who.privileged {
                    return Err(Error::EACCES);
                }
                let (dom, target): (DomId, DomId) = (num(arg(0)?)?, num(arg(1)?)?);
                if !self.introduced.contains_key(&dom) {
                    return Err(Error::ENOENT);
                }
                self.targets.insert(dom, target);
                reply(ty, ok())
            }
            MsgType::ResetWatches => {
                let conn = self.conns.get_mut(&c).ok_or(Error::EINVAL)?;
                conn.watches.clear();
                conn.txs.clear();
                reply(ty, ok())
            }
            MsgType::Control | MsgType::WatchEvent | MsgType::Error => Err(Error::ENOSYS),
        }
    }

    /// Runs `f` on the live tree or on transaction `tx` of `c` (whose record is bounded:
    /// Xen's `quota-trans-nodes`).
    fn on<R>(&mut self, c: ConnId, tx: u32, who: Who, changes: &mut Vec<Change>, f: impl FnOnce(&mut View<'_>) -> Result<R, Error>) -> Result<R, Error> {
        let quota = self.quota;
        if tx == 0 {
            let mut v = View { tree: &mut self.tree, counts: &mut self.counts, gen: &mut self.gen, rec: None, changes, quota };
            return f(&mut v);
        }
        let gen = &mut self.gen;
        let t = self.conns.get_mut(&c).and_then(|k| k.txs.get_mut(&tx)).ok_or(Error::ENOENT)?;
        if !who.privileged && (t.accessed.len() + t.ops.len() >= quota.transaction_nodes || t.op_bytes >= quota.transaction_bytes) {
            return Err(Error::ENOSPC);
        }
        let mut scratch = Vec::new();
        let mut v = View { tree: &mut t.tree, counts: &mut t.counts, gen, rec: Some(Record { accessed: &mut t.accessed, own: &mut t.own, bytes: &mut t.op_bytes }), changes: &mut scratch, quota };
        f(&mut v)
    }

    /// Applies a change to the live tree (its watches fire) or records it in transaction
    /// `tx` of `c` (applied to its copy; replayed at commit).
    fn change(&mut self, c: ConnId, tx: u32, who: Who, changes: &mut Vec<Change>, op: Op) -> Result<(), Error> {
        let bytes = match &op {
            Op::Write(p, v) => p.len() + v.len(),
            Op::Mkdir(p) | Op::Rm(p) => p.len(),
            Op::SetPerms(p, perms) => p.len() + 8 * perms.0.len(),
        };
        if tx != 0 && !who.privileged {
            let t = self.conns.get(&c).and_then(|k| k.txs.get(&tx)).ok_or(Error::ENOENT)?;
            if t.op_bytes + bytes > self.quota.transaction_bytes {
                return Err(Error::ENOSPC);
            }
        }
        self.on(c, tx, who, changes, |v| v.apply(who, &op))?;
        if tx != 0 {
            if let Some(t) = self.conns.get_mut(&c).and_then(|k| k.txs.get_mut(&tx)) {
                t.op_bytes += bytes;
                t.ops.push(op);
            }
        }
        Ok(())
    }

    /// Commits transaction `t`: `EAGAIN` if anything it looked at changed since it did;
    /// otherwise its operations are replayed on the live tree, all or nothing.
    fn commit(&mut self, who: Who, t: Tx, changes: &mut Vec<Change>) -> Result<(), Error> {
        for (p, g) in &t.accessed {
            if self.tree.get(p).map(|n| n.gen) != *g {
                return Err(Error::EAGAIN);
            }
        }
        let mut tree = self.tree.clone();
        let mut counts = self.counts.clone();
        let mut gen = self.gen;
        let mut done = Vec::new();
        {
            let mut v = View { tree: &mut tree, counts: &mut counts, gen: &mut gen, rec: None, changes: &mut done, quota: self.quota };
            for op in &t.ops {
                v.apply(who, op)?;
            }
        }
        self.tree = tree;
        self.counts = counts;
        self.gen = gen;
        changes.extend(done);
        Ok(())
    }

    /// The watch events `changes` fire: a watch sees a change at or below its path, and,
    /// for a removal, the removal of its own path from above; only if its connection may
    /// read the node.
    fn fire(&mut self, changes: &[Change]) -> Vec<Event> {
        let mut out = Vec::new();
        let mut per_conn: BTreeMap<ConnId, usize> = BTreeMap::new();
        let mut dropped = 0u64;
        for ch in changes {
            for (&id, conn) in &self.conns {
                let who = Who { dom: conn.dom, privileged: conn.privileged, target: self.targets.get(&conn.dom).copied() };
                for w in &conn.watches {
                    if w.path.starts_with('@') {
                        continue;
                    }
                    let hit = if is_under(&ch.path, &w.path) {
                        Some((ch.path.as_str(), &ch.perms))
                    } else if let Some(gone) = ch.removed.as_ref().filter(|_| is_under(&w.path, &ch.path)) {
                        let rel = w.path.get(ch.path.len()..).unwrap_or("").trim_start_matches('/');
                        let perms = gone.find(rel).map_or(&ch.perms, |n| &n.perms);
                        Some((w.path.as_str(), perms))
                    } else {
                        None
                    };
                    if let Some((p, perms)) = hit {
                        if who.may(perms, Access::Read) {
                            let msg = watch_event(conn.dom, w, p);
                            let n = per_conn.entry(id).or_insert(0);
                            if conn.privileged || *n + crate::HEADER + msg.payload.len() <= EVENT_BYTES_PER_REQUEST {
                                *n += crate::HEADER + msg.payload.len();
                                out.push(Event { conn: id, msg });
                            } else {
                                dropped += 1;
                            }
                        }
                    }
                }
            }
        }
        self.dropped_events += dropped;
        out
    }

    /// Watch events not kept because one request fired more than
    /// [`EVENT_BYTES_PER_REQUEST`] of them for a connection.
    pub fn dropped_events(&self) -> u64 {
        self.dropped_events
    }

    /// `@introduceDomain` / `@releaseDomain`: to privileged watchers only.
    fn fire_special(&self, name: &str) -> Vec<Event> {
        let mut out = Vec::new();
        for (&id, conn) in &self.conns {
            for w in conn.watches.iter().filter(|w| conn.privileged && w.path == name) {
                out.push(Event { conn: id, msg: watch_event(conn.dom, w, name) });
            }
        }
        out
    }

    /// A domain shut down or died (the daemon saw `VIRQ_DOM_EXC`): the `@releaseDomain`
    /// watch events, as Xen's daemon fires them then (privileged watchers only).
    pub fn domain_exited(&self) -> Vec<Event> {
        self.fire_special("@releaseDomain")
    }

    /// The absolute paths of every node (for tests).
    pub fn paths(&self) -> Vec<String> {
        let mut v = Vec::new();
        let mut stack = alloc::vec![String::from("/")];
        while let Some(p) = stack.pop() {
            if let Some(n) = self.tree.get(&p) {
                for k in n.children.keys() {
                    stack.push(if p == "/" { format!("/{}", k) } else { format!("{}/{}", p, k) });
                }
            }
            v.push(p);
        }
        v.sort();
        v
    }
}

fn watch_event(dom: DomId, w: &Watch, p: &str) -> Msg {
    let shown = if w.relative { path::relative_to(dom, p) } else { p.to_string() };
    let mut b = cstr(&shown);
    b.extend_from_slice(&cstr(&w.token));
    Msg::new(MsgType::WatchEvent, 0, 0, b)
}
