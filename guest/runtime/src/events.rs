//! Guest side of events: the upcall entry, the 2-level scan, per-port counters and handler,
//! pvclock time, and typed wrappers for event channels and timers.
//!
//! The hypervisor enters [`UPCALL_ENTRY`](upcall_entry) with a hardware-shaped frame and
//! events masked. The handler clears `evtchn_upcall_pending`, takes the selector word, and for
//! each pending and unmasked port clears the pending bit, counts it and calls the
//! registered handler; then it unmasks events and loops if more arrived meanwhile.
//!
//! Once [`use_fifo`] switched the domain to the FIFO ABI, the upcall takes vCPU 0's ready
//! queues instead, highest priority first, as Linux's `events_fifo.c` does, and the port
//! helpers work on the FIFO event words.

use crate::hypercall::hypercall5;
use crate::mm::SharedInfoMap;
use core::arch::global_asm;
use core::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use guest_abi::evtchn::*;
use guest_abi::hypercall as nr;

/// Ports whose deliveries are counted.
pub const COUNTED_PORTS: usize = 256;
static COUNTS: [AtomicU32; COUNTED_PORTS] = [const { AtomicU32::new(0) }; COUNTED_PORTS];
static SHARED: AtomicU64 = AtomicU64::new(0);
static HANDLER: AtomicU64 = AtomicU64::new(0);
/// Upcalls taken.
pub static UPCALLS: AtomicU64 = AtomicU64::new(0);

global_asm!(
    r#"
    .section .text.upcall, "ax"
    .global pv_upcall_entry
pv_upcall_entry:
    /* Same frame as an exception without error code (pv64: after RCX and R11): reuse the
       common trap path. */
    .if {PV64}
    pop %rcx
    pop %r11
    .endif
    pushq $0
    pushq ${UPCALL}
    jmp guest_trap_common
"#,
    UPCALL = const crate::traps::UPCALL_VECTOR,
    PV64 = const crate::PV64 as u8,
    options(att_syntax)
);

extern "C" {
    fn pv_upcall_entry();
}

fn si() -> u64 {
    SHARED.load(Ordering::Relaxed)
}

/// What `byte` and `word` give before shared_info is known (or for an offset outside it):
/// harmless scratch, so every safe caller stays safe.
static SCRATCH_BYTE: AtomicU8 = AtomicU8::new(0);
static SCRATCH_WORD: AtomicU64 = AtomicU64::new(0);

fn byte(off: u64) -> &'static AtomicU8 {
    if si() == 0 || off >= 4096 {
        return &SCRATCH_BYTE;
    }
    // SAFETY: `init`/`attach` stored the address of the mapped shared_info page (mapped for
    // the guest's lifetime); the offset is inside it.
    unsafe { AtomicU8::from_ptr((si() + off) as *mut u8) }
}

fn word(off: u64) -> &'static AtomicU64 {
    if si() == 0 || off > 4096 - 8 || !off.is_multiple_of(8) {
        return &SCRATCH_WORD;
    }
    // SAFETY: as for `byte`; the offset is 8-aligned and the word inside the page.
    unsafe { AtomicU64::from_ptr((si() + off) as *mut u64) }
}

/// 2-level event channels have 4096 ports (64 words of 64 bits).
const PORTS: u32 = 4096;

const PENDING: u64 = 2048;
const MASK: u64 = 2560;

/// One delivered event: counted, then handed to the handler.
fn deliver(port: Port) {
    if (port as usize) < COUNTED_PORTS {
        COUNTS[port as usize].fetch_add(1, Ordering::SeqCst);
    }
    let h = HANDLER.load(Ordering::SeqCst);
    if h != 0 {
        // SAFETY: only `set_handler` stores here, from a `fn(Port)`.
        let f: fn(Port) = unsafe { core::mem::transmute(h as usize) };
        f(port);
    }
}

/// The event upcall (called by the trap path for [`crate::traps::UPCALL_VECTOR`]).
pub(crate) fn upcall() {
    UPCALLS.fetch_add(1, Ordering::Relaxed);
    loop {
        byte(0).store(0, Ordering::SeqCst); // evtchn_upcall_pending (vCPU 0)
        if FIFO_CTL.load(Ordering::SeqCst) != 0 {
            if !fifo_scan() {
                // Out of budget with queues left: they are ready again and the upcall is
                // owed, taken at the next return from the hypervisor (not in this loop).
                byte(1).store(0, Ordering::SeqCst);
                break;
            }
        } else {
            let sel = word(8).swap(0, Ordering::SeqCst);
            let mut s = sel;
            while s != 0 {
                let w = s.trailing_zeros() as u64;
                s &= s - 1;
                let ready = word(PENDING + 8 * w).load(Ordering::SeqCst) & !word(MASK + 8 * w).load(Ordering::SeqCst);
                let mut r = ready;
                while r != 0 {
                    let b = r.trailing_zeros() as u64;
                    r &= r - 1;
                    word(PENDING + 8 * w).fetch_and(!(1 << b), Ordering::SeqCst);
                    deliver((w * 64 + b) as Port);
                }
            }
        }
        // Re-enable events, then look again: anything that arrived meanwhile is handled here.
        byte(1).store(0, Ordering::SeqCst);
        if byte(0).load(Ordering::SeqCst) == 0 {
            break;
        }
        byte(1).store(1, Ordering::SeqCst);
    }
}

