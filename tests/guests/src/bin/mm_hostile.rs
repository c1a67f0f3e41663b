//! Hostile-guest scenarios for the PV memory-management rules (one per boot: the command
//! line names the case). Each attack must be refused with Xen's error code, or end in a
//! bounced fault, and the hypervisor must keep running (every case ends with hypercalls that
//! still work and a verdict).
#![no_std]
#![no_main]

use guest_abi::errno::Errno::{self, *};
use guest_abi::hypercall as nr;
use pv_runtime::hypercall::{self as hc, hypercall5, MmuUpdate, MmuextOp, MulticallEntry, Reservation};
use pv_runtime::mm::{GuestMem, A, D, P, RW};
use test_guests::*;

const PCD: u64 = 1 << 4;
const PSE: u64 = 1 << 7;
const M2P: u64 = 0xFFFF_8000_0000_0000;
const ENTRY_GDT: u64 = 0xFFFF_8200_0000_0000;
/// A hypervisor frame (its image is loaded at 1 MiB).
const HV_MFN: u64 = 0x100;

struct Env {
    mem: GuestMem,
    t: Tables,
    /// A writable scratch page in the bootstrap region's slack, and its PTE's address.
    scratch_va: u64,
    /// The shared_info frame.
    si_mfn: u64,
}

fn m2p(mfn: u64) -> u64 {
    Tables::m2p(mfn)
}

impl Env {
    fn table(&self, va: u64, level: u32) -> u64 {
        self.t.table(va, level)
    }
    fn entry_maddr(&self, va: u64, level: u32) -> u64 {
        self.t.entry_maddr(va, level)
    }
    fn mfn_of_va(&self, va: u64) -> u64 {
        self.t.mfn_of_va(va)
    }
}

fn mmu1(ptr: u64, val: u64) -> i64 {
    hc::mmu_update(&[MmuUpdate { ptr, val }]).0
}

fn ext1(cmd: u32, a1: u64, a2: u64) -> i64 {
    hc::mmuext1(cmd, a1, a2)
}

fn e(what: &str, got: i64, want: Errno) {
    expect_err(what, got, want)
}

fn ok(what: &str, got: i64) {
    expect_ret(what, got, 0)
}

fn cur_res() -> i64 {
    let d = guest_abi::DOMID_SELF;
    // SAFETY: current_reservation reads a domid.
    memop(3, &d as *const u16 as u64)
}

/// Writing through `va` faults (stale-mapping checks).
fn write_faults(va: u64) -> bool {
    probe!("mov qword ptr [{a}], 1"; a = in(reg) va).is_some_and(|f| f.vector == 14)
}

