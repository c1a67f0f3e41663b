//! The XenStore core (`xenstore`) behind unix sockets, on the host: what `cargo xtask
//! xenstored --socket PATH [--domu-socket-template 'DIR/domu{domid}.sock']` runs, and what
//! the CI tests point Debian's Xen client tools (`xenstore-utils`, through libxenstore's
//! `XENSTORED_PATH`) at.
//!
//! Connections on PATH are dom0's (privileged). With a template, once domain N is
//! introduced (`XS_INTRODUCE`) a socket at the template's path with `{domid}` replaced
//! speaks the wire protocol as domain N, as its ring would, so permissions and quotas are
//! testable as an unprivileged domain; it goes when the domain is released. A message
//! over the payload limit closes its own connection only. `XENSTORED_TRACE` set in the
//! environment traces every request and what it sent.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use xenstore::wire::Parsed;
use xenstore::{ConnId, DomId, Msg, Store};

struct Shared {
    store: Mutex<Store>,
    /// Each connection's stream, to send it replies and watch events.
    writers: Mutex<HashMap<ConnId, (DomId, UnixStream)>>,
    template: Option<String>,
    /// Domain sockets open: their path and their listener's stop flag.
    domains: Mutex<HashMap<DomId, (PathBuf, Arc<AtomicBool>)>>,
    stop: Arc<AtomicBool>,
}

/// A running daemon; dropping it stops its listeners.
pub struct Daemon {
    shared: Arc<Shared>,
    socket: PathBuf,
}

/// How long a write to a client may block before the client is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

impl Drop for Daemon {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Every client's reader ends with its stream.
        for (_, (_, s)) in self.shared.writers.lock().unwrap().drain() {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
        for (_, (p, stop)) in self.shared.domains.lock().unwrap().drain() {
            stop.store(true, Ordering::SeqCst);
            let _ = std::fs::remove_file(p);
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

impl Daemon {
    /// Listens on `socket` (dom0's connections); `template` names the domains' sockets.
    pub fn start(socket: &Path, template: Option<String>) -> std::io::Result<Daemon> {
        let _ = std::fs::remove_file(socket);
        let l = UnixListener::bind(socket)?;
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::new()),
            writers: Mutex::new(HashMap::new()),
            template,
            domains: Mutex::new(HashMap::new()),
            stop: Arc::new(AtomicBool::new(false)),
        });
        let stop = shared.stop.clone();
        let sh = shared.clone();
        std::thread::spawn(move || accept_loop(l, 0, true, sh, stop));
        Ok(Daemon { shared, socket: socket.to_path_buf() })
    }

    /// Nodes in the store (for leak checks).
    pub fn node_count(&self) -> usize {
        self.shared.store.lock().unwrap().node_count()
    }
}

fn accept_loop(l: UnixListener, dom: DomId, privileged: bool, sh: Arc<Shared>, stop: Arc<AtomicBool>) {
    let _ = l.set_nonblocking(true);
    while !stop.load(Ordering::SeqCst) && !sh.stop.load(Ordering::SeqCst) {
        match l.accept() {
            Ok((s, _)) => {
                let _ = s.set_nonblocking(false);
                let _ = s.set_write_timeout(Some(WRITE_TIMEOUT));
                let Ok(w) = s.try_clone() else { continue };
                let conn = {
                    let mut st = sh.store.lock().unwrap();
                    // A domain released meanwhile gets no new connection.
                    if !privileged && st.introduced(dom).is_none() {
                        continue;
                    }
                    st.connect(dom, privileged)
                };
                sh.writers.lock().unwrap().insert(conn, (dom, w));
                let sh = sh.clone();
                std::thread::spawn(move || client(s, conn, sh));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

/// Serves one connection until it closes, sends a message over the limit, or its domain
/// is released.
fn client(mut s: UnixStream, conn: ConnId, sh: Arc<Shared>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    'conn: loop {
        let n = match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        loop {
            match Msg::parse(&buf) {
                Parsed::More => break,
                Parsed::TooLong => break 'conn,
                Parsed::Msg(m, used) => {
                    buf.drain(..used);
                    // Delivered under the store's lock, so every connection sees replies
                    // and events in the order the store made them. (A client that does not
                    // read stalls the others for at most its write timeout, then goes.)
                    let mut st = sh.store.lock().unwrap();
                    let events = st.handle(conn, &m);
                    if std::env::var_os("XENSTORED_TRACE").is_some() {
                        eprintln!("xenstored: conn {conn} -> {:?}", m);
                        for e in &events {
                            eprintln!("xenstored: conn {} <- {:?}", e.conn, e.msg);
                        }
                    }
                    if events.is_empty() {
                        // The connection is gone from the store (its domain was released).
                        break 'conn;
                    }
                    deliver(&sh, events);
                    drop(st);
                    domains_changed(&sh);
                }
            }
        }
    }
    sh.store.lock().unwrap().disconnect(conn);
    if let Some((_, w)) = sh.writers.lock().unwrap().remove(&conn) {
        let _ = w.shutdown(std::net::Shutdown::Both);
    }
}

/// Sends each event to its connection; one whose writes fail (or time out: it does not
/// read) is shut down, and its reader then ends it.
fn deliver(sh: &Shared, events: Vec<xenstore::Event>) {
    let mut w = sh.writers.lock().unwrap();
    for e in events {
        if let Some((_, s)) = w.get_mut(&e.conn) {
            if s.write_all(&e.msg.encode()).is_err() {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
        }
    }
}

/// Opens a socket for each newly introduced domain and closes those of released ones.
fn domains_changed(sh: &Arc<Shared>) {
    let Some(t) = &sh.template else { return };
    let (released, introduced): (Vec<DomId>, Vec<DomId>) = {
        let mut st = sh.store.lock().unwrap();
        let rel = st.take_released();
        let intro = st.introduced_domains();
        (rel, intro)
    };
    let mut doms = sh.domains.lock().unwrap();
    for d in released {
        if let Some((p, stop)) = doms.remove(&d) {
            stop.store(true, Ordering::SeqCst);
            let _ = std::fs::remove_file(p);
        }
        // Its connections: the store dropped them; their streams close.
        let mut w = sh.writers.lock().unwrap();
        for (_, (dom, s)) in w.iter().filter(|(_, (dom, _))| *dom == d) {
            let _ = (dom, s.shutdown(std::net::Shutdown::Both));
        }
        w.retain(|_, (dom, _)| *dom != d);
    }
    for d in introduced {
        if doms.contains_key(&d) {
            continue;
        }
        let p = PathBuf::from(t.replace("{domid}", &d.to_string()));
        let _ = std::fs::remove_file(&p);
        if let Ok(l) = UnixListener::bind(&p) {
            let stop = Arc::new(AtomicBool::new(false));
            doms.insert(d, (p, stop.clone()));
            let sh = sh.clone();
            std::thread::spawn(move || accept_loop(l, d, false, sh, stop));
        }
    }
}
