//! `xl`'s verbs as dom0's shell takes them: the command line parsed (errors in xl's words,
//! nothing done), and the tables printed in xl's shapes. The hypercalls are the caller's.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use guest_abi::domctl::info;
use guest_abi::sched::ShutdownReason;

/// A domain named on the command line: its id, or its name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DomRef {
    Id(u16),
    Name(String),
}

/// A parsed `xl` command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cmd {
    List,
    Info,
    Dmesg { clear: bool },
    Pause(DomRef),
    Unpause(DomRef),
    Destroy(DomRef),
    VcpuList(Option<DomRef>),
    /// `vcpu-pin <dom> <vcpu|all> <cpus>`: a hard affinity bitmap.
    VcpuPin(DomRef, Option<u32>, u64),
    /// `sched-credit [-d dom [-w weight] [-c cap]]`.
    SchedCredit { dom: Option<DomRef>, weight: Option<u16>, cap: Option<u16> },
    /// `mem-max <dom> <size>`: KiB.
    MemMax(DomRef, u64),
    /// `mem-set <dom> <size>`: KiB (the balloon target, `memory/target`).
    MemSet(DomRef, u64),
    /// `create <config> [-c] [Variable=Value ...]`.
    Create { config: String, console: bool, overrides: Vec<String> },
    /// `console <dom>`.
    Console(DomRef),
    /// `shutdown [-w] <dom>` / `reboot [-w] <dom>`: asked through `control/shutdown`.
    Shutdown { dom: DomRef, reboot: bool, wait: bool },
    Uptime(Option<DomRef>),
    /// `top`: one `xentop` screen.
    Top,
    /// `block-list <dom>`.
    BlockList(DomRef),
    /// `block-attach <dom> <disk spec>` (the spec's fields may be given as separate words).
    BlockAttach(DomRef, String),
    /// `block-detach [-f] <dom> <vdev|devid>`: the virtual device number; `-f` detaches
    /// without waiting for the frontend.
    BlockDetach(DomRef, u32, bool),
    /// `network-list <dom>`.
    NetworkList(DomRef),
    /// `network-attach <dom> <vif spec>` (its `key=value` fields may be separate words).
    NetworkAttach(DomRef, String),
    /// `network-detach [-f] <dom> <devid|mac>`: `-f` removes it without waiting for the
    /// frontend (as `block-detach -f`).
    NetworkDetach(DomRef, String, bool),
    Help,
}

/// The verbs (for `xl help`).
pub const VERBS: &[(&str, &str)] = &[
    ("create", "Create a domain from config file <filename>"),
    ("list", "List information about all domains"),
    ("info", "Get information about Xen host"),
    ("dmesg", "Read and/or clear dmesg buffer"),
    ("pause", "Pause execution of a domain"),
    ("unpause", "Unpause a paused domain"),
    ("destroy", "Terminate a domain immediately"),
    ("vcpu-list", "List the VCPUs for all/some domains"),
    ("vcpu-pin", "Set which CPUs a VCPU can use"),
    ("sched-credit", "Get/set credit scheduler parameters"),
    ("mem-max", "Set the maximum amount reservation for a domain"),
    ("mem-set", "Set the current memory usage for a domain"),
    ("console", "Attach to domain's console"),
    ("shutdown", "Issue a shutdown signal to a domain"),
    ("reboot", "Issue a reboot signal to a domain"),
    ("uptime", "Print uptime for all/some domains"),
    ("top", "Monitor a host and the domains in real time"),
    ("block-attach", "Create a new virtual block device"),
    ("block-detach", "Destroy a domain's virtual block device"),
    ("block-list", "List virtual block devices for a domain"),
    ("network-attach", "Create a new virtual network device"),
    ("network-list", "List virtual network interfaces for a domain"),
    ("network-detach", "Destroy a domain's virtual network device"),
];

fn dom(s: &str) -> DomRef {
    match s.parse::<u16>() {
        Ok(id) => DomRef::Id(id),
        Err(_) => DomRef::Name(s.to_string()),
    }
}

