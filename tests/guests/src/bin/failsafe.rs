//! Failed returns to the guest: the hypervisor's exit `iretq` (or its reload of the data
//! selectors on a vCPU switch) meets a selector whose descriptor the guest removed inside a
//! hypercall, or a RIP that is not canonical. With a failsafe callback the guest gets a
//! failsafe frame (`DS, ES, FS, GS, RIP, CS, RFLAGS, RSP, SS`) and carries on; without one
//! the domain is crashed. The hypervisor survives both ways.
//!
//! Cases (dom0's command line, `nocb` = no failsafe callback):
//! - `ldt-ss`: SS from a DPL-1 LDT data descriptor, then `MMUEXT_SET_LDT(0, 0)`;
//! - `gdt-cs`: CS from a DPL-1 code descriptor of the guest's GDT, then `set_gdt` without it;
//! - `rip`: `int 0x82` as the last instruction below the canonical hole (the XSA-7 shape);
//! - `segs`: DS/ES/FS/GS from an LDT descriptor, the LDT dropped, then yields until another
//!   domain ran on the CPU (run with `domu` domUs). Before that, checks that the domUs'
//!   selectors (they load FLAT_USER_DS) never show up in dom0's registers.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU64, Ordering};
use guest_abi::hypercall as nr;
use guest_abi::selectors::{FLAT_KERNEL_CS, FLAT_KERNEL_SS, FLAT_USER_DS};
use pv_runtime::hypercall::{self as hc, MmuUpdate, MmuextOp};
use pv_runtime::mm::{GuestMem, A, D, P, RW};
use test_guests::*;

/// Failsafe frames received, the last one, and where to resume (0 = the frame's RIP).
static COUNT: AtomicU64 = AtomicU64::new(0);
static FRAME: [AtomicU64; 9] = [const { AtomicU64::new(0) }; 9];
static RESUME: AtomicU64 = AtomicU64::new(0);

core::arch::global_asm!(
    r#"
    .section .text.failsafe, "ax"
    .global failsafe_entry
failsafe_entry:
    /* At RSP: DS, ES, FS, GS, RIP, CS, RFLAGS, RSP, SS. Record it, then resume the frame
       with the flat kernel selectors (and RESUME as RIP if set). */
    push %rax
    push %rcx
    push %rsi
    lea {frame}(%rip), %rsi
    xor %ecx, %ecx
1:  mov 24(%rsp,%rcx,8), %rax
    mov %rax, (%rsi,%rcx,8)
    inc %ecx
    cmp $9, %ecx
    jne 1b
    lock incq {count}(%rip)
    mov {resume}(%rip), %rax
    test %rax, %rax
    jz 2f
    mov %rax, 24+32(%rsp)
2:  movq ${cs}, 24+40(%rsp)
    movq ${ss}, 24+64(%rsp)
    pop %rsi
    pop %rcx
    pop %rax
    add $32, %rsp
    iretq
"#,
    frame = sym FRAME,
    count = sym COUNT,
    resume = sym RESUME,
    cs = const FLAT_KERNEL_CS,
    ss = const FLAT_KERNEL_SS,
    options(att_syntax)
);

extern "C" {
    static failsafe_entry: u8;
}

/// The last failsafe frame.
fn frame() -> [u64; 9] {
    core::array::from_fn(|i| FRAME[i].load(Ordering::SeqCst))
}

fn mmu1(ptr: u64, val: u64) -> i64 {
    hc::mmu_update(&[MmuUpdate { ptr, val }]).0
}

/// A DPL-1 flat data descriptor and its LDT selector (index 0, TI, RPL 1).
const LDT_DATA: u64 = 0x00CF_B300_0000_FFFF;
const LDT_SEL: u64 = 5;

/// Puts a one-descriptor LDT (LDT_DATA) in a fresh frame mapped read-only at `va`.
fn ldt_up(mem: &mut GuestMem, t: &Tables, va: u64) {
    let m = mem.alloc_mfn().unwrap_or(0);
    expect_ret("write the descriptor", mmu1(m << 12, LDT_DATA), 0);
    expect_ret("map it read-only", mmu1(t.entry_maddr(va, 1), m << 12 | P | A), 0);
    expect_ret("SET_LDT", hc::mmuext1(guest_abi::mm::ext::SET_LDT, va, 1), 0);
}

