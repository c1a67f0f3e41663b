//! `xl` in dom0's shell: the toolstack crate parses the command and draws the tables;
//! this carries it out with `domctl` / `sysctl`.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use guest_abi::domctl::*;
use guest_abi::sched::ShutdownReason;
use pv_runtime::ctl::{sysctl, Domctl};
use pv_runtime::{hypercall, print, println};
use toolstack::xl::{self, Cmd, DomRef, DomRow, VcpuRow};

/// Runs `xl` with `words` (the words after it).
pub fn run(words: &[&str]) {
    let r = xl::parse(words).and_then(exec);
    if let Err(e) = r {
        println!("{}", e);
    }
}

/// Every domain's `getdomaininfo`, lowest id first.
fn domains() -> Vec<Domctl> {
    let mut out = Vec::new();
    let mut id = 0u16;
    loop {
        let mut op = Domctl::new(GETDOMAININFO, id);
        if op.call() != 0 {
            break;
        }
        id = op.dom().wrapping_add(1);
        out.push(op);
        if id == 0 {
            break;
        }
    }
    out
}

/// A domain `xl create` made (until destroyed): its config, and how many times in a row it
/// was restarted.
struct Created {
    name: String,
    cfg: toolstack::xlcfg::Config,
    restarts: u32,
    /// Its exit was handled by keeping it (`on_* = "preserve"`).
    preserved: bool,
}

/// Domains `xl shutdown -w` waits for.
static WAITING: spin::Mutex<Vec<u16>> = spin::Mutex::new(Vec::new());

/// When each domain `xl create` made was started (system time, ns); others count from boot.
static STARTED: spin::Mutex<alloc::collections::BTreeMap<u16, u64>> = spin::Mutex::new(alloc::collections::BTreeMap::new());

/// The TSC rate (kHz) the hypervisor calibrated.
pub fn physinfo_khz() -> Result<u32, String> {
    Ok(field32(&physinfo()?, physinfo::CPU_KHZ))
}

/// Are there domains `xl create` made (not destroyed yet)?
pub fn any_created() -> bool {
    !NAMES.lock().is_empty()
}

/// The last `xl top` screen's samples: (system time, CPU time) per domain.
static LAST_TOP: spin::Mutex<alloc::collections::BTreeMap<u16, (u64, u64)>> = spin::Mutex::new(alloc::collections::BTreeMap::new());

/// A domain is destroyed: nothing of it stays (its id is handed out again).
pub fn forget(dom: u16) {
    WAITING.lock().retain(|&d| d != dom);
    STARTED.lock().remove(&dom);
}

/// The domains `xl create` made, by id.
static NAMES: spin::Mutex<alloc::collections::BTreeMap<u16, Created>> = spin::Mutex::new(alloc::collections::BTreeMap::new());

/// Restarts in a row after which a crashing domain is destroyed instead (xl's guard against
/// a restart loop).
const MAX_RESTARTS: u32 = 2;

/// A domain's name: dom0's is Xen's `Domain-0`; others carry their config's name when
/// `xl create` made them; boot-time domains have none (`(null)`, as xl shows an unnamed
/// one).
fn name(id: u16) -> String {
    if id == 0 {
        return "Domain-0".into();
    }
    NAMES.lock().get(&id).map(|c| c.name.clone()).unwrap_or_else(|| "(null)".into())
}

/// The id of the domain named `name` that `xl` made, if one lives.
pub fn id_of(name: &str) -> Option<u16> {
    NAMES.lock().iter().find(|(_, v)| v.name == name).map(|(k, _)| *k)
}

fn resolve(r: &DomRef) -> Result<u16, String> {
    let id = match r {
        DomRef::Id(id) => Some(*id),
        DomRef::Name(n) if n == "Domain-0" => Some(0),
        DomRef::Name(n) => NAMES.lock().iter().find(|(_, v)| v.name == *n).map(|(k, _)| *k),
    };
    let shown = match r {
        DomRef::Id(id) => id.to_string(),
        DomRef::Name(n) => n.clone(),
    };
    id.filter(|&id| domains().iter().any(|d| d.dom() == id)).ok_or_else(|| format!("'{}' is an invalid domain identifier (rc=-6)", shown))
}

