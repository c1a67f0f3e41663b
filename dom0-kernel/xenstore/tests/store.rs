//! The store through its wire messages, as clients see it.

use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use xenstore::{ConnId, Msg, MsgType, Store};

/// The watch events a request fired: (connection, path, token).
type Fired = Vec<(ConnId, String, String)>;

/// Sends one request; the reply's payload or its error name, and the watch events.
fn req(s: &mut Store, c: ConnId, ty: MsgType, tx: u32, payload: &[u8]) -> (Result<Vec<u8>, String>, Fired) {
    let ev = s.handle(c, &Msg::new(ty, 42, tx, payload.to_vec()));
    assert!(!ev.is_empty(), "a reply");
    assert_eq!(ev[0].conn, c);
    assert_eq!(ev[0].msg.req_id, 42, "the request id is echoed");
    let r = if ev[0].msg.ty == MsgType::Error as u32 {
        Err(String::from_utf8(ev[0].msg.payload.clone()).unwrap().trim_end_matches('\0').to_string())
    } else {
        assert_eq!(ev[0].msg.ty, ty as u32);
        Ok(ev[0].msg.payload.clone())
    };
    let watches = ev[1..]
        .iter()
        .map(|e| {
            assert_eq!((e.msg.ty, e.msg.req_id, e.msg.tx_id), (MsgType::WatchEvent as u32, 0, 0));
            let parts: Vec<String> = e.msg.payload.split(|&b| b == 0).map(|p| String::from_utf8(p.to_vec()).unwrap()).collect();
            (e.conn, parts[0].clone(), parts[1].clone())
        })
        .collect();
    (r, watches)
}

fn z(parts: &[&str]) -> Vec<u8> {
    let mut v = Vec::new();
    for p in parts {
        v.extend_from_slice(p.as_bytes());
        v.push(0);
    }
    v
}

fn write(s: &mut Store, c: ConnId, tx: u32, p: &str, v: &str) -> Result<Vec<u8>, String> {
    let mut b = z(&[p]);
    b.extend_from_slice(v.as_bytes());
    req(s, c, MsgType::Write, tx, &b).0
}

fn read(s: &mut Store, c: ConnId, tx: u32, p: &str) -> Result<String, String> {
    req(s, c, MsgType::Read, tx, &z(&[p])).0.map(|v| String::from_utf8(v).unwrap())
}

fn err(e: &str) -> Result<Vec<u8>, String> {
    Err(e.to_string())
}

#[test]
fn basic_operations() {
    let mut s = Store::new();
    let d0 = s.connect(0, true);
    assert_eq!(write(&mut s, d0, 0, "/a/b/c", "hello"), Ok(b"OK\0".to_vec()));
    assert_eq!(read(&mut s, d0, 0, "/a/b/c").as_deref(), Ok("hello"));
    assert_eq!(read(&mut s, d0, 0, "/a/b").as_deref(), Ok(""), "parents are created empty");
    assert_eq!(req(&mut s, d0, MsgType::Directory, 0, &z(&["/a/b"])).0, Ok(z(&["c"])));
    assert_eq!(req(&mut s, d0, MsgType::Read, 0, &z(&["/nope"])).0, err("ENOENT"));
    assert_eq!(req(&mut s, d0, MsgType::Read, 0, &z(&["/a//b"])).0, err("EINVAL"));
    assert_eq!(req(&mut s, d0, MsgType::Read, 0, b"/a").0, err("EINVAL"), "no NUL");
    assert_eq!(req(&mut s, d0, MsgType::Mkdir, 0, &z(&["/a/b"])).0, Ok(b"OK\0".to_vec()), "an existing node");
    assert_eq!(req(&mut s, d0, MsgType::Rm, 0, &z(&["/a/x"])).0, Ok(b"OK\0".to_vec()), "absent, parent present");
    assert_eq!(req(&mut s, d0, MsgType::Rm, 0, &z(&["/q/x"])).0, err("ENOENT"));
    assert_eq!(req(&mut s, d0, MsgType::Rm, 0, &z(&["/"])).0, err("EINVAL"));
    assert_eq!(req(&mut s, d0, MsgType::Rm, 0, &z(&["/a"])).0, Ok(b"OK\0".to_vec()));
    assert_eq!(read(&mut s, d0, 0, "/a/b/c"), Err("ENOENT".into()));
    assert_eq!(s.node_count(), 1, "only the root left");
    assert_eq!(req(&mut s, d0, MsgType::GetDomainPath, 0, &z(&["7"])).0, Ok(z(&["/local/domain/7"])));
    assert_eq!(req(&mut s, d0, MsgType::Control, 0, &z(&["x"])).0, err("ENOSYS"));
    let unknown = s.handle(d0, &Msg { ty: 99, req_id: 1, tx_id: 0, payload: z(&["x"]) });
    assert_eq!(unknown[0].msg.payload, z(&["ENOSYS"]));
}

