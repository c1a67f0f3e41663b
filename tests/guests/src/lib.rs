//! Helpers for XTF-style test guests.
//!
//! A scenario calls [`check`] for each expectation and ends with [`finish`], which prints
//! `Test result: SUCCESS` and powers off, or `Test result: FAILURE` and crashes (so the exit
//! code disagrees with success too). Guests are linked low (VIRT_BASE 0, image at 1 MiB), as
//! XTF's are.
#![no_std]

use core::sync::atomic::{AtomicU32, Ordering};
use guest_abi::errno::Errno;
use guest_abi::sched::ShutdownReason;
pub use pv_runtime::{println, probe};
use pv_runtime::traps::Fault;

static FAILURES: AtomicU32 = AtomicU32::new(0);
static CHECKS: AtomicU32 = AtomicU32::new(0);

/// Records one expectation.
pub fn check(what: &str, ok: bool) {
    CHECKS.fetch_add(1, Ordering::SeqCst);
    if !ok {
        FAILURES.fetch_add(1, Ordering::SeqCst);
        println!("FAIL: {}", what);
    }
}

/// Expects a hypercall result to be the given error.
pub fn expect_err(what: &str, got: i64, want: Errno) {
    let ok = got == want.to_ret();
    if !ok {
        println!("  {}: got {} want {}", what, got, want.to_ret());
    }
    check(what, ok);
}

/// Expects an event-channel call to give a port: the port (0 after a failure, which is
/// printed).
pub fn expect_port(what: &str, r: pv_runtime::events::PortResult) -> guest_abi::evtchn::Port {
    check(what, r.is_ok());
    if let Err(x) = r {
        println!("  {}: {}", what, x);
    }
    r.unwrap_or(0)
}

/// Expects a hypercall result to be `want`.
pub fn expect_ret(what: &str, got: i64, want: i64) {
    if got != want {
        println!("  {}: got {} want {}", what, got, want);
    }
    check(what, got == want);
}

/// Expects a probe to have faulted with `vector` (and `error_code`, if given).
pub fn expect_fault(what: &str, f: Option<Fault>, vector: u8, error_code: Option<u64>) {
    let ok = match f {
        Some(f) => f.vector == vector && error_code.is_none_or(|e| e == f.error_code),
        None => false,
    };
    if !ok {
        println!("  {}: got {:?}, want vector {} error {:?}", what, f, vector, error_code);
    }
    check(what, ok);
}

/// Prints the check counts; true when there were checks and all passed.
pub fn verdict_ok(name: &str) -> bool {
    let (n, f) = (CHECKS.load(Ordering::SeqCst), FAILURES.load(Ordering::SeqCst));
    println!("{}: {} checks, {} failed", name, n, f);
    f == 0 && n > 0
}

/// Prints the verdict and ends the guest.
pub fn finish(name: &str) -> ! {
    if verdict_ok(name) {
        println!("Test result: SUCCESS");
        pv_runtime::hypercall::shutdown(ShutdownReason::Poweroff)
    } else {
        println!("Test result: FAILURE");
        pv_runtime::hypercall::shutdown(ShutdownReason::Crash)
    }
}

/// Standard start: trap handlers installed, a title printed.
pub fn start(name: &str) {
    let r = pv_runtime::traps::install();
    println!("--- {} (CPL {}) ---", name, pv_runtime::cpl());
    check("set_trap_table accepted", r == 0);
}

/// For boot-time domUs: gives dom0 time to get ready (bind its VIRQs) before this domain
/// does anything observable, by yielding the CPU many times.
pub fn settle() {
    for _ in 0..3000 {
        pv_runtime::hypercall::yield_now();
    }
}

