//! Bring-up, in the order `hv_main` runs it: options and logging, memory, the CPUs (tables,
//! LAPIC, features, the application processors' boot state), the boot-time domains, and
//! finally starting the application processors.

use crate::{dom0, domain, end, events, mm, panic_exit, strip_path, vcpu};
use core::sync::atomic::{AtomicUsize, Ordering};
use guest_abi::harness::ExitCode;
use hv_arch::boot::BootInfo;
use hv_arch::cpu::{self, Features};
use hv_arch::entry;
use hv_arch::paging::{self, CpuTables, FrameSource};
use hv_core::cmdline::{self, LogLevel, Options};

/// The hypervisor's command line and options; sets the log level and the debug exit, and
/// calibrates the TSC.
pub fn options(boot: &BootInfo) -> (&'static str, Options<'static>) {
    let hv_cmdline = strip_path(boot.cmdline);
    let opts = cmdline::parse(hv_cmdline);
    crate::halt::DEBUG_EXIT.store(opts.debug_exit, Ordering::Relaxed);
    crate::power::set_options(&opts);
    log::set_max_level(match opts.loglvl {
        LogLevel::Error => log::LevelFilter::Error,
        LogLevel::Warn => log::LevelFilter::Warn,
        LogLevel::Info => log::LevelFilter::Info,
        LogLevel::Debug => log::LevelFilter::Debug,
        LogLevel::Trace => log::LevelFilter::Trace,
    });
    let cal = hv_arch::time::calibrate(10, boot.pm_timer.map(|p| (p.port, p.bits32)));
    log::info!("rxen {} booting via {:?} ({})", env!("CARGO_PKG_VERSION"), boot.kind, boot.loader);
    match cal.check {
        Some((by, khz)) if cal.disagrees() => log::warn!("TSC: {} kHz from {}, but {} says {} kHz (more than 1% apart): {} is used", cal.khz, cal.source, by, khz, cal.source),
        Some((by, khz)) => log::info!("TSC: {} kHz from {} ({} agrees: {} kHz)", cal.khz, cal.source, by, khz),
        None => log::info!("TSC: {} kHz from {} (no second source to check it)", cal.khz, cal.source),
    }
    if !cal.invariant {
        log::warn!("TSC: CPUID does not say it is invariant: time may drift with power states");
    }
    log::info!("command line: {}", hv_cmdline);
    if let Some(u) = opts.unknown {
        log::warn!("unknown option '{}' ignored", u);
    }
    (hv_cmdline, opts)
}

/// The MMIO a domain with I/O rights may map: everything that is not RAM but the local and
/// I/O APICs, the MSI window and the HPET (`hv_core::ioperm`, and the firmware's HPET page).
pub fn iomem(boot: &BootInfo, table_end: u64) -> hv_core::ioperm::IoMem {
    use hv_core::mem::Mfn;
    let ram_top = boot.ram.as_slice().last().map_or(0, |r| r.end.div_ceil(4096));
    let mut io = hv_core::ioperm::IoMem::new(Mfn(table_end), Mfn(ram_top));
    let (lapic, ioapics) = match &boot.madt {
        Some(m) => (m.lapic_addr, m.ioapics().iter().map(|a| a.addr).collect::<alloc::vec::Vec<_>>()),
        None => (0xFEE0_0000, alloc::vec![0xFEC0_0000]),
    };
    for a in core::iter::once(lapic).chain(ioapics).chain(boot.hpet) {
        if !io.deny(Mfn::of(a), Mfn::of(a)) {
            log::warn!("too many hypervisor MMIO ranges: no MMIO for dom0");
        }
    }
    io
}

