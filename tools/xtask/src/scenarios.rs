//! The QEMU scenarios: one small PV guest (or image) per scenario, booted as dom0, each with
//! an expected verdict and exit code.

use crate::images::{self, Images};
use crate::qemu::{self, Accel, Boot, Config};
use guest_abi::harness::{ExitCode, VERDICT_PREFIX};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// What a scenario boots as dom0.
#[derive(Clone, Debug)]
enum Image {
    Dom0,
    Guest(&'static str),
    /// The hypervisor's own ELF: ELF64 x86-64, but without the PV notes.
    HypervisorElf,
    /// Bytes that are no ELF at all.
    Garbage,
}

#[derive(Clone, Debug)]
enum Expect {
    /// `Test result: SUCCESS` and a poweroff.
    Success,
    /// This exit code, and each string somewhere in the output (one starting with `!`:
    /// nowhere in it; [`lines_present_and_absent`]).
    Exit(ExitCode, &'static [&'static str]),
    /// As `Exit`, and a check of the output's figures.
    /// ... and a check of the output and of the scenario's disk image (`None` without one).
    ExitCheck(ExitCode, &'static [&'static str], fn(&str, Option<&std::path::Path>) -> Result<(), String>),
    /// The hypervisor runs without `debug-exit`: QEMU must end by itself (ACPI S5, or a
    /// reset under `-no-reboot`) with status 0, each string somewhere in the output (one
    /// starting with `!`: nowhere in it, e.g. the next way to reset after the one that
    /// should have worked).
    Ended(&'static [&'static str]),
    /// Without `debug-exit` too: the machine must still be up (halted) when the scenario's
    /// time runs out, its lines as `Ended`'s (`noreboot`, `reboot=no`).
    Halts(&'static [&'static str]),
}

#[derive(Clone, Debug)]
struct Scenario {
    name: &'static str,
    /// dom0 gets its boot bundle (`images::bundle`) as the module after it.
    bundle: bool,
    image: Image,
    grub: bool,
    hv_opts: &'static str,
    dom0_args: &'static str,
    expect: Expect,
    input: Option<(&'static str, &'static str)>,
    /// Boot-time domUs: (test guest, module options); these scenarios boot from GRUB.
    domus: &'static [(&'static str, &'static str)],
    /// CPUs.
    smp: u32,
    /// NMIs injected through QEMU's monitor every 2 ms.
    nmis: bool,
    /// Seconds before the run counts as hung.
    timeout_s: u64,
    /// QEMU's `-machine` (`None`: i440FX `pc`).
    machine: Option<&'static str>,
    /// A fresh 1 MiB raw disk image attached as virtio-blk.
    disk: bool,
    /// ... an 8 MiB one with a GPT of two partitions instead ([`gpt_image`]).
    gpt: bool,
    /// ... with reads of sector 1000 failing with EIO (QEMU's `blkdebug`).
    disk_eio: bool,
    /// A virtio-net device on QEMU's user network.
    net: bool,
    /// ... with a host port forwarded to the first DHCP client's port 80 and fetched once
    /// the guest says it listens, and a pattern server on the host's loopback (its port
    /// given to dom0 as `host-port=`).
    host_net: bool,
    /// Booted by UEFI firmware (OVMF) rather than SeaBIOS (GRUB ISOs only).
    uefi: bool,
    /// The machine's RAM in MiB (0: the runner's default, 256).
    memory_mb: u32,
    /// A display adapter (QEMU's `-vga` model: the screen console), captured by `\x1c`
    /// lines of the input ([`screen_path`]); the check gets the capture's base path.
    vga: Option<&'static str>,
    /// The input is typed on the PS/2 keyboard, not COM1.
    keyboard: bool,
}

const fn sc(name: &'static str, image: Image, expect: Expect) -> Scenario {
    Scenario { name, image, grub: false, hv_opts: "", dom0_args: "", expect, input: None, domus: &[], smp: 1, nmis: false, bundle: false, timeout_s: 60, machine: None, disk: false, gpt: false, disk_eio: false, net: false, host_net: false, uefi: false, memory_mb: 0, vga: None, keyboard: false }
}

/// The PV memory-management attacks (`tests/guests/src/bin/mm_hostile.rs`), one boot each.
const MM_CASES: &[&str] = &[
    "l1-writable", "l2-writable", "l3-writable", "l4-writable", "pt-readonly-ok", "linear-l4",
    "linear-l2-xsa182", "pse-xsa148", "map-hypervisor-frame", "map-free-frame",
    "reserved-l4-slots", "l1tf", "cache-bits", "reserved-bit62", "gdt-dpl0", "gdt-call-gate",
    "gdt-tss", "gdt-limits", "gdt-no-writable-alias", "ldt-writable", "exchange-xsa212", "exchange-contiguous",
    "multicall-xsa213", "invlpg-xsa279", "mixed-xsa286", "unpin-cr3", "decrease-cr3",
    "double-pin", "continuation", "uvm-bad", "clear-copy-page", "memop-xsa231", "machphys",
    "new-baseptr", "shinfo-typed", "vcpuinfo-typed", "xlat-stale",
];

/// The TSC frequency the hypervisor logged (`TSC: <kHz> kHz from ...`) is within 2% of the
/// host's, measured here against the host's monotonic clock.
fn tsc_is_the_hosts(out: &str, _: Option<&std::path::Path>) -> Result<(), String> {
    let khz: u64 = out.lines().find_map(|l| l.split("TSC: ").nth(1)).and_then(|r| r.split(' ').next()).and_then(|k| k.parse().ok()).ok_or("no 'TSC: <kHz>' line")?;
    // SAFETY: rdtsc only reads the host's counter.
    let tsc = || unsafe { core::arch::x86_64::_rdtsc() };
    let (t0, c0) = (std::time::Instant::now(), tsc());
    std::thread::sleep(std::time::Duration::from_millis(200));
    let host_khz = (tsc() - c0) as u128 * 1_000_000 / t0.elapsed().as_micros().max(1) / 1000;
    let host_khz = host_khz as u64;
    if khz.abs_diff(host_khz) * 50 > host_khz {
        return Err(format!("TSC {khz} kHz, the host's {host_khz} kHz"));
    }
    Ok(())
}

/// dom0's network device came up, and the gateway answered.
const NET_TEST: &[&str] = &["dom0: net: virtio-net at 00:", "dom0: net test: ARP request sent: true; 10.0.2.2 is at 52:55:0a:00:02:02"];

/// The network test guest says this when its web server listens (the host then fetches).
const HTTP_LISTENING: &str = "net: http: listening on port 80";
/// The PV network scenario's verdicts (`dom0-kernel/bundle/etc/xen/net/test.sh`).
const NET_EXPECT: &[&str] = &[
    "net: http: answered 'GET / HTTP/1.0' (1 of 1)",
    "[host] HTTP/1.0 200 OK",
    "[host] hello from an rxen domU, over netfront, dom0's switch and smoltcp",
    "net: http: SUCCESS",
    "net: source: ping 10.0.2.16: 8 of 8 replies",
    "net: sink: 10485760 of 10485760 bytes",
    "0 bytes wrong",
    "net: sink: SUCCESS",
    "net: source: SUCCESS",
    "net: hostile: a zero-length packet: [(500, -1)] (want [-1]): ok",
    "net: hostile: a grant that does not exist: [(500, -1)] (want [-1]): ok",
    "net: hostile: GSO extra info the backend did not offer: [(500, -1), (0, 1)] (want [-1, 1]): ok",
    "net: hostile: a good frame after all that: [(500, 0)] (want [0]): ok",
    "vif0: a frame from 00:16:3e:00:00:02, not the vif's MAC: dropped",
    "vif0: a DHCP server's answer from a vif: dropped",
    "vif0: a packet in more slots than allowed: the ring is read no more",
    "Domain-0                                     0",
    "net: hostile: 300 broadcasts sent",
    "dom0: script: netstall's data/evil is not a plain word: left out",
    "net: hostile: SUCCESS",
    "vif0: transmit ring indexes out of range (req_prod 1000, req_cons 0): the ring is read no more",
    "net: indexes tx: the backend closed the device: true",
    "vif0: receive ring indexes out of range (req_prod 5064, req_cons ",
    "net: indexes rx: the backend closed the device: true",
    "net: flood: the backend closed the device after",
    "net: flood: SUCCESS",
    "net: fetch: 'HTTP/1.0 200 OK' from 10.0.2.2:",
    "net: fetch: 1048576 of 1048576 bytes",
    "net: fetch: SUCCESS",
    "net: post: the host says 'received 1048576 bytes, 0 wrong'",
    "net: post: SUCCESS",
    "net: hot: vif 0 appeared: true",
    "net: fetch: 65536 of 65536 bytes",
];

/// Both ends of the domU-to-domU transfer saw the same bytes (their Fletcher-64s agree),
/// and the domain destroyed mid-flood was torn down (its vif's grants and ring mappings
/// let go: the hypervisor frees its id only then).
fn net_sums_agree(out: &str, _: Option<&std::path::Path>) -> Result<(), String> {
    // The stalled vif: its 64 receive pages filled, 128 more frames queued, the rest of the
    // hostile domain's 300 broadcasts dropped (and dom0 carried on).
    let stall = out.split("dom0# xl network-list netstall").nth(1).and_then(|r| r.lines().find(|l| l.starts_with("(vif0: "))).ok_or("no network-list of netstall")?;
    let n: Vec<u64> = stall.split(|c: char| !c.is_ascii_digit()).filter(|w| !w.is_empty()).filter_map(|w| w.parse().ok()).collect();
    match n[..] {
        [0, 0, 64, 0, d] if d >= 300 - 128 - 64 => {}
        _ => return Err(format!("the stalled vif's counters are not 64 received and the rest dropped: {stall}")),
    }
    // Each domain's backend directory went with it (as libxl removes them).
    let left = out.split("dom0# xenstore-ls /local/domain/0/backend/vif").nth(1).ok_or("no xenstore-ls of the vif backends")?;
    let left: Vec<&str> = left.split("dom0#").next().unwrap_or("").lines().map(str::trim).filter(|l| !l.is_empty() && !l.contains("(XEN)")).collect();
    if !left.is_empty() {
        return Err(format!("backend nodes left after every domain went: {left:?}"));
    }
    let after = out.split("dom0# xl destroy netflood2").nth(1).ok_or("no xl destroy netflood2")?;
    if !after.split("dom0#").next().unwrap_or("").contains("torn down; its id is free") {
        return Err("netflood2 was not torn down after xl destroy".into());
    }
    let sum = |who: &str| out.lines().find(|l| l.contains(who) && l.contains("Fletcher-64")).and_then(|l| l.rsplit(' ').next()).map(str::to_string);
    match (sum("net: sink: "), sum("net: source: ")) {
        (Some(a), Some(b)) if a == b => Ok(()),
        (a, b) => Err(format!("the sink's Fletcher-64 {a:?} is not the source's {b:?}")),
    }
}

/// The balloon scenario's verdicts.
const BALLOON_EXPECT: &[&str] = &[
    "balloon: 512 pages taken and written",
    "balloon: shrink from 32768 to 12288 KiB",
    "balloon: grow from 12288 to 32768 KiB",
    "balloon: shrink from 32768 to 6144 KiB in",
    "balloon: grow from 6144 to 32768 KiB",
    "balloon: 32768 KiB (up to 49152 KiB), target 32768 KiB, holding 512 pages",
    "balloon: grow from 32768 to 49152 KiB",
    "libxl: error: memory_static_max must be greater than or equal to memory_dynamic_max (65536 > 49152)",
    "balloon: shutdown (Poweroff): 512 pages held, 0 changed",
    "balloon: SUCCESS",
];

/// The balloon's frames went back to the hypervisor and came again: `xl info`'s free
/// memory up by the 20 MiB shrink, down again after the grow; `xl list` shows the sizes
/// (the last one past the 32 MiB the domain was built with, its maxmem).
fn balloon_frees(out: &str, _: Option<&std::path::Path>) -> Result<(), String> {
    let free: Vec<i64> = out.lines().filter_map(|l| l.strip_prefix("free_memory")).filter_map(|r| r.trim_start_matches([' ', ':']).trim().parse().ok()).collect();
    let [before, shrunk, grown] = free[..] else { return Err(format!("want three xl info free_memory figures, got {free:?}")) };
    if !(19..=21).contains(&(shrunk - before)) || (grown - before).abs() > 1 {
        return Err(format!("free memory {before} -> {shrunk} -> {grown} MiB does not follow the 32 -> 12 -> 32 MiB balloon"));
    }
    let mem: Vec<&str> = out.lines().filter(|l| l.starts_with("balloon ")).filter_map(|l| l.split_whitespace().nth(2)).collect();
    if mem != ["12", "32", "6", "48"] {
        return Err(format!("xl list shows the balloon with {mem:?} MiB, want 12, 32, 6, 48"));
    }
    Ok(())
}

