//! `build`: dom0 builds and runs domains from its own hypercalls (see the binary's
//! documentation), as a toolstack's domain builder does.

use super::*;
use guest_abi::domctl::{info, sched, vcpucontext, vcpuinfo};
use guest_abi::mm::ext;
use pv_runtime::ctl::readconsole;
use pv_runtime::hypercall::{MmuUpdate, MmuextOp};
use pv_runtime::mm::{A, D, P, RW};

/// The built domain's layout: its frames by PFN, and where its kernel sees them.
const L4: usize = 0;
const L3: usize = 1;
const L2: usize = 2;
const L1: usize = 3;
const CODE: usize = 4;
const DATA: usize = 5;
const STACK: usize = 6;
const HCALL: usize = 7;
const PAGES: usize = 8;
/// Virtual addresses: code, data, stack, shared_info, hypercall page, from 4 MiB on.
const BASE_VA: u64 = 0x40_0000;
const CODE_VA: u64 = BASE_VA;
const DATA_VA: u64 = BASE_VA + 0x1000;
const STACK_VA: u64 = BASE_VA + 0x2000;
const SI_VA: u64 = BASE_VA + 0x3000;
const HC_VA: u64 = BASE_VA + 0x4000;

/// The data page: tick count (event callbacks), mode (0: block between ticks, 1: spin),
/// spin count, message length, message.
const TICKS: usize = 0;
const MODE: usize = 8;
const SPINS: usize = 16;
const MSG_LEN: usize = 24;
const MSG: usize = 64;

// The built domain's kernel: position-independent bytes that dom0 copies into its code
// page (`mini_start..mini_end`, entered at `mini_start`; event callback at
// `mini_callback`). It writes its message with `console_io`, binds VIRQ_TIMER, starts a
// 10 ms periodic timer, unmasks events and then either blocks (mode 0) or spins counting
// (mode 1); each timer event's callback counts a tick, clears the pending state and
// returns with `iretq` (ring 1 to ring 1).
core::arch::global_asm!(
    r#"
    .section .rodata.mini, "a"
    .balign 16
    .global mini_start
mini_start:
    movabs ${DATA_VA}, %rbx
    xor %edi, %edi
    mov {MSG_LEN}(%rbx), %esi
    lea {MSG}(%rbx), %rdx
    movabs ${HC_VA} + 32 * {CONSOLE_IO}, %rax
    call *%rax
    sub $16, %rsp
    movq $0, (%rsp)
    movq $0, 8(%rsp)
    mov ${BIND_VIRQ}, %edi
    mov %rsp, %rsi
    movabs ${HC_VA} + 32 * {EVTCHN}, %rax
    call *%rax
    movq $10000000, (%rsp)
    mov ${SET_PERIODIC}, %edi
    xor %esi, %esi
    mov %rsp, %rdx
    movabs ${HC_VA} + 32 * {VCPU_OP}, %rax
    call *%rax
    add $16, %rsp
    movabs ${SI_VA}, %rax
    movb $0, 1(%rax)
    cmpq $0, {MODE}(%rbx)
    jne 2f
1:  mov ${BLOCK}, %edi
    xor %esi, %esi
    movabs ${HC_VA} + 32 * {SCHED_OP}, %rax
    call *%rax
    jmp 1b
2:  incq {SPINS}(%rbx)
    jmp 2b
    .global mini_callback
mini_callback:
    push %rax
    movabs ${DATA_VA}, %rax
    incq {TICKS}(%rax)
    movabs ${SI_VA}, %rax
    movb $0, (%rax)
    movq $0, 8(%rax)
    movq $0, 2048(%rax)
    movb $0, 1(%rax)
    pop %rax
    iretq
    .global mini_end
mini_end:
    .text
"#,
    DATA_VA = const DATA_VA,
    HC_VA = const HC_VA,
    SI_VA = const SI_VA,
    MSG_LEN = const MSG_LEN,
    MSG = const MSG,
    MODE = const MODE,
    SPINS = const SPINS,
    TICKS = const TICKS,
    CONSOLE_IO = const nr::CONSOLE_IO,
    EVTCHN = const nr::EVENT_CHANNEL_OP,
    VCPU_OP = const nr::VCPU_OP,
    SCHED_OP = const nr::SCHED_OP,
    BIND_VIRQ = const guest_abi::evtchn::EVTCHNOP_BIND_VIRQ,
    SET_PERIODIC = const guest_abi::vcpu::VCPUOP_SET_PERIODIC_TIMER,
    BLOCK = const guest_abi::sched::SCHEDOP_BLOCK,
    options(att_syntax)
);