fn check(what: &str, dom: u16, rc: i64) -> Result<(), String> {
    if rc == 0 {
        Ok(())
    } else {
        Err(format!("libxl: error: {} of domain {} failed: {}", what, dom, errno(rc)))
    }
}

pub(crate) fn errno(rc: i64) -> String {
    match guest_abi::errno::Errno::from_ret(rc) {
        Some(e) => format!("{:?}", e),
        None => format!("{}", rc),
    }
}

fn physinfo() -> Result<[u8; SYSCTL_SIZE], String> {
    let mut b = [0u8; SYSCTL_SIZE];
    match sysctl(sys::PHYSINFO, &mut b) {
        0 => Ok(b),
        rc => Err(format!("libxl: error: physinfo failed: {}", errno(rc))),
    }
}

fn field32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[SYSCTL_U_OFFSET + off..SYSCTL_U_OFFSET + off + 4].try_into().unwrap_or_default())
}

fn field64(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[SYSCTL_U_OFFSET + off..SYSCTL_U_OFFSET + off + 8].try_into().unwrap_or_default())
}

fn vcpu_rows(d: &Domctl, ncpus: u32) -> Vec<VcpuRow> {
    let id = d.dom();
    (0..=d.get32(info::MAX_VCPU_ID))
        .filter_map(|v| {
            let mut op = Domctl::new(GETVCPUINFO, id).u32(vcpuinfo::VCPU, v);
            if op.call() != 0 {
                return None;
            }
            let hard = pv_runtime::ctl::get_affinity(id, v).unwrap_or(u64::MAX);
            let b = |o: usize| op.0[U_OFFSET + o] != 0;
            Some(VcpuRow {
                name: name(id),
                dom: id,
                vcpu: v,
                cpu: Some(op.get32(vcpuinfo::CPU)),
                running: b(vcpuinfo::RUNNING),
                blocked: b(vcpuinfo::BLOCKED),
                online: b(vcpuinfo::ONLINE),
                cpu_time_ns: op.get64(vcpuinfo::CPU_TIME),
                hard,
                ncpus,
            })
        })
        .collect()
}

fn sched_get(id: u16) -> Result<(u16, u16), String> {
    let mut op = Domctl::new(SCHEDULER_OP, id).u32(sched::SCHED_ID, sched::CREDIT).u32(sched::CMD, sched::GETINFO);
    check("sched-credit", id, op.call())?;
    Ok((op.get16(sched::WEIGHT), op.get16(sched::CAP)))
}

