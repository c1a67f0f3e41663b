//! The domain builder in dom0 (`xl create`): Xen's 64-bit PV build sequence from dom0's
//! hypercalls, with the layout arithmetic of the hypervisor's own builder
//! (`hv_core::builder`, one host-tested crate for both).
//!
//! createdomain, max_mem, populate; the image's segments, the P2M list, start_info and the
//! bootstrap page tables (the region 1:1, every table frame read-only) written into the new
//! domain's frames through a foreign mapping; its L4 pinned for it; its hypercall page
//! filled; vCPU 0's context set (entry, boot stack, RSI = start_info); scheduler
//! parameters and affinity; unpaused.
//!
//! Like libxenguest it gives the domain a XenStore and a console ring page (after
//! start_info) with an event channel each, unbound for dom0, and seeds grant references 0
//! and 1 (`GNTTAB_RESERVED_CONSOLE`, `_XENSTORE`) for those pages; like libxl it writes the
//! domain's XenStore entries, introduces it to the XenStore daemon and hands its console to
//! the console backend before it runs.

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use guest_abi::domctl::*;
use guest_abi::mm::ext;
use hv_core::builder::{compute_layout_domu_max, start_info_bytes, start_info_for, Layout};
use pv_runtime::ctl::{boot_context_in, mmuext_for, populate, set_vcpu_context, Domctl};
use pv_runtime::foreign::Window;
use pv_runtime::mm::{A, D, P, RW};
use pv_runtime::StartInfo;
use toolstack::xlcfg::Config;

const PAGE: u64 = 4096;

/// A domain being built: destroyed unless [`Building::done`] is reached.
struct Building {
    dom: u16,
    ok: bool,
}

impl Drop for Building {
    fn drop(&mut self) {
        if !self.ok {
            destroy(self.dom);
        }
    }
}

/// Destroys `dom` as libxl does: paused, its console and XenStore connection let go (dom0
/// maps none of its frames any more, so nothing of it lingers), its XenStore subtree
/// removed, then `destroydomain`.
pub fn destroy(dom: u16) -> i64 {
    // A domain that shut down or is dying already may refuse the pause: it runs no more.
    let _ = Domctl::new(PAUSEDOMAIN, dom).call();
    crate::xl::forget(dom);
    crate::consoled::remove(dom);
    crate::blkback::remove(dom);
    crate::netback::remove(dom);
    // The backends removed their devices' nodes; the per-domain directories above them
    // go too (as libxl), also those of devices no backend here serves.
    for class in ["vbd", "vif", "console", "vfb", "vkbd"] {
        let _ = crate::xs::rm(0, &format!("/local/domain/0/backend/{class}/{dom}"));
    }
    crate::xs::release(dom);
    Domctl::new(DESTROYDOMAIN, dom).call()
}

fn fail(what: &str, rc: i64) -> String {
    format!("libxl: error: {} failed: {}", what, crate::xl::errno(rc))
}

/// The bootstrap page tables of `l` over frames `p2m`: (PFN, contents) of each table
/// frame, L4 first, as the hypervisor's builder lays them out.
/// In the Xen pv64 mode (`user`) every entry carries the User bit (the kernel runs in ring 3).
fn tables(l: &Layout, p2m: &[u64], user: bool) -> Vec<(u64, Vec<u64>)> {
    let pt0 = l.pfn(l.pt_va);
    let mut frames: Vec<(u64, Vec<u64>)> = vec![(pt0, vec![0; 512])];
    let mut next = pt0 + 1;
    let pt_range = pt0..pt0 + l.nr_pt_frames;
    let u = if user { 1 << 2 } else { 0 };
    let inner = P | RW | A | u;
    for pfn in 0..l.region_pages() {
        let va = l.virt_base + pfn * PAGE;
        let mut t = 0usize; // index into `frames`
        for level in (2..=4u32).rev() {
            let idx = ((va >> (12 + 9 * (level - 1))) & 511) as usize;
            let e = frames[t].1[idx];
            t = if e & P != 0 {
                let child = (e >> 12) & 0xF_FFFF_FFFF;
                frames.iter().position(|(q, _)| p2m[*q as usize] == child).unwrap_or(0)
            } else {
                let child = next;
                next += 1;
                frames[t].1[idx] = p2m[child as usize] << 12 | inner;
                frames.push((child, vec![0; 512]));
                frames.len() - 1
            };
        }
        let flags = u | if pt_range.contains(&pfn) { P | A | D } else { P | RW | A | D };
        frames[t].1[((va >> 12) & 511) as usize] = p2m[pfn as usize] << 12 | flags;
    }
    frames
}

