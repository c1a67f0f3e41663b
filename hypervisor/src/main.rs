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
mod vcpu;
mod events;
mod grants;
mod hypercall;
mod irq;
mod locks;
mod machine;
mod mm;
mod percpu;
mod ports;
mod schedule;
mod setup;
mod state;
mod teardown;
mod guest;
mod guest_console;
mod serial_input;
mod halt;
mod power;
mod debug_keys;
mod backtrace;
pub use halt::{end, panic_exit};
pub use state::Hv;
mod shootdown;
mod line;
mod bounce;
mod pv64;
mod entry;
mod timers;

use core::sync::atomic::Ordering;
use hv_arch::boot::{BootInfo, BootInfoError};
use hv_arch::cpu::{self, Features};
use hv_arch::paging;

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
    hv_arch::stop::mark_online(cpu as usize, hv_arch::lapic::id());
    CPUS_ONLINE.fetch_add(1, Ordering::SeqCst);
    entry::idle_loop()
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    hv_arch::console::emergency_write_fmt(format_args!("(XEN) PANIC: {}\n", info));
    backtrace::here();
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
    let (hv_cmdline, opts) = setup::options(&boot);
    let feat = Features::detect();
    log::info!("TSC {} kHz; CPU features {:?}", hv_arch::time::tsc_khz(), feat);
    let mut mm = setup::memory(&boot);
    power::init(&boot);
    let cpus = setup::cpus(&mut mm, &boot, &opts, &feat);
    let vcpus = setup::domains(&mut mm, &boot, &opts, cpus.tables.len());
    let ncpus = cpus.tables.len();
    let nr_domains = vcpus.iter().map(|(_, s)| s.shared.id as usize + 1).max().unwrap_or(0);
    if let Some((_, s)) = vcpus.first() {
        let ring = if s.shared.pv64 { 3 } else { 1 };
        log::info!("d0: entering ring {} at {:#x} ({} domain(s), {} CPU(s))", ring, s.ctx.as_ref().map_or(0, |c| c.frame.rip), nr_domains, ncpus);
    }
    for (k, t) in cpus.tables.iter().enumerate() {
        percpu::install(percpu::PerCpu::new(k, *t));
        state::init_queue(k);
    }
    machine::init(machine::Machine {
        ft: mm.ft,
        max_mfn: mm.max_mfn,
        ram_pages: mm.ram_pages,
        m2p: mm.m2p.clone(),
        cpus: cpus.tables.clone(),
        apic_ids: cpus.apic_ids.clone(),
        cmdline: hv_cmdline,
        audit: opts.audit,
        iomem: setup::iomem(&boot, mm.max_mfn),
        fsgsbase: feat.fsgsbase,
    });
    mm::install(mm);
    // Each vCPU starts in the queue of the first CPU of its affinity.
    let mut ready = alloc::vec::Vec::new();
    for (s, slot) in vcpus {
        if slot.state.runnable() {
            ready.push((slot.shared.clone(), slot.vcpu));
        }
        state::lock(s.first_cpu()).adopt(s, slot);
    }
    // The application processors start after the queues exist: they lock them.
    setup::start_aps(&cpus, &opts, ap_main, &CPUS_ONLINE);
    // Every CPU is up: make the domains runnable.
    if let Some(pc) = percpu::this().as_mut() {
        for (d, v) in ready {
            schedule::wake_shared(pc, &d, v);
        }
    }
    for (k, &apic) in machine::get().apic_ids.iter().enumerate().skip(1) {
        percpu::poke(k, apic);
    }
    entry::idle_loop()
}