/// `mmuext_op(SET_LDT(0, 0))` through the hypercall page with SS = the LDT selector: the
/// return to the guest must load an SS that no longer exists.
fn drop_ldt_with_ldt_ss() -> i64 {
    let op = MmuextOp { cmd: 13, _pad: 0, arg1: 0, arg2: 0 };
    let r: i64;
    // SAFETY: SS is reloaded with a valid flat selector by the failsafe handler (or the domain
    // is crashed); the stub only reads `op`. Restores SS before returning to Rust code.
    unsafe {
        core::arch::asm!(
            "mov ss, {sel:x}",
            "call {stub}",
            "mov {sel:x}, {kss:x}",
            "mov ss, {sel:x}",
            sel = inout(reg) LDT_SEL => _,
            kss = in(reg) FLAT_KERNEL_SS as u64,
            stub = in(reg) hc::stub_address(nr::MMUEXT_OP),
            inout("rdi") &op as *const MmuextOp as u64 => _,
            inout("rsi") 1u64 => _,
            inout("rdx") 0u64 => _,
            inout("r10") hc::SELF => _,
            out("rax") r,
        );
    }
    r
}

/// `set_gdt(new frames)` made while running on CS = 0x9 (a DPL-1 code descriptor of the
/// current GDT that the new one lacks).
fn set_gdt_from_gdt_cs(frames: &[u64], entries: u64) -> i64 {
    let r: i64;
    // SAFETY: far-returns into GDT selector 0x9 (flat 64-bit code, same addresses), calls the
    // hypercall stub, and far-returns back to the flat kernel CS (the failsafe handler has
    // reloaded it if the hypervisor could not).
    unsafe {
        core::arch::asm!(
            "push 0x9",
            "lea rax, [rip + 2f]",
            "push rax",
            "retfq",
            "2:",
            "call {stub}",
            "mov rcx, {kcs}",
            "push rcx",
            "lea rcx, [rip + 3f]",
            "push rcx",
            "retfq",
            "3:",
            kcs = const FLAT_KERNEL_CS as u64,
            stub = in(reg) hc::stub_address(nr::SET_GDT),
            inout("rdi") frames.as_ptr() as u64 => _,
            inout("rsi") entries => _,
            out("rax") r,
            out("rcx") _,
        );
    }
    r
}

/// Maps a code page at 0x7FFF_FFFF_F000 holding `int 0x82` in its last two bytes, and jumps
/// there with `xen_version(0)`: the hypercall returns to 0x0000_8000_0000_0000, the first
/// non-canonical address.
fn hypercall_at_the_hole(mem: &mut GuestMem, t: &Tables) -> i64 {
    let [l3, l2, l1, code] = [(); 4].map(|_| mem.alloc_mfn().unwrap_or(0));
    expect_ret("L3 -> L2", mmu1((l3 << 12) | (8 * 511), l2 << 12 | P | RW | A), 0);
    expect_ret("L2 -> L1", mmu1((l2 << 12) | (8 * 511), l1 << 12 | P | RW | A), 0);
    expect_ret("L1 -> code", mmu1((l1 << 12) | (8 * 511), code << 12 | P | A), 0);
    expect_ret("int 0x82 at 0x7fff_ffff_fffe", mmu1(code << 12 | 0xFF8, 0x82CD << 48), 0);
    expect_ret("hook it into L4 slot 255", mmu1((t.l4 << 12) | (8 * 255), l3 << 12 | P | RW | A), 0);
    let r: i64;
    // SAFETY: the page is mapped executable; the hypercall's return cannot resume at the
    // non-canonical address, so the failsafe handler resumes at label 2 (RESUME), or the
    // domain is crashed. Every register but RAX is preserved by the hypervisor.
    unsafe {
        core::arch::asm!(
            "lea rcx, [rip + 2f]",
            "mov [{resume}], rcx",
            "jmp {target}",
            "2:",
            resume = in(reg) RESUME.as_ptr(),
            target = in(reg) 0x7FFF_FFFF_FFFEu64,
            inout("rax") nr::XEN_VERSION => r,
            in("rdi") 0u64,
            in("rsi") 0u64,
            out("rcx") _,
        );
    }
    RESUME.store(0, Ordering::SeqCst);
    r
}

/// Loads DS, ES, FS and GS with `sel`.
fn load_data_selectors(sel: u16) {
    // SAFETY: loading data selectors the current descriptor tables hold; Rust code does not
    // depend on them in 64-bit mode (FS/GS bases are not used by this runtime).
    unsafe { core::arch::asm!("mov ds, {0:x}", "mov es, {0:x}", "mov fs, {0:x}", "mov gs, {0:x}", in(reg) sel) };
}

