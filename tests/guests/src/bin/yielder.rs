//! Benchmark guest for the context-switch cost: `alone` measures SCHEDOP_yield with nothing
//! else runnable (one hypercall, no switch); `pair` (dom0) measures it while a `partner` domU
//! also yields on the same CPU, so every yield switches to the other domain and back
//! (two hypercalls, two switches).
#![no_std]
#![no_main]

use pv_runtime::events as ev;
use pv_runtime::mm::{self, GuestMem};
use test_guests::*;

const N: u64 = 20_000;

fn rdtsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: rdtsc is allowed at CPL 1.
    unsafe { core::arch::asm!("lfence", "rdtsc", out("eax") lo, out("edx") hi, options(nostack)) };
    ((hi as u64) << 32) | lo as u64
}

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
        let vb = pv_runtime::virt_base();
        let mem = GuestMem::new(si, vb);
        if let Ok(shared) = mm::map_shared_info(si, vb + (mem.region_end_pfn - 1) * 4096) {
            ev::init(&shared);
            exc = ev::bind_virq(guest_abi::evtchn::VIRQ_DOM_EXC, 0).unwrap_or(0);
            ev::enable();
        }
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
    if exc != 0 {
        while ev::count(exc) == 0 {
            ev::block();
        }
    }
    finish(role)
}