/// Makes two slack pages of the bootstrap region user-accessible (validated updates: US on
/// the L4/L3/L2 entries, then the leaves), copies `code` to the first and returns
/// (code address, user stack pointer). The kernel stack for ring-3 entries is set too.
pub fn user_pages(si: &pv_runtime::StartInfo, code: &[u8]) -> (u64, u64) {
    use pv_runtime::hypercall::{self as hc, MmuUpdate};
    use pv_runtime::mm::{GuestMem, A, D, P, RW};
    const US: u64 = 4;
    const M2P: u64 = 0xFFFF_8000_0000_0000;
    static mut KSTACK: [u8; 16384] = [0; 16384];
    let vb = pv_runtime::virt_base();
    let mem = GuestMem::new(si, vb);
    let code_va = vb + (mem.region_end_pfn - 2) * 4096;
    let stack_va = vb + (mem.region_end_pfn - 3) * 4096;
    // SAFETY: the slack page is ours and still a supervisor page (no SMAP issue).
    unsafe { core::ptr::copy_nonoverlapping(code.as_ptr(), code_va as *mut u8, code.len().min(4096)) };
    let mut t = mem.mfn((si.pt_base - vb) / 4096);
    for level in (2..=4u32).rev() {
        let idx = (code_va >> (12 + 9 * (level - 1))) & 511;
        // SAFETY: the M2P and the bootstrap tables are readable (tables map read-only).
        let e = unsafe {
            let pfn = ((M2P + 8 * t) as *const u64).read_volatile();
            ((vb + 4096 * pfn + 8 * idx) as *const u64).read_volatile()
        };
        let (r, _) = hc::mmu_update(&[MmuUpdate { ptr: (t << 12) + 8 * idx, val: e | US }]);
        expect_ret("set US on an upper-level entry", r, 0);
        t = (e & 0x000F_FFFF_FFFF_F000) >> 12;
    }
    let code_mfn = mem.mfn((code_va - vb) / 4096);
    let stack_mfn = mem.mfn((stack_va - vb) / 4096);
    expect_ret("user code page", hc::update_va_mapping(code_va, code_mfn << 12 | P | US | A, 2), 0);
    expect_ret("user stack page", hc::update_va_mapping(stack_va, stack_mfn << 12 | P | RW | US | A | D, 2), 0);
    let kstack_top = core::ptr::addr_of_mut!(KSTACK) as u64 + 16384;
    expect_ret("stack_switch", hc::stack_switch(pv_runtime::KERNEL_SS, kstack_top), 0);
    (code_va, stack_va + 4096 - 64)
}

/// Serialised TSC read (rdtsc is allowed at CPL 1).
pub fn rdtsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: lfence; rdtsc only reads the counter.
    unsafe { core::arch::asm!("lfence", "rdtsc", out("eax") lo, out("edx") hi, options(nostack)) };
    ((hi as u64) << 32) | lo as u64
}

/// Maps shared_info at the last page of the bootstrap region and registers the event upcall.
pub fn events_up(si: &pv_runtime::StartInfo) -> bool {
    let vb = pv_runtime::virt_base();
    let mem = pv_runtime::mm::GuestMem::new(si, vb);
    match pv_runtime::mm::map_shared_info(si, vb + (mem.region_end_pfn - 1) * 4096) {
        Ok(shared) => pv_runtime::events::init(&shared) == 0,
        Err(_) => false,
    }
}

/// For dom0 in multi-domain scenarios: events on and VIRQ_DOM_EXC bound (0 on failure).
pub fn watch_domain_exits(si: &pv_runtime::StartInfo) -> u32 {
    if !events_up(si) {
        return 0;
    }
    let p = pv_runtime::events::bind_virq(guest_abi::evtchn::VIRQ_DOM_EXC, 0).unwrap_or(0);
    pv_runtime::events::enable();
    p
}

/// Has domain `dom` shut down or crashed (`getdomaininfo`: dom0 only)? A domain that
/// ended before dom0 bound VIRQ_DOM_EXC raised it unbound: dom0 looks, as a toolstack does
/// when it starts.
pub fn domain_has_ended(dom: u16) -> bool {
    domain_flags(dom).is_some_and(|f| f & guest_abi::domctl::info::SHUTDOWN != 0)
}

/// `destroydomain` of `dom` (dom0 only): 0 once its resources are relinquished.
pub fn destroy_domain(dom: u16) -> i64 {
    pv_runtime::ctl::Domctl::new(guest_abi::domctl::DESTROYDOMAIN, dom).call()
}

/// `getdomaininfo` of exactly `dom`: its flags, or None if it is gone.
pub fn domain_flags(dom: u16) -> Option<u32> {
    use guest_abi::domctl::*;
    let mut op = pv_runtime::ctl::Domctl::new(GETDOMAININFO, dom);
    let r = op.call();
    (r == 0 && op.dom() == dom).then(|| op.get32(info::FLAGS))
}

/// Sleeps until the VIRQ_DOM_EXC port `p` has fired at least once.
pub fn wait_domain_exit(p: u32) {
    pv_runtime::events::block_until(|| p == 0 || pv_runtime::events::count(p) != 0);
}

