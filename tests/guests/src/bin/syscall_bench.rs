//! Benchmark guest: a guest system call through the direct `int 0x80` gate (ring 3 → ring 1,
//! no hypervisor entry) against a native ring 3 → ring 0 `int` round trip (the `bench`
//! option's DPL-3 gate to a lone `iretq`). Both handlers are a bare `iretq`.
#![no_std]
#![no_main]

use pv_runtime::traps::{install_vector, run_user};
use test_guests::*;

const N: u32 = 100_000;

core::arch::global_asm!(
    ".section .text.bench, \"ax\"",
    ".global bench_ring1_iret",
    "bench_ring1_iret:",
    "iretq",
);

extern "C" {
    static bench_ring1_iret: u8;
}


/// User code: `mov ecx, N; 1: int V; dec ecx; jnz 1b; ud2`, for V = 0x80 at +0 and the
/// baseline vector 0x84 at +32, and an empty loop at +64 (the loop's own cost).
fn code() -> [u8; 96] {
    let mut c = [0xCCu8; 96];
    for (base, v) in [(0usize, 0x80u8), (32, 0x84)] {
        c[base] = 0xB9;
        c[base + 1..base + 5].copy_from_slice(&N.to_le_bytes());
        c[base + 5..base + 13].copy_from_slice(&[0xCD, v, 0xFF, 0xC9, 0x75, 0xFA, 0x0F, 0x0B]);
    }
    c[64] = 0xB9;
    c[65..69].copy_from_slice(&N.to_le_bytes());
    c[69..75].copy_from_slice(&[0xFF, 0xC9, 0x75, 0xFC, 0x0F, 0x0B]);
    c
}

#[no_mangle]
fn guest_main(si: &'static pv_runtime::StartInfo) -> ! {
    start("syscall-bench");
    let (code_va, sp) = user_pages(si, &code());
    let handler = core::ptr::addr_of!(bench_ring1_iret) as u64;
    expect_ret("int 0x80 handler at DPL 3", install_vector(0x80, handler, 3), 0);
    let mut per = [0u64; 3];
    for (i, off) in [0u64, 32, 64].into_iter().enumerate() {
        let t0 = rdtsc();
        let f = run_user(code_va + off, sp);
        per[i] = (rdtsc() - t0) / N as u64;
        check("loop ended with its ud2", f.is_some_and(|f| f.vector == 6));
    }
    println!("BENCH int80_direct_tsc={}", per[0].saturating_sub(per[2]));
    println!("BENCH int_ring3_ring0_tsc={}", per[1].saturating_sub(per[2]));
    finish("syscall-bench")
}
