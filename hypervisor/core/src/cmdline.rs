//! The hypervisor command line.
//!
//! Options are space separated `name` or `name=value` words. Anything after a lone `--` is
//! dom0's command line when the bootloader gives the dom0 module no string of its own (the
//! PVH path). Recognised options:
//!
//! - `loglvl=<error|warn|info|debug|trace>`: console verbosity (default `info`).
//! - `dom0_mem=<size>`: dom0's memory, with a `K`, `M` or `G` suffix (default 64M).
//! - `debug-exit`: under QEMU, end the run through isa-debug-exit when dom0 shuts down.
//! - `cpus=<n>`: use at most `n` CPUs (default: every CPU the ACPI MADT lists).
//! - `dom0_max_vcpus=<n>`: dom0's vCPU count (as Xen; default: one per CPU in use).
//! - `dom0_vcpus_pin`: dom0's vCPU n runs only on CPU n (as Xen's option of that name).
//! - `reboot=<acpi|kbd|triple|no>` (or Xen's first letters `a`, `k`, `t`, `n`): the way to
//!   restart the machine tried first (default `acpi`: the FADT's reset register, then the
//!   keyboard controller, then a triple fault); `no` halts instead.
//! - `noreboot`: after a crash of dom0 or of the hypervisor, halt rather than restart the
//!   machine five seconds later (as Xen's option of that name).
//! - `debug-crash=<panic|fault>` (tests): a deliberate hypervisor panic or page fault once
//!   the CPUs are up, to show the fatal-error report (registers, symbolised backtrace).
//! - `bench`: benchmark mode: measure a CR3 switch pair at boot and open the baseline gates
//!   (vectors [`BENCH_VECTOR`] at DPL 1 and `BENCH_VECTOR + 1` at DPL 3, each a lone
//!   `iretq`) for `cargo xtask bench`.

/// Console verbosity.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

/// Default dom0 memory.
pub const DEFAULT_DOM0_MEM: u64 = 64 << 20;

/// Vector of the benchmark-only baseline gate.
pub const BENCH_VECTOR: u8 = 0x83;

/// The ways to restart the machine, in the order tried by default.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum RebootMethod {
    /// The FADT's reset register.
    Acpi,
    /// The i8042 keyboard controller's reset line.
    Kbd,
    /// A triple fault.
    Triple,
    /// Do not restart: halt.
    No,
}

impl RebootMethod {
    fn parse(v: &str) -> Option<RebootMethod> {
        match v {
            "acpi" | "a" => Some(RebootMethod::Acpi),
            "kbd" | "k" => Some(RebootMethod::Kbd),
            "triple" | "t" => Some(RebootMethod::Triple),
            "no" | "n" => Some(RebootMethod::No),
            _ => None,
        }
    }

    /// The methods tried when `self` is the first: `self`, then the others in the default
    /// order, the triple fault (which cannot fail) always last (`No` alone).
    pub fn chain(self) -> impl Iterator<Item = RebootMethod> {
        let all = [RebootMethod::Acpi, RebootMethod::Kbd, RebootMethod::Triple];
        let first = core::iter::once(self);
        let rest = all.into_iter().filter(move |&m| m != self && self != RebootMethod::No && self != RebootMethod::Triple);
        first.chain(rest)
    }
}

/// Parsed options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options<'a> {
    pub loglvl: LogLevel,
    pub dom0_mem: u64,
    pub debug_exit: bool,
    pub bench: bool,
    /// The restart method tried first.
    pub reboot: RebootMethod,
    /// Halt, not restart, after a crash.
    pub noreboot: bool,
    /// Audit every dead domain's frame counts once its vCPUs are off the CPUs (a scan of
    /// the whole frame table under the hypervisor lock: for tests and debugging).
    pub audit: bool,
    /// Most CPUs to use (0 = all).
    pub cpus: usize,
    /// dom0's vCPUs (0 = one per CPU).
    pub dom0_max_vcpus: u32,
    /// Pin dom0's vCPU n to CPU n.
    pub dom0_vcpus_pin: bool,
    /// Test only: end the boot with a deliberate hypervisor panic (`debug-crash=panic`) or
    /// page fault (`debug-crash=fault`), to show the fatal-error report.
    pub debug_crash: Option<&'a str>,
    /// Test only: abandon the start of this CPU at once, as after a timeout, so that the AP
    /// arrives late (0 = none).
    pub ap_late: usize,
    /// Text after ` -- `, if any.
    pub dom0_cmdline: Option<&'a str>,
    /// The first option not understood, to be reported.
    pub unknown: Option<&'a str>,
}

