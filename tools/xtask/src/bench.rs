//! `cargo xtask bench`: numbers printed and written to `target/bench.json`; nothing asserted.
//!
//! - QEMU start → dom0 banner, wall clock, via GRUB and via PVH (median of 5 runs).
//! - Instructions from QEMU start (hypervisor entry) to dom0's first output, with
//!   `-icount shift=0` (the TSC then counts instructions, so the figure is deterministic).
//! - Guest system call through the direct `int 0x80` gate against a native ring 3 → ring 0
//!   `int`, with the hypervisor's count of entries an `int 0x80` could cause (target: 0).
//! - The worst gap between dom0's timer ticks while a hostile domU runs the longest
//!   operations it can ask for (availability; target: well under 100 ms).
//! - Null hypercall (`xen_version`) round trip from ring 1: median of 10^5 calls in TSC ticks,
//!   under TCG and under icount (= instructions), against the baseline of a bare `int`+`iretq`
//!   (the `bench` gate) plus one CR3 switch pair measured by the hypervisor in the same run.

use crate::images;
use crate::qemu::{self, Accel, Boot, Config};
use std::time::Duration;

const BANNER: &str = "dom0: rxen dom0 kernel";

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v[v.len() / 2]
}

fn bench_values(out: &str) -> Vec<(String, f64)> {
    out.lines()
        .filter_map(|l| l.split_once("BENCH ").map(|x| x.1))
        .filter_map(|kv| kv.split_once('='))
        .filter_map(|(k, v)| v.trim().parse().ok().map(|v| (k.to_string(), v)))
        .collect()
}

/// The hypervisor's timestamp of a log line containing `needle`, in ns (TSC-calibrated).
fn log_time_ns(out: &str, needle: &str) -> Option<f64> {
    let l = out.lines().find(|l| l.contains(needle))?;
    let t = l.strip_prefix('[')?.split(']').next()?.trim();
    let (s, us) = t.split_once('.')?;
    Some(s.parse::<f64>().ok()? * 1e9 + us.parse::<f64>().ok()? * 1e3)
}

/// Hot paths as an independent guest measures them (tests/guests/src/bin/hotpaths.rs), on
/// 1 and 2 CPUs, in instructions (icount) and TSC ticks (plain TCG).
fn hotpaths(imgs: &images::Images, results: &mut Vec<(String, f64)>) -> Result<(), String> {
    for (suffix, icount, smp) in [("icount", true, 1), ("icount_smp2", true, 2), ("tcg", false, 1), ("tcg_smp2", false, 2)] {
        let mut c = Config::new(Accel::Tcg);
        c.icount = icount;
        c.smp = smp;
        c.timeout = Duration::from_secs(300);
        c.boot = Boot::Pvh { kernel: imgs.hypervisor.clone(), module: imgs.guest("hotpaths"), cmdline: "debug-exit loglvl=info dom0_mem=16M".into() };
        let o = qemu::run(&c, None)?;
        let mut vals = bench_values(&o.output);
        if vals.is_empty() || !o.output.contains("Test result: SUCCESS") {
            return Err(format!("hotpaths failed:\n{}", o.output));
        }
        // The Xen pv64 mode's null hypercall (`syscall` through Xen's stub), same units.
        c.boot = Boot::Pvh { kernel: imgs.hypervisor.clone(), module: imgs.guest("pv64"), cmdline: "debug-exit loglvl=info dom0_mem=16M -- bench".into() };
        let p = qemu::run(&c, None)?;
        let pv = bench_values(&p.output);
        if pv.is_empty() || !p.output.contains("Test result: SUCCESS") {
            return Err(format!("pv64 bench failed:\n{}", p.output));
        }
        vals.extend(pv);
        // The TSC rate the hypervisor measured (plain TCG: for throughput in bytes per second).
        let khz = o.output.lines().find_map(|l| l.split_once("TSC ")?.1.split_once(" kHz")?.0.trim().parse::<f64>().ok());
        for (k, v) in vals {
            let k = k.strip_suffix("_tsc").unwrap_or(&k).to_string();
            let unit = if icount { "instructions" } else { "tsc" };
            if let (false, "hp_grant_copy_4k", Some(khz)) = (icount, k.as_str(), khz) {
                // 4096 bytes in v ticks of a khz-kHz clock.
                results.push((format!("hp_grant_copy_4k_mb_per_s_{suffix}"), 4096.0 * khz * 1000.0 / v.max(1.0) / 1e6));
            }
            results.push((format!("{k}_{unit}_{suffix}"), v));
        }
    }
    Ok(())
}