extern "C" {
    static mini_start: u8;
    static mini_callback: u8;
    static mini_end: u8;
}

/// The kernel's bytes and its callback's offset in them.
fn mini() -> (&'static [u8], u64) {
    // SAFETY: the labels delimit the bytes of the block above, in this image's rodata.
    unsafe {
        let s = core::ptr::addr_of!(mini_start);
        let n = core::ptr::addr_of!(mini_end) as usize - s as usize;
        (core::slice::from_raw_parts(s, n), core::ptr::addr_of!(mini_callback) as u64 - s as u64)
    }
}

/// A page of dom0's through which it sees another domain's frames.
#[repr(C, align(4096))]
struct Page([u8; 4096]);
static mut WINDOW: Page = Page([0; 4096]);

fn window_va() -> u64 {
    core::ptr::addr_of!(WINDOW) as u64
}

/// dom0's view of other domains' frames through [`WINDOW`].
struct Window {
    /// The window's own PTE (put back at the end) and the machine address of that PTE.
    own: u64,
    pte_maddr: u64,
    /// Use `mmu_update` with a foreign domain next time, else
    /// `update_va_mapping_otherdomain` (both paths are exercised).
    via_mmu: bool,
}

impl Window {
    fn new(t: &Tables) -> Window {
        let va = window_va();
        Window { own: t.entry(t.table(va, 1), (va >> 12) & 511), pte_maddr: t.entry_maddr(va, 1), via_mmu: false }
    }

    /// Maps frame `mfn` of domain `dom` at the window; false if refused.
    fn map(&mut self, dom: u16, mfn: u64) -> bool {
        let pte = mfn << 12 | P | RW | A | D;
        self.via_mmu = !self.via_mmu;
        let r = if self.via_mmu {
            let req = [MmuUpdate { ptr: self.pte_maddr, val: pte }];
            let mut done = 0u32;
            // SAFETY: the request and `done` are valid for the call.
            let r = unsafe { hypercall5(nr::MMU_UPDATE, req.as_ptr() as u64, 1, &mut done as *mut u32 as u64, dom as u64, 0) };
            // The window's stale translation goes.
            r | pv_runtime::hypercall::mmuext1(ext::INVLPG_LOCAL, window_va(), 0)
        } else {
            // SAFETY: takes no pointer.
            unsafe { hypercall5(nr::UPDATE_VA_MAPPING_OTHERDOMAIN, window_va(), pte, 2, dom as u64, 0) }
        };
        r == 0
    }

    fn put(&self, off: usize, bytes: &[u8]) {
        // SAFETY: the window maps a frame writable; the range is inside the page.
        unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), (window_va() + off as u64) as *mut u8, bytes.len().min(4096 - off)) }
    }

    fn put64(&self, off: usize, v: u64) {
        self.put(off, &v.to_le_bytes())
    }

    fn get64(&self, off: usize) -> u64 {
        // SAFETY: as for `put`; 8-aligned offsets inside the page.
        unsafe { ((window_va() + off as u64) as *const u64).read_volatile() }
    }

    fn zero(&self) {
        // SAFETY: as for `put`.
        unsafe { core::ptr::write_bytes(window_va() as *mut u8, 0, 4096) }
    }

    /// Gives the window its own frame back.
    fn restore(&self) -> i64 {
        pv_runtime::hypercall::update_va_mapping(window_va(), self.own, 2)
    }
}

