//! Availability under a hostile domU: dom0 (`gaps <ms>`) measures the gaps between its
//! 10 ms timer ticks while a domU (`hammer <mode>`) keeps the hypervisor busy with the longest
//! operations it can ask for. No gap may exceed 100 ms: every long operation must be
//! preemptible (inside multicalls too) and guest console output bounded.
//!
//! Modes:
//! - `mmu-alias`: multicalls of 64 `mmu_update`s, each over 131072 no-op requests (one
//!   request page aliased 512 times by one L1, so the array costs the guest nothing);
//! - `console`: 64 KiB `console_io` writes, back to back;
//! - `pin-tree`: alternating `PIN_L4`/`UNPIN` of a tree of 1028 tables (526k entries to
//!   validate each time) in batches of 64 operations.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU64, Ordering::SeqCst};
use guest_abi::hypercall as nr;
use pv_runtime::hypercall::{self as hc, MmuUpdate, MmuextOp, MulticallEntry};
use pv_runtime::mm::{GuestMem, A, D, P, RW};
use test_guests::*;

static LAST: AtomicU64 = AtomicU64::new(0);
static WORST: AtomicU64 = AtomicU64::new(0);
static TICKS: AtomicU64 = AtomicU64::new(0);
static TIMER_PORT: AtomicU64 = AtomicU64::new(0);

fn on_event(port: u32) {
    if port as u64 != TIMER_PORT.load(SeqCst) {
        return;
    }
    let now = pv_runtime::events::system_time();
    let last = LAST.swap(now, SeqCst);
    if last != 0 {
        WORST.fetch_max(now - last, SeqCst);
    }
    TICKS.fetch_add(1, SeqCst);
}

fn gaps(si: &pv_runtime::StartInfo, ms: u64) -> ! {
    start("gaps");
    check("events up", events_up(si));
    pv_runtime::events::set_handler(on_event);
    let port = pv_runtime::events::bind_virq(guest_abi::evtchn::VIRQ_TIMER, 0).unwrap_or(0);
    check("VIRQ_TIMER bound", port != 0);
    TIMER_PORT.store(port as u64, SeqCst);
    pv_runtime::events::enable();
    // Let the domU get going, then measure.
    let t0 = pv_runtime::events::system_time();
    while pv_runtime::events::system_time() < t0 + 300_000_000 {
        pv_runtime::events::block();
    }
    LAST.store(0, SeqCst);
    WORST.store(0, SeqCst);
    TICKS.store(0, SeqCst);
    let t1 = pv_runtime::events::system_time();
    while pv_runtime::events::system_time() < t1 + ms * 1_000_000 {
        pv_runtime::events::block();
    }
    let worst = WORST.load(SeqCst);
    println!("gaps: worst gap between timer ticks {} us over {} ticks", worst / 1000, TICKS.load(SeqCst));
    println!("BENCH worst_tick_gap_us={}", worst / 1000);
    check("ticks arrived", TICKS.load(SeqCst) > ms / 20);
    check("no gap above 100 ms", worst <= 100_000_000);
    finish("gaps")
}

/// Maps `frame` read-only at every page of a 2 MiB region (an L1 hooked into a free L2
/// slot) and returns the region's address.
fn alias_region(mem: &mut GuestMem, t: &Tables, frame: u64) -> u64 {
    let l1 = mem.alloc_mfn().unwrap_or(0);
    let mut reqs = [MmuUpdate::default(); 512];
    for (i, r) in reqs.iter_mut().enumerate() {
        *r = MmuUpdate { ptr: (l1 << 12) + 8 * i as u64, val: frame << 12 | P | A };
    }
    for c in reqs.chunks(128) {
        expect_ret("fill the alias L1", hc::mmu_update(c).0, 0);
    }
    let slot = 300u64;
    let l2 = t.table(0, 2);
    expect_ret("hook it", hc::mmu_update(&[MmuUpdate { ptr: (l2 << 12) + 8 * slot, val: l1 << 12 | P | RW | A }]).0, 0);
    slot << 21
}