fn exec(cmd: Cmd) -> Result<(), String> {
    match cmd {
        Cmd::Help => print!("{}", xl::help()),
        Cmd::List => {
            let rows: Vec<DomRow> = domains()
                .iter()
                .map(|d| DomRow {
                    id: d.dom(),
                    name: name(d.dom()),
                    mem_mib: d.get64(info::TOT_PAGES) / 256,
                    vcpus: d.get32(info::NR_ONLINE_VCPUS),
                    flags: d.get32(info::FLAGS),
                    cpu_time_ns: d.get64(info::CPU_TIME),
                })
                .collect();
            print!("{}", xl::list(&rows));
        }
        Cmd::Info => {
            let p = physinfo()?;
            let v = hypercall::xen_version_number();
            let extra = hypercall::xen_extraversion();
            let extra = core::str::from_utf8(&extra).unwrap_or("").trim_end_matches('\0').to_string();
            let cmdline = hypercall::xen_commandline().map(|l| core::str::from_utf8(&l).unwrap_or("").trim_end_matches('\0').to_string()).unwrap_or_default();
            let mib = |pages: u64| format!("{}", pages / 256);
            let items = [
                ("host", "rxen".to_string()),
                ("nr_cpus", format!("{}", field32(&p, physinfo::NR_CPUS))),
                ("max_cpu_id", format!("{}", field32(&p, physinfo::MAX_CPU_ID))),
                ("nr_nodes", format!("{}", field32(&p, physinfo::NR_NODES))),
                ("cores_per_socket", format!("{}", field32(&p, physinfo::CORES_PER_SOCKET))),
                ("threads_per_core", format!("{}", field32(&p, physinfo::THREADS_PER_CORE))),
                ("cpu_mhz", format!("{}.{:03}", field32(&p, physinfo::CPU_KHZ) / 1000, field32(&p, physinfo::CPU_KHZ) % 1000)),
                ("virt_caps", "pv".to_string()),
                ("total_memory", mib(field64(&p, physinfo::TOTAL_PAGES))),
                ("free_memory", mib(field64(&p, physinfo::FREE_PAGES))),
                ("xen_major", format!("{}", v >> 16)),
                ("xen_minor", format!("{}", v & 0xFFFF)),
                ("xen_extra", extra),
                ("xen_scheduler", "credit".to_string()),
                ("xen_commandline", cmdline),
            ];
            print!("{}", xl::info(&items));
        }
        Cmd::Dmesg { clear } => {
            let mut buf = alloc::vec![0u8; 16384];
            let (rc, n, _) = pv_runtime::ctl::readconsole(&mut buf, clear, None);
            if rc != 0 {
                return Err(format!("libxl: error: reading the console ring failed: {}", errno(rc)));
            }
            hypercall::console_write(&buf[..n]);
        }
        Cmd::Pause(d) => {
            let id = resolve(&d)?;
            check("pause", id, Domctl::new(PAUSEDOMAIN, id).call())?;
        }
        Cmd::Unpause(d) => {
            let id = resolve(&d)?;
            check("unpause", id, Domctl::new(UNPAUSEDOMAIN, id).call())?;
        }
        Cmd::Destroy(d) => {
            let id = resolve(&d)?;
            if id == 0 {
                return Err("libxl: error: cannot destroy Domain-0".into());
            }
            check("destroy", id, crate::build::destroy(id))?;
            NAMES.lock().remove(&id);
        }
        Cmd::Create { config, console, overrides } => create_from(&config, console, false, &overrides)?,
        Cmd::BlockList(d) => {
            let id = resolve(&d)?;
            let devs = crate::blkback::list(id);
            let rows: alloc::vec::Vec<_> =
                devs.iter().map(|l| xl::BlockRow { devid: l.devid, backend: 0, state: l.state, port: l.port, ring_ref: l.ring_ref, path: l.be.clone() }).collect();
            print!("{}", xl::block_table(&rows));
            for l in devs.iter().filter(|l| l.errors != 0) {
                println!("({}: {} request(s) refused or failed)", l.vdev, l.errors);
            }
        }
        Cmd::BlockAttach(d, spec) => {
            let id = resolve(&d)?;
            if id == 0 {
                return Err("libxl: error: dom0's disks are its own".into());
            }
            crate::blkback::attach(id, &spec)?;
        }
        Cmd::BlockDetach(d, devid, force) => {
            let id = resolve(&d)?;
            crate::blkback::detach(id, devid, force)?;
        }
        Cmd::NetworkList(d) => {
            let id = resolve(&d)?;
            let vifs = crate::netback::list(id);
            let rows: alloc::vec::Vec<_> =
                vifs.iter().map(|l| xl::NetRow { idx: l.devid, backend: 0, mac: l.mac.clone(), state: l.state, port: l.port, refs: l.refs, path: l.be.clone() }).collect();
            print!("{}", xl::network_table(&rows));
            for l in &vifs {
                let (tx, rx, refused, dropped) = l.counters;
                println!("(vif{}: {} frames sent, {} received, {} refused, {} dropped)", l.devid, tx, rx, refused, dropped);
            }
            let ((tt, tn), (rt, rn)) = crate::netback::costs();
            println!("(switch: {} frames taken at {} TSC ticks each, {} delivered at {} each)", tn, tt / tn.max(1), rn, rt / rn.max(1));
        }
        Cmd::NetworkAttach(d, spec) => {
            let id = resolve(&d)?;
            if id == 0 {
                return Err("libxl: error: dom0's network device is its own (the switch's uplink)".into());
            }
            crate::netback::attach(id, &spec)?;
        }
        Cmd::NetworkDetach(d, which, force) => {
            let id = resolve(&d)?;
            crate::netback::detach(id, &which, force)?;
        }
        Cmd::Console(d) => {
            let id = resolve(&d)?;
            if id == 0 {
                return Err("libxl: error: dom0's console is the hypervisor's: it is already here".into());
            }
            crate::consoled::attach(id)?;
        }
        Cmd::Shutdown { dom, reboot, wait } => {
            let id = resolve(&dom)?;
            if id == 0 {
                return Err("libxl: error: domain 0 cannot be shut down with xl (use poweroff)".into());
            }
            // A PV guest's control interface is XenStore (libxl writes the request whether or
            // not the guest advertised `control/feature-*`); a domain this toolstack did not
            // build has no XenStore entries to write it to.
            let base = format!("/local/domain/{}/control", id);
            if crate::xs::read(&format!("/local/domain/{}", id)).is_err() {
                return Err(format!("libxl: error: domain {}: no XenStore entries (not built by this toolstack): PV control interface not available", id));
            }
            let what: &[u8] = if reboot { b"reboot" } else { b"poweroff" };
            crate::xs::write(0, &format!("{}/shutdown", base), what).map_err(|e| format!("libxl: error: writing control/shutdown of domain {} failed: {}", id, e))?;
            if wait {
                println!("Waiting for 1 domains");
                WAITING.lock().push(id);
            }
        }
        Cmd::MemSet(d, kib) => {
            let id = resolve(&d)?;
            let base = format!("/local/domain/{}/memory", id);
            let max = crate::xs::read(&format!("{}/static-max", base))
                .ok()
                .and_then(|v| core::str::from_utf8(&v).ok().and_then(|s| s.parse::<u64>().ok()))
                .ok_or_else(|| format!("libxl: error: cannot get memory info from {}/static-max", base))?;
            if kib > max {
                return Err(format!("libxl: error: memory_static_max must be greater than or equal to memory_dynamic_max ({} > {})", kib, max));
            }
            crate::xs::write(0, &format!("{}/target", base), format!("{}", kib).as_bytes()).map_err(|e| format!("libxl: error: setting memory/target of domain {} failed: {}", id, e))?;
        }
        Cmd::Top => {
            let p = physinfo()?;
            let now = pv_runtime::events::system_time();
            let (v, extra) = (hypercall::xen_version_number(), hypercall::xen_extraversion());
            let version = format!("{}.{}{}", v >> 16, v & 0xFFFF, core::str::from_utf8(&extra).unwrap_or("").trim_end_matches('\0'));
            let mut last = LAST_TOP.lock();
            let rows: Vec<xl::TopRow> = domains()
                .iter()
                .map(|d| {
                    let id = d.dom();
                    let cpu = d.get64(info::CPU_TIME);
                    // Since the last screen, or since it started (dom0 and boot-time domains:
                    // since boot).
                    let (t0, c0) = last.get(&id).copied().unwrap_or((STARTED.lock().get(&id).copied().unwrap_or(0), 0));
                    let dt = now.saturating_sub(t0).max(1);
                    xl::TopRow {
                        name: name(id),
                        flags: d.get32(info::FLAGS),
                        cpu_ns: cpu,
                        cpu_pct: cpu.saturating_sub(c0) as f64 * 100.0 / dt as f64,
                        mem_kib: d.get64(info::TOT_PAGES) * 4,
                        max_kib: d.get64(info::MAX_PAGES) * 4,
                        vcpus: d.get32(info::NR_ONLINE_VCPUS),
                    }
                })
                .collect();
            last.clear();
            for d in domains() {
                last.insert(d.dom(), (now, d.get64(info::CPU_TIME)));
            }
            let khz = field32(&p, physinfo::CPU_KHZ);
            print!("{}", xl::top(&version, field32(&p, physinfo::NR_CPUS), khz / 1000, field64(&p, physinfo::TOTAL_PAGES) * 4, field64(&p, physinfo::FREE_PAGES) * 4, &rows));
        }
        Cmd::Uptime(d) => {
            let only = d.as_ref().map(resolve).transpose()?;
            let now = pv_runtime::events::system_time();
            let rows: Vec<(String, u16, u64)> = domains()
                .iter()
                .filter(|x| only.is_none_or(|o| x.dom() == o))
                .map(|x| {
                    let since = STARTED.lock().get(&x.dom()).copied().unwrap_or(0);
                    (name(x.dom()), x.dom(), now.saturating_sub(since) / 1_000_000_000)
                })
                .collect();
            print!("{}", xl::uptime(&rows));
        }
        Cmd::VcpuList(d) => {
            let ncpus = field32(&physinfo()?, physinfo::NR_CPUS);
            let only = d.as_ref().map(resolve).transpose()?;
            let rows: Vec<VcpuRow> = domains().iter().filter(|x| only.is_none_or(|o| x.dom() == o)).flat_map(|x| vcpu_rows(x, ncpus)).collect();
            print!("{}", xl::vcpu_list(&rows));
        }
        Cmd::VcpuPin(d, vcpu, cpus) => {
            let id = resolve(&d)?;
            let info = domains().into_iter().find(|x| x.dom() == id).ok_or("gone")?;
            let all: Vec<u32> = match vcpu {
                Some(v) if v > info.get32(info::MAX_VCPU_ID) => return Err(format!("Invalid vcpu {} for domain {}.", v, id)),
                Some(v) => alloc::vec![v],
                None => (0..=info.get32(info::MAX_VCPU_ID)).collect(),
            };
            for v in all {
                check("vcpu-pin", id, pv_runtime::ctl::set_affinity(id, v, cpus))?;
            }
        }
        Cmd::SchedCredit { dom, weight, cap } => match dom {
            Some(d) if weight.is_some() || cap.is_some() => {
                let id = resolve(&d)?;
                check("sched-credit", id, pv_runtime::ctl::sched_credit_put(id, weight.unwrap_or(0), cap.unwrap_or(0xFFFF)))?;
            }
            only => {
                let only = only.as_ref().map(resolve).transpose()?;
                let mut rows = Vec::new();
                for x in domains().iter().filter(|x| only.is_none_or(|o| x.dom() == o)) {
                    let (w, c) = sched_get(x.dom())?;
                    rows.push((name(x.dom()), x.dom(), w, c));
                }
                print!("{}", xl::sched_credit(&rows));
            }
        },
        Cmd::MemMax(d, kib) => {
            let id = resolve(&d)?;
            check("mem-max", id, Domctl::new(MAX_MEM, id).u64(0, kib).call())?;
            // As libxl: `xl mem-set` checks its targets against the new maximum.
            let p = format!("/local/domain/{}/memory/static-max", id);
            if id != 0 && crate::xs::read(&p).is_ok() {
                let _ = crate::xs::write(0, &p, format!("{}", kib).as_bytes());
            }
        }
    }
    Ok(())
}

