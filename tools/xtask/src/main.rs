//! `cargo xtask <command>`: the one orchestration program.
//!
//! - `build`: every bare-metal image, and the GRUB ISO at `target/hypervisor.iso`.
//! - `run [--pvh] [--kvm] [--smp N] [--vnc] [-- <hypervisor options>]`: boot the ISO (or
//!   PVH) in QEMU (2 CPUs by default) with the serial console on the terminal (`--vnc`: and
//!   the screen console and keyboard on VNC display 0).
//! - `gdb [run options]`: as `run`, stopped at the first instruction with QEMU's gdb stub,
//!   and gdb attached with the hypervisor's and dom0's symbols (serial console on a pty).
//! - `test [--only NAME]`: clippy on every crate, the layering check (`layers`: no import
//!   circle in `hypervisor/src`), host tests, then every QEMU scenario.
//! - `clippy`: clippy with warnings denied on every crate (host and bare metal).
//! - `xenstored --socket PATH [--domu-socket-template 'DIR/domu{domid}.sock']`: the XenStore
//!   core behind unix sockets on the host (for Xen's client tools; runs until killed).
//! - `bench [--only hotpaths]`: boot-time, hypercall and hot-path benchmarks, printed and
//!   written to `target/bench.json`.

mod bench;
mod images;
mod layers;
mod qemu;
mod scenarios;

use std::process::ExitCode;

fn usage() -> ExitCode {
    eprintln!("usage: cargo xtask <build|run|gdb|test|clippy|bench|xenstored> [options]");
    eprintln!("  xenstored --socket PATH [--domu-socket-template DIR/domu{{domid}}.sock]");
    eprintln!("  run [--pvh] [--kvm] [--smp N] [--vnc] [-- hypervisor options]");
    eprintln!("  test [--only NAME] [--no-host]");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = args.first() else { return usage() };
    let rest = &args[1..];
    let r = match cmd.as_str() {
        "build" => images::build_all().and_then(|i| images::iso(&i, &images::default_grub_cfg(), "hypervisor")).map(|p| {
            println!("ISO: {}", p.display());
        }),
        "run" => run(rest),
        "gdb" => gdb(rest),
        "test" => scenarios::run_all(rest),
        "clippy" => scenarios::clippy(),
        "bench" => bench::run(rest),
        "xenstored" => xenstored(rest),
        _ => return usage(),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[String]) -> Result<(), String> {
    let (_, cfg) = run_config(args)?;
    qemu::interactive(&cfg)
}

/// `gdb [run options]`: QEMU stopped at its first instruction with its gdb stub, and gdb
/// attached with the hypervisor's and dom0's symbols; the serial console on a
/// pseudo-terminal QEMU names (`screen /dev/pts/N`).
fn gdb(args: &[String]) -> Result<(), String> {
    let (imgs, mut cfg) = run_config(args)?;
    cfg.interactive = false;
    let port = qemu::free_port()?;
    cfg.gdb_port = Some(port);
    println!("xtask: QEMU waits for gdb on 127.0.0.1:{port}; its serial console is the pty it names below");
    println!("xtask: e.g. `hbreak hv_main`, `continue`, `bt`; `hbreak` works before the hypervisor's own page tables too");
    qemu::with_gdb(&cfg, &imgs.hypervisor, &imgs.dom0, None).map(|_| ())
}

/// The machine `run` and `gdb` boot.
fn run_config(args: &[String]) -> Result<(images::Images, qemu::Config), String> {
    let imgs = images::build_all()?;
    let pvh = args.iter().any(|a| a == "--pvh");
    let kvm = args.iter().any(|a| a == "--kvm");
    let extra: Vec<&str> = match args.iter().position(|a| a == "--") {
        Some(i) => args[i + 1..].iter().map(String::as_str).collect(),
        None => vec![],
    };
    // debug-exit: dom0's `poweroff` also ends QEMU (it has no effect on real hardware).
    let hv_opts = format!("debug-exit {}", extra.join(" "));
    let mut cfg = qemu::Config::new(if kvm { qemu::Accel::Kvm } else { qemu::Accel::Tcg });
    cfg.interactive = true;
    // E.g. `--cpu max,-smap` for Mini-OS under QEMU before 9.1, whose TCG faults a
    // ring-3 `iretq`'s stack reads on user pages when SMAP is on (README).
    cfg.cpu = args.iter().position(|a| a == "--cpu").and_then(|i| args.get(i + 1)).cloned();
    // `--vnc`: a VGA adapter whose screen (the hypervisor's screen console) and keyboard
    // are reachable with a VNC viewer at 127.0.0.1:5900.
    if args.iter().any(|a| a == "--vnc") {
        cfg.vga = Some("std");
        cfg.display = Some("vnc=127.0.0.1:0".into());
        println!("xtask: the screen and keyboard are at vnc://127.0.0.1:5900");
    }
    cfg.smp = args.iter().position(|a| a == "--smp").and_then(|i| args.get(i + 1)).and_then(|n| n.parse().ok()).unwrap_or(2);
    if pvh {
        cfg.boot = qemu::Boot::Pvh { kernel: imgs.hypervisor.clone(), module: imgs.dom0.clone(), cmdline: format!("{hv_opts} -- interactive") };
    } else {
        let grub = images::grub_cfg(&hv_opts, "interactive");
        cfg.boot = qemu::Boot::Iso(images::iso(&imgs, &grub, "hypervisor")?);
    }
    // A raw disk image for dom0's virtio-blk driver, made on the first run and kept.
    let disk = images::target().join("disk.img");
    if !disk.exists() {
        let f = std::fs::File::create(&disk).map_err(|e| format!("{}: {e}", disk.display()))?;
        f.set_len(DISK_BYTES).map_err(|e| format!("{}: {e}", disk.display()))?;
        println!("xtask: created {} ({} MiB, sparse)", disk.display(), DISK_BYTES >> 20);
    }
    cfg.disk = Some(disk);
    // A network for dom0's switch (QEMU's user network), with the host's port 8080 (or a
    // free one) forwarded to port 80 of the first domU that takes a DHCP lease
    // (`xl create /etc/xen/web.cfg`).
    cfg.net = true;
    let port = if std::net::TcpListener::bind(("127.0.0.1", 8080)).is_ok() { 8080 } else { qemu::free_port()? };
    cfg.forward = Some(port);
    println!("xtask: the guests' network is QEMU's user network; http://127.0.0.1:{port}/ reaches port 80 of the first domU on it");
    Ok((imgs, cfg))
}

/// Size of the disk image `cargo xtask run` attaches.
const DISK_BYTES: u64 = 256 << 20;

/// `xenstored --socket PATH [--domu-socket-template T]`: serves until killed.
fn xenstored(args: &[String]) -> Result<(), String> {
    let opt = |name: &str| args.windows(2).find(|w| w[0] == name).map(|w| w[1].clone());
    let socket = opt("--socket").ok_or("xenstored: --socket PATH is required")?;
    let d = xenstored::Daemon::start(std::path::Path::new(&socket), opt("--domu-socket-template")).map_err(|e| format!("xenstored: {socket}: {e}"))?;
    println!("xenstored: listening on {socket}");
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
        let _ = &d;
    }
}
