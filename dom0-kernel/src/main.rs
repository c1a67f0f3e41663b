//! dom0: the privileged Rust PV kernel, running in ring 1.
//!
//! For now it proves the platform: it parses `start_info`, prints a banner with its command
//! line, memory, flags and privilege level, installs its trap table (printing any fault it
//! receives), then either shuts down (`shutdown` on its command line, for tests) or offers a
//! tiny console prompt.
#![no_std]
#![no_main]
#![deny(unsafe_code)]

extern crate alloc;

mod build;
mod bundle;
mod memory;
mod xl;

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

/// The console prompt: sleeps in SCHEDOP_block until VIRQ_CONSOLE says input arrived.
fn prompt(shared: &pv_runtime::mm::SharedInfoMap) -> ! {
    use pv_runtime::events;
    let sleeping = events::init(shared) == 0
        && events::bind_virq(guest_abi::evtchn::VIRQ_CONSOLE, 0).is_ok();
    // Domains ending (their xl on_* actions, `xl::on_exits`) wake the shell too.
    let _ = events::bind_virq(guest_abi::evtchn::VIRQ_DOM_EXC, 0);
    if sleeping {
        events::enable();
    }
    println!("dom0: commands: help, info, ls, cat, xl <verb> ..., poweroff, reboot, crash");
    let mut line = [0u8; 128];
    let mut n = 0;
    print!("dom0> ");
    loop {
        let mut b = [0u8; 16];
        let got = hypercall::console_read(&mut b);
        if got <= 0 {
            // Idle: domains that ended get their actions; what that printed comes on lines
            // of its own, and the prompt (with what was typed so far) again after it.
            if xl::on_exits() {
                print!("dom0> {}", core::str::from_utf8(&line[..n]).unwrap_or(""));
            }
            if sleeping {
                events::block();
            } else {
                hypercall::yield_now();
            }
            continue;
        }
        for &c in &b[..got as usize] {
            match c {
                b'\r' | b'\n' => {
                    println!();
                    run(core::str::from_utf8(&line[..n]).unwrap_or("").trim());
                    n = 0;
                    print!("dom0> ");
                }
                0x7F | 0x08 if n > 0 => {
                    n -= 1;
                    print!("\x08 \x08");
                }
                c if (0x20..0x7F).contains(&c) && n < line.len() => {
                    line[n] = c;
                    n += 1;
                    hypercall::console_write(&[c]);
                }
                _ => {}
            }
        }
    }
}

/// The boot bundle's files (set once at start).
static FILES: spin::Once<alloc::vec::Vec<(alloc::string::String, &'static [u8])>> = spin::Once::new();

fn files() -> &'static [(alloc::string::String, &'static [u8])] {
    FILES.get().map_or(&[], |v| v.as_slice())
}

/// dom0's start_info (set once at start).
static START_INFO: spin::Once<&'static StartInfo> = spin::Once::new();

fn start_info() -> Option<&'static StartInfo> {
    START_INFO.get().copied()
}

fn run(cmd: &str) {
    let words: alloc::vec::Vec<&str> = cmd.split_ascii_whitespace().collect();
    match words.as_slice() {
        ["xl", rest @ ..] => return xl::run(rest),
        ["ls", rest @ ..] => return bundle::ls(files(), rest.first().copied().unwrap_or("")),
        ["cat", path] => return bundle::cat(files(), path),
        _ => {}
    }
    match cmd {
        "" => {}
        "help" => println!("help, info, ls [dir], cat <file>, xl <verb> ... (xl help), poweroff, reboot, crash"),
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
    let Ok(shared) = memory::bring_up(si) else {
        println!("dom0: memory bring-up failed");
        hypercall::shutdown(ShutdownReason::Crash)
    };
    let files = bundle::files(pv_runtime::boot_module(si));
    if si.mod_len > 0 {
        println!("dom0: boot bundle: {} KiB, {} file(s)", si.mod_len / 1024, files.len());
    }
    FILES.call_once(|| files);
    START_INFO.call_once(|| si);
    let mut words = cmdline.split_ascii_whitespace();
    if words.by_ref().any(|w| w == "bench-create") {
        xl::bench_create(words.next().and_then(|n| n.parse().ok()).unwrap_or(10).max(1));
        hypercall::shutdown(ShutdownReason::Poweroff)
    }
    if cmdline.split_ascii_whitespace().any(|w| w == "shutdown") {
        println!("dom0: shutting down as asked");
        hypercall::shutdown(ShutdownReason::Poweroff)
    }
    prompt(&shared)
}