fn need(verb: &str, args: &[&str], n: usize) -> Result<(), String> {
    if args.len() < n {
        return Err(format!("'xl {}' requires at least {} argument{}.", verb, n, if n == 1 { "" } else { "s" }));
    }
    Ok(())
}

/// A CPU list (`all`, `3`, `0-2,5`) as a bitmap of up to 64 CPUs.
pub fn cpu_map(s: &str) -> Option<u64> {
    if s == "all" {
        return Some(u64::MAX);
    }
    guest_abi::cpulist::parse(s)
}

/// A memory size as xl takes it: a number with an optional `k`/`m`/`g` suffix (default
/// MiB), in KiB.
pub fn mem_kib(s: &str) -> Option<u64> {
    let (n, mul) = match s.as_bytes().last()? {
        b'k' | b'K' => (&s[..s.len() - 1], 1),
        b'm' | b'M' => (&s[..s.len() - 1], 1024),
        b'g' | b'G' => (&s[..s.len() - 1], 1024 * 1024),
        _ => (s, 1024),
    };
    n.parse::<u64>().ok()?.checked_mul(mul)
}

/// Parses `xl`'s arguments (the words after `xl`).
pub fn parse(words: &[&str]) -> Result<Cmd, String> {
    let Some((&verb, args)) = words.split_first() else { return Ok(Cmd::Help) };
    Ok(match verb {
        "help" => Cmd::Help,
        "list" => Cmd::List,
        "info" => Cmd::Info,
        "dmesg" => match args {
            [] => Cmd::Dmesg { clear: false },
            ["-c"] => Cmd::Dmesg { clear: true },
            _ => return Err("usage: xl dmesg [-c]".into()),
        },
        "pause" | "unpause" | "destroy" => {
            need(verb, args, 1)?;
            let d = dom(args[0]);
            match verb {
                "pause" => Cmd::Pause(d),
                "unpause" => Cmd::Unpause(d),
                _ => Cmd::Destroy(d),
            }
        }
        "vcpu-list" => Cmd::VcpuList(args.first().map(|a| dom(a))),
        "vcpu-pin" => {
            need(verb, args, 3)?;
            let vcpu = match args[1] {
                "all" => None,
                v => Some(v.parse::<u32>().map_err(|_| format!("Invalid vcpu '{}'.", v))?),
            };
            let cpus = cpu_map(args[2]).filter(|&m| m != 0).ok_or_else(|| format!("Invalid cpu list '{}'.", args[2]))?;
            Cmd::VcpuPin(dom(args[0]), vcpu, cpus)
        }
        "sched-credit" => {
            let (mut d, mut weight, mut cap) = (None, None, None);
            let mut it = args.iter();
            while let Some(&a) = it.next() {
                let mut val = || it.next().copied().ok_or_else(|| format!("option '{}' requires an argument", a));
                match a {
                    "-d" | "--domain" => d = Some(dom(val()?)),
                    "-w" | "--weight" => {
                        let v = val()?;
                        weight = Some(v.parse::<u16>().ok().filter(|&w| w > 0).ok_or_else(|| format!("Invalid weight '{}': 1..65535.", v))?);
                    }
                    "-c" | "--cap" => {
                        let v = val()?;
                        cap = Some(v.parse::<u16>().map_err(|_| format!("Invalid cap '{}'.", v))?);
                    }
                    _ => return Err(format!("sched-credit: unknown option '{}'", a)),
                }
            }
            if (weight.is_some() || cap.is_some()) && d.is_none() {
                return Err("Must specify a domain.".into());
            }
            Cmd::SchedCredit { dom: d, weight, cap }
        }
        "create" => {
            let console = args.contains(&"-c");
            let files: Vec<&&str> = args.iter().filter(|a| !a.starts_with('-') && !a.contains('=')).collect();
            let overrides: Vec<String> = args.iter().filter(|a| !a.starts_with('-') && a.contains('=')).map(|a| a.to_string()).collect();
            if let Some(bad) = args.iter().find(|a| a.starts_with('-') && **a != "-c") {
                return Err(format!("create: unknown option '{}'", bad));
            }
            match files.as_slice() {
                [f] => Cmd::Create { config: f.to_string(), console, overrides },
                [] => return Err("'xl create' requires a config file.".into()),
                _ => return Err("create: one config file only".into()),
            }
        }
        "mem-max" | "mem-set" => {
            need(verb, args, 2)?;
            let kib = mem_kib(args[1]).ok_or_else(|| format!("invalid memory size: {}", args[1]))?;
            if verb == "mem-max" { Cmd::MemMax(dom(args[0]), kib) } else { Cmd::MemSet(dom(args[0]), kib) }
        }
        "block-list" => match args {
            [d] => Cmd::BlockList(dom(d)),
            _ => return Err("usage: xl block-list <Domain>".into()),
        },
        "block-attach" => {
            need(verb, args, 2)?;
            let spec = args[1..].join(",");
            crate::blkif::parse_disk(&spec)?;
            Cmd::BlockAttach(dom(args[0]), spec)
        }
        "block-detach" => {
            let (force, rest) = force_flag(args);
            match rest.as_slice() {
                [d, dev] => {
                    let devid = dev.parse::<u32>().ok().or_else(|| crate::blkif::vdev_devid(dev)).ok_or_else(|| format!("Error: Device {} not connected.", dev))?;
                    Cmd::BlockDetach(dom(d), devid, force)
                }
                _ => return Err("usage: xl block-detach [-f] <Domain> <DevId>".into()),
            }
        }
        "network-list" => match args {
            [d] => Cmd::NetworkList(dom(d)),
            _ => return Err("usage: xl network-list <Domain>".into()),
        },
        "network-attach" => {
            if args.is_empty() {
                return Err("usage: xl network-attach <Domain> [type=<type>] [mac=<mac>] [bridge=<bridge>] ...".into());
            }
            let spec = args[1..].join(",");
            crate::netif::parse_vif(&spec)?;
            Cmd::NetworkAttach(dom(args[0]), spec)
        }
        "network-detach" => {
            let (force, rest) = force_flag(args);
            match rest.as_slice() {
                [d, which] => Cmd::NetworkDetach(dom(d), which.to_string(), force),
                _ => return Err("usage: xl network-detach [-f] <Domain> <DevId|mac>".into()),
            }
        }
        "console" => match args {
            [d] => Cmd::Console(dom(d)),
            [] => return Err("'xl console' requires at least 1 argument.".into()),
            _ => return Err("usage: xl console <Domain>".into()),
        },
        "shutdown" | "reboot" => {
            let wait = args.iter().any(|a| *a == "-w" || *a == "--wait");
            if let Some(bad) = args.iter().find(|a| a.starts_with('-') && !matches!(**a, "-w" | "--wait")) {
                return Err(format!("{}: unknown option '{}'", verb, bad));
            }
            let doms: Vec<&&str> = args.iter().filter(|a| !a.starts_with('-')).collect();
            match doms.as_slice() {
                [d] => Cmd::Shutdown { dom: dom(d), reboot: verb == "reboot", wait },
                [] => return Err(format!("'xl {}' requires at least 1 argument.", verb)),
                _ => return Err(format!("usage: xl {} [-w] <Domain>", verb)),
            }
        }
        "uptime" => Cmd::Uptime(args.first().map(|a| dom(a))),
        "top" => Cmd::Top,
        other => return Err(format!("command not implemented: {}", other)),
    })
}