/// Builds and starts the domain of config `cfg` from PV image `image`; its id.
pub fn create(si: &StartInfo, cfg: &Config, image: &[u8]) -> Result<u16, String> {
    let img = hv_core::pv_image::parse(image).map_err(|e| format!("libxl: error: {}: {}", cfg.kernel, e))?;
    let nr_pages = cfg.memory * 256;
    // The P2M list has room for `maxmem`: the guest's balloon may grow it that far.
    let l = compute_layout_domu_max(&img, nr_pages, cfg.maxmem * 256).map_err(|e| format!("libxl: error: {}: {}", cfg.kernel, e))?;
    let mut op = Domctl::new(CREATEDOMAIN, 0)
        .u32(create::MAX_VCPUS, cfg.maxvcpus)
        .u32(create::MAX_EVTCHN_PORT, 1023)
        .u32(create::MAX_GRANT_FRAMES, u32::MAX)
        .u32(create::MAX_MAPTRACK_FRAMES, u32::MAX)
        .u32(create::FLAGS, if img.ring1 { create::CDF_RXEN_RING1 } else { 0 });
    let rc = op.call();
    if rc != 0 {
        return Err(fail("createdomain", rc));
    }
    let mut b = Building { dom: op.dom(), ok: false };
    let dom = b.dom;
    let rc = Domctl::new(MAX_MEM, dom).u64(0, cfg.maxmem * 1024).call();
    if rc != 0 {
        return Err(fail("max_mem", rc));
    }
    let mut p2m: Vec<u64> = (0..nr_pages).collect();
    for chunk in p2m.chunks_mut(4096) {
        let n = populate(dom, chunk);
        if n != chunk.len() as i64 {
            // A short count is the allocator running dry: -ENOMEM.
            return Err(fail("populate_physmap", if n < 0 { n } else { -12 }));
        }
    }
    let mut info = Domctl::new(GETDOMAININFO, dom);
    let rc = info.call();
    if rc != 0 {
        return Err(fail("getdomaininfo", rc));
    }
    let shared_info = info.get64(info::SHARED_INFO_FRAME) << 12;
    let store_port = pv_runtime::events::alloc_unbound(dom, 0).map_err(|e| fail("allocating the XenStore event channel", e))?;
    let console_port = pv_runtime::events::alloc_unbound(dom, 0).map_err(|e| fail("allocating the console event channel", e))?;
    let (store_mfn, console_mfn) = (p2m[l.pfn(l.store_va) as usize], p2m[l.pfn(l.console_va) as usize]);
    let gnttab = pv_runtime::ctl::grant_frame(dom).map_err(|e| fail("setting up the grant table", e))?;

    // Every frame of the region, written once through the window.
    let mut w = Window::new(si);
    let mut page = vec![0u8; PAGE as usize];
    let region = l.region_pages();
    let tabs = tables(&l, &p2m, !img.ring1);
    let mut si_new = start_info_for(&l, shared_info, 0, cfg.cmdline.as_bytes());
    si_new.store_mfn = store_mfn;
    si_new.store_evtchn = store_port;
    si_new.console.mfn_or_info = console_mfn;
    si_new.console.evtchn = console_port;
    let start_info = start_info_bytes(&si_new);
    let in_segment = |va: u64| img.segments().iter().any(|s| s.filesz > 0 && s.vaddr < va + PAGE && va < s.vaddr + s.filesz as u64);
    for pfn in 0..region {
        let va = l.virt_base + pfn * PAGE;
        let table = tabs.iter().find(|(q, _)| *q == pfn);
        let p2m_page = (l.p2m_va..l.p2m_va + l.p2m_pages * PAGE).contains(&va);
        // Only what holds something is written: populated frames are zeroed already.
        if !(table.is_some() || p2m_page || va == l.start_info_va || in_segment(va)) {
            continue;
        }
        page.fill(0);
        for s in img.segments() {
            let (lo, hi) = (s.vaddr.max(va), (s.vaddr + s.filesz as u64).min(va + PAGE));
            if lo < hi {
                let src = s.file_offset + (lo - s.vaddr) as usize;
                page[(lo - va) as usize..(hi - va) as usize].copy_from_slice(&img.data[src..src + (hi - lo) as usize]);
            }
        }
        if p2m_page {
            // Entries past the domain's pages (room to grow into) hold no frame.
            let first = ((va - l.p2m_va) / 8) as usize;
            for i in 0..512 {
                let e = match p2m.get(first + i) {
                    Some(m) => *m,
                    None if ((first + i) as u64) < l.p2m_entries => !0,
                    None => 0,
                };
                page[8 * i..8 * i + 8].copy_from_slice(&e.to_le_bytes());
            }
        }
        if va == l.start_info_va {
            page[..start_info.len()].copy_from_slice(&start_info);
        }
        if let Some((_, words)) = table {
            for (i, e) in words.iter().enumerate() {
                page[8 * i..8 * i + 8].copy_from_slice(&e.to_le_bytes());
            }
        }
        w.map(dom, p2m[pfn as usize]).map_err(|e| fail("mapping a frame of the new domain", e))?;
        w.write(0, &page);
    }
    // Grant references 0 and 1: the console and XenStore pages, for dom0's backends.
    w.map(dom, gnttab).map_err(|e| fail("mapping the grant table", e))?;
    for (gref, mfn) in [(guest_abi::grant::RESERVED_CONSOLE, console_mfn), (guest_abi::grant::RESERVED_XENSTORE, store_mfn)] {
        let mut e = [0u8; 8];
        e[..2].copy_from_slice(&guest_abi::grant::GTF_PERMIT_ACCESS.to_le_bytes());
        e[4..].copy_from_slice(&(mfn as u32).to_le_bytes());
        w.write(8 * gref as usize, &e);
    }
    w.restore();

    let l4 = p2m[l.pfn(l.pt_va) as usize];
    let rc = mmuext_for(dom, ext::PIN_L4_TABLE, l4);
    if rc != 0 {
        return Err(fail("pinning the bootstrap tables", rc));
    }
    if let Some(hp) = img.hypercall_page {
        let rc = Domctl::new(HYPERCALL_INIT, dom).u64(0, p2m[l.pfn(hp) as usize]).call();
        if rc != 0 {
            return Err(fail("hypercall_init", rc));
        }
    }
    let mut ctx = vec![0u8; guest_abi::vcpu::ctx::SIZE];
    boot_context_in(&mut ctx, img.entry, l.stack_top(), l.start_info_va, l4, !img.ring1);
    let rc = set_vcpu_context(dom, 0, &mut ctx);
    if rc != 0 {
        return Err(fail("setvcpucontext", rc));
    }
    let mut op = Domctl::new(SCHEDULER_OP, dom)
        .u32(sched::SCHED_ID, sched::CREDIT)
        .u32(sched::CMD, sched::PUTINFO)
        .u16(sched::WEIGHT, cfg.weight as u16)
        .u16(sched::CAP, cfg.cap as u16);
    let rc = op.call();
    if rc != 0 {
        return Err(fail("sched-credit", rc));
    }
    if let Some(cpus) = cfg.cpus {
        for v in 0..cfg.maxvcpus {
            let mut map = cpus.to_le_bytes();
            let rc = Domctl::new(SETVCPUAFFINITY, dom)
                .u32(affinity::VCPU, v)
                .u32(affinity::FLAGS, affinity::HARD_FLAG)
                .u64(affinity::HARD, map.as_mut_ptr() as u64)
                .u32(affinity::HARD + 8, 64)
                .call();
            if rc != 0 {
                return Err(fail("vcpu affinity", rc));
            }
        }
    }
    announce(dom, cfg, &l, (store_mfn, store_port), (console_mfn, console_port))?;
    for d in &cfg.disks {
        crate::blkback::attach(dom, d)?;
    }
    for v in &cfg.vifs {
        crate::netback::attach(dom, v)?;
    }
    let rc = Domctl::new(UNPAUSEDOMAIN, dom).call();
    if rc != 0 {
        return Err(fail("unpause", rc));
    }
    b.ok = true;
    Ok(dom)
}

