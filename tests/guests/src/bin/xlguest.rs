//! A domU for dom0's toolstack (`xl create`): it prints through its PV console ring,
//! talks to XenStore over its ring (reads its name, writes `data/hello`, is refused a write
//! outside its subtree), echoes what is typed at `xl console` (`crash` makes it crash), and
//! follows the shutdown protocol (`control/shutdown` watched, acknowledged, then
//! `SCHEDOP_shutdown` with the reason asked for).
#![no_std]
#![no_main]

use guest_abi::sched::ShutdownReason;
use pv_runtime::{hypercall, println, pvio, xenbus, xencons};

fn text(b: &[u8]) -> &str {
    core::str::from_utf8(b).unwrap_or("?")
}

#[repr(C, align(4096))]
struct Page([u8; 4096]);
static mut SHARED: Page = Page([0; 4096]);

/// The grant client end to end on itself: a page granted to its own domain id, mapped
/// elsewhere, read back; ending the access is refused while mapped and works after.
fn grant_to_myself(si: &pv_runtime::StartInfo, me: u16) {
    use pv_runtime::gnttab;
    let page = core::ptr::addr_of_mut!(SHARED) as u64;
    let at = pv_runtime::virt_base() + (pvio::region_end_pfn(si) - 3) * 4096;
    // SAFETY: a static page of this guest nothing else touches.
    unsafe { (page as *mut u64).write_volatile(0x5EED_F00D) };
    let ok = gnttab::init(si);
    // SAFETY: SHARED is only read back through the grant; it is granted read-only.
    let grant = pvio::region_mfn(si, page).and_then(|mfn| unsafe { gnttab::grant_access(me, mfn, true) });
    let gref = grant.as_ref().map(|g| g.gref());
    // SAFETY: `at` is a slack page of the bootstrap region no Rust object uses.
    let mapped = gref.map(|g| unsafe { gnttab::map(me, g, at, true) });
    // SAFETY: the grant mapping (if made) is read-only and maps the page above.
    let seen = matches!(mapped, Some(Ok(_))).then(|| unsafe { (at as *const u64).read_volatile() });
    let (busy, grant) = match grant.map(gnttab::end_access) {
        Some(Err(g)) => (true, Some(g)),
        _ => (false, None),
    };
    // SAFETY: `at` is not used after the unmap.
    let unmapped = matches!(mapped, Some(Ok(h)) if unsafe { gnttab::unmap(at, h) }.is_ok());
    let ended = grant.is_some_and(|g| gnttab::end_access(g).is_ok());
    println!(
        "xlguest: grant to myself: table {}, ref {:?}, read back {:#x}, end while mapped refused {}, unmapped {}, ended {}",
        ok,
        gref,
        seen.unwrap_or(0),
        busy,
        unmapped,
        ended
    );
}

#[no_mangle]
fn guest_main(si: &'static pv_runtime::StartInfo) -> ! {
    if !xencons::active() {
        hypercall::console_write(b"xlguest: no console ring\n");
        hypercall::shutdown(ShutdownReason::Crash)
    }
    println!("xlguest: up on its console ring");
    if !xenbus::init(si) {
        println!("xlguest: no XenStore ring");
        hypercall::shutdown(ShutdownReason::Crash)
    }
    let mut b = [0u8; 64];
    let name = match xenbus::read("name", &mut b) {
        Ok(n) => n,
        Err(e) => {
            println!("xlguest: reading my name failed: {:?}", e);
            hypercall::shutdown(ShutdownReason::Crash)
        }
    };
    let mut d = [0u8; 16];
    let domid = xenbus::read("domid", &mut d).map(|n| text(&d[..n])).unwrap_or("?");
    println!("xlguest: I am '{}', domain {}", text(&b[..name]), domid);
    println!("xlguest: write data/hello: {:?}", xenbus::write("data/hello", b"world"));
    println!("xlguest: write outside my subtree: {:?}", xenbus::write("/local/domain/0/mine", b"x"));
    println!("xlguest: write my name: {:?}", xenbus::write("name", b"other"));
    grant_to_myself(si, domid.parse().unwrap_or(0));
    if let Err(e) = xenbus::watch_shutdown() {
        println!("xlguest: watching control/shutdown failed: {:?}", e);
    }
    let mut line = [0u8; 80];
    let mut n = 0;
    let ports = [xencons::port(), xenbus::port()];
    loop {
        let mut ev = [0u8; 128];
        while let Some(len) = xenbus::next_watch(&mut ev) {
            if !ev[..len].ends_with(b"\0shutdown\0") {
                continue;
            }
            if let Some(reason) = xenbus::take_shutdown_request() {
                println!("xlguest: shutdown request ({:?}) acknowledged", reason);
                hypercall::shutdown(reason)
            }
        }
        let mut inb = [0u8; 32];
        let got = xencons::read(&mut inb);
        for &c in &inb[..got] {
            match c {
                b'\r' | b'\n' => {
                    let typed = text(&line[..n]);
                    println!("xlguest: you typed '{}'", typed);
                    if typed == "crash" {
                        println!("xlguest: crashing as asked");
                        hypercall::shutdown(ShutdownReason::Crash)
                    }
                    n = 0;
                }
                c if n < line.len() => {
                    line[n] = c;
                    n += 1;
                }
                _ => {}
            }
        }
        if got == 0 {
            pvio::wait(&ports);
        }
    }
}