/// Parallelism: two domUs on two CPUs running the same hypercall loop at once, against one
/// of them alone in the same boot (tests/guests/src/bin/parallel.rs). Plain TCG only: under
/// icount QEMU runs the CPUs in turn on one thread.
fn parallel(imgs: &images::Images, hv: &str, results: &mut Vec<(String, f64)>) -> Result<(), String> {
    let par = imgs.guest("parallel");
    let iso = images::iso_files(
        &imgs.hypervisor,
        &[(par.as_path(), "dom0"), (par.as_path(), "w1"), (par.as_path(), "w2")],
        &images::grub_cfg_modules(hv, &[("dom0", "coordinator"), ("w1", "domU mem=8M -- worker 1"), ("w2", "domU mem=8M -- worker 2")]),
        "bench-parallel",
    )?;
    let mut c = Config::new(Accel::Tcg);
    c.timeout = Duration::from_secs(120);
    c.smp = 2;
    c.boot = Boot::Iso(iso);
    let o = qemu::run(&c, None)?;
    std::fs::write(images::target().join("bench-parallel.log"), &o.output).map_err(|e| e.to_string())?;
    let vals = bench_values(&o.output);
    let get = |k: &str| vals.iter().find(|(n, _)| n == k).map(|x| x.1);
    for op in ["null", "mmu512"] {
        let (mut alone, mut both) = (Vec::new(), Vec::new());
        for r in 0..5 {
            let (a, w1, w2) = (get(&format!("par_{op}_alone_r{r}")), get(&format!("par_{op}_both_w1_r{r}")), get(&format!("par_{op}_both_w2_r{r}")));
            let (Some(a), Some(w1), Some(w2)) = (a, w1, w2) else {
                return Err(format!("parallel {op}: numbers missing\n{}", o.output));
            };
            alone.push(a);
            both.push(w1 + w2);
        }
        let (alone, both) = (median(alone), median(both));
        let unit = if op == "null" { "calls" } else { "ptes" };
        results.push((format!("par_{op}_{unit}_per_ms_one_domu_tcg"), alone));
        results.push((format!("par_{op}_{unit}_per_ms_two_domus_tcg"), both));
        results.push((format!("par_{op}_aggregate_over_one_tcg"), both / alone.max(1.0)));
    }
    Ok(())
}

/// Domain lifecycle (tests/guests/src/bin/toolstack/ `bench`): createdomain + max_mem +
/// populate + destroydomain of a 16 MiB domain, and the destroy of a 256 MiB one with its
/// longest non-preemptible stretch (the hypervisor logs it), in instructions (icount) and
/// in ms (plain TCG, from the hypervisor's TSC rate).
fn toolstack(imgs: &images::Images, results: &mut Vec<(String, f64)>) -> Result<(), String> {
    for (suffix, icount) in [("icount", true), ("tcg", false)] {
        let mut c = Config::new(Accel::Tcg);
        c.icount = icount;
        c.memory_mb = 640;
        c.timeout = Duration::from_secs(300);
        c.boot = Boot::Pvh { kernel: imgs.hypervisor.clone(), module: imgs.guest("toolstack"), cmdline: "debug-exit loglvl=info dom0_mem=16M -- bench".into() };
        let o = qemu::run(&c, None)?;
        std::fs::write(images::target().join(format!("bench-toolstack-{suffix}.log")), &o.output).map_err(|e| e.to_string())?;
        let vals = bench_values(&o.output);
        if vals.len() < 2 || !o.output.contains("Test result: SUCCESS") {
            return Err(format!("toolstack bench failed:\n{}", o.output));
        }
        let khz = o.output.lines().find_map(|l| l.split_once("TSC ")?.1.split_once(" kHz")?.0.trim().parse::<f64>().ok()).unwrap_or(1.0);
        // The 256 MiB domain's teardown is the last one logged.
        let longest = o.output.lines().rev().find_map(|l| l.split_once("the longest ")?.1.split_once(" TSC")?.0.trim().parse::<f64>().ok());
        let stretches = o.output.lines().rev().find_map(|l| l.split_once("relinquished in ")?.1.split_once(' ')?.0.trim().parse::<f64>().ok());
        let mut all = vals;
        all.extend(longest.map(|v| ("ts_destroy_256m_longest_stretch_tsc".to_string(), v)));
        for (k, v) in all {
            let k = k.strip_suffix("_tsc").unwrap_or(&k).to_string();
            if icount {
                results.push((format!("{k}_instructions"), v));
            } else {
                results.push((format!("{k}_ms_tcg"), v / khz));
            }
        }
        if let (true, Some(n)) = (icount, stretches) {
            results.push(("ts_destroy_256m_hypercall_stretches".to_string(), n));
        }
    }
    Ok(())
}