/// What `list` shows of a domain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomRow {
    pub id: u16,
    pub name: String,
    pub mem_mib: u64,
    pub vcpus: u32,
    /// `getdomaininfo` flags (`guest_abi::domctl::info`).
    pub flags: u32,
    pub cpu_time_ns: u64,
}

/// The shutdown reason in `getdomaininfo` flags, if the domain shut down.
pub fn shutdown_reason(flags: u32) -> Option<ShutdownReason> {
    if flags & info::SHUTDOWN == 0 {
        return None;
    }
    ShutdownReason::from_u32((flags >> info::SHUTDOWN_SHIFT) & info::SHUTDOWN_MASK)
}

/// The `r b p s c d` state column (`-` for a letter that does not hold): a crash is `c`
/// rather than `s`.
pub fn state(flags: u32) -> String {
    let reason = shutdown_reason(flags);
    let crashed = reason == Some(ShutdownReason::Crash);
    let bit = |b: u32, c: char| if flags & b != 0 { c } else { '-' };
    let mut s = String::new();
    s.push(bit(info::RUNNING, 'r'));
    s.push(bit(info::BLOCKED, 'b'));
    s.push(bit(info::PAUSED, 'p'));
    s.push(if flags & info::SHUTDOWN != 0 && !crashed { 's' } else { '-' });
    s.push(if crashed { 'c' } else { '-' });
    s.push(bit(info::DYING, 'd'));
    s
}