/// The PV block scenario's verdicts.
const BLK_EXPECT: &[&str] = &[
    "blk: persist: 256 KiB written at sector 12288: Ok(()), marker Ok(()), flush Ok(()); rebooting",
    "restarted as domain",
    "blk: persist: after the reboot, 256 KiB read back at sector 12288: equal",
    "blk: persist: SUCCESS",
    "blk: ro: a write: Err(-1)",
    "blk: ro: SUCCESS",
    "blk: part 1: 4096 sectors written and read back, all mine: true; past the end: Err(-1)",
    "blk: part 2: 4096 sectors written and read back, all mine: true; past the end: Err(-1)",
    "libxl: error: disk 'vda2,xvdb,r': vda2 overlaps domain 1's xvda (vda2), and one of them may write",
    "libxl: error: disk 'vda,xvdc,r': vda overlaps domain",
    "blk: hostile: still served: 0",
    "blk: hostile: SUCCESS",
    "xvda: ring indexes out of range",
    "blk: hostile: after the garbage indexes the backend closed the device: state 5",
    "blk: closemid: SUCCESS",
    "blk: hot: xvda appeared: true",
    "blk: hot: read Ok(()), partition 1's data: true",
    "BE-path",
    "blk: hot: SUCCESS",
];

/// [`BLK_EXPECT`]'s lines, no domain failed, the second run of partition 1 too, and the
/// image as [`blk_image_as_written`] wants it.
fn blk_output_and_image(out: &str, disk: Option<&std::path::Path>) -> Result<(), String> {
    if out.contains(": FAILURE") {
        return Err("a domain failed".into());
    }
    if out.matches("blk: part 1: 4096 sectors written and read back, all mine: true").count() != 2 {
        return Err("partition 1's second domain did not finish".into());
    }
    if out.contains("INCONSISTENT") {
        return Err("an audit found inconsistent counts".into());
    }
    blk_image_as_written(out, disk)
}

/// dom0's disk came up with its interrupt, and the self-test's data came back.
const DISK_TEST: &[&str] = &["dom0: disk: virtio-blk at 00:", "(level: EOI after each)", "read back equal", "a read past the end: Some(Invalid)"];

/// Two vCPUs in dom0; the verdict, then the last vCPU's down powers the domain off.
const VCPUS_EXPECT: &[&str] = &["d0: 2 vCPUs (vCPU 0 up)", "Test result: SUCCESS", "Domain 0 shut down"];