/// A directory too long for one reply: E2BIG, and DIRECTORY_PART pages through it (whole
/// names, the generation first, an empty string at the end).
#[test]
fn long_directories() {
    let mut s = Store::new();
    let d0 = s.connect(0, true);
    let names: Vec<String> = (0..200).map(|i| format!("child-with-a-long-name-{i:04}")).collect();
    for n in &names {
        write(&mut s, d0, 0, &format!("/d/{n}"), "").unwrap();
    }
    assert_eq!(req(&mut s, d0, MsgType::Directory, 0, &z(&["/d"])).0, err("E2BIG"));
    let mut got = Vec::new();
    let mut off = 0usize;
    loop {
        let r = req(&mut s, d0, MsgType::DirectoryPart, 0, &z(&["/d", &off.to_string()])).0.unwrap();
        assert!(r.len() <= 4096);
        let parts: Vec<&[u8]> = r.split(|&b| b == 0).collect();
        assert!(std::str::from_utf8(parts[0]).unwrap().parse::<u64>().is_ok(), "the generation first");
        let kids: Vec<String> = parts[1..parts.len() - 1].iter().map(|p| String::from_utf8(p.to_vec()).unwrap()).collect();
        let end = kids.last().is_some_and(|k| k.is_empty()) || kids.is_empty();
        for k in kids.into_iter().filter(|k| !k.is_empty()) {
            off += k.len() + 1;
            got.push(k);
        }
        if end {
            break;
        }
    }
    let mut want = names.clone();
    want.sort();
    assert_eq!(got, want);
}

#[test]
fn permissions() {
    let mut s = Store::new();
    let d0 = s.connect(0, true);
    let d5 = s.connect(5, false);
    let d6 = s.connect(6, false);
    write(&mut s, d0, 0, "/local/domain/5", "").unwrap();
    req(&mut s, d0, MsgType::SetPerms, 0, &z(&["/local/domain/5", "n5", "r6"])).0.unwrap();
    // Relative paths are the domain's home.
    assert_eq!(write(&mut s, d5, 0, "data/x", "1"), Ok(b"OK\0".to_vec()));
    assert_eq!(read(&mut s, d0, 0, "/local/domain/5/data/x").as_deref(), Ok("1"));
    assert_eq!(req(&mut s, d5, MsgType::GetPerms, 0, &z(&["data/x"])).0, Ok(z(&["n5", "r6"])), "inherited, owned by the creator");
    assert_eq!(read(&mut s, d6, 0, "/local/domain/5/data/x").as_deref(), Ok("1"), "r6");
    assert_eq!(write(&mut s, d6, 0, "/local/domain/5/data/x", "2"), err("EACCES"));
    assert_eq!(write(&mut s, d6, 0, "/local/domain/5/data/y", "2"), err("EACCES"), "creating needs the parent writable");
    assert_eq!(write(&mut s, d5, 0, "/tool/x", "2"), err("EACCES"), "outside its subtree");
    assert_eq!(read(&mut s, d5, 0, "/"), Err("EACCES".into()));
    assert_eq!(req(&mut s, d6, MsgType::SetPerms, 0, &z(&["/local/domain/5/data/x", "b6"])).0, err("EACCES"), "not the owner");
    assert_eq!(req(&mut s, d5, MsgType::SetPerms, 0, &z(&["data/x", "b6"])).0, err("EPERM"), "no giving nodes away");
    assert_eq!(req(&mut s, d5, MsgType::SetPerms, 0, &z(&["data/x", "n5", "b6"])).0, Ok(b"OK\0".to_vec()));
    assert_eq!(write(&mut s, d6, 0, "/local/domain/5/data/x", "3"), Ok(b"OK\0".to_vec()));
    assert_eq!(req(&mut s, d5, MsgType::SetPerms, 0, &z(&["data/x", "n5", "r1", "r2", "r3", "r4", "r6"])).0, err("ENOSPC"), "more than 5 entries");
    assert_eq!(req(&mut s, d5, MsgType::SetPerms, 0, &z(&["data/x", "q5"])).0, err("EINVAL"));
    assert_eq!(req(&mut s, d5, MsgType::Introduce, 0, &z(&["5", "1", "2"])).0, err("EACCES"));
    assert_eq!(req(&mut s, d6, MsgType::Rm, 0, &z(&["/local/domain/5"])).0, err("EACCES"));
}