/// One domain on the `top` screen.
#[derive(Clone, Debug, PartialEq)]
pub struct TopRow {
    pub name: String,
    /// `getdomaininfo` flags.
    pub flags: u32,
    pub cpu_ns: u64,
    /// CPU use since the last screen (or since it started), percent of one CPU.
    pub cpu_pct: f64,
    pub mem_kib: u64,
    pub max_kib: u64,
    pub vcpus: u32,
}

/// `top`: xentop's summary lines and its table (the columns up to VCPUS; this host has no
/// network or block backends yet).
pub fn top(version: &str, ncpus: u32, mhz: u32, total_kib: u64, free_kib: u64, rows: &[TopRow]) -> String {
    let count = |f: &dyn Fn(u32) -> bool| rows.iter().filter(|r| f(r.flags)).count();
    let ended = |f: u32| shutdown_reason(f);
    let mut t = format!("xentop - Xen {}\n", version);
    t.push_str(&format!(
        "{} domains: {} running, {} blocked, {} paused, {} crashed, {} dying, {} shutdown \n",
        rows.len(),
        count(&|f| f & info::RUNNING != 0),
        count(&|f| f & info::BLOCKED != 0),
        count(&|f| f & info::PAUSED != 0),
        count(&|f| ended(f) == Some(ShutdownReason::Crash)),
        count(&|f| f & info::DYING != 0),
        count(&|f| ended(f).is_some_and(|r| r != ShutdownReason::Crash)),
    ));
    t.push_str(&format!("Mem: {}k total, {}k used, {}k free    CPUs: {} @ {}MHz\n", total_kib, total_kib - free_kib.min(total_kib), free_kib, ncpus, mhz));
    t.push_str(&format!("{:>10} {:>6} {:>10} {:>6} {:>10} {:>6} {:>10} {:>9} {:>5}\n", "NAME", "STATE", "CPU(sec)", "CPU(%)", "MEM(k)", "MEM(%)", "MAXMEM(k)", "MAXMEM(%)", "VCPUS"));
    let pct = |k: u64| if total_kib == 0 { 0.0 } else { k as f64 * 100.0 / total_kib as f64 };
    for r in rows {
        let name: String = r.name.chars().take(10).collect();
        t.push_str(&format!(
            "{:>10} {:>6} {:>10} {:>6.1} {:>10} {:>6.1} {:>10} {:>9.1} {:>5}\n",
            name,
            state(r.flags),
            r.cpu_ns / 1_000_000_000,
            r.cpu_pct,
            r.mem_kib,
            pct(r.mem_kib),
            r.max_kib,
            pct(r.max_kib),
            r.vcpus
        ));
    }
    t
}

/// `uptime`'s table: (name, id, seconds up).
pub fn uptime(rows: &[(String, u16, u64)]) -> String {
    let mut t = format!("{:<33}{:>5} {}\n", "Name", "ID", "Uptime");
    for (name, id, s) in rows {
        let (d, h, m, sec) = (s / 86400, s / 3600 % 24, s / 60 % 60, s % 60);
        let up = if d > 0 { format!("{} day{}, {:2}:{:02}:{:02}", d, if d == 1 { "" } else { "s" }, h, m, sec) } else { format!("{:2}:{:02}:{:02}", h, m, sec) };
        t.push_str(&format!("{:<33}{:>5} {}\n", name, id, up));
    }
    t
}