fn scenarios() -> Vec<Scenario> {
    use ExitCode::*;
    // Every hostile case on 1 and on 2 CPUs.
    let mm = [1, 2].into_iter().flat_map(|smp| {
        MM_CASES.iter().map(move |c| {
            let name = if smp == 1 { format!("mm-{c}") } else { format!("mm-{c}-smp{smp}") };
            Scenario { dom0_args: c, smp, ..sc(Box::leak(name.into_boxed_str()), Image::Guest("mm_hostile"), Expect::Success) }
        })
    });
    // ... and again with the guest in the Xen pv64 mode (its `-pv64` build: ring-3 kernel,
    // separate roots, `syscall` hypercalls).
    let mm64 = [1, 2].into_iter().flat_map(|smp| {
        MM_CASES.iter().map(move |c| {
            let name = if smp == 1 { format!("pv64-mm-{c}") } else { format!("pv64-mm-{c}-smp{smp}") };
            Scenario { dom0_args: c, smp, ..sc(Box::leak(name.into_boxed_str()), Image::Guest("mm_hostile-pv64"), Expect::Success) }
        })
    });
    // The same scenarios on several CPUs (application processors started, domains spread).
    let smp = [
        Scenario {
            smp: 4,
            dom0_args: "shutdown",
            ..sc("boot-pvh-smp4", Image::Dom0, Expect::Exit(Poweroff, &[
                "ACPI: 4 CPU(s), APIC ids [0, 1, 2, 3]",
                "4 CPU(s) online",
                "all updates accepted",
            ]))
        },
        Scenario { smp: 2, ..sc("events-timers-smp2", Image::Guest("events"), Expect::Success) },
        // CPU 1's start is abandoned before it runs (as after a timeout): arriving late, it must
        // halt, and CPU 2, whose start reuses the trampoline, must come up as itself.
        Scenario {
            smp: 3,
            hv_opts: "debug-ap-late=1 dom0_max_vcpus=1",
            dom0_args: "shutdown",
            ..sc("boot-pvh-smp3-late-ap", Image::Dom0, Expect::Exit(Poweroff, &[
                "CPU 1 (APIC id 1) did not start",
                "CPU 2 up (APIC id 2)",
                "2 CPU(s) online",
                "all updates accepted",
            ]))
        },
        // ACPI poweroff with an AP that never came up: only the CPU that did gets the stop
        // NMI (CPU 1 sits in the trampoline without an IDT, where an NMI would reset the
        // machine instead of letting S5 switch it off).
        Scenario {
            smp: 3,
            machine: Some("q35"),
            hv_opts: "debug-ap-late=1 dom0_max_vcpus=1",
            dom0_args: "shutdown",
            ..sc("acpi-poweroff-late-ap-smp3", Image::Dom0, Expect::Ended(&["CPU 1 (APIC id 1) did not start", "CPU 2 up (APIC id 2)", "1 of 1 other CPU(s) stopped", "powering off: ACPI S5", "!did not power the machine off"]))
        },
        Scenario { smp: 2, hv_opts: "dom0_max_vcpus=2", ..sc("vcpus-smp2", Image::Guest("vcpus"), Expect::Exit(Poweroff, VCPUS_EXPECT)) },
        Scenario { smp: 4, hv_opts: "dom0_max_vcpus=2", ..sc("vcpus-smp4", Image::Guest("vcpus"), Expect::Exit(Poweroff, VCPUS_EXPECT)) },
        Scenario { smp: 2, hv_opts: "dom0_max_vcpus=2", dom0_args: "tlbclock", ..sc("vcpus-tlbclock-smp2", Image::Guest("vcpus"), Expect::Success) },
        Scenario {
            smp: 2,
            dom0_args: "server",
            domus: &[("pingpong", "domU mem=16M -- client")],
            ..sc("multi-pingpong-smp2", Image::Guest("pingpong"), Expect::Exit(Poweroff, &[
                "2 CPU(s) online",
                "(d1) pingpong client: 100 round trips",
                "Test result: SUCCESS",
            ]))
        },
        Scenario {
            smp: 4,
            dom0_args: "domexc",
            domus: &[("crasher", "domU mem=8M")],
            ..sc("multi-domu-crash-smp4", Image::Guest("watcher"), Expect::Exit(Poweroff, &[
                "d1v0 crashed: #UD with no handler registered",
                "Test result: SUCCESS",
            ]))
        },
        Scenario {
            smp: 2,
            dom0_args: "domexc",
            domus: &[("vcpus", "domU mem=8M vcpus=2 -- crash")],
            ..sc("multi-vcpu-domu-crash-smp2", Image::Guest("watcher"), Expect::Exit(Poweroff, &[
                "d1: 2 vCPUs (vCPU 0 up)",
                "(d1) vcpus: crashing with vCPU 1 running",
                "d1 is dead (crash)",
                // (vCPU 1 is on a CPU just before the crash, but may wait in a queue at the
                // moment of it: "d1v1: taken off CPU" is not required.)
                "d1: every vCPU is off the CPUs",
                "Test result: SUCCESS",
            ]))
        },
        Scenario {
            smp: 2,
            dom0_args: "dom0",
            domus: &[("fpustate", "domU mem=8M -- domu")],
            ..sc("multi-fpu-isolation-smp2", Image::Guest("fpustate"), Expect::Exit(Poweroff, &[
                "(d1) Test result: SUCCESS",
                "Test result: SUCCESS",
            ]))
        },
    ];
    // Failed returns to the guest (tests/guests/src/bin/failsafe.rs), on 1 and 2 CPUs: with
    // a failsafe callback the guest carries on; without, dom0 is crashed (not the hypervisor).
    // The refused data selectors appear when another domain ran on dom0's CPU in between:
    // dom0's vCPU 0 and the domU(s) are pinned to CPU 0, so that holds on any CPU count.
    let failsafe = [1u32, 2].into_iter().flat_map(|smp| {
        let suffix = if smp == 1 { "" } else { "-smp2" };
        let name = move |c: &str| -> &'static str { Box::leak(format!("failsafe-{c}{suffix}").into_boxed_str()) };
        let domus: &'static [(&'static str, &'static str)] = if smp == 1 {
            &[("failsafe", "domU mem=8M cpus=0 -- domu")]
        } else {
            &[("failsafe", "domU mem=8M cpus=0 -- domu"), ("failsafe", "domU mem=8M -- domu")]
        };
        let cases: [(&'static str, &'static [&'static str]); 4] = [
            ("ldt-ss", &["d0v0 crashed: cannot resume 0xe019:", "(ss 0x5): #GP error 0x4 (no failsafe callback)"]),
            ("gdt-cs", &["d0v0 crashed: cannot resume 0x9:", "#GP error 0x8 (no failsafe callback)"]),
            ("rip", &["d0v0 crashed: cannot resume 0xe019:0x800000000000 (ss 0xe021): #GP error 0x0 (no failsafe callback)"]),
            ("segs", &["d0v0 crashed: data selectors [5, 5, 5, 5] refused (mask 0xf) (no failsafe callback)"]),
        ];
        cases.into_iter().flat_map(move |(c, crash)| {
            let d = if c == "segs" { domus } else { &[] };
            let pin = if c == "segs" { "dom0_vcpus_pin" } else { "" };
            let cb = Scenario { smp, hv_opts: pin, dom0_args: c, domus: d, ..sc(name(c), Image::Guest("failsafe"), Expect::Success) };
            let nocb = Scenario {
                smp,
                hv_opts: pin,
                dom0_args: Box::leak(format!("{c} nocb").into_boxed_str()),
                domus: d,
                ..sc(name(&format!("{c}-nocb")), Image::Guest("failsafe"), Expect::Exit(Crash, crash))
            };
            [cb, nocb]
        })
    });
    // A hostile domU keeps the hypervisor busy while dom0 measures the gaps between its timer
    // ticks (tests/guests/src/bin/hammer.rs): none may exceed 100 ms.
    let gaps = [1u32, 2].into_iter().flat_map(|smp| {
        ["mmu-alias", "console", "pin-tree"].into_iter().map(move |m| {
            let suffix = if smp == 1 { "" } else { "-smp2" };
            let domu: &'static [(&'static str, &'static str)] =
                Box::leak(vec![("hammer", &*Box::leak(format!("domU mem=32M -- hammer {m}").into_boxed_str()))].into_boxed_slice());
            Scenario {
                smp,
                dom0_args: "gaps 2000",
                domus: domu,
                ..sc(Box::leak(format!("multi-gaps-{m}{suffix}").into_boxed_str()), Image::Guest("hammer"), Expect::Success)
            }
        })
    });
    // SMP stress (tests/guests/src/bin/smpstress.rs): a two-vCPU domU races itself in the
    // hypervisor; when it is gone the hypervisor audits its frames. On 1, 2 and 4 CPUs.
    let stress = [1u32, 2, 4].into_iter().flat_map(|smp| {
        let cases: [(&'static str, &'static [&'static str]); 5] = [
            ("tables", &["(d1) smpstress tables: ", "(d1) Test result: SUCCESS", "counts consistent", "Test result: SUCCESS"]),
            ("evtchn", &["(d1) smpstress evtchn: ", "(d1) Test result: SUCCESS", "counts consistent", "Test result: SUCCESS"]),
            ("crash", &["(d1) smpstress crash: crashing with vCPU 1 inside hypercalls", "d1 is dead (crash)", "counts consistent", "Test result: SUCCESS"]),
            ("updown", &["(d1) smpstress updown: ", "(d1) Test result: SUCCESS", "counts consistent", "Test result: SUCCESS"]),
            ("pollwake", &["(d1) smpstress pollwake: ", "(d1) Test result: SUCCESS", "counts consistent", "Test result: SUCCESS"]),
        ];
        cases.into_iter().map(move |(c, expect)| {
            let domu: &'static [(&'static str, &'static str)] =
                Box::leak(vec![("smpstress", &*Box::leak(format!("domU mem=8M vcpus=2 -- {c}").into_boxed_str()))].into_boxed_slice());
            Scenario {
                smp,
                dom0_args: "domexc",
                domus: domu,
                ..sc(Box::leak(format!("smp-stress-{c}-smp{smp}").into_boxed_str()), Image::Guest("watcher"), Expect::Exit(ExitCode::Poweroff, expect))
            }
        })
    });
    // FIFO event channels (tests/guests/src/bin/fifo.rs) in a domU that ends with FIFO on
    // (its frames audited, then given back by the teardown); on 2 CPUs with a second vCPU
    // writing garbage into the event words while the first raises events.
    let fifo = [1u32, 2].into_iter().map(|smp| {
        let (sfx, domu): (&str, &'static [(&'static str, &'static str)]) =
            if smp == 1 { ("", &[("fifo", "domU mem=8M")]) } else { ("-smp2", &[("fifo", "domU mem=8M vcpus=2")]) };
        Scenario {
            smp,
            dom0_args: "domexc",
            domus: domu,
            ..sc(Box::leak(format!("fifo{sfx}").into_boxed_str()), Image::Guest("watcher"), Expect::Exit(ExitCode::Poweroff, &[
                "(d1) --- fifo (CPL 1) ---",
                "(d1) garbage: 60 rounds of 10 ports raised",
                "(d1) Test result: SUCCESS",
                "audit d1: ",
                "counts consistent",
                "Test result: SUCCESS",
            ]))
        }
    });
    // Grant mappings (tests/guests/src/bin/grant_hostile.rs): a domU attacking its own
    // grants, then dying with one mapped (released, audited); and a granter dying while dom0
    // maps its page. On 1 and 2 CPUs.
    let grants = [1u32, 2].into_iter().flat_map(|smp| {
        let sfx = if smp == 1 { "" } else { "-smp2" };
        // The audit of the dead domU, then the watcher's verdict.
        const AUDITED: [&str; 3] = ["audit d1: ", "counts consistent", "Test result: SUCCESS"];
        let released: &'static [&'static str] = Box::leak([&["(d1) Test result: SUCCESS", "d1: 1 grant mapping(s) released"][..], &AUDITED].concat().into_boxed_slice());
        let raced: &'static [&'static str] = Box::leak([&["(d1) race: ", "(d1) Test result: SUCCESS"][..], &AUDITED].concat().into_boxed_slice());
        // (name, the domU's module line, what the output must hold): a domU attacking its
        // own grants (v1, then v2 and the version switch: XSA-255) and dying with one
        // mapped; its second vCPU rewriting the entry while the first maps it (v1, v2).
        let domu_cases: [(&str, &'static str, &'static [&'static str]); 4] = [
            ("grant-self", "domU mem=8M -- self 1", released),
            ("grant-race", "domU mem=8M vcpus=2 -- race 1", raced),
            ("grant-race-v2", "domU mem=8M vcpus=2 -- race 1 2", raced),
            ("grant-v2", "domU mem=8M -- v2 1", released),
        ];
        let watched = domu_cases.into_iter().map(move |(name, line, expect)| Scenario {
            smp,
            dom0_args: "domexc",
            domus: Box::leak(vec![("grant_hostile", line)].into_boxed_slice()),
            ..sc(Box::leak(format!("{name}{sfx}").into_boxed_str()), Image::Guest("watcher"), Expect::Exit(ExitCode::Poweroff, expect))
        });
        watched.chain([Scenario {
            smp,
            dom0_args: "mapper",
            domus: &[("grant_hostile", "domU mem=8M -- granter")],
            ..sc(Box::leak(format!("grant-cross{sfx}").into_boxed_str()), Image::Guest("grant_hostile"), Expect::Exit(ExitCode::Poweroff, &[
                "(d1) granter: crashing with the page mapped by dom0",
                "audit d1: ",
                "counts consistent",
                "Test result: SUCCESS",
            ]))
        }])
    });
    // The toolstack hypercalls (tests/guests/src/bin/toolstack/): dom0 creates, limits,
    // populates, pauses, queries and destroys domains, 1000 cycles without a leaked frame;
    // and destroys a running domU. On 1 and 2 CPUs.
    let toolstack = [1u32, 2].into_iter().flat_map(|smp| {
        let sfx = if smp == 1 { "" } else { "-smp2" };
        [
            Scenario { smp, dom0_args: "cycles 1000", ..sc(Box::leak(format!("toolstack{sfx}").into_boxed_str()), Image::Guest("toolstack"), Expect::Success) },
            Scenario {
                smp,
                dom0_args: "build",
                ..sc(Box::leak(format!("toolstack-build{sfx}").into_boxed_str()), Image::Guest("toolstack"), Expect::Exit(ExitCode::Poweroff, &[
                    "(d1) hello from a domain dom0 built",
                    "d1: torn down; its id is free",
                    "Test result: SUCCESS",
                ]))
            },
            Scenario {
                smp,
                dom0_args: "kill",
                domus: &[("spinner", "domU mem=8M")],
                ..sc(Box::leak(format!("toolstack-kill{sfx}").into_boxed_str()), Image::Guest("toolstack"), Expect::Exit(ExitCode::Poweroff, &[
                    "d1: destroyed by d0",
                    "d1: torn down; its id is free",
                    "d1: created by d0",
                    "Test result: SUCCESS",
                ]))
            },
        ]
    });
    let mut v = vec![
        Scenario {
            grub: true,
            dom0_args: "shutdown from-grub",
            ..sc("boot-grub", Image::Dom0, Expect::Exit(Poweroff, &[
                "booting via Multiboot2",
                "dom0: command line 'shutdown from-grub'",
                "flags PRIVILEGED|INITDOMAIN, running at CPL 1, trap table installed",
                "pinned, switched to L4 mfn",
                "own GDT loaded (code DPL 1, ring-1 data selector usable); balloon -64 pages (8128) +64 pages (8192); all updates accepted",
                "shutdown: reason poweroff",
            ]))
        },
        // Timekeeping that cannot be silently wrong: without a PIT (as on many recent
        // boards) the TSC comes out at the host's rate (TCG's TSC is the host's) from the
        // HPET, checked by the PM timer; without an HPET too, from the PM timer; without
        // an HPET on q35, from the PM timer checked by the PIT.
        Scenario {
            machine: Some("pc,pit=off"),
            ..sc("tsc-no-pit", Image::Guest("hello"), Expect::ExitCheck(Poweroff, &["kHz from the HPET (the ACPI PM timer agrees", "hello: up, powering off"], tsc_is_the_hosts))
        },
        // Neither PIT nor HPET: the PM timer, and the PIT's garbage is reported.
        Scenario {
            machine: Some("pc,pit=off,hpet=off"),
            ..sc("tsc-pm-timer-only", Image::Guest("hello"), Expect::ExitCheck(Poweroff, &["kHz from the ACPI PM timer, but the PIT says", "hello: up, powering off"], tsc_is_the_hosts))
        },
        Scenario {
            machine: Some("q35,hpet=off"),
            ..sc("tsc-no-hpet-q35", Image::Guest("hello"), Expect::ExitCheck(Poweroff, &["kHz from the ACPI PM timer", "hello: up, powering off"], tsc_is_the_hosts))
        },
        // ACPI power with no debug-exit: QEMU ends only if the machine really powers off
        // (S5 through PM1a with the DSDT's `\_S5`) or resets (under `-no-reboot`).
        sc("acpi-poweroff", Image::Guest("hello"), Expect::Ended(&["ACPI: poweroff by S5 (SLP_TYP 0/0", "powering off: ACPI S5"])),
        Scenario { machine: Some("q35"), ..sc("acpi-poweroff-q35", Image::Guest("hello"), Expect::Ended(&["ACPI: poweroff by S5 (SLP_TYP 0/0", "powering off: ACPI S5", "!did not power the machine off"])) },
        Scenario {
            grub: true,
            uefi: true,
            machine: Some("q35"),
            timeout_s: 120,
            input: Some(("dom0> ", "poweroff\r")),
            ..sc("uefi-acpi-poweroff-q35", Image::Dom0, Expect::Ended(&["ACPI: poweroff by S5", "powering off: ACPI S5"]))
        },
        Scenario {
            grub: true,
            machine: Some("q35"),
            input: Some(("dom0> ", "reboot\r")),
            ..sc("reboot-acpi-q35", Image::Dom0, Expect::Ended(&["ACPI: reset register I/O port 0xcf9", "reason reboot", "rebooting: ACPI reset register", "!rebooting: keyboard controller"]))
        },
        // i440FX's FADT (QEMU 7.2) has no reset register: the keyboard controller is next.
        Scenario { grub: true, input: Some(("dom0> ", "reboot\r")), ..sc("reboot-kbd", Image::Dom0, Expect::Ended(&["ACPI: no reset register", "rebooting: keyboard controller", "!rebooting: triple fault"])) },
        Scenario { hv_opts: "reboot=triple", machine: Some("q35"), input: Some(("dom0> ", "reboot\r")), ..sc("reboot-triple", Image::Dom0, Expect::Ended(&["rebooting: triple fault"])) },
        // A dom0 crash restarts the machine five seconds later, as Xen does.
        Scenario { machine: Some("q35"), input: Some(("dom0> ", "crash\r")), ..sc("crash-reboots-q35", Image::Dom0, Expect::Ended(&["Reboot in five seconds", "rebooting: ACPI reset register", "!rebooting: keyboard controller"])) },
        // `noreboot` and `reboot=no`: the machine stays halted (QEMU still runs 12 s on).
        Scenario { hv_opts: "noreboot", timeout_s: 12, input: Some(("dom0> ", "crash\r")), ..sc("crash-noreboot-halts", Image::Dom0, Expect::Halts(&["d0: shutdown: reason crash", "noreboot: halted", "!Reboot in five seconds"])) },
        Scenario { hv_opts: "reboot=no", timeout_s: 12, input: Some(("dom0> ", "reboot\r")), ..sc("reboot-no-halts", Image::Dom0, Expect::Halts(&["reason reboot", "reboot=no: halted", "!rebooting: "])) },
        // On 2 CPUs the other is stopped first (an NMI), as Xen's smp_send_stop.
        Scenario { machine: Some("q35"), smp: 2, input: Some(("dom0> ", "crash\r")), ..sc("crash-reboots-q35-smp2", Image::Dom0, Expect::Ended(&["1 of 1 other CPU(s) stopped", "Reboot in five seconds", "rebooting: ACPI reset register", "!rebooting: keyboard controller"])) },
        // The screen console and the keyboard: no serial input at all; `xl list` typed on
        // the PS/2 keyboard (QEMU's sendkey) reaches the dom0 shell, and the screen (VGA
        // text under SeaBIOS, GRUB's UEFI framebuffer under OVMF, read back cell by cell)
        // shows what COM1 shows.
        Scenario {
            grub: true,
            vga: Some("std"),
            keyboard: true,
            timeout_s: 120,
            input: Some(("dom0> ", "xl list\r\x1eDomain-0\r\x1c\r\x01\x01\x01h\r\x1ereboot machine\r\x01\x01\x01\rpoweroff\r")),
            ..sc("screen-vga-keyboard", Image::Dom0, Expect::ExitCheck(Poweroff, &["screen: VGA text, 80x25 at 0xb8000", "keyboard: i8042 (PS/2)", "Serial input to Xen", " key 'R' (ascii '52') => reboot machine", "Serial input to DOM0"], screen_shows_the_console))
        },
        Scenario {
            grub: true,
            vga: Some("std"),
            keyboard: true,
            uefi: true,
            machine: Some("q35"),
            timeout_s: 150,
            input: Some(("dom0> ", "xl list\r\x1eDomain-0\r\x1c\rpoweroff\r")),
            ..sc("uefi-screen-framebuffer-q35", Image::Dom0, Expect::ExitCheck(Poweroff, &["screen: framebuffer ", "keyboard: i8042 (PS/2)"], screen_shows_the_console))
        },
        // A 32-bit framebuffer (virtio-gpu's GOP under OVMF: 1280x800x32), on i440FX.
        Scenario {
            grub: true,
            vga: Some("virtio"),
            keyboard: true,
            uefi: true,
            timeout_s: 150,
            input: Some(("dom0> ", "xl list\r\x1eDomain-0\r\x1c\rpoweroff\r")),
            ..sc("uefi-screen-framebuffer32", Image::Dom0, Expect::ExitCheck(Poweroff, &["screen: framebuffer 1280x800x32", "keyboard: i8042 (PS/2)"], screen_shows_the_console))
        },
        // Xen's debug keys after Ctrl-A three times, each one's output checked.
        Scenario {
            smp: 2,
            input: Some(("dom0> ", "\x01\x01\x01h\r\x1ereboot machine\rq\r\x1ering-1 mode\rr\r\x1ecredit\re\r\x1eport(s) in use\rm\r\x1etypes: writable\rd\r\x1eCPU 1: \r0\r\x1eDom0's registers\r\x01\x01\x01\rpoweroff\r")),
            timeout_s: 90,
            ..sc("debug-keys-smp2", Image::Dom0, Expect::ExitCheck(Poweroff, &[
                "*** Serial input to Xen",
                " key 'h' (ascii '68') => show this message",
                " key '0' (ascii '30') => dump Dom0 registers",
                "'q' pressed -> dumping domain info",
                "'r' pressed -> dumping run queues",
                "'e' pressed -> dumping event-channel info",
                "(2-level ABI)",
                "Virq { virq: ",
                "'m' pressed -> memory info",
                "types: writable ",
                "'d' pressed -> dumping registers",
                "'0' pressed -> dumping Dom0's registers",
                "*** Serial input to DOM0",
            ], debug_keys_output))
        },
        Scenario {
            machine: Some("q35"),
            input: Some(("dom0> ", "\x01\x01\x01R\r")),
            ..sc("debug-key-reboot-q35", Image::Dom0, Expect::Ended(&["'R' pressed -> rebooting machine", "rebooting: ACPI reset register", "!rebooting: keyboard controller"]))
        },
        // A fatal hypervisor error reports the registers and a symbolised backtrace
        // (frame pointers, the symbol table xtask embeds in the image).
        Scenario { hv_opts: "debug-crash=panic", ..sc("fatal-panic-backtrace", Image::Guest("hello"), Expect::Exit(HypervisorPanic, &["PANIC: panicked at", "debug-crash=panic", "Xen call trace:", "hypervisor::setup::cpus+0x", "hv_main+0x"])) },
        Scenario { hv_opts: "debug-crash=fault", ..sc("fatal-fault-backtrace", Image::Guest("hello"), Expect::Exit(HypervisorPanic, &["FATAL TRAP #PF in hypervisor", "CR2 0x0000000000000000", "Xen call trace:", "hv_arch::cpu::fault_on_purpose+0x", "hypervisor::setup::cpus+0x"])) },
        // Memory scales with the machine: dom0 given 3 GiB of a 4 GiB machine (the heap,
        // sized from the memory map, holds the builder's word per page).
        Scenario {
            memory_mb: 4096,
            hv_opts: "dom0_mem=3G",
            timeout_s: 120,
            ..sc("dom0-3g-of-4g", Image::Guest("hello"), Expect::Exit(Poweroff, &[", 3072 MiB", "hello: up, powering off", "shutdown: reason poweroff"]))
        },
        Scenario {
            dom0_args: "shutdown from-pvh",
            ..sc("boot-pvh", Image::Dom0, Expect::Exit(Poweroff, &[
                "booting via Pvh",
                "dom0: command line 'shutdown from-pvh'",
                "running at CPL 1",
                "(vcpu0 upcall mask 1)",
                "all updates accepted",
            ]))
        },
        sc("hypercalls", Image::Guest("hypercalls"), Expect::Success),
        sc("console-fault", Image::Guest("console_fault"), Expect::Success),
        sc("hv-memory", Image::Guest("hv_memory"), Expect::Success),
        sc("grant-setup", Image::Guest("grants"), Expect::Success),
        sc("privileged", Image::Guest("privileged"), Expect::Success),
        // Xen's forced-emulation CPUID (issue 14's first blocker for XTF and Linux PV).
        sc("cpuid", Image::Guest("cpuid"), Expect::Success),
        Scenario { smp: 2, hv_opts: "dom0_max_vcpus=2", ..sc("cpuid-smp2", Image::Guest("cpuid"), Expect::Success) },
        // The Xen pv64 mode (a kernel without rxen's ABI note, as XTF's): ring-3 kernel,
        // `syscall` hypercalls, its own user root, Xen's frames, HYPERVISOR_iret, events
        // from user mode, the failsafe callback; and the returns that must crash it.
        sc("pv64", Image::Guest("pv64"), Expect::Success),
        Scenario { smp: 2, hv_opts: "dom0_max_vcpus=2", ..sc("pv64-smp2", Image::Guest("pv64"), Expect::Success) },
        Scenario {
            dom0_args: "noroot",
            ..sc("pv64-noroot", Image::Guest("pv64"), Expect::Exit(Crash, &["d0: Xen pv64 mode", "iret to user mode without a user root", "Domain 0 crashed"]))
        },
        Scenario {
            dom0_args: "badframe",
            ..sc("pv64-badframe", Image::Guest("pv64"), Expect::Exit(Crash, &["unreadable", "iret: frame at 0x", "Domain 0 crashed"]))
        },
        // ... and as a domU that dom0's `xl create` builds (createdomain without
        // CDF_RXEN_RING1, Xen's stubs, User bits, the ring-3 boot context).
        Scenario {
            dom0_args: "interactive",
            bundle: true,
            input: Some(("dom0> ", "xl create /etc/xen/pv64.cfg\r\x1eTest result: \rxl list\rpoweroff\r")),
            ..sc("pv64-domu", Image::Dom0, Expect::Exit(Poweroff, &PV64_DOMU))
        },
        Scenario {
            dom0_args: "interactive",
            bundle: true,
            smp: 2,
            input: Some(("dom0> ", "xl create /etc/xen/pv64.cfg\r\x1eTest result: \rxl list\rpoweroff\r")),
            ..sc("pv64-domu-smp2", Image::Dom0, Expect::Exit(Poweroff, &PV64_DOMU))
        },
        // The privileged instructions the hypervisor emulates, good and hostile operands.
        sc("emulate", Image::Guest("emulate"), Expect::Success),
        Scenario { smp: 2, hv_opts: "dom0_max_vcpus=2", ..sc("emulate-smp2", Image::Guest("emulate"), Expect::Success) },
        // dom0's device access (ports, MMIO) on both QEMU chipsets, with a virtio disk.
        Scenario { disk: true, ..sc("iodev-dom0", Image::Guest("iodev"), Expect::Success) },
        Scenario { disk: true, machine: Some("q35"), ..sc("iodev-dom0-q35", Image::Guest("iodev"), Expect::Success) },
        // dom0's virtio-blk driver (interrupts as a PIRQ, DMA through exchanged memory): the
        // pattern written is in the image file afterwards.
        Scenario {
            disk: true,
            dom0_args: "disk-test=100 shutdown",
            ..sc("dom0-disk", Image::Dom0, Expect::ExitCheck(Poweroff, DISK_TEST, disk_holds_pattern))
        },
        Scenario {
            disk: true,
            machine: Some("q35"),
            dom0_args: "disk-test=1000 shutdown",
            ..sc("dom0-disk-q35", Image::Dom0, Expect::ExitCheck(Poweroff, DISK_TEST, disk_holds_pattern))
        },
        Scenario {
            disk: true,
            smp: 2,
            hv_opts: "dom0_max_vcpus=2",
            dom0_args: "disk-test=7 shutdown",
            ..sc("dom0-disk-smp2", Image::Dom0, Expect::ExitCheck(Poweroff, DISK_TEST, disk_holds_pattern))
        },
        // PV block end to end (dom0-kernel/bundle/etc/xen/blk/test.sh): persistence across a
        // domain's destroy and re-creation, a read-only device, two domains on two GPT
        // partitions of one disk, hostile frontends beside a benign one, block-attach /
        // -list / -detach; the image file checked afterwards.
        Scenario {
            disk: true,
            gpt: true,
            bundle: true,
            timeout_s: 180,
            dom0_args: "interactive run=/etc/xen/blk/test.sh",
            ..sc("blk", Image::Dom0, Expect::ExitCheck(Poweroff, BLK_EXPECT, blk_output_and_image))
        },
        Scenario {
            disk: true,
            gpt: true,
            bundle: true,
            smp: 2,
            timeout_s: 180,
            dom0_args: "interactive run=/etc/xen/blk/test.sh",
            ..sc("blk-smp2", Image::Dom0, Expect::ExitCheck(Poweroff, BLK_EXPECT, blk_output_and_image))
        },
        Scenario {
            disk: true,
            gpt: true,
            bundle: true,
            machine: Some("q35"),
            timeout_s: 180,
            dom0_args: "interactive run=/etc/xen/blk/test.sh",
            ..sc("blk-q35", Image::Dom0, Expect::ExitCheck(Poweroff, BLK_EXPECT, blk_output_and_image))
        },
        // The disk fails reads of sector 1000 (blkdebug): the domU's read there is answered
        // BLKIF_RSP_ERROR and dom0 says why; the rest of the disk is served.
        Scenario {
            disk: true,
            disk_eio: true,
            bundle: true,
            dom0_args: "interactive run=/etc/xen/blk/eio.sh",
            ..sc("blk-eio", Image::Dom0, Expect::Exit(Poweroff, &[
                "blkback: d1 xvda: the disk failed a request (status 1)",
                "blk: eio: sector 1000: Err(-1); sector 0: Ok(()); sector 2000: Ok(())",
                "blk: eio: SUCCESS",
            ]))
        },
        // The disk demo of the README (etc/xen/disk.cfg) twice: its counter survives.
        Scenario {
            disk: true,
            bundle: true,
            dom0_args: "interactive run=/etc/xen/blk/demo.sh",
            ..sc("blk-demo", Image::Dom0, Expect::Exit(Poweroff, &[
                "blk: xvda (1 MiB): this is run 1 of the disk demo (read Ok(()), write and flush Ok(()))",
                "blk: xvda (1 MiB): this is run 2 of the disk demo (read Ok(()), write and flush Ok(()))",
            ]))
        },
        // dom0's virtio-net device (interrupts as a PIRQ, its own line or the disk's): an
        // ARP request to QEMU's user-network gateway, and its answer.
        Scenario {
            net: true,
            dom0_args: "net-test shutdown",
            ..sc("dom0-net", Image::Dom0, Expect::Exit(Poweroff, NET_TEST))
        },
        Scenario {
            net: true,
            disk: true,
            machine: Some("q35"),
            dom0_args: "net-test disk-test=64 shutdown",
            ..sc("dom0-net-disk-q35", Image::Dom0, Expect::Exit(Poweroff, NET_TEST))
        },
        Scenario {
            net: true,
            disk: true,
            smp: 2,
            dom0_args: "net-test disk-test=64 shutdown",
            ..sc("dom0-net-disk-smp2", Image::Dom0, Expect::Exit(Poweroff, NET_TEST))
        },
        // PV networking end to end (dom0-kernel/bundle/etc/xen/net/test.sh): a domU's web
        // page fetched from the host through the port forward; 10 MiB over TCP from one
        // domU to another through the switch; hostile and flooding frontends beside them;
        // network-detach of the flooding one; a file fetched from a server on the host.
        Scenario {
            host_net: true,
            bundle: true,
            timeout_s: 300,
            dom0_args: "interactive run=/etc/xen/net/test.sh",
            ..sc("net", Image::Dom0, Expect::ExitCheck(Poweroff, NET_EXPECT, net_sums_agree))
        },
        Scenario {
            host_net: true,
            bundle: true,
            smp: 2,
            timeout_s: 300,
            dom0_args: "interactive run=/etc/xen/net/test.sh",
            ..sc("net-smp2", Image::Dom0, Expect::ExitCheck(Poweroff, NET_EXPECT, net_sums_agree))
        },
        Scenario {
            host_net: true,
            bundle: true,
            machine: Some("q35"),
            timeout_s: 300,
            dom0_args: "interactive run=/etc/xen/net/test.sh",
            ..sc("net-q35", Image::Dom0, Expect::ExitCheck(Poweroff, NET_EXPECT, net_sums_agree))
        },
        // dom0's own interface on the switch (dom0-kernel/bundle/etc/xen/net/dom0.sh).
        Scenario {
            net: true,
            bundle: true,
            dom0_args: "interactive dom0-ip run=/etc/xen/net/dom0.sh",
            ..sc("net-dom0", Image::Dom0, Expect::Exit(Poweroff, &[
                "dom0: ip: DHCP: 10.0.2.15/24 via Some(10.0.2.2)",
                "net: source: ping 10.0.2.15: 8 of 8 replies",
                "dom0: sink: 4194304 bytes in",
                "KiB/s), 0 wrong",
                "net: source: SUCCESS",
            ]))
        },
        Scenario {
            net: true,
            bundle: true,
            smp: 2,
            dom0_args: "interactive dom0-ip run=/etc/xen/net/dom0.sh",
            ..sc("net-dom0-smp2", Image::Dom0, Expect::Exit(Poweroff, &[
                "dom0: ip: DHCP: 10.0.2.15/24 via Some(10.0.2.2)",
                "net: source: ping 10.0.2.15: 8 of 8 replies",
                "dom0: sink: 4194304 bytes in",
                "KiB/s), 0 wrong",
                "net: source: SUCCESS",
            ]))
        },
        // The balloon (dom0-kernel/bundle/etc/xen/balloon/test.sh): a domU shrunk to 12 MiB,
        // grown back to 32, shrunk below what it uses, grown again and on to its maxmem of
        // 48, while it takes and writes pages; its frames go back to the hypervisor (xl
        // info's free memory).
        Scenario { bundle: true, timeout_s: 120, dom0_args: "interactive run=/etc/xen/balloon/test.sh", ..sc("balloon", Image::Dom0, Expect::ExitCheck(Poweroff, BALLOON_EXPECT, balloon_frees)) },
        Scenario { bundle: true, smp: 2, timeout_s: 120, dom0_args: "interactive run=/etc/xen/balloon/test.sh", ..sc("balloon-smp2", Image::Dom0, Expect::ExitCheck(Poweroff, BALLOON_EXPECT, balloon_frees)) },
        // ... and none of it for a domU (the same guest, unprivileged).
        Scenario {
            disk: true,
            dom0_args: "domexc",
            domus: &[("iodev", "domU mem=8M")],
            ..sc("iodev-domu", Image::Guest("watcher"), Expect::Exit(Poweroff, &["(d1) Test result: SUCCESS", "d1 is dead (poweroff)", "Test result: SUCCESS"]))
        },
        Scenario {
            disk: true,
            smp: 2,
            dom0_args: "domexc",
            domus: &[("iodev", "domU mem=8M")],
            ..sc("iodev-domu-smp2", Image::Guest("watcher"), Expect::Exit(Poweroff, &["(d1) Test result: SUCCESS", "d1 is dead (poweroff)", "Test result: SUCCESS"]))
        },
        sc("ring3-hypercall", Image::Guest("ring3"), Expect::Success),
        sc("events-timers", Image::Guest("events"), Expect::Success),
        Scenario { hv_opts: "dom0_max_vcpus=2", ..sc("vcpus", Image::Guest("vcpus"), Expect::Exit(Poweroff, VCPUS_EXPECT)) },
        Scenario {
            dom0_args: "server",
            domus: &[("pingpong", "domU mem=16M -- client")],
            ..sc("multi-pingpong", Image::Guest("pingpong"), Expect::Exit(Poweroff, &[
                "(d1) pingpong client: 100 round trips",
                "Test result: SUCCESS",
            ]))
        },
        Scenario {
            dom0_args: "domexc",
            domus: &[("crasher", "domU mem=8M")],
            ..sc("multi-domu-crash", Image::Guest("watcher"), Expect::Exit(Poweroff, &[
                "d1v0 crashed: #UD with no handler registered",
                "d1 is dead (crash); the others carry on",
                "Test result: SUCCESS",
            ]))
        },
        Scenario {
            dom0_args: "slices",
            domus: &[("spinner", "domU mem=8M")],
            ..sc("multi-masked-spinner", Image::Guest("watcher"), Expect::Exit(Poweroff, &[
                "(d1) spinner: spinning with events masked",
                "Test result: SUCCESS",
            ]))
        },
        Scenario {
            dom0_args: "dom0",
            domus: &[("fpustate", "domU mem=8M -- domu")],
            ..sc("multi-fpu-isolation", Image::Guest("fpustate"), Expect::Exit(Poweroff, &[
                "vCPU state: XSAVE",
                "(d1) Test result: SUCCESS",
                "Test result: SUCCESS",
            ]))
        },
        Scenario {
            dom0_args: "domexc",
            domus: &[("unpriv", "domU mem=8M weight=512")],
            ..sc("multi-domu-eperm", Image::Guest("watcher"), Expect::Exit(Poweroff, &[
                "(d1) Test result: SUCCESS",
                "d1 is dead (poweroff)",
                "Test result: SUCCESS",
            ]))
        },
        Scenario {
            dom0_args: "dom0",
            domus: &[("stackleak", "domU mem=8M -- domu")],
            ..sc("multi-stackleak", Image::Guest("stackleak"), Expect::Success)
        },
        Scenario {
            smp: 2,
            dom0_args: "dom0",
            domus: &[("stackleak", "domU mem=8M -- domu"), ("stackleak", "domU mem=8M -- domu")],
            ..sc("multi-stackleak-smp2", Image::Guest("stackleak"), Expect::Success)
        },
        Scenario { nmis: true, ..sc("nmi-console-flood", Image::Guest("conflood"), Expect::Success) },
        Scenario { nmis: true, smp: 2, ..sc("nmi-console-flood-smp2", Image::Guest("conflood"), Expect::Success) },
        Scenario {
            dom0_args: "interactive",
            input: Some(("dom0> ", "info\rpoweroff\r")),
            ..sc("dom0-console-input", Image::Dom0, Expect::Exit(Poweroff, &[
                "dom0> info",
                "hypervisor 4.19.0-rxen, dom0 at CPL 1",
                "dom0> poweroff",
            ]))
        },
        // `xl` in dom0's shell, typed on the serial line, with a boot-time domU. The crash
        // loop ends before the next command is typed (its log lines would land inside the
        // echo of what follows).
        Scenario {
            dom0_args: "interactive",
            domus: &[("spinner", "domU mem=8M")],
            bundle: true,
            input: Some((
                "dom0> ",
                "ls\rcat /etc/xen/spinner.cfg\rcat /etc/xen/nope.cfg\rxl create /etc/xen/nope.cfg\rxl create /etc/xen/crashloop.cfg\r\x1egiving up\rxl create /etc/xen/hello.cfg\rxl create /etc/xen/spinner.cfg\rxl create /etc/xen/spinner.cfg\rxl list\rxl destroy spinner\rxl list\rxl info\rxl pause 1\rxl list\rxl unpause 1\rxl sched-credit -d 1 -w 512 -c 50\rxl sched-credit\rxl vcpu-pin 1 0 0\rxl vcpu-list 1\rxl mem-max 1 16m\rxl pause 9\rxl frob\rxl dmesg\rxl destroy 1\rxl list\rpoweroff\r",
            )),
            ..sc("dom0-xl", Image::Dom0, Expect::Exit(Poweroff, &[
                "dom0: module 1 ('bundle",
                "dom0: boot bundle: ",
                "  /etc/xen/spinner.cfg",
                "  /boot/spinner",
                "kernel = \"/boot/spinner\"",
                "cat: /etc/xen/nope.cfg: no such file",
                "Failed to read config file: /etc/xen/nope.cfg: No such file or directory",
                "Parsing config from /etc/xen/spinner.cfg",
                // (Ids depend on when the restarts happen: the lines are matched without.)
                "v0 crashed: #UD with no handler registered",
                "crashed: restarted as domain ",
                "crashed again after 2 restarts in a row: giving up",
                "powered off: destroyed",
                "libxl: error: domain with name \"spinner\" already exists.",
                "\nspinner                                  ",
                "dom0> xl destroy spinner",
                "torn down; its id is free",
                "dom0> xl list",
                "Name                                        ID   Mem VCPUs\tState\tTime(s)",
                "Domain-0                                     0",
                "xen_scheduler          : credit",
                "nr_cpus                : 1",
                "--p---",
                "(null)                               1    512   50",
                "Name                                ID  VCPU   CPU State   Time(s) Affinity (Hard / Soft)",
                "'9' is an invalid domain identifier (rc=-6)",
                "command not implemented: frob",
                "(XEN) INF",
                "d1: destroyed by d0",
                "d1: torn down; its id is free",
                "dom0> poweroff",
            ]))
        },
        // 1000 `xl create` / `xl destroy` cycles of a 16 MiB domU with console and XenStore
        // rings: no page and no XenStore node leaks.
        Scenario {
            dom0_args: "bench-create 1000",
            hv_opts: "loglvl=warn",
            timeout_s: 240,
            bundle: true,
            ..sc("dom0-xl-cycles", Image::Dom0, Expect::Exit(Poweroff, &[
                "bench-create: 1000 create/destroy cycles; free pages ",
                "bench-create: no pages and no XenStore nodes leaked",
            ]))
        },
        // A hostile domU against dom0's XenStore daemon: refused, quota-limited, its broken
        // ring closed (an oversize request, then garbage indexes), while the benign domU
        // beside it is still served (its shutdown goes through XenStore).
        Scenario {
            dom0_args: "interactive",
            bundle: true,
            input: Some(("dom0> ", "xl create /etc/xen/echo.cfg\rxl create /etc/xen/xsprobe.cfg\rxl create /etc/xen/xshostile.cfg -c\r\r\r\r\r\r\r\r\r\r\r\r\rxl create /etc/xen/xshostile2.cfg -c\r\r\r\r\r\r\r\r\r\r\r\r\r\r\r\r\r\r\r\r\r\r\r\r\r\r\r\r\r\r\r\r\r\r\r\r\rxl console xsprobe\r\x1dxl destroy xsprobe\rxenstore-read /local/domain/1/data/hello\rxl shutdown -w echo\r\r\rxl list\rxenstore-ls /local/domain\rpoweroff\r")),
            ..sc("dom0-xs-hostile", Image::Dom0, Expect::ExitCheck(Poweroff, &XS_HOSTILE, probe_latency_bounded))
        },
        Scenario {
            dom0_args: "interactive",
            bundle: true,
            smp: 2,
            input: Some(("dom0> ", "xl create /etc/xen/echo.cfg\rxl create /etc/xen/xsprobe.cfg\rxl create /etc/xen/xshostile.cfg -c\r\r\r\r\r\r\r\r\r\r\r\r\rxl create /etc/xen/xshostile2.cfg -c\r\r\r\r\r\r\r\r\r\r\r\r\r\r\r\r\r\r\r\r\r\r\r\r\r\r\r\r\r\r\r\r\r\r\r\r\rxl console xsprobe\r\x1dxl destroy xsprobe\rxenstore-read /local/domain/1/data/hello\rxl shutdown -w echo\r\r\rxl list\rxenstore-ls /local/domain\rpoweroff\r")),
            ..sc("dom0-xs-hostile-smp2", Image::Dom0, Expect::ExitCheck(Poweroff, &XS_HOSTILE, probe_latency_bounded))
        },
        // xendomains: configs of the autostart directory start at boot. A preserved domain's
        // output stays readable after it shut down, until it is destroyed; `xl reboot` goes
        // through the guest (it acknowledges) and on_reboot restarts it.
        Scenario {
            dom0_args: "interactive xendomains=/etc/xen/auto-test",
            bundle: true,
            input: Some(("dom0> ", "xl list\rxl shutdown -w hello-auto\r\r\r\rxl list\rxl console hello-auto\r\x1dxl destroy hello-auto\rxl create /etc/xen/echo.cfg\rxl reboot echo\r\r\r\rxl list\rxl console echo\r\x1dxl destroy echo\rxl list\rpoweroff\r")),
            ..sc("dom0-autostart", Image::Dom0, Expect::Exit(Poweroff, &[
                "Parsing config from /etc/xen/auto-test/hello-auto.cfg",
                "\nhello-auto                                   1     8     1",
                "Domain 1 has been shut down, reason code 0",
                "xl: domain 'hello-auto' (1) powered off: preserved",
                "\nhello-auto                                   1     8     1     ---s--",
                // Its output after it shut down, while it is not destroyed yet.
                "dom0> xl console hello-auto\nxlguest: up on its console ring\nxlguest: I am 'hello-auto', domain 1\n",
                "xlguest: shutdown request (Poweroff) acknowledged",
                "d1: torn down; its id is free",
                "xl: domain 'echo' (1) rebooted: restarted as domain 1",
                "INF d1: shutdown: reason reboot",
                "dom0> xl list\nName                                        ID   Mem VCPUs\tState\tTime(s)\nDomain-0                                     0    32     1     r-----",
            ]))
        },
        // Weights set by the configs (and by `xl sched-credit`) are what the CPU splits by:
        // two spinners at 256 and 512 on one CPU, measured by `xl top`. (On more CPUs,
        // credit1 shares out the whole pool: two vCPUs pinned to one CPU of two each get
        // at least what that CPU gives, and split it evenly, as on Xen.)
        Scenario {
            dom0_args: "interactive",
            bundle: true,
            input: Some(("dom0> ", "xl create /etc/xen/share1.cfg\rxl create /etc/xen/share2.cfg\rxl sched-credit\rxl top\r\r\r\r\r\r\r\r\r\r\r\r\r\r\rxl top\rxl destroy share1\rxl destroy share2\rpoweroff\r")),
            ..sc("dom0-xl-shares", Image::Dom0, Expect::ExitCheck(Poweroff, &[
                "share2                               2    512    0",
                "      NAME  STATE   CPU(sec) CPU(%)     MEM(k) MEM(%)  MAXMEM(k) MAXMEM(%) VCPUS",
                "3 domains: ",
            ], shares_follow_weights))
        },
        // Three domUs that each hold all the XenStore memory their quotas allow: the third
        // runs into dom0's reserve (ENOMEM), dom0 stays up, and once they are destroyed the
        // others are served again.
        Scenario {
            dom0_args: "interactive",
            bundle: true,
            input: Some(("dom0> ", "xl create /etc/xen/echo.cfg\rxl create /etc/xen/xsmem1.cfg\r\r\r\r\r\r\r\r\r\r\rxl create /etc/xen/xsmem2.cfg\r\r\r\r\r\r\r\r\r\r\rxl create /etc/xen/xsmem3.cfg -c\r\r\r\r\r\r\r\r\r\r\r\x1dxl console xsmem1\r\x1dxl destroy xsmem1\rxl destroy xsmem2\rxl destroy xsmem3\rxl shutdown -w echo\r\r\r\rxl list\rxenstore-ls /local/domain\rpoweroff\r")),
            ..sc("dom0-xs-memory", Image::Dom0, Expect::Exit(Poweroff, &[
                "xshostile: domain 4 (memory)",
                "then Some(ENOMEM); holding them",
                "xl: domain 'echo' (1) powered off: destroyed",
                "dom0> xenstore-ls /local/domain\n0 = \"\"\n domid = \"0\"\n name = \"Domain-0\"\ndom0> ",
            ]))
        },
        // The toolstack end to end: domUs with console and XenStore rings, `xl console`,
        // the shutdown protocol, on_crash restart, XenStore from dom0's shell.
        Scenario {
            dom0_args: "interactive",
            bundle: true,
            input: Some((
                "dom0> ",
                "xl create /etc/xen/echo.cfg -c\rhello there\r\x1dxl list\r\x01\x01\x01hq\x01\x01\x01\rxl create /etc/xen/echo2.cfg\rxl list\rxenstore-read /local/domain/1/data/hello /local/domain/1/name\rxenstore-ls /local/domain/2\rxl console echo2\rcrash\rxl list\rxl console echo2\r\x1dxl shutdown -w echo\rxl list\rxl mem-set echo2 4m\rxenstore-read /local/domain/2/memory/target\rxl mem-set echo2 64m\rxl shutdown 0\rxl uptime\rxl destroy echo2\rxl list\rxenstore-ls /local/domain\rxenstore-ls /vm\rxenstore-write /local/domain/0/x y\rxenstore-read /local/domain/0/x\rxenstore-rm /local/domain/0/x\rxenstore-read /local/domain/0/x\rpoweroff\r",
            )),
            ..sc("dom0-console", Image::Dom0, Expect::Exit(Poweroff, &[
                "Parsing config from /etc/xen/echo.cfg",
                // `-c`: the guest's console, through its ring and dom0's backend.
                "xlguest: up on its console ring",
                "xlguest: I am 'echo', domain 1",
                "xlguest: write data/hello: Ok(())",
                "xlguest: write outside my subtree: Err(EACCES)",
                "xlguest: write my name: Err(EACCES)",
                "xlguest: grant to myself: table true, ref Some(8), read back 0x5eedf00d, end while mapped refused true, unmapped true, ended true",
                "xlguest: you typed 'hello there'",
                "\necho                                         1     8     1",
                // Ctrl-A x3: input to the hypervisor (its debug keys), and back.
                "*** Serial input to Xen (type 'CTRL-a' three times to switch input)",
                " key 'q' (ascii '71') => dump domain (and guest debug) info",
                "'q' pressed -> dumping domain info",
                "(XEN) INF d0: 8192 pages (max 8192), ",
                "(XEN) INF d1: 2048 pages",
                "*** Serial input to DOM0 (type 'CTRL-a' three times to switch input)",
                "\necho2                                        2     8     1",
                "dom0> xenstore-read /local/domain/1/data/hello /local/domain/1/name\nworld\necho\n",
                "store = \"\"",
                " ring-ref = \"",
                "control = \"\"",
                " shutdown = \"\"",
                // Its output while nobody was attached, shown at `xl console`.
                "dom0> xl console echo2\nxlguest: up on its console ring",
                "xlguest: I am 'echo2', domain 2",
                "xlguest: crashing as asked",
                // Ids are the lowest free: the restarted domain gets 2 again.
                "xl: domain 'echo2' (2) crashed: restarted as domain 2",
                "dom0> xl console echo2\nxlguest: up on its console ring\nxlguest: I am 'echo2', domain 2\n",
                "Waiting for 1 domains",
                "Domain 1 has been shut down, reason code 0",
                "xl: domain 'echo' (1) powered off: destroyed",
                "dom0> xenstore-read /local/domain/2/memory/target\n4096\n",
                "libxl: error: memory_static_max must be greater than or equal to memory_dynamic_max (65536 > 8192)",
                "libxl: error: domain 0 cannot be shut down with xl (use poweroff)",
                "Name                                ID Uptime",
                "d2: torn down; its id is free",
                "dom0> xenstore-ls /local/domain\n0 = \"\"\n domid = \"0\"\n name = \"Domain-0\"\ndom0> ",
                "dom0> xenstore-ls /vm\ndom0> ",
                "dom0> xenstore-read /local/domain/0/x\ny\n",
                "xenstore-read: couldn't read path /local/domain/0/x: ENOENT",
                "dom0> poweroff",
            ]))
        },
        sc("no-handler", Image::Guest("no_handler"), Expect::Exit(Crash, &[
            "d0v0 crashed: #UD with no handler registered",
            "rax 0x1122334455667788",
            "RIP e019:",
        ])),
        sc("bad-stack", Image::Guest("bad_stack"), Expect::Exit(Crash, &[
            "d0v0 crashed: cannot deliver #UD: kernel stack 0xffff8300000fffd8 unusable",
        ])),
        sc("garbage-dom0", Image::Garbage, Expect::Exit(BootRefused, &[
            "refused: bad image: not an ELF file (bad magic)",
        ])),
        sc("notes-missing-dom0", Image::HypervisorElf, Expect::Exit(BootRefused, &[
            "refused: bad image: missing Xen ELF note GUEST_OS",
        ])),
        Scenario {
            hv_opts: "dom0_mem=64G",
            ..sc("dom0-mem-too-large", Image::Dom0, Expect::Exit(BootRefused, &[
                "dom0_mem of 65536 MiB is more than the",
            ]))
        },
    ];
    // The toolstack end to end on 2 CPUs too.
    if let Some(one) = v.iter().find(|x| x.name == "dom0-console").cloned() {
        v.push(Scenario { name: "dom0-console-smp2", smp: 2, ..one });
    }
    v.extend(mm);
    v.extend(mm64);
    v.extend(failsafe);
    v.extend(gaps);
    v.extend(smp);
    v.extend(stress);
    v.extend(grants);
    v.extend(fifo);
    v.extend(toolstack);
    // The main GRUB-booted scenarios again under UEFI firmware (OVMF), on pc and q35: the
    // ISO's EFI image, GRUB's EFI memory map and ACPI tags.
    let uefi: Vec<Scenario> = ["boot-grub", "multi-pingpong", "multi-domu-crash-smp4", "dom0-xl"]
        .iter()
        .filter_map(|n| v.iter().find(|s| s.name == *n))
        .flat_map(|s| {
            [(None, ""), (Some("q35"), "-q35")].map(|(machine, sfx)| {
                let lines = |l: &'static [&'static str]| -> &'static [&'static str] { Box::leak([l, UEFI_BOOT].concat().into_boxed_slice()) };
                let expect = match s.expect {
                    Expect::Success => Expect::Exit(ExitCode::Poweroff, lines(&["Test result: SUCCESS"])),
                    Expect::Exit(c, l) => Expect::Exit(c, lines(l)),
                    Expect::ExitCheck(c, l, f) => Expect::ExitCheck(c, lines(l), f),
                    Expect::Ended(l) => Expect::Ended(lines(l)),
                    Expect::Halts(l) => Expect::Halts(lines(l)),
                };
                Scenario { name: Box::leak(format!("uefi-{}{sfx}", s.name).into_boxed_str()), uefi: true, machine, expect, timeout_s: s.timeout_s + 60, ..s.clone() }
            })
        })
        .collect();
    v.extend(uefi);
    let again: Vec<Scenario> = v.iter().filter(|s| PV64_REPEATS.iter().any(|r| s.name == *r || s.name.strip_prefix(r).is_some_and(|t| t.starts_with("-smp")))).map(in_pv64).collect();
    v.extend(again);
    v
}

/// What a UEFI boot logs: the firmware's memory map and GRUB's ACPI tag were used.
const UEFI_BOOT: &[&str] = &["memory map: the EFI memory map; ACPI RSDP: multiboot2's ACPI 2.0 tag"];

/// The hostile scenarios repeated with their test guests built for the Xen pv64 mode (each
/// also on the CPU counts it has, `-smpN`), named `pv64-<name>` (the memory-management
/// attacks are `mm64` above).
const PV64_REPEATS: &[&str] = &[
    "grant-self", "grant-race", "grant-race-v2", "grant-v2", "grant-cross", "hypercalls", "console-fault", "hv-memory",
    "privileged", "cpuid", "emulate", "events-timers", "vcpus", "multi-domu-crash", "multi-domu-eperm",
    "multi-stackleak", "multi-fpu-isolation", "multi-pingpong", "no-handler", "bad-stack", "fifo",
    "multi-masked-spinner", "nmi-console-flood", "toolstack-kill", "smp-stress-tables", "smp-stress-evtchn",
    "smp-stress-crash", "smp-stress-updown", "smp-stress-pollwake",
];

/// Of those, the ones whose dom0 stays a ring-1 domain: it looks at what the pv64 domUs
/// leave behind (the entry stacks, which a ring-3 kernel cannot read at all).
const PV64_DOMUS_ONLY: &[&str] = &["multi-stackleak"];

/// What a scenario's expected output says differently in the Xen pv64 mode: the kernel's
/// ring and code selector, and the kernel stack a fault's frame (two words more: RCX, R11)
/// would have been written at.
const PV64_OUTPUT: &[(&str, &str)] = &[("(CPL 1)", "(CPL 3)"), ("RIP e019:", "RIP e033:"), ("kernel stack 0xffff8300000fffd8", "kernel stack 0xffff8300000fffc8")];

/// A scenario with its test guests in the Xen pv64 mode (`<name>-pv64` builds): dom0 and
/// the domUs, but for the `watcher` dom0 and those of [`PV64_DOMUS_ONLY`], which stay
/// ring-1 domains.
fn in_pv64(s: &Scenario) -> Scenario {
    fn leak(x: String) -> &'static str {
        Box::leak(x.into_boxed_str())
    }
    let lines = |l: &'static [&'static str]| -> &'static [&'static str] {
        Box::leak(l.iter().map(|x| PV64_OUTPUT.iter().fold(x.to_string(), |x, (a, b)| x.replace(a, b))).map(leak).collect::<Vec<_>>().into_boxed_slice())
    };
    let mut c = s.clone();
    c.name = leak(format!("pv64-{}", s.name));
    c.expect = match s.expect {
        Expect::Success => Expect::Success,
        Expect::Exit(code, l) => Expect::Exit(code, lines(l)),
        Expect::ExitCheck(code, l, f) => Expect::ExitCheck(code, lines(l), f),
        Expect::Ended(l) => Expect::Ended(lines(l)),
        Expect::Halts(l) => Expect::Halts(lines(l)),
    };
    let domus_only = PV64_DOMUS_ONLY.iter().any(|r| s.name == *r || s.name.strip_prefix(r).is_some_and(|t| t.starts_with("-smp")));
    if let Image::Guest(n) = s.image {
        if n != "watcher" && !domus_only {
            c.image = Image::Guest(leak(format!("{n}-pv64")));
        }
    }
    c.domus = Box::leak(s.domus.iter().map(|&(k, a)| (leak(format!("{k}-pv64")), a)).collect::<Vec<_>>().into_boxed_slice());
    c
}

