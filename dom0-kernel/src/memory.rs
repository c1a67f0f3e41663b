//! dom0's memory bring-up, all through validated hypercalls: its own page tables (built with
//! batched `mmu_update`s in `multicall`s, pinned, switched to), `shared_info` mapped, its own
//! GDT, and a balloon round trip with `memory_op`.

use pv_runtime::hypercall::{self as hc, MmuUpdate};
use pv_runtime::mm::{self, Batch, GuestMem};
use pv_runtime::{println, StartInfo};

const BALLOON: usize = 64;

fn fail<T>(what: &str, r: i64) -> Result<T, ()> {
    println!("dom0: mm: {} failed ({})", what, r);
    Err(())
}

/// Returns shared_info's mapping and the memory past what the bring-up used (the frames
/// mapped nowhere, for DMA).
pub fn bring_up(si: &StartInfo) -> Result<(mm::SharedInfoMap, GuestMem), ()> {
    let vb = pv_runtime::virt_base();
    let mut mem = GuestMem::new(si, vb);
    let region = mem.region_end_pfn;
    let pt0 = (si.pt_base - vb) / 4096;
    let mut batch = Batch::new();
    let batch = &mut batch;

    // 1. New page tables for the bootstrap region; the old tables stay mapped read-only.
    let Some((l4, tables)) = mm::build_tables(&mut mem, batch, vb, 0, region, pt0..pt0 + si.nr_pt_frames) else {
        return fail("allocating page tables", -12);
    };
    if batch.failed != 0 {
        return fail("mmu_update batch", -(batch.failed as i64));
    }
    let r = mm::switch_root(l4);
    if r != 0 {
        return fail("pin + new_baseptr", r);
    }

    // 2. shared_info at the last page of the region.
    let shared = match mm::map_shared_info(si, vb + (region - 1) * 4096) {
        Ok(s) => s,
        Err(r) => return fail("mapping shared_info", r),
    };
    let si_va = shared.va();
    let mask = shared.upcall_mask(0);

    // 3. Our own GDT: null, a flat code segment given with DPL 0 (the hypervisor raises it
    //    to 1), a flat ring-1 data segment. Written with plain mmu_update stores into a
    //    frame that is mapped nowhere, then installed.
    let Some(gpfn) = mem.alloc_pfn() else { return fail("allocating the GDT frame", -12) };
    let gmfn = mem.mfn(gpfn);
    let descs = [0u64, 0x00AF_9A00_0000_FFFF, 0x00CF_B200_0000_FFFF];
    let reqs: [MmuUpdate; 3] = core::array::from_fn(|i| MmuUpdate { ptr: (gmfn << 12) + 8 * i as u64, val: descs[i] });
    let (r, _) = hc::mmu_update(&reqs);
    if r != 0 {
        return fail("writing the GDT frame", r);
    }
    let r = hc::set_gdt(&[gmfn], 3);
    if r != 0 {
        return fail("set_gdt", r);
    }
    let code_desc = mm::gdt_entry(1);
    let ds_ok = mm::try_load_ds(0x11);

    // 4. Balloon: give back the top BALLOON unused frames, then get as many back.
    let top = si.nr_pages as usize;
    let mut frames = [0u64; BALLOON];
    frames.copy_from_slice(&mem.p2m[top - BALLOON..top]);
    let gave = hc::reservation(1, &mut frames);
    let after_give = hc::current_reservation();
    let got = hc::reservation(0, &mut frames);
    if gave != BALLOON as i64 || got != BALLOON as i64 {
        return fail("balloon round trip", if gave != BALLOON as i64 { gave } else { got });
    }
    for (i, &m) in frames.iter().enumerate() {
        let pfn = (top - BALLOON + i) as u64;
        mem.p2m[pfn as usize] = m;
        batch.push((m << 12) | mm::MACHPHYS_UPDATE, pfn);
    }
    batch.flush();
    let now = hc::current_reservation();

    println!(
        "dom0: mm: {} page tables built with {} validated updates in {} multicall(s), pinned, switched to L4 mfn {:#x}",
        tables, batch.updates, batch.multicalls, l4
    );
    println!(
        "dom0: mm: shared_info mapped at {:#x} (vcpu0 upcall mask {}); own GDT loaded (code DPL {}, ring-1 data selector {}); balloon -{} pages ({}) +{} pages ({}); {}",
        si_va,
        mask,
        (code_desc >> 45) & 3,
        if ds_ok { "usable" } else { "refused" },
        gave,
        after_give,
        got,
        now,
        if batch.failed == 0 { "all updates accepted" } else { "SOME UPDATES FAILED" }
    );
    Ok((shared, mem))
}
