//! Nothing a domain leaves on the per-CPU entry and IST stacks (mapped in every guest root,
//! readable from ring 1) may reach the next domain on that CPU. The domU (`domu`) yields with
//! a marker in RCX and single-steps with a marker in RAX (a #DB through its IST stack); dom0
//! (`dom0`) yields and scans the entry stack and the four IST stacks for either marker.
#![no_std]
#![no_main]

use guest_abi::hypercall as nr;
use pv_runtime::hypercall as hc;
use test_guests::*;

const MARKER_RCX: u64 = 0x5EC2_E7AA_0000_0001;
const MARKER_RAX: u64 = 0x5EC2_E7BB_0000_0002;
/// The entry area: entry stack (1 page) and IST stacks (4 pages each above a guard page).
const ENTRY_STACK: u64 = 0xFFFF_8200_0003_0000;
const ENTRY_IST_BASE: u64 = 0xFFFF_8200_0004_0000;

core::arch::global_asm!(
    r#"
    .section .text.stackleak, "ax"
    .global stackleak_db
stackleak_db:
    /* #DB: RIP, CS, RFLAGS, RSP, SS. Clear TF and resume. */
    andq $~0x100, 16(%rsp)
    iretq
"#,
    options(att_syntax)
);

extern "C" {
    static stackleak_db: u8;
}

fn domu() -> ! {
    start("stackleak domU");
    let h = core::ptr::addr_of!(stackleak_db) as u64;
    expect_ret("#DB handler", pv_runtime::traps::install_vector(1, h, 0), 0);
    loop {
        // SAFETY: sched_op(yield) through the hypercall page with a marker in RCX (not an
        // argument register); then one single step over a marker load into RAX.
        unsafe {
            core::arch::asm!(
                "call {stub}",
                stub = in(reg) hc::stub_address(nr::SCHED_OP),
                inout("rdi") 0u64 => _,
                inout("rsi") 0u64 => _,
                inout("rcx") MARKER_RCX => _,
                out("rax") _,
            );
            core::arch::asm!(
                "pushfq",
                "or qword ptr [rsp], 0x100",
                "popfq",
                "mov rax, {m}",
                "nop",
                m = in(reg) MARKER_RAX,
                out("rax") _,
            );
        }
    }
}

/// Counts qwords equal to a marker in `pages` pages from `va`.
fn scan(va: u64, pages: u64) -> (u64, u64) {
    let (mut rcx, mut rax) = (0, 0);
    for i in 0..pages * 512 {
        // SAFETY: the entry area's stacks are mapped (read-write, supervisor) in the guest root.
        let w = unsafe { ((va + 8 * i) as *const u64).read_volatile() };
        rcx += u64::from(w == MARKER_RCX);
        rax += u64::from(w == MARKER_RAX);
    }
    (rcx, rax)
}

#[no_mangle]
fn guest_main(si: &'static pv_runtime::StartInfo) -> ! {
    let role = core::str::from_utf8(si.cmdline_bytes()).unwrap_or("").trim();
    if role == "domu" {
        domu();
    }
    start("stackleak");
    let (mut seen_rcx, mut seen_rax) = (0, 0);
    for _ in 0..2000 {
        hc::yield_now();
        let mut hits = scan(ENTRY_STACK, 1);
        for n in 0..4 {
            let (c, a) = scan(ENTRY_IST_BASE + n * 0x1_0000 + 0x1000, 4);
            hits = (hits.0 + c, hits.1 + a);
        }
        seen_rcx += u64::from(hits.0 > 0);
        seen_rax += u64::from(hits.1 > 0);
    }
    println!("stackleak: domU's RCX seen after {} of 2000 yields, its RAX after {}", seen_rcx, seen_rax);
    check("no marker of the other domain on the entry or IST stacks", seen_rcx == 0 && seen_rax == 0);
    finish("stackleak")
}
