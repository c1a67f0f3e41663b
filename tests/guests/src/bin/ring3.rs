//! Guest ring 3: `int 0x82` from user mode is a #GP bounced to the kernel and makes no
//! hypercall; privileged instructions and supervisor pages are out of reach; #BP (a DPL-3
//! gate) reaches the kernel. User mappings are made with validated page-table updates.
#![no_std]
#![no_main]

use pv_runtime::hypercall::{self as hc, MmuUpdate};
use pv_runtime::mm::{GuestMem, A, D, P, RW};
use pv_runtime::traps::run_user;
use test_guests::*;

const US: u64 = 4;
const M2P: u64 = 0xFFFF_8000_0000_0000;

static mut KSTACK: [u8; 16384] = [0; 16384];

fn m2p(mfn: u64) -> u64 {
    // SAFETY: the read-only M2P is mapped in every guest root.
    unsafe { ((M2P + 8 * mfn) as *const u64).read_volatile() }
}

#[no_mangle]
fn guest_main(si: &'static pv_runtime::StartInfo) -> ! {
    start("ring3");
    let vb = pv_runtime::virt_base();
    let mem = GuestMem::new(si, vb);
    let code = vb + (mem.region_end_pfn - 2) * 4096;
    let stack = vb + (mem.region_end_pfn - 3) * 4096;
    // User code: "mov eax, 17 (xen_version); xor edi, edi; int 0x82; ud2" at +0, "cli" at +16,
    // "mov rax, [kernel page]" at +32, "int3" at +48, "int 0x80" at +64.
    let mut bytes = [0xCCu8; 80];
    bytes[..13].copy_from_slice(&[0xB8, 17, 0, 0, 0, 0x31, 0xFF, 0xCD, 0x82, 0x0F, 0x0B, 0x90, 0x90]);
    bytes[16] = 0xFA;
    bytes[32..34].copy_from_slice(&[0x48, 0xA1]);
    bytes[34..42].copy_from_slice(&si.pt_base.to_le_bytes());
    bytes[48] = 0xCC;
    bytes[64..66].copy_from_slice(&[0xCD, 0x80]);
    // SAFETY: the slack page is ours and mapped writable (not yet user-accessible).
    unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), code as *mut u8, bytes.len()) };

    // Make the path user-accessible: US on the L4, L3 and L2 entries, then on the two leaves.
    let l4 = mem.mfn((si.pt_base - vb) / 4096);
    let mut t = l4;
    for level in (2..=4u32).rev() {
        let idx = (code >> (12 + 9 * (level - 1))) & 511;
        // SAFETY: bootstrap tables are mapped read-only in the region (VA from the M2P).
        let e = unsafe { ((vb + 4096 * m2p(t) + 8 * idx) as *const u64).read_volatile() };
        let (r, _) = hc::mmu_update(&[MmuUpdate { ptr: (t << 12) + 8 * idx, val: e | US }]);
        expect_ret("set US on an upper-level entry", r, 0);
        t = (e & 0x000F_FFFF_FFFF_F000) >> 12;
    }
    let code_mfn = mem.mfn((code - vb) / 4096);
    let stack_mfn = mem.mfn((stack - vb) / 4096);
    expect_ret("user code page", hc::update_va_mapping(code, code_mfn << 12 | P | US | A, 2), 0);
    expect_ret("user stack page", hc::update_va_mapping(stack, stack_mfn << 12 | P | RW | US | A | D, 2), 0);
    let kstack_top = core::ptr::addr_of_mut!(KSTACK) as u64 + 16384;
    expect_ret("stack_switch", hc::stack_switch(guest_abi::selectors::FLAT_KERNEL_SS, kstack_top), 0);

    let user_sp = stack + 4096 - 64;
    let f = run_user(code, user_sp);
    let gp_0x82 = |f: Option<pv_runtime::traps::Fault>| {
        f.is_some_and(|f| f.vector == 13 && (f.error_code == (0x82 << 3) | 2 || f.error_code == (0x82 << 4) | 2))
    };
    if !gp_0x82(f) {
        println!("  int 0x82 from ring 3: got {:?}", f);
    }
    check("int 0x82 from ring 3 is #GP, no hypercall", gp_0x82(f));
    check("the #GP was at the int 0x82", f.is_some_and(|f| f.rip == code + 7));
    expect_fault("cli from ring 3", run_user(code + 16, user_sp), 13, Some(0));
    // #PF error code: present (1) | user (4), read.
    expect_fault("read a kernel page from ring 3", run_user(code + 32, user_sp), 14, Some(5));
    expect_fault("int3 from ring 3 reaches the kernel", run_user(code + 48, user_sp), 3, None);
    let f = run_user(code + 64, user_sp);
    check("int 0x80 from ring 3 is #GP", f.is_some_and(|f| f.vector == 13));
    check("back in ring 1", pv_runtime::cpl() == 1);
    check("hypercalls still work from ring 1", hc::yield_now() == 0);
    finish("ring3")
}
