//! Debian's Xen client tools (`xenstore-utils`, through libxenstore and `XENSTORED_PATH`)
//! against the host daemon: their output, permission refusals as an unprivileged domain,
//! quotas, watch events, and malformed messages from a raw client. `scripts/setup.sh`
//! installs the tools.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use xenstore::wire::Parsed;
use xenstore::{Msg, MsgType};

struct Run {
    ok: bool,
    out: String,
    err: String,
}

fn tool(socket: &Path, name: &str, args: &[&str]) -> Run {
    let o = Command::new(name)
        .args(args)
        .env("XENSTORED_PATH", socket)
        .output()
        .unwrap_or_else(|e| panic!("{name}: {e} (scripts/setup.sh installs xenstore-utils)"));
    Run { ok: o.status.success(), out: String::from_utf8_lossy(&o.stdout).into_owned(), err: String::from_utf8_lossy(&o.stderr).into_owned() }
}

fn dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("rxen-xenstored-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&d);
    d
}

/// One raw request on a stream of its own; the reply (type, payload).
fn raw(socket: &Path, ty: MsgType, payload: &[u8]) -> (u32, Vec<u8>) {
    let mut s = UnixStream::connect(socket).unwrap();
    s.write_all(&Msg::new(ty, 9, 0, payload.to_vec()).encode()).unwrap();
    read_msg(&mut s).map(|m| (m.ty, m.payload)).expect("a reply")
}