/// FIFO mode: vCPU 0's control block and the first event-array page (0 while 2-level),
/// and the queue heads the consumer is at (0: take the control block's).
static FIFO_CTL: AtomicU64 = AtomicU64::new(0);
static FIFO_ARRAY: AtomicU64 = AtomicU64::new(0);
static FIFO_HEADS: [AtomicU32; fifo::MAX_QUEUES] = [const { AtomicU32::new(0) }; fifo::MAX_QUEUES];
/// Events handled per upcall at most: a queue the guest itself corrupted cannot loop.
const FIFO_BUDGET: u32 = 4096;

/// A 4 KiB page, aligned, for the FIFO control block and event array.
#[repr(C, align(4096))]
pub struct Page(pub [u8; 4096]);

impl Page {
    pub const fn new() -> Page {
        Page([0; 4096])
    }
}

impl Default for Page {
    fn default() -> Page {
        Page::new()
    }
}

/// The 32-bit word at `off` of the FIFO page at `base` (scratch when FIFO is off).
fn fifo_at(base: u64, off: usize) -> &'static AtomicU32 {
    static SCRATCH: AtomicU32 = AtomicU32::new(0);
    if base == 0 || off > 4096 - 4 || !off.is_multiple_of(4) {
        return &SCRATCH;
    }
    // SAFETY: `use_fifo` stored the address of a page the caller gave for the guest's
    // lifetime; the offset is aligned and inside it.
    unsafe { AtomicU32::from_ptr((base + off as u64) as *mut u32) }
}

/// `port`'s event word (ports past the first array page have none here).
fn fifo_word(port: Port) -> Option<&'static AtomicU32> {
    let a = FIFO_ARRAY.load(Ordering::SeqCst);
    (a != 0 && port < fifo::WORDS_PER_PAGE).then(|| fifo_at(a, port as usize * 4))
}

/// Takes vCPU 0's ready queues: Linux's `__evtchn_fifo_handle_events`. False when the
/// budget ran out first: the queues left are put back in `ready` and the upcall marked due.
fn fifo_scan() -> bool {
    let ctl = FIFO_CTL.load(Ordering::SeqCst);
    let ready = fifo_at(ctl, fifo::CONTROL_READY);
    let mut r = ready.swap(0, Ordering::SeqCst);
    let mut budget = FIFO_BUDGET;
    while r != 0 && budget > 0 {
        budget -= 1;
        let q = r.trailing_zeros() as usize;
        let mut head = FIFO_HEADS[q].load(Ordering::SeqCst);
        if head == 0 {
            // Reached the tail last time: the hypervisor's head for the queue.
            head = fifo_at(ctl, fifo::CONTROL_HEAD + 4 * q).load(Ordering::SeqCst);
        }
        let mut next = 0;
        if let Some(w) = fifo_word(head) {
            // Unlink it, keeping the link to the next one (the hypervisor may be setting it).
            let mut old = w.load(Ordering::SeqCst);
            while let Err(cur) = w.compare_exchange(old, old & !(fifo::LINKED | fifo::LINK_MASK), Ordering::SeqCst, Ordering::SeqCst) {
                old = cur;
            }
            next = old & fifo::LINK_MASK;
            if old & fifo::PENDING != 0 && old & fifo::MASKED == 0 {
                w.fetch_and(!fifo::PENDING, Ordering::SeqCst);
                deliver(head);
            }
        }
        if next == 0 {
            r &= !(1 << q);
        }
        FIFO_HEADS[q].store(next, Ordering::SeqCst);
        r |= ready.swap(0, Ordering::SeqCst);
    }
    if r != 0 {
        ready.fetch_or(r, Ordering::SeqCst);
        byte(0).store(1, Ordering::SeqCst);
        return false;
    }
    true
}