fn image_path(i: &Images, img: &Image) -> Result<PathBuf, String> {
    Ok(match img {
        Image::Dom0 => i.dom0.clone(),
        Image::Guest(n) => i.guest(n),
        Image::HypervisorElf => i.hypervisor.clone(),
        Image::Garbage => {
            let p = images::target().join("garbage.bin");
            let mut x: u32 = 0x1234_5678;
            let bytes: Vec<u8> = (0..8192)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            std::fs::write(&p, bytes).map_err(|e| e.to_string())?;
            p
        }
    })
}

/// Where a scenario's disk image is (a fresh 1 MiB of zeros at each run).
/// `debug-keys-smp2`: the figures behind the debug keys' headings: `q` lists dom0 with its
/// pages, `r` both CPUs' queues with dom0's vCPUs and their credit, `m` non-zero frame counts,
/// `d` a register dump from each CPU (a guest's or the hypervisor's, the latter with a
/// symbolised backtrace), `0` dom0's two vCPUs.
fn debug_keys_output(out: &str, _: Option<&std::path::Path>) -> Result<(), String> {
    let after = |head: &str| out.split_once(head).map(|x| x.1).ok_or_else(|| format!("no {head:?}"));
    let q = after("'q' pressed")?;
    if !q.lines().take(3).any(|l| l.contains("d0: ") && l.contains(" pages (max ") && l.contains("2 vCPU(s)")) {
        return Err("'q' does not list d0 with 2 vCPUs".into());
    }
    let r = after("'r' pressed")?;
    for cpu in ["CPU 0: ", "CPU 1: "] {
        if !r.lines().take(12).any(|l| l.contains(cpu)) {
            return Err(format!("'r' lacks {cpu}"));
        }
    }
    if !r.lines().take(12).any(|l| l.contains("d0v0") && l.contains("credit ")) || !r.lines().take(12).any(|l| l.contains("d0v1")) {
        return Err("'r' does not show dom0's vCPUs with their credit".into());
    }
    let m = after("'m' pressed")?;
    let frames = m.lines().find(|l| l.contains("frames: hypervisor ")).ok_or("'m' has no frame counts")?;
    let hv: u64 = frames.split("frames: hypervisor ").nth(1).and_then(|x| x.split(',').next()).and_then(|x| x.trim().parse().ok()).ok_or("bad frames line")?;
    let types = m.lines().find(|l| l.contains("types: writable ")).ok_or("no types line")?;
    if hv == 0 || !types.contains(", L4 ") || types.contains("L4 0,") {
        return Err(format!("'m' counts look wrong: {frames} / {types}"));
    }
    let d = after("'d' pressed")?;
    let d = d.split("'0' pressed").next().unwrap_or(d);
    for cpu in ["*** CPU 0: ", "*** CPU 1: "] {
        if !d.contains(cpu) {
            return Err(format!("'d' lacks {cpu}"));
        }
    }
    if !d.contains("RIP ") || !d.contains("rax ") {
        return Err("'d' printed no registers".into());
    }
    if d.contains("hypervisor state") && !d.split("Xen call trace:").nth(1).is_some_and(|t| t.lines().nth(1).is_some_and(|l| l.contains("+0x"))) {
        return Err("'d': a hypervisor-state dump without a symbolised backtrace".into());
    }
    let z = after("'0' pressed")?;
    for v in ["d0v0", "d0v1"] {
        if !z.lines().take(40).any(|l| l.contains(v)) {
            return Err(format!("'0' lacks {v}"));
        }
    }
    Ok(())
}

