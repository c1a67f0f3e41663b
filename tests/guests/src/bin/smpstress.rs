//! SMP stress: a domU with two vCPUs (`vcpus=2`) races itself in the hypervisor from two
//! CPUs, in ways a global lock used to serialise. dom0 (the watcher, `domexc`) waits for
//! the domain to end; when its last vCPU is off the CPUs the hypervisor audits the domain's
//! frames (every count recomputed from its tables, `hv_core::audit`) and logs the verdict,
//! which the scenario checks.
//!
//! Modes (the domU's command line):
//! - `tables`: both vCPUs pin and unpin the same frame as an L1 and update its entries
//!   (validated updates while pinned, plain writes while not), map and unmap the same data
//!   frames through it, for a while; the domain then powers off with the L1 pinned and
//!   populated.
//! - `evtchn`: vCPU 0 binds, moves (`bind_vcpu`) and closes IPI ports while vCPU 1 sends on
//!   them, moves them back and asks their status.
//! - `crash`: vCPU 1 runs 512-entry `mmu_update` batches and pin/unpin back to back while
//!   vCPU 0 crashes the domain: it dies with vCPU 1 inside hypercalls on another CPU.
//! - `updown`: vCPU 1 takes itself down and up again inside one multicall (`VCPUOP_down`,
//!   `VCPUOP_up`, then lock-free entries: an event send and a timer in the past), while
//!   vCPU 0 brings it back up whenever it is down and sends it events. The hypervisor lock is
//!   let go between a batch's entries; the batch must pause after the down (the rest is
//!   re-issued once the vCPU runs again, as Xen's preempted multicall: every entry runs,
//!   once), and the vCPU must never be scheduled on two CPUs at once (the scenario fails on
//!   the hypervisor's "not waiting" complaint).
//! - `pollwake`: vCPU 1 polls an IPI port with a 2 ms timeout, over and over, while vCPU 0
//!   takes it down and brings it up again and now and then sends to the port: an up that
//!   wakes the poller between its announcement and its sleep must not leave it asleep with
//!   nobody to wake it (it must keep polling, and see the stop at the end).
//!
//! Every hypercall result is allowed to be an error (the two vCPUs undo each other's work);
//! what must hold is that the hypervisor stays up and the counts stay exact.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::SeqCst};
use guest_abi::mm::ext;
use pv_runtime::events::{self as ev, vcpu_op};
use pv_runtime::hypercall::{self as hc, MmuUpdate};
use pv_runtime::mm::{GuestMem, A, D, P, RW};
use pv_runtime::println;
use test_guests::*;

const MS: u64 = 1_000_000;
/// How long both vCPUs race.
const RACE: u64 = 400 * MS;

static MODE: AtomicU32 = AtomicU32::new(0);
const TABLES: u32 = 1;
const EVTCHN: u32 = 2;
const CRASH: u32 = 3;
const UPDOWN: u32 = 4;
const POLLWAKE: u32 = 5;
static STARTED: AtomicBool = AtomicBool::new(false);
static STOP: AtomicBool = AtomicBool::new(false);
static STOPPED: AtomicBool = AtomicBool::new(false);
static OPS: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];
static END: AtomicU64 = AtomicU64::new(0);
/// Frames and addresses both vCPUs work on (set by vCPU 0 before vCPU 1 starts).
static L1: AtomicU64 = AtomicU64::new(0);
static DATA: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];
static BATCH_PTE: AtomicU64 = AtomicU64::new(0);
static PORTS: [AtomicU32; 4] = [const { AtomicU32::new(0) }; 4];
/// `updown`: batches whose entries did not all run, or failed.
static BAD: AtomicU64 = AtomicU64::new(0);

static mut AP_STACK: [u8; 16384] = [0; 16384];
static mut CTX: [u8; guest_abi::vcpu::ctx::SIZE] = [0; guest_abi::vcpu::ctx::SIZE];
static mut REQS: [MmuUpdate; 512] = [MmuUpdate { ptr: 0, val: 0 }; 512];