fn read_msg(s: &mut UnixStream) -> Option<Msg> {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Parsed::Msg(m, _) = Msg::parse(&buf) {
            return Some(m);
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn wait_for(p: &Path, present: bool) -> bool {
    let t = Instant::now();
    while p.exists() != present {
        if t.elapsed() > Duration::from_secs(5) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

#[test]
fn debian_xenstore_utils() {
    let d = dir();
    let sock = d.join("socket");
    let template = d.join("domu{domid}.sock").to_string_lossy().into_owned();
    let daemon = xenstored::Daemon::start(&sock, Some(template)).unwrap();

    // Plain use, as dom0.
    assert!(tool(&sock, "xenstore-write", &["/vm/a", "hello", "/vm/b", "world"]).ok);
    let r = tool(&sock, "xenstore-read", &["/vm/a"]);
    assert!(r.ok && r.out == "hello\n", "{}{}", r.out, r.err);
    assert!(tool(&sock, "xenstore-exists", &["/vm/b"]).ok);
    assert!(!tool(&sock, "xenstore-exists", &["/vm/c"]).ok);
    let r = tool(&sock, "xenstore-list", &["/vm"]);
    assert_eq!(r.out, "a\nb\n");
    let r = tool(&sock, "xenstore-ls", &["/vm"]);
    assert_eq!(r.out, "a = \"hello\"\nb = \"world\"\n");
    assert!(tool(&sock, "xenstore-chmod", &["/vm/a", "n0", "r5"]).ok);
    let r = tool(&sock, "xenstore-ls", &["-p", "/vm"]);
    assert!(r.out.lines().next().is_some_and(|l| l.starts_with("a = \"hello\"") && l.ends_with("(n0,r5)")), "{}", r.out);
    assert!(tool(&sock, "xenstore-rm", &["/vm/b"]).ok);
    let r = tool(&sock, "xenstore-read", &["/vm/b"]);
    assert!(!r.ok && r.err.contains("/vm/b"), "{}", r.err);

    // A directory too long for one reply: libxenstore pages through DIRECTORY_PART.
    let names: Vec<String> = (0..200).map(|i| format!("/big/child-with-a-rather-long-name-{i:04}")).collect();
    let mut args = Vec::new();
    for n in &names {
        args.push(n.as_str());
        args.push("");
    }
    assert!(tool(&sock, "xenstore-write", &args).ok);
    let r = tool(&sock, "xenstore-list", &["/big"]);
    assert!(r.ok, "{}", r.err);
    assert_eq!(r.out.lines().count(), 200, "every child listed");
    assert!(tool(&sock, "xenstore-rm", &["/big"]).ok);

    // Watch events: the first at once, then one per change below the path.
    let mut w = Command::new("xenstore-watch")
        .args(["-n", "3", "/w"])
        .env("XENSTORED_PATH", &sock)
        .stdout(Stdio::piped())
        .spawn()
        .expect("xenstore-watch");
    std::thread::sleep(Duration::from_millis(300));
    assert!(tool(&sock, "xenstore-write", &["/w/x", "1"]).ok);
    assert!(tool(&sock, "xenstore-write", &["/elsewhere", "1"]).ok);
    assert!(tool(&sock, "xenstore-rm", &["/w"]).ok);
    let mut out = String::new();
    w.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    assert!(w.wait().unwrap().success());
    assert_eq!(out, "/w\n/w/x\n/w\n");

    // An unprivileged domain: introduced, its home set up by dom0, then its own socket.
    assert!(tool(&sock, "xenstore-write", &["/local/domain/5/name", "guest"]).ok);
    assert!(tool(&sock, "xenstore-chmod", &["/local/domain/5", "n5"]).ok);
    assert!(tool(&sock, "xenstore-chmod", &["/local/domain/5/name", "n0", "r5"]).ok);
    assert_eq!(raw(&sock, MsgType::Introduce, b"5\x00123\x004\x00"), (MsgType::Introduce as u32, b"OK\0".to_vec()));
    let dsock = d.join("domu5.sock");
    assert!(wait_for(&dsock, true), "the domain's socket appears");
    let r = tool(&dsock, "xenstore-write", &["/local/domain/5/data/x", "1"]);
    assert!(r.ok, "{}", r.err);
    let r = tool(&dsock, "xenstore-write", &["data/y", "2"]);
    assert!(r.ok, "relative paths: {}", r.err);
    assert_eq!(tool(&sock, "xenstore-read", &["/local/domain/5/data/y"]).out, "2\n");
    let r = tool(&dsock, "xenstore-write", &["/vm/evil", "1"]);
    assert!(!r.ok, "outside its subtree");
    let r = tool(&dsock, "xenstore-read", &["/vm/a"]);
    assert!(r.ok && r.out == "hello\n", "r5 lets it read /vm/a: {}", r.err);
    let r = tool(&dsock, "xenstore-write", &["/vm/a", "x"]);
    assert!(!r.ok, "but not write it");
    let r = tool(&dsock, "xenstore-write", &["name", "renamed"]);
    assert!(!r.ok, "r5 on its name: read-only for it");
    let r = tool(&dsock, "xenstore-chmod", &["data/x", "b0"]);
    assert!(!r.ok, "it may not give a node away");
    // Quota: 1000 nodes; a transaction of 1001 writes fails as a whole.
    let keys: Vec<String> = (0..1001).map(|i| format!("q/k{i}")).collect();
    let mut args = Vec::new();
    for k in &keys {
        args.push(k.as_str());
        args.push("v");
    }
    let r = tool(&dsock, "xenstore-write", &args);
    assert!(!r.ok, "over the node quota");
    assert!(!tool(&sock, "xenstore-exists", &["/local/domain/5/q"]).ok, "nothing of it applied");
    let r = tool(&dsock, "xenstore-write", &[&"k".repeat(8), &"v".repeat(2049)]);
    assert!(!r.ok, "a value over 2048 bytes");

    // Malformed messages: each client alone is refused; the daemon goes on.
    assert_eq!(raw(&sock, MsgType::Read, b"/vm/a"), (MsgType::Error as u32, b"EINVAL\0".to_vec()), "no NUL");
    let mut s = UnixStream::connect(&sock).unwrap();
    s.write_all(&Msg { ty: 99, req_id: 1, tx_id: 0, payload: b"x\0".to_vec() }.encode()).unwrap();
    assert_eq!(read_msg(&mut s).map(|m| (m.ty, m.payload)), Some((MsgType::Error as u32, b"ENOSYS\0".to_vec())), "an unknown type");
    let mut big = Msg::new(MsgType::Write, 1, 0, vec![b'a'; 16]).encode();
    big[12..16].copy_from_slice(&5000u32.to_le_bytes());
    s.write_all(&big).unwrap();
    assert_eq!(read_msg(&mut s), None, "a length over 4096 closes that connection");
    assert_eq!(tool(&sock, "xenstore-read", &["/vm/a"]).out, "hello\n", "the others carry on");
    let (ty, _) = raw(&dsock, MsgType::Introduce, b"6\x001\x001\x00");
    assert_eq!(ty, MsgType::Error as u32, "only dom0 introduces");

    // Released: its socket goes.
    assert_eq!(raw(&sock, MsgType::Release, b"5\x00").0, MsgType::Release as u32);
    assert!(wait_for(&dsock, false), "the domain's socket goes with it");
    assert!(tool(&sock, "xenstore-rm", &["/local"]).ok);
    assert!(tool(&sock, "xenstore-rm", &["/vm"]).ok);
    assert!(tool(&sock, "xenstore-rm", &["/elsewhere"]).ok);
    assert_eq!(daemon.node_count(), 1, "nothing left but the root");
    drop(daemon);
    let _ = std::fs::remove_dir_all(d);
}