/// Where a screen scenario's captures go (`<this>-<n>.ppm`, `.mon`).
fn screen_path(name: &str) -> PathBuf {
    images::target().join("scenario-logs").join(format!("{name}-screen"))
}

/// The text of screen capture `n` at `base`: the framebuffer (PPM) read back cell by cell
/// with the hypervisor's font (8×16 cells, each glyph row twice; a cell no glyph matches
/// reads `?`), or, for VGA text mode (QEMU renders it 720×400), the text memory as the
/// monitor's `xp` printed it.
fn screen_text(base: &std::path::Path, n: usize) -> Result<Vec<String>, String> {
    let ppm = std::fs::read(format!("{}-{n}.ppm", base.display())).map_err(|e| format!("no screendump: {e}"))?;
    let mut fields = Vec::new();
    let mut at = 0;
    while fields.len() < 4 {
        while ppm.get(at).is_some_and(|c| c.is_ascii_whitespace()) {
            at += 1;
        }
        let start = at;
        while ppm.get(at).is_some_and(|c| !c.is_ascii_whitespace()) {
            at += 1;
        }
        fields.push(String::from_utf8_lossy(&ppm[start..at]).to_string());
    }
    let (w, h): (usize, usize) = (fields[1].parse().map_err(|_| "bad PPM")?, fields[2].parse().map_err(|_| "bad PPM")?);
    let px = &ppm[at + 1..];
    if fields[0] != "P6" || px.len() < w * h * 3 {
        return Err("not a P6 PPM".into());
    }
    if (w, h) == (720, 400) {
        let mon = std::fs::read_to_string(format!("{}-{n}.mon", base.display())).map_err(|e| e.to_string())?;
        let cells: Vec<u8> = mon
            .lines()
            .filter_map(|l| l.split_once(": ").filter(|(a, _)| a.trim_start_matches('0').starts_with("b8") || a.trim_start_matches('0').starts_with("b9")).map(|x| x.1))
            .flat_map(|words| words.split_whitespace().filter_map(|x| u16::from_str_radix(x.trim_start_matches("0x"), 16).ok()).map(|v| v as u8).collect::<Vec<_>>())
            .collect();
        return Ok(cells.chunks(80).map(|r| String::from_utf8_lossy(r).trim_end().to_string()).collect());
    }
    let lit = |x: usize, y: usize| px[(y * w + x) * 3..][..3].iter().map(|&c| c as u32).sum::<u32>() > 384;
    let glyphs = &font8x8::legacy::BASIC_LEGACY;
    let rows = (0..h / 16)
        .map(|r| {
            let line: String = (0..w / 8)
                .map(|c| {
                    let cell: Vec<u8> = (0..16).map(|y| (0..8).fold(0u8, |a, x| a | (u8::from(lit(c * 8 + x, r * 16 + y)) << x))).collect();
                    (0x20u8..0x7F).find(|&g| (0..16).all(|y| glyphs[g as usize][y / 2] == cell[y])).map_or('?', char::from)
                })
                .collect();
            line.trim_end().to_string()
        })
        .collect();
    Ok(rows)
}

