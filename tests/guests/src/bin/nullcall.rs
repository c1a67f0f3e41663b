//! Benchmark guest: null hypercall (xen_version) round trips, and a baseline of a bare
//! `int` + `iretq` through a gate that the hypervisor points at a lone `iretq`.
//! Prints `BENCH name=value` lines, then powers off.
#![no_std]
#![no_main]

use pv_runtime::println;
use test_guests::rdtsc;

const N: usize = 100_000;


fn median(v: &mut [u32]) -> u32 {
    v.sort_unstable();
    v[v.len() / 2]
}

static mut SAMPLES: [u32; N] = [0; N];

#[no_mangle]
fn guest_main(_si: &'static pv_runtime::StartInfo) -> ! {
    // SAFETY: single-threaded guest; the static is used only here.
    let s = unsafe { &mut *core::ptr::addr_of_mut!(SAMPLES) };
    for x in s.iter_mut() {
        let t0 = rdtsc();
        // SAFETY: XENVER_version takes no pointer.
        unsafe { pv_runtime::hypercall::xen_version(0, 0) };
        *x = (rdtsc() - t0) as u32;
    }
    let null = median(s);
    println!("BENCH null_hypercall_tsc={}", null);
    // Baseline: int + iretq through the benchmark gate (a lone iretq in ring 0, no CR3 switch).
    for x in s.iter_mut() {
        let t0 = rdtsc();
        // SAFETY: with the `bench` option vector 0x83 is a DPL-1 gate to a lone iretq.
        unsafe { core::arch::asm!("int 0x83") };
        *x = (rdtsc() - t0) as u32;
    }
    println!("BENCH bare_int_iret_tsc={}", median(s));
    let t0 = rdtsc();
    for _ in 0..N {
        // SAFETY: as above.
        unsafe { pv_runtime::hypercall::xen_version(0, 0) };
    }
    println!("BENCH null_hypercall_loop_tsc_per_call={}", (rdtsc() - t0) / N as u64);
    println!("Test result: SUCCESS");
    pv_runtime::hypercall::shutdown(guest_abi::sched::ShutdownReason::Poweroff)
}
