//! dom0: the privileged Rust PV kernel, running in ring 1.
//!
//! It parses `start_info`, prints a banner with its command line, memory, flags and
//! privilege level, installs its trap table (printing any fault it receives), brings up its
//! memory, then either shuts down (`shutdown` on its command line, for tests) or runs its
//! services as tasks of a small executor woken by event channels ([`executor`]): the shell
//! on the serial console (with `xl`), the XenStore daemon ([`xs`]) and the console backend
//! ([`consoled`]) for the domains it builds ([`build`]). Configs in the boot bundle's
//! `etc/xen/auto/` are started at boot, as `xendomains` does.
#![no_std]
#![no_main]
#![deny(unsafe_code)]

extern crate alloc;

mod backend;
mod build;
mod ip;
mod blkback;
mod bundle;
mod consoled;
mod disk;
mod executor;
mod memory;
mod net;
mod netback;
mod rings;
mod script;
mod xl;
mod xs;

use guest_abi::sched::ShutdownReason;
use guest_abi::start_info::{SIF_INITDOMAIN, SIF_PRIVILEGED};
use pv_runtime::traps::Frame;
use pv_runtime::{hypercall, print, println, StartInfo};

fn report_fault(f: &mut Frame) {
    println!(
        "dom0: exception {} error {:#x} at {:#x}; skipping the faulting instruction is not possible, stopping",
        f.vector, f.error_code, f.rip
    );
    hypercall::shutdown(ShutdownReason::Crash)
}

fn flags_text(flags: u32) -> &'static str {
    match (flags & SIF_PRIVILEGED != 0, flags & SIF_INITDOMAIN != 0) {
        (true, true) => "PRIVILEGED|INITDOMAIN",
        (true, false) => "PRIVILEGED",
        (false, true) => "INITDOMAIN",
        (false, false) => "none",
    }
}

fn version() -> (i64, [u8; 16]) {
    (hypercall::xen_version_number(), hypercall::xen_extraversion())
}

/// The shell's line being typed.
struct Line {
    b: [u8; 128],
    n: usize,
}

static LINE: spin::Mutex<Line> = spin::Mutex::new(Line { b: [0; 128], n: 0 });

/// `Ctrl-]`: leaves `xl console`, as xl's escape character.
const ESCAPE: u8 = 0x1d;

/// The prompt, with what was typed so far (unless `xl console` holds the terminal).
fn prompt() {
    if consoled::attached().is_none() {
        let l = LINE.lock();
        print!("dom0> {}", core::str::from_utf8(&l.b[..l.n]).unwrap_or(""));
    }
}

/// Serial input: typed into the shell, or into the domain `xl console` is attached to
/// until `Ctrl-]`.
fn shell_input() -> bool {
    let mut b = [0u8; 64];
    loop {
        let got = hypercall::console_read(&mut b);
        if got <= 0 {
            return false;
        }
        let mut to_guest = alloc::vec::Vec::new();
        for &c in &b[..got as usize] {
            if consoled::attached().is_some() {
                if c == ESCAPE {
                    consoled::input(&to_guest);
                    to_guest.clear();
                    consoled::detach();
                    println!();
                    prompt();
                } else {
                    to_guest.push(c);
                }
                continue;
            }
            let mut l = LINE.lock();
            match c {
                b'\r' | b'\n' => {
                    let cmd = alloc::string::String::from_utf8_lossy(&l.b[..l.n]).into_owned();
                    l.n = 0;
                    drop(l);
                    println!();
                    run(cmd.trim());
                    prompt();
                }
                0x7F | 0x08 if l.n > 0 => {
                    l.n -= 1;
                    print!("\x08 \x08");
                }
                c if (0x20..0x7F).contains(&c) && l.n < l.b.len() => {
                    let n = l.n;
                    l.b[n] = c;
                    l.n += 1;
                    hypercall::console_write(&[c]);
                }
                _ => {}
            }
        }
        consoled::input(&to_guest);
    }
}