/// The screen scenarios: capture 0 shows the hypervisor's log and the dom0 shell's `xl
/// list` typed on the keyboard, as COM1 does.
fn screen_shows_the_console(out: &str, base: Option<&std::path::Path>) -> Result<(), String> {
    let rows = screen_text(base.ok_or("no capture")?, 0)?;
    let has = |p: &dyn Fn(&str) -> bool, what: &str| rows.iter().any(|r| p(r)).then_some(()).ok_or_else(|| format!("the screen lacks {what}; it shows:\n{}", rows.join("\n")));
    has(&|r| r.contains("dom0> xl list"), "the typed 'dom0> xl list'")?;
    has(&|r| r.starts_with("Domain-0 ") || r.starts_with("Name "), "xl list's table")?;
    if !out.contains("dom0> xl list") {
        return Err("COM1 lacks the keyboard's 'xl list'".into());
    }
    Ok(())
}

fn disk_path(name: &str) -> PathBuf {
    images::target().join("scenario-disks").join(format!("{name}.img"))
}

/// The 64 KiB dom0's disk self-test wrote (`disk-test=<sector>`) are in the image file,
/// byte for byte (`dom0-kernel/src/disk.rs`'s pattern), and nothing else was written.
fn disk_holds_pattern(out: &str, disk: Option<&std::path::Path>) -> Result<(), String> {
    let sector: u64 = out
        .split("KiB written at sector ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .and_then(|n| n.parse().ok())
        .ok_or("no disk test result")?;
    // Each request interrupts about once: a level line left unmasked until the driver
    // quietens the device would fire again and again.
    let taken: u64 = out.lines().filter_map(|l| l.split("device interrupts: GSI ").nth(1)).filter_map(|r| r.split(": ").nth(1)?.trim().parse::<u64>().ok()).sum();
    if !(3..=12).contains(&taken) {
        return Err(format!("{taken} device interrupts for 3 requests"));
    }
    let img = std::fs::read(disk.ok_or("no disk")?).map_err(|e| e.to_string())?;
    let (start, len) = (sector as usize * 512, 64 << 10);
    for (i, &b) in img.iter().enumerate() {
        let off = i as u64;
        let want = if (start..start + len).contains(&i) { (off.wrapping_mul(7) ^ (off >> 9)) as u8 ^ 0xA5 } else { 0 };
        if b != want {
            return Err(format!("image byte {i:#x} is {b:#x}, want {want:#x}"));
        }
    }
    Ok(())
}

/// Sectors of the PV block scenario's disk and its partitions (first, last).
const GPT_SECTORS: u64 = 16384;
const GPT_PARTS: [(u64, u64); 2] = [(2048, 6143), (6144, 10239)];

/// An 8 MiB disk with a protective MBR and a GPT (primary only) of two 2 MiB partitions.
fn gpt_image() -> Vec<u8> {
    use toolstack::blkif::crc32;
    let mut img = vec![0u8; GPT_SECTORS as usize * 512];
    // Protective MBR: one partition of type 0xEE over the disk.
    img[446 + 4] = 0xEE;
    img[446 + 8..446 + 12].copy_from_slice(&1u32.to_le_bytes());
    img[446 + 12..446 + 16].copy_from_slice(&((GPT_SECTORS - 1) as u32).to_le_bytes());
    img[510] = 0x55;
    img[511] = 0xAA;
    let mut arr = vec![0u8; 128 * 128];
    for (k, &(first, last)) in GPT_PARTS.iter().enumerate() {
        let e = &mut arr[k * 128..(k + 1) * 128];
        e[..16].copy_from_slice(&[0xAF, 0x3D, 0xC6, 0x0F, 0x83, 0x84, 0x72, 0x47, 0x8E, 0x79, 0x3D, 0x69, 0xD8, 0x47, 0x7D, 0xE4]);
        e[16..32].copy_from_slice(&[k as u8 + 1; 16]);
        e[32..40].copy_from_slice(&first.to_le_bytes());
        e[40..48].copy_from_slice(&last.to_le_bytes());
    }
    let mut h = vec![0u8; 92];
    h[..8].copy_from_slice(b"EFI PART");
    h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
    h[12..16].copy_from_slice(&92u32.to_le_bytes());
    h[24..32].copy_from_slice(&1u64.to_le_bytes());
    h[32..40].copy_from_slice(&(GPT_SECTORS - 1).to_le_bytes());
    h[40..48].copy_from_slice(&34u64.to_le_bytes());
    h[48..56].copy_from_slice(&(GPT_SECTORS - 34).to_le_bytes());
    h[72..80].copy_from_slice(&2u64.to_le_bytes());
    h[80..84].copy_from_slice(&128u32.to_le_bytes());
    h[84..88].copy_from_slice(&128u32.to_le_bytes());
    h[88..92].copy_from_slice(&crc32(&arr).to_le_bytes());
    let c = crc32(&h);
    h[16..20].copy_from_slice(&c.to_le_bytes());
    img[512..512 + 92].copy_from_slice(&h);
    img[1024..1024 + arr.len()].copy_from_slice(&arr);
    img
}

/// The PV block scenario's disk afterwards: the partition table as written, each partition
/// holding exactly its domain's pattern, the persisted 256 KiB and its marker at sector
/// 12288, zeroes everywhere else (the read-only device's write and the hostile
/// frontend's changed nothing).
fn blk_image_as_written(_: &str, disk: Option<&std::path::Path>) -> Result<(), String> {
    let img = std::fs::read(disk.ok_or("no disk")?).map_err(|e| e.to_string())?;
    let fresh = gpt_image();
    let pattern = |seed: u8, off: u64| (off.wrapping_mul(13) ^ (off >> 11)) as u8 ^ seed;
    for (i, &b) in img.iter().enumerate() {
        let sector = i as u64 / 512;
        let want = match sector {
            0..=33 => fresh[i],
            s if (GPT_PARTS[0].0..=GPT_PARTS[0].1).contains(&s) => pattern(b'1', i as u64 - GPT_PARTS[0].0 * 512),
            s if (GPT_PARTS[1].0..=GPT_PARTS[1].1).contains(&s) => pattern(b'2', i as u64 - GPT_PARTS[1].0 * 512),
            12288..=12799 => pattern(b'P', i as u64),
            12800 => *b"RXENBLK1".get(i - 12800 * 512).unwrap_or(&0),
            _ => 0,
        };
        if b != want {
            return Err(format!("image byte {i:#x} (sector {sector}) is {b:#x}, want {want:#x}"));
        }
    }
    Ok(())
}

/// The config for a scenario.
fn config(i: &Images, s: &Scenario) -> Result<Config, String> {
    let module = image_path(i, &s.image)?;
    let mut cfg = Config::new(Accel::Tcg);
    cfg.timeout = Duration::from_secs(s.timeout_s);
    cfg.input = s.input;
    cfg.smp = s.smp;
    cfg.nmi_every = s.nmis.then_some(Duration::from_millis(2));
    cfg.machine = s.machine;
    cfg.uefi = s.uefi;
    cfg.vga = s.vga;
    cfg.keyboard = s.keyboard;
    cfg.capture = s.vga.map(|_| screen_path(s.name));
    if s.memory_mb != 0 {
        cfg.memory_mb = s.memory_mb;
    }
    cfg.net = s.net || s.host_net;
    let mut dom0_args = s.dom0_args.to_string();
    if s.host_net {
        cfg.forward = Some(qemu::free_port()?);
        cfg.get_after = Some(HTTP_LISTENING);
        let port = qemu::pattern_server(guest_abi::harness::net_pattern)?;
        dom0_args = format!("{dom0_args} host-port={port}");
    }
    let dom0_args = dom0_args.as_str();
    if s.disk {
        let p = disk_path(s.name);
        std::fs::create_dir_all(p.parent().unwrap_or(&p)).map_err(|e| e.to_string())?;
        std::fs::write(&p, if s.gpt { gpt_image() } else { vec![0u8; 1 << 20] }).map_err(|e| e.to_string())?;
        if s.disk_eio {
            let rules = p.with_extension("blkdebug");
            std::fs::write(&rules, "[inject-error]\nevent = \"read_aio\"\nerrno = \"5\"\nsector = \"1000\"\nonce = \"off\"\n").map_err(|e| e.to_string())?;
            cfg.disk_errors = Some(rules);
        }
        cfg.disk = Some(p);
    }
    // `audit`: every domain that dies is audited (the stress scenarios check the verdict).
    // dom0's own kernel (its image is ~11.5 MiB: heap, grant and DMA windows) gets 32 MiB;
    // a test guest as dom0 16 MiB.
    let mem = if matches!(s.image, Image::Dom0) { "32M" } else { "16M" };
    let debug_exit = if matches!(s.expect, Expect::Ended(_) | Expect::Halts(_)) { "" } else { "debug-exit " };
    let hv_opts = format!("{debug_exit}loglvl=info dom0_mem={mem} audit {}", s.hv_opts);
    cfg.boot = if !s.domus.is_empty() || s.bundle {
        let paths: Vec<(PathBuf, String)> = s.domus.iter().enumerate().map(|(k, (g, _))| (i.guest(g), format!("domu{k}"))).collect();
        let bundle = if s.bundle { Some(images::bundle(i)?) } else { None };
        let mut mods: Vec<(&str, &str)> = vec![("dom0", dom0_args)];
        if bundle.is_some() {
            mods.push(("bundle", "bundle"));
        }
        for (k, (_, args)) in s.domus.iter().enumerate() {
            mods.push((paths[k].1.as_str(), args));
        }
        let grub = images::grub_cfg_modules(&hv_opts, &mods);
        let mut files: Vec<(&std::path::Path, &str)> = vec![(module.as_path(), "dom0")];
        if let Some(b) = &bundle {
            files.push((b.as_path(), "bundle"));
        }
        files.extend(paths.iter().map(|(p, n)| (p.as_path(), n.as_str())));
        Boot::Iso(images::iso_files(&i.hypervisor, &files, &grub, &format!("test-{}", s.name))?)
    } else if s.grub {
        let grub = images::grub_cfg(&hv_opts, dom0_args);
        let bundle = images::bundle(i)?;
        Boot::Iso(images::iso_files(&i.hypervisor, &[(module.as_path(), "dom0"), (bundle.as_path(), "bundle")], &grub, &format!("test-{}", s.name))?)
    } else {
        let cmdline = if dom0_args.is_empty() { hv_opts } else { format!("{hv_opts} -- {dom0_args}") };
        Boot::Pvh { kernel: i.hypervisor.clone(), module, cmdline }
    };
    Ok(cfg)
}

/// `cargo xtask gdb` as a test: gdb attaches to the stopped machine, a hardware breakpoint
/// on `hv_main` is hit after GRUB's boot, the backtrace names it, and dom0's symbols are
/// loaded too (its entry point resolves).
fn gdb_attach(imgs: &Images) -> Result<(), String> {
    let s = Scenario { grub: true, ..sc("gdb-attach", Image::Dom0, Expect::Exit(ExitCode::Poweroff, &[])) };
    let mut cfg = config(imgs, &s)?;
    cfg.gdb_port = Some(qemu::free_port()?);
    let out = qemu::with_gdb(&cfg, &imgs.hypervisor, &imgs.dom0, Some(&["hbreak hv_main", "continue", "bt 1", "info symbol 0xffffffff80000000"]))?;
    std::fs::write(images::target().join("scenario-logs/gdb-attach.log"), &out).map_err(|e| e.to_string())?;
    for want in ["Breakpoint 1, hypervisor::hv_main", "#0  hypervisor::hv_main", "_start in section .text of"] {
        if !out.contains(want) {
            return Err(format!("gdb's output lacks {want:?}:\n{out}"));
        }
    }
    Ok(())
}

/// Judges an outcome; `Err` says why it failed.
fn judge(s: &Scenario, o: &qemu::Outcome) -> Result<(), String> {
    if o.timed_out && !matches!(s.expect, Expect::Halts(_)) {
        return Err("timed out".into());
    }
    if let Some(bad) = FORBIDDEN.iter().find(|b| o.output.contains(**b)) {
        return Err(format!("output has {bad:?}"));
    }
    match &s.expect {
        Expect::Success => {
            let verdict = o.output.lines().rev().find_map(|l| l.strip_prefix(VERDICT_PREFIX));
            match (verdict, o.code) {
                (Some("SUCCESS"), Some(ExitCode::Poweroff)) => Ok(()),
                (v, c) => Err(format!("verdict {:?}, exit {:?} (status {:?})", v, c, o.status)),
            }
        }
        Expect::Halts(needles) => {
            if !o.timed_out {
                return Err(format!("QEMU ended (status {:?}): the machine was to stay halted", o.status));
            }
            lines_present_and_absent(&o.output, needles)
        }
        Expect::Ended(needles) => {
            if o.code.is_some() || o.status != Some(0) {
                return Err(format!("QEMU ended with status {:?} ({:?}), want 0: the machine did not power off or reset by itself", o.status, o.code));
            }
            lines_present_and_absent(&o.output, needles)
        }
        Expect::Exit(code, needles) | Expect::ExitCheck(code, needles, _) => {
            if let Expect::ExitCheck(_, _, check) = &s.expect {
                if o.code == Some(*code) {
                    let disk = s.disk.then(|| disk_path(s.name)).or_else(|| s.vga.map(|_| screen_path(s.name)));
                    check(&o.output, disk.as_deref())?;
                }
            }
            if o.code != Some(*code) {
                return Err(format!("exit {:?} (status {:?}), want {:?}", o.code, o.status, code));
            }
            lines_present_and_absent(&o.output, needles)
        }
    }
}

/// Each of `needles` is in `out`, but those starting with `!`, which must not be.
fn lines_present_and_absent(out: &str, needles: &[&str]) -> Result<(), String> {
    for n in needles {
        match n.strip_prefix('!') {
            Some(absent) if out.contains(absent) => return Err(format!("output has {absent:?}")),
            Some(_) => {}
            None if !out.contains(n) => return Err(format!("output lacks {n:?}")),
            None => {}
        }
    }
    Ok(())
}

/// `dom0-xl-shares`: on the last `xl top` screen, share2 (weight 512) had about twice the
/// CPU of share1 (weight 256), both pinned to CPU 0 (the scheduler's own CPU-time
/// accounting, which host stalls under TCG do not skew).
fn shares_follow_weights(out: &str, _: Option<&std::path::Path>) -> Result<(), String> {
    let screen = out.rsplit("dom0> xl top").next().unwrap_or("");
    let pct = |name: &str| {
        screen
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .and_then(|l| l.split_whitespace().nth(3))
            .and_then(|v| v.parse::<f64>().ok())
            .ok_or_else(|| format!("no CPU(%) of {name} on the last xl top screen"))
    };
    let (a, b) = (pct("share1")?, pct("share2")?);
    let ratio = b / a.max(0.1);
    if !(1.4..=2.8).contains(&ratio) || a + b < 60.0 {
        return Err(format!("shares do not follow weights 256:512: share1 {a}%, share2 {b}% (ratio {ratio:.2})"));
    }
    Ok(())
}

/// `dom0-xs-hostile`: the benign probe's XenStore reads, taken while the hostile domUs
/// flooded the daemon, all answered and none slower than 100 ms.
fn probe_latency_bounded(out: &str, _: Option<&std::path::Path>) -> Result<(), String> {
    let l = out.lines().find(|l| l.starts_with("xsprobe: ")).ok_or("no xsprobe figures")?;
    let num = |after: &str| l.split(after).nth(1).and_then(|r| r.split_whitespace().next()).and_then(|v| v.trim_start_matches('(').parse::<u64>().ok());
    let (n, failed, worst) = (num("xsprobe: "), num("("), num("worst "));
    match (n, failed, worst) {
        (Some(n), Some(0), Some(w)) if n > 100 && w < 100_000 => Ok(()),
        _ => Err(format!("the probe's XenStore latency is not bounded: {l}")),
    }
}

/// What `dom0-xs-hostile` must show.
const XS_HOSTILE: [&str; 16] = [
    "xshostile: domain 3 (oversize)",
    "xshostile-oversize: 17 checks, 0 failed",
    "xshostile-indexes: 17 checks, 0 failed",
    "xenconsoled: d3: console ring indexes out of range",
    "xshostile: console ring indexes garbled: the backend carried on",
    "transactional writes of 2 KiB in 10 transactions, then None",
    "xshostile: watches refused from #Some((128, E2BIG))",
    "xshostile: transactions refused from #Some((10, ENOSPC))",
    "xshostile: ring error 3 (want 3)",
    "xenstored: d3: ring broken (Protocol)",
    "xshostile: domain 3 (indexes)",
    "xshostile: ring error 2 (want 2)",
    "xenstored: d3: ring broken (BadIndex)",
    "dom0> xenstore-read /local/domain/1/data/hello\nworld\n",
    "xl: domain 'echo' (1) powered off: destroyed",
    "dom0> xenstore-ls /local/domain\n0 = \"\"\n domid = \"0\"\n name = \"Domain-0\"\ndom0> ",
];

/// `pv64-domu`: the Xen pv64 test kernel built by dom0's toolstack passes all its checks.
const PV64_DOMU: [&str; 6] = [
    "d1: created by d0 (1 vCPU(s), paused, Xen pv64 mode)",
    "audit d1: 2050 frames, 12 tables: counts consistent",
    "(d1) --- pv64 (CS 0xe033) ---",
    "(d1) pv64: back from user mode (7 traps)",
    "(d1) Test result: SUCCESS",
    "torn down; its id is free",
];

/// Lines no scenario may print: hypervisor complaints that mean its own state went wrong
/// (an audit of a dead domain's reference counts that found them off, with `audit`).
const FORBIDDEN: &[&str] = &["is not waiting", "INCONSISTENT"];

/// The host crates (tested and linted for the host) and the bare-metal ones.
const HOST_EXCLUDES: [&str; 18] = [
    "--exclude", "hypervisor", "--exclude", "hv-arch", "--exclude", "pv-runtime", "--exclude", "pv-heap", "--exclude", "pv-devices", "--exclude", "pv-net", "--exclude", "dom0-kernel", "--exclude", "test-guests", "--exclude", "test-pv64",
];
const BARE_METAL: [&str; 18] = ["-p", "hypervisor", "-p", "hv-arch", "-p", "pv-runtime", "-p", "pv-heap", "-p", "pv-devices", "-p", "pv-net", "-p", "dom0-kernel", "-p", "test-guests", "-p", "test-pv64"];

fn cargo(args: &[&str]) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let st = Command::new(cargo).current_dir(images::root()).args(args).status().map_err(|e| e.to_string())?;
    if st.success() {
        Ok(())
    } else {
        Err(format!("cargo {} failed", args.join(" ")))
    }
}

