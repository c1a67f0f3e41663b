//! The balloon driver: the domain's memory follows `memory/target` in XenStore (what
//! `xl mem-set` writes). Shrinking gives frames back to the hypervisor
//! (`XENMEM_decrease_reservation`) from the top of the guest's pseudo-physical memory down,
//! taking only frames [`GuestMem`] has not handed out; growing asks for frames again
//! (`XENMEM_increase_reservation`), puts them in the P2M and tells the hypervisor's M2P
//! (`MMU_MACHPHYS_UPDATE`). The domain can grow up to its maximum (`XENMEM_memory_map`:
//! its `maxmem`) when the toolstack left room for that in its P2M list (dom0's builder
//! does), else back to the size it was built with; a target above that, or below what the guest uses, is
//! followed as far as it can be.

use crate::hypercall::{self as hc, MmuUpdate};
use crate::mm::{GuestMem, MACHPHYS_UPDATE};
use crate::xenbus;

/// XenStore watch token.
pub const TOKEN: &str = "balloon";
/// Frames per hypercall.
const BATCH: usize = 256;
/// A P2M entry with no frame behind it.
pub const INVALID: u64 = !0;

/// Starts the driver: `memory/target` watched, the P2M widened to the domain's maximum
/// (`XENMEM_memory_map`, [`GuestMem::widen`]). The runtime's XenStore client must be up.
/// False if the watch was refused.
pub fn init(si: &crate::StartInfo, mem: &mut GuestMem) -> bool {
    if let Some(pages) = hc::memory_map_pages() {
        mem.widen(si, pages);
    }
    xenbus::watch("memory/target", TOKEN).is_ok()
}

/// Pages the domain can grow to.
pub fn max_pages(mem: &GuestMem) -> u64 {
    mem.p2m.len() as u64
}

/// The target in pages (`memory/target` is in KiB).
pub fn target_pages() -> Option<u64> {
    xenbus::read_u64("memory/target").map(|kib| kib / 4)
}

/// The domain's pages now (all PFNs but the ballooned ones).
pub fn current_pages(mem: &GuestMem) -> u64 {
    mem.limit
}

/// Moves the domain at most `max` pages toward `target` pages: the pages it has now.
pub fn step(mem: &mut GuestMem, target: u64, max: u64) -> u64 {
    let mut left = max;
    while left > 0 && mem.limit != target {
        let n = if target < mem.limit { shrink(mem, (mem.limit - target).min(left)) } else { grow(mem, (target - mem.limit).min(left)) };
        if n == 0 {
            break;
        }
        left -= n.min(left);
    }
    mem.limit
}

/// Gives back up to `n` (≤ [`BATCH`]) frames from the top: how many went.
fn shrink(mem: &mut GuestMem, n: u64) -> u64 {
    let k = n.min(BATCH as u64).min(mem.free_pfns()) as usize;
    if k == 0 {
        return 0;
    }
    let mut frames = [0u64; BATCH];
    for (i, f) in frames[..k].iter_mut().enumerate() {
        *f = mem.p2m[(mem.limit - 1 - i as u64) as usize];
    }
    // Extents are taken in order: the first `done` (from the top down) are gone.
    let done = hc::reservation(1, &mut frames[..k]).max(0) as u64;
    for i in 0..done {
        mem.p2m[(mem.limit - 1 - i) as usize] = INVALID;
    }
    mem.limit -= done;
    done
}

/// Asks for up to `n` (≤ [`BATCH`]) frames back: how many came.
fn grow(mem: &mut GuestMem, n: u64) -> u64 {
    let k = n.min(BATCH as u64).min(mem.p2m.len() as u64 - mem.limit) as usize;
    if k == 0 {
        return 0;
    }
    let mut frames = [0u64; BATCH];
    let got = hc::reservation(0, &mut frames[..k]).max(0) as usize;
    let mut m2p = [MmuUpdate { ptr: 0, val: 0 }; BATCH];
    for i in 0..got {
        let pfn = mem.limit + i as u64;
        mem.p2m[pfn as usize] = frames[i];
        m2p[i] = MmuUpdate { ptr: frames[i] << 12 | MACHPHYS_UPDATE, val: pfn };
    }
    if got > 0 && hc::mmu_update(&m2p[..got]).0 != 0 {
        // The frames are the domain's whatever the M2P says; only the reverse lookup is off.
        crate::println!("balloon: updating the M2P failed");
    }
    mem.limit += got as u64;
    got as u64
}
