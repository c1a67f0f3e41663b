//! Xen's debug keys, typed on the hypervisor console (COM1 or the keyboard) once `Ctrl-A`
//! three times switched input to it: `h` help, `q` domains and vCPUs, `r` run queues, `e`
//! event channels, `m` memory and frame types, `d` every CPU's registers, `0` dom0's
//! registers, `R` reboot.
//!
//! A key runs where console input is taken (CPU 0's housekeeping, or dom0's
//! `CONSOLEIO_read` on whichever CPU runs it) holding only that CPU's own structure. What it reads under another lock (a run queue, a domain's event lock) it
//! copies out first and logs after letting go. `d` and `0` ask each CPU for its own state:
//! a flag and an IPI; the CPU prints the frame it was interrupted in (`dump_if_asked`).

use crate::domain;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use hv_arch::entry::TrapFrame;

/// The keys: (key, what it does), as `h` lists them.
const KEYS: &[(u8, &str)] = &[
    (b'h', "show this message"),
    (b'q', "dump domain (and guest debug) info"),
    (b'r', "dump run queues"),
    (b'e', "dump evtchn info"),
    (b'm', "memory info"),
    (b'd', "dump registers"),
    (b'0', "dump Dom0 registers"),
    (b'R', "reboot machine"),
];

/// CPUs asked to print their registers (`d`), and those asked only if they run dom0 (`0`).
static DUMP_ALL: AtomicU64 = AtomicU64::new(0);
static DUMP_DOM0: AtomicU64 = AtomicU64::new(0);
/// A CPU is printing its dump.
static DUMPING: AtomicBool = AtomicBool::new(false);

/// Acts on debug key `k`.
pub fn key(k: u8) {
    match k {
        b'h' => {
            log::info!("'h' pressed -> showing installed handlers");
            for &(key, what) in KEYS {
                log::info!(" key '{}' (ascii '{:02x}') => {}", key as char, key, what);
            }
        }
        b'q' => domains(),
        b'r' => run_queues(),
        b'e' => events(),
        b'm' => memory(),
        b'd' => {
            log::info!("'d' pressed -> dumping registers");
            ask(&DUMP_ALL);
        }
        b'0' => {
            log::info!("'0' pressed -> dumping Dom0's registers");
            not_running_dom0();
            ask(&DUMP_DOM0);
        }
        b'R' => {
            log::info!("'R' pressed -> rebooting machine");
            crate::power::reboot()
        }
        b'\r' | b'\n' => {}
        k => log::info!("key '{}' (ascii '{:02x}'): no handler ('h' lists them)", if k.is_ascii_graphic() { k as char } else { '?' }, k),
    }
}

fn domains() {
    log::info!("'q' pressed -> dumping domain info");
    for d in domain::all() {
        let state = match (d.is_dying(), d.ended(), d.is_paused()) {
            (true, _, _) => "dying".into(),
            (_, Some(r), _) => alloc::format!("shut down ({:?})", r),
            (_, None, true) => "paused".into(),
            _ => String::from("running"),
        };
        log::info!(
            "d{}: {} pages (max {}), {} vCPU(s), {}, {}",
            d.id,
            d.tot_pages.load(Ordering::Relaxed),
            d.max_pages.load(Ordering::Relaxed),
            d.nr_vcpus(),
            if d.pv64 { "Xen pv64 mode" } else { "ring-1 mode" },
            state
        );
    }
}

/// Each CPU's queue: what it runs, then every vCPU it owns with priority and credit.
fn run_queues() {
    log::info!("'r' pressed -> dumping run queues");
    for k in 0..crate::machine::get().cpus.len() {
        let mut lines = Vec::new();
        {
            let rq = crate::state::lock(k);
            let cur = rq.current();
            for (id, slot) in rq.payloads() {
                let mut l = String::new();
                let _ = write!(
                    l,
                    "  d{}v{}{}: priority {}, credit {}, {}",
                    slot.shared.id,
                    slot.vcpu,
                    if Some(id) == cur { " (running)" } else { "" },
                    rq.prio(id).map_or(String::from("?"), |p| alloc::format!("{:?}", p)),
                    rq.credit(id).unwrap_or(0),
                    if slot.state.runnable() { "runnable" } else { "blocked" }
                );
                lines.push(l);
            }
        }
        log::info!("CPU {}: {} vCPU(s){}", k, lines.len(), if crate::state::idle_cpu_in(1 << k, usize::MAX).is_some() { ", idle" } else { "" });
        for l in lines {
            log::info!("{}", l);
        }
    }
}

/// Each domain's ports in use: what they are bound to, where they notify, pending/masked.
fn events() {
    log::info!("'e' pressed -> dumping event-channel info");
    for d in domain::all() {
        let mut lines = Vec::new();
        let fifo;
        {
            let l = crate::ports::Locked::new(&d, None);
            let bits = l.bits();
            let t = l.table(d.id);
            fifo = t.is_some_and(|t| t.is_fifo());
            if let Some(t) = t {
                for p in t.used() {
                    let Some((state, vcpu)) = t.chan(p) else { continue };
                    let pending = t.is_pending(d.id, p, &bits);
                    let masked = hv_core::evtchn::Bits::is_masked(&bits, d.id, p);
                    lines.push(alloc::format!("  port {:4}: {:?}, vCPU {}, pending {}, masked {}", p, state, vcpu, pending as u8, masked as u8));
                }
            }
        }
        log::info!("d{}: {} port(s) in use ({} ABI)", d.id, lines.len(), if fifo { "FIFO" } else { "2-level" });
        for l in lines {
            log::info!("{}", l);
        }
    }
}