fn domu() -> ! {
    load_data_selectors(FLAT_USER_DS);
    let mut n = 0u64;
    loop {
        hc::yield_now();
        n += 1;
        if data_selectors() != [FLAT_USER_DS; 4] {
            println!("FAIL: domU selectors changed to {:x?}", data_selectors());
            load_data_selectors(FLAT_USER_DS);
        }
        if n == 100 {
            println!("failsafe domU: selectors kept across 100 yields");
        }
    }
}

#[no_mangle]
fn guest_main(si: &'static pv_runtime::StartInfo) -> ! {
    let args = core::str::from_utf8(si.cmdline_bytes()).unwrap_or("").trim();
    if args == "domu" {
        domu();
    }
    let case = args.split_whitespace().next().unwrap_or("");
    let with_cb = !args.contains("nocb");
    start(case);
    if with_cb {
        let h = core::ptr::addr_of!(failsafe_entry) as u64;
        expect_ret("register the failsafe callback", register_failsafe(h), 0);
    }
    let vb = pv_runtime::virt_base();
    let mut mem = GuestMem::new(si, vb);
    let t = Tables::new(si);
    let scratch_va = vb + (mem.region_end_pfn - 2) * 4096;
    let own = t.mfn_of_va(scratch_va);
    match case {
        "ldt-ss" => {
            ldt_up(&mut mem, &t, scratch_va);
            let r = drop_ldt_with_ldt_ss();
            expect_ret("SET_LDT(0, 0) returned its result", r, 0);
            expect_ret("one failsafe frame", COUNT.load(Ordering::SeqCst) as i64, 1);
            let f = frame();
            check("frame SS is the LDT selector", f[8] == LDT_SEL);
            check("frame CS is the flat kernel CS", f[5] & 0xFFFF == FLAT_KERNEL_CS as u64);
            check("frame RIP is in the hypercall page", f[4] == hc::stub_address(nr::MMUEXT_OP) + 7);
        }
        "gdt-cs" => {
            let g = mem.alloc_mfn().unwrap_or(0);
            expect_ret("a DPL-1 64-bit code descriptor", mmu1(g << 12 | 8, 0x00AF_BA00_0000_FFFF), 0);
            expect_ret("set_gdt with it", hc::set_gdt(&[g], 2), 0);
            let empty = mem.alloc_mfn().unwrap_or(0);
            let r = set_gdt_from_gdt_cs(&[empty], 2);
            expect_ret("set_gdt without it returned its result", r, 0);
            expect_ret("one failsafe frame", COUNT.load(Ordering::SeqCst) as i64, 1);
            let f = frame();
            check("frame CS is the vanished GDT selector", f[5] & 0xFFFF == 0x9);
            check("frame SS is the flat kernel SS", f[8] == FLAT_KERNEL_SS as u64);
        }
        "rip" => {
            let r = hypercall_at_the_hole(&mut mem, &t);
            expect_ret("xen_version's result arrived", r, (4 << 16) | 19);
            expect_ret("one failsafe frame", COUNT.load(Ordering::SeqCst) as i64, 1);
            check("frame RIP is the non-canonical return address", frame()[4] == 0x0000_8000_0000_0000);
        }
        "segs" => {
            let mut kept = true;
            for _ in 0..300 {
                hc::yield_now();
                kept &= data_selectors() == [0; 4];
            }
            check("dom0's null selectors survive switches to domUs with FLAT_USER_DS", kept);
            ldt_up(&mut mem, &t, scratch_va);
            load_data_selectors(LDT_SEL as u16);
            expect_ret("drop the LDT under the loaded selectors", hc::mmuext1(guest_abi::mm::ext::SET_LDT, 0, 0), 0);
            let mut n = 0;
            while COUNT.load(Ordering::SeqCst) == 0 && n < 5000 {
                hc::yield_now();
                n += 1;
            }
            expect_ret("one failsafe frame after a switch", COUNT.load(Ordering::SeqCst) as i64, 1);
            let f = frame();
            check("frame DS, ES, FS, GS are the refused selectors", f[..4] == [LDT_SEL; 4]);
            check("the hypervisor loaded null selectors instead", data_selectors() == [0; 4]);
        }
        _ => check("known case", false),
    }
    expect_ret("restore the scratch page", mmu1(t.entry_maddr(scratch_va, 1), own << 12 | P | RW | A | D), 0);
    check("hypervisor still answers", hc::yield_now() == 0);
    finish(case)
}