/// Switches the domain to FIFO event channels with `ctl` as vCPU 0's control block and
/// `array` as the first event-array page (ports 1-1023), every port masked first (as
/// Linux: unmask the ports in use with [`unmask`]). A 2-level event pending at the switch
/// stays pending. The link width the hypervisor reports, or the error (the domain stays
/// 2-level if `init_control` failed).
///
/// # Safety
/// `ctl_mfn` and `array_mfn` must be the frames of `ctl` and `array`: the hypervisor
/// writes those frames from now on.
pub unsafe fn use_fifo(ctl: &'static mut Page, ctl_mfn: u64, array: &'static mut Page, array_mfn: u64) -> Result<u8, i64> {
    ctl.0.fill(0);
    for w in array.0.chunks_exact_mut(4) {
        w.copy_from_slice(&fifo::MASKED.to_le_bytes());
    }
    let bits = init_control(ctl_mfn, 0, 0)?;
    fifo_restart();
    FIFO_ARRAY.store(array.0.as_mut_ptr() as u64, Ordering::SeqCst);
    FIFO_CTL.store(ctl.0.as_mut_ptr() as u64, Ordering::SeqCst);
    match expand_array(array_mfn) {
        0 => Ok(bits),
        r => Err(r),
    }
}

/// Forgets the consumer's queue positions (after the guest rewrote its control block).
pub fn fifo_restart() {
    for h in &FIFO_HEADS {
        h.store(0, Ordering::SeqCst);
    }
}

/// Back to 2-level mode after `EVTCHNOP_reset` (which ends the FIFO ABI).
pub fn fifo_off() {
    FIFO_CTL.store(0, Ordering::SeqCst);
    FIFO_ARRAY.store(0, Ordering::SeqCst);
    fifo_restart();
}

/// Sets the raw 32-bit word `port` in FIFO mode (a test's hostile writes).
pub fn fifo_write_word(port: Port, v: u32) {
    if let Some(w) = fifo_word(port) {
        w.store(v, Ordering::SeqCst);
    }
}

/// Sets the raw control-block word at byte `off` (a test's hostile writes).
pub fn fifo_write_control(off: usize, v: u32) {
    fifo_at(FIFO_CTL.load(Ordering::SeqCst), off).store(v, Ordering::SeqCst);
}

/// `EVTCHNOP_init_control {gfn, offset, vcpu}`: the link width, or the error.
pub fn init_control(gfn: u64, offset: u32, vcpu: u32) -> Result<u8, i64> {
    let mut a = [gfn as u32, (gfn >> 32) as u32, offset, vcpu, 0, 0];
    match evtchn_op(EVTCHNOP_INIT_CONTROL, &mut a) {
        0 => Ok(a[4] as u8),
        r => Err(r),
    }
}

/// `EVTCHNOP_expand_array {gfn}`.
pub fn expand_array(gfn: u64) -> i64 {
    evtchn_op(EVTCHNOP_EXPAND_ARRAY, &mut [gfn as u32, (gfn >> 32) as u32])
}

/// `EVTCHNOP_set_priority {port, priority}`.
pub fn set_priority(port: Port, priority: u32) -> i64 {
    evtchn_op(EVTCHNOP_SET_PRIORITY, &mut [port, priority])
}

/// `EVTCHNOP_reset` of the caller's own domain: every port closed, back to 2-level.
pub fn reset() -> i64 {
    evtchn_op(EVTCHNOP_RESET, &mut [guest_abi::DOMID_SELF as u32])
}

/// Registers the upcall with the hypervisor; events stay masked until [`enable`].
pub fn init(shared: &SharedInfoMap) -> i64 {
    SHARED.store(shared.va(), Ordering::SeqCst);
    let cb = guest_abi::traps::CallbackRegister {
        ty: guest_abi::traps::CALLBACKTYPE_EVENT,
        flags: 0,
        _pad: 0,
        address: pv_upcall_entry as *const () as u64,
    };
    // SAFETY: `cb` is valid for the call.
    unsafe { hypercall5(nr::CALLBACK_OP, 0, &cb as *const _ as u64, 0, 0, 0) }
}

/// Makes the mapped shared_info known without registering the upcall (the frontends poll
/// their ports; [`init`] does both).
pub fn attach(shared: &SharedInfoMap) {
    SHARED.store(shared.va(), Ordering::SeqCst);
}

/// Clears `port`'s pending bit (an event consumed by polling rather than by the upcall).
pub fn clear_pending(port: Port) {
    if FIFO_CTL.load(Ordering::SeqCst) != 0 {
        if let Some(w) = fifo_word(port) {
            w.fetch_and(!fifo::PENDING, Ordering::SeqCst);
        }
        return;
    }
    if port >= PORTS {
        return;
    }
    word(PENDING + 8 * (port as u64 / 64)).fetch_and(!(1 << (port % 64)), Ordering::SeqCst);
}