/// The destroy of a 4 GiB domain (`toolstack big 4096`, icount): its total and longest
/// non-preemptible stretch in instructions. Not part of the full run (it needs a 5 GiB
/// guest and a few minutes): `cargo xtask bench --only destroy-4g`.
fn destroy_4g(imgs: &images::Images, results: &mut Vec<(String, f64)>) -> Result<(), String> {
    let mut c = Config::new(Accel::Tcg);
    c.icount = true;
    c.memory_mb = 5120;
    c.timeout = Duration::from_secs(1200);
    c.boot = Boot::Pvh { kernel: imgs.hypervisor.clone(), module: imgs.guest("toolstack"), cmdline: "debug-exit loglvl=info dom0_mem=16M -- big 4096".into() };
    let o = qemu::run(&c, None)?;
    std::fs::write(images::target().join("bench-destroy-4g.log"), &o.output).map_err(|e| e.to_string())?;
    let vals = bench_values(&o.output);
    if vals.is_empty() || !o.output.contains("Test result: SUCCESS") {
        return Err(format!("destroy-4g bench failed:\n{}", o.output));
    }
    let longest = o.output.lines().rev().find_map(|l| l.split_once("the longest ")?.1.split_once(" TSC")?.0.trim().parse::<f64>().ok());
    let stretches = o.output.lines().rev().find_map(|l| l.split_once("relinquished in ")?.1.split_once(' ')?.0.trim().parse::<f64>().ok());
    results.extend(vals.into_iter().map(|(k, v)| (format!("{}_instructions", k.strip_suffix("_tsc").unwrap_or(&k)), v)));
    results.extend(longest.map(|v| ("ts_destroy_4g_longest_stretch_instructions".to_string(), v)));
    results.extend(stretches.map(|v| ("ts_destroy_4g_hypercall_stretches".to_string(), v)));
    Ok(())
}

/// `xl create` → the domU's first console line, and `xl destroy` → gone, for a 16 MiB domU
/// (`/etc/xen/tiny.cfg` in dom0's bundle): the 1st, 10th, 100th and 1000th of 1000 in a row (the cost
/// must stay flat), in ms of plain TCG (dom0's TSC, at the hypervisor's calibrated rate),
/// without xl's "Parsing config" line and the hypervisor's info lines (serial output under
/// TCG costs about 0.3 ms a byte).
/// Goals: ≤ 11 ms and ≤ 5 ms (Xen 4.17 with its C toolstack, same QEMU: 1.09 s and 0.48 s).
fn xl_create(imgs: &images::Images, results: &mut Vec<(String, f64)>) -> Result<(), String> {
    // loglvl=warn: the hypervisor's info lines (created, destroyed, torn down) on the
    // emulated serial port would cost more than the work measured.
    let o = dom0_run(imgs, "bench-create 1000", "bench-xl", 600)?;
    let vals = bench_values(&o.output);
    if vals.len() < 9 {
        return Err(format!("xl bench failed:\n{}", o.output));
    }
    let khz = vals.iter().find(|(k, _)| k == "tsc_khz").map(|(_, v)| *v).ok_or("xl bench: no TSC rate")?;
    for (k, v) in vals.into_iter().filter(|(k, _)| k != "tsc_khz") {
        let k = k.strip_suffix("_tsc").unwrap_or(&k).replace("_n", "_1000");
        results.push((format!("{k}_ms_tcg"), v / khz));
    }
    results.push(("xl_create_to_console_goal_ms".into(), 11.0));
    results.push(("xl_destroy_goal_ms".into(), 5.0));
    results.push(("xen_4_17_xl_create_to_console_ms".into(), 1090.0));
    results.push(("xen_4_17_xl_destroy_ms".into(), 480.0));
    Ok(())
}