/// `xl create <config> [-c]`; `quiet` leaves out xl's "Parsing config" line (the benchmark:
/// a line on the emulated serial port costs more than building the domain).
fn create_from(config: &str, console: bool, quiet: bool, overrides: &[String]) -> Result<(), String> {
    let files = crate::files();
    let path = config.trim_start_matches('/');
    let (_, text) = files.iter().find(|(n, _)| n == path).ok_or_else(|| format!("Failed to read config file: {}: No such file or directory", config))?;
    if !quiet {
        println!("Parsing config from {}", config);
    }
    let text = core::str::from_utf8(text).map_err(|_| format!("{}: not a text file", config))?;
    let cfg = toolstack::xlcfg::parse(&toolstack::xlcfg::with_overrides(text, overrides)).map_err(|e| e.show(config))?;
    if NAMES.lock().values().any(|n| n.name == cfg.name) {
        return Err(format!("libxl: error: domain with name \"{}\" already exists.", cfg.name));
    }
    let kernel = cfg.kernel.trim_start_matches('/');
    let (_, image) = files.iter().find(|(n, _)| n == kernel).ok_or_else(|| format!("libxl: error: kernel {}: No such file or directory", cfg.kernel))?;
    let dom = start(&cfg, image)?;
    NAMES.lock().insert(dom, Created { name: cfg.name.clone(), cfg, restarts: 0, preserved: false });
    STARTED.lock().insert(dom, pv_runtime::events::system_time());
    if console {
        crate::consoled::attach(dom)?;
    }
    Ok(())
}