#[test]
fn quotas() {
    let mut s = Store::new();
    s.quota.entries_per_domain = 10;
    let d0 = s.connect(0, true);
    let d5 = s.connect(5, false);
    write(&mut s, d0, 0, "/local/domain/5", "").unwrap();
    req(&mut s, d0, MsgType::SetPerms, 0, &z(&["/local/domain/5", "n5"])).0.unwrap();
    for i in 0..9 {
        assert_eq!(write(&mut s, d5, 0, &format!("n{i}"), "v"), Ok(b"OK\0".to_vec()), "{i}");
    }
    assert_eq!(write(&mut s, d5, 0, "n9", "v"), err("ENOSPC"), "its home counts: 10 nodes");
    assert_eq!(write(&mut s, d5, 0, "n0", &"x".repeat(2049)), err("ENOSPC"), "a value over 2048 bytes");
    assert!(write(&mut s, d0, 0, "/big", &"x".repeat(3000)).is_ok(), "dom0 has no quota");
    for i in 0..128 {
        assert!(req(&mut s, d5, MsgType::Watch, 0, &z(&[&format!("w{i}"), "t"])).0.is_ok());
    }
    assert_eq!(req(&mut s, d5, MsgType::Watch, 0, &z(&["w128", "t"])).0, err("E2BIG"));
    assert_eq!(req(&mut s, d5, MsgType::Watch, 0, &z(&["w0", "t"])).0, err("EEXIST"));
    for _ in 0..10 {
        assert!(req(&mut s, d5, MsgType::TransactionStart, 0, &z(&[""])).0.is_ok());
    }
    assert_eq!(req(&mut s, d5, MsgType::TransactionStart, 0, &z(&[""])).0, err("ENOSPC"));
    assert!(req(&mut s, d5, MsgType::ResetWatches, 0, &z(&[""])).0.is_ok());
    assert!(req(&mut s, d5, MsgType::TransactionStart, 0, &z(&[""])).0.is_ok(), "reset ended them");
}

#[test]
fn watches() {
    let mut s = Store::new();
    let d0 = s.connect(0, true);
    let w = s.connect(0, true);
    let (r, ev) = req(&mut s, w, MsgType::Watch, 0, &z(&["/a", "tok"]));
    assert!(r.is_ok());
    assert_eq!(ev, vec![(w, "/a".to_string(), "tok".to_string())], "fires once at once");
    let (_, ev) = req(&mut s, d0, MsgType::Write, 0, &[z(&["/a/b/c"]), b"v".to_vec()].concat());
    assert_eq!(ev, vec![(w, "/a/b/c".to_string(), "tok".to_string())], "once, for the node written");
    let (_, ev) = req(&mut s, d0, MsgType::Write, 0, &[z(&["/ab"]), b"v".to_vec()].concat());
    assert!(ev.is_empty(), "/ab is not under /a");
    assert!(req(&mut s, w, MsgType::Watch, 0, &z(&["/a/b/c/d", "deep"])).0.is_ok());
    let (_, ev) = req(&mut s, d0, MsgType::Rm, 0, &z(&["/a/b"]));
    let got: BTreeSet<_> = ev.into_iter().collect();
    let want: BTreeSet<_> = [(w, "/a/b".to_string(), "tok".to_string()), (w, "/a/b/c/d".to_string(), "deep".to_string())].into_iter().collect();
    assert_eq!(got, want, "a removal fires the watches above and below it");
    assert!(req(&mut s, w, MsgType::Unwatch, 0, &z(&["/a", "tok"])).0.is_ok());
    assert_eq!(req(&mut s, w, MsgType::Unwatch, 0, &z(&["/a", "tok"])).0, err("ENOENT"));
    // Relative watches see relative paths; a domain does not see what it may not read.
    let d5 = s.connect(5, false);
    write(&mut s, d0, 0, "/local/domain/5/x", "").unwrap();
    req(&mut s, d0, MsgType::SetPerms, 0, &z(&["/local/domain/5", "n5"])).0.unwrap();
    req(&mut s, d0, MsgType::SetPerms, 0, &z(&["/local/domain/5/x", "n5"])).0.unwrap();
    let (_, ev) = req(&mut s, d5, MsgType::Watch, 0, &z(&["x", "rel"]));
    assert_eq!(ev, vec![(d5, "x".to_string(), "rel".to_string())]);
    let (_, ev) = req(&mut s, d5, MsgType::Watch, 0, &z(&["/tool", "t"]));
    assert_eq!(ev.len(), 1);
    let (_, ev) = req(&mut s, d0, MsgType::Write, 0, &[z(&["/local/domain/5/x/y"]), b"1".to_vec()].concat());
    assert_eq!(ev, vec![(d5, "x/y".to_string(), "rel".to_string())]);
    let (_, ev) = req(&mut s, d0, MsgType::Write, 0, &[z(&["/tool/secret"]), b"1".to_vec()].concat());
    assert!(ev.is_empty(), "d5 may not read /tool/secret: no event");
    // Special watches: to privileged watchers.
    let (_, ev) = req(&mut s, w, MsgType::Watch, 0, &z(&["@introduceDomain", "i"]));
    assert_eq!(ev.len(), 1);
    assert!(req(&mut s, d5, MsgType::Watch, 0, &z(&["@introduceDomain", "i"])).0.is_ok());
    let (r, ev) = req(&mut s, d0, MsgType::Introduce, 0, &z(&["5", "1234", "7"]));
    assert!(r.is_ok());
    assert_eq!(ev, vec![(w, "@introduceDomain".to_string(), "i".to_string())]);
    assert_eq!(s.introduced(5), Some((1234, 7)));
    assert_eq!(req(&mut s, d0, MsgType::IsDomainIntroduced, 0, &z(&["5"])).0, Ok(z(&["T"])));
    assert!(req(&mut s, d0, MsgType::Release, 0, &z(&["5"])).0.is_ok());
    assert_eq!(s.take_released(), vec![5]);
    assert_eq!(req(&mut s, d0, MsgType::IsDomainIntroduced, 0, &z(&["5"])).0, Ok(z(&["F"])));
    assert_eq!(s.handle(d5, &Msg::new(MsgType::Read, 1, 0, z(&["x"]))), vec![], "its connection went with it");
}

