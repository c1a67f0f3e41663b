//! dom0's memory bring-up, all through validated hypercalls: its own page tables (built with
//! batched `mmu_update`s in `multicall`s, pinned, switched to), `shared_info` mapped, its own
//! GDT, and a balloon round trip with `memory_op`.

use guest_abi::hypercall as nr;
use pv_runtime::hypercall::{self as hc, MmuUpdate, Reservation};
use pv_runtime::mm::{self, Batch, GuestMem, A, D, P, RW};
use pv_runtime::{println, StartInfo};

static mut BATCH: Batch = Batch::new();

/// The entry-area GDT (readable from ring 1): descriptors as the CPU uses them.
const ENTRY_GDT: u64 = 0xFFFF_8200_0000_0000;
const UVMF_INVLPG: u64 = 2;
const BALLOON: usize = 64;

fn fail(what: &str, r: i64) -> Result<(), ()> {
    println!("dom0: mm: {} failed ({})", what, r);
    Err(())
}

pub fn bring_up(si: &StartInfo) -> Result<(), ()> {
    let vb = pv_runtime::virt_base();
    // SAFETY: `si` is ours and the P2M list is mapped where it says.
    let mut mem = unsafe { GuestMem::new(si, vb) };
    let region = mem.region_end_pfn;
    let pt0 = (si.pt_base - vb) / 4096;
    // SAFETY: dom0 is single-threaded; the batch is used only here.
    let batch = unsafe { &mut *core::ptr::addr_of_mut!(BATCH) };

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
    let si_va = vb + (region - 1) * 4096;
    let r = hc::update_va_mapping(si_va, si.shared_info | P | RW | A | D, UVMF_INVLPG);
    if r != 0 {
        return fail("mapping shared_info", r);
    }
    // SAFETY: just mapped; byte 1 is vcpu_info[0].evtchn_upcall_mask.
    let mask = unsafe { ((si_va + 1) as *const u8).read_volatile() };

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
    // SAFETY: reads the read-only entry-area GDT; loads our ring-1 data selector and back.
    let (code_desc, ds_ok) = unsafe {
        let d = ((ENTRY_GDT + 8) as *const u64).read_volatile();
        core::arch::asm!("mov eax, 0x11", "mov ds, ax", "xor eax, eax", "mov ds, ax", out("eax") _);
        (d, true)
    };

    // 4. Balloon: give back the top BALLOON unused frames, then get as many back.
    let top = si.nr_pages as usize;
    let mut frames = [0u64; BALLOON];
    frames.copy_from_slice(&mem.p2m[top - BALLOON..top]);
    let mut res = Reservation { extent_start: frames.as_mut_ptr() as u64, nr_extents: BALLOON as u64, domid: guest_abi::DOMID_SELF, ..Reservation::default() };
    // SAFETY: the reservation and its extent array are valid for the call.
    let gave = unsafe { hc::memory_op(1, &mut res as *mut _ as u64) };
    let dom = guest_abi::DOMID_SELF;
    // SAFETY: XENMEM_current_reservation reads a domid.
    let after_give = unsafe { hc::memory_op(3, &dom as *const u16 as u64) };
    // SAFETY: as above; the hypervisor writes the new MFNs into `frames`.
    let got = unsafe { hc::memory_op(0, &mut res as *mut _ as u64) };
    if gave != BALLOON as i64 || got != BALLOON as i64 {
        return fail("balloon round trip", if gave != BALLOON as i64 { gave } else { got });
    }
    for (i, &m) in frames.iter().enumerate() {
        let pfn = (top - BALLOON + i) as u64;
        mem.p2m[pfn as usize] = m;
        batch.push((m << 12) | mm::MACHPHYS_UPDATE, pfn);
    }
    batch.flush();
    // SAFETY: as above.
    let now = unsafe { hc::memory_op(3, &dom as *const u16 as u64) };

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
    let _ = nr::MMU_UPDATE;
    Ok(())
}
