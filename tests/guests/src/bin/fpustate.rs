//! FPU/SSE/AVX state is per vCPU: two domains fill XMM0/YMM1 with their own pattern and
//! keep checking it while they take turns on the CPU. dom0 also waits for the domU's exit.
#![no_std]
#![no_main]

use test_guests::*;

fn has_avx() -> bool {
    let c = core::arch::x86_64::__cpuid_count(1, 0);
    c.ecx & (1 << 28) != 0 && c.ecx & (1 << 27) != 0
}

fn set(pattern: u64, avx: bool) {
    let v = [pattern, !pattern, pattern.rotate_left(7), pattern ^ 0x5555];
    // SAFETY: loads XMM0 (and YMM1 with AVX) from a local array; the guest owns its state.
    unsafe {
        core::arch::asm!("movdqu xmm0, [{}]", in(reg) v.as_ptr(), out("xmm0") _);
        if avx {
            core::arch::asm!("vmovdqu ymm1, [{}]", in(reg) v.as_ptr(), out("ymm1") _);
        }
    }
}

fn check_regs(pattern: u64, avx: bool) -> bool {
    let mut x = [0u64; 2];
    let mut y = [0u64; 4];
    // SAFETY: stores XMM0 / YMM1 into local arrays.
    unsafe {
        core::arch::asm!("movdqu [{}], xmm0", in(reg) x.as_mut_ptr());
        if avx {
            core::arch::asm!("vmovdqu [{}], ymm1", in(reg) y.as_mut_ptr());
        }
    }
    let v = [pattern, !pattern, pattern.rotate_left(7), pattern ^ 0x5555];
    x == v[..2] && (!avx || y == v)
}

#[no_mangle]
fn guest_main(si: &'static pv_runtime::StartInfo) -> ! {
    let role = core::str::from_utf8(si.cmdline_bytes()).unwrap_or("").trim();
    start(role);
    // dom0 gets ready to hear of the domU's exit before the two start taking turns.
    let mut exc = 0;
    if role != "domu" {
        exc = watch_domain_exits(si);
    } else {
        for _ in 0..50 {
            pv_runtime::hypercall::yield_now();
        }
    }
    let avx = has_avx();
    let pattern = if role == "domu" { 0xD0D0_0001_FEED_BEEF } else { 0x0D0D_0000_CAFE_F00D };
    set(pattern, avx);
    let mut ok = true;
    for _ in 0..300 {
        pv_runtime::hypercall::yield_now();
        ok &= check_regs(pattern, avx);
    }
    check(if avx { "XMM0 and YMM1 kept across switches" } else { "XMM0 kept across switches" }, ok);
    if role != "domu" {
        check("VIRQ_DOM_EXC bound", exc != 0);
        wait_domain_exit(exc);
    }
    finish(role)
}
