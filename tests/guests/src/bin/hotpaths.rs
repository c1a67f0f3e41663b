//! Benchmark guest for the hypervisor's hot paths, measured the way an independent guest
//! would on any PV hypervisor: every operation through the hypercall page (or the CPU's own
//! exception), in a loop, `rdtsc` around batches of [`BATCH`], the median of [`ROUNDS`]
//! batches. The handlers are minimal assembly (a counter and `iretq`), so the figures are
//! the hypervisor's path, not the guest runtime's. Prints `BENCH hp_<name>_tsc=<per op>`
//! (TSC ticks; under `-icount shift=0` ticks are instructions), then powers off.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU64, Ordering};
use guest_abi::evtchn::VIRQ_TIMER;
use guest_abi::hypercall as nr;
use guest_abi::mm::{ext, UVMF_INVLPG};
use guest_abi::version::{XENVER_EXTRAVERSION, XENVER_VERSION};
use pv_runtime::events;
use pv_runtime::hypercall::{self as hc, MmuUpdate, MulticallEntry};
use pv_runtime::mm::{GuestMem, A, D, P, RW};
use pv_runtime::println;
use test_guests::{rdtsc, Tables};

const BATCH: u64 = 1000;
const ROUNDS: usize = 10;
/// `profile` on the command line: each operation runs three times, after a marker `int 0x83`
/// (the hypervisor's `bench` gate to a lone `iretq`), so an instruction trace of the run
/// splits into one segment per operation (tools/profile-trace.py).
static PROFILE: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// `x` operations, or one when profiling.
fn ops(x: u64) -> u64 {
    if PROFILE.load(Ordering::Relaxed) { 1 } else { x }
}
/// An address no table of ours maps (L4 slot 128).
const UNMAPPED: u64 = 0x0000_4000_0000_0000;

/// Handler entries (every minimal handler counts itself).
#[no_mangle]
static HP_COUNT: AtomicU64 = AtomicU64::new(0);
/// The mapped shared_info page, for the upcall handler.
#[no_mangle]
static HP_SHARED: AtomicU64 = AtomicU64::new(0);

core::arch::global_asm!(
    r#"
    .section .text.hp, "ax"
    .global hp_int3
hp_int3:
    lock incq HP_COUNT(%rip)
    iretq
    .global hp_pf
hp_pf:
    add $8, %rsp            /* error code */
    addq $3, (%rsp)         /* skip the 3-byte faulting load */
    lock incq HP_COUNT(%rip)
    iretq
    .global hp_upcall
hp_upcall:
    push %rax
    mov HP_SHARED(%rip), %rax
    movb $0, (%rax)         /* evtchn_upcall_pending */
    movq $0, 8(%rax)        /* evtchn_pending_sel */
    movq $0, 2048(%rax)     /* evtchn_pending[0]: the ports used here are below 64 */
    movb $0, 1(%rax)        /* evtchn_upcall_mask: events back on */
    lock incq HP_COUNT(%rip)
    pop %rax
    iretq
"#,
    options(att_syntax)
);

extern "C" {
    fn hp_int3();
    fn hp_pf();
    fn hp_upcall();
}

/// Median over [`ROUNDS`] batches of `per_batch` operations (each batch runs `f` once and
/// does `per_batch` operations), per operation.
fn measure(name: &str, per_batch: u64, mut f: impl FnMut()) {
    let mut v = [0u64; ROUNDS];
    let rounds = if PROFILE.load(Ordering::Relaxed) {
        // SAFETY: with the `bench` option vector 0x83 is a DPL-1 gate to a lone iretq.
        unsafe { core::arch::asm!("int 0x83") };
        2
    } else {
        ROUNDS
    };
    f(); // warm up
    for x in v[..rounds].iter_mut() {
        let t0 = rdtsc();
        f();
        *x = (rdtsc() - t0) / per_batch;
    }
    v[..rounds].sort_unstable();
    println!("BENCH hp_{}_tsc={}", name, v[rounds / 2]);
}

fn fail(what: &str, r: i64) -> ! {
    println!("{}: {}", what, r);
    println!("Test result: FAILURE");
    hc::shutdown(guest_abi::sched::ShutdownReason::Crash)
}

fn ok(what: &str, r: i64) {
    if r != 0 {
        fail(what, r);
    }
}