#[test]
fn transactions() {
    let mut s = Store::new();
    let a = s.connect(0, true);
    let b = s.connect(0, true);
    write(&mut s, a, 0, "/x", "0").unwrap();
    let t = |r: Result<Vec<u8>, String>| String::from_utf8(r.unwrap()).unwrap().trim_end_matches('\0').parse::<u32>().unwrap();
    let t1 = t(req(&mut s, a, MsgType::TransactionStart, 0, &z(&[""])).0);
    assert_eq!(read(&mut s, a, t1, "/x").as_deref(), Ok("0"));
    write(&mut s, a, t1, "/y", "1").unwrap();
    assert_eq!(read(&mut s, a, t1, "/y").as_deref(), Ok("1"), "its own writes");
    assert_eq!(read(&mut s, b, 0, "/y"), Err("ENOENT".into()), "invisible until committed");
    write(&mut s, b, 0, "/x", "changed").unwrap();
    assert_eq!(req(&mut s, a, MsgType::TransactionEnd, t1, &z(&["T"])).0, err("EAGAIN"), "it read /x, which changed");
    assert_eq!(read(&mut s, b, 0, "/y"), Err("ENOENT".into()), "nothing of it applied");
    assert_eq!(req(&mut s, a, MsgType::TransactionEnd, t1, &z(&["T"])).0, err("ENOENT"), "it is gone");
    write(&mut s, b, 0, "/y", "").unwrap();
    write(&mut s, b, 0, "/z", "").unwrap();
    let t2 = t(req(&mut s, a, MsgType::TransactionStart, 0, &z(&[""])).0);
    write(&mut s, a, t2, "/y", "2").unwrap();
    write(&mut s, b, 0, "/z", "unrelated").unwrap();
    let (r, _) = req(&mut s, a, MsgType::TransactionEnd, t2, &z(&["T"]));
    assert!(r.is_ok(), "no conflict with an unrelated change");
    assert_eq!(read(&mut s, b, 0, "/y").as_deref(), Ok("2"));
    let t3 = t(req(&mut s, a, MsgType::TransactionStart, 0, &z(&[""])).0);
    write(&mut s, a, t3, "/w", "3").unwrap();
    assert!(req(&mut s, a, MsgType::TransactionEnd, t3, &z(&["F"])).0.is_ok());
    assert_eq!(read(&mut s, b, 0, "/w"), Err("ENOENT".into()), "aborted");
    assert_eq!(req(&mut s, a, MsgType::TransactionEnd, 77, &z(&["T"])).0, err("ENOENT"));
    assert_eq!(read(&mut s, a, 77, "/x"), Err("ENOENT".into()), "an unknown transaction");
}

// ---- Properties -----------------------------------------------------------------------

/// A few paths, so that operations meet.
const PATHS: &[&str] = &["/a", "/a/b", "/a/b/c", "/a/d", "/e", "/e/f"];

#[derive(Clone, Debug)]
enum Step {
    Write(usize, usize, u8),
    Rm(usize, usize),
    Read(usize, usize),
    Start(usize),
    End(usize, bool),
}

fn step() -> impl Strategy<Value = Step> {
    let c = 0..3usize;
    let p = 0..PATHS.len();
    prop_oneof![
        (c.clone(), p.clone(), any::<u8>()).prop_map(|(c, p, v)| Step::Write(c, p, v)),
        (c.clone(), p.clone()).prop_map(|(c, p)| Step::Rm(c, p)),
        (c.clone(), p).prop_map(|(c, p)| Step::Read(c, p)),
        c.clone().prop_map(Step::Start),
        (c, any::<bool>()).prop_map(|(c, t)| Step::End(c, t)),
    ]
}

/// The model: path → value (parents implied, created empty).
type Model = BTreeMap<String, String>;