/// One TCG run of dom0 (64 MiB, `loglvl=warn`) with its boot bundle and `dom0_args` (a
/// benchmark mode of dom0's): its output, also written to `target/<name>.log`.
fn dom0_run(imgs: &images::Images, dom0_args: &str, name: &str, timeout_s: u64) -> Result<qemu::Outcome, String> {
    let grub = images::grub_cfg("debug-exit loglvl=warn dom0_mem=64M", dom0_args);
    let iso = images::iso(imgs, &grub, name)?;
    let mut c = Config::new(Accel::Tcg);
    c.memory_mb = 512;
    c.timeout = Duration::from_secs(timeout_s);
    c.boot = Boot::Iso(iso);
    let o = qemu::run(&c, None)?;
    std::fs::write(images::target().join(format!("{name}.log")), &o.output).map_err(|e| e.to_string())?;
    Ok(o)
}

/// XenStore through a domU's ring: reads, writes and transactions (start, two writes,
/// commit) per second, the domU (`/etc/xen/xsbench.cfg`) timing them with the TSC, dom0's
/// daemon serving them; plain TCG, one CPU.
fn xenstore_rates(imgs: &images::Images, results: &mut Vec<(String, f64)>) -> Result<(), String> {
    let o = dom0_run(imgs, "bench-xs", "bench-xs", 300)?;
    let vals = bench_values(&o.output);
    let get = |k: &str| vals.iter().find(|(n, _)| n == k).map(|(_, v)| *v);
    let khz = get("tsc_khz").ok_or_else(|| format!("xenstore bench: no TSC rate\n{}", o.output))?;
    for what in ["read", "write", "transaction"] {
        let t = get(&format!("xs_{what}_tsc")).ok_or_else(|| format!("xenstore bench: no {what} figure\n{}", o.output))?;
        results.push((format!("xenstore_{what}s_per_s_tcg"), khz * 1000.0 / t));
        results.push((format!("xenstore_{what}_us_tcg"), t / khz * 1000.0));
    }
    Ok(())
}

/// PV block against dom0's own access, in one run on a 64 MiB virtio disk, one request at a
/// time: dom0 reading and writing the disk directly (`bench-disk`), then a domU doing the
/// same through blkfront and blkback (`etc/xen/blk/bench.sh`): sequential 4 KiB and 64 KiB
/// MiB/s, 4 KiB random-read IOPS, one request at a time (`qd1`) and with 8 (4 KiB) or 2
/// (64 KiB) in flight, and the domU's share of dom0's (goal: at least 90%).
/// Plain TCG, times from the guests' pvclocks.
fn disk(imgs: &images::Images, results: &mut Vec<(String, f64)>) -> Result<(), String> {
    disk_on(imgs, results, 1)?;
    disk_on(imgs, results, 2)
}

/// [`disk`] on `smp` CPUs (on 2, dom0 and the domU each have one; figures end `_smp2`).
fn disk_on(imgs: &images::Images, results: &mut Vec<(String, f64)>, smp: u32) -> Result<(), String> {
    let tail = if smp == 1 { String::new() } else { format!("_smp{smp}") };
    let img = images::target().join("bench-disk.img");
    let f = std::fs::File::create(&img).map_err(|e| e.to_string())?;
    f.set_len(64 << 20).map_err(|e| e.to_string())?;
    let grub = images::grub_cfg("debug-exit loglvl=warn dom0_mem=64M", "interactive bench-disk run=/etc/xen/blk/bench.sh");
    let iso = images::iso(imgs, &grub, "bench-disk")?;
    let mut c = Config::new(Accel::Tcg);
    c.memory_mb = 512;
    c.timeout = Duration::from_secs(300);
    c.smp = smp;
    c.disk = Some(img);
    c.boot = Boot::Iso(iso);
    let o = qemu::run(&c, None)?;
    std::fs::write(images::target().join(format!("bench-disk{tail}.log")), &o.output).map_err(|e| e.to_string())?;
    let vals = bench_values(&o.output);
    let get = |k: &str| vals.iter().find(|(n, _)| n == k).map(|(_, v)| *v);
    // A request the backend answers without the disk: the ring's round trip between the
    // domains (events, scheduling) that every domU request pays on top of dom0's.
    let null = get("disk_domu_null_ns").ok_or_else(|| format!("disk bench: no null round trip\n{}", o.output))?;
    results.push((format!("disk_domu_ring_round_trip_us_tcg{tail}"), null / 1000.0));
    for (what, kib, qd) in [("seq_write_4k", 4.0, 8), ("seq_read_4k", 4.0, 8), ("seq_write_64k", 64.0, 2), ("seq_read_64k", 64.0, 2), ("rand_read_4k", 4.0, 8)] {
        for qd in [1, qd] {
            let mut rate = |who: &str| -> Result<f64, String> {
                let ns = get(&format!("disk_{who}_{what}_qd{qd}_ns")).ok_or_else(|| format!("disk bench: no {who} {what} qd{qd} figure\n{}", o.output))?;
                let per_s = 1e9 / ns.max(1.0);
                let (name, v) = if what.starts_with("rand") {
                    (format!("disk_{who}_{what}_qd{qd}_iops_tcg{tail}"), per_s)
                } else {
                    (format!("disk_{who}_{what}_qd{qd}_mib_s_tcg{tail}"), per_s * kib / 1024.0)
                };
                results.push((name, v));
                Ok(v)
            };
            let dom0 = rate("dom0")?;
            let domu = rate("domu")?;
            results.push((format!("disk_domu_over_dom0_{what}_qd{qd}_pct{tail}"), 100.0 * domu / dom0.max(f64::MIN_POSITIVE)));
        }
    }
    Ok(())
}