fn secs(ns: u64) -> String {
    format!("{}.{}", ns / 1_000_000_000, (ns / 100_000_000) % 10)
}

/// `xl list`.
pub fn list(rows: &[DomRow]) -> String {
    let mut t = String::from("Name                                        ID   Mem VCPUs\tState\tTime(s)\n");
    for r in rows {
        t.push_str(&format!("{:<40} {:>5} {:>5} {:>5}     {}  {:>8}\n", r.name, r.id, r.mem_mib, r.vcpus, state(r.flags), secs(r.cpu_time_ns)));
    }
    t
}

/// A vCPU of `vcpu-list`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VcpuRow {
    pub name: String,
    pub dom: u16,
    pub vcpu: u32,
    pub cpu: Option<u32>,
    pub running: bool,
    pub blocked: bool,
    pub online: bool,
    pub cpu_time_ns: u64,
    pub hard: u64,
    pub ncpus: u32,
}

fn affinity(m: u64, ncpus: u32) -> String {
    let all = if ncpus >= 64 { u64::MAX } else { (1u64 << ncpus) - 1 };
    if m & all == all {
        return "all".into();
    }
    let mut parts = Vec::new();
    let mut c = 0;
    while c < ncpus.min(64) {
        if m & (1 << c) == 0 {
            c += 1;
            continue;
        }
        let start = c;
        while c + 1 < ncpus.min(64) && m & (1 << (c + 1)) != 0 {
            c += 1;
        }
        parts.push(if start == c { format!("{}", c) } else { format!("{}-{}", start, c) });
        c += 1;
    }
    parts.join(",")
}

/// `xl vcpu-list`.
pub fn vcpu_list(rows: &[VcpuRow]) -> String {
    let mut t = String::from("Name                                ID  VCPU   CPU State   Time(s) Affinity (Hard / Soft)\n");
    for r in rows {
        let state = match (r.online, r.running, r.blocked) {
            (false, _, _) => "--p",
            (true, true, _) => "r--",
            (true, false, true) => "-b-",
            _ => "---",
        };
        let cpu = r.cpu.filter(|_| r.online).map_or("-".to_string(), |c| c.to_string());
        t.push_str(&format!("{:<32} {:>5} {:>5} {:>5}   {}  {:>8}  {} / all\n", r.name, r.dom, r.vcpu, cpu, state, secs(r.cpu_time_ns), affinity(r.hard, r.ncpus)));
    }
    t
}

/// `xl sched-credit`'s table: (name, id, weight, cap).
pub fn sched_credit(rows: &[(String, u16, u16, u16)]) -> String {
    let mut t = String::from("Cpupool Pool-0: tslice=30ms ratelimit=1000us migration-delay=0us\nName                                ID Weight  Cap\n");
    for (name, id, w, c) in rows {
        t.push_str(&format!("{:<32} {:>5} {:>6} {:>4}\n", name, id, w, c));
    }
    t
}

/// `xl info`: (key, value) lines.
pub fn info(items: &[(&str, String)]) -> String {
    let mut t = String::new();
    for (k, v) in items {
        t.push_str(&format!("{:<23}: {}\n", k, v));
    }
    t
}