fn m_write(m: &mut Model, p: &str, v: &str) {
    let mut at = String::new();
    for c in p.split('/').filter(|c| !c.is_empty()) {
        at.push('/');
        at.push_str(c);
        m.entry(at.clone()).or_default();
    }
    m.insert(p.to_string(), v.to_string());
}

fn m_rm(m: &mut Model, p: &str) {
    m.retain(|k, _| !(k == p || k.starts_with(&format!("{p}/"))));
}

#[derive(Clone, Debug)]
enum Logged {
    Write(String, String),
    Rm(String),
    Read(String, Result<String, String>),
}

proptest! {
    /// Transactions are serialisable: the store always equals the model that applies each
    /// non-transactional operation when it happens and each committed transaction's
    /// operations at its commit, and every read a committed transaction made is what the
    /// model gives at that point of its replay.
    #[test]
    fn transactions_serialise(steps in proptest::collection::vec(step(), 1..80)) {
        let mut s = Store::new();
        let conns: Vec<ConnId> = (0..3).map(|_| s.connect(0, true)).collect();
        let mut model = Model::new();
        let mut open: Vec<Option<(u32, Vec<Logged>, u64)>> = vec![None, None, None];
        // Changes made to the live store so far: a transaction during which none happened
        // must commit.
        let mut epoch = 0u64;
        for st in steps {
            match st {
                Step::Write(c, p, v) => {
                    let v = format!("{v}");
                    match &mut open[c] {
                        Some((t, log, _)) => {
                            if write(&mut s, conns[c], *t, PATHS[p], &v).is_ok() {
                                log.push(Logged::Write(PATHS[p].into(), v));
                            }
                        }
                        None => {
                            prop_assert!(write(&mut s, conns[c], 0, PATHS[p], &v).is_ok());
                            m_write(&mut model, PATHS[p], &v);
                            epoch += 1;
                        }
                    }
                }
                Step::Rm(c, p) => match &mut open[c] {
                    Some((t, log, _)) => {
                        if req(&mut s, conns[c], MsgType::Rm, *t, &z(&[PATHS[p]])).0.is_ok() {
                            log.push(Logged::Rm(PATHS[p].into()));
                        }
                    }
                    None => {
                        let r = req(&mut s, conns[c], MsgType::Rm, 0, &z(&[PATHS[p]])).0;
                        let parent_there = PATHS[p].rfind('/').map(|i| &PATHS[p][..i]).is_some_and(|q| q.is_empty() || model.contains_key(q));
                        prop_assert_eq!(r.is_ok(), model.contains_key(PATHS[p]) || parent_there);
                        m_rm(&mut model, PATHS[p]);
                        epoch += 1;
                    }
                },
                Step::Read(c, p) => match &mut open[c] {
                    Some((t, log, _)) => {
                        let r = read(&mut s, conns[c], *t, PATHS[p]);
                        log.push(Logged::Read(PATHS[p].into(), r));
                    }
                    None => {
                        let r = read(&mut s, conns[c], 0, PATHS[p]);
                        prop_assert_eq!(r, model.get(PATHS[p]).cloned().ok_or_else(|| "ENOENT".to_string()));
                    }
                },
                Step::Start(c) => {
                    if open[c].is_none() {
                        let r = req(&mut s, conns[c], MsgType::TransactionStart, 0, &z(&[""])).0.unwrap();
                        let t: u32 = String::from_utf8(r).unwrap().trim_end_matches('\0').parse().unwrap();
                        open[c] = Some((t, Vec::new(), epoch));
                    }
                }
                Step::End(c, commit) => {
                    if let Some((t, log, began)) = open[c].take() {
                        let r = req(&mut s, conns[c], MsgType::TransactionEnd, t, &z(&[if commit { "T" } else { "F" }])).0;
                        if commit && began == epoch {
                            prop_assert!(r.is_ok(), "nothing changed meanwhile: it commits ({:?})", r);
                        }
                        if commit && r.is_ok() {
                            epoch += 1;
                            for l in log {
                                match l {
                                    Logged::Write(p, v) => m_write(&mut model, &p, &v),
                                    Logged::Rm(p) => m_rm(&mut model, &p),
                                    Logged::Read(p, got) => prop_assert_eq!(got, model.get(&p).cloned().ok_or_else(|| "ENOENT".to_string()), "a committed read"),
                                }
                            }
                        } else if commit {
                            prop_assert_eq!(r, Err("EAGAIN".to_string()));
                        }
                    }
                }
            }
            let mut want: Vec<String> = model.keys().cloned().collect();
            want.push("/".into());
            want.sort();
            prop_assert_eq!(s.paths(), want);
            for (k, v) in &model {
                prop_assert_eq!(&read(&mut s, conns[0], 0, k).unwrap(), v);
            }
        }
    }

    /// Permission checks are never bypassed: an unprivileged domain's read or write of an
    /// existing node succeeds exactly when the node's permissions (set at random by dom0)
    /// allow it.
    #[test]
    fn permissions_hold(perms in proptest::collection::vec((0..4u8, proptest::collection::vec((5u16..8, 0..4u8), 0..3)), PATHS.len()),
                        ops in proptest::collection::vec((5u16..8, 0..PATHS.len(), any::<bool>()), 1..40)) {
        let mut s = Store::new();
        let d0 = s.connect(0, true);
        let doms: BTreeMap<u16, ConnId> = (5u16..8).map(|d| (d, s.connect(d, false))).collect();
        let letter = |k: u8| ['n', 'r', 'w', 'b'][k as usize];
        let mut table = BTreeMap::new();
        for (i, (first, rest)) in perms.iter().enumerate() {
            write(&mut s, d0, 0, PATHS[i], "v").unwrap();
            let owner = 5 + (i as u16 % 3);
            let mut list = vec![format!("{}{}", letter(*first), owner)];
            list.extend(rest.iter().map(|(d, k)| format!("{}{}", letter(*k), d)));
            let refs: Vec<&str> = std::iter::once(PATHS[i]).chain(list.iter().map(|x| x.as_str())).collect();
            req(&mut s, d0, MsgType::SetPerms, 0, &z(&refs)).0.unwrap();
            table.insert(PATHS[i], (owner, *first, rest.clone()));
        }
        for (d, p, is_write) in ops {
            let (owner, first, rest) = &table[PATHS[p]];
            let k = if d == *owner { 3 } else { rest.iter().find(|(x, _)| *x == d).map_or(*first, |(_, k)| *k) };
            let allowed = if is_write { k & 2 != 0 } else { k & 1 != 0 };
            let r = if is_write { write(&mut s, doms[&d], 0, PATHS[p], "x") } else { read(&mut s, doms[&d], 0, PATHS[p]).map(|v| v.into_bytes()) };
            prop_assert_eq!(r.is_ok(), allowed, "dom {} {} {}", d, if is_write { "writes" } else { "reads" }, PATHS[p]);
            if !allowed {
                prop_assert_eq!(r, Err("EACCES".to_string()));
            }
        }
    }

    /// Watches fire exactly for changed paths: a write fires the watches at or above it, a
    /// removal also those below it, nothing else.
    #[test]
    fn watches_fire_exactly(watch_on in proptest::collection::btree_set(0..PATHS.len(), 1..4),
                            changes in proptest::collection::vec((0..PATHS.len(), any::<bool>()), 1..30)) {
        let mut s = Store::new();
        let d0 = s.connect(0, true);
        let w = s.connect(0, true);
        for &i in &watch_on {
            let tok = format!("t{}", i);
            prop_assert!(req(&mut s, w, MsgType::Watch, 0, &z(&[PATHS[i], &tok])).0.is_ok());
        }
        let under = |p: &str, of: &str| p == of || p.starts_with(&format!("{of}/"));
        let mut model = Model::new();
        for (p, is_rm) in changes {
            let path = PATHS[p];
            let (r, ev) = if is_rm { req(&mut s, d0, MsgType::Rm, 0, &z(&[path])) } else { req(&mut s, d0, MsgType::Write, 0, &[z(&[path]), b"v".to_vec()].concat()) };
            let existed = model.contains_key(path);
            if is_rm {
                m_rm(&mut model, path);
            } else {
                m_write(&mut model, path, "v");
            }
            let got: BTreeSet<(String, String)> = ev.into_iter().map(|(c, p, t)| { assert_eq!(c, w); (p, t) }).collect();
            let mut want = BTreeSet::new();
            if r.is_ok() && (!is_rm || existed) {
                for &i in &watch_on {
                    if under(path, PATHS[i]) {
                        want.insert((path.to_string(), format!("t{i}")));
                    } else if is_rm && under(PATHS[i], path) {
                        want.insert((PATHS[i].to_string(), format!("t{i}")));
                    }
                }
            }
            prop_assert_eq!(got, want);
        }
    }
}