/// Ids handed out for `/vm/<uuid>` paths.
static VM_SEQ: core::sync::atomic::AtomicU32 = core::sync::atomic::AtomicU32::new(1);

/// libxl's part before a domain runs: its XenStore entries (in one transaction), its
/// introduction to the XenStore daemon, its console to the console backend.
fn announce(dom: u16, cfg: &Config, l: &Layout, store: (u64, u32), console: (u64, u32)) -> Result<(), String> {
    use crate::xs;
    let base = format!("/local/domain/{}", dom);
    let seq = VM_SEQ.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
    let uuid = format!("00000000-0000-4000-8000-{:08x}{:04x}", seq, dom);
    let vm = format!("/vm/{}", uuid);
    let (me, ro) = (format!("n{}", dom), format!("r{}", dom));
    let kib = |pages: u64| format!("{}", pages * 4);
    // Read-only for the domain (dom0 owns them): what describes it.
    let ro_keys: Vec<(String, String)> = vec![
        ("name".into(), cfg.name.clone()),
        ("domid".into(), format!("{}", dom)),
        ("vm".into(), vm.clone()),
        ("memory/static-max".into(), format!("{}", cfg.maxmem * 1024)),
        ("memory/target".into(), kib(l.nr_pages)),
        ("cpu/0/availability".into(), "online".into()),
        ("store/ring-ref".into(), format!("{}", store.0)),
        ("store/port".into(), format!("{}", store.1)),
        ("console/ring-ref".into(), format!("{}", console.0)),
        ("console/port".into(), format!("{}", console.1)),
        ("console/type".into(), "xenconsoled".into()),
        ("console/limit".into(), format!("{}", crate::consoled::BUFFER)),
        ("console/output".into(), "pty".into()),
    ];
    // Writable by the domain (it owns them), as libxl makes them.
    let rw_keys = ["control/shutdown", "control/feature-poweroff", "control/feature-reboot", "data", "drivers", "attr", "error", "device"];
    let fail = |e: String| format!("libxl: error: writing the XenStore entries of domain {} failed: {}", dom, e);
    xs::in_transaction(|tx| {
        xs::write(tx, &base, b"")?;
        xs::set_perms(tx, &base, &["n0", &ro])?;
        for (k, v) in &ro_keys {
            xs::write(tx, &format!("{}/{}", base, k), v.as_bytes())?;
        }
        xs::write(tx, &format!("{}/control", base), b"")?;
        for k in rw_keys {
            let p = format!("{}/{}", base, k);
            xs::write(tx, &p, b"")?;
            xs::set_perms(tx, &p, &[&me])?;
        }
        xs::write(tx, &format!("{}/name", vm), cfg.name.as_bytes())?;
        xs::write(tx, &format!("{}/uuid", vm), uuid.as_bytes())?;
        Ok(())
    })
    .map_err(fail)?;
    xs::introduce(dom, store.0, store.1).map_err(|e| format!("libxl: error: {}", e))?;
    crate::consoled::add(dom, console.1).map_err(|e| format!("libxl: error: {}", e))?;
    Ok(())
}
