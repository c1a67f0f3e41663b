//! The hypervisor: boots, builds dom0 from the first boot module and runs it in ring 1.
//!
//! This file wires the x86-64 layer (`hv-arch`) to the core logic (`hv-core`); all `unsafe`
//! lives in `hv-arch`.
#![no_std]
#![no_main]
#![deny(unsafe_code)]

extern crate alloc;

mod dom0;
mod domain;
mod events;
mod hypercall;
mod locks;
mod machine;
mod mm;
mod percpu;
mod schedule;
mod traps;

use core::sync::atomic::{AtomicBool, Ordering};
use guest_abi::harness::ExitCode;
use hv_arch::boot::{BootInfo, BootInfoError};
use hv_arch::cpu::{self, Features};
use hv_arch::entry::{self, TrapFrame};
use hv_arch::paging::{self, CpuTables, FrameSource};
use hv_core::cmdline::{self, LogLevel};

/// The hypervisor's shared state, under the hypervisor lock (see `locks` for the order).
/// What belongs to one CPU is in its `percpu::PerCpu` instead.
pub struct Global {
    pub mm: mm::Mm,
    /// Every CPU's tables and APIC id.
    pub cpus: alloc::vec::Vec<CpuTables>,
    pub apic_ids: alloc::vec::Vec<u32>,
    /// Every vCPU context that is not on a CPU: runnable, blocked or down.
    pub others: alloc::vec::Vec<alloc::boxed::Box<domain::Vcpu>>,
    /// Every domain, by id, and the idle domain behind placeholders.
    pub domains: domain::Domains,
    pub cmdline: &'static str,
    /// The console rate limit all unprivileged domains share.
    pub console_all: hv_core::ratelimit::TokenBucket,
    pub events: hv_core::evtchn::Events,
    pub sched: hv_core::sched::Credit,
}

/// What a hypervisor entry works with: this CPU's structure (the current vCPU in it) and
/// the shared state; and the current domain's memory, when its lock is held for a stretch
/// (a multicall).
pub struct Hv<'a> {
    pub pc: &'a mut percpu::PerCpu,
    pub g: &'a mut Global,
    pub mm: Option<&'a mut domain::DomMm>,
}

/// The hypervisor lock: a ticket lock, so CPUs get it in the order they asked (a plain spin
/// lock let a CPU re-issuing continuations back to back starve the others for hundreds of
/// milliseconds under TCG).
static HV: spin::mutex::TicketMutex<Option<Global>> = spin::mutex::TicketMutex::new(None);

/// Takes the hypervisor lock (after this CPU's own structure, if at all: `locks`).
pub fn global() -> locks::Ordered<spin::mutex::TicketMutexGuard<'static, Option<Global>>> {
    locks::Ordered::new(locks::Level::Global, || HV.lock())
}

/// CPUs that have come up (the BSP included).
static CPUS_ONLINE: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(1);

/// First Rust code of an application processor after the trampoline.
fn ap_main(cpu: u32) -> ! {
    // Every CPU's structure exists before any AP starts.
    let Some(t) = percpu::tables_of(cpu as usize) else { cpu::halt_forever() };
    paging::enable_pcid_ap();
    paging::activate(&t);
    let feat = Features::detect();
    cpu::enable_features(&feat);
    cpu::enable_xsave(&feat);
    hv_arch::lapic::init();
    log::info!("CPU {} up (APIC id {})", cpu, hv_arch::lapic::id());
    CPUS_ONLINE.fetch_add(1, Ordering::SeqCst);
    schedule::idle_loop()
}
static DEBUG_EXIT: AtomicBool = AtomicBool::new(false);

impl Hv<'_> {
    /// The current vCPU's domain.
    pub fn dom(&self) -> &domain::Domain {
        self.g.domains.of(self.pc.cur.dom)
    }

    pub fn dom_mut(&mut self) -> &mut domain::Domain {
        self.g.domains.of_mut(self.pc.cur.dom)
    }

    /// What the rest of the hypervisor sees of the current vCPU (`None` when idle).
    pub fn vs(&mut self) -> Option<&mut domain::VcpuState> {
        self.g.domains.vcpu_mut(self.pc.cur.dom, self.pc.cur.id)
    }

    /// Ends the run: under QEMU with `debug-exit`, through isa-debug-exit with `code`.
    pub fn end_run(&self, why: &str, code: ExitCode) -> ! {
        end(why, code)
    }
}

fn end(why: &str, code: ExitCode) -> ! {
    // A guest system call through a direct gate never enters: with a DPL-0 gate `int 0x80`
    // from ring 3 would arrive as #GP, with a hypervisor DPL-3 gate as vector 0x80.
    let (total, gp, v80) = schedule::entries();
    log::info!("hypervisor entries from guests: total={} gp={} int80={}", total, gp, v80);
    log::info!("{}: halting ({:?})", why, code);
    if DEBUG_EXIT.load(Ordering::Relaxed) {
        cpu::debug_exit(code);
    }
    cpu::halt_forever()
}