fn mmuext_for(dom: u16, cmd: u32, arg1: u64) -> i64 {
    let op = [MmuextOp { cmd, _pad: 0, arg1, arg2: 0 }];
    let mut done = 0u32;
    // SAFETY: the op and `done` are valid for the call.
    unsafe { hypercall5(nr::MMUEXT_OP, op.as_ptr() as u64, 1, &mut done as *mut u32 as u64, dom as u64, 0) }
}

/// A built domain: its id and frames (by PFN).
struct Built {
    dom: u16,
    mfns: [u64; PAGES],
}

/// Creates domain-to-be `mode` (0 ticks, 1 spins), builds it, leaves it paused.
fn build(w: &mut Window, t: &Tables, mode: u64, msg: &str, checks: bool) -> Built {
    let (r, dom) = create(0, 1);
    expect_ret("createdomain", r, 0);
    expect_ret("max_mem", Op::new(MAX_MEM, dom).u64(0, 4 * PAGES as u64).call(), 0);
    let mut list = [0u64; PAGES];
    expect_ret("populate the new domain", populate(dom, PAGES, &mut list), PAGES as i64);
    let mfns = list;
    if checks {
        // One more page, taken back by dom0 (decrease_reservation for the domain).
        let mut extra = [0u64; 1];
        expect_ret("max_mem one page more", Op::new(MAX_MEM, dom).u64(0, 4 * (PAGES as u64 + 1)).call(), 0);
        expect_ret("populate one more page", populate(dom, 1, &mut extra), 1);
        expect_ret("decrease_reservation of it, for the domain", decrease(dom, extra[0]), 1);
        expect_ret("decrease_reservation of a frame it does not own: none done", decrease(dom, t.l4), 0);
        check("its pages: as populated", info_of(dom).1.get64(info::TOT_PAGES) == PAGES as u64);
    }
    let (r, i) = info_of(dom);
    let si_mfn = i.get64(info::SHARED_INFO_FRAME);
    check("its shared_info frame", r == 0 && si_mfn != 0);
    let (code, cb_off) = mini();

    // Page tables: L4[0] -> L3[0] -> L2[2] -> L1: code, data, stack, shared_info, hypercall
    // page (read-only). The tables themselves are not mapped.
    let link = |m: u64| m << 12 | P | RW | A;
    let pages: [(usize, &[(usize, u64)]); 4] = [
        (L4, &[(0, link(mfns[L3]))]),
        (L3, &[(0, link(mfns[L2]))]),
        (L2, &[((BASE_VA >> 21) as usize & 511, link(mfns[L1]))]),
        (
            L1,
            &[
                (0, mfns[CODE] << 12 | P | A),
                (1, mfns[DATA] << 12 | P | RW | A | D),
                (2, mfns[STACK] << 12 | P | RW | A | D),
                (3, si_mfn << 12 | P | RW | A | D),
                (4, mfns[HCALL] << 12 | P | A),
            ],
        ),
    ];
    for (pfn, entries) in pages {
        check("a table frame mapped through the window", w.map(dom, mfns[pfn]));
        w.zero();
        for &(idx, e) in entries {
            w.put64(8 * idx, e);
        }
    }
    check("the code frame mapped", w.map(dom, mfns[CODE]));
    w.zero();
    w.put(0, code);
    check("the data frame mapped", w.map(dom, mfns[DATA]));
    w.zero();
    w.put64(MODE, mode);
    w.put64(MSG_LEN, msg.len() as u64);
    w.put(MSG, msg.as_bytes());
    check("the stack frame mapped", w.map(dom, mfns[STACK]));
    w.zero();
    expect_ret("the window back", w.restore(), 0);

    if checks {
        // A hostile builder's mistakes, refused.
        expect("pin, for the domain, a frame that is not its own", mmuext_for(dom, ext::PIN_L4_TABLE, t.l4), EINVAL);
        expect("new_baseptr for another domain", mmuext_for(dom, ext::NEW_BASEPTR, mfns[L4]), EPERM);
        expect("hypercall_init on a frame it does not own", Op::new(HYPERCALL_INIT, dom).u64(0, t.l4).call(), EINVAL);
        expect("mmuext_op for a domain that does not exist", mmuext_for(900, ext::PIN_L4_TABLE, mfns[L4]), ESRCH);
        let req = [MmuUpdate { ptr: w.pte_maddr, val: mfns[DATA] << 12 | P | RW | A | D }];
        let mut done = 0u32;
        // SAFETY: the request and `done` are valid for the call.
        let r = unsafe { hypercall5(nr::MMU_UPDATE, req.as_ptr() as u64, 1, &mut done as *mut u32 as u64, 900, 0) };
        expect("mmu_update with a foreign domain that does not exist", r, ESRCH);
        // Its frame named as dom0's own (no foreign domain): not dom0's frame.
        // SAFETY: as above.
        let r = unsafe { hypercall5(nr::MMU_UPDATE, req.as_ptr() as u64, 1, &mut done as *mut u32 as u64, guest_abi::DOMID_SELF as u64, 0) };
        expect("mapping its frame as dom0's own", r, EINVAL);
        // Its L1, not pinned yet, written as its page-table owner: a plain write (as Xen),
        // even of an entry naming a dom0 frame; the pin's validation then refuses it.
        let ptr = (mfns[L1] << 12) | (8 * 5);
        let pfd = (dom as u64 + 1) << 16 | dom as u64;
        let upd = |val: u64| {
            let req = [MmuUpdate { ptr, val }];
            let mut done = 0u32;
            // SAFETY: the request and `done` are valid for the call.
            unsafe { hypercall5(nr::MMU_UPDATE, req.as_ptr() as u64, 1, &mut done as *mut u32 as u64, pfd, 0) }
        };
        // Its tables written with dom0 as the data owner (FD = dom0, PFD = it): refused.
        let req = [MmuUpdate { ptr, val: 0 }];
        let mixed = (dom as u64 + 1) << 16 | guest_abi::DOMID_SELF as u64;
        // SAFETY: the request and `done` are valid for the call.
        let r = unsafe { hypercall5(nr::MMU_UPDATE, req.as_ptr() as u64, 1, &mut done as *mut u32 as u64, mixed, 0) };
        expect("its tables with another data owner (FD != PFD)", r, EINVAL);
        expect_ret("a plain write into its unpinned L1", upd(t.l4 << 12 | P | A), 0);
        expect("pin its L4 while an L1 entry names a dom0 frame", mmuext_for(dom, ext::PIN_L4_TABLE, mfns[L4]), EINVAL);
        expect_ret("the entry cleared", upd(0), 0);
    }
    expect_ret("pin its L4 (mmuext_op for the domain)", mmuext_for(dom, ext::PIN_L4_TABLE, mfns[L4]), 0);
    if checks {
        // Its pinned tables are written as their page-table owner (FD = PFD = it), checked:
        // an entry mapping its own L1 writable is refused, a read-only one accepted.
        let pfd = (dom as u64 + 1) << 16 | dom as u64;
        let upd = |val: u64| {
            let req = [MmuUpdate { ptr: (mfns[L1] << 12) | (8 * 5), val }];
            let mut done = 0u32;
            // SAFETY: the request and `done` are valid for the call.
            unsafe { hypercall5(nr::MMU_UPDATE, req.as_ptr() as u64, 1, &mut done as *mut u32 as u64, pfd, 0) }
        };
        expect("its own L1 mapped writable in its tables", upd(mfns[L1] << 12 | P | RW | A | D), EINVAL);
        expect_ret("its L1 mapped read-only in its tables", upd(mfns[L1] << 12 | P | A), 0);
        expect_ret("and cleared again", upd(0), 0);
        expect("hypercall_init on a page table of its", Op::new(HYPERCALL_INIT, dom).u64(0, mfns[L2]).call(), EINVAL);
        check("a pinned table of its cannot be mapped writable by dom0", !w.map(dom, mfns[L1]));
        expect_ret("the window back", w.restore(), 0);
    }
    if checks {
        expect_ret("decrease_reservation of its pinned L4: none done", decrease(dom, mfns[L4]), 0);
    }
    expect_ret("hypercall_init", Op::new(HYPERCALL_INIT, dom).u64(0, mfns[HCALL]).call(), 0);
    if checks {
        // set_max_evtchn bounds the ports allocated from now on.
        expect_ret("set_max_evtchn 2", Op::new(SET_MAX_EVTCHN, dom).u32(0, 2).call(), 0);
        let p1 = pv_runtime::events::alloc_unbound(dom, 0);
        let p2 = pv_runtime::events::alloc_unbound(dom, 0);
        check("two ports for it", p1.is_ok() && p2.is_ok());
        let p3 = pv_runtime::events::alloc_unbound(dom, 0);
        check("a third past its limit: ENOSPC", p3.err() == Some(ENOSPC.to_ret()));
        expect_ret("set_max_evtchn 1023", Op::new(SET_MAX_EVTCHN, dom).u32(0, 1023).call(), 0);
        check("and then a third", pv_runtime::events::alloc_unbound(dom, 0).is_ok());
    }

    let mut c = [0u8; guest_abi::vcpu::ctx::SIZE];
    vcpu_context(&mut c, CODE_VA, STACK_VA + 4096, mfns[L4]);
    let put = |c: &mut [u8], off: usize, v: u64| c[off..off + 8].copy_from_slice(&v.to_le_bytes());
    put(&mut c, guest_abi::vcpu::ctx::EVENT_CALLBACK, CODE_VA + cb_off);
    put(&mut c, guest_abi::vcpu::ctx::FLAGS, 1 << 5 | 1 << 2);
    let set = |v: u32, c: &mut [u8]| Op::new(SETVCPUCONTEXT, dom).u32(vcpucontext::VCPU, v).u64(vcpucontext::CTXT, c.as_mut_ptr() as u64).call();
    if checks {
        let mut g = [0u8; guest_abi::vcpu::ctx::SIZE];
        let get = |g: &mut [u8]| Op::new(GETVCPUCONTEXT, dom).u32(vcpucontext::VCPU, 0).u64(vcpucontext::CTXT, g.as_mut_ptr() as u64).call();
        expect("getvcpucontext before it has one", get(&mut g), ENODATA);
        expect("setvcpucontext of vCPU 1 of a 1-vCPU domain", set(1, &mut c), EINVAL);
        expect("setvcpucontext of dom0 itself", Op::new(SETVCPUCONTEXT, 0).u64(vcpucontext::CTXT, c.as_mut_ptr() as u64).call(), EINVAL);
        let mut bad = c;
        put(&mut bad, guest_abi::vcpu::ctx::CR3, mfns[L3] << 12);
        expect("a root that is not a pinned L4", set(0, &mut bad), EINVAL);
        let mut bad = c;
        put(&mut bad, guest_abi::vcpu::ctx::USER_REGS + guest_abi::vcpu::regs::RIP, 0x8000_0000_0000_0000);
        expect("a non-canonical entry point", set(0, &mut bad), EINVAL);
        expect_ret("setvcpucontext", set(0, &mut c), 0);
        expect("setvcpucontext again", set(0, &mut c), EEXIST);
        expect_ret("getvcpucontext", get(&mut g), 0);
        let at = |o: usize| u64::from_le_bytes(g[o..o + 8].try_into().unwrap());
        check("it reads back: entry, stack, root, callback, online",
            at(guest_abi::vcpu::ctx::USER_REGS + guest_abi::vcpu::regs::RIP) == CODE_VA
                && at(guest_abi::vcpu::ctx::USER_REGS + guest_abi::vcpu::regs::RSP) == STACK_VA + 4096
                && at(guest_abi::vcpu::ctx::CR3) == mfns[L4] << 12
                && at(guest_abi::vcpu::ctx::EVENT_CALLBACK) == CODE_VA + cb_off
                && at(guest_abi::vcpu::ctx::FLAGS) & (1 << 5) != 0);
    } else {
        expect_ret("setvcpucontext", set(0, &mut c), 0);
    }
    Built { dom, mfns }
}

