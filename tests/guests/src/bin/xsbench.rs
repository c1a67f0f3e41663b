//! XenStore through a domU's ring (`cargo xtask bench --only xenstore`): reads, writes and
//! transactions (start, two writes, commit) in a row, each timed with the TSC; the figures
//! go out as `BENCH` lines on its console ring, which dom0 shows.
#![no_std]
#![no_main]

use guest_abi::sched::ShutdownReason;
use pv_runtime::{hypercall, println, rdtsc, xenbus};

const READS: u64 = 2000;
const WRITES: u64 = 2000;
const TXS: u64 = 500;

#[no_mangle]
fn guest_main(si: &'static pv_runtime::StartInfo) -> ! {
    if !xenbus::init(si) {
        println!("xsbench: no XenStore ring");
        hypercall::shutdown(ShutdownReason::Crash)
    }
    let mut b = [0u8; 64];
    // Warm up (the first requests fill the daemon's caches and the guest's TLB).
    for _ in 0..50 {
        let _ = xenbus::read("name", &mut b);
    }
    let t0 = rdtsc();
    let mut bad = 0;
    for _ in 0..READS {
        bad += xenbus::read("name", &mut b).is_err() as u32;
    }
    let t1 = rdtsc();
    for _ in 0..WRITES {
        bad += xenbus::write("data/bench", b"some value").is_err() as u32;
    }
    let t2 = rdtsc();
    for _ in 0..TXS {
        match xenbus::transaction_start() {
            Ok(tx) => {
                bad += xenbus::write_tx(tx, "data/a", b"1").is_err() as u32;
                bad += xenbus::write_tx(tx, "data/b", b"2").is_err() as u32;
                bad += xenbus::transaction_end(tx, true).is_err() as u32;
            }
            Err(_) => bad += 1,
        }
    }
    let t3 = rdtsc();
    println!("BENCH xs_read_tsc={}", (t1 - t0) / READS);
    println!("BENCH xs_write_tsc={}", (t2 - t1) / WRITES);
    println!("BENCH xs_transaction_tsc={}", (t3 - t2) / TXS);
    println!("xsbench: {} reads, {} writes, {} transactions; {} failed", READS, WRITES, TXS, bad);
    hypercall::shutdown(if bad == 0 { ShutdownReason::Poweroff } else { ShutdownReason::Crash })
}