fn mmuext(cmd: u32, arg1: u64) -> i64 {
    hc::mmuext1(cmd, arg1, 0)
}

fn set_entry(table: u64, idx: u64, val: u64) -> i64 {
    hc::mmu_update(&[MmuUpdate { ptr: (table << 12) + 8 * idx, val }]).0
}

/// One round of the `tables` race from vCPU `me`.
fn tables_round(me: usize, i: u64) {
    let l1 = L1.load(SeqCst);
    let data = DATA[(i as usize + me) % 2].load(SeqCst);
    match (i + me as u64) % 4 {
        0 => {
            mmuext(ext::PIN_L1_TABLE, l1);
        }
        1 => {
            set_entry(l1, me as u64, data << 12 | P | RW | A | D);
        }
        2 => {
            set_entry(l1, 2 + me as u64, data << 12 | P | A);
            set_entry(l1, me as u64, 0);
        }
        _ => {
            mmuext(ext::UNPIN_TABLE, l1);
        }
    }
}

/// One round of the `evtchn` race from vCPU `me`.
fn evtchn_round(me: usize, i: u64) {
    let slot = &PORTS[i as usize % PORTS.len()];
    if me == 0 {
        match i % 3 {
            0 => {
                if let Ok(p) = ev::bind_ipi(0) {
                    slot.store(p, SeqCst);
                }
            }
            1 => {
                ev::bind_vcpu(slot.load(SeqCst), 1);
            }
            _ => {
                ev::close(slot.swap(0, SeqCst));
            }
        }
    } else {
        let p = slot.load(SeqCst);
        ev::send(p);
        ev::bind_vcpu(p, 0);
        let _ = ev::status(guest_abi::DOMID_SELF, p);
    }
}

/// One round of the `updown` race from vCPU `me`.
fn updown_round(me: usize) {
    use guest_abi::hypercall as nr;
    use guest_abi::vcpu::{VCPUOP_DOWN, VCPUOP_IS_UP, VCPUOP_UP};
    let ipi = PORTS[1 - me].load(SeqCst);
    if me == 1 {
        // Results the hypervisor never writes: an entry that did not run keeps it.
        const UNRUN: i64 = 0x5A5A;
        let e = |op: u64, args: [u64; 6]| hc::MulticallEntry { op, result: UNRUN, args };
        let mut batch = [
            e(nr::VCPU_OP, [VCPUOP_DOWN, 1, 0, 0, 0, 0]),
            e(nr::VCPU_OP, [VCPUOP_UP, 1, 0, 0, 0, 0]),
            e(nr::EVENT_CHANNEL_OP, [guest_abi::evtchn::EVTCHNOP_SEND, 0, 0, 0, 0, 0]),
            e(nr::SET_TIMER_OP, [1, 0, 0, 0, 0, 0]),
        ];
        let send = [ipi, 0u32];
        batch[2].args[1] = send.as_ptr() as u64;
        let r = hc::multicall(&mut batch);
        // Back up (vCPU 0 did it): the rest of the batch was re-issued and ran then.
        if r != 0 || batch[0].result != 0 || batch.iter().any(|e| e.result == UNRUN) || batch[2].result != 0 {
            BAD.fetch_add(1, SeqCst);
        }
    } else {
        // SAFETY: takes no pointer.
        if unsafe { vcpu_op(VCPUOP_IS_UP, 1, 0) } == 0 {
            // SAFETY: as above.
            unsafe { vcpu_op(VCPUOP_UP, 1, 0) };
        }
        ev::send(ipi);
    }
}