proptest! {
    /// Hostile requests (any type, any bytes, relative and absolute paths, transaction ids
    /// that do or do not exist) from privileged and unprivileged connections never panic,
    /// and every one gets exactly one reply first, with its request id.
    #[test]
    fn hostile_requests_never_panic(reqs in proptest::collection::vec((0u32..30, 0usize..3, 0u32..4, proptest::collection::vec(prop_oneof![Just(0u8), Just(b'/'), Just(b'a'), Just(b'@'), Just(b'5'), any::<u8>()], 0..40)), 1..60)) {
        let mut s = Store::new();
        let conns = [s.connect(0, true), s.connect(5, false), s.connect(6, false)];
        for (ty, c, tx, payload) in reqs {
            let ev = s.handle(conns[c], &Msg { ty, req_id: 77, tx_id: tx, payload });
            if !ev.is_empty() {
                prop_assert_eq!(ev[0].conn, conns[c]);
                prop_assert_eq!(ev[0].msg.req_id, 77);
                prop_assert!(ev[1..].iter().all(|e| e.msg.ty == MsgType::WatchEvent as u32));
                prop_assert!(ev.iter().all(|e| e.msg.payload.len() <= 4096));
            }
        }
    }
}

/// Review fixes: what a domain may not read it may not learn the absence of; a released
/// domain leaves no ownership or permission behind; a transaction's record is bounded; a
/// deep tree goes without recursion; one-argument requests take one argument.
#[test]
fn hardening() {
    let mut s = Store::new();
    let d0 = s.connect(0, true);
    let d5 = s.connect(5, false);
    write(&mut s, d0, 0, "/local/domain/5/mine", "x").unwrap();
    req(&mut s, d0, MsgType::SetPerms, 0, &z(&["/local/domain/5", "n5"])).0.unwrap();
    req(&mut s, d0, MsgType::SetPerms, 0, &z(&["/local/domain/5/mine", "n5"])).0.unwrap();
    write(&mut s, d0, 0, "/tool/secret", "x").unwrap();
    assert_eq!(read(&mut s, d5, 0, "/tool/absent"), Err("EACCES".into()), "absence under an unreadable node");
    assert_eq!(read(&mut s, d5, 0, "nothing"), Err("ENOENT".into()), "absence under its own home");
    assert_eq!(req(&mut s, d5, MsgType::Rm, 0, &z(&["/tool/absent"])).0, err("EACCES"));
    assert_eq!(req(&mut s, d5, MsgType::Read, 0, &z(&["mine", "extra"])).0, err("EINVAL"), "one argument");
    // A bounded transaction.
    let t: u32 = String::from_utf8(req(&mut s, d5, MsgType::TransactionStart, 0, &z(&[""])).0.unwrap()).unwrap().trim_end_matches('\0').parse().unwrap();
    let mut last = Ok(String::new());
    for i in 0..1100 {
        last = read(&mut s, d5, t, &format!("n{i}"));
        if last == Err("ENOSPC".into()) {
            break;
        }
    }
    assert_eq!(last, Err("ENOSPC".into()), "1024 nodes looked at, then ENOSPC");
    // Released: its node passes to dom0; a new domain 5 cannot touch it.
    s.handle(d0, &Msg::new(MsgType::Introduce, 1, 0, z(&["5", "1", "1"])));
    req(&mut s, d0, MsgType::SetPerms, 0, &z(&["/tool/secret", "n0", "b5"])).0.unwrap();
    req(&mut s, d0, MsgType::Release, 0, &z(&["5"])).0.unwrap();
    assert_eq!(req(&mut s, d0, MsgType::GetPerms, 0, &z(&["/local/domain/5/mine"])).0, Ok(z(&["n0"])));
    assert_eq!(req(&mut s, d0, MsgType::GetPerms, 0, &z(&["/tool/secret"])).0, Ok(z(&["n0"])), "its entries went");
    let again = s.connect(5, false);
    assert_eq!(write(&mut s, again, 0, "mine", "y"), err("EACCES"));
    // A tree as deep as a path allows.
    let deep = "/d".to_string() + &"/a".repeat(1500);
    write(&mut s, d0, 0, &deep, "v").unwrap();
    assert!(req(&mut s, d0, MsgType::Rm, 0, &z(&["/d"])).0.is_ok());
}