/// PV networking (`etc/xen/net/bench.sh`): TCP between two domUs through dom0's switch
/// (32 MiB), from a server on the host to a domU and back (16 MiB each way), the ping round
/// trip between the domUs, and the balloon shrinking a 96 MiB domU by 64 MiB and growing it
/// again, and a domU sending 32 MiB to dom0's own interface (`dom0-ip`, its TCP sink);
/// plain TCG on 1 and 2 CPUs, times from the guests' pvclocks. Then once under `-icount`
/// for the switch's cost per frame in instructions: taking a frame off a transmit ring
/// (checks, `GNTTABOP_copy`, response) and putting one into a receive page.
fn net(imgs: &images::Images, results: &mut Vec<(String, f64)>) -> Result<(), String> {
    for (smp, icount) in [(1, false), (2, false), (1, true)] {
        let tail = match (smp, icount) {
            (_, true) => "_icount".to_string(),
            (1, _) => "_tcg".to_string(),
            (n, _) => format!("_tcg_smp{n}"),
        };
        let port = qemu::pattern_server(guest_abi::harness::net_pattern)?;
        let grub = images::grub_cfg("debug-exit loglvl=warn dom0_mem=64M", &format!("interactive dom0-ip run=/etc/xen/net/bench.sh host-port={port}"));
        let iso = images::iso(imgs, &grub, "bench-net")?;
        let mut c = Config::new(Accel::Tcg);
        c.memory_mb = 512;
        c.timeout = Duration::from_secs(600);
        c.smp = smp;
        c.icount = icount;
        c.net = true;
        c.boot = Boot::Iso(iso);
        let o = qemu::run(&c, None)?;
        std::fs::write(images::target().join(format!("bench-net{tail}.log")), &o.output).map_err(|e| e.to_string())?;
        if icount {
            // "(switch: N frames taken at T TSC ticks each, M delivered at R each)"; under
            // icount the TSC runs at the calibrated rate, one instruction a nanosecond.
            let mhz = o.output.lines().find_map(|l| l.strip_prefix("cpu_mhz")).and_then(|r| r.trim_start_matches([' ', ':']).trim().parse::<f64>().ok());
            let khz = mhz.ok_or_else(|| format!("net bench: no xl info cpu_mhz\n{}", o.output))? * 1000.0;
            let line = o.output.lines().find(|l| l.starts_with("(switch: ")).ok_or_else(|| format!("net bench: no switch figures\n{}", o.output))?;
            let nums: Vec<f64> = line.split(|c: char| !c.is_ascii_digit()).filter(|w| !w.is_empty()).filter_map(|w| w.parse().ok()).collect();
            if let [_, tx, _, rx, ..] = nums[..] {
                results.push(("net_switch_tx_instructions_per_frame_icount".into(), tx * 1e6 / khz));
                results.push(("net_switch_rx_instructions_per_frame_icount".into(), rx * 1e6 / khz));
            }
            continue;
        }
        let vals = bench_values(&o.output);
        for k in ["net_tcp_domu_domu_kib_s", "net_tcp_domu_dom0_kib_s", "net_ping_domu_domu_us", "net_ping_domu_domu_best_us", "net_tcp_host_domu_kib_s", "net_tcp_domu_host_kib_s", "balloon_shrink_64m_ms", "balloon_grow_64m_ms"] {
            let v = vals.iter().find(|(n, _)| n == k).map(|(_, v)| *v).ok_or_else(|| format!("net bench: no {k}\n{}", o.output))?;
            results.push((format!("{k}{tail}"), v));
        }
    }
    Ok(())
}