/// The guest's own page tables, read through the read-only M2P and the bootstrap region
/// (where the builder maps every table read-only).
pub struct Tables {
    pub vb: u64,
    pub l4: u64,
}

impl Tables {
    const M2P: u64 = 0xFFFF_8000_0000_0000;

    /// The tables rooted at the bootstrap L4.
    pub fn new(si: &pv_runtime::StartInfo) -> Tables {
        let vb = pv_runtime::virt_base();
        // SAFETY: the P2M list is mapped at mfn_list (Xen's start-of-day contract).
        let l4 = unsafe { ((si.mfn_list + 8 * ((si.pt_base - vb) / 4096)) as *const u64).read_volatile() };
        Tables { vb, l4 }
    }

    /// M2P[mfn].
    pub fn m2p(mfn: u64) -> u64 {
        // SAFETY: the read-only M2P is mapped in every guest root.
        unsafe { ((Self::M2P + 8 * mfn) as *const u64).read_volatile() }
    }

    /// Entry `idx` of table frame `table` (a frame of the bootstrap region).
    pub fn entry(&self, table: u64, idx: u64) -> u64 {
        // SAFETY: bootstrap tables are mapped read-only in the region.
        unsafe { ((self.vb + 4096 * Self::m2p(table) + 8 * idx) as *const u64).read_volatile() }
    }

    /// Table MFN at `level` (4..1) on the way to `va`.
    pub fn table(&self, va: u64, level: u32) -> u64 {
        let mut t = self.l4;
        for l in ((level + 1)..=4).rev() {
            let idx = (va >> (12 + 9 * (l - 1))) & 511;
            t = (self.entry(t, idx) & 0x000F_FFFF_FFFF_F000) >> 12;
        }
        t
    }

    /// Machine address of the level-`level` entry for `va`.
    pub fn entry_maddr(&self, va: u64, level: u32) -> u64 {
        (self.table(va, level) << 12) + 8 * ((va >> (12 + 9 * (level - 1))) & 511)
    }

    /// The frame `va` maps.
    pub fn mfn_of_va(&self, va: u64) -> u64 {
        (self.entry(self.table(va, 1), (va >> 12) & 511) & 0x000F_FFFF_FFFF_F000) >> 12
    }
}

/// Registers `address` as the failsafe callback (`callback_op`).
pub fn register_failsafe(address: u64) -> i64 {
    let cb = guest_abi::traps::CallbackRegister { ty: guest_abi::traps::CALLBACKTYPE_FAILSAFE, flags: 0, _pad: 0, address };
    // SAFETY: `cb` is valid for the call.
    unsafe { pv_runtime::hypercall::hypercall5(guest_abi::hypercall::CALLBACK_OP, 0, &cb as *const _ as u64, 0, 0, 0) }
}

/// The data segment selectors DS, ES, FS, GS.
pub fn data_selectors() -> [u16; 4] {
    let (ds, es, fs, gs): (u16, u16, u16, u16);
    // SAFETY: reading segment registers has no side effects.
    unsafe {
        core::arch::asm!("mov {0:x}, ds", "mov {1:x}, es", "mov {2:x}, fs", "mov {3:x}, gs",
            out(reg) ds, out(reg) es, out(reg) fs, out(reg) gs, options(nomem, nostack, preserves_flags))
    }
    [ds, es, fs, gs]
}

/// Fills `c` (a `vcpu_guest_context`, 5168 bytes) for a vCPU that starts at `entry` in the
/// guest kernel with stack `stack_top` (also its kernel stack) on root `l4_mfn`.
pub fn vcpu_context(c: &mut [u8], entry: u64, stack_top: u64, l4_mfn: u64) {
    pv_runtime::ctl::boot_context(c, entry, stack_top, 0, l4_mfn)
}

/// Grant-table operations as guests issue them (v1 layouts of `public/grant_table.h`).
pub mod grant {
    use guest_abi::grant::*;
    use pv_runtime::hypercall as hc;
    use pv_runtime::mm::{A, D, P, RW};

    pub fn op(cmd: u64, uop: u64, count: u64) -> i64 {
        // SAFETY: every caller passes a pointer to `count` operations of the size `cmd` uses
        // (or a deliberately bad one, which the hypervisor must refuse).
        unsafe { hc::hypercall5(guest_abi::hypercall::GRANT_TABLE_OP, cmd, uop, count, 0, 0) }
    }