/// One round of the `pollwake` race from vCPU `me`.
fn pollwake_round(me: usize, i: u64) {
    use guest_abi::vcpu::{VCPUOP_DOWN, VCPUOP_UP};
    let port = PORTS[0].load(SeqCst);
    if me == 1 {
        // The most ports a poll may name (the same one): the hypervisor's last looks at them
        // take long enough for vCPU 0's down and up to land in between.
        ev::poll(&[port; 128], ev::system_time() + 2 * MS);
        return;
    }
    let before = OPS[1].load(SeqCst);
    // A delay that sweeps the down and up across vCPU 1's poll, round after round.
    for _ in 0..(i * 997) % 16384 {
        core::hint::spin_loop();
    }
    // SAFETY: take no pointer.
    unsafe {
        vcpu_op(VCPUOP_DOWN, 1, 0);
        vcpu_op(VCPUOP_UP, 1, 0);
    }
    ev::send(port);
    // vCPU 1 is up, its port pending: its poll ends within its 2 ms timeout at the latest.
    // A wake-up lost between its announcement and its sleep leaves it asleep for good.
    let end = ev::system_time() + 100 * MS;
    while OPS[1].load(SeqCst) == before {
        if ev::system_time() > end {
            BAD.fetch_add(1, SeqCst);
            STOP.store(true, SeqCst);
            return;
        }
        hc::yield_now();
    }
}

/// The `crash` load: a validated 512-entry batch, then a pin and unpin.
fn crash_round() {
    // SAFETY: vCPU 1 alone uses the requests once vCPU 0 wrote them.
    let reqs = unsafe { &*core::ptr::addr_of!(REQS) };
    hc::mmu_update(reqs);
    mmuext(ext::PIN_L1_TABLE, L1.load(SeqCst));
    mmuext(ext::UNPIN_TABLE, L1.load(SeqCst));
}

fn race(me: usize) {
    let mut i = 0u64;
    while !STOP.load(SeqCst) && (MODE.load(SeqCst) == CRASH || ev::system_time() < END.load(SeqCst)) {
        match MODE.load(SeqCst) {
            TABLES => tables_round(me, i),
            EVTCHN => evtchn_round(me, i),
            UPDOWN => updown_round(me),
            POLLWAKE => pollwake_round(me, i),
            _ => crash_round(),
        }
        i += 1;
        OPS[me].store(i, SeqCst);
    }
}

/// vCPU 1's code: started by VCPUOP_up with the stack from the context.
extern "C" fn ap_main() -> ! {
    STARTED.store(true, SeqCst);
    race(1);
    STOPPED.store(true, SeqCst);
    loop {
        hc::yield_now();
    }
}

fn wait(f: impl Fn() -> bool) -> bool {
    let end = ev::system_time() + 5000 * MS;
    while !f() {
        if ev::system_time() > end {
            return false;
        }
        hc::yield_now();
    }
    true
}

