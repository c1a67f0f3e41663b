//! Benchmark guest for the PV MMU: validated L1 updates in `mmu_update` batches of 1, 16 and
//! 512 and through `multicall`, and pinning an L4 hierarchy that maps 64 MiB.
//! Prints `BENCH name=value` (TSC ticks; under `-icount shift=0` ticks are instructions).
#![no_std]
#![no_main]

use guest_abi::hypercall as nr;
use pv_runtime::hypercall::{self as hc, MmuUpdate, MulticallEntry};
use pv_runtime::mm::{self, Batch, GuestMem, A, D, P, RW};
use pv_runtime::println;
use test_guests::rdtsc;

const TOTAL: usize = 8192;
const M2P: u64 = 0xFFFF_8000_0000_0000;


static mut REQS: [MmuUpdate; TOTAL] = [MmuUpdate { ptr: 0, val: 0 }; TOTAL];
static mut BATCH: Batch = Batch::new();

#[no_mangle]
fn guest_main(si: &'static pv_runtime::StartInfo) -> ! {
    let vb = pv_runtime::virt_base();
    let mut mem = GuestMem::new(si, vb);
    // The PTE of a slack page, and two own frames it alternates between (each update
    // swaps the mapped frame: full validation, reference moves, no fast path).
    let va = vb + (mem.region_end_pfn - 2) * 4096;
    let l4 = mem.mfn((si.pt_base - vb) / 4096);
    let mut t = l4;
    for level in (2..=4u32).rev() {
        let idx = (va >> (12 + 9 * (level - 1))) & 511;
        // SAFETY: the M2P and the bootstrap tables are readable.
        let e = unsafe {
            let pfn = ((M2P + 8 * t) as *const u64).read_volatile();
            ((vb + 4096 * pfn + 8 * idx) as *const u64).read_volatile()
        };
        t = (e & 0x000F_FFFF_FFFF_F000) >> 12;
    }
    let pte = (t << 12) + 8 * ((va >> 12) & 511);
    let fa = mem.mfn((va - vb) / 4096);
    let fb = mem.mfn((va - vb) / 4096 - 1);
    // SAFETY: single-threaded; used only here.
    let reqs = unsafe { &mut *core::ptr::addr_of_mut!(REQS) };
    for (i, r) in reqs.iter_mut().enumerate() {
        *r = MmuUpdate { ptr: pte, val: (if i % 2 == 0 { fb } else { fa }) << 12 | P | RW | A | D };
    }
    for batch in [1usize, 16, 512] {
        let t0 = rdtsc();
        let mut failed = 0;
        for chunk in reqs.chunks(batch) {
            if hc::mmu_update(chunk).0 != 0 {
                failed += 1;
            }
        }
        let per = (rdtsc() - t0) / TOTAL as u64;
        println!("BENCH mmu_update_batch{}_tsc_per_update={}", batch, per);
        if failed != 0 {
            println!("Test result: FAILURE ({} batches failed)", failed);
            hc::shutdown(guest_abi::sched::ShutdownReason::Crash);
        }
    }
    // Through multicall: 16 entries of 32 updates each.
    let mut done = [0u32; 16];
    let t0 = rdtsc();
    for block in reqs.chunks(512) {
        let mut mc = [MulticallEntry::default(); 16];
        for (k, e) in mc.iter_mut().enumerate() {
            *e = MulticallEntry {
                op: nr::MMU_UPDATE,
                result: 0,
                args: [block[32 * k..].as_ptr() as u64, 32, &mut done[k] as *mut u32 as u64, hc::SELF, 0, 0],
            };
        }
        hc::multicall(&mut mc);
    }
    println!("BENCH multicall_mmu_update_tsc_per_update={}", (rdtsc() - t0) / TOTAL as u64);

    // Pin an L4 hierarchy mapping 64 MiB (16384 pages) of our own memory, read-only so the
    // frames need no type change.
    let pages = 16384u64.min(si.nr_pages - mem.region_end_pfn - 64);
    // SAFETY: single-threaded; used only here.
    let batch = unsafe { &mut *core::ptr::addr_of_mut!(BATCH) };
    let built = mm::build_tables(&mut mem, batch, 0x40_0000_0000, 0, pages, 0..u64::MAX);
    match built {
        Some((l4, tables)) => {
            let t0 = rdtsc();
            let r = hc::mmuext1(mm::PIN_L4, l4, 0);
            let pin = rdtsc() - t0;
            let t0 = rdtsc();
            let u = hc::mmuext1(mm::UNPIN, l4, 0);
            let unpin = rdtsc() - t0;
            println!("BENCH pin_l4_{}mib_tables{}_tsc={}", pages / 256, tables, pin);
            println!("BENCH unpin_l4_{}mib_tsc={}", pages / 256, unpin);
            if r != 0 || u != 0 {
                println!("Test result: FAILURE (pin {} unpin {})", r, u);
                hc::shutdown(guest_abi::sched::ShutdownReason::Crash);
            }
        }
        None => println!("no memory for the 64 MiB hierarchy"),
    }
    println!("Test result: SUCCESS");
    hc::shutdown(guest_abi::sched::ShutdownReason::Poweroff)
}
