//! A hostile domU for dom0's XenStore daemon, created by `xl create`: writes outside its
//! subtree, floods watches, transactions and nodes past their quotas, writes an oversize
//! value, then breaks its own ring (an oversize request with `extra = "oversize"`, garbage
//! indexes with `extra = "indexes"`) and checks the daemon closed it, then garbles its
//! console ring's indexes (the backend must carry on). Its verdict goes through its console
//! ring (`xl console`).
#![no_std]
#![no_main]

use guest_abi::errno::Errno;
use guest_abi::io::xs;
use pv_runtime::{events, pvio, xenbus};
use test_guests::{check, finish, println};

fn expect(what: &str, got: Result<(), Errno>, want: Result<(), Errno>) {
    if got != want {
        println!("  {}: got {:?}, want {:?}", what, got, want);
    }
    check(what, got == want);
}

#[no_mangle]
fn guest_main(si: &'static pv_runtime::StartInfo) -> ! {
    let how = core::str::from_utf8(si.cmdline_bytes()).unwrap_or("");
    check("XenStore ring", xenbus::init(si));
    let mut b = [0u8; 16];
    let n = xenbus::read("domid", &mut b).unwrap_or(0);
    let me: u16 = core::str::from_utf8(&b[..n]).ok().and_then(|s| s.parse().ok()).unwrap_or(0);
    println!("xshostile: domain {} ({})", me, how);
    if how == "memory" {
        hold_memory();
    }

    // Outside its subtree, and nodes dom0 made read-only for it.
    expect("write dom0's subtree", xenbus::write("/local/domain/0/evil", b"x"), Err(Errno::EACCES));
    expect("write another domain's", xenbus::write("/local/domain/1/data/evil", b"x"), Err(Errno::EACCES));
    expect("write the root", xenbus::write("/evil", b"x"), Err(Errno::EACCES));
    expect("rewrite its own name", xenbus::write("name", b"x"), Err(Errno::EACCES));
    expect("remove its console entries", xenbus::rm("console"), Err(Errno::EACCES));

    // Watches: 128 per connection, then E2BIG.
    let mut first_refused = None;
    for i in 0..140u32 {
        let mut path = [0u8; 16];
        let p = fmt(&mut path, b"data/w", i);
        if let Err(e) = xenbus::watch(p, p) {
            first_refused.get_or_insert((i, e));
        }
        // Each watch fires once at once: drain them.
        let mut ev = [0u8; 64];
        while xenbus::next_watch(&mut ev).is_some() {}
    }
    println!("xshostile: watches refused from #{:?}", first_refused);
    check("watch quota", first_refused == Some((128, Errno::E2BIG)));

    // Transactions: 10 open per connection, then ENOSPC.
    let mut open = [0u32; 12];
    let mut refused = None;
    for (i, t) in open.iter_mut().enumerate() {
        match xenbus::transaction_start() {
            Ok(id) => *t = id,
            Err(e) => {
                refused.get_or_insert((i, e));
            }
        }
    }
    println!("xshostile: transactions refused from #{:?}", refused);
    check("transaction quota", refused == Some((10, Errno::ENOSPC)));
    for &t in open.iter().filter(|&&t| t != 0) {
        let _ = xenbus::transaction_end(t, false);
    }

    // Nodes: 1000 per domain, then ENOSPC (it owns some already); an oversize value.
    let mut made = 0u32;
    let mut err = None;
    for i in 0..1100u32 {
        let mut path = [0u8; 16];
        match xenbus::write(fmt(&mut path, b"data/n", i), b"v") {
            Ok(()) => made += 1,
            Err(e) => {
                err = Some(e);
                break;
            }
        }
    }
    println!("xshostile: {} nodes written, then {:?}", made, err);
    check("node quota", err == Some(Errno::ENOSPC) && made < 1000 && made > 900);
    expect("the node flood removed", xenbus::rm("data"), Ok(()));

    // Memory: ten transactions, each writing 2 KiB values until refused (20 MiB if nothing
    // stopped it, several times dom0's heap): each stops at the transaction byte quota
    // (ENOSPC), and dom0 serves the domain as before once they are abandoned.
    let mut txs = [0u32; 10];
    let mut mem_err = None;
    let mut writes = 0u32;
    'flood: for t in txs.iter_mut() {
        let Ok(id) = xenbus::transaction_start() else { break };
        *t = id;
        for i in 0..1100u32 {
            let mut path = [0u8; 16];
            match xenbus::write_tx(id, fmt(&mut path, b"attr/m", i), &[b'm'; 2048]) {
                Ok(()) => writes += 1,
                Err(Errno::ENOSPC) => break,
                Err(e) => {
                    mem_err = Some(e);
                    break 'flood;
                }
            }
        }
    }
    println!("xshostile: {} transactional writes of 2 KiB in 10 transactions, then {:?}", writes, mem_err);
    check("the transaction byte quota", mem_err.is_none() && writes > 100 && writes <= 160);
    for &t in txs.iter().filter(|&&t| t != 0) {
        let _ = xenbus::transaction_end(t, false);
    }
    expect("served again once they are abandoned", xenbus::write("attr/after", b"ok"), Ok(()));
    expect("an oversize value", xenbus::write("attr/big", &[b'x'; 3000]), Err(Errno::ENOSPC));

    // Break the ring: the daemon marks it broken (`error`) and serves it no more.
    let va = pvio::region_va(si, si.store_mfn).unwrap_or(0);
    check("ring page found", va != 0);
    // SAFETY: the XenStore page is mapped writable in the bootstrap region for the
    // domain's lifetime; the client is not used any more.
    let r = unsafe { pvio::RingPage::new(va) };
    let want = if how == "indexes" {
        let cons = r.read_u32(xs::REQ_CONS);
        r.write_u32(xs::REQ_PROD, cons.wrapping_add(5000));
        xs::ERROR_RINGIDX
    } else {
        // A header claiming 5000 bytes of payload.
        let prod = r.read_u32(xs::REQ_PROD);
        let h = [xs::MsgType::Read as u32, 99, 0, 5000];
        for (i, w) in h.iter().enumerate() {
            for (j, byte) in w.to_le_bytes().into_iter().enumerate() {
                r.write_u8(xs::REQ + ((prod as usize + 4 * i + j) % xs::RING_SIZE as usize), byte);
            }
        }
        r.write_u32(xs::REQ_PROD, prod.wrapping_add(16));
        xs::ERROR_PROTO
    };
    events::send(xenbus::port());
    let deadline = events::system_time() + 2_000_000_000;
    while r.read_u32(xs::ERROR) == 0 && events::system_time() < deadline {
        pvio::wait_until(&[xenbus::port()], deadline);
    }
    println!("xshostile: ring error {} (want {})", r.read_u32(xs::ERROR), want);
    check("the daemon closed the broken ring", r.read_u32(xs::ERROR) == want);

    // Its console ring's indexes set to nonsense: the backend says so, reads the last ring's
    // worth, and carries on (what follows still reaches it).
    let cva = pvio::region_va(si, si.console.mfn_or_info).unwrap_or(0);
    check("console page found", cva != 0);
    // SAFETY: the console page is mapped writable in the bootstrap region for the domain's
    // lifetime; nothing prints while its indexes are garbage (the next print comes after
    // the backend caught up).
    let cr = unsafe { pvio::RingPage::new(cva) };
    use guest_abi::io::console::{OUT_CONS, OUT_PROD};
    let cons = cr.read_u32(OUT_CONS);
    cr.write_u32(OUT_PROD, cons.wrapping_add(0x10_0000));
    events::send(pv_runtime::xencons::port());
    let deadline = events::system_time() + 2_000_000_000;
    // (The backend may still be taking the last print when the indexes change: wait until
    // it has caught up with the garbage producer index itself.)
    while cr.read_u32(OUT_CONS) != cr.read_u32(OUT_PROD) && events::system_time() < deadline {
        pvio::wait_until(&[pv_runtime::xencons::port()], deadline);
    }
    check("the console backend caught up past garbage indexes", cr.read_u32(OUT_CONS) == cr.read_u32(OUT_PROD));
    println!("xshostile: console ring indexes garbled: the backend carried on");
    finish(if how == "indexes" { "xshostile-indexes" } else { "xshostile-oversize" })
}

