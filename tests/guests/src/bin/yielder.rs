//! Benchmark guest for the context-switch cost: `alone` measures SCHEDOP_yield with nothing
//! else runnable (one hypercall, no switch); `pair` (dom0) measures it while a `partner` domU
//! also yields on the same CPU, so every yield switches to the other domain and back
//! (two hypercalls, two switches).
#![no_std]
#![no_main]

use test_guests::*;

const N: u64 = 20_000;

#[no_mangle]
fn guest_main(si: &'static pv_runtime::StartInfo) -> ! {
    let role = core::str::from_utf8(si.cmdline_bytes()).unwrap_or("").trim();
    start(role);
    if role == "partner" {
        for _ in 0..(3 * N) {
            pv_runtime::hypercall::yield_now();
        }
        finish(role)
    }
    let mut exc = 0;
    if role == "pair" {
        exc = watch_domain_exits(si);
        // Let the partner start yielding too.
        for _ in 0..100 {
            pv_runtime::hypercall::yield_now();
        }
    }
    let t0 = rdtsc();
    for _ in 0..N {
        pv_runtime::hypercall::yield_now();
    }
    let per = (rdtsc() - t0) / N;
    println!("BENCH yield_{}_tsc={}", role, per);
    wait_domain_exit(exc);
    finish(role)
}