/// Clippy with warnings denied on every crate: the host crates (with their tests) and the
/// bare-metal ones for their target.
pub fn clippy() -> Result<(), String> {
    let mut host = vec!["clippy", "--workspace", "--all-targets"];
    host.extend(HOST_EXCLUDES);
    host.extend(["--", "-D", "warnings"]);
    cargo(&host)?;
    let mut bare = vec!["clippy", "--release", "--target", "x86_64-unknown-none"];
    bare.extend(BARE_METAL);
    bare.extend(["--", "-D", "warnings"]);
    cargo(&bare)
}

fn host_tests() -> Result<(), String> {
    let mut args = vec!["test", "--workspace"];
    args.extend(HOST_EXCLUDES);
    cargo(&args)?;
    loom_tests()
}

/// The lock-free protocols under the loom model checker (`--cfg loom` rebuilds hv-core with
/// loom's atomics; a separate target directory keeps the normal build's cache).
fn loom_tests() -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let dir = images::target().join("loom");
    let st = Command::new(cargo)
        .current_dir(images::root())
        .env("RUSTFLAGS", "--cfg loom")
        .args(["test", "--release", "-p", "hv-core", "--test", "shootdown_loom", "--target-dir"])
        .arg(&dir)
        .status()
        .map_err(|e| e.to_string())?;
    if st.success() { Ok(()) } else { Err("the loom model checks failed".into()) }
}