/// Free memory, each domain's pages, and the frame table's counts by owner and type.
fn memory() {
    use hv_core::frame::{Owner, PageType};
    log::info!("'m' pressed -> memory info");
    let m = crate::machine::get();
    let free = crate::mm::with(|mm| mm.free_frames()).unwrap_or(0);
    log::info!("RAM {} pages ({} MiB), free {} pages ({} MiB), heap {} KiB", m.ram_pages, m.ram_pages >> 8, free, free >> 8, crate::mm::heap_size() >> 10);
    let (mut xen, mut io, mut doms) = (0u64, 0u64, 0u64);
    let mut types = [0u64; 7];
    for (_, f) in m.ft.iter() {
        match f.owner {
            Owner::Xen => xen += 1,
            Owner::Io => io += 1,
            Owner::Dom(_) => doms += 1,
            Owner::None | Owner::Free => {}
        }
        if f.type_count > 0 || f.ty != PageType::None {
            let i = [PageType::None, PageType::Writable, PageType::L1, PageType::L2, PageType::L3, PageType::L4, PageType::SegDesc].iter().position(|&t| t == f.ty).unwrap_or(0);
            types[i] += 1;
        }
    }
    log::info!("frames: hypervisor {}, domains {}, MMIO {}", xen, doms, io);
    log::info!("types: writable {}, L1 {}, L2 {}, L3 {}, L4 {}, descriptor {}", types[1], types[2], types[3], types[4], types[5], types[6]);
    for d in domain::all() {
        log::info!("d{}: {} pages, max {}", d.id, d.tot_pages.load(Ordering::Relaxed), d.max_pages.load(Ordering::Relaxed));
    }
}

/// dom0's vCPUs that no CPU runs: their saved context (those that run print theirs).
fn not_running_dom0() {
    for k in 0..crate::machine::get().cpus.len() {
        let mut saved = Vec::new();
        {
            let rq = crate::state::lock(k);
            for (_, slot) in rq.payloads() {
                if let (0, Some(ctx)) = (slot.shared.id, slot.ctx.as_ref()) {
                    saved.push((slot.vcpu, ctx.frame, slot.state.runnable()));
                }
            }
        }
        for (v, f, runnable) in saved {
            if f.cs == 0 {
                hv_arch::console::emergency_write_fmt(format_args!("(XEN) *** d0v{} has not been started ***\n", v));
                continue;
            }
            hv_arch::console::emergency_write_fmt(format_args!("(XEN) *** d0v{} is not running ({}): its saved registers ***\n", v, if runnable { "runnable" } else { "blocked" }));
            crate::bounce::dump(&f, 0);
        }
    }
}

/// Sets `which` for every CPU and sends each an IPI (this one included: it prints once it
/// takes interrupts again).
fn ask(which: &AtomicU64) {
    let m = crate::machine::get();
    let all = if m.cpus.len() >= 64 { u64::MAX } else { (1u64 << m.cpus.len()) - 1 };
    which.fetch_or(all, Ordering::SeqCst);
    for (k, &apic) in m.apic_ids.iter().enumerate() {
        crate::percpu::poke(k, apic);
    }
}

/// On an IPI: if this CPU was asked, prints the frame it was interrupted in: a guest's
/// (`running`: its domain and vCPU) or the hypervisor's own. Takes no lock (it may run
/// inside the hypervisor with any held): emergency console writes only.
pub fn dump_if_asked(cpu: usize, f: &TrapFrame, running: Option<(u16, u32)>) {
    let bit = 1u64 << (cpu % 64);
    // Every reschedule IPI passes here: shared reads first, the read-modify-writes only
    // when this CPU was asked.
    if (DUMP_ALL.load(Ordering::Relaxed) | DUMP_DOM0.load(Ordering::Relaxed)) & bit == 0 {
        return;
    }
    let all = DUMP_ALL.fetch_and(!bit, Ordering::AcqRel) & bit != 0;
    let dom0 = DUMP_DOM0.fetch_and(!bit, Ordering::AcqRel) & bit != 0;
    let is_dom0 = running.is_some_and(|(d, _)| d == 0);
    if !(all || (dom0 && is_dom0)) {
        return;
    }
    // One CPU's dump at a time (they all get the IPI at once), waiting at most 200 ms for
    // the one before: no lock a stuck CPU could hold for ever.
    let end = hv_arch::time::tsc_after_us(200_000);
    let mut turn = false;
    while !turn && hv_arch::cpu::rdtsc() < end {
        turn = DUMPING.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).is_ok();
        core::hint::spin_loop();
    }
    match running {
        Some((d, v)) => hv_arch::console::emergency_write_fmt(format_args!("(XEN) *** CPU {}: guest state (d{}v{}) ***\n", cpu, d, v)),
        None => hv_arch::console::emergency_write_fmt(format_args!("(XEN) *** CPU {}: hypervisor state (idle or in the hypervisor) ***\n", cpu)),
    }
    crate::bounce::dump(f, hv_arch::cpu::read_cr2());
    if running.is_none() {
        crate::backtrace::print_from(Some(f.rip), f.rbp);
    }
    if turn {
        DUMPING.store(false, Ordering::Release);
    }
}