/// dom0's services until it powers off: tasks woken by their event channels.
fn serve() -> ! {
    use executor::Task;
    use pv_runtime::events;
    executor::init();
    match events::bind_virq(guest_abi::evtchn::VIRQ_CONSOLE, 0) {
        Ok(p) if executor::register(p, Task::Shell) => {}
        Ok(p) => println!("dom0: VIRQ_CONSOLE came on port {}, past what the executor tracks: no shell input", p),
        Err(e) => println!("dom0: binding VIRQ_CONSOLE failed ({}): no shell input", e),
    }
    // Domains ending (their xl on_* actions, `xl::on_exits`).
    if !events::bind_virq(guest_abi::evtchn::VIRQ_DOM_EXC, 0).is_ok_and(|p| executor::register(p, Task::DomainExit)) {
        println!("dom0: VIRQ_DOM_EXC not bound: domains that end get no on_* action");
    }
    if let Err(e) = xs::watch_release() {
        println!("dom0: watching @releaseDomain failed: {}", e);
    }
    xs::take_events(xs::RELEASE_TOKEN);
    events::enable();
    if bench_xs() {
        // `bench-xs`: the XenStore benchmark's domU, its console shown; dom0 powers off
        // when it is gone.
        if let Ok(p) = xl::physinfo_khz() {
            println!("BENCH tsc_khz={}", p);
        }
        xl::run(&["create", "/etc/xen/xsbench.cfg", "-c"]);
    }
    autostart();
    if let Some(f) = start_info().and_then(|si| core::str::from_utf8(si.cmdline_bytes()).ok()).and_then(|c| c.split_ascii_whitespace().find_map(|w| w.strip_prefix("run="))) {
        match files().iter().find(|(n, _)| n.as_str() == f.trim_start_matches('/')) {
            Some((_, text)) => script::start(core::str::from_utf8(text).unwrap_or("")),
            None => println!("dom0: run={}: no such file in the boot bundle", f),
        }
    }
    println!("dom0: commands: help, info, ls, cat, xl <verb> ..., xenstore-ls/-read/-write/-rm, poweroff, reboot, crash");
    prompt();
    // Input typed before the port was bound.
    shell_input();
    executor::run(|t| match t {
        Task::Shell => shell_input(),
        Task::DomainExit => {
            // The daemon fires @releaseDomain; the toolstack's watch on it runs the
            // actions. What they printed comes on lines of its own, the prompt after.
            if xs::domain_exited() && xl::on_exits() {
                prompt();
            }
            script::resume();
            if bench_xs() && !xl::any_created() {
                hypercall::shutdown(ShutdownReason::Poweroff)
            }
            false
        }
        Task::Store(d) => {
            let more = xs::on_event(d);
            // Frontends change their XenStore state through their rings.
            blkback::on_watches();
            netback::on_watches();
            script::resume();
            more
        }
        Task::Blk(d, dev) => blkback::on_event(d, dev),
        Task::Vif(d, dev) => {
            let more = netback::on_event(d, dev);
            ip::poll();
            more
        }
        Task::Timer => {
            ip::poll();
            false
        }
        Task::Console(d) => consoled::on_event(d),
        Task::Disk => disk::on_event(),
        Task::Net => {
            net::on_event();
            ip::poll();
            false
        }
    })
}

/// `bench-xs` on the command line (`cargo xtask bench --only xenstore`).
fn bench_xs() -> bool {
    start_info().is_some_and(|si| core::str::from_utf8(si.cmdline_bytes()).unwrap_or("").split_ascii_whitespace().any(|w| w == "bench-xs"))
}

/// The configs in `/etc/xen/auto/` (or the directory `xendomains=<dir>` on dom0's command
/// line names, as `XENDOMAINS_AUTO`) created at boot, in name order, as `xendomains` does.
fn autostart() {
    let cmdline = start_info().map(|si| core::str::from_utf8(si.cmdline_bytes()).unwrap_or("")).unwrap_or("");
    let dir = cmdline.split_ascii_whitespace().find_map(|w| w.strip_prefix("xendomains=")).unwrap_or("/etc/xen/auto");
    let dir = alloc::format!("{}/", dir.trim_start_matches('/').trim_end_matches('/'));
    let auto: alloc::vec::Vec<alloc::string::String> = files()
        .iter()
        .filter(|(n, _)| n.strip_prefix(dir.as_str()).is_some_and(|rest| !rest.contains('/') && rest.ends_with(".cfg")))
        .map(|(n, _)| alloc::format!("/{}", n))
        .collect();
    for cfg in auto {
        xl::run(&["create", &cfg]);
    }
}

/// The boot bundle's files (set once at start).
static FILES: spin::Once<alloc::vec::Vec<(alloc::string::String, &'static [u8])>> = spin::Once::new();

fn files() -> &'static [(alloc::string::String, &'static [u8])] {
    FILES.get().map_or(&[], |v| v.as_slice())
}

/// The words of dom0's command line.
pub(crate) fn cmdline_words() -> impl Iterator<Item = &'static str> {
    start_info().and_then(|si| core::str::from_utf8(si.cmdline_bytes()).ok()).unwrap_or("").split_ascii_whitespace()
}

/// The value of `key=` on dom0's command line.
pub(crate) fn cmdline_value(key: &str) -> Option<&'static str> {
    let si = start_info()?;
    let c = core::str::from_utf8(si.cmdline_bytes()).ok()?;
    c.split_ascii_whitespace().find_map(|w| w.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
}

/// dom0's start_info (set once at start).
static START_INFO: spin::Once<&'static StartInfo> = spin::Once::new();

