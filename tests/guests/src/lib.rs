//! Helpers for XTF-style test guests.
//!
//! A scenario calls [`check`] for each expectation and ends with [`finish`], which prints
//! `Test result: SUCCESS` and powers off, or `Test result: FAILURE` and crashes (so the exit
//! code disagrees with success too). Guests are linked low (VIRT_BASE 0, image at 1 MiB), as
//! XTF's are.
#![no_std]

use core::sync::atomic::{AtomicU32, Ordering};
use guest_abi::errno::Errno;
use guest_abi::sched::ShutdownReason;
pub use pv_runtime::{println, probe};
use pv_runtime::traps::Fault;

static FAILURES: AtomicU32 = AtomicU32::new(0);
static CHECKS: AtomicU32 = AtomicU32::new(0);

/// Records one expectation.
pub fn check(what: &str, ok: bool) {
    CHECKS.fetch_add(1, Ordering::SeqCst);
    if !ok {
        FAILURES.fetch_add(1, Ordering::SeqCst);
        println!("FAIL: {}", what);
    }
}

/// Expects a hypercall result to be the given error.
pub fn expect_err(what: &str, got: i64, want: Errno) {
    let ok = got == want.to_ret();
    if !ok {
        println!("  {}: got {} want {}", what, got, want.to_ret());
    }
    check(what, ok);
}

/// Expects a hypercall result to be `want`.
pub fn expect_ret(what: &str, got: i64, want: i64) {
    if got != want {
        println!("  {}: got {} want {}", what, got, want);
    }
    check(what, got == want);
}

/// Expects a probe to have faulted with `vector` (and `error_code`, if given).
pub fn expect_fault(what: &str, f: Option<Fault>, vector: u8, error_code: Option<u64>) {
    let ok = match f {
        Some(f) => f.vector == vector && error_code.is_none_or(|e| e == f.error_code),
        None => false,
    };
    if !ok {
        println!("  {}: got {:?}, want vector {} error {:?}", what, f, vector, error_code);
    }
    check(what, ok);
}

/// Prints the verdict and ends the guest.
pub fn finish(name: &str) -> ! {
    let (n, f) = (CHECKS.load(Ordering::SeqCst), FAILURES.load(Ordering::SeqCst));
    println!("{}: {} checks, {} failed", name, n, f);
    if f == 0 && n > 0 {
        println!("Test result: SUCCESS");
        pv_runtime::hypercall::shutdown(ShutdownReason::Poweroff)
    } else {
        println!("Test result: FAILURE");
        pv_runtime::hypercall::shutdown(ShutdownReason::Crash)
    }
}

/// Standard start: trap handlers installed, a title printed.
pub fn start(name: &str) {
    let r = pv_runtime::traps::install();
    println!("--- {} (CPL {}) ---", name, pv_runtime::cpl());
    check("set_trap_table accepted", r == 0);
}

/// For boot-time domUs: gives dom0 time to get ready (bind its VIRQs) before this domain
/// does anything observable, by yielding the CPU many times.
pub fn settle() {
    for _ in 0..3000 {
        pv_runtime::hypercall::yield_now();
    }
}