/// Parses a size such as `64M`, `1G`, `4096`, `512k`.
pub fn parse_size(s: &str) -> Option<u64> {
    let (num, shift) = match s.as_bytes().last()? {
        b'k' | b'K' => (&s[..s.len() - 1], 10),
        b'm' | b'M' => (&s[..s.len() - 1], 20),
        b'g' | b'G' => (&s[..s.len() - 1], 30),
        b't' | b'T' => (&s[..s.len() - 1], 40),
        _ => (s, 0),
    };
    let n: u64 = num.parse().ok()?;
    n.checked_mul(1u64 << shift)
}

/// Parses the whole command line.
pub fn parse(cmdline: &str) -> Options<'_> {
    // A lone `--` word splits the line (at the start, in the middle or at the end).
    let padded_start = cmdline.starts_with("--") && cmdline[2..].chars().next().is_none_or(|c| c == ' ');
    let (own, dom0) = if padded_start {
        ("", Some(cmdline[2..].trim()))
    } else if let Some(i) = cmdline.find(" -- ") {
        (&cmdline[..i], Some(cmdline[i + 4..].trim()))
    } else if let Some(own) = cmdline.strip_suffix(" --") {
        (own, Some(""))
    } else {
        (cmdline, None)
    };
    let mut o = Options {
        loglvl: LogLevel::Info,
        dom0_mem: DEFAULT_DOM0_MEM,
        debug_exit: false,
        bench: false,
        reboot: RebootMethod::Acpi,
        noreboot: false,
        audit: false,
        cpus: 0,
        dom0_max_vcpus: 0,
        dom0_vcpus_pin: false,
        ap_late: 0,
        debug_crash: None,
        dom0_cmdline: dom0,
        unknown: None,
    };
    for word in own.split_ascii_whitespace() {
        let (k, v) = match word.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (word, None),
        };
        let ok = match (k, v) {
            ("loglvl", Some(v)) => {
                let l = match v {
                    "error" => Some(LogLevel::Error),
                    "warn" | "warning" => Some(LogLevel::Warn),
                    "info" => Some(LogLevel::Info),
                    "debug" => Some(LogLevel::Debug),
                    "trace" | "all" => Some(LogLevel::Trace),
                    _ => None,
                };
                l.map(|l| o.loglvl = l).is_some()
            }
            ("dom0_mem", Some(v)) => parse_size(v).map(|s| o.dom0_mem = s).is_some(),
            ("dom0_vcpus_pin", None) => {
                o.dom0_vcpus_pin = true;
                true
            }
            ("dom0_max_vcpus", Some(v)) => v.parse().ok().filter(|&n: &u32| n >= 1).map(|n| o.dom0_max_vcpus = n).is_some(),
            ("cpus", Some(v)) => v.parse().ok().filter(|&n: &usize| n >= 1).map(|n| o.cpus = n).is_some(),
            ("debug-ap-late", Some(v)) => v.parse().ok().filter(|&n: &usize| n >= 1).map(|n| o.ap_late = n).is_some(),
            ("debug-crash", Some(v @ ("panic" | "fault"))) => {
                o.debug_crash = Some(v);
                true
            }
            ("debug-exit", None) => {
                o.debug_exit = true;
                true
            }
            ("reboot", Some(v)) => RebootMethod::parse(v).map(|m| o.reboot = m).is_some(),
            ("noreboot", None) => {
                o.noreboot = true;
                true
            }
            ("bench", None) => {
                o.bench = true;
                true
            }
            ("audit", None) => {
                o.audit = true;
                true
            }
            _ => false,
        };
        if !ok && o.unknown.is_none() {
            o.unknown = Some(word);
        }
    }
    o
}