/// Machine memory: the frame allocator, frame table, heap and M2P.
pub fn memory(boot: &BootInfo) -> mm::Mm {
    for r in boot.ram.as_slice() {
        log::debug!("RAM {:#012x}-{:#012x}", r.start, r.end);
    }
    log::info!("memory map: {}; ACPI RSDP: {}", boot.ram_from, boot.rsdp_from);
    match &boot.madt {
        Some(m) => log::info!("ACPI: {} CPU(s), APIC ids {:?}", m.nr_cpus, m.cpus()),
        None => log::warn!("ACPI: no usable MADT; running on the boot CPU only"),
    }
    let image = hv_arch::boot::image_phys_range();
    let mm = match mm::Mm::init(&boot.ram, &boot.reserved, image) {
        Ok(m) => m,
        Err(e) => {
            log::error!("memory setup failed: {}", e);
            panic_exit()
        }
    };
    log::info!(
        "memory: {} MiB RAM, {} MiB free, heap {} KiB, image {:#x}-{:#x}, {} module(s)",
        boot.ram.total() >> 20,
        mm.free_frames() >> 8,
        crate::mm::heap_size() >> 10,
        image.start,
        image.end,
        boot.nr_modules
    );
    mm
}

/// The CPUs as set up on the boot CPU.
pub struct Cpus {
    /// Every CPU's tables (the boot CPU's first) and APIC id (in the same order).
    pub tables: alloc::vec::Vec<CpuTables>,
    pub apic_ids: alloc::vec::Vec<u32>,
    /// The application processors: the firmware's APIC ids, their boot root and stacks.
    firmware_ids: alloc::vec::Vec<u32>,
    ap_boot: Option<hv_core::mem::Mfn>,
    ap_stacks: alloc::vec::Vec<Option<u64>>,
}

/// Builds every CPU's tables (while memory setup is simple), switches the boot CPU to its
/// own, and brings up its LAPIC, entry handlers and features.
pub fn cpus(mm: &mut mm::Mm, boot: &BootInfo, opts: &Options<'_>, feat: &Features) -> Cpus {
    let pcid = paging::enable_pcid(feat);
    log::info!("TLB: {}", if pcid { "PCID tagged CR3 switches" } else { "no PCID: full flush on each root switch" });
    let root = mm.frame().unwrap_or_else(|| panic!("no frame for the root table"));
    let m2p = mm.m2p.clone();
    let shared = paging::build_shared(root, &boot.ram, &m2p, mm).unwrap_or_else(|_| panic!("out of memory building the hypervisor's tables"));
    let cpu_tables = paging::build_cpu(0, root, &shared, mm).unwrap_or_else(|_| panic!("out of memory building CPU 0's tables"));
    let firmware_ids: alloc::vec::Vec<u32> = boot.madt.as_ref().map(|m| m.cpus().to_vec()).unwrap_or_default();
    let want = if opts.cpus == 0 { firmware_ids.len().max(1) } else { opts.cpus.min(firmware_ids.len().max(1)) };
    let mut tables = alloc::vec![cpu_tables];
    for n in 1..want {
        let r = mm.frame().and_then(|r| paging::build_cpu(n as u32, r, &shared, mm).ok());
        match r {
            Some(t) => tables.push(t),
            None => {
                log::error!("out of memory for CPU {}'s tables: using {} CPU(s)", n, n);
                break;
            }
        }
    }
    let ap_boot = if tables.len() > 1 { paging::build_ap_boot_root(root, mm).ok() } else { None };
    let ap_stacks = (1..tables.len()).map(|_| mm.contiguous(4).map(|m| hv_arch::layout::phys_to_virt(m.maddr()) + 4 * 4096)).collect();
    paging::activate(&cpu_tables);
    cpu::mask_legacy_pic();
    if paging::map_lapic(root, mm).is_err() {
        panic!("out of memory mapping the local APIC");
    }
    screen(root, mm, boot);
    hv_arch::lapic::init();
    hv_arch::stop::mark_online(0, hv_arch::lapic::id());
    crate::irq::init(root, mm, boot.madt.as_ref());
    log::info!("LAPIC id {} timer: {}", hv_arch::lapic::id(), if hv_arch::lapic::tsc_deadline_mode() { "TSC deadline" } else { "one-shot" });
    entry::set_handlers(entry::Handlers { guest: crate::entry::from_guest, hypervisor: crate::entry::hypervisor_trap, idle: crate::entry::idle_loop });
    match opts.debug_crash {
        Some("panic") => panic!("debug-crash=panic: a deliberate hypervisor panic"),
        Some(_) => cpu::fault_on_purpose(),
        None => {}
    }
    cpu::enable_features(feat);
    let xcr0 = cpu::enable_xsave(feat);
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
    let my_apic = hv_arch::lapic::id();
    let mut apic_ids = alloc::vec![my_apic];
    apic_ids.extend(firmware_ids.iter().copied().filter(|&id| id != my_apic).take(tables.len() - 1));
    Cpus { tables, apic_ids, firmware_ids, ap_boot, ap_stacks }
}

