//! Parallel throughput: the same hypercall loop in two domUs on two CPUs at once, against
//! one of them alone in the same boot (`cargo xtask bench`, plain TCG: MTTCG runs the two
//! CPUs on two host threads).
//!
//! - `worker <k>` (a domU): runs each operation in timed windows of system time, five rounds
//!   of two: worker 1 alone, then every worker. Prints `BENCH par_<op>_alone_r<n>=<units per
//!   ms>` (worker 1) and `BENCH par_<op>_both_w<k>_r<n>=...`.
//!   Operations: `null` (`xen_version`, one unit per call) and `mmu512` (`mmu_update` of
//!   512 validated PTE updates that move a mapping between two frames: one unit per PTE).
//!   A worker that missed a window's start says so (`late`) instead of printing a number.
//! - `coordinator` (dom0): sleeps past the last window and powers the machine off.
#![no_std]
#![no_main]

use pv_runtime::events as ev;
use pv_runtime::hypercall::{self as hc, MmuUpdate};
use pv_runtime::mm::{GuestMem, A, D, P, RW};
use pv_runtime::println;
use test_guests::*;

const MS: u64 = 1_000_000;
/// The first window opens at this system time; each lasts `WINDOW`, one every `STEP`.
const FIRST: u64 = 1200 * MS;
const WINDOW: u64 = 400 * MS;
const STEP: u64 = 500 * MS;
const OPS: [&str; 2] = ["null", "mmu512"];
/// Alone and together, this many times in turn for each operation (the host's threads
/// drift: the bench takes the median of each).
const ROUNDS: u64 = 5;

/// Sleeps until system time `t` (the periodic timer wakes the vCPU every 10 ms).
fn sleep_until(t: u64) {
    while ev::system_time() < t {
        ev::set_timer(t);
        ev::block();
    }
}

static mut REQS: [MmuUpdate; 512] = [MmuUpdate { ptr: 0, val: 0 }; 512];

/// 512 requests that each move the PTE of a slack page to the other of two own frames.
fn mmu_requests(si: &pv_runtime::StartInfo) -> &'static [MmuUpdate; 512] {
    let vb = pv_runtime::virt_base();
    let mem = GuestMem::new(si, vb);
    let va = vb + (mem.region_end_pfn - 2) * 4096;
    let t = Tables::new(si);
    let pte = t.entry_maddr(va, 1);
    let (fa, fb) = (mem.mfn((va - vb) / 4096), mem.mfn((va - vb) / 4096 - 1));
    // SAFETY: single-threaded guest; the static is used only here.
    let reqs = unsafe { &mut *core::ptr::addr_of_mut!(REQS) };
    for (i, r) in reqs.iter_mut().enumerate() {
        *r = MmuUpdate { ptr: pte, val: (if i % 2 == 0 { fb } else { fa }) << 12 | P | RW | A | D };
    }
    reqs
}

/// Runs `op` from `start` to `start + WINDOW`; units per ms, or `None` if it began late.
fn window(op: &str, reqs: &[MmuUpdate; 512], start: u64) -> Option<u64> {
    if ev::system_time() > start {
        return None;
    }
    sleep_until(start);
    let end = start + WINDOW;
    let mut units = 0u64;
    let mut failed = false;
    while ev::system_time() < end {
        for _ in 0..8 {
            if op == "null" {
                // SAFETY: XENVER_version takes no pointer.
                unsafe { hc::xen_version(0, 0) };
                units += 1;
            } else {
                failed |= hc::mmu_update(reqs).0 != 0;
                units += 512;
            }
        }
    }
    if failed {
        println!("parallel: {} updates failed", op);
        return None;
    }
    Some(units * MS / WINDOW)
}

fn worker(si: &pv_runtime::StartInfo, k: u32) -> ! {
    if !events_up(si) || ev::bind_virq(guest_abi::evtchn::VIRQ_TIMER, 0).is_err() {
        println!("parallel: events not up");
        hc::shutdown(guest_abi::sched::ShutdownReason::Crash);
    }
    ev::enable();
    let reqs = mmu_requests(si);
    for (i, op) in OPS.iter().enumerate() {
        for round in 0..ROUNDS {
            let alone = FIRST + 2 * (i as u64 * ROUNDS + round) * STEP;
            if k == 1 {
                match window(op, reqs, alone) {
                    Some(r) => println!("BENCH par_{}_alone_r{}={}", op, round, r),
                    None => println!("parallel: late for {} alone", op),
                }
            }
            match window(op, reqs, alone + STEP) {
                Some(r) => println!("BENCH par_{}_both_w{}_r{}={}", op, k, round, r),
                None => println!("parallel: late for {} both", op),
            }
        }
    }
    hc::shutdown(guest_abi::sched::ShutdownReason::Poweroff)
}

#[no_mangle]
fn guest_main(si: &'static pv_runtime::StartInfo) -> ! {
    let args = core::str::from_utf8(si.cmdline_bytes()).unwrap_or("").trim();
    let mut w = args.split_whitespace();
    match (w.next(), w.next().and_then(|k| k.parse().ok())) {
        (Some("worker"), Some(k)) => worker(si, k),
        _ => {
            start("parallel");
            check("events up", events_up(si) && ev::bind_virq(guest_abi::evtchn::VIRQ_TIMER, 0).is_ok());
            ev::enable();
            sleep_until(FIRST + 2 * OPS.len() as u64 * ROUNDS * STEP + 300 * MS);
            finish("parallel")
        }
    }
}