/// Builds and starts a domain of `cfg` from `image`.
fn start(cfg: &toolstack::xlcfg::Config, image: &[u8]) -> Result<u16, String> {
    let si = crate::start_info().ok_or("dom0: no start_info")?;
    crate::build::create(si, cfg, image)
}

/// After `VIRQ_DOM_EXC`: a created domain that shut down or crashed gets its config's
/// action (`on_poweroff`, `on_reboot`, `on_crash`): destroyed, restarted (built again
/// under its name; after [`MAX_RESTARTS`] crashes in a row, destroyed), or preserved.
pub fn on_exits() -> bool {
    use toolstack::xlcfg::Action;
    let mut said = false;
    let ended: Vec<(u16, ShutdownReason)> = domains()
        .iter()
        .filter(|d| d.get32(info::FLAGS) & info::DYING == 0)
        .filter_map(|d| Some((d.dom(), xl::shutdown_reason(d.get32(info::FLAGS))?)))
        .collect();
    for &(id, reason) in &ended {
        let mut w = WAITING.lock();
        if let Some(i) = w.iter().position(|&x| x == id) {
            w.remove(i);
            if !said {
                println!();
                said = true;
            }
            println!("Domain {} has been shut down, reason code {}", id, reason as u32);
        }
    }
    for (id, reason) in ended {
        if NAMES.lock().get(&id).is_none_or(|c| c.preserved) {
            continue;
        }
        let Some(mut c) = NAMES.lock().remove(&id) else { continue };
        if !said {
            // Off the prompt's line.
            println!();
            said = true;
        }
        // As xl: a watchdog's is a crash's action; a suspend or soft reset is left alone.
        let (what, mut action) = match reason {
            ShutdownReason::Poweroff => ("powered off", c.cfg.on_poweroff),
            ShutdownReason::Reboot => ("rebooted", c.cfg.on_reboot),
            ShutdownReason::Crash | ShutdownReason::Watchdog => ("crashed", c.cfg.on_crash),
            ShutdownReason::Suspend | ShutdownReason::SoftReset => ("suspended", Action::Preserve),
        };
        let rebooted = reason == ShutdownReason::Reboot;
        if action == Action::Restart && !rebooted && c.restarts >= MAX_RESTARTS {
            println!("xl: domain '{}' ({}) {} again after {} restarts in a row: giving up", c.name, id, what, c.restarts);
            action = Action::Destroy;
        }
        match action {
            Action::Preserve => {
                println!("xl: domain '{}' ({}) {}: preserved", c.name, id, what);
                // Kept as it is; it stays listed (shut down) until `xl destroy`.
                c.preserved = true;
                NAMES.lock().insert(id, c);
            }
            Action::Destroy => {
                crate::build::destroy(id);
                println!("xl: domain '{}' ({}) {}: destroyed", c.name, id, what);
            }
            Action::Restart => {
                crate::build::destroy(id);
                let kernel = c.cfg.kernel.trim_start_matches('/');
                let image = crate::files().iter().find(|(n, _)| n == kernel).map(|(_, d)| *d);
                match image.ok_or_else(|| format!("kernel {} is gone", c.cfg.kernel)).and_then(|img| start(&c.cfg, img)) {
                    Ok(new) => {
                        println!("xl: domain '{}' ({}) {}: restarted as domain {}", c.name, id, what, new);
                        STARTED.lock().insert(new, pv_runtime::events::system_time());
                        let restarts = if rebooted { 0 } else { c.restarts + 1 };
                        NAMES.lock().insert(new, Created { restarts, ..c });
                    }
                    Err(e) => println!("xl: domain '{}' ({}) {}: restart failed: {}", c.name, id, what, e),
                }
            }
        }
    }
    said
}