fn mmu_alias(mem: &mut GuestMem, t: &Tables, scratch_va: u64) -> ! {
    // 256 no-op requests in one page: rewrite the scratch page's PTE with its own value.
    let req_mfn = mem.alloc_mfn().unwrap_or(0);
    let pte = t.entry_maddr(scratch_va, 1);
    let own = t.mfn_of_va(scratch_va);
    let noop = MmuUpdate { ptr: pte, val: own << 12 | P | RW | A | D };
    for i in 0..256u64 {
        expect_ret("write a request", hc::mmu_update(&[MmuUpdate { ptr: (req_mfn << 12) + 16 * i, val: noop.ptr }]).0, 0);
        expect_ret("write a request", hc::mmu_update(&[MmuUpdate { ptr: (req_mfn << 12) + 16 * i + 8, val: noop.val }]).0, 0);
    }
    let region = alias_region(mem, t, req_mfn);
    println!("hammer: mmu-alias over {:#x}", region);
    let mut done = [0u32; 64];
    loop {
        let mut mc = [MulticallEntry::default(); 64];
        for (i, e) in mc.iter_mut().enumerate() {
            *e = MulticallEntry { op: nr::MMU_UPDATE, result: 0, args: [region, 131072, &mut done[i] as *mut u32 as u64, hc::SELF, 0, 0] };
        }
        hc::multicall(&mut mc);
    }
}

fn console() -> ! {
    // 64 KiB of 64-byte lines.
    static BUF: [u8; 65536] = {
        let mut b = [b'.'; 65536];
        let mut i = 63;
        while i < b.len() {
            b[i] = b'\n';
            i += 64;
        }
        b
    };
    println!("hammer: console");
    loop {
        pv_runtime::hypercall::console_write(&BUF);
    }
}

fn pin_tree(mem: &mut GuestMem, scratch_va: u64, t: &Tables) -> ! {
    let data = t.mfn_of_va(scratch_va);
    let pte = t.entry_maddr(scratch_va, 1);
    let [l4, l3, l2a, l2b] = [(); 4].map(|_| mem.alloc_mfn().unwrap_or(0));
    let mut n = 0;
    for l2 in [l2a, l2b] {
        for i in 0..512u64 {
            let Some(l1) = mem.alloc_mfn() else { break };
            // Fill the L1 through a writable mapping: 512 read-only mappings of one data page.
            if hc::update_va_mapping(scratch_va, l1 << 12 | P | RW | A | D, 2) != 0 {
                break;
            }
            for k in 0..512u64 {
                // SAFETY: the scratch page maps l1, writable, just now.
                unsafe { ((scratch_va + 8 * k) as *mut u64).write_volatile(data << 12 | P | A) };
            }
            hc::mmu_update(&[MmuUpdate { ptr: (l2 << 12) + 8 * i, val: l1 << 12 | P | RW | A }]);
            n += 1;
        }
    }
    expect_ret("restore the scratch page", hc::mmu_update(&[MmuUpdate { ptr: pte, val: data << 12 | P | RW | A | D }]).0, 0);
    hc::mmu_update(&[MmuUpdate { ptr: l3 << 12, val: l2a << 12 | P | RW | A }]);
    hc::mmu_update(&[MmuUpdate { ptr: (l3 << 12) + 8, val: l2b << 12 | P | RW | A }]);
    hc::mmu_update(&[MmuUpdate { ptr: l4 << 12, val: l3 << 12 | P | RW | A }]);
    println!("hammer: pin-tree of {} L1 tables", n);
    let mut ops = [MmuextOp::default(); 64];
    for (i, o) in ops.iter_mut().enumerate() {
        *o = MmuextOp { cmd: if i % 2 == 0 { 3 } else { 4 }, _pad: 0, arg1: l4, arg2: 0 };
    }
    let first = hc::mmuext_op(&ops[..1]).0;
    expect_ret("the tree pins", first, 0);
    hc::mmuext_op(&ops[1..2]);
    loop {
        hc::mmuext_op(&ops);
    }
}

#[no_mangle]
fn guest_main(si: &'static pv_runtime::StartInfo) -> ! {
    let args = core::str::from_utf8(si.cmdline_bytes()).unwrap_or("").trim();
    let mut w = args.split_whitespace();
    match (w.next(), w.next()) {
        (Some("gaps"), ms) => gaps(si, ms.and_then(|m| m.parse().ok()).unwrap_or(2000)),
        (Some("hammer"), Some(mode)) => {
            start("hammer");
            let vb = pv_runtime::virt_base();
            let mut mem = GuestMem::new(si, vb);
            let t = Tables::new(si);
            let scratch_va = vb + (mem.region_end_pfn - 2) * 4096;
            match mode {
                "mmu-alias" => mmu_alias(&mut mem, &t, scratch_va),
                "console" => console(),
                "pin-tree" => pin_tree(&mut mem, scratch_va, &t),
                _ => check("known mode", false),
            }
            finish("hammer")
        }
        _ => {
            check("known role", false);
            finish("hammer")
        }
    }
}
