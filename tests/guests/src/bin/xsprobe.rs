//! XenStore latency as a benign domU sees it while others use (or abuse) the daemon: a read
//! every 5 ms for 6 s, timed with pvclock; the count, median and worst go out on its console
//! ring, then it powers off (its config preserves it, so `xl console` shows them).
#![no_std]
#![no_main]

use guest_abi::sched::ShutdownReason;
use pv_runtime::{events, hypercall, println, pvio, xenbus};

const RUN_NS: u64 = 6_000_000_000;
const EVERY_NS: u64 = 5_000_000;

#[no_mangle]
fn guest_main(si: &'static pv_runtime::StartInfo) -> ! {
    if !xenbus::init(si) {
        println!("xsprobe: no XenStore ring");
        hypercall::shutdown(ShutdownReason::Crash)
    }
    let mut lat = [0u32; 2048];
    let (mut n, mut failed) = (0usize, 0u32);
    let start = events::system_time();
    let mut b = [0u8; 32];
    while events::system_time() < start + RUN_NS && n < lat.len() {
        let t0 = events::system_time();
        failed += xenbus::read("name", &mut b).is_err() as u32;
        lat[n] = ((events::system_time() - t0) / 1000) as u32;
        n += 1;
        let next = t0 + EVERY_NS;
        while events::system_time() < next {
            pvio::wait_until(&[xenbus::port()], next);
        }
    }
    let l = &mut lat[..n];
    l.sort_unstable();
    println!("xsprobe: {} reads ({} failed), median {} us, worst {} us", n, failed, l[n / 2], l[n - 1]);
    hypercall::shutdown(ShutdownReason::Poweroff)
}