/// `decrease_reservation` of frame `mfn` of domain `dom`: how many were given back.
fn decrease(dom: u16, mfn: u64) -> i64 {
    let mut list = [mfn];
    let mut r = [0u8; 32];
    r[..8].copy_from_slice(&(list.as_mut_ptr() as u64).to_le_bytes());
    r[8..16].copy_from_slice(&1u64.to_le_bytes());
    r[24..26].copy_from_slice(&dom.to_le_bytes());
    // SAFETY: the reservation and its extent list are local buffers.
    unsafe { pv_runtime::hypercall::memory_op(guest_abi::memory::XENMEM_DECREASE_RESERVATION, r.as_mut_ptr() as u64) }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// `sysctl getcpuinfo`: idle time of each CPU (ns), how many CPUs.
fn idle_times(out: &mut [u64; 8]) -> (i64, u32) {
    let mut b = [0u8; SYSCTL_SIZE];
    let u = SYSCTL_U_OFFSET;
    b[u..u + 4].copy_from_slice(&8u32.to_le_bytes());
    b[u + 8..u + 16].copy_from_slice(&(out.as_mut_ptr() as u64).to_le_bytes());
    let r = sysctl(sys::GETCPUINFO, &mut b);
    (r, u32::from_le_bytes(b[u + 16..u + 20].try_into().unwrap()))
}

/// Sleeps `ms` milliseconds of system time (VIRQ_TIMER bound).
fn sleep_ms(ms: u64) {
    let until = pv_runtime::events::system_time() + ms * 1_000_000;
    pv_runtime::events::set_timer(until);
    pv_runtime::events::block_until(|| pv_runtime::events::system_time() >= until);
}

/// Word `off` of `b`'s data page, through the window.
fn data_word(w: &mut Window, b: &Built, off: usize) -> u64 {
    check("its data frame mapped", w.map(b.dom, b.mfns[DATA]));
    w.get64(off)
}

/// vCPU 0's CPU time (`getvcpuinfo`), ns.
fn cpu_time(dom: u16) -> u64 {
    let mut op = Op::new(GETVCPUINFO, dom).u32(vcpuinfo::VCPU, 0);
    check("getvcpuinfo", op.call() == 0);
    op.get64(vcpuinfo::CPU_TIME)
}

/// How much CPU time each spinner got over `ms` of dom0's sleep (µs), as the scheduler
/// accounted it (`getvcpuinfo`: what it divides by weight and cap; host stalls under TCG
/// do not skew it), and how far each counted meanwhile (printed).
fn shares(w: &mut Window, x: &Built, y: &Built, ms: u64) -> (u64, u64) {
    let (x0, y0) = (data_word(w, x, SPINS), data_word(w, y, SPINS));
    let (tx0, ty0) = (cpu_time(x.dom), cpu_time(y.dom));
    sleep_ms(ms);
    let (tx1, ty1) = (cpu_time(x.dom), cpu_time(y.dom));
    let (x1, y1) = (data_word(w, x, SPINS), data_word(w, y, SPINS));
    println!("  spins {} / {}", x1 - x0, y1 - y0);
    ((tx1 - tx0) / 1000, (ty1 - ty0) / 1000)
}

fn set_sched(dom: u16, weight: u16, cap: u16) -> i64 {
    let mut op = Op::new(SCHEDULER_OP, dom).u32(sched::SCHED_ID, sched::CREDIT).u32(sched::CMD, sched::PUTINFO);
    op.0[U_OFFSET + sched::WEIGHT..U_OFFSET + sched::WEIGHT + 2].copy_from_slice(&weight.to_le_bytes());
    op.0[U_OFFSET + sched::CAP..U_OFFSET + sched::CAP + 2].copy_from_slice(&cap.to_le_bytes());
    op.call()
}

fn pin_to_cpu0(dom: u16) -> i64 {
    let mut map = [1u8; 1];
    Op::new(SETVCPUAFFINITY, dom)
        .u32(affinity::VCPU, 0)
        .u32(affinity::FLAGS, affinity::HARD_FLAG)
        .u64(affinity::HARD, map.as_mut_ptr() as u64)
        .u32(affinity::HARD + 8, 8)
        .call()
}

pub fn run(si: &pv_runtime::StartInfo) {
    check("events up", events_up(si));
    let tp = pv_runtime::events::bind_virq(guest_abi::evtchn::VIRQ_TIMER, 0);
    check("VIRQ_TIMER bound", tp.is_ok());
    pv_runtime::events::enable();
    let t = Tables::new(si);
    let mut w = Window::new(&t);
    static mut CON: [u8; 16384] = [0; 16384];
    // SAFETY: only this function uses the buffer.
    let con = unsafe { &mut *core::ptr::addr_of_mut!(CON) };

    // The hypervisor's console ring and the CPUs' idle time.
    let (r, n, end) = readconsole(con, false, None);
    check("readconsole: the boot log", r == 0 && n > 0 && contains(&con[..n], b"(XEN)"));
    println!("readconsole: {} bytes, index {}", n, end);
    let (r, n2, _) = readconsole(con, false, Some(end));
    check("readconsole from the last index: only what came since", r == 0 && n2 < n && contains(&con[..n2], b"readconsole: "));
    let (r, _, _) = readconsole(con, true, None);
    let (r2, n3, _) = readconsole(con, false, None);
    check("readconsole with clear: the boot log is gone", r == 0 && r2 == 0 && n3 < n && !contains(&con[..n3], b"CPU features"));
    let mut idle0 = [0u64; 8];
    let mut idle1 = [0u64; 8];
    let (r, ncpus) = idle_times(&mut idle0);
    check("getcpuinfo", r == 0 && (1..=8).contains(&ncpus));
    sleep_ms(100);
    idle_times(&mut idle1);
    let gained = (0..ncpus as usize).map(|k| idle1[k].saturating_sub(idle0[k])).max().unwrap_or(0);
    println!("idle time gained over a 100 ms sleep: {} us (most of one CPU)", gained / 1000);
    check("a CPU idled while dom0 slept", gained >= 50_000_000);
    check("idle time never goes back", (0..ncpus as usize).all(|k| idle1[k] >= idle0[k]));

    let free0 = free_pages();
    println!("free pages before: {}", free0);
    let a = build(&mut w, &t, 0, "hello from a domain dom0 built\n", true);
    expect_ret("unpause it", simple(UNPAUSEDOMAIN, a.dom), 0);
    sleep_ms(300);
    let t1 = data_word(&mut w, &a, TICKS);
    println!("d{}: {} timer ticks in its first 300 ms", a.dom, t1);
    check("its timer ticks", t1 >= 5);
    let (r, n, _) = readconsole(con, false, None);
    let want = ring_line(a.dom);
    check("its console line in the hypervisor's ring", r == 0 && contains(&con[..n], want.as_bytes()));
    expect_ret("pause it", simple(PAUSEDOMAIN, a.dom), 0);
    let t2 = data_word(&mut w, &a, TICKS);
    sleep_ms(200);
    let t3 = data_word(&mut w, &a, TICKS);
    println!("paused: ticks {} -> {}", t2, t3);
    check("no tick while paused", t3 == t2);
    expect_ret("unpause it", simple(UNPAUSEDOMAIN, a.dom), 0);
    sleep_ms(200);
    let t4 = data_word(&mut w, &a, TICKS);
    println!("unpaused: ticks {} -> {}", t3, t4);
    check("ticks again once unpaused", t4 >= t3 + 5);

    // Destroyed while dom0 still maps one of its frames: dying until the mapping goes.
    check("its data frame mapped", w.map(a.dom, a.mfns[DATA]));
    expect_ret("destroy it", destroy(a.dom), 0);
    check("dying while dom0 maps its frame", domain_flags(a.dom).is_some_and(|f| f & info::DYING != 0));
    check("the frame still readable", w.get64(TICKS) >= t4);
    check("no new foreign mapping of a dying domain", !w.map(a.dom, a.mfns[CODE]));
    // The page-table operation that drops the mapping frees the frame and the domain.
    expect_ret("the window back", w.restore(), 0);
    check("gone once the mapping went", domain_flags(a.dom).is_none());

    // CPU shares: two spinners on CPU 0.
    let x = build(&mut w, &t, 1, "spinner\n", false);
    let y = build(&mut w, &t, 1, "spinner\n", false);
    for b in [&x, &y] {
        expect_ret("pin it to CPU 0", pin_to_cpu0(b.dom), 0);
        expect_ret("unpause it", simple(UNPAUSEDOMAIN, b.dom), 0);
    }
    sleep_ms(100);
    let (sx, sy) = shares(&mut w, &x, &y, 600);
    println!("equal weights: {} / {} us of CPU", sx, sy);
    check("both run", sx > 0 && sy > 0);
    check("equal weights: equal shares (within 2x)", sx * 2 >= sy && sy * 2 >= sx);
    expect_ret("weight 512 for the first", set_sched(x.dom, 512, 0xFFFF), 0);
    let (sx, sy) = shares(&mut w, &x, &y, 600);
    println!("weights 512:256: {} / {} us of CPU (ratio {}.{:02})", sx, sy, sx / sy.max(1), (sx * 100 / sy.max(1)) % 100);
    // Credit is shared out machine-wide (as Xen's credit1): with more CPUs than these two
    // pinned vCPUs use, both stay in credit and split CPU 0 round robin, so the weights
    // show only on one CPU.
    if ncpus == 1 {
        check("weights 512:256: about 2:1 (1.5..3)", sx * 2 >= sy * 3 && sx <= sy * 3);
    }
    expect_ret("equal weights, cap 10% for the second", set_sched(x.dom, 256, 0xFFFF) | set_sched(y.dom, 0, 10), 0);
    let (sx, sy) = shares(&mut w, &x, &y, 600);
    println!("cap 10% on the second: {} / {} us of CPU", sx, sy);
    check("capped at 10%: under a quarter of the CPU", sy * 3 < sx);
    // The window off their frames first: the audit of a dying domain does not see dom0's
    // mappings of it (the case of a domain dying while mapped is the one above).
    expect_ret("the window back", w.restore(), 0);
    for b in [&x, &y] {
        expect_ret("destroy it", destroy(b.dom), 0);
    }
    let free1 = free_pages();
    println!("free pages after: {}", free1);
    check("every page back", free1 == free0);
}

/// What the hypervisor's ring holds for the built domain's line: `(dN) ` and the message.
fn ring_line(dom: u16) -> Line {
    let mut l = Line { b: [0; 64], n: 0 };
    let _ = core::fmt::write(&mut l, format_args!("(d{}) hello from a domain dom0 built", dom));
    l
}

/// A small fixed-size string (no allocator here).
struct Line {
    b: [u8; 64],
    n: usize,
}

impl Line {
    fn as_bytes(&self) -> &[u8] {
        &self.b[..self.n]
    }
}

impl core::fmt::Write for Line {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let n = s.len().min(64 - self.n);
        self.b[self.n..self.n + n].copy_from_slice(&s.as_bytes()[..n]);
        self.n += n;
        Ok(())
    }
}