/// `bench-create N` (dom0's command line, for `cargo xtask bench --only xl`): N times
/// `xl create /etc/xen/tiny.cfg` until the domain's first console line reached dom0's
/// console backend, then `xl destroy` until it is gone; prints the 1st, 10th and Nth of
/// each (TSC ticks), and the XenStore's node count before and after.
pub fn bench_create(n: u32) {
    let mut create = Vec::new();
    let mut destroy = Vec::new();
    let nodes_before = crate::xs::nodes();
    let free_before = physinfo().map(|p| field64(&p, physinfo::FREE_PAGES)).unwrap_or(0);
    for _ in 0..n {
        let t0 = pv_runtime::rdtsc();
        if let Err(e) = create_from("/etc/xen/tiny.cfg", false, true, &[]) {
            println!("bench-create: {}", e);
            return;
        }
        let Some(id) = NAMES.lock().iter().find(|(_, v)| v.name == "tiny").map(|(k, _)| *k) else {
            println!("bench-create: the domain was not created");
            return;
        };
        // Asleep on the console's port, as `xl create -c` would be: the guest's notify
        // wakes dom0.
        let port = crate::consoled::port(id).unwrap_or(0);
        let deadline = pv_runtime::events::system_time() + 10_000_000_000;
        loop {
            crate::consoled::on_event(id);
            if crate::consoled::has_line(id) {
                break;
            }
            if pv_runtime::events::system_time() > deadline {
                println!("bench-create: d{} wrote no console line", id);
                return;
            }
            pv_runtime::events::poll(&[port], deadline);
            pv_runtime::events::clear_pending(port);
        }
        let t1 = pv_runtime::rdtsc();
        run(&["destroy", "tiny"]);
        let mut waits = 0u32;
        while domains().iter().any(|d| d.dom() == id) {
            if waits > 1_000_000 {
                println!("bench-create: d{} was not destroyed", id);
                return;
            }
            waits += 1;
            hypercall::yield_now();
        }
        let t2 = pv_runtime::rdtsc();
        create.push(t1 - t0);
        destroy.push(t2 - t1);
    }
    for (i, tag) in [(0usize, "1"), (9, "10"), (99, "100"), (n as usize - 1, "n")] {
        if let (Some(c), Some(d)) = (create.get(i), destroy.get(i)) {
            println!("BENCH xl_create_to_console_{}_tsc={}", tag, c);
            println!("BENCH xl_destroy_{}_tsc={}", tag, d);
        }
    }
    if let Ok(p) = physinfo() {
        println!("BENCH tsc_khz={}", field32(&p, physinfo::CPU_KHZ));
    }
    let (nodes_after, free_after) = (crate::xs::nodes(), physinfo().map(|p| field64(&p, physinfo::FREE_PAGES)).unwrap_or(0));
    println!("bench-create: {} create/destroy cycles; free pages {} before, {} after; XenStore nodes {} before, {} after", n, free_before, free_after, nodes_before, nodes_after);
    if (free_before, nodes_before) == (free_after, nodes_after) {
        println!("bench-create: no pages and no XenStore nodes leaked");
    } else {
        println!("bench-create: LEAK");
    }
}