/// A domain's flood of its own nodes under watches, removed in one request: answered at
/// once, with one event per watch (what `dom0-xs-hostile` does over the ring).
#[test]
fn removing_a_flooded_subtree_under_many_watches() {
    let mut s = Store::new();
    let d0 = s.connect(0, true);
    let base = "/local/domain/2";
    assert!(req(&mut s, d0, MsgType::Write, 0, &z(&[&format!("{base}/data")])).0.is_ok());
    assert!(req(&mut s, d0, MsgType::SetPerms, 0, &z(&[&format!("{base}/data"), "n2"])).0.is_ok());
    assert!(req(&mut s, d0, MsgType::Introduce, 0, &z(&["2", "100", "1"])).0.is_ok());
    let c = s.connect(2, false);
    for i in 0..128 {
        let p = format!("data/w{i}");
        assert!(req(&mut s, c, MsgType::Watch, 0, &z(&[&p, &p])).0.is_ok());
    }
    let mut made = 0;
    for i in 0..1100 {
        let mut p = format!("data/n{i}").into_bytes();
        p.push(0);
        p.push(b'v');
        if req(&mut s, c, MsgType::Write, 0, &p).0.is_err() {
            break;
        }
        made += 1;
    }
    assert!(made > 900 && made < 1000, "{made}");
    let t = std::time::Instant::now();
    let (r, fired) = req(&mut s, c, MsgType::Rm, 0, &z(&["data"]));
    assert_eq!(r, Ok(b"OK\0".to_vec()));
    assert!(t.elapsed().as_millis() < 500, "{:?}", t.elapsed());
    assert_eq!(fired.len(), 128, "each watch once");
}