fn run(env: &mut Env, case: &str) -> bool {
    let l4 = env.t.l4;
    let l3 = env.table(env.t.vb, 3);
    let l2 = env.table(env.t.vb, 2);
    let l1 = env.table(env.scratch_va, 1);
    let pte = env.entry_maddr(env.scratch_va, 1);
    let own = env.mfn_of_va(env.scratch_va);
    match case {
        "l1-writable" => e("map own L1 writable", mmu1(pte, l1 << 12 | P | RW | A), EINVAL),
        "l2-writable" => e("map own L2 writable", mmu1(pte, l2 << 12 | P | RW | A), EINVAL),
        "l3-writable" => e("map own L3 writable", mmu1(pte, l3 << 12 | P | RW | A), EINVAL),
        "l4-writable" => e("map own L4 writable", mmu1(pte, l4 << 12 | P | RW | A), EINVAL),
        "pt-readonly-ok" => {
            ok("map own L1 read-only", mmu1(pte, l1 << 12 | P | A));
            check("a read-only table mapping stays read-only", write_faults(env.scratch_va));
            ok("restore", mmu1(pte, own << 12 | P | RW | A | D));
        }
        "linear-l4" => {
            let slot = (l4 << 12) + 8 * 100;
            e("recursive L4 entry, read-only", mmu1(slot, l4 << 12 | P | A), EINVAL);
            e("recursive L4 entry, writable", mmu1(slot, l4 << 12 | P | RW | A), EINVAL);
        }
        "linear-l2-xsa182" => {
            let slot = (l2 << 12) + 8 * 100;
            e("recursive L2 entry, read-only", mmu1(slot, l2 << 12 | P | A), EINVAL);
            // XSA-182: flipping RW on a read-only recursive entry must be refused too.
            e("then flip it writable", mmu1(slot, l2 << 12 | P | RW | A), EINVAL);
            e("L4 entry to an L2 (cross-level)", mmu1((l4 << 12) + 8 * 100, l2 << 12 | P | A), EINVAL);
            e("L4 entry to an L1 (cross-level)", mmu1((l4 << 12) + 8 * 100, l1 << 12 | P | A), EINVAL);
            // Sharing an L2 between two L3 slots is ordinary, not linear.
            ok("second L3 slot sharing the L2", mmu1((l3 << 12) + 8 * 100, l2 << 12 | P | RW | A));
            ok("and gone again", mmu1((l3 << 12) + 8 * 100, 0));
        }
        "pse-xsa148" => {
            let slot = (l2 << 12) + 8 * 100;
            e("2 MiB superpage over machine frame 0", mmu1(slot, P | RW | PSE | A), EINVAL);
            e("superpage over the hypervisor image", mmu1(slot, HV_MFN << 12 | P | RW | PSE | A), EINVAL);
            e("1 GiB superpage in the L3", mmu1((l3 << 12) + 8 * 100, P | RW | PSE | A), EINVAL);
        }
        "map-hypervisor-frame" => {
            e("map a hypervisor frame", mmu1(pte, HV_MFN << 12 | P | A), EINVAL);
            e("map machine frame 0", mmu1(pte, P | A), EINVAL);
        }
        "map-free-frame" => {
            // SAFETY: maximum_ram_page takes no argument.
            let top = memop(2, 0) as u64;
            e("map the last RAM frame (free)", mmu1(pte, top << 12 | P | A), EINVAL);
            // Beyond RAM is MMIO space, which dom0 (this guest) may map (the `iodev` guest
            // tests the rules): the entry holds no reference, and goes again.
            ok("map a frame beyond RAM (MMIO space)", mmu1(pte, (top + 0x1000) << 12 | P | A));
            ok("unmap it", mmu1(pte, 0));
        }
        "reserved-l4-slots" => {
            for slot in [256u64, 260, 271] {
                e("write a reserved L4 slot", mmu1((l4 << 12) + 8 * slot, l3 << 12 | P | RW | A), EINVAL);
                e("clear a reserved L4 slot", mmu1((l4 << 12) + 8 * slot, 0), EINVAL);
            }
            ok("slot 272 is the guest's", mmu1((l4 << 12) + 8 * 272, 0));
        }
        "l1tf" => {
            e("non-present PTE pointing at RAM", mmu1(pte, own << 12), EINVAL);
            e("non-present PTE pointing at the hypervisor", mmu1(pte, HV_MFN << 12 | 0x800), EINVAL);
            ok("non-present zero PTE", mmu1(pte, 0));
            check("the page is gone", probe!("mov rax, [{a}]"; a = in(reg) env.scratch_va).is_some());
            ok("restore", mmu1(pte, own << 12 | P | RW | A | D));
        }
        "cache-bits" => e("PCD without I/O permission", mmu1(pte, own << 12 | P | RW | PCD), EINVAL),
        "reserved-bit62" => e("PTE bit 62", mmu1(pte, own << 12 | P | RW | 1 << 62), EINVAL),
        "gdt-dpl0" => {
            let m = env.mem.alloc_mfn().unwrap_or(0);
            ok("write descriptor", mmu1(m << 12 | 8, 0x00AF_9A00_0000_FFFF));
            ok("set_gdt with a DPL-0 code segment", hc::set_gdt(&[m], 2));
            // The descriptor as the CPU sees it (`lar`: its access rights, if its DPL lets
            // this ring look): DPL raised to the kernel's ring, accessed set.
            let (ar, seen): (u32, u8);
            // SAFETY: lar only reads the descriptor's rights (ZF set if readable).
            unsafe { core::arch::asm!("lar {ar:e}, {sel:e}", "setz {ok}", sel = in(reg) 8u32, ar = out(reg) ar, ok = out(reg_byte) seen) };
            let want = guest_abi::selectors::kernel_rpl(pv_runtime::PV64) as u32;
            check("DPL raised to the kernel's ring, accessed set", seen == 1 && (ar >> 13) & 3 == want && ar & (1 << 8) != 0);
            if pv_runtime::PV64 {
                expect_fault("the entry area is out of reach of a ring-3 kernel", probe!("mov {t}, qword ptr [{a}]"; a = in(reg) ENTRY_GDT + 8, t = out(reg) _), 14, None);
            } else {
                // SAFETY: the entry-area GDT is readable from ring 1.
                let d = unsafe { ((ENTRY_GDT + 8) as *const u64).read_volatile() };
                check("the entry area's copy: DPL 1, accessed set", (d >> 45) & 3 == 1 && d & (1 << 40) != 0);
            }
            expect_fault("lgdt still faults", probe!("lgdt [rsp]"), 13, Some(0));
        }
        "gdt-call-gate" => {
            let m = env.mem.alloc_mfn().unwrap_or(0);
            ok("write a call gate", mmu1(m << 12 | 8, (1 << 47) | (0xC << 40) | (0xE019 << 16)));
            e("set_gdt with a call gate", hc::set_gdt(&[m], 2), EINVAL);
            ok("frame not kept: writable again", mmu1(m << 12 | 8, 0));
        }
        "gdt-tss" => {
            let m = env.mem.alloc_mfn().unwrap_or(0);
            ok("write a TSS descriptor", mmu1(m << 12 | 16, (1 << 47) | (0x9 << 40) | 0x67));
            e("set_gdt with a TSS descriptor", hc::set_gdt(&[m], 3), EINVAL);
            ok("write an interrupt gate", mmu1(m << 12 | 16, (1 << 47) | (0xE << 40)));
            e("set_gdt with an interrupt gate", hc::set_gdt(&[m], 3), EINVAL);
            ok("write an LDT descriptor", mmu1(m << 12 | 16, (1 << 47) | (0x2 << 40)));
            e("set_gdt with an LDT descriptor", hc::set_gdt(&[m], 3), EINVAL);
        }
        "gdt-limits" => {
            let m = env.mem.alloc_mfn().unwrap_or(0);
            e("7169 entries", hc::set_gdt(&[m; 15], 7169), EINVAL);
            e("frame of the hypervisor", hc::set_gdt(&[HV_MFN], 1), EINVAL);
            e("frame list unmapped", unsafe_set_gdt(0x4000_0000, 1), EFAULT);
            e("own writable-mapped page", hc::set_gdt(&[own], 1), EINVAL);
            e("own page table", hc::set_gdt(&[l1], 1), EINVAL);
        }
        "gdt-no-writable-alias" => {
            let m = env.mem.alloc_mfn().unwrap_or(0);
            ok("set_gdt", hc::set_gdt(&[m], 8));
            e("map the GDT frame writable", mmu1(pte, m << 12 | P | RW | A), EINVAL);
            e("plain mmu_update store into it", mmu1(m << 12 | 8, 0x00CF_F300_0000_FFFF), EINVAL);
            // SAFETY: update_descriptor takes a machine address and a value.
            let ud = |ma: u64, d: u64| raw(nr::UPDATE_DESCRIPTOR, ma, d, 0, 0, 0);
            e("update_descriptor with a call gate", ud(m << 12 | 8, (1 << 47) | (0xC << 40)), EINVAL);
            e("update_descriptor misaligned", ud(m << 12 | 9, 0), EINVAL);
            e("update_descriptor on the hypervisor", ud(HV_MFN << 12, 0), EINVAL);
            ok("update_descriptor with a data segment", ud(m << 12 | 8, 0x00CF_B200_0000_FFFF));
            // SAFETY: loads GDT entry 1 (ring-1 data) into DS and back to null.
            unsafe { core::arch::asm!("mov eax, 0x9", "mov ds, ax", "xor eax, eax", "mov ds, ax", out("eax") _) };
            ok("read-only mapping is fine", mmu1(pte, m << 12 | P | A));
            ok("restore", mmu1(pte, own << 12 | P | RW | A | D));
        }
        "ldt-writable" => {
            e("LDT over a writable page", ext1(13, env.scratch_va, 16), EINVAL);
            e("LDT misaligned", ext1(13, env.scratch_va + 8, 16), EINVAL);
            e("LDT too long", ext1(13, env.scratch_va, 8193), EINVAL);
            e("LDT in the hypervisor area", ext1(13, 0xFFFF_8300_0000_0000, 16), EINVAL);
            ok("read-only mapping first", mmu1(pte, own << 12 | P | A));
            ok("LDT over a read-only page", ext1(13, env.scratch_va, 16));
            e("now it cannot be mapped writable", mmu1(pte, own << 12 | P | RW | A), EINVAL);
            ok("drop the LDT", ext1(13, 0, 0));
            ok("writable again", mmu1(pte, own << 12 | P | RW | A | D));
        }
        "exchange-xsa212" => {
            let before = cur_res();
            let victim = env.mem.alloc_mfn().unwrap_or(0);
            let mut inl = [victim];
            let mk = |p: u64| Reservation { extent_start: p, nr_extents: 1, domid: guest_abi::DOMID_SELF, ..Reservation::default() };
            let mut ex = [0u64; 9];
            fn setx(ex: &mut [u64; 9], i: Reservation, o: Reservation, n: u64) {
                let w = |r: Reservation| [r.extent_start, r.nr_extents, r.extent_order as u64 | (r.mem_flags as u64) << 32, r.domid as u64];
                ex[..4].copy_from_slice(&w(i));
                ex[4..8].copy_from_slice(&w(o));
                ex[8] = n;
            }
            setx(&mut ex, mk(inl.as_mut_ptr() as u64), mk(0xFFFF_8300_0000_1000), 0);
            // SAFETY: `ex` is a valid xen_memory_exchange; embedded pointers are deliberately bad.
            e("output array in the hypervisor", memop(11, ex.as_mut_ptr() as u64), EFAULT);
            setx(&mut ex, mk(0x4000_0000), mk(inl.as_mut_ptr() as u64), 0);
            e("input array unmapped", memop(11, ex.as_mut_ptr() as u64), EFAULT);
            setx(&mut ex, mk(inl.as_mut_ptr() as u64), mk(inl.as_mut_ptr() as u64), 5);
            e("nr_exchanged beyond nr_extents", memop(11, ex.as_mut_ptr() as u64), EINVAL);
            let mut o = [0u64; 1];
            setx(&mut ex, mk(inl.as_mut_ptr() as u64), mk(o.as_mut_ptr() as u64), 0);
            ok("a good exchange", memop(11, ex.as_mut_ptr() as u64));
            check("nr_exchanged = 1", ex[8] == 1 && o[0] != 0 && o[0] != victim);
            inl[0] = l1;
            setx(&mut ex, mk(inl.as_mut_ptr() as u64), mk(o.as_mut_ptr() as u64), 0);
            e("exchange away a page table", memop(11, ex.as_mut_ptr() as u64), EINVAL);
            check("no frames lost or gained", cur_res() == before);
        }
        "exchange-contiguous" => {
            // Linux's xen_create_contiguous_region and back (xen_destroy_contiguous_region).
            let before = cur_res();
            let mut frames = [0u64; 8];
            for f in frames.iter_mut() {
                *f = env.mem.alloc_mfn().unwrap_or(0);
            }
            let r = |p: *mut u64, n: u64, order: u32, bits: u32| Reservation { extent_start: p as u64, nr_extents: n, extent_order: order, mem_flags: bits, domid: guest_abi::DOMID_SELF, ..Reservation::default() };
            let mut ex = [0u64; 9];
            let setx = |ex: &mut [u64; 9], i: Reservation, o: Reservation| {
                let w = |r: Reservation| [r.extent_start, r.nr_extents, r.extent_order as u64 | (r.mem_flags as u64) << 32, r.domid as u64];
                ex[..4].copy_from_slice(&w(i));
                ex[4..8].copy_from_slice(&w(o));
                ex[8] = 0;
            };
            let mine = |m: u64| m2p(m) < 0x10_0000;
            // Refusals first: nothing may change hands.
            let mut inl = [frames[0], frames[0], frames[1], frames[2]];
            let mut o = [0x4_0000u64];
            setx(&mut ex, r(inl.as_mut_ptr(), 4, 0, 0), r(o.as_mut_ptr(), 1, 2, 32));
            e("a frame listed twice", memop(11, ex.as_mut_ptr() as u64), EINVAL);
            check("nothing exchanged", ex[8] == 0 && mine(frames[0]) && mine(frames[1]));
            inl[1] = l1;
            setx(&mut ex, r(inl.as_mut_ptr(), 4, 0, 0), r(o.as_mut_ptr(), 1, 2, 32));
            e("a page table among them", memop(11, ex.as_mut_ptr() as u64), EINVAL);
            inl[1] = HV_MFN;
            setx(&mut ex, r(inl.as_mut_ptr(), 4, 0, 0), r(o.as_mut_ptr(), 1, 2, 32));
            e("a hypervisor frame among them", memop(11, ex.as_mut_ptr() as u64), EINVAL);
            inl = [frames[0], frames[1], frames[2], frames[3]];
            setx(&mut ex, r(inl.as_mut_ptr(), 3, 0, 0), r(o.as_mut_ptr(), 1, 2, 32));
            e("3 frames for 4", memop(11, ex.as_mut_ptr() as u64), EINVAL);
            setx(&mut ex, r(inl.as_mut_ptr(), 4, 0, 0), r(o.as_mut_ptr(), 1, 7, 32));
            e("order 7", memop(11, ex.as_mut_ptr() as u64), EINVAL);
            setx(&mut ex, r(inl.as_mut_ptr(), 1, 2, 0), r(o.as_mut_ptr(), 4, 0, 0));
            let aligned = frames[0] & 3 == 0;
            if !aligned {
                e("an order-2 input extent not aligned", memop(11, ex.as_mut_ptr() as u64), EINVAL);
            }
            setx(&mut ex, r(inl.as_mut_ptr(), 4, 0, 0), r(o.as_mut_ptr(), 1, 2, 14));
            e("below 16 KiB: no room", memop(11, ex.as_mut_ptr() as u64), ENOMEM);
            check("no frames lost or gained", cur_res() == before && ex[8] == 0 && inl.iter().all(|&m| mine(m)));
            // Four single frames for one order-2 extent below 4 GiB.
            setx(&mut ex, r(inl.as_mut_ptr(), 4, 0, 0), r(o.as_mut_ptr(), 1, 2, 32));
            ok("4 frames for one contiguous extent", memop(11, ex.as_mut_ptr() as u64));
            let c = o[0];
            println!("  contiguous extent at mfn {:#x}", c);
            check("nr_exchanged = 4", ex[8] == 4);
            check("aligned and below 4 GiB", c & 3 == 0 && c + 4 <= 1 << 20 && !inl.contains(&c));
            check("the M2P says where it goes", (0..4).all(|k| m2p(c + k) == 0x4_0000 + k));
            check("the old frames are gone", inl.iter().all(|&m| !mine(m)));
            check("tot_pages unchanged", cur_res() == before);
            // And back to single frames.
            let mut back = [0x5_0000u64, 0x5_0001, 0x5_0002, 0x5_0003];
            setx(&mut ex, r(o.as_mut_ptr(), 1, 2, 0), r(back.as_mut_ptr(), 4, 0, 0));
            ok("one contiguous extent for 4 frames", memop(11, ex.as_mut_ptr() as u64));
            check("nr_exchanged = 1", ex[8] == 1);
            check("4 frames of ours, the M2P set", (0..4).all(|k| m2p(back[k]) == 0x5_0000 + k as u64) && !back.contains(&c));
            check("the extent is gone", (0..4).all(|k| !mine(c + k)));
            check("tot_pages unchanged", cur_res() == before);
        }
        "multicall-xsa213" => {
            let mut mc = [
                MulticallEntry { op: nr::IRET, result: 0x5555, args: [0; 6] },
                MulticallEntry { op: nr::XEN_VERSION, result: 0x5555, args: [0; 6] },
            ];
            // (The Xen pv64 mode has HYPERVISOR_iret: tests/pv64 checks it in a batch.)
            if !pv_runtime::PV64 {
                ok("multicall", hc::multicall(&mut mc));
                e("iret entry", mc[0].result, ENOSYS);
                check("batch ended after iret", mc[1].result == 0x5555);
            }
            // sched_op and stack_switch end the batch too.
            let kstack = [0u8; 64];
            let sp = kstack.as_ptr() as u64 + 64;
            for (what, first) in [
                ("sched_op(yield)", MulticallEntry { op: nr::SCHED_OP, result: 0x5555, args: [0; 6] }),
                ("stack_switch", MulticallEntry { op: nr::STACK_SWITCH, result: 0x5555, args: [pv_runtime::KERNEL_SS as u64, sp, 0, 0, 0, 0] }),
            ] {
                let mut mc = [first, MulticallEntry { op: nr::XEN_VERSION, result: 0x5555, args: [0; 6] }];
                ok("multicall", hc::multicall(&mut mc));
                expect_ret(what, mc[0].result, 0);
                if mc[1].result != 0x5555 {
                    println!("  entry after {} ran", what);
                }
                check("the batch ended after it", mc[1].result == 0x5555);
            }
            let mut nested = [
                MulticallEntry { op: nr::MULTICALL, result: 0, args: [0; 6] },
                MulticallEntry { op: nr::XEN_VERSION, result: 0, args: [0; 6] },
            ];
            ok("multicall", hc::multicall(&mut nested));
            e("nested multicall", nested[0].result, EINVAL);
            check("next entry ran", nested[1].result == (4 << 16) | 19);
            // SAFETY: deliberately bad list pointer.
            e("multicall list in the hypervisor", raw(nr::MULTICALL, 0xFFFF_8300_0000_0000, 1, 0, 0, 0), EFAULT);
        }
        "invlpg-xsa279" => {
            let nc = 0x8000_0000_0000_0000u64;
            e("INVLPG_LOCAL non-canonical", ext1(7, nc, 0), EINVAL);
            e("INVLPG_ALL non-canonical", ext1(11, nc, 0), EINVAL);
            let mask = 1u64;
            e("INVLPG_MULTI non-canonical", ext1(9, nc, &mask as *const u64 as u64), EINVAL);
            e("TLB_FLUSH_MULTI bad mask pointer", ext1(8, 0, 0xFFFF_8300_0000_0000), EFAULT);
            ok("INVLPG_LOCAL canonical", ext1(7, env.scratch_va, 0));
            ok("TLB_FLUSH_ALL", ext1(10, 0, 0));
            e("update_va_mapping non-canonical", hc::update_va_mapping(nc, 0, 2), EINVAL);
            e("update_va_mapping in the hypervisor area", hc::update_va_mapping(0xFFFF_8300_0000_0000, 0, 2), EINVAL);
        }
        "mixed-xsa286" => {
            // In one multicall: update_va_mapping makes the page writable, then mmu_update
            // takes it away. Afterwards no stale writable translation may remain.
            let reqs = [MmuUpdate { ptr: pte, val: own << 12 | P | A }];
            let mut done = 0u32;
            let mut mc = [
                MulticallEntry { op: nr::UPDATE_VA_MAPPING, result: -1, args: [env.scratch_va, own << 12 | P | RW | A | D, 2, 0, 0, 0] },
                MulticallEntry { op: nr::MMU_UPDATE, result: -1, args: [reqs.as_ptr() as u64, 1, &mut done as *mut u32 as u64, hc::SELF, 0, 0] },
            ];
            // SAFETY: touch the page so a writable translation is cached.
            unsafe { (env.scratch_va as *mut u64).write_volatile(7) };
            ok("multicall", hc::multicall(&mut mc));
            check("both entries succeeded", mc[0].result == 0 && mc[1].result == 0);
            check("no stale writable mapping", write_faults(env.scratch_va));
            ok("restore", mmu1(pte, own << 12 | P | RW | A | D));
            check("writable again", !write_faults(env.scratch_va));
        }
        "unpin-cr3" => {
            e("unpin the (unpinned) current root", ext1(4, l4, 0), EINVAL);
            ok("pin the current root", ext1(3, l4, 0));
            e("pin it again", ext1(3, l4, 0), EINVAL);
            ok("unpin it", ext1(4, l4, 0));
            // The root reference still holds its L4 type: it must not become writable.
            e("the unpinned current root cannot be mapped writable", mmu1(pte, l4 << 12 | P | RW | A), EINVAL);
            ok("it can be mapped read-only", mmu1(pte, l4 << 12 | P | A));
            ok("restore", mmu1(pte, own << 12 | P | RW | A | D));
            e("pin the L4 as an L1", ext1(0, l4, 0), EINVAL);
        }
        "decrease-cr3" => {
            let before = cur_res();
            for (what, m) in [("current L4", l4), ("an L1 in use", l1), ("a mapped page", own)] {
                let mut a = [m];
                let mut r = Reservation { extent_start: a.as_mut_ptr() as u64, nr_extents: 1, domid: guest_abi::DOMID_SELF, ..Reservation::default() };
                // SAFETY: valid reservation.
                let got = memop(1, &mut r as *mut _ as u64);
                expect_ret(what, got, 0);
            }
            check("nothing freed", cur_res() == before);
        }
        "double-pin" => {
            let t = env.mem.alloc_mfn().unwrap_or(0);
            ok("pin an L1", ext1(0, t, 0));
            e("pin it again", ext1(0, t, 0), EINVAL);
            e("pin it as an L2 too", ext1(1, t, 0), EINVAL);
            e("map it writable", mmu1(pte, t << 12 | P | RW | A), EINVAL);
            ok("unpin", ext1(4, t, 0));
            e("unpin again", ext1(4, t, 0), EINVAL);
            e("pin a writable-mapped page", ext1(0, own, 0), EINVAL);
            e("pin a hypervisor frame", ext1(0, HV_MFN, 0), EINVAL);
            e("MARK_SUPER", ext1(19, own, 0), EOPNOTSUPP);
            e("unknown mmuext command", ext1(99, 0, 0), ENOSYS);
        }
        "continuation" => {
            // A batch longer than the hypervisor's preemption batch: 600 updates of the same
            // PTE, alternating writable and read-only, ending writable.
            let mut reqs = [MmuUpdate::default(); 600];
            for (i, r) in reqs.iter_mut().enumerate() {
                r.ptr = pte;
                r.val = own << 12 | P | A | if i % 2 == 1 { RW | D } else { 0 };
            }
            let (r, done) = hc::mmu_update(&reqs);
            ok("600-entry batch", r);
            expect_ret("done", done as i64, 600);
            check("final state writable", !write_faults(env.scratch_va));
            // A failure at entry 400 stops there, with done = 400.
            reqs[400].val = l1 << 12 | P | RW;
            let (r, done) = hc::mmu_update(&reqs);
            e("batch failing at 400", r, EINVAL);
            expect_ret("done at the failure", done as i64, 400);
            check("state of entry 399 (writable)", !write_faults(env.scratch_va));
            // The same for mmuext: 300 TLB flushes.
            let ops = [MmuextOp { cmd: 6, _pad: 0, arg1: 0, arg2: 0 }; 300];
            let (r, done) = hc::mmuext_op(&ops);
            ok("300 mmuext ops", r);
            expect_ret("mmuext done", done as i64, 300);
        }
        "uvm-bad" => {
            e("no L1 for the address", hc::update_va_mapping(0x40_0000_0000, 0, 0), EINVAL);
            e("flush type 3", hc::update_va_mapping(env.scratch_va, own << 12 | P | RW | A, 3), EINVAL);
            e("MULTI mask pointer in the hypervisor", hc::update_va_mapping(env.scratch_va, own << 12 | P | RW | A, 0xFFFF_8300_0000_0000), EFAULT);
            e("map own L1 writable by VA", hc::update_va_mapping(env.scratch_va, l1 << 12 | P | RW | A, 2), EINVAL);
            ok("a good update with INVLPG", hc::update_va_mapping(env.scratch_va, own << 12 | P | RW | A | D, 2));
            // SAFETY: update_va_mapping_otherdomain with an unknown domain.
            let r = raw(nr::UPDATE_VA_MAPPING_OTHERDOMAIN, env.scratch_va, own << 12 | P | A, 2, 7, 0);
            e("otherdomain with no such domain", r, ESRCH);
        }
        "clear-copy-page" => {
            e("CLEAR_PAGE on an L1 in use", ext1(16, l1, 0), EINVAL);
            e("COPY_PAGE into the L4", ext1(17, l4, own), EINVAL);
            e("COPY_PAGE from the hypervisor", ext1(17, own, HV_MFN), EINVAL);
            e("CLEAR_PAGE of a hypervisor frame", ext1(16, HV_MFN, 0), EINVAL);
            ok("CLEAR_PAGE of own page", ext1(16, own, 0));
        }
        "memop-xsa231" => {
            let mut frames = [0u64; 4];
            let mut r = Reservation { extent_start: frames.as_mut_ptr() as u64, nr_extents: 4, domid: guest_abi::DOMID_SELF, ..Reservation::default() };
            r.mem_flags = 5 << 8;
            // SAFETY: valid reservations with deliberately bad fields.
            e("bogus NUMA node", memop(0, &mut r as *mut _ as u64), EINVAL);
            r.mem_flags = 1 << 16;
            e("populate-on-demand flag", memop(0, &mut r as *mut _ as u64), EINVAL);
            r.mem_flags = 0;
            r.domid = 9;
            e("another domain", memop(0, &mut r as *mut _ as u64), ESRCH);
            r.domid = guest_abi::DOMID_SELF;
            expect_ret("increase beyond the maximum", memop(0, &mut r as *mut _ as u64), 0);
            r.extent_start = 0xFFFF_8300_0000_0000;
            e("decrease with an array in the hypervisor", memop(1, &mut r as *mut _ as u64), EFAULT);
            e("unknown memory_op", memop(40, &mut r as *mut _ as u64), ENOSYS);
            let mut mm = [0u64; 3];
            ok("machphys_mapping", memop(12, mm.as_mut_ptr() as u64));
            check("M2P at Xen's address", mm[0] == M2P && mm[1] > mm[0]);
        }
        "machphys" => {
            e("MACHPHYS_UPDATE of a hypervisor frame", mmu1(HV_MFN << 12 | 1, 5), EINVAL);
            let m = env.mem.alloc_mfn().unwrap_or(0);
            ok("MACHPHYS_UPDATE of an own frame", mmu1(m << 12 | 1, 0x1234));
            check("M2P reads back", m2p(m) == 0x1234);
            e("mmu_update command 3", mmu1(pte | 3, 0), ENOSYS);
            // SAFETY: deliberately bad request and done pointers.
            e("requests in the hypervisor", raw(nr::MMU_UPDATE, 0xFFFF_8300_0000_0000, 1, 0, hc::SELF, 0), EFAULT);
            let req = MmuUpdate { ptr: pte, val: own << 12 | P | RW | A | D };
            e("done pointer unmapped", raw(nr::MMU_UPDATE, &req as *const _ as u64, 1, 0x4000_0000, hc::SELF, 0), EFAULT);
            e("foreign domain 5", raw(nr::MMU_UPDATE, &req as *const _ as u64, 1, 0, 5, 0), ESRCH);
        }
        "new-baseptr" => {
            let t = env.mem.alloc_mfn().unwrap_or(0);
            ok("junk in a reserved slot of a would-be L4", mmu1((t << 12) | (8 * 260), l3 << 12 | P | RW | A));
            e("NEW_BASEPTR to it", ext1(5, t, 0), EINVAL);
            e("NEW_BASEPTR to a writable-mapped page", ext1(5, own, 0), EINVAL);
            e("NEW_BASEPTR to the hypervisor", ext1(5, HV_MFN, 0), EINVAL);
            if pv_runtime::PV64 {
                // The user root is validated as an L4 as the kernel's is.
                e("NEW_USER_BASEPTR to a would-be L4 with junk in a reserved slot", ext1(15, t, 0), EINVAL);
                e("NEW_USER_BASEPTR to a writable-mapped page", ext1(15, own, 0), EINVAL);
                e("NEW_USER_BASEPTR to the hypervisor", ext1(15, HV_MFN, 0), EINVAL);
                ok("NEW_USER_BASEPTR to the kernel's root", ext1(15, l4, 0));
            } else {
                e("NEW_USER_BASEPTR", ext1(15, l4, 0), EOPNOTSUPP);
            }
            check("still running", cur_res() > 0);
        }
        "shinfo-typed" | "vcpuinfo-typed" => {
            // Pages the hypervisor writes on the guest's behalf must never take a page-table
            // or descriptor type: event sends would then write chosen bits into a validated
            // table (a PTE naming any frame).
            let m = if case == "shinfo-typed" {
                env.si_mfn
            } else {
                let m = env.mem.alloc_mfn().unwrap_or(0);
                let area = [m, 0u64];
                // SAFETY: register_vcpu_info reads a {mfn, offset} pair from `area`.
                let r = unsafe { pv_runtime::events::vcpu_op(guest_abi::vcpu::VCPUOP_REGISTER_VCPU_INFO, 0, area.as_ptr() as u64) };
                ok("register vcpu_info in an own page", r);
                m
            };
            for (level, cmd) in [(1, 0u32), (2, 1), (3, 2), (4, 3)] {
                let r = ext1(cmd, m, 0);
                if r == 0 {
                    println!("  pinned it as an L{}", level);
                    ext1(4, m, 0);
                }
                e("pin it as a page table", r, EINVAL);
            }
            e("set_gdt with it", hc::set_gdt(&[m], 1), EINVAL);
            ok("map it read-only", mmu1(pte, m << 12 | P | A));
            e("SET_LDT over it", ext1(13, env.scratch_va, 16), EINVAL);
            e("hook it into the L2 as an L1", mmu1((l2 << 12) + 8 * 100, m << 12 | P | RW | A), EINVAL);
            ok("restore", mmu1(pte, own << 12 | P | RW | A | D));
            ok("it can still be mapped writable", hc::update_va_mapping(env.scratch_va, m << 12 | P | RW | A | D, 2));
            ok("restore", mmu1(pte, own << 12 | P | RW | A | D));
        }
        "xlat-stale" => {
            // The hypervisor caches guest translations: a remap must be seen by the next
            // guest-buffer write, inside one multicall and across hypercalls.
            let other = env.mfn_of_va(env.scratch_va - 4096);
            let va = env.scratch_va;
            let extra = |va: u64| raw(nr::XEN_VERSION, guest_abi::version::XENVER_EXTRAVERSION, va, 0, 0, 0);
            let ro = [MmuUpdate { ptr: pte, val: other << 12 | P | A }];
            let mut done = 0u32;
            let mut mc = [
                MulticallEntry { op: nr::XEN_VERSION, result: 0x5555, args: [guest_abi::version::XENVER_EXTRAVERSION, va, 0, 0, 0, 0] },
                MulticallEntry { op: nr::MMU_UPDATE, result: 0x5555, args: [ro.as_ptr() as u64, 1, &mut done as *mut u32 as u64, hc::SELF, 0, 0] },
                MulticallEntry { op: nr::XEN_VERSION, result: 0x5555, args: [guest_abi::version::XENVER_EXTRAVERSION, va, 0, 0, 0, 0] },
            ];
            ok("multicall", hc::multicall(&mut mc));
            ok("write through the writable mapping", mc[0].result);
            ok("remap read-only", mc[1].result);
            e("write through the read-only remap (same multicall)", mc[2].result, EFAULT);
            ok("restore", mmu1(pte, own << 12 | P | RW | A | D));
            ok("write again", extra(va));
            ok("remap read-only", mmu1(pte, other << 12 | P | A));
            e("write through the read-only remap (next hypercall)", extra(va), EFAULT);
            // Writable to another frame: the bytes land there, not in the old frame.
            ok("restore", mmu1(pte, own << 12 | P | RW | A | D));
            // SAFETY: the scratch page is ours and mapped writable: a pattern in the old frame.
            unsafe { core::ptr::write_bytes(va as *mut u8, 0xAA, 16) };
            ok("remap writable to the other frame", mmu1(pte, other << 12 | P | RW | A | D));
            // SAFETY: as above, now the other frame.
            unsafe { core::ptr::write_bytes(va as *mut u8, 0, 16) };
            ok("write to the other frame", extra(va));
            // SAFETY: mapped writable just above.
            let got = unsafe { core::ptr::read_volatile(va as *const u8) };
            check("the other frame got the bytes", got != 0);
            ok("restore", mmu1(pte, own << 12 | P | RW | A | D));
            // SAFETY: mapped again.
            let kept = unsafe { core::ptr::read_volatile(va as *const [u8; 16]) };
            check("the old frame kept its bytes", kept == [0xAA; 16]);
        }
        _ => {
            println!("unknown case '{}'", case);
            return false;
        }
    }
    true
}