    #[repr(C)]
    #[derive(Copy, Clone, Default)]
    pub struct Map {
        pub host_addr: u64,
        pub flags: u32,
        pub gref: u32,
        pub dom: u16,
        pub status: i16,
        pub handle: u32,
        pub dev_bus_addr: u64,
    }

    #[repr(C)]
    #[derive(Copy, Clone, Default)]
    pub struct Unmap {
        pub host_addr: u64,
        pub dev_bus_addr: u64,
        pub handle: u32,
        pub status: i16,
        pub _pad: u16,
    }

    #[repr(C)]
    #[derive(Copy, Clone, Default)]
    pub struct CopyPtr {
        pub u: u64,
        pub dom: u16,
        pub offset: u16,
        pub _pad: u32,
    }

    #[repr(C)]
    #[derive(Copy, Clone, Default)]
    pub struct Copy {
        pub src: CopyPtr,
        pub dst: CopyPtr,
        pub len: u16,
        pub flags: u16,
        pub status: i16,
        pub _pad: u16,
    }

    #[repr(C)]
    #[derive(Copy, Clone, Default)]
    pub struct Setup {
        pub dom: u16,
        pub _pad: u16,
        pub nr_frames: u32,
        pub status: i16,
        pub _pad2: [u8; 6],
        pub frame_list: u64,
    }

    /// `setup_table` of `n` frames for `dom`, their numbers written at `list`: the call's
    /// return and the status.
    pub fn setup(dom: u16, n: u32, list: u64) -> (i64, i16) {
        let mut s = Setup { dom, nr_frames: n, status: 0x5A5A, frame_list: list, ..Default::default() };
        let r = op(GNTTABOP_SETUP_TABLE, &mut s as *mut Setup as u64, 1);
        (r, s.status)
    }

    /// One map: the call's return and the operation as the hypervisor left it.
    pub fn map(host_addr: u64, flags: u32, gref: u32, dom: u16) -> (i64, Map) {
        let mut m = Map { host_addr, flags, gref, dom, status: 0x5A5A, handle: 0xDEAD, ..Default::default() };
        let r = op(GNTTABOP_MAP_GRANT_REF, &mut m as *mut Map as u64, 1);
        (r, m)
    }

    /// One unmap's status (0x7777 if the call itself failed).
    pub fn unmap(host_addr: u64, dev_bus_addr: u64, handle: u32) -> i16 {
        let mut u = Unmap { host_addr, dev_bus_addr, handle, status: 0x5A5A, _pad: 0 };
        if op(GNTTABOP_UNMAP_GRANT_REF, &mut u as *mut Unmap as u64, 1) != 0 {
            return 0x7777;
        }
        u.status
    }

    /// One copy's status (0x7777 if the call itself failed).
    pub fn copy(src: CopyPtr, dst: CopyPtr, len: u16, flags: u16) -> i16 {
        let mut c = Copy { src, dst, len, flags, status: 0x5A5A, _pad: 0 };
        if op(GNTTABOP_COPY, &mut c as *mut Copy as u64, 1) != 0 {
            return 0x7777;
        }
        c.status
    }

    /// The grant table, mapped at `va`: entry `r` written as a guest does (frame and
    /// domain, then the flags).
    pub struct Table {
        pub va: u64,
    }

    impl Table {
        /// Sets up a one-frame grant table and maps it writable at `va` (`None` on failure).
        pub fn at(va: u64) -> Option<Table> {
            let mut frame = [0u64; 1];
            if setup(guest_abi::DOMID_SELF, 1, frame.as_mut_ptr() as u64) != (0, 0) {
                return None;
            }
            (hc::update_va_mapping(va, frame[0] << 12 | P | RW | A | D, 2) == 0).then_some(Table { va })
        }

        pub fn grant(&self, r: u32, flags: u16, dom: u16, frame: u64) {
            let e = (self.va + 8 * r as u64) as *mut u32;
            // SAFETY: the grant frame is mapped writable at `va`; entries are 8 bytes.
            unsafe {
                e.add(1).write_volatile(frame as u32);
                (e as *mut u16).add(1).write_volatile(dom);
                core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
                (e as *mut u16).write_volatile(flags);
            }
        }

        pub fn flags(&self, r: u32) -> u16 {
            // SAFETY: as above.
            unsafe { ((self.va + 8 * r as u64) as *const u16).read_volatile() }
        }

        /// Entry `r` as one word.
        pub fn word(&self, r: u32) -> u64 {
            // SAFETY: as above.
            unsafe { ((self.va + 8 * r as u64) as *const u64).read_volatile() }
        }
    }
}