#[no_mangle]
fn guest_main(si: &'static pv_runtime::StartInfo) -> ! {
    let mode = core::str::from_utf8(si.cmdline_bytes()).unwrap_or("").trim();
    let m = match mode {
        "tables" => TABLES,
        "evtchn" => EVTCHN,
        "crash" => CRASH,
        "updown" => UPDOWN,
        "pollwake" => POLLWAKE,
        _ => {
            println!("smpstress: unknown mode '{}'", mode);
            hc::shutdown(guest_abi::sched::ShutdownReason::Crash)
        }
    };
    MODE.store(m, SeqCst);
    settle(); // dom0 binds VIRQ_DOM_EXC first
    check("events up", events_up(si));
    let vb = pv_runtime::virt_base();
    let mem = GuestMem::new(si, vb);
    let t = Tables::new(si);
    // Slack pages at the end of the bootstrap region (the last one holds shared_info).
    let slack = |n: u64| (vb + (mem.region_end_pfn - n) * 4096, mem.mfn(mem.region_end_pfn - n));
    let (l1_va, l1) = slack(2);
    // The L1-to-be is mapped read-only: a frame mapped writable can never become a table.
    expect_ret("L1 frame mapped read-only", hc::update_va_mapping(l1_va, l1 << 12 | P | A, 2), 0);
    L1.store(l1, SeqCst);
    DATA[0].store(slack(3).1, SeqCst);
    DATA[1].store(slack(4).1, SeqCst);
    // The crash load: 512 updates moving one PTE between two own frames.
    let (va, fa) = slack(5);
    let pte = t.entry_maddr(va, 1);
    BATCH_PTE.store(pte, SeqCst);
    // SAFETY: vCPU 1 is not running yet.
    let reqs = unsafe { &mut *core::ptr::addr_of_mut!(REQS) };
    for (i, r) in reqs.iter_mut().enumerate() {
        *r = MmuUpdate { ptr: pte, val: (if i % 2 == 0 { slack(6).1 } else { fa }) << 12 | P | RW | A | D };
    }

    if m == POLLWAKE {
        // The port vCPU 1 polls.
        PORTS[0].store(ev::bind_ipi(1).unwrap_or(0), SeqCst);
    }
    if m == UPDOWN {
        // An IPI port for each vCPU, each sent to by the other.
        for (v, slot) in PORTS.iter().take(2).enumerate() {
            slot.store(ev::bind_ipi(v as u32).unwrap_or(0), SeqCst);
        }
    }
    // vCPU 1.
    // SAFETY: vCPU 1 is not running; the buffer is used only here.
    let c = unsafe { &mut *core::ptr::addr_of_mut!(CTX) };
    let stack_top = core::ptr::addr_of_mut!(AP_STACK) as u64 + 16384 - 8;
    vcpu_context(c, ap_main as *const () as u64, stack_top, mem.mfn((si.pt_base - vb) / 4096));
    END.store(ev::system_time() + RACE, SeqCst);
    // SAFETY: the context is valid for the call; up takes no pointer.
    unsafe {
        expect_ret("initialise vCPU 1", vcpu_op(guest_abi::vcpu::VCPUOP_INITIALISE, 1, c.as_ptr() as u64), 0);
        expect_ret("up(1)", vcpu_op(guest_abi::vcpu::VCPUOP_UP, 1, 0), 0);
    }
    check("vCPU 1 runs", wait(|| STARTED.load(SeqCst)));
    if m == CRASH {
        check("vCPU 1 in its hypercalls", wait(|| OPS[1].load(SeqCst) > 20));
        println!("smpstress crash: crashing with vCPU 1 inside hypercalls ({} rounds so far)", OPS[1].load(SeqCst));
        hc::shutdown(guest_abi::sched::ShutdownReason::Crash)
    }
    race(0);
    STOP.store(true, SeqCst);
    let up_again = || {
        // `updown`: vCPU 1 may be down at the stop; it needs bringing up to see it.
        // SAFETY: takes no pointer.
        if (m == UPDOWN || m == POLLWAKE) && unsafe { vcpu_op(guest_abi::vcpu::VCPUOP_IS_UP, 1, 0) } == 0 {
            // SAFETY: as above.
            unsafe { vcpu_op(guest_abi::vcpu::VCPUOP_UP, 1, 0) };
        }
        STOPPED.load(SeqCst)
    };
    check("vCPU 1 done", wait(up_again));
    println!("smpstress {}: {} and {} rounds on the two vCPUs", mode, OPS[0].load(SeqCst), OPS[1].load(SeqCst));
    // (A `pollwake` round of vCPU 0 waits for a whole poll of vCPU 1: few on one CPU.)
    let min0 = if m == POLLWAKE { 2 } else { 10 };
    check("both vCPUs raced", OPS[0].load(SeqCst) > min0 && OPS[1].load(SeqCst) > 10);
    if m == UPDOWN {
        check("every batch ran each entry once, the rest after the vCPU came back", BAD.load(SeqCst) == 0);
    }
    if m == POLLWAKE {
        check("the poller always woke (no lost wake-up)", BAD.load(SeqCst) == 0);
    }
    if m == TABLES {
        // End with the L1 pinned and populated: the audit then recomputes through it.
        mmuext(ext::UNPIN_TABLE, l1);
        set_entry(l1, 0, 0);
        set_entry(l1, 1, 0);
        expect_ret("pin the L1 at the end", mmuext(ext::PIN_L1_TABLE, l1), 0);
        expect_ret("map a data frame through it", set_entry(l1, 0, DATA[0].load(SeqCst) << 12 | P | RW | A | D), 0);
    }
    finish(mode)
}