/// `xl help`.
pub fn help() -> String {
    let mut t = String::from("Usage xl [-v] [-f] [-N] [-t] <subcommand> [args]\n\nxl full list of subcommands:\n\n");
    for (v, d) in VERBS {
        t.push_str(&format!(" {:<20}{}\n", v, d));
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn commands() {
        assert_eq!(parse(&["list"]), Ok(Cmd::List));
        assert_eq!(parse(&["pause", "3"]), Ok(Cmd::Pause(DomRef::Id(3))));
        assert_eq!(parse(&["destroy", "guest1"]), Ok(Cmd::Destroy(DomRef::Name("guest1".into()))));
        assert_eq!(parse(&["block-list", "3"]), Ok(Cmd::BlockList(DomRef::Id(3))));
        assert_eq!(parse(&["network-list", "g"]), Ok(Cmd::NetworkList(DomRef::Name("g".into()))));
        assert_eq!(parse(&["network-attach", "g", "mac=00:16:3e:00:00:09", "bridge=xenbr0"]), Ok(Cmd::NetworkAttach(DomRef::Name("g".into()), "mac=00:16:3e:00:00:09,bridge=xenbr0".into())));
        assert!(parse(&["network-attach", "g", "bridge=br7"]).is_err());
        assert_eq!(parse(&["network-detach", "g", "0"]), Ok(Cmd::NetworkDetach(DomRef::Name("g".into()), "0".into(), false)));
        assert_eq!(parse(&["network-detach", "-f", "g", "0"]), Ok(Cmd::NetworkDetach(DomRef::Name("g".into()), "0".into(), true)));
        let t = network_table(&[NetRow { idx: 0, backend: 0, mac: "00:16:3e:00:01:00".into(), state: 4, port: Some(12), refs: Some((8, 9)), path: "/local/domain/0/backend/vif/1/0".into() }]);
        assert_eq!(t.lines().nth(1), Some("0   0  00:16:3e:00:01:00 0      4     12         8/9     /local/domain/0/backend/vif/1/0"));
        assert_eq!(parse(&["block-attach", "g", "vda2,xvdb,r"]), Ok(Cmd::BlockAttach(DomRef::Name("g".into()), "vda2,xvdb,r".into())));
        assert_eq!(parse(&["block-attach", "g", "vda2", "xvdb", "r"]), Ok(Cmd::BlockAttach(DomRef::Name("g".into()), "vda2,xvdb,r".into())));
        assert!(parse(&["block-attach", "g", "nonsense"]).is_err());
        assert_eq!(parse(&["block-detach", "g", "xvdb"]), Ok(Cmd::BlockDetach(DomRef::Name("g".into()), 51728, false)));
        assert_eq!(parse(&["block-detach", "-f", "g", "51712"]), Ok(Cmd::BlockDetach(DomRef::Name("g".into()), 51712, true)));
        assert_eq!(parse(&["block-detach", "g", "hda"]), Ok(Cmd::BlockDetach(DomRef::Name("g".into()), 768, false)));
        assert!(parse(&["block-detach", "g", "hde"]).is_err());
        assert_eq!(parse(&["pause"]), Err("'xl pause' requires at least 1 argument.".into()));
        assert_eq!(parse(&["vcpu-pin", "1", "all", "0-1"]), Ok(Cmd::VcpuPin(DomRef::Id(1), None, 3)));
        assert_eq!(parse(&["vcpu-pin", "1", "x", "0"]), Err("Invalid vcpu 'x'.".into()));
        assert_eq!(parse(&["vcpu-pin", "1", "0", "70"]), Err("Invalid cpu list '70'.".into()));
        assert_eq!(parse(&["sched-credit", "-d", "1", "-w", "512"]), Ok(Cmd::SchedCredit { dom: Some(DomRef::Id(1)), weight: Some(512), cap: None }));
        assert_eq!(parse(&["sched-credit", "-w", "512"]), Err("Must specify a domain.".into()));
        assert_eq!(parse(&["sched-credit", "-d", "1", "-w", "0"]), Err("Invalid weight '0': 1..65535.".into()));
        assert_eq!(parse(&["sched-credit", "-d"]), Err("option '-d' requires an argument".into()));
        assert_eq!(parse(&["mem-max", "1", "64m"]), Ok(Cmd::MemMax(DomRef::Id(1), 65536)));
        assert_eq!(parse(&["mem-max", "1", "lots"]), Err("invalid memory size: lots".into()));
        assert_eq!(parse(&["dmesg", "-c"]), Ok(Cmd::Dmesg { clear: true }));
        assert_eq!(parse(&["create", "/etc/xen/a.cfg", "-c"]), Ok(Cmd::Create { config: "/etc/xen/a.cfg".into(), console: true, overrides: Vec::new() }));
        assert_eq!(
            parse(&["create", "/etc/xen/a.cfg", "extra=source 1 2"]),
            Ok(Cmd::Create { config: "/etc/xen/a.cfg".into(), console: false, overrides: alloc::vec!["extra=source 1 2".into()] })
        );
        assert_eq!(words("xl create a.cfg 'extra=\"x y\"' b=\"c d\"  e"), ["xl", "create", "a.cfg", "extra=\"x y\"", "b=c d", "e"]);
        assert_eq!(parse(&["create"]), Err("'xl create' requires a config file.".into()));
        assert_eq!(parse(&["create", "-q", "x"]), Err("create: unknown option '-q'".into()));
        assert_eq!(parse(&["mem-set", "2", "8m"]), Ok(Cmd::MemSet(DomRef::Id(2), 8192)));
        assert_eq!(parse(&["console", "web"]), Ok(Cmd::Console(DomRef::Name("web".into()))));
        assert_eq!(parse(&["console"]), Err("'xl console' requires at least 1 argument.".into()));
        assert_eq!(parse(&["shutdown", "-w", "3"]), Ok(Cmd::Shutdown { dom: DomRef::Id(3), reboot: false, wait: true }));
        assert_eq!(parse(&["reboot", "a"]), Ok(Cmd::Shutdown { dom: DomRef::Name("a".into()), reboot: true, wait: false }));
        assert_eq!(parse(&["shutdown", "-x", "3"]), Err("shutdown: unknown option '-x'".into()));
        assert_eq!(parse(&["shutdown"]), Err("'xl shutdown' requires at least 1 argument.".into()));
        assert_eq!(parse(&["uptime"]), Ok(Cmd::Uptime(None)));
        assert_eq!(parse(&["frobnicate"]), Err("command not implemented: frobnicate".into()));
        assert_eq!(parse(&[]), Ok(Cmd::Help));
    }

    #[test]
    fn tables() {
        let rows = vec![
            DomRow { id: 0, name: "Domain-0".into(), mem_mib: 64, vcpus: 1, flags: 1 << 5, cpu_time_ns: 1_234_000_000 },
            DomRow { id: 1, name: "guest".into(), mem_mib: 16, vcpus: 2, flags: (1 << 3) | (1 << 4), cpu_time_ns: 0 },
        ];
        let t = list(&rows);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "Name                                        ID   Mem VCPUs\tState\tTime(s)");
        assert_eq!(lines[1], "Domain-0                                     0    64     1     r-----       1.2");
        assert_eq!(lines[2], "guest                                        1    16     2     -bp---       0.0");
        assert_eq!(state((1 << 2) | (3 << 16)), "----c-", "reason 3: a crash");
        assert_eq!(state((1 << 2) | (2 << 16)), "---s--", "reason 2: a suspend");
        assert_eq!(state((1 << 2) | (1 << 0)), "---s-d");
        assert_eq!(affinity(0b1011, 4), "0-1,3");
        assert_eq!(affinity(0b11, 2), "all");
        let v = vcpu_list(&[VcpuRow { name: "guest".into(), dom: 1, vcpu: 0, cpu: Some(1), running: true, blocked: false, online: true, cpu_time_ns: 5_000_000_000, hard: 0b10, ncpus: 2 }]);
        assert_eq!(v.lines().nth(1), Some("guest                                1     0     1   r--       5.0  1 / all"));
        assert!(sched_credit(&[("Domain-0".into(), 0, 256, 0)]).ends_with("Domain-0                             0    256    0\n"));
        assert_eq!(uptime(&[("Domain-0".into(), 0, 3725)]).lines().nth(1), Some("Domain-0                             0  1:02:05"));
        assert_eq!(uptime(&[("a".into(), 1, 90061)]).lines().nth(1), Some("a                                    1 1 day,  1:01:01"));
        let screen = top("4.19.0-rxen", 2, 2611, 1_000_000, 600_000, &[
            TopRow { name: "Domain-0".into(), flags: 1 << 5, cpu_ns: 3_500_000_000, cpu_pct: 12.34, mem_kib: 65536, max_kib: 65536, vcpus: 2 },
            TopRow { name: "a-very-long-name".into(), flags: (1 << 2) | (3 << 16), cpu_ns: 0, cpu_pct: 0.0, mem_kib: 16384, max_kib: 32768, vcpus: 1 },
        ]);
        let l: Vec<&str> = screen.lines().collect();
        assert_eq!(l[1], "2 domains: 1 running, 0 blocked, 0 paused, 1 crashed, 0 dying, 0 shutdown ");
        assert_eq!(l[2], "Mem: 1000000k total, 400000k used, 600000k free    CPUs: 2 @ 2611MHz");
        assert_eq!(l[3], "      NAME  STATE   CPU(sec) CPU(%)     MEM(k) MEM(%)  MAXMEM(k) MAXMEM(%) VCPUS");
        assert_eq!(l[4], "  Domain-0 r-----          3   12.3      65536    6.6      65536       6.6     2");
        assert_eq!(l[5], "a-very-lon ----c-          0    0.0      16384    1.6      32768       3.3     1");
        assert_eq!(parse(&["top"]), Ok(Cmd::Top));
        assert_eq!(info(&[("nr_cpus", "2".into())]), "nr_cpus                : 2\n");
        assert!(help().contains(" list                List information about all domains\n"));
    }
}