/// Calls `f(port)` for every delivered event.
pub fn set_handler(f: fn(Port)) {
    HANDLER.store(f as *const () as u64, Ordering::SeqCst);
}

/// Deliveries of `port` so far.
pub fn count(port: Port) -> u32 {
    COUNTS.get(port as usize).map(|c| c.load(Ordering::SeqCst)).unwrap_or(0)
}

/// Clears vCPU 0's upcall mask (virtual `sti`); a pending upcall arrives at the next entry.
pub fn enable() {
    byte(1).store(0, Ordering::SeqCst);
}

/// Sets vCPU 0's upcall mask (virtual `cli`).
pub fn disable() {
    byte(1).store(1, Ordering::SeqCst);
}

/// Masks or unmasks one port in the shared bitmap (or its FIFO word) (unmask should then go through
/// [`unmask`] so a pending event is re-announced).
pub fn set_port_mask(port: Port, masked: bool) {
    if FIFO_CTL.load(Ordering::SeqCst) != 0 {
        if let Some(w) = fifo_word(port) {
            if masked {
                w.fetch_or(fifo::MASKED, Ordering::SeqCst);
            } else {
                w.fetch_and(!fifo::MASKED, Ordering::SeqCst);
            }
        }
        return;
    }
    if port >= PORTS {
        return;
    }
    let w = word(MASK + 8 * (port as u64 / 64));
    let m = 1u64 << (port % 64);
    if masked {
        w.fetch_or(m, Ordering::SeqCst);
    } else {
        w.fetch_and(!m, Ordering::SeqCst);
    }
}

/// Is `port` pending in the shared bitmap (or its FIFO word)?
pub fn is_pending(port: Port) -> bool {
    if FIFO_CTL.load(Ordering::SeqCst) != 0 {
        return fifo_word(port).is_some_and(|w| w.load(Ordering::SeqCst) & fifo::PENDING != 0);
    }
    port < PORTS
        && word(PENDING + 8 * (port as u64 / 64)).load(Ordering::SeqCst) & (1 << (port % 64)) != 0
}

/// System time in ns from vCPU 0's pvclock (0 before shared_info is known).
pub fn system_time() -> u64 {
    if si() == 0 {
        return 0;
    }
    loop {
        let base = si() + 32;
        // SAFETY: vcpu_time_info of vCPU 0 lies inside the mapped shared_info page.
        let (v1, tsc0, sys, mul, shift, v2) = unsafe {
            let v1 = ((base) as *const u32).read_volatile();
            core::sync::atomic::fence(Ordering::SeqCst);
            let tsc0 = ((base + 8) as *const u64).read_volatile();
            let sys = ((base + 16) as *const u64).read_volatile();
            let mul = ((base + 24) as *const u32).read_volatile();
            let shift = ((base + 28) as *const i8).read_volatile();
            core::sync::atomic::fence(Ordering::SeqCst);
            (v1, tsc0, sys, mul, shift, ((base) as *const u32).read_volatile())
        };
        if v1 & 1 != 0 || v1 != v2 {
            continue;
        }
        // SAFETY: rdtsc is allowed at CPL 1 (CR4.TSD is clear) and has no other effect.
        let now = unsafe { core::arch::x86_64::_rdtsc() };
        let d = now.saturating_sub(tsc0);
        let d = if shift >= 0 { d << shift } else { d >> (-shift) };
        return sys + ((d as u128 * mul as u128) >> 32) as u64;
    }
}

/// `event_channel_op(cmd, &arg)` on a small argument array.
fn evtchn_op(cmd: u64, arg: &mut [u32]) -> i64 {
    // SAFETY: `arg` is valid for reads and writes of its length during the call.
    unsafe { hypercall5(nr::EVENT_CHANNEL_OP, cmd, arg.as_mut_ptr() as u64, 0, 0, 0) }
}

/// Result of an event-channel call: the port, or the negative error.
pub type PortResult = Result<Port, i64>;

fn port_or(r: i64, p: u32) -> PortResult {
    if r == 0 { Ok(p) } else { Err(r) }
}

pub fn bind_virq(virq: u32, vcpu: u32) -> PortResult {
    let mut a = [virq, vcpu, 0];
    let r = evtchn_op(EVTCHNOP_BIND_VIRQ, &mut a);
    port_or(r, a[2])
}