/// After a fatal hypervisor error.
pub fn panic_exit() -> ! {
    if DEBUG_EXIT.load(Ordering::Relaxed) {
        cpu::debug_exit(ExitCode::HypervisorPanic);
    }
    cpu::halt_forever()
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    hv_arch::console::emergency_write_fmt(format_args!("(XEN) PANIC: {}\n", info));
    panic_exit()
}

/// Drops a leading path word (`/boot/xen ...`): bootloaders differ on whether they pass it.
fn strip_path(s: &str) -> &str {
    let s = s.trim();
    if s.starts_with('/') {
        s.split_once(' ').map(|x| x.1.trim_start()).unwrap_or("")
    } else {
        s
    }
}

fn guest_trap(f: &mut TrapFrame) -> bool {
    schedule::count_entry(f.vector);
    if f.vector == hv_arch::lapic::FLUSH_VECTOR as u64 {
        // Takes no lock: the CPU that sent it (perhaps holding locks) waits until this flushed.
        schedule::flush_ipi();
        return true;
    }
    schedule::left_guest();
    let mut pg = percpu::this();
    let Some(pc) = pg.as_mut() else { panic!("guest trap on a CPU without its structure") };
    schedule::enter(pc);
    // Hypercalls that need only this CPU's structure run without the hypervisor lock, and so
    // does the way back when there is nothing else to do on it.
    // Page-table hypercalls and exceptions bounced to the guest's own handlers run under the
    // current domain's memory lock alone.
    let local = if f.vector == guest_abi::hypercall::HYPERCALL_VECTOR as u64 {
        hypercall::local(pc, f) || hypercall::on_domain(pc, f)
    } else {
        traps::local_bounce(pc, f)
    };
    if local && schedule::may_resume_locally(pc, f) {
        schedule::leave_cpu(pc);
        return true;
    }
    let mut gg = global();
    let Some(g) = gg.as_mut() else { panic!("guest trap before the hypervisor is up") };
    let mut hv = Hv { pc, g, mm: None };
    let resume = if local { traps::exit(&mut hv, f) } else { traps::guest_trap(&mut hv, f) };
    schedule::leave_cpu(hv.pc);
    resume
}