fn start_info() -> Option<&'static StartInfo> {
    START_INFO.get().copied()
}

pub(crate) fn run(cmd: &str) {
    let owned = toolstack::xl::words(cmd);
    let words: alloc::vec::Vec<&str> = owned.iter().map(|w| w.as_str()).collect();
    match words.as_slice() {
        ["xl", rest @ ..] => return xl::run(rest),
        [tool, rest @ ..] if tool.starts_with("xenstore-") => return xl::xenstore(&tool["xenstore-".len()..], rest),
        ["ls", rest @ ..] => return bundle::ls(files(), rest.first().copied().unwrap_or("")),
        ["cat", path] => return bundle::cat(files(), path),
        _ => {}
    }
    match cmd {
        "" => {}
        "help" => println!("help, info, ls [dir], cat <file>, xl <verb> ... (xl help), xenstore-ls [path], xenstore-read <path>, xenstore-write <path> <value>, xenstore-rm <path>, poweroff, reboot, crash"),
        "info" => {
            let (v, extra) = version();
            let e = core::str::from_utf8(&extra).unwrap_or("").trim_end_matches('\0');
            println!("hypervisor {}.{}{}, dom0 at CPL {}", v >> 16, v & 0xFFFF, e, pv_runtime::cpl());
        }
        "poweroff" => hypercall::shutdown(ShutdownReason::Poweroff),
        "reboot" => hypercall::shutdown(ShutdownReason::Reboot),
        "crash" => hypercall::shutdown(ShutdownReason::Crash),
        other => println!("unknown command '{}'", other),
    }
}

#[no_mangle]
#[allow(unsafe_code)] // the symbol the runtime's entry calls
fn guest_main(si: &'static StartInfo) -> ! {
    // The heap behind `alloc`, before anything allocates.
    pv_heap::init();
    pv_runtime::traps::on_unexpected(report_fault);
    let traps = pv_runtime::traps::install();
    let cmdline = core::str::from_utf8(si.cmdline_bytes()).unwrap_or("<not UTF-8>");
    let (v, extra) = version();
    let extra = core::str::from_utf8(&extra).unwrap_or("").trim_end_matches('\0');
    println!("dom0: rxen dom0 kernel {} on hypervisor {}.{}{}", env!("CARGO_PKG_VERSION"), v >> 16, v & 0xFFFF, extra);
    println!("dom0: command line '{}'", cmdline);
    println!(
        "dom0: {} pages ({} MiB), flags {}, running at CPL {}, trap table {}",
        si.nr_pages,
        si.nr_pages >> 8,
        flags_text(si.flags),
        pv_runtime::cpl(),
        if traps == 0 { "installed" } else { "REFUSED" }
    );
    println!(
        "dom0: page tables at {:#x} ({} frames), P2M at {:#x}, shared_info at machine {:#x}",
        si.pt_base, si.nr_pt_frames, si.mfn_list, si.shared_info
    );
    let Ok((shared, mut mem)) = memory::bring_up(si) else {
        println!("dom0: memory bring-up failed");
        hypercall::shutdown(ShutdownReason::Crash)
    };
    let files = bundle::files(pv_runtime::boot_module(si));
    if si.mod_len > 0 {
        println!("dom0: boot bundle: {} KiB, {} file(s)", si.mod_len / 1024, files.len());
    }
    // Events (and pvclock time) for everything below; the upcall stays masked until the
    // executor runs.
    if pv_runtime::events::init(&shared) != 0 {
        println!("dom0: the event upcall was refused");
        hypercall::shutdown(ShutdownReason::Crash)
    }
    FILES.call_once(|| files);
    START_INFO.call_once(|| si);
    disk::init(si, &mut mem);
    net::init(si, &mut mem);
    rings::init(si);
    blkback::init(si);
    netback::init(si);
    if let Some(mac) = net::mac() {
        ip::init(mac);
    }
    xs::init();
    let mut words = cmdline.split_ascii_whitespace();
    if words.by_ref().any(|w| w == "bench-create") {
        xl::bench_create(words.next().and_then(|n| n.parse().ok()).unwrap_or(10).max(1));
        hypercall::shutdown(ShutdownReason::Poweroff)
    }
    if cmdline.split_ascii_whitespace().any(|w| w == "net-test") {
        net::self_test();
    }
    if cmdline.split_ascii_whitespace().any(|w| w == "bench-disk") {
        // dom0's own pass; a `run=` script then does the domU's.
        disk::bench();
    }
    if let Some(w) = cmdline.split_ascii_whitespace().find_map(|w| w.strip_prefix("disk-test=")) {
        disk::self_test(w);
    }
    if cmdline.split_ascii_whitespace().any(|w| w == "shutdown") {
        println!("dom0: shutting down as asked");
        hypercall::shutdown(ShutdownReason::Poweroff)
    }
    serve()
}