pub fn run_all(args: &[String]) -> Result<(), String> {
    let only = args.iter().position(|a| a == "--only").and_then(|i| args.get(i + 1)).cloned();
    // `--smp N`: every single-CPU scenario on N CPUs instead (the others are skipped).
    let smp: Option<u32> = args.iter().position(|a| a == "--smp").and_then(|i| args.get(i + 1)).and_then(|n| n.parse().ok());
    if !args.iter().any(|a| a == "--no-host") && only.is_none() {
        clippy()?;
        crate::layers::check(&images::root())?;
        host_tests()?;
    }
    let imgs = images::build_all()?;
    let log_dir = images::target().join("scenario-logs");
    std::fs::create_dir_all(&log_dir).map_err(|e| e.to_string())?;
    let (mut passed, mut failed) = (0, 0);
    for mut s in scenarios() {
        if only.as_deref().is_some_and(|o| !s.name.starts_with(o)) {
            continue;
        }
        if let Some(n) = smp {
            if s.smp != 1 {
                continue;
            }
            s.smp = n;
            s.name = Box::leak(format!("{}-as-smp{n}", s.name).into_boxed_str());
        }
        let cfg = config(&imgs, &s)?;
        let o = qemu::run(&cfg, None)?;
        std::fs::write(log_dir.join(format!("{}.log", s.name)), &o.output).map_err(|e| e.to_string())?;
        match judge(&s, &o) {
            Ok(()) => {
                passed += 1;
                println!("PASS {:<22} {:>6} ms", s.name, o.wall.as_millis());
            }
            Err(why) => {
                failed += 1;
                println!("FAIL {:<22} {:>6} ms: {}", s.name, o.wall.as_millis(), why);
                for l in o.output.lines().rev().take(30).collect::<Vec<_>>().into_iter().rev() {
                    println!("    | {l}");
                }
            }
        }
    }
    if only.as_deref().is_none_or(|o| "gdb-attach".starts_with(o)) && smp.is_none() {
        let t0 = std::time::Instant::now();
        match gdb_attach(&imgs) {
            Ok(()) => {
                passed += 1;
                println!("PASS {:<22} {:>6} ms", "gdb-attach", t0.elapsed().as_millis());
            }
            Err(why) => {
                failed += 1;
                println!("FAIL {:<22} {:>6} ms: {}", "gdb-attach", t0.elapsed().as_millis(), why);
            }
        }
    }
    println!("scenarios: {passed} passed, {failed} failed");
    if failed == 0 && passed > 0 {
        Ok(())
    } else {
        Err(format!("{failed} scenario(s) failed"))
    }
}