fn write_results(results: &[(String, f64)]) -> Result<(), String> {
    let mut json = String::from("{\n");
    for (i, (k, v)) in results.iter().enumerate() {
        println!("{k:<50} {v:>12.2}");
        json.push_str(&format!("  \"{k}\": {v:.3}{}\n", if i + 1 < results.len() { "," } else { "" }));
    }
    json.push_str("}\n");
    let p = images::target().join("bench.json");
    std::fs::write(&p, json).map_err(|e| e.to_string())?;
    println!("written to {}", p.display());
    Ok(())
}

/// `--only hotpaths` runs just the hot-path section, `--only parallel` the parallelism one,
/// `--only toolstack` the domain lifecycle, `--only destroy-4g` a 4 GiB domain's destroy,
/// `--only xl` dom0's `xl create` / `xl destroy`, `--only xenstore` XenStore rates through
/// a domU's ring, `--only disk` dom0's disk throughput, `--only net` PV networking and the
/// balloon.
pub fn run(args: &[String]) -> Result<(), String> {
    let imgs = images::build_all()?;
    let mut results: Vec<(String, f64)> = Vec::new();
    let only = args.windows(2).find(|w| w[0] == "--only").map(|w| w[1].as_str());
    if only == Some("hotpaths") {
        hotpaths(&imgs, &mut results)?;
        return write_results(&results);
    }
    let hv = "debug-exit loglvl=info dom0_mem=16M";
    if only == Some("toolstack") {
        toolstack(&imgs, &mut results)?;
        return write_results(&results);
    }
    if only == Some("parallel") {
        parallel(&imgs, hv, &mut results)?;
        return write_results(&results);
    }
    if only == Some("destroy-4g") {
        destroy_4g(&imgs, &mut results)?;
        return write_results(&results);
    }
    if only == Some("xl") {
        xl_create(&imgs, &mut results)?;
        return write_results(&results);
    }
    if only == Some("xenstore") {
        xenstore_rates(&imgs, &mut results)?;
        return write_results(&results);
    }
    if only == Some("disk") {
        disk(&imgs, &mut results)?;
        return write_results(&results);
    }
    if only == Some("net") {
        net(&imgs, &mut results)?;
        return write_results(&results);
    }

    let grub_iso = images::iso(&imgs, &images::grub_cfg(hv, "shutdown"), "bench-grub")?;
    for (name, boot) in [
        ("boot_to_banner_ms_grub", Boot::Iso(grub_iso.clone())),
        ("boot_to_banner_ms_pvh", Boot::Pvh { kernel: imgs.hypervisor.clone(), module: imgs.dom0.clone(), cmdline: format!("{hv} -- shutdown") }),
    ] {
        let mut v = Vec::new();
        for _ in 0..5 {
            let mut c = Config::new(Accel::Tcg);
            c.boot = boot.clone();
            c.timeout = Duration::from_secs(30);
            let o = qemu::run(&c, Some(BANNER))?;
            let t = o.marker_at.ok_or_else(|| format!("{name}: no banner\n{}", o.output))?;
            v.push(t.as_secs_f64() * 1e3);
        }
        results.push((name.into(), median(v)));
    }

    // Instructions to dom0's first line under icount: with shift=0 one instruction = 1 ns of
    // virtual time and the TSC follows virtual time, so hypervisor timestamps count
    // instructions (at the calibrated rate).
    let mut c = Config::new(Accel::Tcg);
    c.icount = true;
    c.timeout = Duration::from_secs(60);
    c.boot = Boot::Pvh { kernel: imgs.hypervisor.clone(), module: imgs.dom0.clone(), cmdline: format!("{hv} -- shutdown") };
    let o = qemu::run(&c, None)?;
    if let (Some(entry), Some(first)) = (log_time_ns(&o.output, "booting via"), log_time_ns(&o.output, "d0: entering ring ")) {
        results.push(("icount_ns_boot_log_to_dom0_entry".into(), first - entry));
    }

    for (suffix, icount, smp) in [("tcg", false, 1), ("icount", true, 1), ("icount_smp2", true, 2)] {
        let mut c = Config::new(Accel::Tcg);
        c.icount = icount;
        c.smp = smp;
        c.timeout = Duration::from_secs(300);
        c.boot = Boot::Pvh { kernel: imgs.hypervisor.clone(), module: imgs.guest("nullcall"), cmdline: format!("{hv} bench") };
        let o = qemu::run(&c, None)?;
        let vals = bench_values(&o.output);
        if vals.is_empty() {
            return Err(format!("nullcall produced no numbers:\n{}", o.output));
        }
        let get = |k: &str| vals.iter().find(|(n, _)| n == k).map(|x| x.1);
        if let (Some(null), Some(bare), Some(cr3)) =
            (get("null_hypercall_tsc"), get("bare_int_iret_tsc"), get("cr3_switch_pair_tsc"))
        {
            results.push((format!("null_hypercall_over_baseline_{suffix}"), null / (bare + cr3)));
        }
        for (k, v) in vals {
            results.push((format!("{k}_{suffix}"), v));
        }
    }

    // PV MMU: validated updates per batch size, through multicall, and pinning 64 MiB.
    for icount in [false, true] {
        let mut c = Config::new(Accel::Tcg);
        c.icount = icount;
        c.timeout = Duration::from_secs(300);
        c.boot = Boot::Pvh { kernel: imgs.hypervisor.clone(), module: imgs.guest("mmbench"), cmdline: "debug-exit loglvl=info dom0_mem=96M".into() };
        let o = qemu::run(&c, None)?;
        let vals = bench_values(&o.output);
        if vals.is_empty() || !o.output.contains("Test result: SUCCESS") {
            return Err(format!("mmbench failed:\n{}", o.output));
        }
        let khz = o.output.lines().find_map(|l| l.split_once("TSC ")?.1.split(' ').next()?.parse::<f64>().ok());
        for (k, v) in vals {
            if let (false, Some(khz), Some(name)) = (icount, khz, k.strip_suffix("_tsc_per_update")) {
                results.push((format!("{name}_updates_per_sec_tcg"), khz * 1e3 / v.max(1.0)));
            }
            let k = if icount { k.replace("_tsc", "_instructions") } else { format!("{k}_tcg") };
            results.push((k, v));
        }
    }

    // Guest system call: direct int 0x80 gate vs a native ring 3 -> ring 0 int round trip.
    {
        let mut c = Config::new(Accel::Tcg);
        c.timeout = Duration::from_secs(120);
        c.boot = Boot::Pvh { kernel: imgs.hypervisor.clone(), module: imgs.guest("syscall_bench"), cmdline: format!("{hv} bench") };
        let o = qemu::run(&c, None)?;
        let vals = bench_values(&o.output);
        let get = |k: &str| vals.iter().find(|(n, _)| n == k).map(|x| x.1);
        if let (Some(direct), Some(native)) = (get("int80_direct_tsc"), get("int_ring3_ring0_tsc")) {
            results.push(("int80_direct_over_native_tcg".into(), direct / native.max(1.0)));
        }
        for (k, v) in vals.into_iter().filter(|(k, _)| k.starts_with("int")) {
            results.push((format!("{k}_tcg"), v));
        }
        // The hypervisor's own count of guest entries an `int 0x80` could have caused (as
        // vector 0x80, or as #GP through a DPL-0 gate) over the whole run, which makes 10^5 of them.
        let entries = o.output.lines().find_map(|l| l.split_once("hypervisor entries from guests: ").map(|x| x.1.to_string()));
        let field = |e: &str, k: &str| e.split_whitespace().find_map(|w| w.strip_prefix(k)?.parse::<f64>().ok());
        match entries {
            Some(e) => {
                if let (Some(gp), Some(v80), Some(total)) = (field(&e, "gp="), field(&e, "int80="), field(&e, "total=")) {
                    results.push(("int80_hypervisor_entries".into(), gp + v80));
                    results.push(("syscall_bench_all_hypervisor_entries".into(), total));
                }
            }
            None => return Err(format!("syscall_bench: no entry count\n{}", o.output)),
        }
    }
    // Event-channel round trip between two domains on one CPU, and CPU shares of three
    // hog domains with weights 1:2:4 (GRUB, boot-time domUs).
    {
        let iso = images::iso_files(
            &imgs.hypervisor,
            &[(imgs.guest("pingpong").as_path(), "dom0"), (imgs.guest("pingpong").as_path(), "domu0")],
            &images::grub_cfg_modules(hv, &[("dom0", "server"), ("domu0", "domU mem=16M -- client")]),
            "bench-pingpong",
        )?;
        for smp in [1u32, 2] {
            let mut c = Config::new(Accel::Tcg);
            c.timeout = Duration::from_secs(60);
            c.smp = smp;
            c.boot = Boot::Iso(iso.clone());
            let o = qemu::run(&c, None)?;
            for (k, v) in bench_values(&o.output) {
                let k = k.replace("_same_cpu", "");
                results.push((format!("{k}_smp{smp}_tcg"), v));
            }
        }
    }
    parallel(&imgs, hv, &mut results)?;
    {
        let hog = imgs.guest("hog");
        let iso = images::iso_files(
            &imgs.hypervisor,
            &[(imgs.guest("watcher").as_path(), "dom0"), (hog.as_path(), "h1"), (hog.as_path(), "h2"), (hog.as_path(), "h4")],
            &images::grub_cfg_modules(hv, &[("dom0", "shares"), ("h1", "domU mem=8M weight=256"), ("h2", "domU mem=8M weight=512"), ("h4", "domU mem=8M weight=1024")]),
            "bench-shares",
        )?;
        let mut c = Config::new(Accel::Tcg);
        c.timeout = Duration::from_secs(120);
        c.boot = Boot::Iso(iso);
        let o = qemu::run(&c, None)?;
        let counts: Vec<f64> = (1..=3)
            .filter_map(|d| {
                let tag = format!("(d{d}) hog: ");
                o.output.lines().filter_map(|l| l.split_once(tag.as_str())).filter_map(|(_, r)| r.split_whitespace().next()?.parse::<f64>().ok()).next_back()
            })
            .collect();
        if counts.len() == 3 {
            let total: f64 = counts.iter().sum();
            for (d, c) in counts.iter().enumerate() {
                results.push((format!("cpu_share_weight{}_pct", 256 << d), 100.0 * c / total.max(1.0)));
            }
        } else {
            return Err(format!("hog shares not found:\n{}", o.output));
        }
    }

    // vCPU context switch: yields alone vs yields alternating with another domain on 1 CPU.
    {
        let mut c = Config::new(Accel::Tcg);
        c.timeout = Duration::from_secs(120);
        c.boot = Boot::Pvh { kernel: imgs.hypervisor.clone(), module: imgs.guest("yielder"), cmdline: format!("{hv} -- alone") };
        let alone = bench_values(&qemu::run(&c, None)?.output);
        let y = imgs.guest("yielder");
        let iso = images::iso_files(
            &imgs.hypervisor,
            &[(y.as_path(), "dom0"), (y.as_path(), "domu0")],
            &images::grub_cfg_modules(hv, &[("dom0", "pair"), ("domu0", "domU mem=8M -- partner")]),
            "bench-yield",
        )?;
        c.boot = Boot::Iso(iso);
        let pair = bench_values(&qemu::run(&c, None)?.output);
        let get = |v: &[(String, f64)], k: &str| v.iter().find(|(n, _)| n == k).map(|x| x.1);
        if let (Some(a), Some(p)) = (get(&alone, "yield_alone_tsc"), get(&pair, "yield_pair_tsc")) {
            results.push(("yield_alone_tsc_tcg".into(), a));
            results.push(("yield_pair_tsc_tcg".into(), p));
            // Each paired yield is two hypercalls and two switches.
            results.push(("context_switch_tsc_tcg".into(), ((p - 2.0 * a) / 2.0).max(0.0)));
        } else {
            return Err("yielder produced no numbers".into());
        }
    }

    // Availability: the worst gap between dom0's 10 ms timer ticks while a domU hammers the
    // hypervisor with its longest operations (tests/guests/src/bin/hammer.rs), per mode.
    {
        let h = imgs.guest("hammer");
        for mode in ["mmu-alias", "console", "pin-tree"] {
            let args = format!("domU mem=32M -- hammer {mode}");
            let iso = images::iso_files(
                &imgs.hypervisor,
                &[(h.as_path(), "dom0"), (h.as_path(), "domu0")],
                &images::grub_cfg_modules(hv, &[("dom0", "gaps 2000"), ("domu0", &args)]),
                &format!("bench-gaps-{mode}"),
            )?;
            let mut c = Config::new(Accel::Tcg);
            c.timeout = Duration::from_secs(60);
            c.boot = Boot::Iso(iso);
            let vals = bench_values(&qemu::run(&c, None)?.output);
            match vals.iter().find(|(k, _)| k == "worst_tick_gap_us") {
                Some((_, v)) => results.push((format!("worst_tick_gap_us_{}_tcg", mode.replace('-', "_")), *v)),
                None => return Err(format!("gaps ({mode}) produced no number")),
            }
        }
    }

    hotpaths(&imgs, &mut results)?;
    toolstack(&imgs, &mut results)?;
    xl_create(&imgs, &mut results)?;
    xenstore_rates(&imgs, &mut results)?;
    disk(&imgs, &mut results)?;
    net(&imgs, &mut results)?;
    write_results(&results)
}