#[no_mangle]
fn guest_main(si: &'static pv_runtime::StartInfo) -> ! {
    let vb = pv_runtime::virt_base();
    let mem = GuestMem::new(si, vb);
    let tables = Tables::new(si);
    let args = core::str::from_utf8(si.cmdline_bytes()).unwrap_or("");
    PROFILE.store(args.split_whitespace().any(|a| a == "profile"), Ordering::Relaxed);

    measure("xen_version", ops(BATCH), || {
        for _ in 0..ops(BATCH) {
            // SAFETY: XENVER_version takes no buffer.
            unsafe { hc::xen_version(XENVER_VERSION, 0) };
        }
    });
    let mut buf = [0u8; 16];
    measure("xen_version_extraversion", ops(BATCH), || {
        for _ in 0..ops(BATCH) {
            // SAFETY: XENVER_extraversion writes 16 bytes into `buf`.
            unsafe { hc::xen_version(XENVER_EXTRAVERSION, buf.as_mut_ptr() as u64) };
        }
    });

    // A slack page whose PTE alternates between two of our frames: every update is a full
    // validation (reference moves), never a no-op.
    let va = vb + (mem.region_end_pfn - 2) * 4096;
    let pte_ma = tables.entry_maddr(va, 1);
    let fa = mem.mfn((va - vb) / 4096);
    let fb = mem.mfn((va - vb) / 4096 - 1);
    let pte = |i: u64| (if i.is_multiple_of(2) { fb } else { fa }) << 12 | P | RW | A | D;
    let mut n = 0u64;
    measure("update_va_mapping_invlpg_read", ops(BATCH), || {
        for _ in 0..ops(BATCH) {
            n += 1;
            if hc::update_va_mapping(va, pte(n), UVMF_INVLPG) != 0 {
                fail("update_va_mapping", -1);
            }
            // SAFETY: the page stays mapped (to one of two frames of ours).
            unsafe { core::ptr::read_volatile(va as *const u64) };
        }
    });
    measure("mmu_update_1", ops(BATCH), || {
        for _ in 0..ops(BATCH) {
            n += 1;
            if hc::mmu_update(&[MmuUpdate { ptr: pte_ma, val: pte(n) }]).0 != 0 {
                fail("mmu_update", -1);
            }
        }
    });
    let mut reqs = [MmuUpdate::default(); 512];
    for (i, r) in reqs.iter_mut().enumerate() {
        *r = MmuUpdate { ptr: pte_ma, val: pte(i as u64) };
    }
    measure("mmu_update_512_per_pte", ops(20) * 512, || {
        for _ in 0..ops(20) {
            if hc::mmu_update(&reqs).0 != 0 {
                fail("mmu_update 512", -1);
            }
        }
    });
    measure("mmuext_tlb_flush_local", ops(BATCH), || {
        for _ in 0..ops(BATCH) {
            hc::mmuext1(ext::TLB_FLUSH_LOCAL, 0, 0);
        }
    });
    measure("mmuext_invlpg_local", ops(BATCH), || {
        for _ in 0..ops(BATCH) {
            hc::mmuext1(ext::INVLPG_LOCAL, va, 0);
        }
    });
    let mut mc = [MulticallEntry { op: nr::XEN_VERSION, result: 0, args: [XENVER_VERSION, 0, 0, 0, 0, 0] }; 32];
    measure("multicall32_xen_version_per_entry", ops(100) * 32, || {
        for _ in 0..ops(100) {
            hc::multicall(&mut mc);
        }
    });
    if mc.iter().any(|e| e.result <= 0) {
        fail("multicall entry", mc[0].result);
    }

    // Grants: a page of ours granted to ourselves (dom0), mapped writable and unmapped (one
    // call each), and copied whole from the grant into another page of ours.
    {
        use guest_abi::grant::*;
        use test_guests::grant::{self as g, CopyPtr};
        let slot = |k: u64| vb + (mem.region_end_pfn - k) * 4096;
        let gt = g::Table::at(slot(10)).unwrap_or_else(|| fail("grant table", -1));
        let (target, src, dst) = (slot(11), tables.mfn_of_va(slot(12)), tables.mfn_of_va(slot(13)));
        gt.grant(8, GTF_PERMIT_ACCESS, 0, src);
        measure("grant_map_unmap", ops(BATCH), || {
            for _ in 0..ops(BATCH) {
                let (r, m) = g::map(target, GNTMAP_HOST_MAP, 8, guest_abi::DOMID_SELF);
                if r != 0 || m.status != 0 {
                    fail("grant map", m.status as i64);
                }
                let s = g::unmap(target, 0, m.handle);
                if s != 0 {
                    fail("grant unmap", s as i64);
                }
            }
        });
        let from = CopyPtr { u: 8, dom: guest_abi::DOMID_SELF, ..Default::default() };
        let to = CopyPtr { u: dst, dom: guest_abi::DOMID_SELF, ..Default::default() };
        measure("grant_copy_4k", ops(BATCH), || {
            for _ in 0..ops(BATCH) {
                let s = g::copy(from, to, 4096, 1);
                if s != 0 {
                    fail("grant copy", s as i64);
                }
            }
        });
    }

    // Exceptions bounced to minimal handlers.
    ok("int3 handler", pv_runtime::traps::install_vector(3, hp_int3 as *const () as u64, 3));
    ok("#PF handler", pv_runtime::traps::install_vector(14, hp_pf as *const () as u64, 0));
    let before = HP_COUNT.load(Ordering::SeqCst);
    measure("int3_bounce", ops(BATCH), || {
        for _ in 0..ops(BATCH) {
            // SAFETY: vector 3 goes to `hp_int3`, which returns at once.
            unsafe { core::arch::asm!("int3") };
        }
    });
    measure("page_fault_bounce", ops(BATCH), || {
        for _ in 0..ops(BATCH) {
            // SAFETY: the load faults; `hp_pf` skips it (3 bytes: mov (%rax), %rcx).
            unsafe { core::arch::asm!(".byte 0x48, 0x8b, 0x08", in("rax") UNMAPPED, out("rcx") _) };
        }
    });
    let bounced = HP_COUNT.load(Ordering::SeqCst) - before;
    if !PROFILE.load(Ordering::Relaxed) && bounced != 2 * BATCH * (ROUNDS as u64 + 1) {
        fail("bounces counted", bounced as i64);
    }

    // Events: the minimal upcall handler acknowledges everything and unmasks.
    if !test_guests::events_up(si) {
        fail("events", -1);
    }
    let shared = vb + (mem.region_end_pfn - 1) * 4096;
    HP_SHARED.store(shared, Ordering::SeqCst);
    let cb = guest_abi::traps::CallbackRegister { ty: guest_abi::traps::CALLBACKTYPE_EVENT, flags: 0, _pad: 0, address: hp_upcall as *const () as u64 };
    // SAFETY: `cb` is valid for the call.
    ok("upcall callback", unsafe { hc::hypercall5(nr::CALLBACK_OP, 0, &cb as *const _ as u64, 0, 0, 0) });
    let port = events::bind_ipi(0).unwrap_or_else(|e| fail("bind_ipi", e));
    events::set_port_mask(port, true);
    events::enable();
    measure("evtchn_send_masked", ops(BATCH), || {
        for _ in 0..ops(BATCH) {
            events::send(port);
        }
    });
    events::set_port_mask(port, false);
    // SAFETY: shared_info is mapped; clears the pending bit the masked sends left.
    unsafe { ((shared + 2048) as *mut u64).write_volatile(0) };
    let before = HP_COUNT.load(Ordering::SeqCst);
    measure("evtchn_send_upcall_return", ops(BATCH), || {
        for _ in 0..ops(BATCH) {
            events::send(port);
        }
    });
    let upcalls = HP_COUNT.load(Ordering::SeqCst) - before;
    if !PROFILE.load(Ordering::Relaxed) && upcalls != BATCH * (ROUNDS as u64 + 1) {
        fail("upcalls counted", upcalls as i64);
    }
    if let Err(e) = events::bind_virq(VIRQ_TIMER, 0) {
        fail("bind VIRQ_TIMER", e);
    }
    measure("set_timer_past_upcall", ops(200), || {
        for _ in 0..ops(200) {
            let c = HP_COUNT.load(Ordering::SeqCst);
            events::set_timer(1);
            while HP_COUNT.load(Ordering::SeqCst) == c {
                core::hint::spin_loop();
            }
        }
    });
    println!("Test result: SUCCESS");
    hc::shutdown(guest_abi::sched::ShutdownReason::Poweroff)
}