#[no_mangle]
#[allow(unsafe_code)] // the symbol the arch layer's boot code calls
fn hv_main(boot: Result<BootInfo, BootInfoError>) -> ! {
    hv_arch::console::init_log(log::LevelFilter::Info);
    let boot = match boot {
        Ok(b) => b,
        Err(e) => {
            log::error!("unusable boot information: {:?}", e);
            panic_exit()
        }
    };
    let hv_cmdline = strip_path(boot.cmdline);
    let opts = cmdline::parse(hv_cmdline);
    DEBUG_EXIT.store(opts.debug_exit, Ordering::Relaxed);
    log::set_max_level(match opts.loglvl {
        LogLevel::Error => log::LevelFilter::Error,
        LogLevel::Warn => log::LevelFilter::Warn,
        LogLevel::Info => log::LevelFilter::Info,
        LogLevel::Debug => log::LevelFilter::Debug,
        LogLevel::Trace => log::LevelFilter::Trace,
    });
    hv_arch::time::calibrate(5);
    log::info!("rxen {} booting via {:?} ({})", env!("CARGO_PKG_VERSION"), boot.kind, boot.loader);
    log::info!("command line: {}", hv_cmdline);
    if let Some(u) = opts.unknown {
        log::warn!("unknown option '{}' ignored", u);
    }
    let feat = Features::detect();
    log::info!("TSC {} kHz; CPU features {:?}", hv_arch::time::tsc_khz(), feat);
    for r in boot.ram.as_slice() {
        log::debug!("RAM {:#012x}-{:#012x}", r.start, r.end);
    }
    match &boot.madt {
        Some(m) => log::info!("ACPI: {} CPU(s), APIC ids {:?}", m.nr_cpus, m.cpus()),
        None => log::warn!("ACPI: no usable MADT; running on the boot CPU only"),
    }
    let image = hv_arch::boot::image_phys_range();
    let mut mm = match mm::Mm::init(&boot.ram, &boot.reserved, image) {
        Ok(m) => m,
        Err(e) => {
            log::error!("memory setup failed: {}", e);
            panic_exit()
        }
    };
    log::info!(
        "memory: {} MiB RAM, {} MiB free, image {:#x}-{:#x}, {} module(s)",
        boot.ram.total() >> 20,
        mm.free_frames() >> 8,
        image.start,
        image.end,
        boot.nr_modules
    );

    let pcid = paging::enable_pcid(&feat);
    log::info!("TLB: {}", if pcid { "PCID tagged CR3 switches" } else { "no PCID: full flush on each root switch" });
    let root = mm.frame().unwrap_or_else(|| panic!("no frame for the root table"));
    let m2p = mm.m2p.clone();
    let shared = paging::build_shared(root, &boot.ram, &m2p, &mut mm)
        .unwrap_or_else(|_| panic!("out of memory building the hypervisor's tables"));
    let cpu_tables = paging::build_cpu(0, root, &shared, &mut mm)
        .unwrap_or_else(|_| panic!("out of memory building CPU 0's tables"));
    // The other CPUs' tables, built now while memory setup is simple.
    let apic_ids: alloc::vec::Vec<u32> = boot.madt.as_ref().map(|m| m.cpus().to_vec()).unwrap_or_default();
    let want = if opts.cpus == 0 { apic_ids.len().max(1) } else { opts.cpus.min(apic_ids.len().max(1)) };
    let mut tables = alloc::vec![cpu_tables];
    for n in 1..want {
        let r = mm.frame().and_then(|r| paging::build_cpu(n as u32, r, &shared, &mut mm).ok());
        match r {
            Some(t) => tables.push(t),
            None => {
                log::error!("out of memory for CPU {}'s tables: using {} CPU(s)", n, n);
                break;
            }
        }
    }
    let ap_boot = if tables.len() > 1 { paging::build_ap_boot_root(root, &mut mm).ok() } else { None };
    let mut ap_stacks = alloc::vec::Vec::new();
    for _ in 1..tables.len() {
        ap_stacks.push(mm.contiguous(4).map(|m| hv_arch::layout::phys_to_virt(m.maddr()) + 4 * 4096));
    }
    paging::activate(&cpu_tables);
    cpu::mask_legacy_pic();
    if paging::map_lapic(root, &mut mm).is_err() {
        panic!("out of memory mapping the local APIC");
    }
    hv_arch::lapic::init();
    log::info!("LAPIC id {} timer: {}", hv_arch::lapic::id(), if hv_arch::lapic::tsc_deadline_mode() { "TSC deadline" } else { "one-shot" });
    entry::set_handlers(entry::Handlers { guest: guest_trap, hypervisor: traps::hypervisor_trap, idle: schedule::idle_loop });
    cpu::enable_features(&feat);
    let xcr0 = cpu::enable_xsave(&feat);
    log::info!("vCPU state: {}", if xcr0 != 0 { "XSAVE" } else { "FXSAVE" });
    if xcr0 != 0 {
        log::info!("XCR0 {:#x}", xcr0);
    }
    if opts.bench {
        log::info!("BENCH cr3_switch_pair_tsc={}", cpu::measure_cr3_pair(1000));
        paging::set_gate(&cpu_tables, cmdline::BENCH_VECTOR, entry::bare_iret_address(), 1);
        paging::set_gate(&cpu_tables, cmdline::BENCH_VECTOR + 1, entry::bare_iret_address(), 3);
        log::warn!("bench mode: baseline gates {:#x} (DPL 1) and {:#x} (DPL 3) open", cmdline::BENCH_VECTOR, cmdline::BENCH_VECTOR + 1);
    }
    log::info!("CPU 0: split roots up (hypervisor root {:#x}, guest root {:#x})", cpu_tables.hv_root().maddr(), cpu_tables.guest_root().maddr());

    // dom0: the first module; its string, else the text after " -- ".
    let refuse = |name: &str, why: &dyn core::fmt::Display| -> ! {
        log::error!("dom0 module {}: refused: {}", name, why);
        end("no dom0", ExitCode::BootRefused)
    };
    if boot.nr_modules == 0 {
        refuse("(none)", &dom0::Dom0Error::NoModule);
    }
    let m = boot.modules[0];
    let name = if m.cmdline.is_empty() { "0" } else { m.cmdline };
    let mut dom0_cmdline = strip_path(m.cmdline);
    if dom0_cmdline.is_empty() {
        dom0_cmdline = opts.dom0_cmdline.unwrap_or("");
    }
    // dom0 gets a vCPU per CPU unless told (as Xen's dom0_max_vcpus), vCPU 0 up.
    let want_vcpus = if opts.dom0_max_vcpus == 0 { tables.len() as u32 } else { opts.dom0_max_vcpus };
    let dom0_vcpus = want_vcpus.min(domain::MAX_VCPUS as u32);
    let (dom, vcpu) = match dom0::build(&mut mm, 0, m.bytes(), opts.dom0_mem / 4096, dom0_cmdline, dom0_vcpus) {
        Ok(x) => x,
        Err(e) => refuse(name, &e),
    };
    let mut doms = alloc::vec![(dom, vcpu, hv_core::sched::DEFAULT_WEIGHT, 0u32)];
    for (i, m) in boot.modules[1..boot.nr_modules].iter().enumerate() {
        match dom0::parse_domu(strip_path(m.cmdline)) {
            None => log::warn!("module {} ('{}') is not a domU: ignored", i + 1, m.cmdline),
            Some(Err(w)) => log::error!("domU module {}: bad option '{}': not built", i + 1, w),
            Some(Ok(o)) => {
                let id = doms.len() as u16;
                match dom0::build(&mut mm, id, m.bytes(), o.mem / 4096, o.cmdline, o.vcpus) {
                    Ok((d, v)) => doms.push((d, v, o.weight, o.cap)),
                    Err(e) => log::error!("domU module {}: refused: {}", i + 1, e),
                }
            }
        }
    }
    let mut events = hv_core::evtchn::Events::default();
    let ncpus = tables.len();
    let mut sched = hv_core::sched::Credit::new(ncpus);
    let boot_unix = hv_arch::time::rtc_unix_seconds();
    let mut domains = domain::Domains::new();
    let mut vcpus = alloc::vec::Vec::new();
    for (mut d, v0, weight, cap) in doms {
        events.add_domain(d.id, guest_abi::evtchn::NR_EVTCHN_2L - 1, d.nr_vcpus());
        d.sched_dom = sched.add_domain(weight, cap);
        let mut v0 = Some(v0);
        for n in 0..d.nr_vcpus() {
            let v = v0.take().unwrap_or_else(|| domain::Vcpu::new(n, hv_core::mem::Mfn(0), d.shared.clone()));
            d.vcpus[n as usize].sched_id = sched.add_vcpu(d.sched_dom, u64::MAX);
            events::update_time(&d, n);
            vcpus.push(alloc::boxed::Box::new(v));
        }
        events::set_wallclock(&d, boot_unix);
        if d.nr_vcpus() > 1 {
            log::info!("d{}: {} vCPUs (vCPU 0 up)", d.id, d.nr_vcpus());
        }
        domains.push(d);
    }
    log::info!("d0: entering ring 1 at {:#x} ({} domain(s), {} CPU(s))", vcpus[0].frame.rip, domains.len(), ncpus);
    let my_apic = hv_arch::lapic::id();
    let mut cpu_apics = alloc::vec![my_apic];
    cpu_apics.extend(apic_ids.iter().copied().filter(|&id| id != my_apic).take(ncpus - 1));
    for (k, t) in tables.iter().enumerate() {
        percpu::install(percpu::PerCpu::new(k, *t));
    }
    machine::init(machine::Machine { ft: mm.ft, max_mfn: mm.max_mfn, m2p: mm.m2p.clone(), cpus: tables.clone(), apic_ids: cpu_apics.clone(), nr_domains: domains.len(), cmdline: hv_cmdline });
    let mut guard = global();
    *guard = Some(Global {
        mm,
        cpus: tables,
        apic_ids: cpu_apics,
        others: vcpus,
        domains,
        cmdline: hv_cmdline,
        console_all: hypercall::console::all_domu_bucket(),
        events,
        sched,
    });
    drop(guard);
    // Start the application processors (after the global state exists: they lock it).
    if let Some(boot_cr3) = ap_boot {
        hv_arch::smp::set_ap_main(ap_main);
        let my_apic = hv_arch::lapic::id();
        let others = apic_ids.iter().copied().filter(|&id| id != my_apic);
        for (n, (id, stack)) in others.zip(ap_stacks).enumerate().take(ncpus - 1) {
            let cpu = n as u32 + 1;
            let late = opts.ap_late == cpu as usize;
            let ok = stack.is_some_and(|s| hv_arch::smp::start_ap(id, cpu, boot_cr3.maddr(), s, late));
            if !ok {
                log::error!("CPU {} (APIC id {}) did not start", cpu, id);
            }
        }
        // Each AP counts itself in a moment after it reports starting.
        for _ in 0..1_000_000 {
            if CPUS_ONLINE.load(Ordering::SeqCst) >= ncpus {
                break;
            }
            core::hint::spin_loop();
        }
        log::info!("{} CPU(s) online", CPUS_ONLINE.load(Ordering::SeqCst));
    }
    // Every CPU is up: make the domains runnable.
    if let Some(g) = global().as_mut() {
        let now = events::now();
        for v in g.domains.iter().flat_map(|d| d.vcpus.iter()).filter(|v| v.runnable()) {
            g.sched.wake(v.sched_id, now);
        }
        for (k, &apic) in g.apic_ids.iter().enumerate().skip(1) {
            percpu::poke(k, apic);
        }
    }
    schedule::idle_loop()
}