fn unsafe_set_gdt(list: u64, n: u64) -> i64 {
    raw(nr::SET_GDT, list, n, 0, 0, 0)
}

/// `memory_op` with an argument the case built, possibly deliberately bad: checking it is the
/// hypervisor's job, and the buffers the good cases pass outlive the call.
fn memop(cmd: u64, arg: u64) -> i64 {
    // SAFETY: see above; a refused pointer is never dereferenced by the hypervisor.
    unsafe { hc::memory_op(cmd, arg) }
}

/// A raw hypercall with possibly hostile arguments (as `memop`).
fn raw(n: u64, a1: u64, a2: u64, a3: u64, a4: u64, a5: u64) -> i64 {
    // SAFETY: as for `memop`.
    unsafe { hypercall5(n, a1, a2, a3, a4, a5) }
}

#[no_mangle]
fn guest_main(si: &'static pv_runtime::StartInfo) -> ! {
    let case = core::str::from_utf8(si.cmdline_bytes()).unwrap_or("").trim();
    start(case);
    let vb = pv_runtime::virt_base();
    let mem = GuestMem::new(si, vb);
    let scratch_va = vb + (mem.region_end_pfn - 2) * 4096;
    let mut env = Env { mem, t: Tables::new(si), scratch_va, si_mfn: si.shared_info >> 12 };
    check("case known", run(&mut env, case));
    check("hypervisor still answers", pv_runtime::hypercall::yield_now() == 0);
    finish(case)
}