/// `extra = "memory"`: 2 KiB values in as many nodes as it is let write, kept until the
/// domain is destroyed (three of these side by side reach dom0's memory reserve).
fn hold_memory() -> ! {
    let mut n = 0u32;
    let mut err = None;
    for i in 0..1100u32 {
        let mut path = [0u8; 16];
        match xenbus::write(fmt(&mut path, b"data/m", i), &[b'm'; 2048]) {
            Ok(()) => n += 1,
            Err(e) => {
                err = Some(e);
                break;
            }
        }
    }
    println!("xshostile: memory: {} nodes of 2 KiB, then {:?}; holding them", n, err);
    loop {
        pvio::wait(&[xenbus::port()]);
    }
}

/// `prefix` and `n` in decimal, in `buf`.
fn fmt<'a>(buf: &'a mut [u8; 16], prefix: &[u8], n: u32) -> &'a str {
    let mut len = prefix.len();
    buf[..len].copy_from_slice(prefix);
    let mut digits = [0u8; 10];
    let mut k = 0;
    let mut v = n;
    loop {
        digits[k] = b'0' + (v % 10) as u8;
        k += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    for d in digits[..k].iter().rev() {
        buf[len] = *d;
        len += 1;
    }
    core::str::from_utf8(&buf[..len]).unwrap_or("")
}