/// The boot-time domains (registered: `domain::shared_of`): dom0 from the first module,
/// domUs from the others (each domain's event channels come with it: `DomShared::ports`);
/// returns every vCPU with its scheduling state, for the run queues. Refusing dom0 ends the
/// run.
pub fn domains(
    mm: &mut mm::Mm,
    boot: &BootInfo,
    opts: &Options<'_>,
    ncpus: usize,
) -> alloc::vec::Vec<(hv_core::sched::VcpuSched, vcpu::Slot)> {
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
    let want_vcpus = if opts.dom0_max_vcpus == 0 { ncpus as u32 } else { opts.dom0_max_vcpus };
    let dom0_vcpus = want_vcpus.min(domain::MAX_VCPUS as u32);
    // dom0's boot module (its initrd, as Xen's): the first further module that is not a
    // domU's.
    let initrd = boot.modules[1..boot.nr_modules].iter().position(|x| dom0::parse_domu(strip_path(x.cmdline)).is_none()).map(|i| i + 1);
    let module = initrd.map_or(&[][..], |i| boot.modules[i].bytes());
    if let Some(i) = initrd {
        log::info!("dom0: module {} ('{}', {} KiB) is its boot module", i, boot.modules[i].cmdline, module.len() / 1024);
    }
    let (dom, vcpu) = match dom0::build(mm, 0, m.bytes(), opts.dom0_mem / 4096, dom0_cmdline, dom0_vcpus, module) {
        Ok(x) => x,
        Err(e) => refuse(name, &e),
    };
    // dom0_vcpus_pin: vCPU n on CPU n alone (`None`: any CPU); a domU's `cpus=` list.
    let mut doms = alloc::vec![(dom, vcpu, hv_core::sched::DEFAULT_WEIGHT, 0u32, None::<u64>)];
    for (i, m) in boot.modules[1..boot.nr_modules].iter().enumerate() {
        match dom0::parse_domu(strip_path(m.cmdline)) {
            None if Some(i + 1) == initrd => {}
            None => log::warn!("module {} ('{}') is not a domU: ignored", i + 1, m.cmdline),
            Some(Err(w)) => log::error!("domU module {}: bad option '{}': not built", i + 1, w),
            Some(Ok(o)) => {
                let id = doms.len() as u16;
                match dom0::build(mm, id, m.bytes(), o.mem / 4096, o.cmdline, o.vcpus, &[]) {
                    Ok((d, v)) => doms.push((d, v, o.weight, o.cap, Some(o.cpus))),
                    Err(e) => log::error!("domU module {}: refused: {}", i + 1, e),
                }
            }
        }
    }
    let boot_unix = hv_arch::time::rtc_unix_seconds();
    let mut vcpus = alloc::vec::Vec::new();
    for (d, v0, weight, cap, cpus) in doms {
        d.sched.set_params(weight, cap);
        let mut v0 = Some(v0);
        for n in 0..d.nr_vcpus() {
            let v = v0.take().unwrap_or_else(|| vcpu::Vcpu::new(n, hv_core::mem::Mfn(0), d.clone()));
            let affinity = match cpus {
                Some(mask) => mask,
                None if opts.dom0_vcpus_pin => 1u64.checked_shl(n).unwrap_or(0),
                None => u64::MAX,
            };
            let s = hv_core::sched::VcpuSched::new(vcpu::sched_id(d.id, n), d.sched.clone(), affinity, ncpus);
            if let Some(o) = d.owner.get(n as usize) {
                o.store(s.first_cpu(), core::sync::atomic::Ordering::Relaxed);
            }
            events::update_time(&d, n);
            let state = vcpu::VcpuState::new(n);
            vcpus.push((s, vcpu::Slot { shared: d.clone(), vcpu: n, state, ctx: Some(alloc::boxed::Box::new(v)) }));
        }
        events::set_wallclock(&d, boot_unix);
        if d.nr_vcpus() > 1 {
            log::info!("d{}: {} vCPUs (vCPU 0 up)", d.id, d.nr_vcpus());
        }
        domain::register(d);
    }
    vcpus
}