/// One committed transaction of many writes under many watches: the events one request
/// builds for one connection are capped in bytes, the rest counted as dropped.
#[test]
fn one_request_fires_a_bounded_number_of_events() {
    let mut s = Store::new();
    let d0 = s.connect(0, true);
    assert!(req(&mut s, d0, MsgType::Introduce, 0, &z(&["4", "100", "1"])).0.is_ok());
    let w = s.connect(4, false);
    assert!(req(&mut s, d0, MsgType::Write, 0, &z(&["/data"])).0.is_ok());
    assert!(req(&mut s, d0, MsgType::SetPerms, 0, &z(&["/data", "n0", "r4"])).0.is_ok());
    for i in 0..64 {
        assert!(req(&mut s, w, MsgType::Watch, 0, &z(&["/data", &format!("t{i}")])).0.is_ok());
    }
    let _ = w;
    let tx: u32 = String::from_utf8(req(&mut s, d0, MsgType::TransactionStart, 0, &z(&[""])).0.unwrap()).unwrap().trim_end_matches('\0').parse().unwrap();
    for i in 0..200 {
        let mut p = format!("/data/n{i}").into_bytes();
        p.push(0);
        p.push(b'v');
        assert!(req(&mut s, d0, MsgType::Write, tx, &p).0.is_ok());
    }
    let (r, fired) = req(&mut s, d0, MsgType::TransactionEnd, tx, &z(&["T"]));
    assert_eq!(r, Ok(b"OK\0".to_vec()));
    assert!(fired.iter().all(|(c, _, _)| *c == w));
    let bytes: usize = fired.iter().map(|(_, p, t)| 16 + p.len() + t.len() + 2).sum();
    assert!(bytes <= xenstore::EVENT_BYTES_PER_REQUEST && bytes > xenstore::EVENT_BYTES_PER_REQUEST - 64, "{bytes}");
    assert!(s.dropped_events() > 0);
    assert_eq!(fired.len() as u64 + s.dropped_events(), 64 * 200);
}

/// A domain's transaction carries at most `transaction_bytes` of values and paths: past
/// that, ENOSPC; what fit still commits.
#[test]
fn a_transaction_carries_a_bounded_number_of_bytes() {
    let mut s = Store::new();
    let d0 = s.connect(0, true);
    assert!(req(&mut s, d0, MsgType::Write, 0, &z(&["/local/domain/4/data"])).0.is_ok());
    assert!(req(&mut s, d0, MsgType::SetPerms, 0, &z(&["/local/domain/4/data", "n4"])).0.is_ok());
    assert!(req(&mut s, d0, MsgType::Introduce, 0, &z(&["4", "100", "1"])).0.is_ok());
    let c = s.connect(4, false);
    let tx: u32 = String::from_utf8(req(&mut s, c, MsgType::TransactionStart, 0, &z(&[""])).0.unwrap()).unwrap().trim_end_matches('\0').parse().unwrap();
    let mut fit = 0;
    for i in 0..100 {
        let mut p = format!("data/v{i}").into_bytes();
        p.push(0);
        p.extend_from_slice(&[b'x'; 2048]);
        match req(&mut s, c, MsgType::Write, tx, &p).0 {
            Ok(_) => fit += 1,
            Err(e) => {
                assert_eq!(e, "ENOSPC");
                break;
            }
        }
    }
    assert!(fit > 10 && fit < 17, "{fit} writes of 2 KiB fit");
    assert_eq!(req(&mut s, c, MsgType::TransactionEnd, tx, &z(&["T"])).0, Ok(b"OK\0".to_vec()));
    assert!(req(&mut s, c, MsgType::Read, 0, &z(&[&format!("data/v{}", fit - 1)])).0.is_ok());
}

/// Reads of long absent paths count against a transaction's bytes too.
#[test]
fn a_transaction_that_only_looks_is_bounded_too() {
    let mut s = Store::new();
    let d0 = s.connect(0, true);
    assert!(req(&mut s, d0, MsgType::Introduce, 0, &z(&["4", "100", "1"])).0.is_ok());
    let c = s.connect(4, false);
    let tx: u32 = String::from_utf8(req(&mut s, c, MsgType::TransactionStart, 0, &z(&[""])).0.unwrap()).unwrap().trim_end_matches('\0').parse().unwrap();
    let long = "x".repeat(1500);
    let mut looked = 0;
    for i in 0..1000 {
        match req(&mut s, c, MsgType::Read, tx, &z(&[&format!("/local/domain/4/{long}{i}")])).0 {
            Err(e) if e == "ENOSPC" => break,
            _ => looked += 1,
        }
    }
    assert!(looked < 30, "{looked} reads of 1.5 KiB paths");
}