/// `xenstore-ls [path]`, `-read <path>...`, `-write <path> <value>...`, `-rm <path>...` in
/// dom0's shell (as the tools of xenstore-utils print them), on dom0's own connection.
pub fn xenstore(tool: &str, args: &[&str]) {
    let r = match (tool, args) {
        ("ls", []) => ls("/", 0),
        ("ls", [p]) => ls(p, 0),
        ("read", ps) if !ps.is_empty() => ps.iter().try_for_each(|p| {
            let v = crate::xs::read(p).map_err(|e| format!("xenstore-read: couldn't read path {}: {}", p, e))?;
            println!("{}", String::from_utf8_lossy(&v));
            Ok(())
        }),
        ("write", kv) if !kv.is_empty() && kv.len() % 2 == 0 => {
            kv.chunks(2).try_for_each(|w| crate::xs::write(0, w[0], w[1].as_bytes()).map_err(|e| format!("xenstore-write: could not write path {}: {}", w[0], e)))
        }
        ("rm", ps) if !ps.is_empty() => ps.iter().try_for_each(|p| crate::xs::rm(0, p).map_err(|e| format!("xenstore-rm: could not remove path {}: {}", p, e))),
        ("ls" | "read" | "write" | "rm", _) => Err(format!("usage: xenstore-{} {}", tool, match tool {
            "ls" => "[path]",
            "write" => "<path> <value> [...]",
            _ => "<path> [...]",
        })),
        _ => Err(format!("unknown command 'xenstore-{}'", tool)),
    };
    if let Err(e) = r {
        println!("{}", e);
    }
}

/// A subtree as `xenstore-ls` prints it: `name = "value"`, children one space further in.
fn ls(path: &str, depth: usize) -> Result<(), String> {
    let kids = crate::xs::directory(path).map_err(|e| format!("xenstore-ls: xs_directory ({}): {}", path, e))?;
    for k in kids {
        let child = if path.ends_with('/') { format!("{}{}", path, k) } else { format!("{}/{}", path, k) };
        let v = crate::xs::read(&child).unwrap_or_default();
        println!("{:width$}{} = \"{}\"", "", k, String::from_utf8_lossy(&v).escape_debug(), width = depth);
        if depth < 32 {
            ls(&child, depth + 1)?;
        }
    }
    Ok(())
}