/// Starts the application processors (each runs `ap_main`) and waits a moment for each to
/// count itself in `online`.
pub fn start_aps(cpus: &Cpus, opts: &Options<'_>, ap_main: fn(u32) -> !, online: &AtomicUsize) {
    let Some(boot_cr3) = cpus.ap_boot else { return };
    let ncpus = cpus.tables.len();
    hv_arch::smp::set_ap_main(ap_main);
    let my_apic = hv_arch::lapic::id();
    let others = cpus.firmware_ids.iter().copied().filter(|&id| id != my_apic);
    for (n, (id, stack)) in others.zip(cpus.ap_stacks.iter().copied()).enumerate().take(ncpus - 1) {
        let cpu = n as u32 + 1;
        let late = opts.ap_late == cpu as usize;
        let ok = stack.is_some_and(|s| hv_arch::smp::start_ap(id, cpu, boot_cr3.maddr(), s, late));
        if !ok {
            log::error!("CPU {} (APIC id {}) did not start", cpu, id);
        }
    }
    for _ in 0..1_000_000 {
        if online.load(Ordering::SeqCst) >= ncpus {
            break;
        }
        core::hint::spin_loop();
    }
    log::info!("{} CPU(s) online", online.load(Ordering::SeqCst));
}

/// Starts the screen console (mapped into the shared slots of `root`) and the keyboard, and
/// says what they are.
fn screen(root: hv_arch::physmem::PrivateFrame, mm: &mut mm::Mm, boot: &BootInfo) {
    use hv_arch::screen::Mode;
    match boot.screen {
        Some(mode) => {
            let (pa, len) = mode.phys();
            let mut backlog = alloc::vec![0u8; hv_arch::console::RING_SIZE];
            let (n, _) = hv_arch::console::read_ring(None, &mut backlog);
            // Screen memory inside RAM the firmware calls usable would be drawn into frames
            // the allocator hands out: refused.
            if boot.ram.as_slice().iter().any(|r| r.start < pa.saturating_add(len) && pa < r.end) {
                log::warn!("screen: the framebuffer at {:#x} lies in usable RAM: not used", pa);
            } else if !hv_arch::screen::start(mode, &backlog[..n], root, mm) {
                log::warn!("screen: {:?} not usable (unaligned, larger than {} MiB, or out of memory mapping it): serial console only", mode, hv_arch::layout::SCREEN_MAX >> 20);
            } else {
                let (cols, rows) = mode.cells();
                match mode {
                    Mode::Text { .. } => log::info!("screen: VGA text, {}x{} at {:#x}", cols, rows, pa),
                    Mode::Rgb { width, height, bpp, .. } => log::info!("screen: framebuffer {}x{}x{} at {:#x}, {}x{} characters", width, height, bpp, pa, cols, rows),
                }
            }
        }
        None => match boot.screen_indexed {
            Some((w, h, bpp)) => log::warn!("screen: indexed-colour framebuffer {}x{}x{} not supported: serial console only", w, h, bpp),
            None => log::info!("screen: none (the bootloader set no video mode): serial console only"),
        },
    }
    if hv_arch::kbd::init() {
        log::info!("keyboard: i8042 (PS/2), US layout; Ctrl-A three times switches input to the hypervisor");
    } else {
        log::info!("keyboard: no i8042");
    }
}