/// One device of `xl block-list`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockRow {
    pub devid: u32,
    pub backend: u16,
    pub state: u32,
    pub port: Option<u32>,
    pub ring_ref: Option<u32>,
    pub path: String,
}

/// `-f` / `--force` among `args`, and the other arguments.
fn force_flag<'a>(args: &'a [&'a str]) -> (bool, Vec<&'a &'a str>) {
    let force = args.iter().any(|a| *a == "-f" || *a == "--force");
    (force, args.iter().filter(|a| !matches!(**a, "-f" | "--force")).collect())
}

/// A shell line's words: split at blanks, except inside '...' or "..." (the quotes
/// removed, as a shell does).
pub fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut any = false;
    let mut quote: Option<char> = None;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                any = true;
            }
            (None, c) if c.is_ascii_whitespace() => {
                if any || !cur.is_empty() {
                    out.push(core::mem::take(&mut cur));
                }
                any = false;
            }
            (None, c) => cur.push(c),
        }
    }
    if any || !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// One device of `xl network-list`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetRow {
    pub idx: u32,
    pub backend: u16,
    pub mac: String,
    pub state: u32,
    pub port: Option<u32>,
    pub refs: Option<(u32, u32)>,
    pub path: String,
}

/// `xl network-list`'s table (xl's columns).
pub fn network_table(rows: &[NetRow]) -> String {
    let mut s = format!("{:<3} {:<2} {:<17} {:<6} {:<5} {:<6} {:>5}/{:<5} {:<30}\n", "Idx", "BE", "Mac Addr.", "handle", "state", "evt-ch", "tx-", "rx-ring-ref", "BE-path");
    let opt = |v: Option<u32>| v.map_or(-1, |v| v as i64);
    for r in rows {
        let (t, x) = r.refs.map_or((-1, -1), |(t, x)| (t as i64, x as i64));
        s.push_str(&format!("{:<3} {:<2} {:<17} {:<6} {:<5} {:<6} {:>5}/{:<5} {:<30}\n", r.idx, r.backend, r.mac, r.idx, r.state, opt(r.port), t, x, r.path));
    }
    s
}

/// `xl block-list`'s table.
pub fn block_table(rows: &[BlockRow]) -> String {
    let mut s = String::from("Vdev  BE  handle state evt-ch ring-ref BE-path\n");
    let opt = |v: Option<u32>| v.map_or("-1".to_string(), |v| v.to_string());
    for r in rows {
        s.push_str(&format!("{:<5} {:<3} {:<6} {:<5} {:<6} {:<8} {}\n", r.devid, r.backend, 0, r.state, opt(r.port), opt(r.ring_ref), r.path));
    }
    s
}