/// Parses a CPU list such as `0`, `0-2`, `1,3` or `0-1,4` into a bit mask (CPUs 0-63);
/// `None` for anything else, an empty list, or a CPU above 63 (`guest_abi::cpulist`, the
/// syntax xl shares).
pub fn parse_cpu_list(s: &str) -> Option<u64> {
    guest_abi::cpulist::parse(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0"), Some(1));
        assert_eq!(parse_cpu_list("0-2"), Some(0b111));
        assert_eq!(parse_cpu_list("1,3"), Some(0b1010));
        assert_eq!(parse_cpu_list("0-1,4"), Some(0b10011));
        for bad in ["", "x", "2-1", "64", "0-64", "1,", "-1", "0--1"] {
            assert_eq!(parse_cpu_list(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn options() {
        let o = parse("loglvl=debug dom0_mem=32M debug-exit -- shutdown quiet");
        assert_eq!(o.loglvl, LogLevel::Debug);
        assert_eq!(o.dom0_mem, 32 << 20);
        assert!(o.debug_exit);
        assert_eq!(o.dom0_cmdline, Some("shutdown quiet"));
        assert_eq!(o.unknown, None);
        assert_eq!(parse("cpus=2").cpus, 2);
        assert_eq!(parse("dom0_max_vcpus=3").dom0_max_vcpus, 3);
        assert!(parse("dom0_vcpus_pin").dom0_vcpus_pin);
        assert_eq!(parse("dom0_vcpus_pin=1").unknown, Some("dom0_vcpus_pin=1"));
        assert_eq!(parse("dom0_max_vcpus=0").unknown, Some("dom0_max_vcpus=0"));
        assert_eq!(parse("cpus=0").unknown, Some("cpus=0"));
        let o = parse("loglvl=loud frobnicate");
        assert_eq!(o.loglvl, LogLevel::Info);
        assert_eq!(o.unknown, Some("loglvl=loud"));
        assert_eq!(parse("").dom0_mem, DEFAULT_DOM0_MEM);
        assert_eq!(parse("-- x").dom0_cmdline, Some("x"));
        assert_eq!(parse("--").dom0_cmdline, Some(""));
        let o = parse("debug-exit --");
        assert!(o.debug_exit && o.unknown.is_none());
        assert_eq!(o.dom0_cmdline, Some(""));
        assert_eq!(parse("--x").unknown, Some("--x"));
        assert_eq!(parse("debug-ap-late=2").ap_late, 2);
        assert_eq!(parse("debug-ap-late=0").unknown, Some("debug-ap-late=0"));
        assert_eq!(parse_size("1G"), Some(1 << 30));
        assert_eq!(parse_size("99999999999T"), None);
        assert_eq!(parse_size("M"), None);
    }

    #[test]
    fn reboot_methods() {
        use RebootMethod::*;
        assert_eq!(parse("").reboot, Acpi);
        assert!(!parse("").noreboot && parse("noreboot").noreboot);
        assert_eq!(parse("reboot=k").reboot, Kbd);
        assert_eq!(parse("reboot=triple").reboot, Triple);
        assert_eq!(parse("reboot=bios").unknown, Some("reboot=bios"));
        let chain = |m: RebootMethod| m.chain().collect::<std::vec::Vec<_>>();
        assert_eq!(chain(Acpi), [Acpi, Kbd, Triple]);
        assert_eq!(chain(Kbd), [Kbd, Acpi, Triple]);
        assert_eq!(chain(Triple), [Triple]);
        assert_eq!(chain(No), [No]);
        assert_eq!(parse("debug-crash=fault").debug_crash, Some("fault"));
        assert_eq!(parse("debug-crash=oops").unknown, Some("debug-crash=oops"));
    }
}
