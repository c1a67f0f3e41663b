//! Event ping-pong between two domains. dom0 ("server") allocates port 1 for domain 1 and
//! answers every event; the domU ("client") binds to it and sends 100 pings, waiting for each
//! pong (and sending a ping again if its pong does not come: notifications can merge). The
//! server's verdict ends the run.
#![no_std]
#![no_main]

use pv_runtime::events as ev;
use test_guests::*;

const ROUNDS: u32 = 100;

#[no_mangle]
fn guest_main(si: &'static pv_runtime::StartInfo) -> ! {
    let role = core::str::from_utf8(si.cmdline_bytes()).unwrap_or("").trim();
    start(role);
    check("events up", events_up(si));
    ev::enable();
    if role == "server" {
        let p = ev::alloc_unbound(guest_abi::DOMID_SELF, 1);
        let exc = ev::bind_virq(guest_abi::evtchn::VIRQ_DOM_EXC, 0).unwrap_or(0);
        check("alloc_unbound for d1 is port 1", p == Ok(1));
        let p = p.unwrap_or(1);
        let mut seen = 0;
        let mut t0 = 0;
        while seen < ROUNDS {
            ev::block_until(|| ev::count(p) != seen);
            seen = ev::count(p);
            if t0 == 0 {
                t0 = ev::system_time(); // timing starts at the first ping
            }
            ev::send(p);
        }
        let dt = ev::system_time() - t0;
        println!("BENCH evtchn_round_trip_ns_same_cpu={}", dt / (ROUNDS as u64 - 1));
        check("all pings answered", seen >= ROUNDS);
        // Let the client report and shut down before ending the run, answering the pings it
        // sent again meanwhile (a ping sent again that did not merge counts twice here, so
        // the client may still be waiting for its last pong).
        loop {
            ev::block_until(|| ev::count(exc) != 0 || ev::count(p) != seen);
            if ev::count(exc) != 0 {
                break;
            }
            seen = ev::count(p);
            ev::send(p);
        }
        finish("pingpong server")
    } else {
        settle();
        // The server may not have allocated the port yet: retry.
        let mut port = Err(0);
        for _ in 0..10_000 {
            port = ev::bind_interdomain(0, 1);
            if port.is_ok() {
                break;
            }
            pv_runtime::hypercall::yield_now();
        }
        check("bound to d0's port 1", port.is_ok());
        let p = port.unwrap_or(0);
        // Binding raises our own port once; let it go by.
        pv_runtime::hypercall::yield_now();
        let base = ev::count(p);
        // Event channels merge notifications that arrive before the receiver clears them, so
        // a ping whose pong does not come within 50 ms is sent again.
        let tmr = ev::bind_virq(guest_abi::evtchn::VIRQ_TIMER, 0).unwrap_or(0);
        check("timer bound", tmr != 0);
        let mut resent = 0;
        for i in 1..=ROUNDS {
            loop {
                ev::send(p);
                let deadline = ev::system_time() + 50_000_000;
                ev::set_timer(deadline);
                ev::block_until(|| ev::count(p) >= base + i || ev::system_time() >= deadline);
                if ev::count(p) >= base + i {
                    break;
                }
                resent += 1;
            }
        }
        println!("pingpong client: {} pings sent again", resent);
        println!("pingpong client: {} round trips", ROUNDS);
        finish("pingpong client")
    }
}