/// `bind_pirq`: a port for PIRQ `pirq` (mapped with `physdev::map_gsi`), `flags` as Xen's
/// (`BIND_PIRQ__WILL_SHARE`).
pub fn bind_pirq(pirq: u32, flags: u32) -> PortResult {
    let mut a = [pirq, flags, 0];
    let r = evtchn_op(EVTCHNOP_BIND_PIRQ, &mut a);
    port_or(r, a[2])
}

pub fn bind_ipi(vcpu: u32) -> PortResult {
    let mut a = [vcpu, 0];
    let r = evtchn_op(EVTCHNOP_BIND_IPI, &mut a);
    port_or(r, a[1])
}

/// `alloc_unbound` in `dom` for `remote` (both may be `DOMID_SELF`).
pub fn alloc_unbound(dom: u16, remote: u16) -> PortResult {
    let mut a = [dom as u32 | (remote as u32) << 16, 0];
    let r = evtchn_op(EVTCHNOP_ALLOC_UNBOUND, &mut a);
    port_or(r, a[1])
}

pub fn bind_interdomain(remote: u16, remote_port: Port) -> PortResult {
    let mut a = [remote as u32, remote_port, 0];
    let r = evtchn_op(EVTCHNOP_BIND_INTERDOMAIN, &mut a);
    port_or(r, a[2])
}

pub fn send(port: Port) -> i64 {
    evtchn_op(EVTCHNOP_SEND, &mut [port])
}

pub fn close(port: Port) -> i64 {
    evtchn_op(EVTCHNOP_CLOSE, &mut [port])
}

pub fn unmask(port: Port) -> i64 {
    evtchn_op(EVTCHNOP_UNMASK, &mut [port])
}

pub fn bind_vcpu(port: Port, vcpu: u32) -> i64 {
    evtchn_op(EVTCHNOP_BIND_VCPU, &mut [port, vcpu])
}

/// `status`: (status, vcpu, remote dom or VIRQ, remote port) or the error.
pub fn status(dom: u16, port: Port) -> Result<(u32, u32, u32, u32), i64> {
    let mut a = [dom as u32, port, 0, 0, 0, 0];
    let r = evtchn_op(EVTCHNOP_STATUS, &mut a);
    if r == 0 { Ok((a[2], a[3], a[4], a[5])) } else { Err(r) }
}

/// `set_timer_op(abs_ns)`.
pub fn set_timer(abs_ns: u64) -> i64 {
    // SAFETY: takes no pointer.
    unsafe { hypercall5(nr::SET_TIMER_OP, abs_ns, 0, 0, 0, 0) }
}

/// `vcpu_op(cmd, vcpu, arg)`.
///
/// # Safety
/// `arg` must point to what `cmd` reads or writes.
pub unsafe fn vcpu_op(cmd: u64, vcpu: u64, arg: u64) -> i64 {
    // SAFETY: guaranteed by the caller.
    unsafe { hypercall5(nr::VCPU_OP, cmd, vcpu, arg, 0, 0) }
}

/// `SCHEDOP_block`.
pub fn block() -> i64 {
    // SAFETY: takes no pointer.
    unsafe { hypercall5(nr::SCHED_OP, guest_abi::sched::SCHEDOP_BLOCK, 0, 0, 0, 0) }
}

/// Sleeps until `done()` holds, without losing a wake-up: events are masked while `done` is
/// looked at (an event arriving then stays pending), and `SCHEDOP_block` unmasks them and
/// returns at once if one is pending (Xen's idiom: `local_irq_disable(); if (!cond)
/// HYPERVISOR_block()`). A plain `while !done() { block() }` can take the event's upcall
/// between the look and the block, and then sleeps through it. Events end up enabled; one
/// left pending is delivered before this returns.
pub fn block_until(mut done: impl FnMut() -> bool) {
    loop {
        disable();
        if done() {
            break;
        }
        block();
    }
    enable();
    if byte(0).load(Ordering::SeqCst) != 0 {
        // Any hypercall's way back delivers the owed upcall.
        let _ = crate::hypercall::xen_version_number();
    }
}

/// `SCHEDOP_poll` on `ports` until one is pending or `timeout` (absolute ns, 0 = none).
pub fn poll(ports: &[Port], timeout: u64) -> i64 {
    #[repr(C)]
    struct Poll {
        ports: u64,
        nr: u32,
        _pad: u32,
        timeout: u64,
    }
    let p = Poll { ports: ports.as_ptr() as u64, nr: ports.len() as u32, _pad: 0, timeout };
    // SAFETY: `p` and the port list are valid for the call.
    unsafe { hypercall5(nr::SCHED_OP, guest_abi::sched::SCHEDOP_POLL, &p as *const Poll as u64, 0, 0, 0) }
}
